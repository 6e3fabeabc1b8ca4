"""edgert.train: a small autograd engine with PyTorch's feel that exports to ONNX.

* :mod:`.tensor` — :class:`Tensor`, ``backward()``, ``no_grad``, tensor ops;
* :mod:`.functional` (``F``) — convolution, pooling, normalization, losses;
* :mod:`.nn` — ``Module``, layers, containers, loss modules (``CrossEntropyLoss``, ...);
* :mod:`.optim` — optimizers and schedulers;
* :mod:`.data` — ``DataLoader`` and transforms; :mod:`.fit` — ``fit``/``evaluate``/``predict``;
* :func:`export_onnx` — trace a forward pass into an ONNX model.

The creation function ``tensor()`` lives in :mod:`edgert.train.tensor` (the package attribute
``edgert.train.tensor`` is that module). Importing this package never imports onnx (only
:func:`export_onnx` does, when called).
"""

from edgert.train import data, fit, functional, nn, optim
from edgert.train.tensor import (
    AutogradError,
    Tensor,
    arange,
    cat,
    from_numpy,
    manual_seed,
    no_grad,
    ones,
    rand,
    randn,
    stack,
    zeros,
)


def export_onnx(*args, **kwargs):
    """See :func:`edgert.train.export.export_onnx` (imported lazily: it needs onnx)."""
    from edgert.train.export import export_onnx as _export

    return _export(*args, **kwargs)


__all__ = [
    "AutogradError", "Tensor", "arange", "cat", "data", "export_onnx", "fit", "from_numpy",
    "functional",
    "manual_seed", "nn", "no_grad", "ones", "optim", "rand", "randn", "stack", "zeros",
]
