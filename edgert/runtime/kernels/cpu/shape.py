"""CPU kernels: shape arithmetic and reshaping (Reshape, Slice, Concat, Cast, Shape, Range...).

Every kernel here is cheap data movement, so all are ``foldable``: when their inputs are known at
prepare time the interpreter runs them then, which turns the Shape→Gather→Concat→Reshape chains of
dynamic-batch exports into constants before the first invoke.

Parameter inputs (Reshape's shape, Slice's starts/ends, Expand's shape...) decide the output
shape, so ``prepare`` needs their values. When one is not known yet (computed from data at run
time), :meth:`ShapeKernel.prepare` returns ``TensorInfo(None, dtype)`` and :meth:`invoke` plans
again from the real arrays and returns freshly allocated outputs (the registry's contract for
data-dependent shapes).

The other data-movement families live in :mod:`.movement` (Pad, Tile, Expand, DepthToSpace...)
and :mod:`.indexing` (Gather/Scatter, TopK, NonZero, OneHot...); they share the helpers here.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, ShapeError, UnsupportedOpError
from edgert.runtime.kernels.cpu import float8
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo


class _Deferred(Exception):
    """Raised inside :meth:`ShapeKernel.plan` when a parameter input is known only at invoke."""


class ShapeKernel(Kernel):
    """Base of the data-movement kernels: plan (validate, shapes) once, run into ``out``.

    Subclasses implement:

    * ``plan(inputs) -> list[TensorInfo]`` — everything ``prepare`` does; read parameter inputs
      with :meth:`param`, which raises ``_Deferred`` when a value is not known yet.
    * ``run(inputs, outputs)`` — compute into the given arrays (an omitted output is ``None``).
    * ``out_dtypes(inputs)`` — only when the outputs' dtypes differ from input 0's, so that a
      deferred plan can still report dtypes.
    """

    foldable = True
    _deferred = False

    # ----- contract -----------------------------------------------------------------------------
    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        try:
            outs = self.plan(inputs)
        except _Deferred:
            self._deferred = True
            return [TensorInfo(None, np.dtype(dt)) for dt in self.out_dtypes(inputs)]
        self._deferred = False
        return outs

    def invoke(
        self, inputs: list[np.ndarray | None], outputs: list[np.ndarray | None]
    ) -> list[np.ndarray] | None:
        if not self._deferred:
            self.run(inputs, outputs)
            return None
        # The output shape depends on parameter data that only exists now: plan with every value
        # known (this also runs every validation) and allocate the outputs here.
        infos = [None if a is None else TensorInfo(tuple(a.shape), a.dtype, a) for a in inputs]
        planned = self.plan(infos)
        for o in planned:
            if o.value is None:
                self.check_alloc(o.shape, o.dtype)
        fresh = [
            np.array(o.value) if o.value is not None else np.empty(o.shape, o.dtype)
            for o in planned
        ]
        self.run(inputs, fresh)
        return fresh

    def plan(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        raise NotImplementedError

    def run(self, inputs: list[np.ndarray | None], outputs: list[np.ndarray | None]) -> None:
        raise NotImplementedError

    def out_dtypes(self, inputs: list[TensorInfo | None]) -> list[np.dtype]:
        return [inputs[0].dtype]

    # ----- helpers ------------------------------------------------------------------------------
    def param(self, inputs: list[TensorInfo | None], i: int) -> np.ndarray | None:
        """Value of parameter input ``i``: None when omitted; defers the plan when not known."""
        info = inputs[i] if i < len(inputs) else None
        if info is None:
            return None
        if info.value is None:
            raise _Deferred()
        return np.asarray(info.value)

    def int_list(self, value: np.ndarray, what: str) -> list[int]:
        """An integer tensor parameter as Python ints (Python ints cannot overflow in arithmetic
        on INT64_MAX sentinels, NumPy int64 silently can)."""
        if value.dtype.kind not in "iu":
            raise self.error(f"{what} must be an integer tensor, got {value.dtype}", DTypeError)
        return [int(v) for v in value.reshape(-1).tolist()]

    def int_scalar(self, value: np.ndarray, what: str) -> int:
        if value.size != 1:
            raise self.error(f"{what} must hold exactly one value, got shape {value.shape}")
        return self.int_list(value, what)[0]

    def str_attr(self, name: str, default: str) -> str:
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    def axes_list(self, axes: list[int], rank: int, what: str = "axes") -> list[int]:
        """Normalize axes against ``rank``; out-of-range and repeated axes are errors."""
        out = []
        for a in axes:
            if not -rank <= a < rank:
                raise self.error(f"{what} value {a} is out of range for rank {rank}")
            out.append(a + rank if a < 0 else a)
        if len(set(out)) != len(out):
            raise self.error(f"{what} {axes} has repeated axes")
        return out

    def unsupported(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"{self.where()}: {reason}", ops=[(self.op.op_type, self.op.name, reason)]
        )


def same_dtype(kernel: Kernel, infos: list[TensorInfo | None], what: str = "inputs") -> np.dtype:
    """The common dtype of the present inputs; a mix is a DTypeError naming the op."""
    present = [i for i in infos if i is not None]
    dt = np.dtype(present[0].dtype)
    for other in present[1:]:
        if np.dtype(other.dtype) != dt:
            got = ", ".join(str(np.dtype(x.dtype)) for x in present)
            raise kernel.error(f"{what} must share one dtype, got {got}", DTypeError)
    return dt


def copy_reshaped(out: np.ndarray, shape: tuple[int, ...], src: np.ndarray) -> None:
    """Write ``src`` (broadcastable to ``shape``) into ``out`` seen with another ``shape``.

    Planned buffers are contiguous, so this is a view and one strided copy; the fallback keeps it
    correct for any other ``out``, where ``reshape`` would silently write into a copy.
    """
    if out.flags.c_contiguous:
        np.copyto(out.reshape(shape), src)
    else:
        tmp = np.empty(shape, out.dtype)
        np.copyto(tmp, src)
        out[...] = tmp.reshape(out.shape)


def fill_value(dtype: np.dtype):
    """The zero of a dtype (empty string for string tensors)."""
    return "" if np.dtype(dtype) == np.dtype(object) else np.zeros((), dtype)[()]


# ----- identity-like ------------------------------------------------------------------------------
class Identity(ShapeKernel):
    """Identity: a copy (the planner gives every tensor its own buffer).

    A sequence or optional value (edgert/runtime/values.py) is passed on as it is: such values
    are never modified in place, so sharing the list is safe. An empty optional arrives as a
    missing input and leaves as None.
    """

    traits = OpTraits(moves_bits=True, takes_sequences=True, int8="move")

    _pass_on = False

    def plan(self, inputs):
        x = inputs[0] if len(inputs) == 1 else None
        self._pass_on = len(inputs) == 1 and (x is None or type(x.value) is list)
        if self._pass_on:
            return [TensorInfo(None, np.dtype(object))]
        self.require_inputs(inputs, 1, 1)
        return [TensorInfo(x.shape, x.dtype, x.value)]

    def invoke(self, inputs, outputs):
        if self._pass_on:
            return [inputs[0]]
        np.copyto(outputs[0], inputs[0])
        return None

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])


class Dropout(ShapeKernel):
    """Dropout in inference mode: the output is the input and the optional mask is all True.

    Training-mode dropout is random and has no place in an inference runtime: a ``training_mode``
    input that is true raises :class:`KernelError`.
    """

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 3)
        x = inputs[0]
        self._training_checked = False
        mode = inputs[2] if len(inputs) > 2 else None
        if mode is not None and mode.value is not None:
            self._check_mode(np.asarray(mode.value))
            self._training_checked = True
        return [TensorInfo(x.shape, x.dtype), TensorInfo(x.shape, np.dtype(np.bool_))]

    def out_dtypes(self, inputs):
        return [inputs[0].dtype, np.dtype(np.bool_)]

    def _check_mode(self, mode: np.ndarray) -> None:
        if mode.size and bool(mode.reshape(-1)[0]):
            raise self.error(
                "training_mode=true is not supported (edgert runs inference only; export the "
                "model in eval mode)"
            )

    def run(self, inputs, outputs):
        if not self._training_checked and len(inputs) > 2 and inputs[2] is not None:
            self._check_mode(inputs[2])
        np.copyto(outputs[0], inputs[0])
        if len(outputs) > 1 and outputs[1] is not None:
            outputs[1].fill(True)


# ----- shapes as data -----------------------------------------------------------------------------
class Shape(ShapeKernel):
    """Shape (opset 15 ``start``/``end``, clamped like Python slicing); the value is set at
    prepare from the input's shape, even when its data is unknown."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        shape = inputs[0].shape
        r = len(shape)
        start = int(self.attr("start", 0))
        end = self.attr("end", None)
        end = r if end is None else int(end)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        value = np.array(shape[start:end], dtype=np.int64)
        return [TensorInfo(value.shape, np.dtype(np.int64), value)]

    def out_dtypes(self, inputs):
        return [np.dtype(np.int64)]

    def run(self, inputs, outputs):
        shape = inputs[0].shape
        outputs[0][...] = self.plan([TensorInfo(tuple(shape), inputs[0].dtype)])[0].value


