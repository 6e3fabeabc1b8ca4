"""What every CUDA kernel family shares: the ``numba.cuda`` import, launch sizes, the kernel mixin.

``numba.cuda`` comes from the optional ``numba-cuda`` package (``pip install edgert[cuda]``);
older Numba releases also ship a built-in ``numba.cuda``, which works the same for what edgert
uses. Only modules under ``edgert.runtime.kernels.cuda`` and ``edgert.runtime.cuda_interpreter``
import it, and only when a CUDA interpreter is created, so the CPU runtime never loads it.

Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` runs every kernel in Numba's CUDA simulator (pure
Python, one thread at a time): slow, but it executes the same kernel source, which is how the
test suite checks the CUDA kernels against the CPU ones on machines without a GPU.

How a CUDA kernel is written: it subclasses the CPU kernel of the same op together with
:class:`CudaKernel`, so ``prepare`` (validation, shape inference, weight packing) is the CPU
kernel's, unchanged, and only ``invoke`` is replaced by device code. ``invoke`` receives device
arrays (views into the interpreter's device arena, or constants uploaded once) and launches
kernels on the interpreter's stream; it never copies to or from the host.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edgert.errors import EdgeRTError
from edgert.runtime.registry import Kernel

try:  # the optional extra; CudaInterpreter turns its absence into a clear error
    from numba import cuda
except ImportError:  # pragma: no cover - depends on the installation
    cuda = None  # type: ignore[assignment]

MAX_RANK = 8  # the strided-copy kernels index up to this many dimensions


def simulating() -> bool:
    """True when Numba runs CUDA kernels in its simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


# Threads per block for the 1-D elementwise-style launches. 256 keeps 8 warps per block, enough
# to hide memory latency without limiting occupancy by registers on any recent GPU. The simulator
# runs every thread of a block as a Python thread, finished or not, so there one warp per block
# keeps the tiny test launches cheap; every such kernel is a grid-stride loop, correct for any
# launch size (and the simulator then also exercises the loop's later iterations).
THREADS = 32 if simulating() else 256


def require_cuda() -> Any:
    """The ``numba.cuda`` module, or a clear error saying why the CUDA path is unavailable."""
    if cuda is None:
        raise EdgeRTError(
            "device='cuda' needs numba-cuda: install it with `pip install edgert[cuda]` "
            "(or `pip install numba-cuda`), or use device='cpu'"
        )
    try:
        ok = cuda.is_available()
    except Exception:  # noqa: BLE001 (a broken driver installation: report it the same way)
        ok = False
    if not ok:
        raise EdgeRTError(
            "device='cuda': no usable CUDA GPU or driver was found (numba.cuda.is_available() is "
            "False); use device='cpu', or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in "
            "Numba's (slow) simulator"
        )
    return cuda


