"""CPU kernels: data movement that copies or rearranges elements (Pad, Tile, Expand, Trilu,
CumSum, DepthToSpace, SpaceToDepth).

All of these are strided copies that NumPy already performs in compiled loops for every dtype
(bool, float16 and strings included, which Numba handles poorly or not at all), so they write
into the planned ``out`` arrays through NumPy views rather than compiling per-dtype kernels.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime.kernels.cpu.shape import ShapeKernel, copy_reshaped, fill_value
from edgert.runtime.registry import KernelRegistry, OpTraits, TensorInfo, broadcast_shapes


class Expand(ShapeKernel):
    """Expand: broadcast the input to ``broadcast(input.shape, shape)`` (bidirectional, so a 1
    in ``shape`` keeps the input's dim)."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        target = self.param(inputs, 1)
        if target.ndim != 1:
            raise self.error(f"shape input must be 1-D, got shape {target.shape}", ShapeError)
        dims = self.int_list(target, "shape input")
        if any(d < 0 for d in dims):
            raise self.error(f"shape {dims} has a negative dimension", ShapeError)
        shape = broadcast_shapes(self.where(), tuple(x.shape), tuple(dims))
        return [TensorInfo(shape, x.dtype)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])


class Tile(ShapeKernel):
    """Tile: repeat the input ``repeats[i]`` times along each axis."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        reps = self.int_list(self.param(inputs, 1), "repeats")
        if len(reps) != len(x.shape):
            raise self.error(
                f"repeats has {len(reps)} entries, the input {x.shape} has rank {len(x.shape)}",
                ShapeError)
        if any(r < 0 for r in reps):
            raise self.error(f"repeats {reps} has a negative entry", ShapeError)
        self._reps = reps
        return [TensorInfo(tuple(d * r for d, r in zip(x.shape, reps)), x.dtype)]

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        # View the output as (r0, d0, r1, d1, ...) and broadcast the input into it: one strided
        # copy, no temporary tiled array.
        inter = tuple(v for r, d in zip(self._reps, x.shape) for v in (r, d))
        copy_reshaped(out, inter, x.reshape(tuple(v for d in x.shape for v in (1, d))))


class Pad(ShapeKernel):
    """Pad (opset 18+ form: pads, constant_value and axes as inputs); modes constant, reflect,
    edge and wrap.

    Negative pads crop. As onnxruntime does, cropping happens first and the positive pads are
    then applied to the cropped tensor, so ``reflect`` may pad at most ``dim - 1`` per side of
    the cropped dim and ``edge``/``reflect``/``wrap`` need a non-empty cropped dim to pad from.
    """

    traits = OpTraits(int8="move")

    MODES = ("constant", "reflect", "edge", "wrap")

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 4)
        x = inputs[0]
        r = len(x.shape)
        mode = self.str_attr("mode", "constant")
        if mode not in self.MODES:
            raise self.error(f"mode {mode!r} is not one of {', '.join(self.MODES)}")
        pads = self.int_list(self.param(inputs, 1), "pads")
        axes_v = self.param(inputs, 3)
        axes = list(range(r)) if axes_v is None else self.axes_list(
            self.int_list(axes_v, "axes"), r)
        if len(pads) != 2 * len(axes):
            raise self.error(
                f"pads has {len(pads)} entries; expected 2 x {len(axes)} (begin and end for "
                f"each of the axes {axes}, input shape {x.shape})", ShapeError)
        begin = [0] * r
        end = [0] * r
        for k, a in enumerate(axes):
            begin[a], end[a] = pads[k], pads[k + len(axes)]
        crop, grow, shape = [], [], []
        for a in range(r):
            d, b, e = x.shape[a], begin[a], end[a]
            lo, hi = max(-b, 0), d - max(-e, 0)
            if hi < lo or d + b + e < 0:
                raise self.error(
                    f"pads ({b}, {e}) on axis {a} crop more than its size {d} "
                    f"(input shape {x.shape}, pads {pads})", ShapeError)
            kept = hi - lo
            pb, pe = max(b, 0), max(e, 0)
            if mode != "constant" and (pb or pe):
                if kept == 0:
                    raise self.error(
                        f"{mode} mode cannot pad axis {a}: it is empty after cropping "
                        f"(input shape {x.shape}, pads {pads})", ShapeError)
                if mode == "reflect" and max(pb, pe) > kept - 1:
                    raise self.error(
                        f"reflect mode pads axis {a} by ({pb}, {pe}) but may pad at most "
                        f"{kept - 1} per side (size {kept} after cropping; input shape "
                        f"{x.shape}, pads {pads})", ShapeError)
            crop.append(slice(lo, hi))
            grow.append((pb, pe))
            shape.append(kept + pb + pe)
        self._mode = mode
        self._crop = tuple(crop)
        self._grow = grow
        self._interior = tuple(slice(pb, pb + (s.stop - s.start)) for s, (pb, _) in
                               zip(crop, grow))
        # The constant does not change the shape: when it is computed at run time, invoke reads it.
        value = inputs[2] if len(inputs) > 2 else None
        self._value = None
        if value is not None:
            if np.dtype(value.dtype) != np.dtype(x.dtype):
                raise self.error(f"constant_value has dtype {np.dtype(value.dtype)}, the data "
                                 f"has {np.dtype(x.dtype)}", DTypeError)
            if value.value is not None:
                self._value = self._constant(np.asarray(value.value), x.dtype)
        return [TensorInfo(tuple(shape), x.dtype)]

    def _constant(self, value: np.ndarray, dt: np.dtype):
        if value.size == 0:
            return fill_value(dt)
        if np.dtype(value.dtype) != np.dtype(dt):
            raise self.error(
                f"constant_value has dtype {value.dtype}, the data has {np.dtype(dt)}", DTypeError)
        return value.reshape(-1)[0]

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        cropped = x[self._crop]
        if self._mode == "constant":
            value = self._value
            if value is None:
                value = (self._constant(inputs[2], x.dtype)
                         if len(inputs) > 2 and inputs[2] is not None else fill_value(x.dtype))
            out[...] = value
            out[self._interior] = cropped
        else:
            out[...] = np.pad(cropped, self._grow, mode=self._mode)


class Trilu(ShapeKernel):
    """Trilu: keep the upper (``upper=1``) or lower triangle of the last two dims, offset by the
    optional ``k`` input (read at invoke; it does not change the shape)."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 2)
        x = inputs[0]
        if len(x.shape) < 2:
            raise self.error(f"input must have rank >= 2, got shape {x.shape}", ShapeError)
        k = inputs[1] if len(inputs) > 1 else None
        if k is not None and k.value is not None:
            self.int_scalar(np.asarray(k.value), "k")
        return [TensorInfo(x.shape, x.dtype)]

    def run(self, inputs, outputs):
        x = inputs[0]
        k = 0
        if len(inputs) > 1 and inputs[1] is not None:
            k = self.int_scalar(np.asarray(inputs[1]), "k")
        n, m = x.shape[-2:]
        # Clamp so NumPy's mask arithmetic never sees INT64 extremes.
        k = min(max(k, -n - 1), m + 1)
        f = np.triu if int(self.attr("upper", 1)) else np.tril
        outputs[0][...] = f(x, k)


