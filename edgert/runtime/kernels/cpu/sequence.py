"""Sequence and optional operators: SequenceConstruct/Empty/Insert/At/Erase/Length,
SplitToSequence, ConcatFromSequence, SequenceMap, Optional, OptionalHasElement and
OptionalGetElement.

Values are held as :mod:`edgert.runtime.values` describes: a sequence is a Python list of
arrays, an optional is its content or None. None of these operators is planned in the arena:
``prepare`` validates what it is given and reports unknown output shapes, so every one runs as a
dynamic step, which calls ``prepare`` with the actual values right before ``invoke``. Positions
therefore are checked in ``prepare`` (a clear :class:`~edgert.errors.InputError` naming the op),
and ``invoke`` only builds the results.

Arrays put into a sequence are copied: an input may be an arena view that a later step
overwrites. Lists and arrays received are never modified, so results may share them.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, InputError, KernelError, ShapeError
from edgert.runtime.kernels.cpu.control_flow import _ControlFlow
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo
from edgert.runtime.values import OBJECT

INT64 = np.dtype(np.int64)


def _is_seq(info: TensorInfo | None) -> bool:
    return info is not None and type(info.value) is list


class _SequenceKernel(Kernel):
    """Shared checks: which inputs are sequences, positions, element dtypes."""

    def sequence(self, inputs: list[TensorInfo | None], i: int) -> list | None:
        """Input ``i`` as a list; None while its value is not known (at the shape pass)."""
        info = inputs[i] if i < len(inputs) else None
        if info is None:
            raise self.error(f"input {i} (a sequence) is missing or is an empty optional")
        if type(info.value) is list:
            return info.value
        if info.shape is not None:  # a known tensor where a sequence belongs
            raise self.error(f"input {i} must be a sequence, got a tensor of shape "
                             f"{info.shape}", InputError)
        return None

    def tensor(self, inputs: list[TensorInfo | None], i: int, what: str) -> TensorInfo:
        info = inputs[i] if i < len(inputs) else None
        if info is None:
            raise self.error(f"{what} (input {i}) is missing")
        if type(info.value) is list:
            raise self.error(f"{what} (input {i}) must be a tensor, got a sequence", InputError)
        return info

    def position(self, inputs: list[TensorInfo | None], i: int, n: int | None,
                 hi: int) -> int | None:
        """Position input ``i`` (accepted: ``-n..hi``) made non-negative; None when omitted or
        while its value (or the sequence length ``n``) is not known yet."""
        info = inputs[i] if i < len(inputs) else None
        if info is None:
            return None
        if type(info.value) is list:
            raise self.error(f"position (input {i}) must be a tensor, got a sequence", InputError)
        if np.dtype(info.dtype) not in (np.dtype(np.int32), INT64):
            raise self.error(f"position must be int32 or int64, got {np.dtype(info.dtype)}",
                             DTypeError)
        if info.shape is not None and int(np.prod(info.shape)) != 1:
            raise self.error(f"position must be a scalar, got shape {info.shape}", ShapeError)
        if info.value is None or n is None:
            return None
        pos = int(np.asarray(info.value).reshape(-1)[0])
        if not -n <= pos <= hi:
            raise self.error(
                f"position {pos} is out of range for a sequence of length {n} (accepted: "
                f"{-n}..{hi})", InputError
            )
        return pos + n if pos < 0 else pos

    def check_same_dtype(self, seq: list, dtype: np.dtype, what: str) -> None:
        if seq and seq[0].dtype != dtype:
            raise self.error(f"{what} has dtype {dtype}, the sequence holds {seq[0].dtype}",
                             DTypeError)


class SequenceEmpty(_SequenceKernel):
    """SequenceEmpty: an empty sequence (of attribute ``dtype``, float32 by default)."""

    traits = OpTraits(moves_bits=True, takes_sequences=True, makes_sequence=True)

    def prepare(self, inputs):
        code = int(self.attr("dtype", dtypes.FLOAT))
        if not dtypes.is_known(code):
            raise self.error(f"unknown dtype code {code}", DTypeError)
        return [TensorInfo(None, OBJECT)]

    def invoke(self, inputs, outputs):
        return [[]]


class SequenceConstruct(_SequenceKernel):
    """SequenceConstruct: a sequence of the input tensors (all of one dtype)."""

    traits = OpTraits(moves_bits=True, takes_sequences=True, makes_sequence=True)

    def prepare(self, inputs):
        if not inputs:
            raise self.error("needs at least one input")
        infos = [self.tensor(inputs, i, f"tensor {i}") for i in range(len(inputs))]
        first = np.dtype(infos[0].dtype)
        for i, info in enumerate(infos[1:], 1):
            if np.dtype(info.dtype) != first:
                raise self.error(f"input {i} has dtype {np.dtype(info.dtype)}, input 0 has "
                                 f"{first}; a sequence holds one dtype", DTypeError)
        return [TensorInfo(None, OBJECT)]

    def invoke(self, inputs, outputs):
        return [[np.array(x, copy=True) for x in inputs]]


class SequenceInsert(_SequenceKernel):
    """SequenceInsert: a new sequence with ``tensor`` inserted at ``position`` (default: end).

    Accepted positions are ``-n..n`` for a sequence of length n (negative counts from the end).
    """

    traits = OpTraits(moves_bits=True, takes_sequences=True, makes_sequence=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 3)
        seq = self.sequence(inputs, 0)
        x = self.tensor(inputs, 1, "tensor")
        n = None if seq is None else len(seq)
        self._pos = self.position(inputs, 2, n, n or 0)
        if seq is not None:
            self.check_same_dtype(seq, np.dtype(x.dtype), "tensor")
        return [TensorInfo(None, OBJECT)]

    def invoke(self, inputs, outputs):
        seq, x = inputs[0], np.array(inputs[1], copy=True)
        pos = len(seq) if self._pos is None else self._pos
        return [seq[:pos] + [x] + seq[pos:]]


class SequenceAt(_SequenceKernel):
    """SequenceAt: element ``position`` (``-n..n-1``) of a sequence."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 2)
        seq = self.sequence(inputs, 0)
        n = None if seq is None else len(seq)
        self._pos = self.position(inputs, 1, n, (n or 0) - 1)
        return [TensorInfo(None, seq[0].dtype if seq else OBJECT)]

    def invoke(self, inputs, outputs):
        return [inputs[0][self._pos]]


