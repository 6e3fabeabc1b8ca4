"""Modules: :class:`Module` and the layers, with PyTorch's contract and default initializations.

``Module.__setattr__`` registers a :class:`Parameter` as a parameter, a :class:`Module` as a
submodule, and (after :meth:`Module.register_buffer`) an array as a buffer, so ``parameters()``,
``state_dict()`` and ``train()``/``eval()`` find them without further bookkeeping. The maths lives
in :mod:`edgert.train.functional`; ``forward`` just calls it.

Initialization follows PyTorch: Linear and Conv weights and biases are uniform in
``+-1/sqrt(fan_in)`` (``kaiming_uniform_(a=sqrt(5))`` works out to that bound); BatchNorm and
LayerNorm start at weight 1, bias 0; Embedding at N(0, 1); LSTM/GRU at ``+-1/sqrt(hidden)``.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from edgert.errors import EdgeRTError, ShapeError
from edgert.train import functional as F
from edgert.train import tensor as T
from edgert.train.tensor import Tensor


class StateDictError(EdgeRTError):
    """``load_state_dict`` got missing or unexpected keys, or arrays of the wrong shape."""


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as a trainable parameter."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad)


def _uniform(shape: tuple[int, ...], bound: float) -> Parameter:
    return Parameter(T.rng().uniform(-bound, bound, shape).astype(np.float32))


class Module:
    """Base class of every layer and model."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("call super().__init__() before assigning to a Module")
        params, mods, bufs = self._parameters, self._modules, self._buffers
        if isinstance(value, Parameter):
            mods.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            mods[name] = value
        elif name in bufs:
            bufs[name] = None if value is None else np.asarray(getattr(value, "data", value))
        elif value is None and (name in params or name in ("weight", "bias")):
            params[name] = None  # an absent optional parameter (bias=False)
        else:
            params.pop(name, None)
            mods.pop(name, None)
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_modules", "_buffers"):
            d = self.__dict__.get(table)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._modules, self._buffers):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """A persistent, non-trainable array (running statistics): saved in the state dict."""
        self._buffers[name] = value

    def register_parameter(self, name: str, value: Parameter | None) -> None:
        self._parameters[name] = value

    def add_module(self, name: str, module: Module) -> None:
        self._modules[name] = module

    # -- calling ----------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- traversal --------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for mod_name, m in self.named_modules():
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def double(self) -> Module:
        """Convert parameters and buffers to float64 (for gradient checks)."""
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = p.data.astype(np.float64)
            for k, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[k] = b.astype(np.float64)
        return self

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers by dotted name, as copies."""
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for mod_name, m in self.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            for name, p in m._parameters.items():
                if p is not None:
                    out[pre + name] = p.data.copy()
            for name, b in m._buffers.items():
                if b is not None:
                    out[pre + name] = np.array(b, copy=True)
        return out

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> tuple[list, list]:
        """Copy arrays into the parameters and buffers; returns ``(missing, unexpected)``.

        With ``strict`` a missing or unexpected key raises :class:`StateDictError` listing all
        of them; a shape mismatch always raises.
        """
        own: dict[str, tuple[Module, str, str]] = {}
        for mod_name, m in self.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            for name, p in m._parameters.items():
                if p is not None:
                    own[pre + name] = (m, name, "p")
            for name, b in m._buffers.items():
                if b is not None:
                    own[pre + name] = (m, name, "b")
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {missing}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected}")
            raise StateDictError(f"Error loading state dict into {type(self).__name__}: "
                                 + "; ".join(parts))
        for key, (m, name, kind) in own.items():
            if key not in state:
                continue
            value = np.asarray(state[key].data if isinstance(state[key], Tensor) else state[key])
            target = m._parameters[name].data if kind == "p" else m._buffers[name]
            if value.shape != target.shape:
                raise StateDictError(f"size mismatch for {key}: the checkpoint has shape "
                                     f"{value.shape}, the model {target.shape}")
            if kind == "p":
                m._parameters[name].data = value.astype(target.dtype, copy=True)
            else:
                m._buffers[name] = value.astype(target.dtype, copy=True)
        return missing, unexpected

    def save(self, path: str | os.PathLike) -> None:
        """Write the state dict to an ``.npz`` file."""
        with open(path, "wb") as f:
            np.savez(f, **self.state_dict())

    def load(self, path: str | os.PathLike, strict: bool = True) -> Module:
        """Load a state dict written by :meth:`save`."""
        with np.load(path) as data:
            self.load_state_dict({k: data[k] for k in data.files}, strict)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            lines.append(f"  ({name}): " + repr(m).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


def save(obj: Module | dict, path: str | os.PathLike) -> None:
    """Save a module's state dict (or a dict of arrays) to an ``.npz`` file."""
    state = obj.state_dict() if isinstance(obj, Module) else obj
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(getattr(v, "data", v)) for k, v in state.items()})


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a dict of arrays written by :func:`save`."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# ----- containers --------------------------------------------------------------------------------
class Sequential(Module):
    def __init__(self, *modules: Module):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class ModuleList(Module):
    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), m)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


