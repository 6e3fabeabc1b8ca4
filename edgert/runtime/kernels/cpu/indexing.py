"""CPU kernels: indexing (Gather, GatherElements, GatherND, ScatterElements, ScatterND, NonZero,
OneHot, TopK).

Index tensors are data, so they are usually known only at invoke. Every index is bounds-checked
(negative indices count from the end) *before* any read or write with it, and a bad one raises
:class:`~edgert.errors.KernelError` naming the op, the index and the valid range — never a read
out of bounds. When the indices are constants the same check runs at prepare.

The per-element index logic is NumPy fancy indexing (and ``ufunc.at`` for scatter reductions,
which applies repeated indices one after another). That is compiled code for every dtype,
including bool, float16 and strings, with no per-dtype Numba compilation to pay for.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime.kernels.cpu.shape import ShapeKernel, _Deferred, same_dtype
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo


def check_indices(kernel: Kernel, idx: np.ndarray, size: int, what: str) -> None:
    """Raise a KernelError unless every index lies in ``[-size, size)``."""
    if idx.size == 0:
        return
    lo, hi = int(idx.min()), int(idx.max())
    if lo < -size or hi >= size:
        bad = lo if lo < -size else hi
        raise kernel.error(
            f"{what} {bad} is out of range for a dimension of size {size} "
            f"(valid: {-size}..{size - 1})"
        )


def _positive(idx: np.ndarray, size: int) -> np.ndarray:
    """Indices with negatives counted from the end (already bounds-checked)."""
    idx = idx.astype(np.intp, copy=False)
    return np.where(idx < 0, idx + size, idx) if idx.size and idx.min() < 0 else idx


def _index_dtype(kernel: Kernel, info: TensorInfo, what: str = "indices") -> None:
    if np.dtype(info.dtype) not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise kernel.error(f"{what} must be int32 or int64, got {np.dtype(info.dtype)}",
                           DTypeError)


def _element_grid(idx: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """The fancy index that reads/writes element ``[..., idx[i], ...]`` for every position ``i``
    of ``idx``: open ``arange`` grids on every axis except ``axis``, which takes ``idx``."""
    grid = list(np.ogrid[tuple(slice(0, s) for s in idx.shape)]) if idx.ndim > 1 else [
        np.arange(idx.shape[0])]
    grid[axis] = idx
    return tuple(grid)


class Gather(ShapeKernel):
    """Gather along ``axis``: ``out = data.take(indices, axis)``, negative indices allowed."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        data, idx = inputs
        _index_dtype(self, idx)
        r = len(data.shape)
        if r == 0:
            raise self.error("data must have rank >= 1", ShapeError)
        axis = self.normalize_axis(int(self.attr("axis", 0)), r)
        self._axis = axis
        if idx.value is not None:
            check_indices(self, np.asarray(idx.value), data.shape[axis], "index")
        shape = data.shape[:axis] + tuple(idx.shape) + data.shape[axis + 1:]
        return [TensorInfo(shape, data.dtype)]

    def run(self, inputs, outputs):
        data, idx = inputs
        n = data.shape[self._axis]
        check_indices(self, idx, n, "index")
        if idx.size == 0 or outputs[0].size == 0:
            return
        # Indices are in range, so 'wrap' only maps negatives; 'raise' would buffer the output.
        np.take(data, idx, axis=self._axis, out=outputs[0], mode="wrap")


