"""CPU kernels, one module per family, registered explicitly.

Each family module exposes ``register(reg)`` which adds its kernels to a
:class:`~edgert.runtime.registry.KernelRegistry`. Importing a module compiles nothing: Numba
kernels compile (or load from the on-disk cache) on first call.
"""

from __future__ import annotations

from edgert.runtime.registry import KernelRegistry

_REGISTRY: KernelRegistry | None = None


def registry() -> KernelRegistry:
    """The CPU kernel registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        from edgert.runtime.kernels.cpu import (
            attention,
            control_flow,
            conv,
            elementwise,
            fused,
            gemm,
            indexing,
            misc,
            movement,
            normalization,
            pooling,
            quantize_linear,
            quantized,
            recurrent,
            reduce,
            resize,
            sequence,
            shape,
            shuffle,
        )

        reg = KernelRegistry("cpu")
        for family in (conv, gemm, pooling, elementwise, reduce, normalization, shape, movement,
                       indexing, resize, quantized, fused):
            family.register(reg)
        # ONNX-conformance families (issue 3)
        for family in (misc, control_flow, quantize_linear, attention, recurrent):
            family.register(reg)
        shuffle.register(reg)  # edgert.ChannelShuffle (issue 4's optimizer)
        sequence.register(reg)  # sequence and optional values (edgert/runtime/values.py)
        # sampling, detection and spectral operators (issue 3, more ops)
        from edgert.runtime.kernels.cpu import detection, sampling, spectral

        for family in (sampling, detection, spectral):
            family.register(reg)
        from edgert.runtime.kernels.cpu import linalg  # Det (issue 3, new dtypes round)

        linalg.register(reg)
        _REGISTRY = reg
    return _REGISTRY
