"""The edgert runtime: what ships to a device.

``import edgert.runtime`` is light: it pulls in NumPy and the flatbuffers reader, never onnx,
protobuf or the training code, and compiles nothing. Numba is imported, and kernels compile (or
load from the on-disk cache), when the first :class:`Interpreter` is created.
"""

from edgert.runtime.interpreter import Interpreter
from edgert.runtime.registry import KernelOptions

__all__ = ["Interpreter", "KernelOptions"]
