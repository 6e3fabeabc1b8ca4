"""Start-up: a fresh process's time to a first result, edgert vs onnxruntime; and load time.

Two measurements on the materialized light models (benchmarks/light_models.py), each in fresh
processes, reported as medians:

* **start-up** (default ResNet-50): edgert's ``import edgert.runtime`` + ``Interpreter(path)``
  (map and verify the file, import Numba and the kernel families the model uses, then allocate:
  prepare every kernel and plan the arena) + the first ``run`` (Numba loads each kernel from its
  on-disk cache), as ``compare_ort.py``'s start-up column, against
  onnxruntime's import + ``InferenceSession`` + first ``run``, both on 1 thread, alternating
  edgert and onnxruntime runs so that machine noise hits both alike. The Numba cache is warmed
  by one untimed run first; ``--cold`` adds runs with an empty cache folder (every kernel the
  model needs is compiled).
* **load** (``--load``): ``read_model`` alone, which maps the file and verifies it: zero-copy, so
  it does not grow with the weights' size.

Python bytecode: an installed package has its ``.pyc`` files; a checkout run with
``PYTHONDONTWRITEBYTECODE=1`` compiles edgert's modules from source in every process (~0.15 s for
ResNet-50's modules) while numpy, numba and onnxruntime come with theirs. So the children run as
installed code does, with bytecode cached in a temporary ``PYTHONPYCACHEPREFIX`` (warmed by the
untimed runs); ``--source`` runs them as the environment says instead.

    python benchmarks/load_time.py [--runs 7] [--cold] [--source] [--load] [resnet50 squeezenet ...]
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

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD_LOAD = r"""
import json, sys, time
t0 = time.perf_counter()
from edgert.format import read_model
t1 = time.perf_counter()
m = read_model(sys.argv[1])
t2 = time.perf_counter()
weights = sum(t.data.nbytes for t in m.main.tensors if t.data is not None)
print(json.dumps({"read_ms": (t2 - t1) * 1e3, "weight_bytes": weights}))
"""

CHILD_EDGERT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from edgert.runtime import Interpreter
t1 = time.perf_counter()
it = Interpreter(sys.argv[1], num_threads=1)  # static input shapes: allocates too
t2 = time.perf_counter()
feeds = {d["name"]: np.random.default_rng(0).standard_normal(tuple(d["shape"])).astype(d["dtype"])
         for d in it.get_input_details()}
it.run(feeds)
t3 = time.perf_counter()
prep = it.stats.prepare_seconds
print(json.dumps({"total": t3 - t0, "import": t1 - t0, "read": it.load_seconds, "allocate": prep,
                  "kernels": t2 - t1 - it.load_seconds - prep, "first": t3 - t2}))
"""

CHILD_ORT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
t1 = time.perf_counter()
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
feeds = {}
for i in s.get_inputs():
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
    feeds[i.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
s.run(None, feeds)
t3 = time.perf_counter()
print(json.dumps({"total": t3 - t0, "import": t1 - t0, "session": t2 - t1, "first": t3 - t2}))
"""


def _child(code: str, path: pathlib.Path, env: dict[str, str]) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True,
                       text=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _median(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def startup(name: str, onnx_path: pathlib.Path, edgert_path: pathlib.Path, runs: int, cold: bool,
            env: dict[str, str], tmp: pathlib.Path) -> None:
    _child(CHILD_EDGERT, edgert_path, env)  # untimed: warms the Numba cache (and bytecode)
    _child(CHILD_ORT, onnx_path, env)
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(_child(CHILD_EDGERT, edgert_path, env))
        theirs.append(_child(CHILD_ORT, onnx_path, env))
    e, o = _median(ours), _median(theirs)
    print(f"{name}: start-up to first result, median of {runs} fresh processes, 1 thread, "
          "warm Numba cache")
    print(f"  edgert       {e['total']:6.3f} s  (import {e['import']:.3f}, read {e['read']:.3f}, "
          f"kernel modules + Numba import {e['kernels']:.3f}, allocate {e['allocate']:.3f}, "
          f"first run {e['first']:.3f})")
    print(f"  onnxruntime  {o['total']:6.3f} s  (import {o['import']:.3f}, session "
          f"{o['session']:.3f}, first run {o['first']:.3f})")
    print(f"  ratio        {e['total'] / o['total']:6.2f}")
    if cold:
        colds = []
        for k in range(max(1, runs // 3)):
            cold_env = dict(env, EDGERT_CACHE_DIR=str(tmp / f"cold-numba-{name}-{k}"))
            cold_env.pop("NUMBA_CACHE_DIR", None)
            colds.append(_child(CHILD_EDGERT, edgert_path, cold_env))
        c = _median(colds)
        print(f"  edgert, empty Numba cache: {c['total']:.1f} s (first run {c['first']:.1f} s, "
              f"median of {len(colds)})")


def load_times(names: list[str], paths: dict[str, pathlib.Path], runs: int,
               env: dict[str, str]) -> None:
    rows = []
    for name in names:
        out = paths[name]
        samples, weight_bytes = [], 0
        for _ in range(runs):
            rec = _child(CHILD_LOAD, out, env)
            samples.append(rec["read_ms"])
            weight_bytes = rec["weight_bytes"]
        rows.append((name, out.stat().st_size, weight_bytes, statistics.median(samples)))
    print(f"{'model':<14}{'file MB':>10}{'weights MB':>12}{'load ms (median)':>19}")
    for name, size, wb, ms in rows:
        print(f"{name:<14}{size / 2**20:>10.1f}{wb / 2**20:>12.1f}{ms:>19.2f}")


def main() -> None:
    from light_models import materialize

    from edgert.converter import convert

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["resnet50"])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--cold", action="store_true", help="also time an empty Numba cache")
    ap.add_argument("--source", action="store_true",
                    help="keep the environment's bytecode settings (PYTHONDONTWRITEBYTECODE...)")
    ap.add_argument("--load", action="store_true", help="time read_model alone instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        env = dict(os.environ)
        if not args.source:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        onnx_paths, paths = {}, {}
        for name in args.models:
            onnx_paths[name] = materialize(name)
            paths[name] = tmp / f"{name}.edgert"
            convert(str(onnx_paths[name]), str(paths[name]))
        if args.load:
            load_times(args.models, paths, args.runs, env)
            return
        print("bytecode: " + ("as the environment sets it" if args.source
                              else "cached, as for an installed package"))
        for name in args.models:
            startup(name, onnx_paths[name], paths[name], args.runs, args.cold, env, tmp)


if __name__ == "__main__":
    main()