class Size(ShapeKernel):
    """Size: the element count as an int64 scalar, known at prepare."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        value = np.array(inputs[0].size, dtype=np.int64)
        return [TensorInfo((), np.dtype(np.int64), value)]

    def out_dtypes(self, inputs):
        return [np.dtype(np.int64)]

    def run(self, inputs, outputs):
        outputs[0][...] = inputs[0].size


class ConstantOfShape(ShapeKernel):
    """ConstantOfShape: a tensor of the given shape filled with the ``value`` attribute
    (a one-element tensor; float32 0 by default). An empty shape gives a scalar."""

    traits = OpTraits(moves_bits=True)

    def _value(self) -> np.ndarray:
        v = self.attr("value", None)
        if v is None:
            return np.zeros(1, np.float32)
        v = np.asarray(v)
        if v.size != 1:
            raise self.error(f"attribute 'value' must hold one element, got shape {v.shape}")
        return v.reshape(1)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        self._fill = self._value()
        if inputs[0].shape is not None and len(inputs[0].shape) != 1:
            raise self.error(f"input shape must be 1-D, got shape {inputs[0].shape}", ShapeError)
        dims = self.int_list(self.param(inputs, 0), "input 'shape'")
        if any(d < 0 for d in dims):
            raise self.error(f"shape {dims} has a negative dimension", ShapeError)
        return [TensorInfo(tuple(dims), self._fill.dtype)]

    def out_dtypes(self, inputs):
        return [self._value().dtype]

    def run(self, inputs, outputs):
        outputs[0][...] = self._fill[0]


# ----- reshaping ---------------------------------------------------------------------------------
class Reshape(ShapeKernel):
    """Reshape: ``0`` copies the input dim (a literal 0 with ``allowzero=1``), one ``-1`` is
    inferred from the element count."""

    traits = OpTraits(moves_bits=True, int8="move")

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        target = self.param(inputs, 1)
        if target.ndim != 1:
            raise self.error(f"shape input must be 1-D, got shape {target.shape}", ShapeError)
        dims = self.int_list(target, "shape input")
        allowzero = int(self.attr("allowzero", 0))
        if allowzero and 0 in dims and -1 in dims:
            raise self.error(f"shape {dims} has both 0 and -1, which allowzero=1 forbids",
                             ShapeError)
        if dims.count(-1) > 1:
            raise self.error(f"shape {dims} has more than one -1", ShapeError)
        out = []
        for k, d in enumerate(dims):
            if d < -1:
                raise self.error(f"shape {dims} has an invalid entry {d}", ShapeError)
            if d == 0 and not allowzero:
                if k >= len(x.shape):
                    raise self.error(
                        f"shape {dims}: entry {k} is 0 (copy the input dim) but the input "
                        f"{x.shape} has rank {len(x.shape)}", ShapeError)
                d = x.shape[k]
            out.append(d)
        total = x.size
        if -1 in out:
            known = 1
            for d in out:
                if d != -1:
                    known *= d
            if known == 0 or total % known:
                raise self.error(
                    f"cannot reshape input of shape {x.shape} ({total} elements) to {dims}",
                    ShapeError)
            out[out.index(-1)] = total // known
        n = 1
        for d in out:
            n *= d
        if n != total:
            raise self.error(
                f"cannot reshape input of shape {x.shape} ({total} elements) to {tuple(out)} "
                f"({n} elements; shape input {dims})", ShapeError)
        self._shape = tuple(out)
        value = None if x.value is None else np.asarray(x.value).reshape(self._shape)
        return [TensorInfo(self._shape, x.dtype, value)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


class Flatten(ShapeKernel):
    """Flatten to 2-D at ``axis`` (default 1, range [-rank, rank])."""

    traits = OpTraits(moves_bits=True, int8="move")

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        r = len(x.shape)
        axis = int(self.attr("axis", 1))
        if not -r <= axis <= r:
            raise self.error(f"axis {axis} is out of range for rank {r} (valid: {-r}..{r})")
        axis = axis + r if axis < 0 else axis
        outer = 1
        for d in x.shape[:axis]:
            outer *= d
        inner = 1
        for d in x.shape[axis:]:
            inner *= d
        return [TensorInfo((outer, inner), x.dtype)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


class Squeeze(ShapeKernel):
    """Squeeze the ``axes`` input's dims (each must be 1), or every size-1 dim without it."""

    traits = OpTraits(moves_bits=True, int8="move")

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 2)
        x = inputs[0]
        axes_v = self.param(inputs, 1)
        if axes_v is None:
            axes = [k for k, d in enumerate(x.shape) if d == 1]
        else:
            axes = self.axes_list(self.int_list(axes_v, "axes"), len(x.shape))
            for a in axes:
                if x.shape[a] != 1:
                    raise self.error(
                        f"cannot squeeze axis {a} of shape {x.shape}: its size is not 1",
                        ShapeError)
        shape = tuple(d for k, d in enumerate(x.shape) if k not in axes)
        value = None if x.value is None else np.asarray(x.value).reshape(shape)
        return [TensorInfo(shape, x.dtype, value)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


class Unsqueeze(ShapeKernel):
    """Unsqueeze: insert size-1 dims at ``axes`` (normalized against the output rank)."""

    traits = OpTraits(moves_bits=True, int8="move")

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        axes_v = self.param(inputs, 1)
        r = len(x.shape) + axes_v.size
        axes = set(self.axes_list(self.int_list(axes_v, "axes"), r))
        it = iter(x.shape)
        shape = tuple(1 if k in axes else next(it) for k in range(r))
        value = None if x.value is None else np.asarray(x.value).reshape(shape)
        return [TensorInfo(shape, x.dtype, value)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].reshape(outputs[0].shape))


