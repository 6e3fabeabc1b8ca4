"""Threaded GEMM on top of NumPy's BLAS, shared by the Conv, Gemm and MatMul kernels."""

from __future__ import annotations

import os

import numpy as np

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native import openblas

# OpenBLAS's own multi-threading synchronizes many times per call, and its workers spin-yield
# while waiting. On a machine whose cores are also busy with other work (the usual case on a
# shared box, and for any app that does more than inference) that collapses: measured on 2 loaded
# cores, a 64x576 @ 576x3136 GEMM took 28 ms with 1 BLAS thread and 100-140 ms with 2, and
# SqueezeNet at 2 threads ran 10x slower than at 1. So BLAS always runs single-threaded, and
# edgert splits a large product into ``num_threads`` blocks itself, on Numba's thread pool where
# NumPy's BLAS can be called from compiled code (_native/openblas.py), else on a Python thread pool.
_pool = None
# Below this many multiply-adds a GEMM is not split: ~20 µs of work, against ~3 µs to enter a
# parallel region with spinning workers (measured along with _jit.PARALLEL_MIN_WORK). The
# environment variable EDGERT_SPLIT_MIN_MACS overrides it (read at import).
SPLIT_MIN_MACS = int(os.environ.get("EDGERT_SPLIT_MIN_MACS", 1 << 19))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int = 1) -> None:
    """``np.matmul(a, b, out=out)``, split over ``threads`` (the calling kernel's
    ``OpContext.num_threads``) when it is large enough.

    ``b`` must have rank >= 2. With NumPy's OpenBLAS reachable from compiled code
    (:mod:`._native.openblas`) the blocks run on Numba's thread pool; otherwise ``b``'s last
    axis is split over a Python thread pool.
    """
    n = threads
    cols = b.shape[-1]
    if n == 1 or b.ndim < 2 or cols < 2 or out.size * a.shape[-1] < SPLIT_MIN_MACS:
        np.matmul(a, b, out=out)
        return
    if _threaded_openblas(a, b, out, n):
        return
    if cols < 2 * n:
        np.matmul(a, b, out=out)
        return
    global _pool
    if _pool is None or _pool._max_workers < n - 1:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="edgert-gemm")
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


def _threaded_openblas(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int) -> bool:
    """Run ``matmul`` through :mod:`._native.openblas` on Numba's pool; False when it does not apply
    (no usable BLAS, other dtypes, broadcasting it does not cover, overlapping operands)."""
    r = openblas.routines()
    dt = out.dtype
    if r is None or dt not in (np.float32, np.float64) or a.dtype != dt or b.dtype != dt:
        return False
    a3, b3, c3 = openblas.as3d(a), openblas.as3d(b), openblas.as3d(out)
    if a3 is None or b3 is None or c3 is None:
        return False
    # a's batch axes must be b's trailing ones (a[i % len(a)] pairs with b[i]), out's b's.
    if a.ndim > 2 and (a.ndim > b.ndim or b.shape[b.ndim - a.ndim : -2] != a.shape[:-2]):
        return False
    if (out.shape[:-2] != b.shape[:-2] or c3.shape != (b3.shape[0], a.shape[-2], b.shape[-1])
            or a.shape[-1] != b.shape[-2]):
        return False
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    openblas.gemm3(r, a3, b3, c3, threads, SPLIT_MIN_MACS)
    return True


def _row_keys(a: np.ndarray) -> np.ndarray:
    """Each row of a C-contiguous 2-D array as one opaque byte string (a 1-D void array)."""
    return a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).reshape(a.shape[0])


