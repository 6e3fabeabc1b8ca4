"""The long-run fuzzer: ``python -m fuzz --minutes 30`` (see :mod:`fuzz` for the usage)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
CRASHES = HERE / "crashes"
WORK = HERE / ".work"
CASE_TIMEOUT_S = 180.0  # a case running longer than this is a hang (timeout_s: 60)


# ----- worker: one batch of hypothesis examples in this process ------------------------------
def _write(path: pathlib.Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def worker(target: str, seed: int, examples: int, workdir: pathlib.Path, mem_gb: float) -> int:
    import resource

    if mem_gb > 0:
        limit = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from edgert.errors import EdgeRTError
    from fuzz.strategies import CASES
    from fuzz.targets import TARGETS, signature

    check = TARGETS[target]
    count = 0

    @hseed(seed)
    @settings(max_examples=examples, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(CASES[target]())
    def run(case):
        nonlocal count
        count += 1
        name, mutations = case
        record = {"target": target, "seed": name, "mutations": [list(m) for m in mutations],
                  "index": count}
        _write(workdir / "current.json", record)
        try:
            check(name, mutations)
        except EdgeRTError:  # the targets catch these; belt and braces
            pass
        except BaseException as e:
            record["error"] = f"{type(e).__name__}: {e}"[:2000]
            record["signature"] = signature(e)
            record["traceback"] = traceback.format_exc()
            _write(workdir / "failure.json", record)  # the last one written is the shrunk one
            raise

    failed = 0
    try:
        run()
    except Exception:
        failed = 1
    _write(workdir / "done.json", {"cases": count, "failed": failed})
    return 0


# ----- parent: batches in subprocesses until time is up --------------------------------------
def _known_signatures() -> set[str]:
    out = set()
    for f in CRASHES.glob("*.json"):
        try:
            out.add(json.loads(f.read_text()).get("signature"))
        except (OSError, ValueError):
            pass
    return out


def _save(record: dict, kind: str) -> pathlib.Path | None:
    """Save a finding under fuzz/crashes/, unless one with its signature is there already."""
    from fuzz.targets import mutate_edgert, mutate_onnx

    CRASHES.mkdir(exist_ok=True)
    record.setdefault("signature", f"{kind}: {record.get('error', '')[:200]}")
    if kind == "exception" and record["signature"] in _known_signatures():
        return None
    key = json.dumps([record["target"], record["seed"], record["mutations"]])
    name = f"{record['target']}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    record = dict(record, kind=kind)
    (CRASHES / f"{name}.json").write_text(json.dumps(
        {k: record[k] for k in ("target", "seed", "mutations", "kind", "signature", "error")
         if k in record},
        indent=1))
    (CRASHES / f"{name}.txt").write_text(record.get("traceback", record.get("error", kind)))
    try:
        if record["target"] == "edgert":
            data = mutate_edgert(record["seed"], record["mutations"])
        else:
            data = mutate_onnx(record["seed"], record["mutations"]).SerializeToString()
        (CRASHES / f"{name}.bin").write_bytes(data)
    except Exception:  # the reproducer's JSON is what matters
        pass
    return CRASHES / f"{name}.json"


def _start(target: str, seed: int, batch: int, slot: int, mem_gb: float):
    workdir = WORK / f"slot{slot}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "fuzz", "--worker", "--target", target, "--seed", str(seed),
           "--batch", str(batch), "--workdir", str(workdir), "--mem-gb", str(mem_gb)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "stderr.txt", "w"))
    return {"proc": proc, "target": target, "seed": seed, "workdir": workdir,
            "started": time.monotonic()}


def _finish(job: dict, stats: dict, killed: str | None) -> None:
    wd, target = job["workdir"], job["target"]
    st = stats[target]
    st["batches"] += 1

    def load(name):
        try:
            return json.loads((wd / name).read_text())
        except (OSError, ValueError):
            return None

    done, current, failure = load("done.json"), load("current.json"), load("failure.json")
    rc = job["proc"].returncode
    if done is not None:
        st["cases"] += done["cases"]
    elif current is not None:
        st["cases"] += current["index"]
    finding = None
    if failure is not None:
        finding = _save(failure, "exception")
    elif killed is not None and current is not None:
        finding = _save(dict(current, error=killed), killed)
    elif rc != 0 and current is not None:
        err = (wd / "stderr.txt").read_text(errors="replace")[-4000:]
        finding = _save(dict(current, error=f"worker died, exit status {rc}", traceback=err),
                        "crash")
    if finding is not None:
        st["findings"] += 1
        print(f"  FINDING ({target}): {finding}", flush=True)
    elif failure is not None:
        st["duplicates"] += 1


def parent(args) -> int:
    deadline = time.monotonic() + args.minutes * 60
    targets = ["edgert", "onnx"] if args.target == "all" else [args.target]
    stats = {t: {"cases": 0, "findings": 0, "duplicates": 0, "batches": 0} for t in targets}
    rng = random.Random(args.seed)
    jobs: dict[int, dict] = {}
    turn = 0
    t0 = time.monotonic()
    last_print = t0
    while jobs or time.monotonic() < deadline:
        for slot in range(args.jobs):
            if slot not in jobs and time.monotonic() < deadline:
                target = targets[turn % len(targets)]
                turn += 1
                jobs[slot] = _start(target, rng.randrange(2**32), args.batch, slot, args.mem_gb)
        time.sleep(0.5)
        for slot, job in list(jobs.items()):
            proc, killed = job["proc"], None
            if proc.poll() is None:
                cur = job["workdir"] / "current.json"
                try:
                    stale = time.time() - cur.stat().st_mtime
                except OSError:
                    stale = time.monotonic() - job["started"]
                if stale > CASE_TIMEOUT_S:
                    killed = "hang"
                elif time.monotonic() > deadline + 120:
                    killed = None  # out of time: stop the batch, not a finding
                    proc.kill()
                    proc.wait()
                    _finish(job, stats, None)
                    del jobs[slot]
                    continue
                else:
                    continue
                proc.kill()
                proc.wait()
            _finish(job, stats, killed)
            del jobs[slot]
        if time.monotonic() - last_print > 60:
            last_print = time.monotonic()
            print(f"[{(last_print - t0) / 60:5.1f} min] {json.dumps(stats)}", flush=True)
    print(f"done after {(time.monotonic() - t0) / 60:.1f} min: {json.dumps(stats)}", flush=True)
    return 1 if any(s["findings"] for s in stats.values()) else 0


def replay(path: str) -> int:
    from fuzz.targets import TARGETS

    rec = json.loads(pathlib.Path(path).read_text())
    print(f"{rec['target']} on {rec['seed']} with {rec['mutations']}")
    try:
        print("result:", TARGETS[rec["target"]](rec["seed"], rec["mutations"]))
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    p.add_argument("--target", choices=["all", "edgert", "onnx"], default="all")
    p.add_argument("--jobs", type=int, default=2, help="worker processes at a time")
    p.add_argument("--batch", type=int, default=300, help="cases per worker process")
    p.add_argument("--seed", type=int, default=None, help="the runner's random seed")
    p.add_argument("--mem-gb", type=float, default=8.0,
                   help="address-space limit of a worker (0: none)")
    p.add_argument("--replay", metavar="JSON", help="re-run one saved finding in this process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    if args.worker:
        return worker(args.target, args.seed, args.batch, pathlib.Path(args.workdir),
                      args.mem_gb)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