class Transpose(ShapeKernel):
    """Transpose by ``perm`` (default: reversed dims)."""

    traits = OpTraits(moves_bits=True, int8="move")

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        r = len(x.shape)
        perm = self.attr("perm", None)
        perm = list(range(r))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(r)):
            raise self.error(f"perm {perm} is not a permutation of 0..{r - 1} (input rank {r})")
        self._perm = perm
        return [TensorInfo(tuple(x.shape[p] for p in perm), x.dtype)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].transpose(self._perm))


class Concat(ShapeKernel):
    """Concat along ``axis`` (negative allowed); every other dim must match."""

    traits = OpTraits(moves_bits=True, int8="concat")

    def plan(self, inputs):
        if not inputs or any(i is None for i in inputs):
            raise self.error("needs at least one input and no omitted inputs")
        dt = same_dtype(self, inputs)
        ref = inputs[0].shape
        r = len(ref)
        if r == 0:
            raise self.error("cannot concatenate scalars (rank 0)", ShapeError)
        if "axis" not in self.attrs:
            raise self.error("attribute 'axis' is required")
        axis = self.normalize_axis(int(self.attr("axis")), r)
        total = 0
        for k, info in enumerate(inputs):
            s = info.shape
            if len(s) != r or any(a != b for j, (a, b) in enumerate(zip(s, ref)) if j != axis):
                shapes = ", ".join(str(i.shape) for i in inputs)
                raise self.error(
                    f"input {k} has shape {s}; all inputs must match except on axis {axis} "
                    f"(shapes: {shapes})", ShapeError)
            total += s[axis]
        self._axis = axis
        shape = ref[:axis] + (total,) + ref[axis + 1:]
        return [TensorInfo(shape, dt)]

    def run(self, inputs, outputs):
        np.concatenate(inputs, axis=self._axis, out=outputs[0])


