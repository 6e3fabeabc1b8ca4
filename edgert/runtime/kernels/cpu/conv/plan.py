"""What every Conv path's plan provides (see :class:`ConvPlan`)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.runtime.kernels.cpu.conv.choose import ConvPath, ConvProblem, ConvTuning
from edgert.runtime.ops.activation import Activation


class ConvPlan:
    """A path's prepared state for one layer: packed weights, its scratch and ``run``.

    Built once per ``prepare`` from the :class:`~.choose.ConvProblem`. ``scratch_nbytes`` bytes
    (viewed as ``scratch_shape`` of the layer's dtype) come from the interpreter's shared
    scratch, or are allocated on first use when the kernel runs alone.

    Class attributes tell the kernel what the path does itself:

    * ``adds_residual``: the path adds edgert.Conv's residual ``Z`` before its activation; for
      the others the kernel runs the path without an activation and finishes with one pass
      ``y = act(y + z)``.
    * ``shuffles``: the path writes a channel-shuffled output itself when the shuffle groups are
      the conv's (else the kernel moves the channels afterwards).
    """

    path: ClassVar[ConvPath]
    adds_residual: ClassVar[bool] = False
    shuffles: ClassVar[bool] = False

    def __init__(self, p: ConvProblem, t: ConvTuning, act: Activation, shuffle: bool = False):
        self.p, self.t = p, t
        self.act = act
        self.code = act.code
        self.p0, self.p1 = act.params(p.dtype)
        self.shuffle = shuffle
        self.scratch_nbytes = 0
        self.scratch_shape: tuple[int, ...] = (0,)
        self.no_sum = {3: np.zeros((0, 0, 0), p.dtype), 2: np.zeros((0, 0), p.dtype)}

    def pack(self, w: np.ndarray, const: bool) -> np.ndarray:
        """``w`` (the ONNX ``(M, C/G, k...)`` weight) in the layout ``run`` takes; ``const``:
        once at prepare (may copy), else per call."""
        p = self.p
        return w.reshape(p.group, p.m_out // p.group, p.c_per_group * p.k_size)

    def run(self, x: np.ndarray, w, bias: np.ndarray, y: np.ndarray, z: np.ndarray | None,
            scratch: np.ndarray | None) -> tuple | None:
        """Compute ``y`` (C-contiguous ``(N, M, spatial...)``) from the C-contiguous ``x``.

        Returns ``(fn, args)`` when the whole run was the one compiled call ``fn(*args)``: the
        kernel may repeat it as is while it is handed the same arrays (see ConvKernel.invoke).
        """
        raise NotImplementedError

    def residual(self, z: np.ndarray | None, shape: tuple) -> np.ndarray:
        """The residual as a C-contiguous array of ``shape``, or an empty one."""
        if z is None:
            return self.no_sum[len(shape)]
        return np.ascontiguousarray(z).reshape(shape)