class SequenceErase(_SequenceKernel):
    """SequenceErase: a new sequence without element ``position`` (``-n..n-1``, default last)."""

    traits = OpTraits(moves_bits=True, takes_sequences=True, makes_sequence=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 2)
        seq = self.sequence(inputs, 0)
        n = None if seq is None else len(seq)
        self._pos = self.position(inputs, 1, n, (n or 0) - 1)
        if seq is not None and self._pos is None and n == 0:
            raise self.error("cannot erase from an empty sequence", InputError)
        return [TensorInfo(None, OBJECT)]

    def invoke(self, inputs, outputs):
        seq = inputs[0]
        pos = len(seq) - 1 if self._pos is None else self._pos
        return [seq[:pos] + seq[pos + 1:]]


class SequenceLength(_SequenceKernel):
    """SequenceLength: the number of elements, as an int64 scalar."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        self.sequence(inputs, 0)
        return [TensorInfo(None, INT64)]

    def invoke(self, inputs, outputs):
        return [np.array(len(inputs[0]), INT64)]


class SplitToSequence(_SequenceKernel):
    """SplitToSequence: split a tensor along ``axis`` into a sequence.

    ``split`` omitted: pieces of length 1 (squeezed when ``keepdims=0``); a scalar: pieces of that
    length (the last one shorter when it does not divide the axis); a 1-D tensor: the piece
    lengths, which must sum to the axis length.
    """

    traits = OpTraits(moves_bits=True, takes_sequences=True, makes_sequence=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 2)
        x = self.tensor(inputs, 0, "input")
        split = inputs[1] if len(inputs) > 1 else None
        if split is not None:
            split = self.tensor(inputs, 1, "split")
            if np.dtype(split.dtype) not in (np.dtype(np.int32), INT64):
                raise self.error(f"split must be int32 or int64, got {np.dtype(split.dtype)}",
                                 DTypeError)
        self._bounds = None
        if x.shape is None:
            return [TensorInfo(None, OBJECT)]
        if len(x.shape) == 0:
            raise self.error("cannot split a scalar", ShapeError)
        axis = self.normalize_axis(int(self.attr("axis", 0)), len(x.shape))
        self._axis = axis
        dim = x.shape[axis]
        if split is None:
            self._bounds = list(range(dim + 1))
            self._squeeze = not int(self.attr("keepdims", 1))
            return [TensorInfo(None, OBJECT)]
        self._squeeze = False
        if split.value is None:
            return [TensorInfo(None, OBJECT)]
        sizes = np.asarray(split.value).astype(np.int64)
        if sizes.ndim == 0:
            size = int(sizes)
            if size <= 0:
                raise self.error(f"split must be positive, got {size}", InputError)
            self._bounds = list(range(0, dim, size)) + [dim] if dim else [0]
            return [TensorInfo(None, OBJECT)]
        if sizes.ndim != 1:
            raise self.error(f"split must be a scalar or 1-D, got shape {sizes.shape}",
                             ShapeError)
        if (sizes < 0).any() or int(sizes.sum()) != dim:
            raise self.error(f"split {sizes.tolist()} does not add up to the length {dim} of "
                             f"axis {axis}", InputError)
        self._bounds = [0, *np.cumsum(sizes).tolist()]
        return [TensorInfo(None, OBJECT)]

    def invoke(self, inputs, outputs):
        x = np.asarray(inputs[0])
        b = self._bounds
        idx = [slice(None)] * x.ndim
        pieces = []
        for k in range(len(b) - 1):
            idx[self._axis] = slice(b[k], b[k + 1])
            piece = x[tuple(idx)]
            if self._squeeze:
                piece = np.squeeze(piece, axis=self._axis)
            pieces.append(np.array(piece, copy=True))
        return [pieces]


class ConcatFromSequence(_SequenceKernel):
    """ConcatFromSequence: concatenate (``new_axis=0``) or stack (``new_axis=1``) a sequence."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        seq = self.sequence(inputs, 0)
        if seq is None:
            return [TensorInfo(None, OBJECT)]
        if not seq:
            raise self.error("cannot concatenate an empty sequence", InputError)
        new_axis = int(self.attr("new_axis", 0))
        if new_axis not in (0, 1):
            raise self.error(f"new_axis must be 0 or 1, got {new_axis}")
        rank = seq[0].ndim
        axis = int(self.attr("axis", 0)) if "axis" in self.attrs else None
        if axis is None:
            raise self.error("attribute 'axis' is required")
        self._axis = self.normalize_axis(axis, rank + new_axis)
        self._stack = bool(new_axis)
        first = seq[0]
        for k, x in enumerate(seq):
            if x.dtype != first.dtype:
                raise self.error(f"element {k} has dtype {x.dtype}, element 0 has {first.dtype}",
                                 DTypeError)
            same = x.shape == first.shape if self._stack else (
                x.ndim == rank and all(a == b for d, (a, b) in enumerate(zip(x.shape, first.shape))
                                       if d != self._axis))
            if not same:
                raise self.error(f"element {k} has shape {x.shape}, element 0 has {first.shape}:"
                                 f" they cannot be {'stacked' if self._stack else 'concatenated'}"
                                 f" along axis {self._axis}", ShapeError)
        if not self._stack and rank == 0:
            raise self.error("cannot concatenate scalars (use new_axis=1)", ShapeError)
        return [TensorInfo(None, first.dtype)]

    def invoke(self, inputs, outputs):
        if self._stack:
            return [np.stack(inputs[0], axis=self._axis)]
        return [np.concatenate(inputs[0], axis=self._axis)]