# ----- layers ------------------------------------------------------------------------------------
class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features) if in_features else 0
        self.weight = _uniform((out_features, in_features), bound)
        self.bias = _uniform((out_features,), bound) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ShapeError(f"Conv2d: in_channels {in_channels} and out_channels "
                             f"{out_channels} must be divisible by groups {groups}")
        kh, kw = F._pair(kernel_size, "kernel_size")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * kh * kw
        bound = 1 / math.sqrt(fan_in)
        self.weight = _uniform((out_channels, in_channels // groups, kh, kw), bound)
        self.bias = _uniform((out_channels,), bound) if bias else None
        self._desc = f"{in_channels}, {out_channels}, kernel_size={(kh, kw)}, stride={stride}"

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        return self._desc


class Conv1d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        bound = 1 / math.sqrt(in_channels // groups * kernel_size)
        self.weight = _uniform((out_channels, in_channels // groups, kernel_size), bound)
        self.bias = _uniform((out_channels,), bound) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class ConvTranspose2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, bias: bool = True,
                 dilation: Any = 1):
        super().__init__()
        kh, kw = F._pair(kernel_size, "kernel_size")
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation = dilation
        # PyTorch computes fan_in from weight dim 1: out_channels * KH * KW.
        bound = 1 / math.sqrt(out_channels * kh * kw)
        self.weight = _uniform((in_channels, out_channels, kh, kw), bound)
        self.bias = _uniform((out_channels,), bound) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.dilation)


class _BatchNorm(Module):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(num_features, np.float32)) if affine else None
        self.register_buffer("running_mean",
                             np.zeros(num_features, np.float32) if track_running_stats else None)
        self.register_buffer("running_var",
                             np.ones(num_features, np.float32) if track_running_stats else None)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ShapeError(f"{type(self).__name__}({self.num_features}): input of shape "
                             f"{x.shape} has {x.shape[1] if x.ndim > 1 else '?'} channels")
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch, self.momentum, self.eps)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W)."""


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""


class LayerNorm(Module):
    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
            normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(np.ones(shape, np.float32)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, np.float32)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)


class Embedding(Module):
    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.weight = Parameter(
            T.rng().standard_normal((num_embeddings, embedding_dim)).astype(np.float32))

    def forward(self, idx: Any) -> Tensor:
        return F.embedding(idx, self.weight)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)


class MaxPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = (
            kernel_size, stride, padding, dilation)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)


class AvgPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)


def _activation(name: str, fn: Any, doc: str) -> type:
    def forward(self: Module, x: Tensor) -> Tensor:
        return fn(x)

    return type(name, (Module,), {"forward": forward, "__doc__": doc})


ReLU = _activation("ReLU", F.relu, "max(x, 0)")
Sigmoid = _activation("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")
Tanh = _activation("Tanh", F.tanh, "tanh(x)")
GELU = _activation("GELU", F.gelu, "x * Phi(x) (exact, erf form)")
Hardswish = _activation("Hardswish", F.hardswish, "x * relu6(x + 3) / 6")


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim)


class LogSoftmax(Softmax):
    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.dim)


# ----- recurrent ---------------------------------------------------------------------------------
class LSTMCell(Module):
    """One LSTM step; gates in PyTorch's order (input, forget, cell, output)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        k = 1 / math.sqrt(hidden_size)
        self.weight_ih = _uniform((4 * hidden_size, input_size), k)
        self.weight_hh = _uniform((4 * hidden_size, hidden_size), k)
        self.bias_ih = _uniform((4 * hidden_size,), k) if bias else None
        self.bias_hh = _uniform((4 * hidden_size,), k) if bias else None

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        # A missing state is zero: the hidden-to-hidden product is skipped rather than computed
        # on a zeros tensor, which also keeps an exported graph free of batch-sized constants.
        gates = F.linear(x, self.weight_ih, self.bias_ih)
        if state is not None:
            gates = gates + F.linear(state[0], self.weight_hh, self.bias_hh)
        elif self.bias_hh is not None:
            gates = gates + self.bias_hh
        hs = self.hidden_size
        i = F.sigmoid(gates[:, :hs])
        f = F.sigmoid(gates[:, hs:2 * hs])
        g = F.tanh(gates[:, 2 * hs:3 * hs])
        o = F.sigmoid(gates[:, 3 * hs:])
        c = i * g if state is None else f * state[1] + i * g
        return o * F.tanh(c), c


