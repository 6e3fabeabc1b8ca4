"""The edgert runtime: what ships to a device.

``import edgert.runtime`` is light: it pulls in NumPy and the flatbuffers reader, never onnx,
protobuf or the training code, and compiles nothing. Numba is imported, and kernels compile (or
load from the on-disk cache), when the first :class:`Interpreter` is created.
"""

from edgert.runtime.interpreter import Interpreter, register_device
from edgert.runtime.pool import InterpreterPool
from edgert.runtime.registry import KernelOptions

__all__ = ["Interpreter", "InterpreterPool", "KernelOptions"]


def _cuda_interpreter() -> type:
    # Imported only when a CUDA interpreter is asked for: the CPU runtime never loads
    # numba.cuda. Without numba-cuda or a GPU its constructor raises a clear EdgeRTError.
    from edgert.runtime.cuda_interpreter import CudaInterpreter

    return CudaInterpreter


register_device("cuda", _cuda_interpreter)
