"""CPU kernels: linear algebra (Det).

Det of a batch of square matrices ``[*, M, M] -> [*]`` by LU decomposition with partial
pivoting, one matrix per ``prange`` iteration: the pivot of each column is its entry of largest
magnitude (which keeps the multipliers at most 1 in magnitude, the classic guard against growth
of rounding errors), each row swap flips the sign, and the determinant is the product of the
pivots. It runs in float64 whatever the input type (float16/32/64) and rounds once to the
output type: a product of M pivots over- or underflows float32 long before float64, and the
elimination loses fewer digits.

A matrix holding a NaN has a NaN determinant (checked first: the pivot search compares
magnitudes, and a NaN would lose every comparison). A column without a non-zero pivot means the
matrix is singular: the determinant is exactly 0.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@njit
def _det_one(w):
    """Determinant of the square float64 matrix ``w``, which is overwritten by its LU factors."""
    # The pivots' product is kept as mantissa * 2**exponent: multiplied directly, a float64
    # matrix diag(1e200, 1e200, 1e-300) overflows to inf half-way though its determinant is
    # 1e100. ldexp rounds once at the end (to inf or 0 only when the result itself is out of
    # range; Numba's ldexp is C's, which saturates where Python's math.ldexp would raise).
    n = w.shape[0]
    for i in range(n):
        for j in range(n):
            if w[i, j] != w[i, j]:
                return np.nan
    det = 1.0
    exponent = 0
    for k in range(n):
        p = k
        best = abs(w[k, k])
        for i in range(k + 1, n):
            v = abs(w[i, k])
            if v > best:
                best = v
                p = i
        if best == 0.0:
            return 0.0
        if p != k:
            for j in range(k, n):
                t = w[k, j]
                w[k, j] = w[p, j]
                w[p, j] = t
            det = -det
        piv = w[k, k]
        det, e = math.frexp(det * piv)
        exponent += e
        for i in range(k + 1, n):
            f = w[i, k] / piv
            if f != 0.0:
                for j in range(k + 1, n):
                    w[i, j] -= f * w[k, j]
    return math.ldexp(det, exponent)


@njit(parallel=True)
def det_batched(a, work, out):
    """``out[b] = det(a[b])`` for ``a`` [B, M, M] (any float type); ``work`` is float64 [B, M, M]
    scratch, one matrix per batch item so the parallel iterations share nothing."""
    for b in prange(a.shape[0]):
        w = work[b]
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                w[i, j] = a[b, i, j]
        out[b] = _det_one(w)


det_batched_serial = serial_twin(det_batched)


class Det(Kernel):
    """ONNX Det: determinant of each square matrix in the last two axes (float types)."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        dt = np.dtype(x.dtype)
        if dt not in _FLOATS:
            raise self.error(f"input has dtype {dt}; Det supports float16, float32 and float64",
                             DTypeError)
        shape = tuple(x.shape)
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise self.error(f"input must be [*, M, M] (square matrices), got shape {shape}",
                             ShapeError)
        batch = shape[:-2]
        n = shape[-1]
        count = int(np.prod(batch, dtype=np.int64))
        self._flat = (count, n, n)
        self._work = np.empty(self._flat, np.float64)
        self._out64 = np.empty(count, np.float64)
        self._kernel = det_batched if count * n * n * n >= PARALLEL_MIN_WORK \
            else det_batched_serial
        return [TensorInfo(batch, dt)]

    def invoke(self, inputs, outputs):
        a = np.ascontiguousarray(inputs[0]).reshape(self._flat)
        if a.dtype == np.float16:  # Numba has no float16 arithmetic: widen first
            a = a.astype(np.float32)
        self._kernel(a, self._work, self._out64)
        np.copyto(outputs[0].reshape(-1), self._out64, casting="unsafe")


def register(reg: KernelRegistry) -> None:
    reg.add("Det", Det)
