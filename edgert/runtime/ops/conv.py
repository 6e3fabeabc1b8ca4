"""Conv semantics shared by the CPU and CUDA kernels: input and attribute checks, the window, the
fused activation, the residual and the channel shuffle of ``edgert.Conv``, and the output shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgert.errors import ShapeError
from edgert.runtime.ops.activation import Activation, parse_activation
from edgert.runtime.ops.window import (
    Geo,
    Window,
    float_dtype,
    kernel_shape_attr,
    sliding_window,
)
from edgert.runtime.registry import Kernel, TensorInfo


@dataclass(frozen=True)
class ConvSpec:
    """A validated Conv: ``Y = act(conv(X, W) + B + Z)``, optionally channel-shuffled."""

    dtype: np.dtype
    n: int
    c_in: int
    m_out: int
    group: int
    win: Window
    act: Activation  # the graph's activation (applied after the residual)
    has_bias: bool  # a B input is given (constant or not)
    has_sum: bool  # edgert.Conv's residual Z is given
    shuffle_g: int  # edgert.Conv's channel_shuffle groups (0: none)
    y_shape: tuple[int, ...]

    @property
    def geo(self) -> Geo:
        return self.win.geo()

    @property
    def p_out(self) -> int:
        return math.prod(self.win.out_shape)


def conv_spec(kernel: Kernel, inputs: list[TensorInfo | None]) -> ConvSpec:
    """Validate a Conv's inputs and attributes (ONNX Conv, or ``edgert.Conv``: a fused
    ``activation``, a fourth input ``Z`` and ``channel_shuffle``) and infer its output."""
    kernel.require_inputs(inputs, 2, 4)
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    z = inputs[3] if len(inputs) > 3 else None
    edgert_op = kernel.op.domain == "edgert"
    if z is not None and not edgert_op:
        raise kernel.error("a fourth input (the residual Z) is edgert.Conv's, not ONNX Conv's")
    dt = float_dtype(kernel, [(x, "X"), (w, "W"), (b, "B"), (z, "Z")])
    rank = len(x.shape)
    if not 3 <= rank <= 5:
        raise kernel.error(
            f"input X must have rank 3, 4 or 5 (N, C, spatial...), got shape {x.shape}",
            ShapeError)
    if len(w.shape) != rank:
        raise kernel.error(
            f"weight W has shape {w.shape} (rank {len(w.shape)}) but X has rank {rank}",
            ShapeError)
    group = int(kernel.attr("group", 1))
    if group < 1:
        raise kernel.error(f"attribute 'group' = {group} must be >= 1")
    n_img, c_in = x.shape[0], x.shape[1]
    m_out, c_per_group = w.shape[0], w.shape[1]
    if c_in != c_per_group * group:
        raise kernel.error(
            f"input X has {c_in} channels but W of shape {w.shape} with group={group} "
            f"expects {c_per_group} x {group} = {c_per_group * group}", ShapeError)
    if m_out % group != 0:
        raise kernel.error(
            f"W has {m_out} output channels, which group={group} does not divide", ShapeError)
    if b is not None and tuple(b.shape) != (m_out,):
        raise kernel.error(f"bias B has shape {b.shape}, expected ({m_out},)", ShapeError)
    ksp = tuple(w.shape[2:])
    kernel_shape_attr(kernel, ksp)
    if any(k <= 0 for k in ksp):
        raise kernel.error(f"weight W has an empty spatial shape {w.shape}", ShapeError)
    win = sliding_window(kernel, tuple(x.shape[2:]), ksp)
    y_shape = (n_img, m_out) + win.out_shape
    if z is not None and tuple(z.shape) != y_shape:
        raise kernel.error(f"residual Z has shape {tuple(z.shape)}, expected the output's "
                           f"{y_shape}", ShapeError)
    g_sh = int(kernel.attr("channel_shuffle", 0) or 0)
    if g_sh and not edgert_op:
        raise kernel.error("attribute 'channel_shuffle' is edgert.Conv's, not ONNX Conv's")
    if g_sh < 0 or (g_sh and m_out % g_sh):
        raise kernel.error(f"channel_shuffle = {g_sh} must be >= 0 and divide the {m_out} "
                           "output channels", ShapeError)
    return ConvSpec(dt, n_img, c_in, m_out, group, win,
                    parse_activation(kernel.where(), kernel.attrs), b is not None,
                    z is not None, g_sh if g_sh > 1 else 0, y_shape)