class GatherElements(ShapeKernel):
    """GatherElements: ``out[i][j] = data[indices[i][j]][j]`` (for axis 0), output shaped like
    indices; on the other axes indices may be shorter than data."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        data, idx = inputs
        _index_dtype(self, idx)
        r = len(data.shape)
        if r == 0 or len(idx.shape) != r:
            raise self.error(
                f"indices {idx.shape} must have the rank of data {data.shape} (>= 1)", ShapeError)
        axis = self.normalize_axis(int(self.attr("axis", 0)), r)
        for d in range(r):
            if d != axis and idx.shape[d] > data.shape[d]:
                raise self.error(
                    f"indices shape {idx.shape} exceeds data shape {data.shape} on axis {d}",
                    ShapeError)
        self._axis = axis
        if idx.value is not None:
            check_indices(self, np.asarray(idx.value), data.shape[axis], "index")
        return [TensorInfo(tuple(idx.shape), data.dtype)]

    def run(self, inputs, outputs):
        data, idx = inputs
        n = data.shape[self._axis]
        check_indices(self, idx, n, "index")
        if idx.size == 0:
            return
        outputs[0][...] = data[_element_grid(_positive(idx, n), self._axis)]


class GatherND(ShapeKernel):
    """GatherND with ``batch_dims``: each row of the last indices axis addresses a slice of
    data after the batch dims."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        data, idx = inputs
        _index_dtype(self, idx)
        b = int(self.attr("batch_dims", 0))
        r, q = len(data.shape), len(idx.shape)
        if r < 1 or q < 1:
            raise self.error(f"data {data.shape} and indices {idx.shape} need rank >= 1",
                             ShapeError)
        if not 0 <= b < min(r, q):
            raise self.error(f"batch_dims {b} must be in 0..{min(r, q) - 1}")
        if tuple(idx.shape[:b]) != tuple(data.shape[:b]):
            raise self.error(
                f"batch dims of indices {idx.shape} and data {data.shape} differ", ShapeError)
        k = idx.shape[-1]
        if not 1 <= k <= r - b:
            raise self.error(
                f"indices' last dim {k} must be in 1..{r - b} (data {data.shape}, "
                f"batch_dims {b})", ShapeError)
        self._b, self._k = b, k
        if idx.value is not None:
            self._check(np.asarray(idx.value), data.shape)
        shape = tuple(idx.shape[:-1]) + tuple(data.shape[b + k:])
        return [TensorInfo(shape, data.dtype)]

    def _check(self, idx: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
        cols = []
        for j in range(self._k):
            size = shape[self._b + j]
            col = idx[..., j]
            check_indices(self, col, size, f"index (component {j})")
            cols.append(_positive(col, size))
        return cols

    def run(self, inputs, outputs):
        data, idx = inputs
        out = outputs[0]
        cols = self._check(idx, data.shape)
        if out.size == 0:
            return
        b = self._b
        batch = int(np.prod(data.shape[:b], dtype=np.int64))
        rows = int(np.prod(idx.shape[b:-1], dtype=np.int64))
        flat = data.reshape((batch,) + data.shape[b:])
        where = (np.arange(batch)[:, None],) + tuple(c.reshape(batch, rows) for c in cols)
        out[...] = flat[where].reshape(out.shape)


_REDUCERS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(kernel: Kernel) -> str:
    red = kernel.attr("reduction", "none")
    red = red.decode() if isinstance(red, bytes) else str(red)
    if red != "none" and red not in _REDUCERS:
        raise kernel.error(f"reduction {red!r} is not one of none, add, mul, max, min")
    return red


def _scatter(out: np.ndarray, where: tuple, updates: np.ndarray, reduction: str) -> None:
    if reduction == "none":
        # Repeated indices: the last update wins (ONNX leaves the order undefined).
        out[where] = updates
    else:
        _REDUCERS[reduction].at(out, where, updates)


class ScatterElements(ShapeKernel):
    """ScatterElements: a copy of data with ``updates`` written (or reduced with ``reduction``)
    at the element positions given by ``indices`` along ``axis``."""

    def plan(self, inputs):
        self.require_inputs(inputs, 3, 3)
        data, idx, upd = inputs
        _index_dtype(self, idx)
        same_dtype(self, [data, upd], "data and updates")
        r = len(data.shape)
        if r == 0 or len(idx.shape) != r or tuple(idx.shape) != tuple(upd.shape):
            raise self.error(
                f"indices {idx.shape} and updates {upd.shape} must have one shape and the rank "
                f"of data {data.shape}", ShapeError)
        axis = self.normalize_axis(int(self.attr("axis", 0)), r)
        for d in range(r):
            if d != axis and idx.shape[d] > data.shape[d]:
                raise self.error(
                    f"indices shape {idx.shape} exceeds data shape {data.shape} on axis {d}",
                    ShapeError)
        self._axis = axis
        self._reduction = _reduction(self)
        if idx.value is not None:
            check_indices(self, np.asarray(idx.value), data.shape[axis], "index")
        return [TensorInfo(tuple(data.shape), data.dtype)]

    def run(self, inputs, outputs):
        data, idx, upd = inputs
        out = outputs[0]
        n = data.shape[self._axis]
        check_indices(self, idx, n, "index")
        np.copyto(out, data)
        if idx.size:
            _scatter(out, _element_grid(_positive(idx, n), self._axis), upd, self._reduction)


class ScatterND(ShapeKernel):
    """ScatterND: a copy of data with ``updates`` slices written (or reduced) at the positions
    the rows of ``indices`` address."""

    def plan(self, inputs):
        self.require_inputs(inputs, 3, 3)
        data, idx, upd = inputs
        if np.dtype(idx.dtype) != np.dtype(np.int64):
            raise self.error(f"indices must be int64, got {np.dtype(idx.dtype)}", DTypeError)
        same_dtype(self, [data, upd], "data and updates")
        r, q = len(data.shape), len(idx.shape)
        if r < 1 or q < 1:
            raise self.error(f"data {data.shape} and indices {idx.shape} need rank >= 1",
                             ShapeError)
        k = idx.shape[-1]
        if not 1 <= k <= r:
            raise self.error(f"indices' last dim {k} must be in 1..{r} (data {data.shape})",
                             ShapeError)
        want = tuple(idx.shape[:-1]) + tuple(data.shape[k:])
        if tuple(upd.shape) != want:
            raise self.error(
                f"updates shape {upd.shape} must be {want} (indices {idx.shape}, data "
                f"{data.shape})", ShapeError)
        self._k = k
        self._reduction = _reduction(self)
        if idx.value is not None:
            self._cols(np.asarray(idx.value), data.shape)
        return [TensorInfo(tuple(data.shape), data.dtype)]

    def _cols(self, idx: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        cols = []
        for j in range(self._k):
            col = idx[..., j]
            check_indices(self, col, shape[j], f"index (component {j})")
            cols.append(_positive(col, shape[j]))
        return tuple(cols)

    def run(self, inputs, outputs):
        data, idx, upd = inputs
        out = outputs[0]
        where = self._cols(idx, data.shape)
        np.copyto(out, data)
        if idx.size:
            _scatter(out, where, upd, self._reduction)


class NonZero(ShapeKernel):
    """NonZero: int64 ``(rank, count)`` coordinates of the non-zero elements, in row-major
    order. The count depends on the data, so the output shape is unknown until invoke (unless
    the input is a constant, in which case the result is computed at prepare)."""

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if x.value is None:
            raise _Deferred()
        value = self._nonzero(np.asarray(x.value))
        return [TensorInfo(value.shape, np.dtype(np.int64), value)]

    @staticmethod
    def _nonzero(x: np.ndarray) -> np.ndarray:
        # A scalar is treated as a 1-element vector (NumPy 2 refuses nonzero on 0-d arrays).
        return np.array(np.nonzero(x.reshape(1) if x.ndim == 0 else x), dtype=np.int64)

    def out_dtypes(self, inputs):
        return [np.dtype(np.int64)]

    def run(self, inputs, outputs):
        outputs[0][...] = self._nonzero(inputs[0])


class OneHot(ShapeKernel):
    """OneHot(indices, depth, values=[off, on]): a new axis of size ``depth`` at ``axis``.

    Indices are cast to int64 (truncating floats); negatives count from ``depth``; indices outside
    ``[-depth, depth)`` give an all-``off`` row, as onnxruntime does.
    """

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 3, 3)
        idx, _, values = inputs
        r = len(idx.shape)
        axis = int(self.attr("axis", -1))
        if not -(r + 1) <= axis <= r:
            raise self.error(f"axis {axis} is out of range for output rank {r + 1}")
        axis = axis + r + 1 if axis < 0 else axis
        if values.shape is not None and int(np.prod(values.shape)) != 2:
            raise self.error(f"values must hold [off, on], got shape {values.shape}", ShapeError)
        if np.dtype(idx.dtype).kind not in "iuf":
            raise self.error(f"indices must be numeric, got {np.dtype(idx.dtype)}", DTypeError)
        depth_v = self.param(inputs, 1)
        if depth_v.size != 1 or depth_v.dtype.kind not in "iuf":
            raise self.error(f"depth must be a numeric scalar, got {depth_v.dtype} "
                             f"{depth_v.shape}")
        depth = int(depth_v.reshape(-1)[0])
        if depth < 1:
            raise self.error(f"depth must be >= 1, got {depth}")
        self._axis, self._depth = axis, depth
        shape = tuple(idx.shape[:axis]) + (depth,) + tuple(idx.shape[axis:])
        return [TensorInfo(shape, values.dtype)]

    def out_dtypes(self, inputs):
        return [inputs[2].dtype]

    def run(self, inputs, outputs):
        idx, _, values = inputs
        out = outputs[0]
        off, on = values.reshape(-1)[0], values.reshape(-1)[1]
        depth = self._depth
        with np.errstate(invalid="ignore"):
            i = idx.astype(np.int64)
        i = np.where(i < 0, i + depth, i)
        hot = i[..., None] == np.arange(depth)
        np.moveaxis(out, self._axis, -1)[...] = np.where(hot, on, off)


class TopK(ShapeKernel):
    """TopK along ``axis``: the ``K`` largest (or smallest) values and their int64 indices.

    Results are always sorted (also for ``sorted=0``, where any order is allowed); equal values
    come in order of increasing index, as onnxruntime returns them.
    """

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        r = len(x.shape)
        if r == 0:
            raise self.error("input must have rank >= 1", ShapeError)
        if np.dtype(x.dtype).kind not in "iuf":
            raise self.error(f"input must be numeric, got {np.dtype(x.dtype)}", DTypeError)
        axis = self.normalize_axis(int(self.attr("axis", -1)), r)
        k = self.int_scalar(self.param(inputs, 1), "K")
        if not 0 <= k <= x.shape[axis]:
            raise self.error(f"K = {k} must be in 0..{x.shape[axis]} (size of axis {axis})")
        self._axis, self._k = axis, k
        shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
        return [TensorInfo(shape, x.dtype), TensorInfo(shape, np.dtype(np.int64))]

    def out_dtypes(self, inputs):
        return [inputs[0].dtype, np.dtype(np.int64)]

    def run(self, inputs, outputs):
        x = inputs[0]
        axis, k = self._axis, self._k
        if k == 0 or x.size == 0:
            return
        n = x.shape[axis]
        if int(self.attr("largest", 1)):
            # A stable ascending sort of the reversed axis, read backwards, is descending with
            # ties in increasing original index (negating would break unsigned ints).
            order = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
            order = (n - 1) - np.flip(order, axis)
        else:
            order = np.argsort(x, axis=axis, kind="stable")
        top = [slice(None)] * x.ndim
        top[axis] = slice(0, k)
        order = order[tuple(top)]
        if outputs[0] is not None:
            outputs[0][...] = np.take_along_axis(x, order, axis)
        if len(outputs) > 1 and outputs[1] is not None:
            outputs[1][...] = order


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("Gather", Gather),
        ("GatherElements", GatherElements),
        ("GatherND", GatherND),
        ("ScatterElements", ScatterElements),
        ("ScatterND", ScatterND),
        ("NonZero", NonZero),
        ("OneHot", OneHot),
        ("TopK", TopK),
    ):
        reg.add(op_type, kernel)
