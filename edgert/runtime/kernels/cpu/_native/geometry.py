"""Compiled helpers over the window geometry (:class:`edgert.runtime.ops.window.Geo`)."""

from __future__ import annotations

import numpy as np

from edgert.runtime._jit import njit


# Performance note (measured, Numba 0.68 / LLVM): an inner loop that indexes ``a[i + offset]``
# with a signed offset is NOT vectorized, because Numba's negative-index wraparound test stays in
# the loop. Hot loops therefore run ``for i in range(n)`` over slices taken outside the loop
# (``yrow[lo:hi]``, ``src[lo + off:hi + off]``), with the valid range of each tap from
# :func:`valid_range`.
@njit
def valid_range(n_out, n_in, stride, offset):
    """``[lo, hi)``: the positions ``o < n_out`` with ``0 <= o * stride + offset < n_in``."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = (n_in - 1 - offset) // stride + 1  # Python floor division: negative stays negative
    hi = min(hi, n_out)
    hi = max(hi, lo)
    return lo, hi


@njit
def tap_ranges(geo):
    """Per innermost-axis tap ``kw``: the input offset and the valid output range ``[lo, hi)``.

    Returns an ``int64[KW, 3]`` array of ``(offset, lo, hi)``, hoisting two integer divisions per
    tap out of the row loops.
    """
    out = np.empty((geo.kw, 3), np.int64)
    for kw in range(geo.kw):
        off = kw * geo.dw - geo.pw
        lo, hi = valid_range(geo.ow, geo.w, geo.sw, off)
        out[kw, 0] = off
        out[kw, 1] = lo
        out[kw, 2] = hi
    return out
