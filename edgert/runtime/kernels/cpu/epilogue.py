"""Fused bias + activation epilogue shared by Conv, ConvTranspose, Gemm and MatMul.

The graph optimizer folds an activation that follows one of those ops into the op itself, as two
node attributes:

* ``activation``: ``"Relu"``, ``"Clip"``, ``"LeakyRelu"``, ``"Sigmoid"``, ``"HardSigmoid"``,
  ``"HardSwish"``, ``"Tanh"`` or ``"Gelu"`` (the exact erf form, not the tanh approximation);
* ``activation_params``: floats: Clip ``[min, max]``, LeakyRelu ``[alpha]``, HardSigmoid
  ``[alpha, beta]``; nothing for the others. Missing values take the ONNX defaults.

Applying the activation while the output tile is still in cache saves a full pass over memory,
and adding the bias in the same loop saves another. An absent ``activation`` means none.

Numerical traps handled here:

* NaN propagates: ``Relu(NaN)`` is NaN as in NumPy (``v if not v < 0``), so a NaN produced
  upstream is not silently turned into 0.
* Sigmoid is evaluated in the form whose ``exp`` cannot overflow for the branch that is kept.
* Each activation has its own loop, chosen once per row, so LLVM sees a branch-free body that it
  can vectorize (a per-element ``switch`` would not be hoisted reliably).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.kernels.cpu.vmath import erf_row, sigmoid_row, tanh_row

# The activation codes and their parsing are op semantics, shared with the CUDA kernels.
from edgert.runtime.ops.activation import (  # noqa: F401 (re-exported to the kernels)
    ACT_CLIP,
    ACT_GELU,
    ACT_HARD_SIGMOID,
    ACT_HARD_SWISH,
    ACT_LEAKY_RELU,
    ACT_NONE,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_SWISH,
    ACT_TANH,
    ACTIVATION_NAMES,
    Activation,
    parse_activation,
)


# ----- row loops ---------------------------------------------------------------------------------
@njit
def _clip(v, lo, hi):
    # Two ordered tests: NaN fails both and passes through; lo > hi yields hi (ONNX Clip rule).
    if v < lo:  # noqa: PLR1730 (min/max would not promise NaN pass-through)
        v = lo
    if v > hi:  # noqa: PLR1730
        v = hi
    return v


@njit
def clamp_bounds(act, p0, p1, zero, inf):
    """``(lo, hi, fused)`` in the output's dtype (``zero``, ``inf``): the clamp that applies
    Relu/Clip (or nothing) in a kernel's own store, NaN passing, and whether that is the whole
    activation (else ``act_row`` follows, without bias)."""
    if act == ACT_RELU:
        return zero, inf, True
    if act == ACT_CLIP:
        return p0, p1, True
    return -inf, inf, act == ACT_NONE


@njit
def _sigmoid(v):
    """A scalar sigmoid that cannot overflow (exp of a non-positive number only); NaN stays."""
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit
def _act_f32(row, act, p0):
    """Sigmoid, Tanh, Gelu or Swish of a float32 row in place, vectorized (:mod:`.vmath`)
    through scratch rows (in place a vmath loop would run its scalar version)."""
    n = row.shape[0]
    t = np.empty(n, np.float32)
    if act == ACT_SWISH:  # x * sigmoid(alpha * x)
        for i in range(n):
            t[i] = row[i] * p0
        e = np.empty(n, np.float32)
        sigmoid_row(e, t, n)
        for i in range(n):
            row[i] = row[i] * e[i]
        return
    if act == ACT_GELU:
        k = np.float32(0.7071067811865476)
        for i in range(n):
            t[i] = row[i] * k
        e = np.empty(n, np.float32)
        erf_row(e, t, n)
        for i in range(n):
            row[i] = np.float32(0.5) * row[i] * (np.float32(1.0) + e[i])
        return
    for i in range(n):
        t[i] = row[i]
    if act == ACT_SIGMOID:
        sigmoid_row(row, t, n)
    else:
        tanh_row(row, t, n)


@njit
def act_row(row, b, act, p0, p1):
    """``row[i] = act(row[i] + b)`` in place for a 1-D contiguous ``row``."""
    n = row.shape[0]
    if row.itemsize == 4 and n >= 16 and (act == ACT_SIGMOID or act == ACT_TANH
                                          or act == ACT_GELU or act == ACT_SWISH):
        if b != row.dtype.type(0.0):
            for i in range(n):
                row[i] = row[i] + b
        _act_f32(row, act, p0)
        return
    one = row.dtype.type(1.0)
    zero = row.dtype.type(0.0)
    half = row.dtype.type(0.5)
    sixth = row.dtype.type(1.0 / 6.0)
    if act == ACT_NONE:
        if b != zero:
            for i in range(n):
                row[i] = row[i] + b
    elif act == ACT_RELU:
        for i in range(n):
            v = row[i] + b
            row[i] = zero if v < zero else v  # noqa: FURB136 (NaN stays)
    elif act == ACT_CLIP:
        for i in range(n):
            row[i] = _clip(row[i] + b, p0, p1)
    elif act == ACT_LEAKY_RELU:
        for i in range(n):
            v = row[i] + b
            row[i] = v * p0 if v < zero else v
    elif act == ACT_SIGMOID:
        for i in range(n):
            v = row[i] + b
            if v >= zero:
                row[i] = one / (one + math.exp(-v))
            else:
                e = math.exp(v)
                row[i] = e / (one + e)
    elif act == ACT_HARD_SIGMOID:
        for i in range(n):
            row[i] = _clip(p0 * (row[i] + b) + p1, zero, one)
    elif act == ACT_HARD_SWISH:
        for i in range(n):
            v = row[i] + b
            row[i] = v * _clip(sixth * v + half, zero, one)
    elif act == ACT_TANH:
        for i in range(n):
            row[i] = math.tanh(row[i] + b)
    elif act == ACT_GELU:
        k = row.dtype.type(0.7071067811865476)
        for i in range(n):
            v = row[i] + b
            row[i] = half * v * (one + math.erf(v * k))
    elif act == ACT_SWISH:
        for i in range(n):
            v = row[i] + b
            row[i] = v * _sigmoid(p0 * v)


@njit
def act_row_vec(row, bias, act, p0, p1):
    """``row[i] = act(row[i] + bias[i])`` in place (a bias per column)."""
    n = row.shape[0]
    if row.itemsize == 4 and n >= 16 and (act == ACT_SIGMOID or act == ACT_TANH
                                          or act == ACT_GELU or act == ACT_SWISH):
        for i in range(n):
            row[i] = row[i] + bias[i]
        _act_f32(row, act, p0)
        return
    one = row.dtype.type(1.0)
    zero = row.dtype.type(0.0)
    half = row.dtype.type(0.5)
    sixth = row.dtype.type(1.0 / 6.0)
    if act == ACT_NONE:
        for i in range(n):
            row[i] = row[i] + bias[i]
    elif act == ACT_RELU:
        for i in range(n):
            v = row[i] + bias[i]
            row[i] = zero if v < zero else v  # noqa: FURB136 (NaN stays)
    elif act == ACT_CLIP:
        for i in range(n):
            row[i] = _clip(row[i] + bias[i], p0, p1)
    elif act == ACT_LEAKY_RELU:
        for i in range(n):
            v = row[i] + bias[i]
            row[i] = v * p0 if v < zero else v
    elif act == ACT_SIGMOID:
        for i in range(n):
            v = row[i] + bias[i]
            if v >= zero:
                row[i] = one / (one + math.exp(-v))
            else:
                e = math.exp(v)
                row[i] = e / (one + e)
    elif act == ACT_HARD_SIGMOID:
        for i in range(n):
            row[i] = _clip(p0 * (row[i] + bias[i]) + p1, zero, one)
    elif act == ACT_HARD_SWISH:
        for i in range(n):
            v = row[i] + bias[i]
            row[i] = v * _clip(sixth * v + half, zero, one)
    elif act == ACT_TANH:
        for i in range(n):
            row[i] = math.tanh(row[i] + bias[i])
    elif act == ACT_GELU:
        k = row.dtype.type(0.7071067811865476)
        for i in range(n):
            v = row[i] + bias[i]
            row[i] = half * v * (one + math.erf(v * k))
    elif act == ACT_SWISH:
        for i in range(n):
            v = row[i] + bias[i]
            row[i] = v * _sigmoid(p0 * v)


@njit(parallel=True)
def apply_bias_activation(out2d, bias, act, p0, p1):
    """In place: ``out2d[r, :] = act(out2d[r, :] + bias[r % len(bias)])``, parallel over rows.

    ``bias`` may be empty (no bias). Its length must divide the number of rows: a conv output
    viewed as ``(N * M, P)`` takes the ``M`` per-channel biases, repeated for each image.
    ``p0``/``p1`` must be scalars of ``out2d``'s dtype (see :meth:`Activation.params`).
    """
    rows = out2d.shape[0]
    nb = bias.shape[0]
    zero = out2d.dtype.type(0.0)
    for r in prange(rows):
        b = bias[r % nb] if nb > 0 else zero
        act_row(out2d[r], b, act, p0, p1)


@njit(parallel=True)
def apply_col_bias_activation(out2d, bias, act, p0, p1):
    """In place: ``out2d[r, c] = act(out2d[r, c] + bias[c])`` (Gemm's ``C`` of shape ``(N,)``)."""
    rows = out2d.shape[0]
    for r in prange(rows):
        act_row_vec(out2d[r], bias, act, p0, p1)


@njit(parallel=True)
def apply_sum_activation(out2d, z2d, act, p0, p1):
    """In place: ``out2d = act(out2d + z2d)`` (a fused residual sum, same shapes), by rows."""
    zero = out2d.dtype.type(0.0)
    for r in prange(out2d.shape[0]):
        row = out2d[r]
        row += z2d[r]
        act_row(row, zero, act, p0, p1)


# Serial twins for small outputs (a parallel launch costs more than the work there).
apply_bias_activation_serial = serial_twin(apply_bias_activation)
apply_col_bias_activation_serial = serial_twin(apply_col_bias_activation)
apply_sum_activation_serial = serial_twin(apply_sum_activation)


def epilogue(out2d: np.ndarray, bias: np.ndarray, act: Activation, params: tuple) -> None:
    """Apply a per-row bias and ``act`` to ``out2d`` in place; a no-op when there is neither."""
    if out2d.size == 0 or (bias.shape[0] == 0 and not act.active):
        return
    if out2d.size < PARALLEL_MIN_WORK:
        apply_bias_activation_serial(out2d, bias, act.code, params[0], params[1])
    else:
        apply_bias_activation(out2d, bias, act.code, params[0], params[1])


def sum_epilogue(out2d: np.ndarray, z2d: np.ndarray, act: Activation, params: tuple) -> None:
    """``out2d = act(out2d + z2d)`` in place (``z2d`` of ``out2d``'s shape and dtype)."""
    if out2d.size == 0:
        return
    fn = apply_sum_activation_serial if out2d.size < PARALLEL_MIN_WORK else apply_sum_activation
    fn(out2d, z2d, act.code, params[0], params[1])


def col_epilogue(out2d: np.ndarray, bias: np.ndarray, code: int, p0, p1) -> None:
    """``out2d[r, c] = act(out2d[r, c] + bias[c])`` in place, serial for small outputs."""
    if out2d.size < PARALLEL_MIN_WORK:
        apply_col_bias_activation_serial(out2d, bias, code, p0, p1)
    else:
        apply_col_bias_activation(out2d, bias, code, p0, p1)
