"""Fused activation as a CUDA device function (the device twin of ``cpu/epilogue.py``).

Conv, Gemm and MatMul apply ``activation`` / ``activation_params`` (parsed by the CPU kernels'
``prepare`` into :class:`~edgert.runtime.kernels.cpu.epilogue.Activation`) to each output value
while it is still in a register. The code is a run-time argument: a branch on a value that is
the same for every thread of a launch costs nothing measurable (no divergence).

The numerical rules match the CPU epilogue: NaN propagates through Relu and Clip (ordered
comparisons that NaN fails), Sigmoid uses the branch whose ``exp`` cannot overflow, Gelu is the
exact erf form.
"""

from __future__ import annotations

import math

from edgert.runtime.kernels.cpu.epilogue import (
    ACT_CLIP,
    ACT_GELU,
    ACT_HARD_SIGMOID,
    ACT_HARD_SWISH,
    ACT_LEAKY_RELU,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_SWISH,
    ACT_TANH,
)
from edgert.runtime.kernels.cuda._common import cuda


@cuda.jit(device=True)
def sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@cuda.jit(device=True)
def activate(v, code, p0, p1):
    """``v`` after fused activation ``code`` with parameters ``p0``, ``p1``."""
    if code == ACT_RELU:
        return 0.0 if v < 0 else v
    if code == ACT_CLIP:
        v = max(v, p0)
        v = min(v, p1)
        return v
    if code == ACT_LEAKY_RELU:
        return v * p0 if v < 0 else v
    if code == ACT_SIGMOID:
        return sigmoid(v)
    if code == ACT_HARD_SIGMOID:
        h = p0 * v + p1
        if h < 0:
            h = 0.0
        if h > 1:
            h = 1.0
        return h
    if code == ACT_HARD_SWISH:
        h = v / 6.0 + 0.5
        if h < 0:
            h = 0.0
        if h > 1:
            h = 1.0
        return v * h
    if code == ACT_TANH:
        return math.tanh(v)
    if code == ACT_GELU:
        return 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))
    if code == ACT_SWISH:
        return v * sigmoid(p0 * v)
    return v
