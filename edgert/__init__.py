"""edgert: neural networks from training to edge devices."""

from edgert.errors import (
    DTypeError,
    EdgeRTError,
    InputError,
    KernelError,
    ModelFormatError,
    ModelImportError,
    ResourceLimitError,
    ShapeError,
    UnsupportedOpError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "EdgeRTError",
    "ModelFormatError",
    "ModelImportError",
    "UnsupportedOpError",
    "ShapeError",
    "DTypeError",
    "InputError",
    "KernelError",
    "ResourceLimitError",
]


def __getattr__(name: str):
    # Lazy: `import edgert` stays light; converting pulls in onnx only when asked for.
    if name == "convert":
        from edgert.converter import convert

        return convert
    if name == "quantize":
        from edgert.quantization import quantize  # the function; the package: edgert.quantization

        return quantize
    if name == "Interpreter":
        from edgert.runtime import Interpreter

        return Interpreter
    raise AttributeError(f"module 'edgert' has no attribute {name!r}")
