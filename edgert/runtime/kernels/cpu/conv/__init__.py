"""Float Conv and ConvTranspose on the CPU, as a package of named paths.

* :mod:`.choose` — :class:`ConvPath` (the algorithms), :class:`ConvTuning` (their measured
  thresholds) and :func:`choose`, the one decision from shapes, dtypes, constness and threads;
* one module per family of paths, each path a plan class (packed weights, scratch, ``run``):
  :mod:`.pointwise`, :mod:`.depthwise`, :mod:`.depthwise3`, :mod:`.direct`, :mod:`.im2col`;
* :mod:`.kernel` — :class:`ConvKernel`: validate, infer, choose, plan; invoke runs the plan;
* :mod:`.transpose` — :class:`ConvTransposeKernel`.

Every spatial rank is handled as 3-D: a 1-D input ``(N, C, W)`` is viewed as
``(N, C, 1, 1, W)`` and a 2-D one as ``(N, C, 1, H, W)``, with kernel 1, stride 1, dilation 1
and no padding on the added axes, so one compiled kernel per dtype serves every rank. The
attribute semantics (window, auto_pad, output sizes) are device-neutral and live in
:mod:`edgert.runtime.ops`.

Constant weights are packed once in ``prepare``; the GEMM paths keep a zero-copy view of a
mapped file's weights (an owned copy doubled resident memory), the Numba-kernel paths an owned
copy (a read-only array is another Numba type and would compile the kernels a second time).
"""

from __future__ import annotations

from edgert.runtime.kernels.cpu.conv.choose import (
    DEFAULT_TUNING,
    ConvPath,
    ConvProblem,
    ConvTuning,
    choose,
)
from edgert.runtime.kernels.cpu.conv.kernel import PLANS, ConvKernel
from edgert.runtime.kernels.cpu.conv.transpose import ConvTransposeKernel
from edgert.runtime.registry import KernelRegistry

__all__ = ["DEFAULT_TUNING", "PLANS", "ConvKernel", "ConvPath", "ConvProblem",
           "ConvTransposeKernel", "ConvTuning", "choose", "register"]


def register(reg: KernelRegistry) -> None:
    from edgert.runtime.kernels.cpu.float16 import with_float16

    # float16 operands run through the float32 kernels (one rounding at the end): float16.py
    conv, conv_t = with_float16(ConvKernel), with_float16(ConvTransposeKernel)
    reg.add("Conv", conv)
    reg.add("ConvTranspose", conv_t)
    reg.add("Conv", conv, domain="edgert")
    reg.add("ConvTranspose", conv_t, domain="edgert")
