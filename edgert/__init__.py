"""edgert: neural networks from training to edge devices."""

from edgert.errors import (
    DTypeError,
    EdgeRTError,
    InputError,
    KernelError,
    ModelFormatError,
    ModelImportError,
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
]
