"""What the CPU that kernels are compiled for can do: its LLVM feature names, read once.

Numba compiles for the host CPU unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` say otherwise
(a portable cache, e.g. ``NUMBA_CPU_NAME=generic``); kernels that call a target-specific LLVM
intrinsic (``vpdpbusd``) must ask here first, since code naming an instruction the target lacks
does not compile. The answer follows those variables: with a CPU name but no feature list, no
optional feature is assumed.
"""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def features() -> frozenset[str]:
    """The enabled LLVM target features (``avx2``, ``avx512vnni``, ``neon``, ...)."""
    listed = os.environ.get("NUMBA_CPU_FEATURES")
    if listed is not None:
        return frozenset(f[1:] for f in listed.split(",") if f.startswith("+"))
    if os.environ.get("NUMBA_CPU_NAME"):
        return frozenset()
    from llvmlite import binding

    return frozenset(name for name, on in binding.get_host_cpu_features().items() if on)


def has_avx512_vnni() -> bool:
    """512-bit ``vpdpbusd`` (u8 x s8 four-way dot products into int32) is available."""
    f = features()
    return {"avx512f", "avx512bw", "avx512vnni"} <= f
