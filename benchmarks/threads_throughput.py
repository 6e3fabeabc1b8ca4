"""Throughput of one model served from 1, 2 and 8 client threads: runs per second.

Three ways to serve the same `.edgert` model (converted from ``models/digits_cnn.onnx`` unless a
model is given), each client thread calling ``run`` back to back on its own inputs:

* **shared x1**: one ``Interpreter(num_threads=1)`` shared by every thread (runs take turns under
  its lock);
* **pool x1**: an ``InterpreterPool(size=threads, num_threads=1)`` (one member per client
  thread, runs in parallel; the mapped weights are shared);
* **shared x2**: one ``Interpreter(num_threads=2)`` shared by every thread (runs take turns, each
  run split over 2 kernel threads).

Each cell is the median over ``--repeats`` timed rounds of ``--runs`` runs per client thread,
after one untimed warm-up round (compilation, planning, pool members created). Each
configuration runs in its own process: a 2-thread run leaves its OpenMP workers spinning for a
while, which on a small machine slows whatever runs next. OpenBLAS is pinned
to one thread, as the other scripts do.

    python benchmarks/threads_throughput.py [--batch 1] [--runs 200] [--repeats 5] [--int8]
                                            [--threads 1 2 8] [model.edgert|model.onnx]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits_cnn.onnx"


def _model_path(source: str, int8: bool, folder: str) -> str:
    if source.endswith(".edgert") and not int8:
        return source
    out = os.path.join(folder, "model.edgert")
    if int8:
        import edgert
        from edgert.runtime import Interpreter

        shapes = _feed_shapes(Interpreter(_model_path(source, False, folder)), 1)
        rng = np.random.default_rng(0)
        calib = {name: rng.random((64, *shape[1:]), dtype=np.float32)
                 for name, shape in shapes.items()}
        edgert.quantize(source, out, calibration=calib)
    else:
        from edgert.converter import convert

        convert(source, out)
    return out


def _feed_shapes(interp, batch: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for d in interp.get_input_details():
        sig = d["shape_signature"]
        shapes[d["name"]] = tuple(batch if (i == 0 and s < 0) else max(int(s), 1)
                                  for i, s in enumerate(sig))
    return shapes


def _round(pool: ThreadPoolExecutor, run, feeds: list[dict], runs: int) -> float:
    """``len(feeds)`` client threads × ``runs`` runs each; returns runs per second.

    The client threads are the executor's, kept across rounds and configurations (as a
    server's); the barrier makes each of the ``len(feeds)`` tasks run on its own thread.
    """
    n = len(feeds)
    barrier = threading.Barrier(n + 1)

    def client(f: dict) -> None:
        barrier.wait()
        for _ in range(runs):
            run(f)

    futures = [pool.submit(client, f) for f in feeds]
    barrier.wait()
    t0 = time.perf_counter()
    for fut in futures:
        fut.result()
    return n * runs / (time.perf_counter() - t0)


CONFIGS = ("shared x1", "pool x1", "shared x2")


def _measure(path: str, config: str, args) -> dict[int, float]:
    """One configuration at every client-thread count (run in its own process)."""
    from edgert.runtime import Interpreter, InterpreterPool

    shapes = _feed_shapes(Interpreter(path, 1), args.batch)
    rng = np.random.default_rng(0)
    out = {}
    for n in args.threads:
        feeds = [{k: rng.random(s, dtype=np.float32) for k, s in shapes.items()}
                 for _ in range(n)]
        if config == "pool x1":
            run = InterpreterPool(path, size=n, num_threads=1).run
        else:
            run = Interpreter(path, 2 if config == "shared x2" else 1).run
        with ThreadPoolExecutor(n) as clients:
            _round(clients, run, feeds, max(1, args.runs // 10))  # warm-up
            rates = [_round(clients, run, feeds, args.runs) for _ in range(args.repeats)]
        out[n] = statistics.median(rates)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(DIGITS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200, help="runs per client thread per round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--int8", action="store_true", help="quantize the model first")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args)))
        return

    table: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = _model_path(args.model, args.int8, folder)
        common = ["--batch", str(args.batch), "--runs", str(args.runs), "--repeats",
                  str(args.repeats), "--threads", *map(str, args.threads)]
        for config in CONFIGS:
            # its own process: a 2-thread configuration's OpenMP workers keep spinning after a
            # run, and would steal the CPUs of the next configuration's rounds
            res = subprocess.run([sys.executable, __file__, *common, "--child", path, config],
                                 capture_output=True, text=True, check=True)
            rates = json.loads(res.stdout.strip().splitlines()[-1])
            table[config] = {int(n): r for n, r in rates.items()}

    kind = "int8" if args.int8 else "fp32"
    print(f"{pathlib.Path(args.model).name} ({kind}), batch {args.batch}, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} rounds × {args.runs} runs per client thread: runs/s")
    head = f"{'config':<12}" + "".join(f"{f'{n} thr':>12}" for n in args.threads)
    print(head)
    print("-" * len(head))
    for name, row in table.items():
        print(f"{name:<12}" + "".join(f"{row[n]:>12,.0f}" for n in args.threads))


if __name__ == "__main__":
    main()
