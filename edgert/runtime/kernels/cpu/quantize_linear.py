"""ONNX's own quantization operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
QLinearMatMul and MatMulInteger.

(The int8 kernels edgert's quantizer emits live in :mod:`quantized`, domain ``edgert``; these
serve ONNX models that already carry QDQ / QLinear operators.)

Rounding is round-half-to-even, as ONNX specifies (``np.rint``), then saturation to the output
type's range. Integer outputs only: float8 / int4 targets are refused at prepare with a clear
error (edgert carries float8 as raw uint8 bits and would otherwise compute on the bits).
Scales and zero points are per tensor (scalars), per axis (1-D, length of ``axis``) or blocked
(``block_size`` > 0: same rank as the input, each entry covering ``block_size`` elements along
``axis``).
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, ShapeError
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.registry import KernelRegistry, TensorInfo

_INT_TYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32))
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _expand(kernel: EagerKernel, param: np.ndarray, x_shape: tuple[int, ...], axis: int,
            block: int) -> np.ndarray:
    """``param`` (scale or zero point) broadcast against an input of ``x_shape``."""
    rank = len(x_shape)
    if param.ndim == 0 or param.size == 1 and block == 0 and param.ndim <= 1:
        return param.reshape(())
    if block > 0:
        if param.ndim != rank:
            raise kernel.error(f"blocked scale must have rank {rank}, got shape {param.shape}",
                               ShapeError)
        rep = np.repeat(param, block, axis=axis)
        return np.take(rep, np.arange(x_shape[axis]), axis=axis)
    if param.ndim != 1 or param.shape[0] != x_shape[axis]:
        raise kernel.error(f"per-axis scale/zero point must have shape ({x_shape[axis]},), got "
                           f"{param.shape}", ShapeError)
    shape = [1] * rank
    shape[axis] = param.shape[0]
    return param.reshape(shape)


def _check_blocked(kernel: EagerKernel, s_shape, x_shape, axis: int, block: int) -> None:
    if block < 0:
        raise kernel.error(f"block_size must be >= 0, got {block}")
    if block > 0:
        want = list(x_shape)
        want[axis] = -(-x_shape[axis] // block)
        if list(s_shape) != want:
            raise kernel.error(f"blocked scale shape {tuple(s_shape)} should be {tuple(want)}",
                               ShapeError)


class _Linear(EagerKernel):
    def _param_axis(self, x_shape, s_shape) -> int:
        """The quantized axis; only checked when the scale is per axis or blocked."""
        axis = int(self.attr("axis", 1))
        if int(np.prod(s_shape)) == 1 and int(self.attr("block_size", 0)) == 0:
            return 0
        return self.normalize_axis(axis, len(x_shape))


class QuantizeLinear(_Linear):
    """QuantizeLinear: ``saturate(rint(x / scale) + zero_point)``."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, s = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 else None
        if np.dtype(x.dtype) not in _FLOATS and np.dtype(x.dtype) != np.int32:
            raise self.error(f"input has dtype {x.dtype}; expected float or int32", DTypeError)
        out_code = int(self.attr("output_dtype", 0))
        if zp is not None:
            out = np.dtype(zp.dtype)
        elif out_code:
            if not dtypes.is_known(out_code):
                raise self.unsupported_type(out_code)
            out = dtypes.to_numpy(out_code)
        else:
            out = np.dtype(np.uint8)
        if out_code in (dtypes.BFLOAT16,) or out_code >= dtypes.FLOAT8E4M3FN:
            raise self.unsupported_type(out_code)
        if out not in _INT_TYPES:
            raise self.error(f"output type {out} is not supported (integer outputs only; float8 "
                             "and int4 are not)", DTypeError)
        self._axis = self._param_axis(x.shape, s.shape)
        self._block = int(self.attr("block_size", 0))
        _check_blocked(self, s.shape, x.shape, self._axis, self._block)
        self._out = out
        return [TensorInfo(tuple(x.shape), out)]

    def unsupported_type(self, code: int):
        return self.error(f"output type {dtypes.name(code)} is not supported (integer outputs "
                          "only)", DTypeError)

    def compute(self, inputs):
        x, s = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        shape = x.shape
        scale = _expand(self, np.asarray(s), shape, self._axis, self._block)
        # divide in the inputs' own float precision: rounding x / scale in float64 instead moves
        # values that sit at a .5 tie in float32 by one step (test_dynamicquantizelinear_expanded)
        ft = np.promote_types(np.promote_types(x.dtype, scale.dtype), np.float32)
        q = np.rint(x.astype(ft) / scale.astype(ft))
        if zp is not None:
            q = q + _expand(self, np.asarray(zp), shape, self._axis, self._block)
        info = np.iinfo(self._out)
        return [np.clip(q, info.min, info.max).astype(self._out)]


