"""CUDA kernels (numba.cuda), one module per family with the CPU modules' names.

Each family module exposes ``register(reg)``. A CUDA kernel holds the CPU kernel of the same op
(see :class:`~edgert.runtime.kernels.cuda._common.CudaKernel`): the checks and output shapes
are shared, ``invoke`` runs device code, and the host kernel covers what the device code does
not. Importing this package imports ``numba.cuda`` (the optional
``numba-cuda`` extra); only :class:`~edgert.runtime.cuda_interpreter.CudaInterpreter` does so.

Ops without a CUDA kernel are not an error: :func:`registry` answers them with the CPU kernel,
and the CUDA interpreter runs those on the host, copying their inputs and outputs (it lists
them in ``CudaInterpreter.host_ops``). Shape arithmetic is folded at prepare time anyway.
"""

from __future__ import annotations

from edgert.runtime.registry import MAX_OPSET, Kernel, KernelRegistry

_REGISTRY: KernelRegistry | None = None


class CudaRegistry(KernelRegistry):
    """The CUDA kernels, with the CPU registry answering for ops they do not cover."""

    def __init__(self, fallback: KernelRegistry):
        super().__init__("cuda")
        self.fallback = fallback

    def lookup(
        self, op_type: str, domain: str = "", version: int = MAX_OPSET
    ) -> type[Kernel] | None:
        own = self.device_lookup(op_type, domain, version)
        return own if own is not None else self.fallback.lookup(op_type, domain, version)

    def device_lookup(
        self, op_type: str, domain: str = "", version: int = MAX_OPSET
    ) -> type[Kernel] | None:
        """The CUDA kernel for an op, or None (no CPU fallback)."""
        return super().lookup(op_type, domain, version)


def registry() -> CudaRegistry:
    """The CUDA kernel registry (built on first use; imports numba.cuda)."""
    global _REGISTRY
    if _REGISTRY is None:
        from edgert.runtime.kernels.cpu import registry as cpu_registry
        from edgert.runtime.kernels.cuda import (
            conv,
            elementwise,
            fused,
            gemm,
            indexing,
            movement,
            normalization,
            pooling,
            quantized,
            reduce,
            resize,
            shape,
        )

        reg = CudaRegistry(cpu_registry())
        for family in (conv, gemm, pooling, elementwise, fused, normalization, shape,
                       quantized, reduce, resize, movement, indexing):
            family.register(reg)
        _REGISTRY = reg
    return _REGISTRY
