"""Threaded GEMM on top of NumPy's BLAS, shared by the Conv, Gemm and MatMul kernels."""

from __future__ import annotations

import os

import numpy as np

# OpenBLAS's own multi-threading synchronizes many times per call, and its workers spin-yield
# while waiting. On a machine whose cores are also busy with other work (the usual case on a
# shared box, and for any app that does more than inference) that collapses: measured on 2 loaded
# cores, a 64x576 @ 576x3136 GEMM took 28 ms with 1 BLAS thread and 100-140 ms with 2, and
# SqueezeNet at 2 threads ran 10x slower than at 1. So BLAS always runs single-threaded, and
# edgert splits a large product into ``num_threads`` column blocks itself: one hand-off and one
# join per GEMM (the same split measured 28 ms on the loaded machine, half on an idle one).
_gemm_threads = 1
_pool = None
# Below this many multiply-adds a GEMM is not split (a hand-off costs ~20-50 µs). The
# environment variable EDGERT_SPLIT_MIN_MACS overrides it (read at import).
SPLIT_MIN_MACS = int(os.environ.get("EDGERT_SPLIT_MIN_MACS", 1 << 21))


def set_gemm_threads(n: int) -> None:
    """Threads for :func:`matmul` (the interpreter sets its ``num_threads`` here)."""
    global _gemm_threads, _pool
    n = max(1, int(n))
    if n > 1 and (_pool is None or _pool._max_workers < n - 1):
        from concurrent.futures import ThreadPoolExecutor

        old, _pool = _pool, ThreadPoolExecutor(n - 1, thread_name_prefix="edgert-gemm")
        if old is not None:
            old.shutdown(wait=False)
    _gemm_threads = n


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``np.matmul(a, b, out=out)``, split over column blocks across the GEMM threads.

    ``b`` must have rank >= 2 (its last axis is split; ``a`` is shared by every block).
    """
    n = _gemm_threads
    cols = b.shape[-1]
    if n == 1 or b.ndim < 2 or cols < 2 * n or out.size * a.shape[-1] < SPLIT_MIN_MACS:
        np.matmul(a, b, out=out)
        return
    # Column blocks rounded to 16 floats so each block's rows start on a cache-line multiple.
    step = -(-cols // n)
    step = -(-step // 16) * 16
    futures = []
    for lo in range(step, cols, step):
        hi = min(lo + step, cols)
        futures.append(_pool.submit(np.matmul, a, b[..., lo:hi], out=out[..., lo:hi]))
    np.matmul(a, b[..., :step], out=out[..., :step])
    for f in futures:
        f.result()
