"""CPU kernels: reduce family (ReduceSum ... ReduceLogSumExp, ArgMax, ArgMin).

Newest ONNX form: ``axes`` is an optional int64 input, ``keepdims`` defaults to 1, and an
absent or empty ``axes`` reduces over every axis unless ``noop_with_empty_axes=1``, in which
case the reduction runs over the empty set (the identity) while the non-reduction steps still
apply (ReduceSumSquare then squares, ReduceLogSum takes the log...).

The reductions are NumPy ``ufunc.reduce`` calls writing into the planned buffer (viewed with
the reduced axes kept as size-1 dims). The element transforms some of them need (``|x|``,
``x*x``, ``exp(x - max)``) go into scratch buffers that ``prepare`` allocates, so invoke does
not allocate. float16 inputs accumulate in float32.

Reductions over an empty set follow the spec and onnx.reference: Sum/L1/L2/SumSquare give 0,
Prod 1, Max -inf (or the type's lowest value, False for bool), Min +inf (highest, True),
LogSum and LogSumExp -inf. ReduceMean of an empty set is "undefined" in the spec: edgert gives
NaN for floats (0/0) and 0 for integers.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import DTypeError
from edgert.runtime.kernels.cpu.elementwise import planned_view
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo

_FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
# ReduceSum, Mean, Prod, L1, L2, SumSquare (opset 18)
_ARITH = _FLOATS | frozenset(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64))
# ReduceMax, ReduceMin (opset 20)
_ORDERED = _ARITH | frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.bool_))
# ArgMax, ArgMin (opset 13)
_ARG = _FLOATS | frozenset(
    np.dtype(t)
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
)

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)


def _names(dts) -> str:
    return ", ".join(sorted(str(d) for d in dts))


def _check_dtype(kernel: Kernel, info: TensorInfo, allowed) -> np.dtype:
    dt = np.dtype(info.dtype)
    if dt not in allowed:
        raise kernel.error(
            f"input has dtype {dt}, which this op does not support (supported: "
            f"{_names(allowed)})",
            DTypeError,
        )
    return dt


class _Reduce(Kernel):
    """Shared axes handling; subclasses implement :meth:`reduce` (and :meth:`plan`)."""

    foldable = True
    DTYPES: frozenset = _ARITH

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 2)
        x = inputs[0]
        dt = _check_dtype(self, x, self.DTYPES)
        keepdims = bool(int(self.attr("keepdims", 1)))
        noop = bool(int(self.attr("noop_with_empty_axes", 0)))
        axes = self._axes(inputs)
        if axes is None:
            # The axes are computed at run time: the interpreter prepares this op again, with
            # their value, when it runs.
            return [TensorInfo(None, dt)]
        rank = len(x.shape)
        if not axes and not noop:
            axes = tuple(range(rank))
        self._axis = axes
        self._keep = tuple(1 if d in axes else n for d, n in enumerate(x.shape))
        self._count = int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
        # float16 sums are accumulated in float32: a float16 running sum stops growing at 2048.
        self._acc = _F32 if dt == _F16 else dt
        self.plan(x, dt)
        shape = self._keep if keepdims else tuple(n for d, n in enumerate(x.shape) if d not in axes)
        return [TensorInfo(shape, dt)]

    def _axes(self, inputs) -> tuple[int, ...] | None:
        info = inputs[1] if len(inputs) > 1 else None
        if info is None:
            legacy = self.attr("axes")  # pre-opset-18 attribute form, if a graph still has it
            raw = [] if legacy is None else [int(a) for a in np.asarray(legacy).reshape(-1)]
        else:
            if np.dtype(info.dtype).kind not in "iu":
                raise self.error(f"axes (input 1) must be int64, got {np.dtype(info.dtype)}",
                                 DTypeError)
            if info.value is None:
                return None
            raw = [int(a) for a in np.asarray(info.value).reshape(-1)]
        rank = len(inputs[0].shape)
        if rank == 0 and raw:
            raise self.error(f"axes {raw} given for a rank-0 input")
        axes = [self.normalize_axis(a, rank) for a in raw]
        if len(set(axes)) != len(axes):
            raise self.error(f"axes {raw} name the same axis twice")
        return tuple(sorted(axes))

    def plan(self, x: TensorInfo, dt: np.dtype) -> None:
        """Allocate scratch buffers (shapes are final here)."""

    def reduce(self, x: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def invoke(self, inputs, outputs):
        # keepdims=0 only drops size-1 dims: the same bytes viewed with them kept.
        out = planned_view(outputs[0], self._keep)
        with np.errstate(all="ignore"):
            self.reduce(inputs[0], out)

    # shared steps
    def _sum(self, x: np.ndarray, out: np.ndarray) -> None:
        np.add.reduce(x, axis=self._axis, out=out, keepdims=True, dtype=self._acc)

    def _scratch(self, x: TensorInfo) -> None:
        self._tmp = np.empty(x.shape, self._acc)


class ReduceSum(_Reduce):
    def reduce(self, x, out):
        self._sum(x, out)


class ReduceMean(_Reduce):
    """Integer means truncate toward zero, as onnxruntime (exact while |sum| < 2**53)."""

    def plan(self, x, dt):
        # float16: divide the float32 sum before rounding, which could overflow float16.
        self._total = np.empty(self._keep, self._acc) if self._acc != dt else None

    def reduce(self, x, out):
        if self._count == 0:
            out.fill(np.nan if out.dtype.kind == "f" else 0)
            return
        total = out if self._total is None else self._total
        self._sum(x, total)
        # For integers this divides in float64 and truncates when casting back.
        np.divide(total, self._count, out=out, casting="unsafe")


class ReduceProd(_Reduce):
    def reduce(self, x, out):
        np.multiply.reduce(x, axis=self._axis, out=out, keepdims=True, dtype=self._acc)


class ReduceMax(_Reduce):
    """NaN propagates (NumPy and onnx.reference; onnxruntime skips NaN after the first)."""

    DTYPES = _ORDERED
    UFUNC = np.maximum

    def plan(self, x, dt):
        if dt.kind == "b":
            low, high = False, True
        elif dt.kind == "f":
            low, high = -np.inf, np.inf
        else:
            low, high = np.iinfo(dt).min, np.iinfo(dt).max
        # The identity is only used for an empty set, where NumPy would raise instead.
        self._initial = low if self.UFUNC is np.maximum else high

    def reduce(self, x, out):
        if self._count == 0:
            out.fill(self._initial)
        else:
            self.UFUNC.reduce(x, axis=self._axis, out=out, keepdims=True)


class ReduceMin(ReduceMax):
    UFUNC = np.minimum


class ReduceL1(_Reduce):
    def plan(self, x, dt):
        self._scratch(x)

    def reduce(self, x, out):
        np.absolute(x, out=self._tmp, dtype=self._acc)
        np.add.reduce(self._tmp, axis=self._axis, out=out, keepdims=True, dtype=self._acc)


class ReduceSumSquare(_Reduce):
    def plan(self, x, dt):
        self._scratch(x)

    def reduce(self, x, out):
        np.multiply(x, x, out=self._tmp, dtype=self._acc)
        np.add.reduce(self._tmp, axis=self._axis, out=out, keepdims=True, dtype=self._acc)


class ReduceL2(ReduceSumSquare):
    """sqrt(sum(x*x)); integer results are truncated, as onnxruntime."""

    def plan(self, x, dt):
        self._scratch(x)
        self._root = np.empty(self._keep, self._acc)

    def reduce(self, x, out):
        np.multiply(x, x, out=self._tmp, dtype=self._acc)
        np.add.reduce(self._tmp, axis=self._axis, out=self._root, keepdims=True)
        if self._acc.kind == "f":
            np.sqrt(self._root, out=out, casting="unsafe")
        else:
            np.sqrt(self._root, out=out, dtype=np.float64, casting="unsafe")


class ReduceLogSum(_Reduce):
    DTYPES = _FLOATS

    def plan(self, x, dt):
        self._total = np.empty(self._keep, self._acc)

    def reduce(self, x, out):
        self._sum(x, self._total)
        np.log(self._total, out=out, casting="unsafe")


class ReduceLogSumExp(_Reduce):
    """log(sum(exp(x))) computed as m + log(sum(exp(x - m))), m the max over the axes.

    Subtracting the max keeps exp from overflowing. Where the max is ±inf (or NaN) the shift
    would produce inf - inf = NaN, so those slots use m = 0: an all -inf slice then gives
    log(0) = -inf, a slice containing +inf gives +inf, and NaN still propagates.
    """

    DTYPES = _FLOATS

    def plan(self, x, dt):
        self._scratch(x)
        self._max = np.empty(self._keep, self._acc)
        self._bad = np.empty(self._keep, np.bool_)
        self._total = np.empty(self._keep, self._acc)

    def reduce(self, x, out):
        m = self._max
        np.maximum.reduce(x, axis=self._axis, out=m, keepdims=True, initial=-np.inf,
                          dtype=self._acc)
        np.isfinite(m, out=self._bad)
        np.logical_not(self._bad, out=self._bad)
        np.copyto(m, 0, where=self._bad)
        np.subtract(x, m, out=self._tmp, dtype=self._acc)
        np.exp(self._tmp, out=self._tmp)
        np.add.reduce(self._tmp, axis=self._axis, out=self._total, keepdims=True)
        np.log(self._total, out=self._total)
        np.add(self._total, m, out=out, casting="unsafe")


class ArgMax(Kernel):
    """Index of the first (or, with ``select_last_index``, last) maximum along ``axis``.

    NaN counts as the maximum (and, for ArgMin, the minimum), as in NumPy and onnx.reference.
    onnxruntime instead ignores a NaN unless it is the first element.
    """

    foldable = True
    FN = staticmethod(np.argmax)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        _check_dtype(self, x, _ARG)
        rank = len(x.shape)
        if rank == 0:
            raise self.error("input must have rank >= 1")
        axis = self.normalize_axis(int(self.attr("axis", 0)), rank)
        if x.shape[axis] == 0:
            raise self.error(f"axis {axis} of input shape {tuple(x.shape)} is empty: no index "
                             "to return")
        self._axis = axis
        self._n = int(x.shape[axis])
        self._last = bool(int(self.attr("select_last_index", 0)))
        self._keep = tuple(1 if d == axis else n for d, n in enumerate(x.shape))
        keepdims = bool(int(self.attr("keepdims", 1)))
        shape = self._keep if keepdims else tuple(n for d, n in enumerate(x.shape) if d != axis)
        return [TensorInfo(shape, _I64)]

    def invoke(self, inputs, outputs):
        out = planned_view(outputs[0], self._keep)
        x = inputs[0]
        if self._last:
            # The first hit in the reversed view is the last one: index n - 1 - i.
            self.FN(np.flip(x, self._axis), axis=self._axis, out=out, keepdims=True)
            np.subtract(self._n - 1, out, out=out)
        else:
            self.FN(x, axis=self._axis, out=out, keepdims=True)


class ArgMin(ArgMax):
    FN = staticmethod(np.argmin)


def register(reg: KernelRegistry) -> None:
    """Add the reduce kernels to ``reg`` (all opset versions; axes as an input)."""
    for op_type, kernel in (
        ("ReduceSum", ReduceSum),
        ("ReduceMean", ReduceMean),
        ("ReduceProd", ReduceProd),
        ("ReduceMax", ReduceMax),
        ("ReduceMin", ReduceMin),
        ("ReduceL1", ReduceL1),
        ("ReduceL2", ReduceL2),
        ("ReduceSumSquare", ReduceSumSquare),
        ("ReduceLogSum", ReduceLogSum),
        ("ReduceLogSumExp", ReduceLogSumExp),
        ("ArgMax", ArgMax),
        ("ArgMin", ArgMin),
    ):
        reg.add(op_type, kernel)


__all__ = ["register"]
