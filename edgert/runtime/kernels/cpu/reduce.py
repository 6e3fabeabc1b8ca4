"""CPU kernels: reduce family."""

from edgert.runtime.registry import KernelRegistry


def register(reg: KernelRegistry) -> None:
    pass
