"""CPU kernels: pooling family."""

from edgert.runtime.registry import KernelRegistry


def register(reg: KernelRegistry) -> None:
    pass
