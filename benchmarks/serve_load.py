"""A bounded load test of ``edgert serve`` on loopback.

Starts the server (a subprocess) on the digits CNN (models/digits_cnn.onnx, converted once),
with dynamic batching off and then on, and sends a fixed number of single-image inference
requests over HTTP/REST (keep-alive connections, JSON or --binary tensors) at concurrency
1, 8 and 32. Prints throughput and client-side p50/p99 latency per run, and at concurrency 1
the server-side overhead per request: the server's own request time minus the model's compute
time, from /metrics (the time from the decoded body to the encoded response, queueing
included; with batching on this includes the batching window).

    python benchmarks/serve_load.py                       # 2,000 requests per run
    python benchmarks/serve_load.py --requests 500 --binary --json

The client runs on the same machine as the server and competes with it for the CPUs; on a
small machine the numbers say as much about the client as about the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def start_server(model: pathlib.Path, tmp: pathlib.Path, extra: list[str]):
    ready = tmp / f"ready-{time.monotonic_ns()}.json"
    log = open(tmp / "server.log", "a")
    proc = subprocess.Popen([sys.executable, "-m", "edgert.serve", str(model), "--http-port",
                             "auto", "--grpc-port", "0", "--poll-s", "0", "--ready-file",
                             str(ready), "--log-level", "warning", *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the server did not start; see {tmp / 'server.log'}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["http_port"]


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def make_body(x: np.ndarray, binary: bool) -> tuple[bytes, dict[str, str]]:
    if binary:
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                         "shape": list(x.shape),
                                         "parameters": {"binary_data_size": x.nbytes}}],
                             "outputs": [{"name": "probabilities",
                                          "parameters": {"binary_data": True}}]}).encode()
        return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                      "Content-Type": "application/octet-stream"}
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.ravel().tolist()}]}).encode()
    return body, {"Content-Type": "application/json"}


def scrape(port: int) -> dict[str, float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for name in ("edgert_inference_request_duration_seconds",
                 "edgert_inference_compute_duration_seconds",
                 "edgert_inference_queue_duration_seconds"):
        for kind in ("sum", "count"):
            m = re.search(rf"^{name}_{kind}\{{[^}}]*\}} (\S+)$", text, re.M)
            out[f"{name}_{kind}"] = float(m.group(1)) if m else 0.0
    return out


def run_load(port: int, body: bytes, headers: dict[str, str], requests: int,
             concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    errors = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()  # no Nagle: http.client sends a body over 2 kB apart from its headers
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = []
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                t = time.perf_counter()
                conn.request("POST", "/v2/models/digits_cnn/infer", body, headers)
                r = conn.getresponse()
                data = r.read()
                mine.append(time.perf_counter() - t)
                if r.status != 200:
                    errors.append(data[:200])
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]!r}")
    lat = np.array(latencies) * 1e3
    return {"requests": len(lat), "throughput_rps": len(lat) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per run (default 2000)")
    ap.add_argument("--concurrency", default="1,8,32", help="client threads per run")
    ap.add_argument("--binary", action="store_true", help="binary tensors instead of JSON")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-delay-ms", type=float, default=1.0)
    ap.add_argument("--instances", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    import edgert

    x = np.load(ROOT / "models" / "digits_sample.npy")[:1]
    body, headers = make_body(x, args.binary)
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        model = tmp / "digits_cnn.edgert"
        edgert.convert(str(ROOT / "models" / "digits_cnn.onnx"), str(model))
        for batching in (False, True):
            extra = ["--max-batch-size", str(args.max_batch_size if batching else 0),
                     "--batch-delay-ms", str(args.batch_delay_ms)]
            if args.instances:
                extra += ["--instances", str(args.instances)]
            proc, port = start_server(model, tmp, extra)
            try:
                run_load(port, body, headers, 200, 4)  # warm-up: connections, plans, caches
                for c in levels:
                    before = scrape(port)
                    r = run_load(port, body, headers, args.requests, c)
                    after = scrape(port)
                    d = {k: after[k] - before[k] for k in after}
                    n = d["edgert_inference_request_duration_seconds_count"] or 1
                    r.update(batching=batching, concurrency=c,
                             server_ms=d["edgert_inference_request_duration_seconds_sum"] / n
                             * 1e3,
                             compute_ms=d["edgert_inference_compute_duration_seconds_sum"] / n
                             * 1e3,
                             queue_ms=d["edgert_inference_queue_duration_seconds_sum"] / n * 1e3)
                    r["overhead_ms"] = r["server_ms"] - r["compute_ms"]
                    results.append(r)
                    if not args.json:
                        print(f"batching {'on ' if batching else 'off'} concurrency {c:>3}: "
                              f"{r['throughput_rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                              f"p99 {r['p99_ms']:6.2f} ms  | server {r['server_ms']:.3f} ms = "
                              f"compute {r['compute_ms']:.3f} + queue {r['queue_ms']:.3f} + "
                              f"rest {r['server_ms'] - r['compute_ms'] - r['queue_ms']:.3f}",
                              flush=True)
            finally:
                stop_server(proc)
    by = {(r["batching"], r["concurrency"]): r for r in results}
    summary = {"cpus": len(os.sched_getaffinity(0)), "binary": args.binary,
               "requests_per_run": args.requests, "runs": results}
    if (False, 1) in by:
        r = by[(False, 1)]
        summary["overhead_ms_c1_no_batching"] = r["server_ms"] - r["compute_ms"]
        summary["client_latency_minus_compute_ms_c1"] = r["mean_ms"] - r["compute_ms"]
    if (True, 1) in by and (True, max(levels)) in by:
        summary["batching_speedup"] = (by[(True, max(levels))]["throughput_rps"]
                                       / by[(True, 1)]["throughput_rps"])
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        if "overhead_ms_c1_no_batching" in summary:
            print(f"server-side overhead per request at concurrency 1 (batching off): "
                  f"{summary['overhead_ms_c1_no_batching']:.3f} ms (request time minus "
                  f"compute); client-observed latency minus compute: "
                  f"{summary['client_latency_minus_compute_ms_c1']:.3f} ms")
        if "batching_speedup" in summary:
            print(f"batching on: throughput at concurrency {max(levels)} / at 1 = "
                  f"{summary['batching_speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
