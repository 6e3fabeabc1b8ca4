"""The autograd core: :class:`Tensor`, the backward engine, and the tensor-level ops.

A :class:`Tensor` wraps a NumPy array. An op computes its output array and, right beside it, a
``backward`` closure that maps the output's gradient to one gradient per input (``None`` where an
input needs none). :meth:`Tensor.backward` orders the graph with an *iterative* depth-first
search (deep graphs would overflow Python's recursion limit) and *accumulates* the gradients that
reach a tensor along several paths before passing them on.

Broadcasting: an elementwise op whose inputs were broadcast gets an output gradient of the
broadcast shape; :func:`unbroadcast` sums it back to each input's shape (summing the added
leading axes and the size-1 axes that were stretched).

Dtypes: float32 by default; float64 when the data given is float64 (finite-difference checks).
Gradients always have their tensor's dtype.

Tracing (for :mod:`edgert.train.export`): while a tracer is installed every op also records
``(op_type, inputs, output, attrs)``; ops are named after the ONNX operator they export to.

Example::

    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == 2 * x
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgert.errors import EdgeRTError, ShapeError


class AutogradError(EdgeRTError):
    """Misuse of the autograd engine (backward on a non-scalar without a gradient, ...)."""


# ----- global state: grad mode, tracer, random generator ----------------------------------------
_GRAD_ENABLED = True
_TRACER: Any = None
_RNG = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generator used by initializers, dropout and unseeded shuffles."""
    global _RNG
    _RNG = np.random.default_rng(seed)


def rng() -> np.random.Generator:
    """The module's random generator (see :func:`manual_seed`)."""
    return _RNG


class no_grad(contextlib.ContextDecorator):
    """Context manager / decorator: ops inside build no graph (inference, optimizer steps)."""

    def __enter__(self) -> None:
        global _GRAD_ENABLED
        self._prev = _GRAD_ENABLED
        _GRAD_ENABLED = False

    def __exit__(self, *exc: object) -> None:
        global _GRAD_ENABLED
        _GRAD_ENABLED = self._prev


def is_grad_enabled() -> bool:
    return _GRAD_ENABLED


def set_tracer(tracer: Any) -> Any:
    """Install a tracer (an object with ``record(op, inputs, out, attrs)``); returns the old one."""
    global _TRACER
    old, _TRACER = _TRACER, tracer
    return old


# ----- Tensor ------------------------------------------------------------------------------------
def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (np.ndarray, np.generic)):
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        # Python floats become float32 (as in PyTorch), not NumPy's float64.
        if dtype is None and arr.dtype == np.float64:
            arr = arr.astype(np.float32)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr


