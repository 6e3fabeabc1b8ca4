"""Fused activations of ``edgert`` ops (Conv, ConvTranspose, Gemm, MatMul): the
``activation`` / ``activation_params`` attributes, their codes and ONNX defaults. The kernels of
every device apply them (the CPU's in :mod:`edgert.runtime.kernels.cpu.epilogue`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgert.errors import KernelError

ACT_NONE = 0
ACT_RELU = 1
ACT_CLIP = 2
ACT_LEAKY_RELU = 3
ACT_SIGMOID = 4
ACT_HARD_SIGMOID = 5
ACT_HARD_SWISH = 6
ACT_TANH = 7
ACT_GELU = 8
ACT_SWISH = 9  # x * sigmoid(alpha * x): SiLU (alpha 1), fused from Mul(x, Sigmoid(x))

# name -> (code, default parameters). Defaults are the ONNX attribute defaults of each op.
_ACTIVATIONS: dict[str, tuple[int, tuple[float, ...]]] = {
    "Relu": (ACT_RELU, ()),
    "Clip": (ACT_CLIP, (-math.inf, math.inf)),
    "LeakyRelu": (ACT_LEAKY_RELU, (0.01,)),
    "Sigmoid": (ACT_SIGMOID, ()),
    "HardSigmoid": (ACT_HARD_SIGMOID, (0.2, 0.5)),
    "HardSwish": (ACT_HARD_SWISH, ()),
    "Tanh": (ACT_TANH, ()),
    "Gelu": (ACT_GELU, ()),
    "Swish": (ACT_SWISH, (1.0,)),
}

ACTIVATION_NAMES = tuple(_ACTIVATIONS)


@dataclass(frozen=True)
class Activation:
    """A parsed fused activation: its code and two parameters (unused ones are 0)."""

    code: int = ACT_NONE
    p0: float = 0.0
    p1: float = 0.0

    @property
    def active(self) -> bool:
        return self.code != ACT_NONE

    def params(self, dtype: np.dtype) -> tuple:
        """The parameters as scalars of ``dtype``, so float32 kernels stay in float32."""
        t = np.dtype(dtype).type
        return t(self.p0), t(self.p1)


def parse_activation(where: str, attrs: dict) -> Activation:
    """Read the ``activation`` / ``activation_params`` attributes of a fused node.

    Args:
        where: the op's description for error messages (``Kernel.where()``).
        attrs: the node's attributes.

    Raises:
        KernelError: unknown activation name or too many parameters.
    """
    name = attrs.get("activation")
    params = attrs.get("activation_params")
    if name is None or name == "" or name == "None":
        if params:
            raise KernelError(f"{where}: activation_params given without an activation")
        return Activation()
    if isinstance(name, bytes):
        name = name.decode()
    if name not in _ACTIVATIONS:
        raise KernelError(
            f"{where}: unsupported fused activation {name!r}; "
            f"expected one of {', '.join(ACTIVATION_NAMES)}"
        )
    code, defaults = _ACTIVATIONS[name]
    values = [float(v) for v in (params or [])]
    if len(values) > len(defaults):
        raise KernelError(
            f"{where}: activation {name} takes at most {len(defaults)} parameter(s), "
            f"got {len(values)}"
        )
    full = values + list(defaults[len(values) :])
    full += [0.0] * (2 - len(full))
    return Activation(code, full[0], full[1])