class CumSum(ShapeKernel):
    """CumSum along the ``axis`` input, with ``exclusive`` and ``reverse``; integer sums wrap
    in the input type as in onnxruntime."""

    def plan(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        if np.dtype(x.dtype).kind not in "iuf":
            raise self.error(f"input must be numeric, got {np.dtype(x.dtype)}", DTypeError)
        if len(x.shape) == 0:
            raise self.error("input must have rank >= 1", ShapeError)
        ax = inputs[1]
        if ax.value is not None:
            self._axis_of(np.asarray(ax.value), len(x.shape))
        return [TensorInfo(x.shape, x.dtype)]

    def _axis_of(self, axis: np.ndarray, rank: int) -> int:
        return self.normalize_axis(self.int_scalar(axis, "axis"), rank)

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        axis = self._axis_of(np.asarray(inputs[1]), x.ndim)
        if int(self.attr("reverse", 0)):
            x, out = np.flip(x, axis), np.flip(out, axis)
        if out.size == 0:
            return
        if int(self.attr("exclusive", 0)):
            first = [slice(None)] * x.ndim
            first[axis] = slice(0, 1)
            out[tuple(first)] = 0
            head = list(first)
            head[axis] = slice(0, x.shape[axis] - 1)
            tail = list(first)
            tail[axis] = slice(1, None)
            np.cumsum(x[tuple(head)], axis=axis, dtype=out.dtype, out=out[tuple(tail)])
        else:
            np.cumsum(x, axis=axis, dtype=out.dtype, out=out)


class DepthToSpace(ShapeKernel):
    """DepthToSpace on NCHW: ``DCR`` (default) or ``CRD`` channel order."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        b = int(self.attr("blocksize", 0))
        mode = self.str_attr("mode", "DCR")
        if mode not in ("DCR", "CRD"):
            raise self.error(f"mode {mode!r} is not DCR or CRD")
        if len(x.shape) != 4:
            raise self.error(f"input must be 4-D NCHW, got shape {x.shape}", ShapeError)
        if b < 1:
            raise self.error(f"blocksize must be >= 1, got {b}")
        n, c, h, w = x.shape
        if c % (b * b):
            raise self.error(
                f"channels {c} are not divisible by blocksize^2 = {b * b} (input {x.shape})",
                ShapeError)
        self._b, self._mode = b, mode
        return [TensorInfo((n, c // (b * b), h * b, w * b), x.dtype)]

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        n, c, h, w = x.shape
        b, co = self._b, c // (self._b * self._b)
        if self._mode == "DCR":
            v = x.reshape(n, b, b, co, h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            v = x.reshape(n, co, b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        copy_reshaped(out, (n, co, h, b, w, b), v)


class SpaceToDepth(ShapeKernel):
    """SpaceToDepth on NCHW, the inverse of DepthToSpace: output channel
    ``(bh * b + bw) * C + c`` in ``DCR`` order (the default), ``c * b * b + bh * b + bw`` in
    ``CRD`` order (the ``mode`` attribute of newer opsets)."""

    traits = OpTraits(moves_bits=True)

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        b = int(self.attr("blocksize", 0))
        if len(x.shape) != 4:
            raise self.error(f"input must be 4-D NCHW, got shape {x.shape}", ShapeError)
        if b < 1:
            raise self.error(f"blocksize must be >= 1, got {b}")
        n, c, h, w = x.shape
        if h % b or w % b:
            raise self.error(
                f"height {h} and width {w} must be divisible by blocksize {b}", ShapeError)
        mode = self.str_attr("mode", "DCR")
        if mode not in ("DCR", "CRD"):
            raise self.error(f"mode {mode!r} is not DCR or CRD")
        self._b, self._mode = b, mode
        return [TensorInfo((n, c * b * b, h // b, w // b), x.dtype)]

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        n, c, h, w = x.shape
        b = self._b
        v = x.reshape(n, c, h // b, b, w // b, b)
        if self._mode == "DCR":
            copy_reshaped(out, (n, b, b, c, h // b, w // b), v.transpose(0, 3, 5, 1, 2, 4))
        else:
            copy_reshaped(out, (n, c, b, b, h // b, w // b), v.transpose(0, 1, 3, 5, 2, 4))


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("Expand", Expand),
        ("Tile", Tile),
        ("Pad", Pad),
        ("Trilu", Trilu),
        ("CumSum", CumSum),
        ("DepthToSpace", DepthToSpace),
        ("SpaceToDepth", SpaceToDepth),
    ):
        reg.add(op_type, kernel)
