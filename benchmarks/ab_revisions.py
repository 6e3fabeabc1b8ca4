"""Interleaved A/B of two edgert source trees on the same models: is a change speed-neutral?

Each side runs in its own long-lived worker process (``PYTHONPATH`` = that tree), which converts
every model with its own converter and keeps one interpreter per thread count. The parent then
asks the two workers in turn, in blocks of ``--block`` runs, alternating which side goes first,
so that drifts of a shared machine hit both alike; only one side computes at a time. The table
gives each side's median per model and thread count and the ratio B/A (below 1: B is faster).

    python benchmarks/ab_revisions.py --a HEAD~3 [--b WORKTREE] [--threads 1 2]
        [--rounds 15] [--block 5] [models...]

``--a``/``--b`` take a git revision (extracted with ``git archive`` into a temporary folder) or
``WORKTREE`` (this checkout as it is). Models are those of ``compare_ort.py`` (the light models,
``mobilenet_v2`` when torch is installed, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

WORKER = r"""
import json, sys, time, pathlib
import numpy as np
from edgert.converter import convert
from edgert.runtime import Interpreter
models = json.loads(sys.argv[1]); threads = json.loads(sys.argv[2]); out = pathlib.Path(sys.argv[3])
interps, feeds = {}, {}
for name, path in models.items():
    dst = out / (name + ".edgert")
    convert(path, str(dst))
    for t in threads:
        it = Interpreter(str(dst), num_threads=t)
        if name not in feeds:
            rng = np.random.default_rng(0)
            feeds[name] = {d["name"]: rng.standard_normal(
                [s if s > 0 else 1 for s in d["shape_signature"]]).astype(d["dtype"])
                for d in it.get_input_details()}
        for _ in range(3):
            it.run(feeds[name])
        interps[(name, t)] = it
import edgert
print("ready", edgert.__file__, flush=True)
for line in sys.stdin:
    name, t, n = json.loads(line)
    it, f = interps[(name, t)], feeds[name]
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); it.run(f); times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
"""


def tree(rev: str, tmp: pathlib.Path) -> pathlib.Path:
    if rev == "WORKTREE":
        return ROOT
    dst = tmp / rev.replace("/", "_").replace("~", "-")
    dst.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "edgert"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


def start(src: pathlib.Path, models: dict[str, str], threads: list[int],
          out: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(src))
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(models), json.dumps(threads),
                          str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env, cwd=str(out))
    line = p.stdout.readline().split()
    if not line or line[0] != "ready":
        raise SystemExit(f"worker for {src} failed to start")
    if not pathlib.Path(line[1]).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"worker for {src} imported edgert from {line[1]}")
    return p


def ask(p: subprocess.Popen, name: str, threads: int, runs: int) -> list[float]:
    p.stdin.write(json.dumps([name, threads, runs]) + "\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main(argv: list[str] | None = None) -> int:
    from compare_ort import ALL_MODELS, model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="*", default=[m for m in ALL_MODELS if m != "mlp"])
    ap.add_argument("--a", required=True, help="git revision, or WORKTREE")
    ap.add_argument("--b", default="WORKTREE", help="git revision, or WORKTREE (default)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block", type=int, default=5, help="runs per turn")
    args = ap.parse_args(argv)
    models = {}
    for name in args.models:
        path = model_path(name)
        if path is None:
            print(f"skipped {name}: not available here", file=sys.stderr)
            continue
        models[name] = str(path)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        srcs = {"A": tree(args.a, tmp), "B": tree(args.b, tmp)}
        workers = {k: start(v, models, args.threads, tmp / f"out_{k}") for k, v in srcs.items()}
        times: dict[tuple[str, str, int], list[float]] = {}
        t0 = time.perf_counter()
        for r in range(args.rounds):
            for name in models:
                for t in args.threads:
                    for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                        times.setdefault((side, name, t), []).extend(
                            ask(workers[side], name, t, args.block))
        for p in workers.values():
            p.stdin.close()
            p.wait()
    print(f"A = {args.a}, B = {args.b}; {args.rounds} rounds x {args.block} runs per side, "
          f"interleaved ({time.perf_counter() - t0:.0f} s)")
    print(f"{'model':<16} {'threads':>7} {'A ms':>9} {'B ms':>9} {'B/A':>6}")
    for name in models:
        for t in args.threads:
            a = statistics.median(times[("A", name, t)]) * 1e3
            b = statistics.median(times[("B", name, t)]) * 1e3
            print(f"{name:<16} {t:>7} {a:>9.3f} {b:>9.3f} {b / a:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