class Tensor:
    """An n-dimensional array with an optional gradient and the graph that produced it."""

    __slots__ = ("__weakref__", "_backward", "_parents", "data", "grad", "name", "requires_grad")
    # Make ``ndarray * Tensor`` call Tensor.__rmul__ instead of broadcasting over the object.
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None):
        self.data: np.ndarray = _as_array(data, dtype)
        self.grad: Tensor | None = None
        if requires_grad and self.data.dtype.kind != "f":
            raise AutogradError(f"only floating tensors can require gradients, not {self.dtype}")
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable[[np.ndarray], Sequence[np.ndarray | None]] | None = None
        self.name: str | None = None

    # -- array-like properties ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def size(self, dim: int | None = None) -> Any:
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4)}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shared, not copied: detach first if you will write to it)."""
        return self.data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)

    def item(self) -> float:
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def clone(self) -> Tensor:
        return _make(self.data.copy(), (self,), lambda g: (g,), "Identity")

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def long(self) -> Tensor:
        return Tensor(self.data.astype(np.int64))

    def to(self, dtype: Any) -> Tensor:
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        src = self.dtype
        return _make(self.data.astype(dtype), (self,), lambda g: (g.astype(src),), "Cast",
                     {"to": dtype})

    def requires_grad_(self, flag: bool = True) -> Tensor:
        self.requires_grad = flag
        return self

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    # -- backward -----------------------------------------------------------------------------
    def backward(self, gradient: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is required unless ``self`` holds a single element (a loss).
        """
        if not self.requires_grad:
            raise AutogradError("backward() on a tensor that does not require grad: no input of "
                                "its graph has requires_grad=True (or it was made under no_grad)")
        if gradient is None:
            if self.data.size != 1:
                raise AutogradError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs a gradient: "
                    "pass one of the same shape (t.backward(g)) or reduce first (loss.sum())")
            gradient = np.ones_like(self.data)
        else:
            gradient = _as_array(gradient, self.dtype)
            if gradient.shape != self.shape:
                raise ShapeError(f"backward(): gradient of shape {gradient.shape} does not match "
                                 f"the tensor's shape {self.shape}")
        grads: dict[int, np.ndarray] = {id(self): gradient}
        for node in reversed(_topo_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:
                if node.grad is None:
                    node.grad = Tensor(np.array(g, dtype=node.dtype, copy=True))
                else:
                    node.grad.data = node.grad.data + g
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                # A new array, never ``+=``: ``pg`` may alias another tensor's gradient.
                grads[key] = grads[key] + pg if key in grads else pg

    # -- operators ------------------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return add(_const(other, self), self)

    def __sub__(self, other: Any) -> Tensor:
        return sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return sub(_const(other, self), self)

    def __mul__(self, other: Any) -> Tensor:
        return mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return mul(_const(other, self), self)

    def __truediv__(self, other: Any) -> Tensor:
        return div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return div(_const(other, self), self)

    def __pow__(self, other: Any) -> Tensor:
        return pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return pow(_const(other, self), self)

    def __neg__(self) -> Tensor:
        return neg(self)

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(_const(other, self), self)

    def __getitem__(self, key: Any) -> Tensor:
        return getitem(self, key)

    # Comparisons give plain (non-differentiable) boolean tensors.
    def __lt__(self, o: Any) -> Tensor:
        return Tensor(self.data < _data(o))

    def __le__(self, o: Any) -> Tensor:
        return Tensor(self.data <= _data(o))

    def __gt__(self, o: Any) -> Tensor:
        return Tensor(self.data > _data(o))

    def __ge__(self, o: Any) -> Tensor:
        return Tensor(self.data >= _data(o))

    def eq(self, o: Any) -> Tensor:
        return Tensor(self.data == _data(o))

    __hash__ = object.__hash__

    # -- method forms of the functions below ----------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return sum(self, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return mean(self, dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return amax(self, dim, keepdim)

    def min(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return amin(self, dim, keepdim)

    def var(self, dim: Any = None, keepdim: bool = False, unbiased: bool = True) -> Tensor:
        return var(self, dim, keepdim, unbiased)

    def std(self, dim: Any = None, keepdim: bool = False, unbiased: bool = True) -> Tensor:
        return sqrt(var(self, dim, keepdim, unbiased))

    def argmax(self, dim: int | None = None) -> Tensor:
        return Tensor(np.argmax(self.data, axis=dim))

    def reshape(self, *shape: Any) -> Tensor:
        return reshape(self, _shape_args(shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return flatten(self, start_dim, end_dim)

    def transpose(self, d0: int, d1: int) -> Tensor:
        return transpose(self, d0, d1)

    def permute(self, *dims: Any) -> Tensor:
        return permute(self, _shape_args(dims))

    @property
    def T(self) -> Tensor:
        return permute(self, tuple(range(self.ndim - 1, -1, -1)))

    def squeeze(self, dim: int | None = None) -> Tensor:
        return squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return unsqueeze(self, dim)

    def exp(self) -> Tensor:
        return exp(self)

    def log(self) -> Tensor:
        return log(self)

    def sqrt(self) -> Tensor:
        return sqrt(self)

    def abs(self) -> Tensor:
        return abs(self)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return clamp(self, min, max)

    def relu(self) -> Tensor:
        return relu(self)

    def sigmoid(self) -> Tensor:
        return sigmoid(self)

    def tanh(self) -> Tensor:
        return tanh(self)

    def softmax(self, dim: int = -1) -> Tensor:
        return softmax(self, dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        return log_softmax(self, dim)


def _shape_args(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _const(x: Any, like: Tensor) -> Tensor:
    """Wrap a Python/NumPy operand as a constant tensor of ``like``'s dtype."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    if like.dtype.kind == "f" or arr.dtype.kind != "f":
        arr = arr.astype(like.dtype)
    return Tensor(arr)


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _make(data: np.ndarray, parents: tuple[Tensor, ...],
          backward: Callable[[np.ndarray], Sequence[np.ndarray | None]],
          op: str | None = None, attrs: dict | None = None) -> Tensor:
    """Wrap an op's result; attach ``backward`` when grad mode is on and an input needs grad."""
    out = Tensor(data)
    if _GRAD_ENABLED and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
    if _TRACER is not None:  # op None: no ONNX mapping (export reports it)
        _TRACER.record(op, parents, out, attrs or {})
    return out


def _topo_order(root: Tensor) -> list[Tensor]:
    """Tensors of ``root``'s graph, inputs before outputs (iterative post-order DFS)."""
    order: list[Tensor] = []
    seen: set[int] = {id(root)}
    stack: list[tuple[Tensor, int]] = [(root, 0)]
    while stack:
        node, i = stack.pop()
        if i < len(node._parents):
            stack.append((node, i + 1))
            parent = node._parents[i]
            if parent.requires_grad and id(parent) not in seen:
                seen.add(id(parent))
                stack.append((parent, 0))
        else:
            order.append(node)
    return order


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    g = grad.sum(axis=axes, keepdims=True) if axes else grad
    return g.reshape(shape)


# ----- creation -----------------------------------------------------------------------------------
def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A new tensor (copying ``data``); Python floats become float32."""
    return Tensor(np.array(_as_array(data, dtype), copy=True), requires_grad)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing ``arr``'s memory."""
    return Tensor(arr)


def zeros(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape_args(shape), dtype), requires_grad)


def ones(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape_args(shape), dtype), requires_grad)


def randn(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(_RNG.standard_normal(_shape_args(shape)).astype(dtype), requires_grad)


def rand(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    return Tensor(_RNG.random(_shape_args(shape)).astype(dtype), requires_grad)


def arange(*args: Any, dtype: Any = np.int64) -> Tensor:
    return Tensor(np.arange(*args, dtype=dtype))


# ----- elementwise binary -------------------------------------------------------------------------
def _binary_inputs(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor):
        b = _tensor(b)
        a = _const(a, b)
    else:
        b = _const(b, a)
    return a, b


def add(a: Any, b: Any) -> Tensor:
    a, b = _binary_inputs(a, b)
    sa, sb = a.shape, b.shape
    return _make(a.data + b.data, (a, b),
                 lambda g: (unbroadcast(g, sa), unbroadcast(g, sb)), "Add")


def sub(a: Any, b: Any) -> Tensor:
    a, b = _binary_inputs(a, b)
    sa, sb = a.shape, b.shape
    return _make(a.data - b.data, (a, b),
                 lambda g: (unbroadcast(g, sa), unbroadcast(-g, sb)), "Sub")


def mul(a: Any, b: Any) -> Tensor:
    a, b = _binary_inputs(a, b)

    def backward(g: np.ndarray) -> tuple:
        return (unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
                unbroadcast(g * a.data, b.shape) if b.requires_grad else None)

    return _make(a.data * b.data, (a, b), backward, "Mul")


def div(a: Any, b: Any) -> Tensor:
    a, b = _binary_inputs(a, b)
    out = a.data / b.data

    def backward(g: np.ndarray) -> tuple:
        return (unbroadcast(g / b.data, a.shape) if a.requires_grad else None,
                unbroadcast(-g * out / b.data, b.shape) if b.requires_grad else None)

    return _make(out, (a, b), backward, "Div")


def pow(a: Any, b: Any) -> Tensor:
    """``a ** b``; the gradient with respect to ``b`` uses ``log(a)`` (a > 0 needed there)."""
    a, b = _binary_inputs(a, b)
    out = a.data ** b.data

    def backward(g: np.ndarray) -> tuple:
        ga = gb = None
        if a.requires_grad:
            ga = unbroadcast(g * b.data * a.data ** (b.data - 1), a.shape)
        if b.requires_grad:
            with np.errstate(divide="ignore", invalid="ignore"):
                gb = unbroadcast(g * out * np.log(a.data), b.shape)
        return ga, gb

    return _make(out, (a, b), backward, "Pow")


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max; at ties the gradient is split in half (as in PyTorch)."""
    a, b = _binary_inputs(a, b)
    out = np.maximum(a.data, b.data)

    def backward(g: np.ndarray) -> tuple:
        wa = (a.data > b.data) + 0.5 * (a.data == b.data)
        return unbroadcast(g * wa, a.shape), unbroadcast(g * (1 - wa), b.shape)

    return _make(out, (a, b), backward, "Max")


def minimum(a: Any, b: Any) -> Tensor:
    a, b = _binary_inputs(a, b)
    out = np.minimum(a.data, b.data)

    def backward(g: np.ndarray) -> tuple:
        wa = (a.data < b.data) + 0.5 * (a.data == b.data)
        return unbroadcast(g * wa, a.shape), unbroadcast(g * (1 - wa), b.shape)

    return _make(out, (a, b), backward, "Min")


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with NumPy's rules (batch dims broadcast; 1-D operands promoted)."""
    a, b = _binary_inputs(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both operands need at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.ndim == 1:
        return squeeze(matmul(unsqueeze(a, 0), b), -2 if b.ndim > 1 else -1)
    if b.ndim == 1:
        return squeeze(matmul(a, unsqueeze(b, 1)), -1)
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit (inner dimensions "
                         f"{a.shape[-1]} != {b.shape[-2]})")
    try:
        out = np.matmul(a.data, b.data)
    except ValueError as exc:
        raise ShapeError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} do not "
                         "broadcast") from exc

    def backward(g: np.ndarray) -> tuple:
        ga = gb = None
        if a.requires_grad:
            ga = unbroadcast(np.matmul(g, np.swapaxes(b.data, -1, -2)), a.shape)
        if b.requires_grad:
            gb = unbroadcast(np.matmul(np.swapaxes(a.data, -1, -2), g), b.shape)
        return ga, gb

    return _make(out, (a, b), backward, "MatMul")


# ----- elementwise unary --------------------------------------------------------------------------
def _unary(x: Tensor, out: np.ndarray, dfdx: Callable[[], np.ndarray], op: str,
           attrs: dict | None = None) -> Tensor:
    """An elementwise op whose gradient is ``g * dfdx()`` (``dfdx`` evaluated lazily)."""
    return _make(out, (x,), lambda g: (g * dfdx(),), op, attrs)


def neg(x: Tensor) -> Tensor:
    return _make(-x.data, (x,), lambda g: (-g,), "Neg")


def exp(x: Tensor) -> Tensor:
    out = np.exp(x.data)
    return _unary(x, out, lambda: out, "Exp")


def log(x: Tensor) -> Tensor:
    return _unary(x, np.log(x.data), lambda: 1 / x.data, "Log")


def sqrt(x: Tensor) -> Tensor:
    out = np.sqrt(x.data)
    return _unary(x, out, lambda: 0.5 / out, "Sqrt")


def abs(x: Tensor) -> Tensor:
    return _unary(x, np.abs(x.data), lambda: np.sign(x.data), "Abs")


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Clip to ``[min, max]``; the gradient passes where ``min <= x <= max`` (as PyTorch)."""
    out = np.clip(x.data, min, max)

    def dfdx() -> np.ndarray:
        mask = np.ones(x.shape, bool)
        if min is not None:
            mask &= x.data >= min
        if max is not None:
            mask &= x.data <= max
        return mask

    return _unary(x, out, dfdx, "Clip", {"min": min, "max": max})


def relu(x: Tensor) -> Tensor:
    # The gradient at exactly 0 is 0, as in PyTorch (maximum(x, 0) would split it in half).
    return _unary(x, np.maximum(x.data, 0), lambda: x.data > 0, "Relu")


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    pos = x.data > 0
    out = np.where(pos, x.data, x.data * negative_slope).astype(x.dtype)
    return _unary(x, out, lambda: np.where(pos, 1, negative_slope).astype(x.dtype),
                  "LeakyRelu", {"alpha": negative_slope})


def sigmoid(x: Tensor) -> Tensor:
    # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)) for x << 0.
    out = (0.5 * (1 + np.tanh(0.5 * x.data))).astype(x.dtype)
    return _unary(x, out, lambda: out * (1 - out), "Sigmoid")


def tanh(x: Tensor) -> Tensor:
    out = np.tanh(x.data)
    return _unary(x, out, lambda: 1 - out * out, "Tanh")


def gelu(x: Tensor) -> Tensor:
    """Exact GELU ``x * Phi(x)`` (erf form, PyTorch's default)."""
    from edgert.train._kernels import erf

    phi = 0.5 * (1 + erf(x.data * np.sqrt(0.5)))
    pdf = np.exp(-0.5 * x.data * x.data) / np.sqrt(2 * np.pi)
    return _unary(x, (x.data * phi).astype(x.dtype), lambda: (phi + x.data * pdf).astype(x.dtype),
                  "Gelu")


def hardswish(x: Tensor) -> Tensor:
    """``x * relu6(x + 3) / 6``; gradient ``(2x + 3) / 6`` inside (-3, 3)."""
    d = x.data
    out = d * np.clip(d + 3, 0, 6) / 6

    def dfdx() -> np.ndarray:
        return np.where(d < -3, 0, np.where(d > 3, 1, (2 * d + 3) / 6)).astype(x.dtype)

    return _unary(x, out.astype(x.dtype), dfdx, "HardSwish")


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    # Subtract the max first: exp of a large logit would overflow.
    e = np.exp(x.data - x.data.max(axis=dim, keepdims=True))
    out = e / e.sum(axis=dim, keepdims=True)

    def backward(g: np.ndarray) -> tuple:
        return (out * (g - (g * out).sum(axis=dim, keepdims=True)),)

    return _make(out, (x,), backward, "Softmax", {"axis": dim})


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    shifted = x.data - x.data.max(axis=dim, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))

    def backward(g: np.ndarray) -> tuple:
        return (g - np.exp(out) * g.sum(axis=dim, keepdims=True),)

    return _make(out, (x,), backward, "LogSoftmax", {"axis": dim})


# ----- reductions ---------------------------------------------------------------------------------
def _axes(dim: Any, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise ShapeError(f"dimension {d} is out of range for a tensor of rank {ndim}")
    return tuple(sorted(d % max(ndim, 1) for d in dims))


def _expand_grad(g: np.ndarray, shape: tuple, axes: tuple, keepdim: bool) -> np.ndarray:
    if not keepdim:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


def sum(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    axes = _axes(dim, x.ndim)
    out = np.asarray(x.data.sum(axis=axes, keepdims=keepdim))
    shape = x.shape
    return _make(out, (x,), lambda g: (_expand_grad(g, shape, axes, keepdim),), "ReduceSum",
                 {"axes": axes, "keepdims": keepdim})


def mean(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    axes = _axes(dim, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    out = np.asarray(x.data.mean(axis=axes, keepdims=keepdim), dtype=x.dtype)
    shape = x.shape
    return _make(out, (x,), lambda g: (_expand_grad(g / count, shape, axes, keepdim),),
                 "ReduceMean", {"axes": axes, "keepdims": keepdim})


def _extreme(x: Tensor, dim: Any, keepdim: bool, fn: Callable, op: str) -> Tensor:
    axes = _axes(dim, x.ndim)
    kept = fn(x.data, axis=axes, keepdims=True)
    out = kept if keepdim else np.squeeze(kept, axes)

    def backward(g: np.ndarray) -> tuple:
        # Ties share the gradient equally.
        mask = x.data == kept
        share = mask / mask.sum(axis=axes, keepdims=True)
        return ((_expand_grad(g, x.shape, axes, keepdim) * share).astype(x.dtype),)

    return _make(np.asarray(out), (x,), backward, op, {"axes": axes, "keepdims": keepdim})


def amax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _extreme(x, dim, keepdim, np.max, "ReduceMax")


def amin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _extreme(x, dim, keepdim, np.min, "ReduceMin")


def var(x: Tensor, dim: Any = None, keepdim: bool = False, unbiased: bool = True) -> Tensor:
    """Variance (Bessel-corrected unless ``unbiased=False``), built from mean and mul."""
    axes = _axes(dim, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    d = x - mean(x, axes, keepdim=True)
    s = sum(d * d, axes, keepdim)
    return s / (count - 1 if unbiased else count)


# ----- shape and data movement -------------------------------------------------------------------
def reshape(x: Tensor, shape: Sequence[int]) -> Tensor:
    try:
        out = x.data.reshape(tuple(shape))
    except ValueError as exc:
        raise ShapeError(f"reshape: cannot view shape {x.shape} as {tuple(shape)}") from exc
    src = x.shape
    return _make(out, (x,), lambda g: (g.reshape(src),), "Reshape", {"shape": out.shape})


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    s, e = start_dim % max(x.ndim, 1), end_dim % max(x.ndim, 1)
    shape = x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return reshape(x, shape)


def permute(x: Tensor, dims: Sequence[int]) -> Tensor:
    dims = tuple(d % x.ndim for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ShapeError(f"permute: {dims} is not a permutation of the {x.ndim} dims of {x.shape}")
    inv = tuple(np.argsort(dims))
    return _make(x.data.transpose(dims), (x,), lambda g: (g.transpose(inv),), "Transpose",
                 {"perm": dims})


def transpose(x: Tensor, d0: int, d1: int) -> Tensor:
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return permute(x, dims)


def squeeze(x: Tensor, dim: int | None = None) -> Tensor:
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    elif x.shape[dim] != 1:
        return x
    else:
        shape = x.shape[:dim % x.ndim] + x.shape[dim % x.ndim + 1:]
    return reshape(x, shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def _index_key(key: Any) -> Any:
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    return key


def getitem(x: Tensor, key: Any) -> Tensor:
    """NumPy indexing (slices, ints, integer/boolean arrays); the gradient scatters back."""
    key = _index_key(key)
    out = x.data[key]
    advanced = any(isinstance(k, (np.ndarray, list)) for k in
                   (key if isinstance(key, tuple) else (key,)))

    def backward(g: np.ndarray) -> tuple:
        gx = np.zeros(x.shape, x.dtype)
        if advanced:
            np.add.at(gx, key, g)  # repeated indices must add up, not overwrite
        else:
            gx[key] = g
        return (gx,)

    return _make(np.array(out, copy=True) if not advanced else out, (x,), backward, "getitem",
                 {"key": key})


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        raise ShapeError("cat: needs at least one tensor")
    try:
        out = np.concatenate([t.data for t in tensors], axis=dim)
    except ValueError as exc:
        raise ShapeError(f"cat along dim {dim}: shapes {[t.shape for t in tensors]} do not "
                         "fit") from exc
    bounds = np.cumsum([t.shape[dim] for t in tensors])[:-1]

    def backward(g: np.ndarray) -> list:
        return np.split(g, bounds, axis=dim)

    return _make(out, tuple(tensors), backward, "Concat", {"axis": dim % out.ndim})


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = [_tensor(t) for t in tensors]
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ShapeError(f"stack: all tensors need the same shape, got "
                         f"{[t.shape for t in tensors]}")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def pad(x: Tensor, pads: Sequence[int], value: float = 0.0) -> Tensor:
    """Constant padding, PyTorch's order: ``(last_lo, last_hi, prev_lo, prev_hi, ...)``."""
    if len(pads) % 2 or len(pads) // 2 > x.ndim:
        raise ShapeError(f"pad: {len(pads)} pad values do not fit a tensor of rank {x.ndim}")
    width = [(0, 0)] * x.ndim
    for i in range(len(pads) // 2):
        width[x.ndim - 1 - i] = (pads[2 * i], pads[2 * i + 1])
    if any(lo < 0 or hi < 0 for lo, hi in width):
        raise ShapeError("pad: negative padding (cropping) is not supported")
    out = np.pad(x.data, width, constant_values=value)
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(width, x.shape))
    return _make(out, (x,), lambda g: (g[crop],), "Pad", {"pads": width, "value": value})


def where(cond: Any, a: Any, b: Any) -> Tensor:
    a, b = _binary_inputs(a, b)
    c = np.asarray(_data(cond), bool)
    out = np.where(c, a.data, b.data)
    return _make(out, (a, b), lambda g: (unbroadcast(np.where(c, g, 0), a.shape),
                                         unbroadcast(np.where(c, 0, g), b.shape)), None)