class SequenceMap(_ControlFlow, _SequenceKernel):
    """SequenceMap: run ``body`` on element i of every sequence input (tensor inputs whole),
    collecting each body output into an output sequence."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    _body_ = None

    def prepare(self, inputs):
        n_own, names = self._outer(len(inputs))
        if n_own < 1:
            raise self.error("needs an input sequence")
        self._n_own, self._names = n_own, names
        if self._body_ is None:
            self._body_ = self._body("body", names)
        if self._body_.num_inputs != n_own:
            raise self.error(f"body takes {self._body_.num_inputs} inputs, the node has {n_own}")
        self.sequence(inputs, 0)
        lengths = {len(x.value) for x in inputs[:n_own] if _is_seq(x)}
        if len(lengths) > 1:
            raise self.error(f"input sequences have different lengths {sorted(lengths)}",
                             InputError)
        return [TensorInfo(None, OBJECT) for _ in range(self._body_.num_outputs)]

    def invoke(self, inputs, outputs):
        own = inputs[: self._n_own]
        outer = self._outer_feeds(self._names, inputs[self._n_own:])
        results: list[list[np.ndarray]] = [[] for _ in range(self._body_.num_outputs)]
        limits = self.limits
        for i in range(len(own[0])):
            limits.check_deadline(self.where())
            args = [x[i] if type(x) is list else x for x in own]
            for k, r in enumerate(self._body_(args, outer)):
                if r is None or type(r) is list:
                    raise KernelError(f"{self.where()}: body output {k} must be a tensor")
                results[k].append(r)
        return results


class Optional(_SequenceKernel):
    """Optional: an optional holding the input, or an empty one (no input; attribute ``type``)."""

    traits = OpTraits(moves_bits=True, takes_sequences=True, makes_sequence=True)

    def prepare(self, inputs):
        if len(inputs) > 1:
            raise self.error(f"expects 0..1 inputs, got {len(inputs)}")
        if (not inputs or inputs[0] is None) and "type" not in self.attrs:
            raise self.error("an empty Optional needs the attribute 'type'")
        return [TensorInfo(None, OBJECT)]

    def invoke(self, inputs, outputs):
        x = inputs[0] if inputs else None
        if x is None or type(x) is list:
            return [x]
        return [np.array(x, copy=True)]


class OptionalHasElement(_SequenceKernel):
    """OptionalHasElement: whether an optional holds a value (false for a missing input)."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        if len(inputs) > 1:
            raise self.error(f"expects 0..1 inputs, got {len(inputs)}")
        return [TensorInfo(None, np.dtype(np.bool_))]

    def invoke(self, inputs, outputs):
        return [np.array(bool(inputs) and inputs[0] is not None)]


