"""Single-thread latency of edgert int8 vs edgert fp32 on the light models (one process,
alternating runs, medians), plus the int8 GEMM throughput against float32 sgemm.

    python benchmarks/quantize_speed.py [--runs 7] [--samples 2] [models...]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def gemm_rates(shapes=((64, 576, 3136), (256, 2304, 196), (512, 4608, 49), (1024, 256, 196),
                       (256, 64, 3136))):
    """GMAC/s of the int8 GEMM with its requantization (qgemm.py) vs NumPy float32 matmul,
    alternating, medians; the activations are packed outside the timed region."""
    import numba

    from edgert.runtime.kernels.cpu import qgemm as Q
    from edgert.runtime.kernels.cpu._native.openblas import set_blas_threads

    numba.set_num_threads(1)  # single thread on both sides
    set_blas_threads(1)
    rng = np.random.default_rng(0)
    for m, k, p in shapes:
        w = rng.integers(-127, 128, (m, k)).astype(np.int8)
        x = rng.integers(-128, 128, (k, p)).astype(np.int8)
        plan = Q.Plan.gemm(k, p)
        Q.pack_pointwise(x, 0, 0, k, plan.buf)
        apack = Q.pack_weights(w)
        bias = np.zeros(m, np.int64)
        mult = np.full(m, 1 << 30, np.int64)
        shift = np.full(m, 40, np.int64)
        y = np.empty((m, p), np.int8)
        wf, xf = w.astype(np.float32), x.astype(np.float32)
        out = np.empty((m, p), np.float32)

        def q():
            Q.qgemm(apack, plan, m, bias, mult, shift, 0, -128, 127, y, False)

        def f():
            np.matmul(wf, xf, out=out)

        q()
        tq, tf = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            q()
            tq.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            f()
            tf.append(time.perf_counter() - t0)
        macs = m * k * p / 1e9
        print(f"  GEMM {m}x{k}x{p}: int8 {macs / np.median(tq):5.1f} GMAC/s, "
              f"sgemm {macs / np.median(tf):5.1f} GMAC/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["squeezenet", "resnet50", "inception_v1"])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--samples", type=int, default=2)
    args = ap.parse_args()
    from light_models import materialize

    from edgert.converter import convert
    from edgert.quantization import quantize
    from edgert.runtime import Interpreter

    gemm_rates()
    for name in args.models:
        src = str(materialize(name))
        fp32 = Interpreter(convert(src), num_threads=1)
        import onnxruntime as ort

        inp = ort.InferenceSession(src).get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        rng = np.random.default_rng(0)
        feeds = [{inp.name: rng.normal(size=shape).astype(np.float32)}
                 for _ in range(args.samples)]
        data8 = quantize(src, calibration=feeds)[0]
        int8 = Interpreter(data8, num_threads=1)
        x = feeds[0]
        fp32.run(x)
        int8.run(x)
        t32, t8 = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fp32.run(x)
            t32.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            int8.run(x)
            t8.append(time.perf_counter() - t0)
        a, b = np.median(t32) * 1e3, np.median(t8) * 1e3
        print(f"{name}: edgert fp32 {a:.1f} ms, int8 {b:.1f} ms -> int8/fp32 {b / a:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