def identical_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Classes of bit-identical rows of a 2-D matrix, or ``None`` when every row is distinct.

    Returns ``(keep, index)``: ``keep`` lists the first row of each class in row order, and
    ``index[i]`` is the position in ``keep`` of row ``i``'s class, so ``a[keep][index]`` is
    ``a``. Rows compare by their bits: ``-0.0`` and ``0.0`` differ, identical NaNs match.

    Why: OpenBLAS sgemm is not position-independent, in either operand. NumPy's row-major
    ``A @ B`` is the column-major ``Bᵀ Aᵀ`` to OpenBLAS, so the rows of ``A`` are its kernel's N
    dimension. The Haswell/Zen kernel takes N in blocks of 12 and computes
    each block as two halves of 6 with the M panels staggered: the first (or last) 8-wide M
    panel of one half is summed with two accumulators (even and odd k, added at the end), the
    other panels with one; a 4-wide N tail is summed split as well. So rows 6-11 of every 12 of
    ``A`` can round one ulp away from rows 0-5 with identical values (measured: 502 of 1,000
    identical rows in SqueezeNet's last layer), and swapping the operands (``Bᵀ @ Aᵀ``) moves
    the problem to the first/last 8 rows instead. Computing each class of identical rows once
    and copying it makes them bit-identical, whatever the BLAS does.

    Cost, once per constant weight: a sort of each row's first 8 bytes as one integer (rows of
    trained weights almost always differ there; ~0.1 ms for 2048 rows); all the rows are
    compared only when two of those keys collide. (``np.unique`` is avoided on the common path:
    its first call in a process costs ~20 ms of imports.)
    """
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] == 0:
        return None
    m = a.shape[0]
    a = np.ascontiguousarray(a)
    n_cols = min(a.shape[1], max(1, 8 // a.itemsize))
    key_bytes = n_cols * a.itemsize
    if key_bytes in (4, 8):
        key = np.ascontiguousarray(a[:, :n_cols]).view(f"u{key_bytes}").reshape(m)
        key = np.sort(key)
        if not (key[1:] == key[:-1]).any():
            return None
    _, first, inverse = np.unique(_row_keys(a), return_index=True, return_inverse=True)
    if first.shape[0] == m:
        return None
    # np.unique orders the classes by their bytes; renumber them by first appearance.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return first[order], rank[inverse.reshape(-1)]


@njit(parallel=True)
def gemv_rows(a, wt, y, parts):
    """``y[n] = a · wt[n]`` for ``wt (N, K)`` row-major (a Gemm's ``B`` with ``transB=1``, as
    classifier heads store it), ``parts`` threads each taking a range of rows.

    A one-row Gemm reads each weight once, so it runs at memory speed; through ``matmul`` its
    transposed ``B`` (a strided view) was split on the Python thread pool at 2 threads and ran
    slower than on one (MobileNetV2's 1280x1000 head: 0.54 -> 0.79 ms in the model, measured).
    Four rows per pass share the loads of ``a``.
    """
    n_n, k_n = wt.shape
    if a.shape[0] != k_n or y.shape[0] != n_n:
        raise ValueError("gemv_rows: operand shapes do not match")
    for p in prange(parts):
        n = n_n * p // parts
        n1 = n_n * (p + 1) // parts
        while n + 4 <= n1:
            w0, w1, w2, w3 = wt[n], wt[n + 1], wt[n + 2], wt[n + 3]
            s0 = s1 = s2 = s3 = y.dtype.type(0.0)
            for k in range(k_n):
                av = a[k]
                s0 += av * w0[k]
                s1 += av * w1[k]
                s2 += av * w2[k]
                s3 += av * w3[k]
            y[n], y[n + 1], y[n + 2], y[n + 3] = s0, s1, s2, s3
            n += 4
        while n < n1:
            w0 = wt[n]
            s0 = y.dtype.type(0.0)
            for k in range(k_n):
                s0 += a[k] * w0[k]
            y[n] = s0
            n += 1


gemv_rows_serial = serial_twin(gemv_rows)


def gemv(a: np.ndarray, wt: np.ndarray, y: np.ndarray, threads: int = 1) -> None:
    """``y = wt @ a`` (see :func:`gemv_rows`), split over ``threads`` when large enough."""
    n = threads if wt.size >= SPLIT_MIN_MACS else 1
    (gemv_rows if n > 1 else gemv_rows_serial)(a, wt, y, n)