class Split(ShapeKernel):
    """Split along ``axis`` by the ``split`` input, or into ``num_outputs`` chunks of
    ceil(dim / n) (the last one smaller). The importer sets ``num_outputs`` for old-opset nodes
    that split evenly by their output count."""

    traits = OpTraits(moves_bits=True)

    def _sizes(self, inputs) -> list[int]:
        x = inputs[0]
        r = len(x.shape)
        axis = self.normalize_axis(int(self.attr("axis", 0)), r)
        self._axis = axis
        dim = x.shape[axis]
        split_v = self.param(inputs, 1)
        n_attr = self.attr("num_outputs", None)
        if split_v is not None:
            sizes = self.int_list(split_v, "split")
            if any(s < 0 for s in sizes) or sum(sizes) != dim:
                raise self.error(
                    f"split {sizes} must be non-negative and sum to dim {dim} of axis {axis} "
                    f"(input shape {x.shape})", ShapeError)
            return sizes
        if n_attr is None:
            raise self.error("needs the 'split' input or the 'num_outputs' attribute")
        n = int(n_attr)
        if n < 1:
            raise self.error(f"num_outputs must be >= 1, got {n}")
        chunk = -(-dim // n)
        last = dim - chunk * (n - 1)
        if last < 0:
            raise self.error(
                f"cannot split dim {dim} of axis {axis} into {n} outputs of size {chunk}",
                ShapeError)
        return [chunk] * (n - 1) + [last]

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 2)
        x = inputs[0]
        sizes = self._sizes(inputs)
        self._bounds = np.cumsum([0] + sizes).tolist()
        axis = self._axis
        return [TensorInfo(x.shape[:axis] + (s,) + x.shape[axis + 1:], x.dtype) for s in sizes]

    def out_dtypes(self, inputs):
        split = inputs[1] if len(inputs) > 1 else None
        if split is not None and split.shape is not None:
            n = int(np.prod(split.shape))
        else:
            n = int(self.attr("num_outputs", 1))
        return [inputs[0].dtype] * n

    def run(self, inputs, outputs):
        x = inputs[0]
        index = [slice(None)] * x.ndim
        for k, out in enumerate(outputs):
            if out is None:
                continue
            index[self._axis] = slice(self._bounds[k], self._bounds[k + 1])
            np.copyto(out, x[tuple(index)])