class GRUCell(Module):
    """One GRU step; gates in PyTorch's order (reset, update, new)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        k = 1 / math.sqrt(hidden_size)
        self.weight_ih = _uniform((3 * hidden_size, input_size), k)
        self.weight_hh = _uniform((3 * hidden_size, hidden_size), k)
        self.bias_ih = _uniform((3 * hidden_size,), k) if bias else None
        self.bias_hh = _uniform((3 * hidden_size,), k) if bias else None

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        gi = F.linear(x, self.weight_ih, self.bias_ih)
        hs = self.hidden_size
        if h is None:  # zero state (see LSTMCell.forward)
            if self.bias_hh is None:
                gh = None
            else:
                gh = self.bias_hh.reshape(1, 3 * hs)
        else:
            gh = F.linear(h, self.weight_hh, self.bias_hh)
        if gh is None:
            return (1 - F.sigmoid(gi[:, hs:2 * hs])) * F.tanh(gi[:, 2 * hs:])
        r = F.sigmoid(gi[:, :hs] + gh[:, :hs])
        z = F.sigmoid(gi[:, hs:2 * hs] + gh[:, hs:2 * hs])
        n = F.tanh(gi[:, 2 * hs:] + r * gh[:, 2 * hs:])
        return (1 - z) * n if h is None else (1 - z) * n + z * h


class _Recurrent(Module):
    """A single-layer LSTM/GRU over ``(batch, seq, features)`` (``batch_first=True`` only)."""

    cell_type: type = Module

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True):
        super().__init__()
        if not batch_first:
            raise ShapeError(f"{type(self).__name__}: only batch_first=True is supported")
        self.cell = self.cell_type(input_size, hidden_size)

    def _run(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        if x.ndim != 3:
            raise ShapeError(f"{type(self).__name__}: input must be (batch, seq, features), "
                             f"got {x.shape}")
        outs = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            outs.append(state[0] if isinstance(state, tuple) else state)
        return T.stack(outs, 1), state


class LSTM(_Recurrent):
    """Returns ``(outputs, (h, c))`` like ``torch.nn.LSTM(batch_first=True)`` (one layer)."""

    cell_type = LSTMCell

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        return self._run(x, state)


class GRU(_Recurrent):
    """Returns ``(outputs, h)`` like ``torch.nn.GRU(batch_first=True)`` (one layer)."""

    cell_type = GRUCell

    def forward(self, x: Tensor, h: Tensor | None = None):
        return self._run(x, h)


# PyTorch spells the parameter names of its recurrent layers with a layer suffix; these layers
# keep theirs on the cell (``cell.weight_ih``): see tests for the mapping.


# ----- losses ------------------------------------------------------------------------------------
# torch.nn's loss modules: the same constructor arguments (in the same order, the deprecated
# size_average/reduce included) and forward(input, target); the maths is in F. Class weights and
# pos_weight are buffers, as in PyTorch (so they follow .double() and appear in state_dict()).
def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """PyTorch's mapping of the deprecated ``size_average``/``reduce`` pair to ``reduction``."""
    import warnings

    warnings.warn("size_average and reduce are deprecated, please use reduction='mean', 'sum' "
                  "or 'none' instead", DeprecationWarning, stacklevel=4)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _loss_buffer(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value.data if isinstance(value, Tensor) else value)
    return arr if arr.dtype.kind == "f" else arr.astype(np.float32)


class _Loss(Module):
    _reductions: tuple[str, ...] = ("mean", "sum", "none")

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        F._check_reduction(reduction, type(self).__name__, self._reductions)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _loss_buffer(weight))


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy of logits (N, C) / (N, C, d1, ...) against class indices or class
    probabilities (see :func:`~edgert.train.functional.cross_entropy`)."""

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(weight, size_average, reduce, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got "
                             f"{label_smoothing}")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.cross_entropy(input, target, self.label_smoothing, self.reduction,
                               weight=self.weight, ignore_index=self.ignore_index)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (use after :class:`LogSoftmax`)."""

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.nll_loss(input, target, self.reduction, weight=self.weight,
                          ignore_index=self.ignore_index)


class MSELoss(_Loss):
    """Squared error ``(input - target) ** 2``."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Absolute error ``|input - target|``."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    """Quadratic below ``beta``, linear above (``beta=0``: L1)."""

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", beta: float = 1.0):
        super().__init__(size_average, reduce, reduction)
        if beta < 0:
            raise ValueError(f"SmoothL1Loss: beta must be >= 0, got {beta}")
        self.beta = beta

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.smooth_l1_loss(input, target, self.reduction, beta=self.beta)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities; ``weight`` rescales each element (broadcast)."""

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.binary_cross_entropy(input, target, self.reduction, weight=self.weight)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy in one stable op; ``weight`` rescales each element,
    ``pos_weight`` the positive term per class (broadcast along the last axis)."""

    def __init__(self, weight: Any = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean", pos_weight: Any = None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _loss_buffer(weight))
        self.register_buffer("pos_weight", _loss_buffer(pos_weight))

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.reduction,
                                                  weight=self.weight, pos_weight=self.pos_weight)


class KLDivLoss(_Loss):
    """KL divergence with ``input`` log-probabilities; use ``reduction='batchmean'`` for the KL
    divergence per sample (``'mean'``, the default, divides by every element and warns)."""

    _reductions = ("mean", "sum", "none", "batchmean")

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", log_target: bool = False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.kl_div(input, target, self.reduction, log_target=self.log_target)


# ``edgert.train.nn.functional`` is ``edgert.train.functional``, as torch.nn.functional is for
# PyTorch: ``import edgert.train.nn.functional as F`` and ``nn.functional.cross_entropy`` work.
functional = F
sys.modules.setdefault(f"{__name__}.functional", F)
