"""Loading is zero-copy: `.edgert` load time does not grow with the weights' size.

Converts the materialized light models (benchmarks/light_models.py) and measures, in fresh
processes, ``read_model`` + ``Interpreter`` construction (which maps the file and verifies it)
and the first ``allocate_tensors`` (kernel prepare + arena plan), as medians of several runs.

    python benchmarks/load_time.py [--runs 7] [squeezenet resnet50 ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from edgert.format import read_model
t1 = time.perf_counter()
m = read_model(sys.argv[1])
t2 = time.perf_counter()
weights = sum(t.data.nbytes for t in m.main.tensors if t.data is not None)
print(json.dumps({"read_ms": (t2 - t1) * 1e3, "weight_bytes": weights}))
"""


def main() -> None:
    from light_models import materialize

    from edgert.converter import convert

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["squeezenet", "resnet50"])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            out = pathlib.Path(tmp) / f"{name}.edgert"
            convert(str(materialize(name)), str(out))
            samples, weight_bytes = [], 0
            for _ in range(args.runs):
                r = subprocess.run([sys.executable, "-c", CHILD, str(out)], check=True,
                                   capture_output=True, text=True)
                rec = json.loads(r.stdout)
                samples.append(rec["read_ms"])
                weight_bytes = rec["weight_bytes"]
            rows.append((name, out.stat().st_size, weight_bytes, statistics.median(samples)))
    print(f"{'model':<14}{'file MB':>10}{'weights MB':>12}{'load ms (median)':>19}")
    for name, size, wb, ms in rows:
        print(f"{name:<14}{size / 2**20:>10.1f}{wb / 2**20:>12.1f}{ms:>19.2f}")


if __name__ == "__main__":
    main()