class OptionalGetElement(_SequenceKernel):
    """OptionalGetElement: the value an optional holds; an error when it is empty.

    From opset 18 a plain tensor or sequence input is returned as it is.
    """

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        if len(inputs) != 1:
            raise self.error(f"expects 1 input, got {len(inputs)}")
        if inputs[0] is None:
            raise self.error("the optional input is empty: it holds no value to get",
                             InputError)
        info = inputs[0]
        return [TensorInfo(None, OBJECT if _is_seq(info) else np.dtype(info.dtype))]

    def invoke(self, inputs, outputs):
        return [inputs[0]]


def register(reg: KernelRegistry) -> None:
    reg.add("SequenceEmpty", SequenceEmpty, since=11)
    reg.add("SequenceConstruct", SequenceConstruct, since=11)
    reg.add("SequenceInsert", SequenceInsert, since=11)
    reg.add("SequenceAt", SequenceAt, since=11)
    reg.add("SequenceErase", SequenceErase, since=11)
    reg.add("SequenceLength", SequenceLength, since=11)
    reg.add("SplitToSequence", SplitToSequence, since=11)
    reg.add("ConcatFromSequence", ConcatFromSequence, since=11)
    reg.add("SequenceMap", SequenceMap, since=17)
    reg.add("Optional", Optional, since=15)
    reg.add("OptionalHasElement", OptionalHasElement, since=15)
    reg.add("OptionalGetElement", OptionalGetElement, since=15)
