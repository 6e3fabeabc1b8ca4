"""Exact int8 GEMM on float32 BLAS, with the requantization epilogue fused in one Numba pass.

Why float32: this CPU class (AVX2 + FMA, no VNNI) runs OpenBLAS sgemm at 2-3x the speed of the
best int16 Numba kernels we could get LLVM to emit (measured one thread, 256x2304x196: 2x4
register-blocked int32 kernel 15-19 GMAC/s with ``vpmulld``; a plain dot gets ``vpmaddwd`` but
pays a horizontal sum per output, 14-16 GMAC/s; sgemm 22-30 GMAC/s on the same noisy box).

Why it is exact: every operand is a small integer, ``|x - zp| <= 255`` and ``|w| <= 128``, so a
product is at most 32,640 and a sum of up to ``EXACT_CHUNK = 512`` of them stays below
``2**24``. Every partial sum BLAS forms over such a chunk (in any order, with or without FMA) is
an integer below ``2**24`` and therefore exactly representable in float32: the chunk result is
the exact integer dot product. Longer reductions are split into chunks whose exact results are
summed in float64 (exact below ``2**53``), so the int32 accumulator of the int8 scheme is
reproduced bit for bit.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu import blas

EXACT_CHUNK = 512  # 512 * 255 * 128 < 2**24: float32 sums of this many products are exact


def pack_weights(w: np.ndarray, group: int) -> list[list[np.ndarray]]:
    """Pre-pack int8 weights ``(M, K)`` (K per group) into float32 chunks, once at prepare.

    Returns ``packed[g][c]``: the contiguous float32 ``(M / group, k1 - k0)`` block of group
    ``g`` and K chunk ``c`` (``[k0, k1)`` = ``[c * EXACT_CHUNK, ...)``).
    """
    m_n, k_n = w.shape
    m_g = m_n // group
    wf = np.asarray(w, np.float32)
    return [[np.ascontiguousarray(wf[g * m_g:(g + 1) * m_g, k0:k0 + EXACT_CHUNK])
             for k0 in range(0, k_n, EXACT_CHUNK)] for g in range(group)]


@njit(parallel=True)
def requant_rows(acc, bias, mult, shift, zo, lo, hi, y):
    """``y[m, p] = clamp(zo + round(((acc[m, p] + bias[m]) * mult[m]) >> shift[m]))``.

    ``acc`` holds exact integers (float32 / float64 from :func:`exact_gemm`, or int32); the
    conversion to int64 is exact. ``(acc + bias) * mult`` stays below 2**62 (|acc + bias| <
    2**31, mult < 2**31). Rounding is half up on the fixed-point product, as TFLite's
    ``MultiplyByQuantizedMultiplier``; saturation to ``[lo, hi]`` folds Relu/Clip.
    """
    for m in prange(acc.shape[0]):
        b = bias[m]
        mm = mult[m]
        sh = shift[m]
        rnd = np.int64(1) << (sh - 1)
        for p in range(acc.shape[1]):
            # via int32: vcvttps2dq / vcvttpd2dq vectorize, a float -> int64 conversion does
            # not on AVX2 (|acc| < 2**31 is guaranteed by the K limit the kernels check).
            v = (((np.int64(np.int32(acc[m, p])) + b) * mm + rnd) >> sh) + zo
            y[m, p] = min(max(v, lo), hi)


def exact_gemm_group(chunks: list[np.ndarray], col_g: np.ndarray, tmp: np.ndarray,
                     acc: np.ndarray | None) -> np.ndarray:
    """Exact integer ``W_g @ col_g`` for one group, as float32 (one chunk) or float64.

    ``chunks``: the group's float32 weight chunks from :func:`pack_weights`; ``col_g``: float32
    ``(K, P)`` rows of ``x - zp``. Uses the GEMM threads of :mod:`blas`.
    """
    if len(chunks) == 1:
        blas.matmul(chunks[0], col_g, tmp)
        return tmp
    k0 = 0
    for c, wc in enumerate(chunks):
        k1 = k0 + wc.shape[1]
        blas.matmul(wc, col_g[k0:k1], tmp)
        if c == 0:
            np.copyto(acc, tmp)
        else:
            np.add(acc, tmp, out=acc)
        k0 = k1
    return acc
