"""ONNX's own quantization operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
QLinearMatMul, MatMulInteger and ConvInteger.

(The int8 kernels edgert's quantizer emits live in :mod:`quantized`, domain ``edgert``; these
serve ONNX models that already carry QDQ / QLinear operators.)

Rounding is round-half-to-even, as ONNX specifies (``np.rint``), then saturation to the output
type's range. Outputs: the 8/16-bit integers, int4/uint4/int2/uint2 (held unpacked in int8/uint8,
saturated to their own range) and the float8 / float4e2m1 types (raw codes in uint8, encoded by
:mod:`float8`). A uint8/int8 tensor cannot say whether it is really one of those narrow types: the
importer tells the kernel in ``edgert_to_type`` (Q) / ``edgert_from_type`` (DQ), and the converter
refuses a Q/DQ on such a type without that tag.
Scales and zero points are per tensor (scalars), per axis (1-D, length of ``axis``) or blocked
(``block_size`` > 0: same rank as the input, each entry covering ``block_size`` elements along
``axis``).
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, ShapeError
from edgert.runtime.kernels.cpu import float8
from edgert.runtime.kernels.cpu.blas import matmul
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.ops.activation import parse_activation
from edgert.runtime.registry import KernelRegistry, OpTraits, TensorInfo

_INT_TYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32))
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# Output types of QuantizeLinear (input types of DequantizeLinear, with int32).
_Q_TYPES = frozenset({
    dtypes.UINT8, dtypes.INT8, dtypes.UINT16, dtypes.INT16, *dtypes.SUBBYTE_INTS,
    dtypes.FLOAT8E4M3FN, dtypes.FLOAT8E4M3FNUZ, dtypes.FLOAT8E5M2, dtypes.FLOAT8E5M2FNUZ,
    dtypes.FLOAT4E2M1, dtypes.INT32,
})


def _int_range(code: int) -> tuple[int, int]:
    """Saturation range of an integer quantized type (its own range for int4/uint4/int2/uint2)."""
    narrow = dtypes.value_range(code)
    if narrow is not None:
        return narrow
    info = np.iinfo(dtypes.to_numpy(code))
    return int(info.min), int(info.max)


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

    traits = OpTraits(tags_narrow_types=True, type_attr="edgert_to_type")

    def check(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, s = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 else None
        if np.dtype(x.dtype) not in _FLOATS and np.dtype(x.dtype) != np.int32:
            raise self.error(f"input has dtype {x.dtype}; expected float or int32", DTypeError)
        out_code = int(self.attr("edgert_to_type", 0)) or int(self.attr("output_dtype", 0))
        if zp is not None and not self.attr("edgert_to_type", 0):
            out = np.dtype(zp.dtype)
            out_code = dtypes.from_numpy(out)
        elif out_code:
            if out_code not in _Q_TYPES:
                raise self.unsupported_type(out_code)
            out = dtypes.to_numpy(out_code)
        else:
            out = np.dtype(np.uint8)
            out_code = dtypes.UINT8
        if zp is not None and np.dtype(zp.dtype) != out:
            raise self.error(f"zero point has dtype {zp.dtype}; output type "
                             f"{dtypes.name(out_code)} needs {out}", DTypeError)
        if out_code not in _Q_TYPES:
            raise self.unsupported_type(out_code)
        self._code = out_code
        self._axis = self._param_axis(x.shape, s.shape)
        self._block = int(self.attr("block_size", 0))
        _check_blocked(self, s.shape, x.shape, self._axis, self._block)
        self._out = out
        return [TensorInfo(tuple(x.shape), out)]

    def unsupported_type(self, code: int):
        return self.error(f"output type {dtypes.name(code)} is not supported (8/16-bit and "
                          "4/2-bit integers, float8 and float4e2m1 are)", DTypeError)

    def compute(self, inputs):
        x, s = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        shape = x.shape
        scale = _expand(self, np.asarray(s), shape, self._axis, self._block)
        # divide in the inputs' own float precision: rounding x / scale in float64 instead moves
        # values that sit at a .5 tie in float32 by one step (test_dynamicquantizelinear_expanded)
        ft = np.promote_types(np.promote_types(x.dtype, scale.dtype), np.float32)
        q = x.astype(ft) / scale.astype(ft)
        if self._code in float8.BITS_TYPES:  # float targets: encode (RNE) the scaled value
            if zp is not None:
                zpf = float8.decode(np.asarray(zp), self._code)
                q = q + _expand(self, zpf, shape, self._axis, self._block)
            saturate = bool(self.attr("saturate", 1))
            return [float8.encode(q, self._code, saturate).reshape(shape)]
        q = np.rint(q)
        if zp is not None:
            q = q + _expand(self, np.asarray(zp), shape, self._axis, self._block)
        lo, hi = _int_range(self._code)
        return [np.clip(q, lo, hi).astype(self._out)]


class DequantizeLinear(_Linear):
    """DequantizeLinear: ``(x - zero_point) * scale`` in the scale's float type.

    ``foldable``: the DequantizeLinear of a constant weight (QDQ models, QLinearConv,
    MatMulNBits), which the optimizer leaves in the file at its narrow type, runs once when the
    model is loaded (up to the interpreter's ``FOLD_LIMIT`` elements), not at every run.
    """

    foldable = True
    traits = OpTraits(tags_narrow_types=True, type_attr="edgert_from_type")

    def check(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, s = inputs[0], inputs[1]
        self._code = int(self.attr("edgert_from_type", 0))
        if self._code and self._code not in _Q_TYPES:
            raise self.error(f"input type {dtypes.name(self._code)} is not supported",
                             DTypeError)
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
        if self._code in float8.BITS_TYPES:  # float codes: decode, then (x - zp) * scale
            xf = float8.decode(x, self._code)
            if zp is not None:
                zpf = float8.decode(np.asarray(zp), self._code)
                xf = xf - _expand(self, zpf, x.shape, self._axis, self._block)
            scale = _expand(self, np.asarray(s), x.shape, self._axis, self._block)
            return [(xf * scale.astype(np.float32)).astype(self._out)]
        xi = x.astype(np.int64)
        if zp is not None:
            xi = xi - _expand(self, np.asarray(zp), x.shape, self._axis, self._block).astype(
                np.int64)
        scale = _expand(self, np.asarray(s), x.shape, self._axis, self._block)
        return [(xi.astype(np.float32) * scale.astype(np.float32)).astype(self._out)]


class DynamicQuantizeLinear(EagerKernel):
    """DynamicQuantizeLinear: uint8 quantization with a scale / zero point taken from x's range.

    As the ONNX reference and onnxruntime compute it, in float32 throughout:
    ``scale = (max(0, max(x)) - min(0, min(x))) / 255`` (the subtraction and the division each
    rounded to float32; a float64 quotient rounded once differs by one ulp on about a quarter of
    zero-centred random inputs), ``zero_point = rint(clip(0 - min / scale, 0, 255))`` and
    ``y = clip(rint(x / scale) + zero_point, 0, 255)``. When the range is empty (x all zeros,
    or no elements) the scale is 1, as onnxruntime gives (the ONNX reference gives 1/255; the
    quantized values are 0 either way).
    """

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if np.dtype(x.dtype) != np.float32:
            raise self.error(f"input must be float32, got {x.dtype}", DTypeError)
        f32, u8 = np.dtype(np.float32), np.dtype(np.uint8)
        return [TensorInfo(tuple(x.shape), u8), TensorInfo((), f32), TensorInfo((), u8)]

    def invoke(self, inputs, outputs):
        x = inputs[0]
        if outputs[0] is None or x.size < 4096:  # (small or dynamic: NumPy)
            return super().invoke(inputs, outputs)
        from edgert.runtime.kernels.cpu.qmatmul import quantize_u8

        f32 = np.float32
        xf = np.ascontiguousarray(x).reshape(-1)
        lo, hi = f32(xf.min()), f32(xf.max())  # (NumPy's vectorized passes; NaN propagates)
        if lo != lo or hi != hi:
            return super().invoke(inputs, outputs)
        lo, hi = min(f32(0), lo), max(f32(0), hi)
        if hi == lo:
            return super().invoke(inputs, outputs)
        scale = f32(f32(hi - lo) / f32(255))
        zp = np.uint8(np.rint(np.clip(f32(0) - lo / scale, f32(0), f32(255))))
        quantize_u8(xf, scale, f32(zp), outputs[0].reshape(-1))
        outputs[1][...] = scale
        outputs[2][...] = zp
        return None

    def compute(self, inputs):
        x = inputs[0]
        f32 = np.float32
        lo = min(f32(0), f32(x.min())) if x.size else f32(0)
        hi = max(f32(0), f32(x.max())) if x.size else f32(0)
        if hi == lo:  # no range: onnxruntime's scale 1 (every value quantizes to 0)
            return [np.zeros(x.shape, np.uint8), np.array(1.0, np.float32),
                    np.array(0, np.uint8)]
        scale = f32(hi - lo) / f32(255)
        zp = np.uint8(np.rint(np.clip(f32(0) - lo / scale, f32(0), f32(255))))
        y = np.clip(np.rint(x / scale) + f32(zp), 0, 255).astype(np.uint8)
        return [y, np.array(scale, np.float32), np.array(zp, np.uint8)]


# float64 sums integers exactly up to 2^53; a product of two zero-point-shifted 8-bit values is
# below 2^16 in magnitude, so an inner dimension below 2^37 keeps every partial sum exact.
_EXACT_F64_K = 1 << 37


def _int_matmul(a: np.ndarray, b: np.ndarray, threads: int = 1) -> np.ndarray:
    """Exact integer matmul of zero-point-shifted 8-bit operands (int64 result).

    Through float64 BLAS (split over ``threads``): NumPy's integer matmul has no BLAS and ran
    a quantize_dynamic'd sentence transformer 108x slower than onnxruntime; in float64 every
    partial sum is an exact integer (see ``_EXACT_F64_K``), whatever order BLAS adds them in.
    """
    if a.shape[-1] >= _EXACT_F64_K:  # not a shape a model holds; kept exact anyway
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    af, bf = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    if af.ndim >= 2 and bf.ndim >= 2:
        batch = np.broadcast_shapes(af.shape[:-2], bf.shape[:-2])
        out = np.empty(batch + (af.shape[-2], bf.shape[-1]), np.float64)
        matmul(np.ascontiguousarray(af), np.ascontiguousarray(bf), out, threads=threads)
    else:
        out = np.matmul(af, bf)
    return out.astype(np.int64)


def _row_param(p: np.ndarray | None, a_rank: int) -> np.ndarray | int:
    """A's zero point / scale: scalar, or one per row (shape [M] -> [M, 1])."""
    if p is None:
        return 0
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    return p.reshape(p.shape + (1,)) if a_rank >= 2 else p


def _int8_matmul_shape(kernel: EagerKernel, a: tuple, b: tuple, *more: tuple) -> tuple[int, ...]:
    """Check that the (info, name) operands are int8/uint8; the matmul shape of ``a`` and ``b``."""
    for info, what in (a, b, *more):
        if np.dtype(info.dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
            raise kernel.error(f"{what} must be int8 or uint8, got {info.dtype}", DTypeError)
    try:
        return tuple(np.matmul(np.zeros(a[0].shape, np.int8), np.zeros(b[0].shape, np.int8)).shape)
    except ValueError:
        raise kernel.error(f"shapes {a[0].shape} and {b[0].shape} cannot be multiplied",
                           ShapeError) from None


def _packed_b(kernel, a: TensorInfo, b: TensorInfo, azp: TensorInfo | None,
              bzp: TensorInfo | None):
    """``(PackedB, rows of A, A's packing buffer, two int32 [rows], a zero zero point)`` when
    the byte-dot-product GEMM (:mod:`.qmatmul`) can run the product: a constant 2-D B with a
    constant zero point (one, or one per column), A's zero point of A's type, one value (or one
    per row of a 2-D A). None otherwise."""
    if b.value is None or len(b.shape) != 2 or (bzp is not None and bzp.value is None):
        return None
    n = b.shape[1]
    bz = None if bzp is None else np.asarray(bzp.value)
    m = int(np.prod(a.shape[:-1], dtype=np.int64))
    if bz is not None and bz.size not in (1, n):
        return None
    if azp is not None and (np.dtype(azp.dtype) != np.dtype(a.dtype) or not (
            int(np.prod(azp.shape, dtype=np.int64)) == 1
            or (len(a.shape) == 2 and tuple(azp.shape) == (m,)))):
        return None
    from edgert.runtime.kernels.cpu.qmatmul import PackedB

    bz_value = None if bzp is None else bzp.value
    cached = getattr(kernel, "_packed", None)  # weights outlive re-plans: packed once
    if cached is None or cached[0] is not b.value or cached[1] is not bz_value:
        kernel._packed = (b.value, bz_value, PackedB(np.asarray(b.value), bz))
    packed = kernel._packed[2]
    return (packed, m, packed.a_buffer(m), np.empty(m, np.int32), np.empty(m, np.int32),
            np.zeros(1, np.dtype(a.dtype)))


def _run_packed(fast, a: np.ndarray, azp: np.ndarray | None, out: np.ndarray | None,
                out_dtype, scale=None, bias=None, act=(0, 0.0, 0.0)) -> list[np.ndarray] | None:
    """Run the product prepared by :func:`_packed_b` into ``out`` (allocated when None, and
    then returned)."""
    packed, m, apack, rowsum, rowzp, no_zp = fast
    zp = no_zp if azp is None else np.ascontiguousarray(azp).reshape(-1)
    fresh = out is None
    if fresh:
        out = np.empty(tuple(a.shape[:-1]) + (packed.n,), out_dtype)
    packed.matmul(np.ascontiguousarray(a).reshape(m, packed.k), zp, out.reshape(m, packed.n),
                  apack, rowsum, rowzp, scale, bias, *act)
    return [out] if fresh else None


class MatMulInteger(EagerKernel):
    """MatMulInteger: ``(A - a_zero_point) @ (B - b_zero_point)`` accumulated in int32.

    A constant 2-D B (the weights of a quantize_dynamic'd model) with a constant zero point runs
    on the byte-dot-product GEMM (:mod:`.qmatmul`), packed once; A's zero point may be a run-time
    value (DynamicQuantizeLinear's). Other forms (batched or variable B) multiply in float64 BLAS,
    exactly.
    """

    def check(self, inputs):
        self.require_inputs(inputs, 2, 4)
        shape = _int8_matmul_shape(self, (inputs[0], "A"), (inputs[1], "B"))
        b = inputs[1]
        azp = inputs[2] if len(inputs) > 2 else None
        bzp = inputs[3] if len(inputs) > 3 else None
        self._b = None
        self._fast = _packed_b(self, inputs[0], b, azp, bzp)
        if self._fast is None and b.value is not None and (bzp is None or bzp.value is not None):
            # A constant B shifted once, in float64.
            self._b = self._shifted_b(b.value, None if bzp is None else bzp.value)
        return [TensorInfo(shape, np.dtype(np.int32))]

    @staticmethod
    def _shifted_b(b: np.ndarray, bzp: np.ndarray | None) -> np.ndarray:
        shift = 0 if bzp is None else np.asarray(bzp).astype(np.float64)
        return np.ascontiguousarray(np.asarray(b).astype(np.float64) - shift)  # exact

    def invoke(self, inputs, outputs):
        if self._fast is None:
            return super().invoke(inputs, outputs)
        return _run_packed(self._fast, inputs[0], inputs[2] if len(inputs) > 2 else None,
                           outputs[0], np.int32)

    def compute(self, inputs):
        a = inputs[0]
        azp = inputs[2] if len(inputs) > 2 else None
        bb = self._b
        if bb is None:
            bb = self._shifted_b(inputs[1], inputs[3] if len(inputs) > 3 else None)
        aa = a.astype(np.float64) - _row_param(azp, a.ndim)  # exact: 8-bit values
        return [_int_matmul(aa, bb, self.op.num_threads).astype(np.int32)]


class MatMulIntegerToFloat(MatMulInteger):
    """``edgert.MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zero_point?, b_zero_point?,
    bias?)``: ``float32((A - za) @ (B - zb)) * (a_scale * b_scale) (+ bias)``, each step rounded
    as MatMulInteger -> Cast -> Mul -> Add round it (the optimizer's fusion of that chain, see
    :mod:`edgert.optimizer.quantized`). ``B`` constant 2-D; ``a_scale`` one float32 value;
    ``b_scale`` and ``bias`` float32 constants of one value (scale) or one per column."""

    def check(self, inputs):
        self.require_inputs(inputs, 4, 7)
        a, b, a_s, b_s = inputs[:4]
        azp = inputs[4] if len(inputs) > 4 else None
        bzp = inputs[5] if len(inputs) > 5 else None
        bias = inputs[6] if len(inputs) > 6 else None
        shape = _int8_matmul_shape(self, (a, "A"), (b, "B"))
        f32 = np.dtype(np.float32)
        if np.dtype(a_s.dtype) != f32 or int(np.prod(a_s.shape, dtype=np.int64)) != 1:
            raise self.error(f"a_scale must be one float32 value, got {a_s.dtype} "
                             f"{tuple(a_s.shape)}", DTypeError)
        self._fast = _packed_b(self, a, b, azp, bzp)
        if self._fast is None:
            raise self.error("B and its zero point must be constant and 2-D (one zero point "
                             "or one per column); A's zero point of A's type, one value")
        n = b.shape[1]
        ok_s = b_s.value is not None and np.dtype(b_s.dtype) == f32 and b_s.value.size in (1, n)
        ok_b = bias is None or (bias.value is not None and np.dtype(bias.dtype) == f32
                                and bias.value.size == n)
        if not (ok_s and ok_b):
            raise self.error(f"b_scale and bias must be float32 constants of 1 (scale) or {n} "
                             "values")
        self._b_scale = np.ascontiguousarray(b_s.value, f32).reshape(-1)
        self._scale = np.empty(n, f32)
        self._bias = None if bias is None else np.ascontiguousarray(bias.value, f32).reshape(-1)
        act = parse_activation(self.where(), self.attrs)  # (a fused activation, if any)
        self._act = (act.code, act.p0, act.p1)
        return [TensorInfo(shape, f32)]

    def invoke(self, inputs, outputs):
        a_scale = np.asarray(inputs[2]).reshape(())
        np.multiply(a_scale, self._b_scale, out=self._scale)  # Mul(a_scale, b_scale), float32
        return _run_packed(self._fast, inputs[0], inputs[4] if len(inputs) > 4 else None,
                           outputs[0], np.float32, self._scale, self._bias, self._act)


class QLinearMatMul(EagerKernel):
    """QLinearMatMul: integer matmul, requantized with ``a_scale * b_scale / y_scale``."""

    def check(self, inputs):
        self.require_inputs(inputs, 8, 8)
        yzp = inputs[7]
        shape = _int8_matmul_shape(self, (inputs[0], "a"), (inputs[3], "b"), (yzp, "y_zero_point"))
        return [TensorInfo(shape, np.dtype(yzp.dtype))]

    def compute(self, inputs):
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = inputs
        acc = _int_matmul(a.astype(np.float64) - _row_param(a_zp, a.ndim),
                          b.astype(np.float64) - np.asarray(b_zp).astype(np.float64),
                          self.op.num_threads)
        # requantize in float64 (the ONNX reference's float path, without its float32 rounding
        # of the intermediate, which can only move a result by one step at a .5 tie)
        scale = (np.asarray(_row_param(a_s, a.ndim), np.float64)
                 * np.asarray(b_s, np.float64) / np.asarray(y_s, np.float64))
        y = np.rint(acc * scale) + np.asarray(y_zp).astype(np.int64)
        info = np.iinfo(y_zp.dtype)
        return [np.clip(y, info.min, info.max).astype(y_zp.dtype)]


class ConvInteger(EagerKernel):
    """ConvInteger: ``conv(x - x_zero_point, w - w_zero_point)`` in int32 (1-D, 2-D, 3-D).

    ``w_zero_point`` is a scalar or one value per output channel. The columns are built with
    NumPy's sliding windows and multiplied in float64 BLAS: every product of two shifted 8-bit
    values is below 2^16 and a float64 sums integers exactly up to 2^53, so the result is the
    exact integer convolution for any kernel size a model can hold.
    """

    def check(self, inputs):
        from edgert.runtime.ops.window import kernel_shape_attr, sliding_window

        self.require_inputs(inputs, 2, 4)
        x, w = inputs[0], inputs[1]
        for info, what in ((x, "x"), (w, "w")):
            if np.dtype(info.dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
                raise self.error(f"{what} must be int8 or uint8, got {info.dtype}", DTypeError)
        if len(x.shape) < 3 or len(w.shape) != len(x.shape):
            raise self.error(f"x {x.shape} and w {w.shape} must both be [N, C, spatial...]",
                             ShapeError)
        group = int(self.attr("group", 1))
        if group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
            raise self.error(f"channels do not fit: x {x.shape}, w {w.shape}, group {group}",
                             ShapeError)
        xzp = inputs[2] if len(inputs) > 2 else None
        wzp = inputs[3] if len(inputs) > 3 else None
        if xzp is not None and (np.dtype(xzp.dtype) != np.dtype(x.dtype) or
                                int(np.prod(xzp.shape)) != 1):
            raise self.error(f"x_zero_point must be one {x.dtype} value, got {xzp.dtype} "
                             f"{xzp.shape}", ShapeError)
        if wzp is not None and (np.dtype(wzp.dtype) != np.dtype(w.dtype) or
                                int(np.prod(wzp.shape)) not in (1, w.shape[0]) or
                                len(wzp.shape) > 1):
            raise self.error(f"w_zero_point must be one {w.dtype} value or {w.shape[0]}, got "
                             f"{wzp.dtype} {wzp.shape}", ShapeError)
        kernel_shape_attr(self, tuple(w.shape[2:]))
        self._win = sliding_window(self, tuple(x.shape[2:]), tuple(w.shape[2:]))
        self._group = group
        self._fast = None
        if group == 1 and w.value is not None and (wzp is None or wzp.value is not None):
            # constant filters: the byte-dot-product GEMM on im2col rows (qmatmul.py), the
            # filters packed once as B = W^T [C*k, M] with their zero points per column
            m = w.shape[0]
            wt = np.ascontiguousarray(np.asarray(w.value).reshape(m, -1).T)
            cached = getattr(self, "_packed_w", None)  # (weights outlive re-plans)
            bz = None if wzp is None else np.asarray(wzp.value)
            if cached is None or cached[0] is not w.value or cached[1] is not bz:
                from edgert.runtime.kernels.cpu.qmatmul import PackedB

                self._packed_w = (w.value, bz, PackedB(wt, bz))
            packed = self._packed_w[2]
            p = int(np.prod(self._win.out_shape, dtype=np.int64))
            # (3-D convs go through im2col rows and an int32 result of their own)
            rows3d = (np.empty((p, m), np.int32), np.empty((p, packed.k), np.dtype(x.dtype))) \
                if len(x.shape) == 5 else (None, None)
            self._fast = (packed, p, packed.a_buffer(p), np.empty(p, np.int32),
                          np.empty(p, np.int32), *rows3d)
        return [TensorInfo((x.shape[0], w.shape[0], *self._win.out_shape), np.dtype(np.int32))]

    def invoke(self, inputs, outputs):
        if self._fast is None or outputs[0] is None:
            return super().invoke(inputs, outputs)
        packed, p, apack, rowsum, rowzp, acc, rows = self._fast
        x = inputs[0]
        xzp = inputs[2] if len(inputs) > 2 and inputs[2] is not None else \
            np.zeros(1, x.dtype)
        xzp = np.ascontiguousarray(xzp).reshape(-1)
        win = self._win
        nsp = x.ndim - 2
        if nsp <= 2:  # the windows packed straight from the image (no im2col matrix)
            k2 = (1,) * (2 - nsp)
            kh, kw = k2 + tuple(win.kernel)
            sh, sw = k2 + tuple(win.strides)
            dh, dw = k2 + tuple(win.dilations)
            ph, pw = (0,) * (2 - nsp) + tuple(win.pads_begin)
            oh, ow = k2 + tuple(win.out_shape)
            xs = np.ascontiguousarray(x)
            xs = xs.reshape(xs.shape[:2] + (1,) * (2 - nsp) + xs.shape[2:])
            y = outputs[0].reshape(x.shape[0], packed.n, p)
            for i in range(x.shape[0]):
                packed.conv(xs[i], int(xzp[0]), (kh, kw, sh, sw, dh, dw, ph, pw, oh, ow), y[i],
                            apack, rowsum, rowzp)
            return None
        # padding with the zero point: the shifted value there is 0, as the spec's padding
        xp = np.pad(x, [(0, 0), (0, 0)] + [(b, e) for b, e in zip(win.pads_begin, win.pads_end)],
                    constant_values=xzp[0])
        ext = [(k - 1) * d + 1 for k, d in zip(win.kernel, win.dilations)]
        view = np.lib.stride_tricks.sliding_window_view(xp, ext, axis=tuple(range(2, 2 + nsp)))
        sel = tuple(slice(0, (o - 1) * st + 1, st) for o, st in zip(win.out_shape, win.strides))
        sel += tuple(slice(None, None, d) for d in win.dilations)
        y = outputs[0].reshape(x.shape[0], packed.n, p)
        for i in range(x.shape[0]):
            cols = view[(i, slice(None)) + sel]  # [C, out..., k...]
            # rows of the GEMM: one per output position, (C, k...) as W is flattened (one
            # strided copy; reshaping the window view first would copy it twice)
            np.copyto(rows.reshape(tuple(win.out_shape) + (cols.shape[0],)
                                   + cols.shape[1 + nsp:]), np.moveaxis(cols, 0, nsp))
            packed.matmul(rows, xzp, acc, apack, rowsum, rowzp)
            np.copyto(y[i], acc.T)
        return None

    def compute(self, inputs):
        x, w = inputs[0], inputs[1]
        xzp = inputs[2] if len(inputs) > 2 else None
        wzp = inputs[3] if len(inputs) > 3 else None
        win, g = self._win, self._group
        nsp = x.ndim - 2
        xs = x.astype(np.float64) - (0.0 if xzp is None else float(np.asarray(xzp).reshape(-1)[0]))
        ws = w.astype(np.float64)
        if wzp is not None:
            ws = ws - np.asarray(wzp, np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
        # zero padding of the shifted input = padding the raw input with its zero point
        xs = np.pad(xs, [(0, 0), (0, 0)] + [(b, e) for b, e in zip(win.pads_begin, win.pads_end)])
        ext = [(k - 1) * d + 1 for k, d in zip(win.kernel, win.dilations)]
        view = np.lib.stride_tricks.sliding_window_view(xs, ext, axis=tuple(range(2, 2 + nsp)))
        sel = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(win.out_shape, win.strides))
        sel += tuple(slice(None, None, d) for d in win.dilations)
        cols = view[(slice(None), slice(None)) + sel]  # [N, C, out..., k...]
        n, c = x.shape[:2]
        m = w.shape[0]
        p = int(np.prod(win.out_shape))
        kk = int(np.prod(win.kernel))
        cols = np.moveaxis(cols.reshape(n, c, p, kk), 2, 3).reshape(n, g, (c // g) * kk, p)
        y = np.matmul(ws.reshape(g, m // g, (c // g) * kk)[None], cols)
        return [np.rint(y).reshape(n, m, *win.out_shape).astype(np.int32)]


def register(reg: KernelRegistry) -> None:
    reg.add("ConvInteger", ConvInteger, since=10)
    for op_type, kernel in (
        ("QuantizeLinear", QuantizeLinear),
        ("DequantizeLinear", DequantizeLinear),
        ("DynamicQuantizeLinear", DynamicQuantizeLinear),
        ("MatMulInteger", MatMulInteger),
        ("QLinearMatMul", QLinearMatMul),
    ):
        reg.add(op_type, kernel)
    reg.add("MatMulIntegerToFloat", MatMulIntegerToFloat, domain="edgert")