class Slice(ShapeKernel):
    """Slice (opset 10+ form: starts, ends, axes, steps as inputs).

    Starts/ends are clamped as ONNX specifies, so INT64_MAX / INT64_MIN sentinels ("to the end")
    work with either step sign; all arithmetic is on Python ints to avoid int64 overflow.
    """

    traits = OpTraits(moves_bits=True, int8="move")

    def plan(self, inputs):
        self.require_inputs(inputs, 3, 5)
        x = inputs[0]
        r = len(x.shape)
        starts = self.int_list(self.param(inputs, 1), "starts")
        ends = self.int_list(self.param(inputs, 2), "ends")
        axes_v = self.param(inputs, 3)
        steps_v = self.param(inputs, 4)
        axes = list(range(len(starts))) if axes_v is None else self.int_list(axes_v, "axes")
        steps = [1] * len(starts) if steps_v is None else self.int_list(steps_v, "steps")
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise self.error(
                f"starts, ends, axes and steps must have one length, got {len(starts)}, "
                f"{len(ends)}, {len(axes)}, {len(steps)}")
        axes = self.axes_list(axes, r)
        index = [slice(None)] * r
        shape = list(x.shape)
        for a, s, e, st in zip(axes, starts, ends, steps):
            d = x.shape[a]
            if st == 0:
                raise self.error(f"step for axis {a} is 0")
            s = s + d if s < 0 else s
            e = e + d if e < 0 else e
            if st > 0:
                s = min(max(s, 0), d)
                e = min(max(e, 0), d)
                n = max(0, (e - s + st - 1) // st)
            else:
                s = min(max(s, 0), d - 1)
                e = min(max(e, -1), d - 1)
                n = max(0, (s - e - st - 1) // -st)
            # end == -1 with a negative step means "through index 0"; Python needs None there.
            index[a] = slice(s, e if e >= 0 else None, st) if n else slice(0, 0)
            shape[a] = n
        self._index = tuple(index)
        shape = tuple(shape)
        value = None if x.value is None else np.asarray(x.value)[self._index]
        return [TensorInfo(shape, x.dtype, value)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0][self._index])


# ----- type conversion ---------------------------------------------------------------------------
_NO_NUMPY_DTYPE = set(float8.CODED_TYPES)


class Cast(ShapeKernel):
    """Cast to the ``to`` element type: every NumPy-held numeric type, bool, and strings.

    Float to integer truncates toward zero (NaN / out-of-range values are undefined in ONNX;
    NumPy's result is kept, without its warning). Numbers become text as onnxruntime writes
    them; strings to numbers parse the text. ``saturate`` only concerns float8, which is not
    supported (nor bfloat16 / int4): those raise :class:`UnsupportedOpError`.
    """

    traits = OpTraits(moves_bits=True, tags_narrow_types=True)

    def _target(self, inputs) -> np.dtype:
        to = self.attr("to", None)
        if to is None:
            raise self.error("attribute 'to' is required")
        to = int(to)
        if to in float8.CODED_TYPES:
            return dtypes.to_numpy(to)  # raw bits / unpacked sub-byte values; run() encodes
        if to in _NO_NUMPY_DTYPE:
            raise self.unsupported(f"Cast to {dtypes.name(to)} is not supported")
        if not dtypes.is_known(to):
            raise self.error(f"attribute 'to' = {to} is not a known element type", DTypeError)
        return dtypes.to_numpy(to)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        self._to = self._target(inputs)
        src = np.dtype(x.dtype)
        if src.kind == "O" and self._to == np.dtype(np.bool_):
            raise self.unsupported("Cast from string to bool is not supported")
        return [TensorInfo(x.shape, self._to)]

    def out_dtypes(self, inputs):
        return [self._target(inputs)]

    def run(self, inputs, outputs):
        cast_bits_into(outputs[0], inputs[0], self, self.attr("to"))


def cast_bits_into(out: np.ndarray, x: np.ndarray, kernel: Kernel, to) -> None:
    """:func:`cast_into` that decodes / encodes bfloat16 and float8 (held as raw bits)."""
    src = kernel.attr("edgert_from_type", None)
    to = int(to) if to is not None else None
    if src is None and to not in float8.CODED_TYPES:
        cast_into(out, x, kernel)
        return
    if src is not None:
        x = float8.decode(x, int(src))
    if to in float8.CODED_TYPES:
        if x.dtype == object:
            x = x.astype(np.float32)
        # encode converts x itself: integers narrow to int4/int2 exactly, not through float32
        out[...] = float8.encode(x, to, bool(kernel.attr("saturate", 1)),
                                 str(kernel.attr("round_mode", "up")))
    else:
        cast_into(out, x, kernel)


def cast_into(out: np.ndarray, x: np.ndarray, kernel: Kernel) -> None:
    """``out[...] = x`` converted to ``out``'s dtype with ONNX Cast semantics."""
    src, dst = x.dtype, out.dtype
    if dst.kind == "O" and src.kind != "O":
        out[...] = _to_text(x)
        return
    if src.kind == "O" and dst.kind != "O":
        try:
            parsed = x.astype(np.float64) if dst.kind == "f" else x.astype(np.int64)
        except (ValueError, TypeError) as exc:
            raise kernel.error(f"cannot parse string input as {dst}: {exc}", DTypeError) from None
        with np.errstate(invalid="ignore", over="ignore"):
            np.copyto(out, parsed, casting="unsafe")
        return
    with np.errstate(invalid="ignore", over="ignore"):
        np.copyto(out, x, casting="unsafe")


def _to_text(x: np.ndarray) -> np.ndarray:
    """Numbers as onnxruntime writes them: integers in decimal, bools as 1/0, floats with
    ``%.8g`` and NaN / INF / -INF."""
    if x.dtype.kind == "b":
        return x.astype(np.uint8).astype(str).astype(object)
    if x.dtype.kind in "iu":
        return x.astype(str).astype(object)
    v = x.astype(np.float64)
    text = np.char.mod("%.8g", v).astype(object)
    text[np.isnan(v)] = "NaN"
    text[np.isposinf(v)] = "INF"
    text[np.isneginf(v)] = "-INF"
    return text


class CastLike(ShapeKernel):
    """CastLike: Cast to the dtype of the second input."""

    traits = OpTraits(moves_bits=True, tags_narrow_types=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x, like = inputs
        return [TensorInfo(x.shape, like.dtype)]

    def out_dtypes(self, inputs):
        return [inputs[1].dtype]

    def run(self, inputs, outputs):
        cast_bits_into(outputs[0], inputs[0], self, self.attr("edgert_to_type", None))


# ----- generators --------------------------------------------------------------------------------
class Range(ShapeKernel):
    """Range(start, limit, delta): ``max(ceil((limit - start) / delta), 0)`` values from
    ``start`` in steps of ``delta`` (a running sum in the tensor's type)."""

    def plan(self, inputs):
        self.require_inputs(inputs, 3, 3)
        dt = same_dtype(self, inputs)
        if dt.kind not in "iuf":
            raise self.error(f"inputs must be numeric, got {dt}", DTypeError)
        vals = []
        for k, what in enumerate(("start", "limit", "delta")):
            v = self.param(inputs, k)
            if v.size != 1:
                raise self.error(f"{what} must be a scalar, got shape {v.shape}", ShapeError)
            vals.append(v.reshape(-1)[0])
        start, limit, delta = vals
        if delta == 0:
            raise self.error("delta is 0")
        if dt.kind == "f":
            # The difference is formed in the tensor's type, the division in double (as
            # onnxruntime does), so float32 counts agree with the reference at the edges.
            span = float(np.subtract(limit, start, dtype=dt))
            n = int(np.ceil(span / float(delta)))
        else:
            a, b, c = int(start), int(limit), int(delta)
            n = -((a - b) // c)  # ceil((b - a) / c) on exact integers
        n = max(n, 0)
        self._start, self._delta = start, delta
        return [TensorInfo((n,), dt)]

    def run(self, inputs, outputs):
        out = outputs[0]
        if out.size == 0:
            return
        # ONNX defines Range by a loop that adds delta to the previous value, and onnxruntime
        # accumulates the same way: in float32, start + i * delta differs in the last bit.
        # add.accumulate is sequential, so it reproduces the running sum exactly.
        out[0] = self._start
        out[1:] = self._delta
        np.cumsum(out, dtype=out.dtype, out=out)


class EyeLike(ShapeKernel):
    """EyeLike: ones on the ``k``-th diagonal of a 2-D tensor shaped like the input."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if len(x.shape) != 2:
            raise self.error(f"input must be 2-D, got shape {x.shape}", ShapeError)
        to = self.attr("dtype", None)
        if to is None:
            dt = np.dtype(x.dtype)
        else:
            if int(to) in _NO_NUMPY_DTYPE or not dtypes.is_known(int(to)):
                raise self.unsupported(f"EyeLike dtype {dtypes.name(int(to))} is not supported")
            dt = dtypes.to_numpy(int(to))
        if dt.kind == "O":
            raise self.error("EyeLike of a string tensor is not defined", DTypeError)
        self._k = int(self.attr("k", 0))
        return [TensorInfo(x.shape, dt)]

    def out_dtypes(self, inputs):
        to = self.attr("dtype", None)
        return [inputs[0].dtype if to is None else dtypes.to_numpy(int(to))]

    def run(self, inputs, outputs):
        out = outputs[0]
        out[...] = np.eye(out.shape[0], out.shape[1], self._k, dtype=out.dtype)


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("Identity", Identity),
        ("Dropout", Dropout),
        ("Shape", Shape),
        ("Size", Size),
        ("ConstantOfShape", ConstantOfShape),
        ("Reshape", Reshape),
        ("Flatten", Flatten),
        ("Squeeze", Squeeze),
        ("Unsqueeze", Unsqueeze),
        ("Transpose", Transpose),
        ("Concat", Concat),
        ("Split", Split),
        ("Slice", Slice),
        ("Cast", Cast),
        ("CastLike", CastLike),
        ("Range", Range),
        ("EyeLike", EyeLike),
    ):
        reg.add(op_type, kernel)


