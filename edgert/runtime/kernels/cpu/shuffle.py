"""CPU kernel: ``edgert.ChannelShuffle``, ShuffleNet's channel shuffle as one data movement.

ShuffleNet exports spell the shuffle as ``Reshape(N, g, C/g, ...) -> Transpose(0, 2, 1, ...) ->
Reshape(N, C, ...)``: three kernels and two intermediate tensors. The optimizer
(:mod:`edgert.optimizer.shuffle`) replaces them by this op, which copies each channel's
contiguous spatial block once::

    out[n, j * g + i, ...] = x[n, i * (C / g) + j, ...]      i < g, j < C / g

It is a strided copy of whole channel planes, which NumPy already does in compiled loops for
every dtype, so the kernel writes the planned output through NumPy views (no Numba compile).
"""

from __future__ import annotations

import numpy as np

from edgert.errors import ShapeError
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo


class ChannelShuffle(Kernel):
    """``edgert.ChannelShuffle(x; group)``: input ``(N, C, ...)`` with ``C % group == 0``."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        g = self.attr("group")
        if g is None:
            raise self.error("attribute 'group' is required")
        g = int(g)
        if len(x.shape) < 2:
            raise self.error(f"input must have rank >= 2 (N, C, ...), got shape {x.shape}",
                             ShapeError)
        c = int(x.shape[1])
        if g < 1 or c % g:
            raise self.error(f"group {g} must be >= 1 and divide the {c} channels of input "
                             f"{x.shape}", ShapeError)
        self._group = g
        return [TensorInfo(tuple(x.shape), x.dtype)]

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        n, c, g = x.shape[0], x.shape[1], self._group
        inner = out.size // (n * c)
        src = np.ascontiguousarray(x).reshape(n, g, c // g, inner).transpose(0, 2, 1, 3)
        np.copyto(out.reshape(n, c // g, g, inner), src)


def register(reg: KernelRegistry) -> None:
    """Add ``edgert.ChannelShuffle`` to ``reg``."""
    reg.add("ChannelShuffle", ChannelShuffle, domain="edgert")


__all__ = ["register"]
