"""Helpers for the CUDA tests: turn on Numba's CUDA simulator, run a CUDA kernel beside the CPU one.

Without a GPU the CUDA kernels run in Numba's simulator (``NUMBA_ENABLE_CUDASIM``). The flag is
read when ``numba.cuda`` is first imported, so :func:`enable_simulator_if_no_gpu` must run before
any edgert CUDA module is imported; it leaves a real GPU alone. Only CUDA code is affected: the
CPU kernels never import ``numba.cuda``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import run_kernel


def enable_simulator_if_no_gpu() -> None:
    """Use the simulator unless a GPU is usable (or numba.cuda is already imported)."""
    if "numba.cuda" in sys.modules:
        return
    from numba.core import config

    if config.ENABLE_CUDASIM:
        return
    try:
        import importlib

        if importlib.util.find_spec("numba.cuda") is None:
            return
    except (ImportError, ValueError):
        return
    import subprocess

    # Probing a driver in this process would fix the mode for good: ask a child process.
    probe = "from numba import cuda; print(cuda.is_available())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    if out.stdout.strip() != "True":
        config.ENABLE_CUDASIM = True


def require_cuda_or_skip():
    """Skip the calling test module when neither numba-cuda nor numba's built-in CUDA works."""
    enable_simulator_if_no_gpu()
    try:
        from edgert.runtime.cuda_interpreter import cuda_available
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"CUDA path not importable: {exc}", allow_module_level=True)
    if not cuda_available():
        pytest.skip("numba.cuda is not installed or usable", allow_module_level=True)


def run_cuda_kernel(
    op_type: str,
    inputs: list[np.ndarray | None],
    attrs: dict | None = None,
    const_inputs: tuple[int, ...] | str = (),
    version: int = 21,
    domain: str = "",
    expect_device: bool = True,
) -> list[np.ndarray]:
    """Prepare one CUDA kernel as the CUDA interpreter would and invoke it on device copies.

    Outputs are pre-filled with NaN (or a marker) on the device, so an element the kernel leaves
    unwritten fails the comparison.
    """
    from numba import cuda

    from edgert.runtime.kernels.cuda import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    cls = registry().device_lookup(op_type, domain, version)
    assert cls is not None, f"no CUDA kernel for {op_type}"
    kernel = cls(OpContext(op_type, "test_node", dict(attrs or {}), domain, version, 1))
    infos = []
    for i, x in enumerate(inputs):
        if x is None:
            infos.append(None)
            continue
        known = const_inputs == "all" or i in const_inputs
        infos.append(TensorInfo(tuple(x.shape), x.dtype, x if known else None))
    out_infos = kernel.prepare(infos)
    assert kernel.on_device is expect_device, f"{op_type}: on_device is {kernel.on_device}"
    if not expect_device:
        return []
    d_in = [None if x is None else cuda.to_device(np.ascontiguousarray(x)) for x in inputs]
    d_out = []
    for info in out_infos:
        fill = np.empty(info.shape, info.dtype)
        fill.fill(np.nan if fill.dtype.kind == "f" else 7)
        d_out.append(cuda.to_device(fill))
    kernel.invoke(d_in, d_out)
    cuda.synchronize()
    return [d.copy_to_host() for d in d_out]


def check_same(op_type: str, inputs, attrs=None, const_inputs=(), version: int = 21,
               domain: str = "", outputs: int | None = None, rtol=1e-4, atol=1e-5):
    """Assert the CUDA kernel's outputs equal the CPU kernel's (NaN where NaN)."""
    want = run_kernel(op_type, inputs, attrs, const_inputs, version, domain)
    got = run_cuda_kernel(op_type, inputs, attrs, const_inputs, version, domain)
    n = len(want) if outputs is None else outputs
    for w, g in zip(want[:n], got[:n]):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        elif atol:
            diff = np.abs(g.astype(np.int64) - w.astype(np.int64))
            assert diff.max(initial=0) <= atol, f"{op_type}: off by {diff.max()} > {atol}"
        else:
            np.testing.assert_array_equal(g, w)
    return got