class DequantizeLinear(_Linear):
    """DequantizeLinear: ``(x - zero_point) * scale`` in the scale's float type."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, s = inputs[0], inputs[1]
        if np.dtype(x.dtype) not in _INT_TYPES:
            raise self.error(f"input has dtype {x.dtype}; expected an 8/16/32-bit integer",
                             DTypeError)
        if np.dtype(s.dtype) not in _FLOATS:
            raise self.error(f"scale has dtype {s.dtype}; expected a float type", DTypeError)
        out_code = int(self.attr("output_dtype", 0))
        out = dtypes.to_numpy(out_code) if out_code and dtypes.is_known(out_code) \
            else np.dtype(s.dtype)
        if out not in _FLOATS:
            raise self.error(f"output_dtype {dtypes.name(out_code)} is not supported", DTypeError)
        self._axis = self._param_axis(x.shape, s.shape)
        self._block = int(self.attr("block_size", 0))
        _check_blocked(self, s.shape, x.shape, self._axis, self._block)
        self._out = out
        return [TensorInfo(tuple(x.shape), out)]

    def compute(self, inputs):
        x, s = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        xi = x.astype(np.int64)
        if zp is not None:
            xi = xi - _expand(self, np.asarray(zp), x.shape, self._axis, self._block).astype(
                np.int64)
        scale = _expand(self, np.asarray(s), x.shape, self._axis, self._block)
        return [(xi.astype(np.float32) * scale.astype(np.float32)).astype(self._out)]


class DynamicQuantizeLinear(EagerKernel):
    """DynamicQuantizeLinear: uint8 quantization with a scale / zero point taken from x's range."""

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if np.dtype(x.dtype) != np.float32:
            raise self.error(f"input must be float32, got {x.dtype}", DTypeError)
        f32, u8 = np.dtype(np.float32), np.dtype(np.uint8)
        return [TensorInfo(tuple(x.shape), u8), TensorInfo((), f32), TensorInfo((), u8)]

    def compute(self, inputs):
        x = inputs[0]
        lo = min(0.0, float(x.min())) if x.size else 0.0
        hi = max(0.0, float(x.max())) if x.size else 0.0
        scale = np.float32((hi - lo) / 255.0)
        if scale == 0:  # all zeros: any scale quantizes them to 0; keep the division defined
            zp = np.uint8(0)
            return [np.zeros(x.shape, np.uint8), np.array(scale), np.array(zp)]
        zp = np.uint8(np.clip(np.rint(0.0 - np.float32(lo) / scale), 0, 255))
        y = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
        return [y, np.array(scale, np.float32), np.array(zp, np.uint8)]


def _int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer matmul: int64 accumulation (int8/uint8 products cannot overflow it)."""
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def _row_param(p: np.ndarray | None, a_rank: int) -> np.ndarray | int:
    """A's zero point / scale: scalar, or one per row (shape [M] -> [M, 1])."""
    if p is None:
        return 0
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    return p.reshape(p.shape + (1,)) if a_rank >= 2 else p


class MatMulInteger(EagerKernel):
    """MatMulInteger: ``(A - a_zero_point) @ (B - b_zero_point)`` accumulated in int32."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 4)
        a, b = inputs[0], inputs[1]
        for info, what in ((a, "A"), (b, "B")):
            if np.dtype(info.dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
                raise self.error(f"{what} must be int8 or uint8, got {info.dtype}", DTypeError)
        try:
            shape = np.matmul(np.zeros(a.shape, np.int8), np.zeros(b.shape, np.int8)).shape
        except ValueError:
            raise self.error(f"shapes {a.shape} and {b.shape} cannot be multiplied",
                             ShapeError) from None
        return [TensorInfo(tuple(shape), np.dtype(np.int32))]

    def compute(self, inputs):
        a, b = inputs[0], inputs[1]
        azp = inputs[2] if len(inputs) > 2 else None
        bzp = inputs[3] if len(inputs) > 3 else None
        aa = a.astype(np.int64) - _row_param(azp, a.ndim)
        bb = b.astype(np.int64) - (0 if bzp is None else np.asarray(bzp).astype(np.int64))
        return [_int_matmul(aa, bb).astype(np.int32)]


class QLinearMatMul(EagerKernel):
    """QLinearMatMul: integer matmul, requantized with ``a_scale * b_scale / y_scale``."""

    def check(self, inputs):
        self.require_inputs(inputs, 8, 8)
        a, b, yzp = inputs[0], inputs[3], inputs[7]
        for info, what in ((a, "a"), (b, "b"), (yzp, "y_zero_point")):
            if np.dtype(info.dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
                raise self.error(f"{what} must be int8 or uint8, got {info.dtype}", DTypeError)
        try:
            shape = np.matmul(np.zeros(a.shape, np.int8), np.zeros(b.shape, np.int8)).shape
        except ValueError:
            raise self.error(f"shapes {a.shape} and {b.shape} cannot be multiplied",
                             ShapeError) from None
        return [TensorInfo(tuple(shape), np.dtype(yzp.dtype))]

    def compute(self, inputs):
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = inputs
        acc = _int_matmul(a.astype(np.int64) - _row_param(a_zp, a.ndim),
                          b.astype(np.int64) - np.asarray(b_zp).astype(np.int64))
        # requantize in float64 (the ONNX reference's float path, without its float32 rounding
        # of the intermediate, which can only move a result by one step at a .5 tie)
        scale = (np.asarray(_row_param(a_s, a.ndim), np.float64)
                 * np.asarray(b_s, np.float64) / np.asarray(y_s, np.float64))
        y = np.rint(acc * scale) + np.asarray(y_zp).astype(np.int64)
        info = np.iinfo(y_zp.dtype)
        return [np.clip(y, info.min, info.max).astype(y_zp.dtype)]


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("QuantizeLinear", QuantizeLinear),
        ("DequantizeLinear", DequantizeLinear),
        ("DynamicQuantizeLinear", DynamicQuantizeLinear),
        ("MatMulInteger", MatMulInteger),
        ("QLinearMatMul", QLinearMatMul),
    ):
        reg.add(op_type, kernel)