def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks for a 1-D grid-stride launch over ``n`` items (at least 1, capped)."""
    return max(1, min(math.ceil(n / threads), 65535))


def is_device_array(x: Any) -> bool:
    """True for Numba device arrays and any object with ``__cuda_array_interface__``."""
    return hasattr(x, "__cuda_array_interface__") or (
        hasattr(x, "copy_to_host") and not isinstance(x, np.ndarray)
    )


def as_device_array(x: Any):
    """A Numba device array for ``x`` (zero-copy for CuPy / PyTorch CUDA tensors)."""
    if hasattr(x, "copy_to_host"):
        return x
    return cuda.as_cuda_array(x)


def to_device(a: np.ndarray, stream=0):
    """Upload a host array (made C-contiguous first: mapped weights may be strided views)."""
    return cuda.to_device(np.ascontiguousarray(a), stream=stream)


def strides_for(shape: tuple[int, ...], rank: int = MAX_RANK) -> np.ndarray:
    """C-order element strides of ``shape``, right-aligned in an ``int64[rank]`` table."""
    st = np.zeros(rank, np.int64)
    step = 1
    for k in range(len(shape) - 1, -1, -1):
        st[rank - len(shape) + k] = step
        step *= int(shape[k])
    return st


def padded_shape(shape: tuple[int, ...], rank: int = MAX_RANK) -> np.ndarray:
    """``shape`` right-aligned in an ``int64[rank]`` table, padded with 1s in front."""
    out = np.ones(rank, np.int64)
    for k, d in enumerate(shape):
        out[rank - len(shape) + k] = int(d)
    return out


def broadcast_strides(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """Element strides that read ``in_shape`` broadcast to ``out_shape`` (0 on stretched axes)."""
    st = strides_for(tuple(in_shape))
    pad = padded_shape(tuple(in_shape))
    st[pad == 1] = 0
    del out_shape  # the output's rank is implied by the right alignment
    return st


class CudaKernel(Kernel):
    """Base of the CUDA kernels. It does not subclass the CPU kernel of its op; it holds one
    (``host``, of class :attr:`CPU`), by composition:

    * ``prepare`` defaults to ``host.prepare``: the op's checks and output shapes are the same on
      both devices (the CPU kernel's, or the device-neutral semantics in
      :mod:`edgert.runtime.ops`, which a CUDA kernel may call instead, as Conv does);
    * the host kernel runs the op where the device code does not cover a case
      (:meth:`host_invoke`), and folds it at prepare time on host values;
    * a read of an attribute this kernel does not have goes to the host kernel's prepared state
      (shapes, parameters): device code reads it, never writes it.

    Attributes:
        CPU: the CPU kernel class of the same op; its traits are this kernel's.
        on_device: set by ``prepare``; False asks the interpreter to run this op with the CPU
            ``invoke`` (for a case the device code does not cover: a dtype, a computed
            parameter), copying its inputs and outputs. The interpreter reports such ops.
    """

    device: ClassVar[str] = "cuda"
    CPU: ClassVar[type[Kernel]]
    on_device: bool = True
    stream: Any = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cpu = cls.__dict__.get("CPU")
        if cpu is not None:
            cls.traits = cpu.traits
            cls.foldable = cpu.foldable

    def __init__(self, op):
        super().__init__(op)
        self.host = self.CPU(op)
        self._host_inputs = None  # the infos a lazily prepared host kernel is prepared with

    def __getattr__(self, name: str):
        host = self.__dict__.get("host")
        if host is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(host, name)

    def prepare(self, inputs):
        """The host kernel's checks, output shapes and prepared state."""
        self._host_inputs = None
        return self.host.prepare(inputs)

    def defer_host(self, inputs) -> None:
        """Prepare the host kernel only if :meth:`host_invoke` is ever called (a kernel whose
        own ``prepare`` did not need the host's state)."""
        self._host_inputs = inputs

    def host_invoke(self, inputs, outputs):
        """The CPU kernel's ``invoke`` on host arrays (used for folding and fallbacks)."""
        if self._host_inputs is not None:
            self.host.prepare(self._host_inputs)
            self._host_inputs = None
        return self.host.invoke(inputs, outputs)

    def upload(self, host: np.ndarray | None, name: str):
        """Device copy of a prepare-time constant (packed weights...), made once per shape.

        Weights do not change between prepares (only input shapes do), so a re-plan after
        ``resize_tensor_input`` keeps the device copy made at load. Small tables (geometry,
        broadcast strides) do change with shapes: they are keyed by their contents. Launching a
        kernel with a host array would copy it synchronously at every call, hence uploads.
        """
        if host is None:
            return None
        host = np.ascontiguousarray(host)
        cache = self.__dict__.setdefault("_uploads", {})
        key = (name, host.shape, host.dtype.str, host.tobytes() if host.size <= 64 else b"")
        dev = cache.get(key)
        if dev is None:
            dev = to_device(host)
            cache[key] = dev
        return dev

    def upload_plan(self, plan: tuple, tag: int = 0) -> tuple:
        """``plan`` with its NumPy tables replaced by device copies (scalars kept)."""
        return tuple(
            self.upload(v, f"plan{tag}.{k}") if isinstance(v, np.ndarray) else v
            for k, v in enumerate(plan)
        )
