"""CPU kernels: int8 quantized operators (domain ``edgert``), following the TFLite int8 scheme.

Quantization: ``real = scale * (q - zero_point)``. Activations are int8 per tensor (asymmetric),
weights int8 per output channel with zero point 0, biases int32 with scale
``x_scale * w_scale[c]``. The quantization parameters live on the tensors in the file
(``TensorDef.quant``) and, because the kernel contract hands ``prepare`` only shapes, dtypes and
constant values, are repeated as node attributes that the kernels read:

==================  ===========================================================================
op (edgert.)        inputs → output; attributes
==================  ===========================================================================
Quantize            float x → int8; ``scale``, ``zero_point``
Dequantize          int8 (or int32) x → float32; ``scale`` (list), ``zero_point`` (list),
                    ``axis`` (per-channel when the lists have more than one entry)
QConv               int8 x, int8 w, [int32 b] → int8; Conv attributes + ``x_scale``,
                    ``x_zero_point``, ``w_scale`` (list, per output channel), ``y_scale``,
                    ``y_zero_point``, ``act_min``/``act_max`` (int8 clamp: a fused Relu/Clip)
QConvTranspose      int8 x, int8 w (C, M/group, k...), [int32 b] → int8; ConvTranspose
                    attributes + the QConv quantization attributes
QGemm               int8 x [..., K], int8 w [N, K], [int32 b] → int8 [..., N]; same attributes
QAdd, QMul          int8 a, int8 b (broadcasting) → int8; ``a_scale``, ``a_zero_point``,
                    ``b_scale``, ``b_zero_point``, ``y_scale``, ``y_zero_point``, act_min/max
QConcat             int8 inputs → int8; ``axis``, ``scales``/``zero_points`` (one per input),
                    ``y_scale``, ``y_zero_point``
QMaxPool,           int8 → int8 with the input's parameters; pooling attributes
QAveragePool
QGlobalAveragePool  int8 → int8 with the input's parameters
QLut                int8 → int8 through ``table`` (256 ints, indexed by ``q + 128``): Sigmoid,
                    Tanh, HardSigmoid, HardSwish, Relu, Clip, LeakyRelu...
QSoftmax            int8 → int8; ``axis``, ``x_scale``, ``x_zero_point``, ``y_scale``,
                    ``y_zero_point``
==================  ===========================================================================

Requantization (the int32 accumulator to the int8 output) uses a fixed-point multiplier computed
in ``prepare`` (TFLite's ``QuantizeMultiplier``): ``real = M * 2**(e - 31)`` with
``M`` in ``[2**30, 2**31)``, applied as ``(acc * M + 2**(s - 1)) >> s`` with ``s = 31 - e``
in int64 — a single rounding, ties toward +inf. ``acc * M`` stays below ``2**62`` because
``|acc| < 2**31`` and ``M < 2**31``, so the int64 product cannot overflow. The tests check every
kernel bit-exact against a NumPy golden of the same integer arithmetic.

Int8 data movement (Reshape, Transpose, Flatten, Slice, Squeeze, Unsqueeze, Pad, Concat with
equal parameters...) runs on the ordinary dtype-generic kernels.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu import qdconv
from edgert.runtime.kernels.cpu._native.geometry import tap_ranges
from edgert.runtime.kernels.cpu.conv.im2col import _im2col
from edgert.runtime.kernels.cpu.conv.transpose import ConvTransposeKernel
from edgert.runtime.kernels.cpu.dconv import SUB
from edgert.runtime.kernels.cpu.pooling import _max_pool_rows
from edgert.runtime.kernels.cpu.qgemm import (
    Plan,
    conv_taps,
    fits_int32,
    pack_conv,
    pack_conv_weights,
    pack_padded,
    pack_pointwise,
    pack_weights,
    qadd,
    qgemm,
)
from edgert.runtime.ops.window import as3d, kernel_shape_attr, packed, sliding_window
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo, broadcast_shapes

INT8 = np.dtype(np.int8)
SHORT_DOT = 64  # below this many taps per output, QConv uses the axpy-form GEMM (_qgemm_kp)
# Group-1 2-D int8 convs other than 1x1 stride 1, with at least this many output channels, take
# the direct kernel of qdconv.py (output channels in the lanes). Same-process A/B, one thread:
# SqueezeNet int8 0.92x, GoogLeNet 0.90x, ResNet-50 0.92x the implicit-GEMM path's time; 1x1
# layers stay on qgemm.py's GEMM (1.06x slower through this kernel).
QDCONV_MIN_M = 16
# Below this many multiply-adds the direct kernel runs on one thread.
SPLIT_MIN_MACS_INT8 = 1 << 20
INT32 = np.dtype(np.int32)
FLOAT32 = np.dtype(np.float32)


# ----- fixed-point multipliers --------------------------------------------------------------------
def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real ≈ M * 2**(e - 31)`` with ``M`` in ``[2**30, 2**31)``; returns ``(M, 31 - e)``.

    The second value is the right shift applied after the multiply; it is kept in ``[1, 62]`` so
    that the rounding term and the product fit int64. A multiplier below ``2**-31`` is 0.
    """
    if not math.isfinite(real) or real < 0:
        raise KernelError(f"requantization multiplier {real!r} must be finite and >= 0")
    if real == 0.0:
        return 0, 1
    q, e = math.frexp(real)  # real = q * 2**e, q in [0.5, 1)
    m = int(round(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        e += 1
    shift = 31 - e
    if shift > 62:  # far below one int8 step: the result is 0 (or the rounding of it)
        return 0, 1
    if shift < 1:
        raise KernelError(f"requantization multiplier {real!r} is too large (>= 2**30)")
    return m, shift


def multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(M, shift)`` int64 arrays for :func:`quantize_multiplier`."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


@njit
def _requant(acc, m, s):
    return (acc * m + (np.int64(1) << (s - 1))) >> s


def _attr_float(kernel: Kernel, name: str) -> float:
    v = kernel.attr(name)
    if v is None:
        raise kernel.error(f"attribute '{name}' is required")
    v = float(v)
    if not math.isfinite(v):
        raise kernel.error(f"attribute '{name}' = {v} must be finite")
    return v


def _scale_attr(kernel: Kernel, name: str) -> float:
    v = _attr_float(kernel, name)
    if v <= 0:
        raise kernel.error(f"attribute '{name}' = {v}: a quantization scale must be > 0")
    return v


def _zp_attr(kernel: Kernel, name: str) -> int:
    v = int(kernel.attr(name, 0))
    if not -128 <= v <= 127:
        raise kernel.error(f"attribute '{name}' = {v} is outside the int8 range")
    return v


def _clamp_attrs(kernel: Kernel) -> tuple[int, int]:
    lo, hi = int(kernel.attr("act_min", -128)), int(kernel.attr("act_max", 127))
    if not -128 <= lo <= hi <= 127:
        raise kernel.error(f"act_min {lo} / act_max {hi} must satisfy -128 <= min <= max <= 127")
    return lo, hi


def _need_dtype(kernel: Kernel, info: TensorInfo | None, dt: np.dtype, what: str) -> None:
    if info is not None and np.dtype(info.dtype) != dt:
        raise kernel.error(f"input {what} has dtype {np.dtype(info.dtype)}, expected {dt}",
                           DTypeError)


# ----- Quantize / Dequantize ----------------------------------------------------------------------
class Quantize(Kernel):
    """float → int8: ``clip(round_half_even(x / scale) + zero_point, -128, 127)`` (as ONNX)."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if np.dtype(x.dtype).kind != "f":
            raise self.error(f"input has dtype {np.dtype(x.dtype)}, expected float", DTypeError)
        self.scale = np.float32(_scale_attr(self, "scale"))
        self.zp = _zp_attr(self, "zero_point")
        return [TensorInfo(tuple(x.shape), INT8)]

    def invoke(self, inputs, outputs):
        if outputs[0].size == 0:  # an empty batch
            return
        _quantize(np.ascontiguousarray(inputs[0], np.float32).reshape(-1), self.scale,
                  self.zp, outputs[0].reshape(-1))


@njit
def _quantize(x, scale, zp, out):
    for i in range(x.shape[0]):
        v = np.rint(x[i] / scale) + zp  # NaN would be UB in the cast: map it to the zero point
        if not v == v:
            v = zp
        out[i] = np.int8(min(max(v, -128.0), 127.0))


class Dequantize(Kernel):
    """int8/int32 → float32: ``(x - zero_point) * scale``, per tensor or along ``axis``."""

    foldable = True  # weight-only models dequantize constant weights once, at prepare

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if np.dtype(x.dtype) not in (INT8, INT32, np.dtype(np.uint8)):
            raise self.error(f"input has dtype {np.dtype(x.dtype)}, expected int8/int32",
                             DTypeError)
        scale = np.asarray(self.attr("scale"), np.float32).reshape(-1)
        zp = np.asarray(self.attr("zero_point", [0] * scale.size), np.int64).reshape(-1)
        if scale.size == 0 or np.any(~np.isfinite(scale)) or np.any(scale <= 0):
            raise self.error(f"scales {scale.tolist()[:8]} must be finite and > 0")
        if zp.size != scale.size:
            raise self.error(f"{zp.size} zero points for {scale.size} scales")
        shape = [1] * len(x.shape)
        if scale.size > 1:
            axis = self.normalize_axis(int(self.attr("axis", 1)), len(x.shape))
            if x.shape[axis] != scale.size:
                raise self.error(f"{scale.size} scales for axis {axis} of size {x.shape[axis]}",
                                 ShapeError)
            shape[axis] = scale.size
        self.scale = scale.reshape(shape)
        self.zp = zp.astype(np.float32).reshape(shape)
        value = None
        if x.value is not None:
            value = ((np.asarray(x.value).astype(np.float32) - self.zp) * self.scale)
        return [TensorInfo(tuple(x.shape), FLOAT32, value)]

    def invoke(self, inputs, outputs):
        np.subtract(inputs[0], self.zp, out=outputs[0], dtype=np.float32)
        np.multiply(outputs[0], self.scale, out=outputs[0])


# ----- QConv --------------------------------------------------------------------------------------
# im2col: conv.py's vectorized ``_im2col`` (dtype-generic) fills a (K, P) matrix from ``x - zp``.
# QConv/QGemm run the pairwise int16 multiply-add GEMM of qgemm.py (packing with im2col and the
# zero point fused, requantization fused per tile); only depthwise / many-group convs with short
# dot products use the int16 axpy kernel ``_qgemm_kp`` below.
@njit(parallel=True)
def _qgemm_kp(col, w, bias, mult, shift, y, group, zo, lo, hi):
    """``y[m, p] = clamp(zo + requant(bias[m] + sum_k w[m, k] * col[g * K + k, p]))``.

    ``col``: int16 ``(G * K, P)``; ``w``: int16 ``(M, K)``; ``y``: int8 ``(M, P)``.

    For short dot products (depthwise convs have K = 9, a first conv K = 27) the 2 x 4 dot
    kernel spends its time in loop remainders; here each weight scales a contiguous block of
    ``col`` into int32 accumulators (vectorized across output positions instead), measured
    3-4x faster for K < 64.
    """
    kg_n, p_n = w.shape[1], col.shape[1]
    m_n = w.shape[0]
    m_per_g = m_n // group
    block = 256
    for pb in prange((p_n + block - 1) // block):
        p0 = pb * block
        p1 = min(p0 + block, p_n)
        acc = np.empty(p1 - p0, np.int32)
        for m in range(m_n):
            g = m // m_per_g
            acc[:] = 0
            for k in range(kg_n):
                wv = np.int32(w[m, k])
                src = col[g * kg_n + k, p0:p1]
                for i in range(p1 - p0):
                    acc[i] = np.int32(acc[i] + wv * np.int32(src[i]))
            b, mm, sh = bias[m], mult[m], shift[m]
            dst = y[m, p0:p1]
            for i in range(p1 - p0):
                v = _requant(np.int64(acc[i]) + b, mm, sh) + zo
                dst[i] = min(max(v, lo), hi)


class _QLinearBase(Kernel):
    """Shared parameter handling of QConv and QGemm, and their packing buffer: a large one
    (:attr:`qgemm.Plan.shared`) lives in the interpreter's shared scratch."""

    scratch_nbytes = 0
    _scratch = None

    def _use_plan(self, plan: Plan) -> Plan:
        self.plan = plan
        self.scratch_nbytes = plan.size * plan.dtype.itemsize if plan.shared else 0
        return plan

    def bind_scratch(self, buf: np.ndarray) -> None:
        """Pack into ``buf`` (bytes, at least ``scratch_nbytes``) when the plan is shared."""
        self._scratch = buf

    def _quant_params(self, m_out: int, b: TensorInfo | None, w_value: np.ndarray | None):
        x_scale = _scale_attr(self, "x_scale")
        self.x_zp = _zp_attr(self, "x_zero_point")
        y_scale = _scale_attr(self, "y_scale")
        self.y_zp = _zp_attr(self, "y_zero_point")
        self.lo, self.hi = _clamp_attrs(self)
        w_scale = np.asarray(self.attr("w_scale", []), np.float64).reshape(-1)
        if w_scale.size == 1:
            w_scale = np.repeat(w_scale, m_out)
        if w_scale.size != m_out:
            raise self.error(f"w_scale has {w_scale.size} entries for {m_out} output channels")
        if np.any(~np.isfinite(w_scale)) or np.any(w_scale <= 0):
            raise self.error("w_scale entries must be finite and > 0")
        # float32 products, as the converter stored the bias with scale x_scale * w_scale.
        real = (np.float32(x_scale) * w_scale.astype(np.float32)).astype(np.float64) / y_scale
        self.mult, self.shift = multipliers(real)
        if w_value is None:
            raise self.error("the weight input must be a constant (pre-packed at prepare)")
        if b is not None:
            _need_dtype(self, b, INT32, "bias")
            if b.value is None:
                raise self.error("the bias input must be a constant")
            if tuple(b.shape) != (m_out,):
                raise self.error(f"bias has shape {b.shape}, expected ({m_out},)", ShapeError)
            self.bias = np.asarray(b.value, np.int64).copy()
        else:
            self.bias = np.zeros(m_out, np.int64)


class QConv(_QLinearBase):
    """Int8 Conv (1-3 spatial axes, grouped and depthwise): im2col, exact int32 accumulation."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        _need_dtype(self, x, INT8, "X")
        _need_dtype(self, w, INT8, "W")
        rank = len(x.shape)
        if not 3 <= rank <= 5 or len(w.shape) != rank:
            raise self.error(f"X {x.shape} and W {w.shape} must both have rank 3..5", ShapeError)
        group = int(self.attr("group", 1))
        n_img, c_in = x.shape[0], x.shape[1]
        m_out, c_per_group = w.shape[0], w.shape[1]
        if group < 1 or c_in != c_per_group * group or m_out % group:
            raise self.error(
                f"X has {c_in} channels, W {w.shape} with group={group} does not fit", ShapeError)
        ksp = tuple(w.shape[2:])
        kernel_shape_attr(self, ksp)
        win = sliding_window(self, tuple(x.shape[2:]), ksp)
        self._quant_params(m_out, b, w.value)
        self.group = group
        self.geo = win.geo()
        self.geo_a = packed(self.geo)
        self.in3 = as3d(win.in_shape)
        k = c_per_group * int(np.prod(ksp))
        self.w_packed = np.ascontiguousarray(np.asarray(w.value, np.int16).reshape(m_out, k))
        self.p_out = int(np.prod(win.out_shape))
        self.pointwise = (all(v == 1 for v in ksp) and all(s == 1 for s in win.strides)
                          and not any(win.pads_begin) and not any(win.pads_end))
        if k > 65_000:  # 65,000 * 255 * 128 < 2**31
            raise self.error(f"{k} taps per output could overflow the int32 accumulator")
        # Depthwise / many-group convs with short dot products use the int16 axpy kernel; all
        # others the pairwise multiply-add GEMM of qgemm.py.
        self.short = k < SHORT_DOT and group > 1
        self.k = k
        self.c_g = c_per_group
        if self.short:
            in_size = int(np.prod(win.in_shape))
            self.col_kp = (None if self.pointwise
                           else np.empty((c_in * int(np.prod(ksp)), self.p_out), np.int16))
            self.xs = np.empty((c_in, in_size), np.int16)
        self.qd = None
        if (not self.short and group == 1 and rank == 4 and not self.pointwise
                and m_out >= QDCONV_MIN_M
                and fits_int32(self.w_packed, self.bias)):
            # k x k layers: the direct kernel with output channels in the lanes (qdconv.py)
            self.qd = qdconv.Geometry(self.geo, c_in)
            self.qdpack = qdconv.pack_weights(np.asarray(w.value))
            self.scratch_nbytes = self.qd.size * 2
            self.macs = m_out * k * self.p_out
            self.w_packed = None
        elif not self.short:
            # 1x1 stride 1: GEMM layout over all positions; other convs the implicit layout (no
            # im2col matrix) unless output rows are short, then im2col into the GEMM layout.
            m_g = m_out // group
            w_g = [np.asarray(w.value)[g * m_g:(g + 1) * m_g] for g in range(group)]
            # a strided 1x1 conv without pads: subsample the input, then the 1x1 GEMM
            self.subsample = None
            if (not self.pointwise and all(v == 1 for v in ksp) and not any(win.pads_begin)
                    and not any(win.pads_end)):
                self.subsample = (np.empty((c_in,) + win.out_shape, np.int8),
                                  (slice(None),) + tuple(slice(None, None, st)
                                                         for st in win.strides))
            self.plan = (None if self.pointwise or self.subsample is not None
                         else Plan.implicit_conv(self.geo, c_per_group))
            if self.plan is not None:
                self.apack = [pack_conv_weights(v) for v in w_g]
            else:
                self.plan = Plan.gemm(k, self.p_out)
                self.apack = [pack_weights(v.reshape(m_g, k)) for v in w_g]
            self._use_plan(self.plan)
            self.wide = not fits_int32(self.w_packed, self.bias)
            self.w_packed = None
            self.implicit = self.plan.implicit
            self.taps = (None if self.pointwise or self.implicit or self.subsample is not None
                         else conv_taps(self.geo_a, c_per_group))
            self.rq = [tuple(np.ascontiguousarray(v[g * m_g:(g + 1) * m_g])
                             for v in (self.bias, self.mult, self.shift)) for g in range(group)]
        return [TensorInfo((n_img, m_out) + win.out_shape, INT8)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:  # an empty batch (or no output positions): nothing to compute
            return
        x = inputs[0]
        n_img, c_in = x.shape[0], x.shape[1]
        m_out = y.shape[1]
        if self.qd is not None:
            qd = self.qd
            size = qd.size * 2
            if self._scratch is not None and self._scratch.size >= size:
                buf = self._scratch[:size].view(np.int16)
            else:
                if getattr(self, "_qbuf", None) is None:
                    self._qbuf = np.empty(qd.size, np.int16)
                buf = self._qbuf
            parts = self.op.num_threads if self.macs >= SPLIT_MIN_MACS_INT8 else 1
            conv_fn = qdconv.qdconv if parts > 1 else qdconv.qdconv_serial
            pack_fn = qdconv.pack_pairs if parts > 1 else qdconv.pack_pairs_serial
            for n in range(n_img):
                pack_fn(x[n].reshape(c_in, self.in3[1], self.in3[2]), self.x_zp,
                        buf.reshape(qd.cp_n, qd.hp, qd.wp, 2), qd.pt, qd.pl)
                conv_fn(self.qdpack, buf, qd.offs, qd.cp_n, qd.cstride, qd.wp, qd.sh, qd.sw,
                        qd.oh, qd.ow, qd.block_tiles, SUB, self.bias, self.mult, self.shift,
                        self.y_zp, self.lo, self.hi, y[n].reshape(m_out, self.p_out), parts)
            return
        for n in range(n_img):
            yn = y[n].reshape(m_out, self.p_out)
            if self.short:
                # x - zp first (int16, exact): padding taps written as 0 are then exactly the
                # zero point.
                np.subtract(x[n].reshape(c_in, -1), np.int16(self.x_zp), out=self.xs,
                            dtype=np.int16)
                if self.pointwise:
                    col_kp = self.xs
                else:
                    _im2col(self.xs.reshape((c_in,) + self.in3), self.col_kp, self.geo_a)
                    col_kp = self.col_kp
                _qgemm_kp(col_kp, self.w_packed, self.bias, self.mult, self.shift, yn,
                          self.group, self.y_zp, self.lo, self.hi)
                continue
            m_g = m_out // self.group
            plan = self.plan
            buf = plan.buffer(self._scratch)
            xn = x[n]
            if self.subsample is not None:
                np.copyto(self.subsample[0], xn[self.subsample[1]])
                xn = self.subsample[0]
            for g in range(self.group):
                c0 = g * self.c_g
                if self.pointwise or self.subsample is not None:
                    pack_pointwise(xn.reshape(c_in, self.p_out), self.x_zp, c0, self.k, buf)
                elif self.implicit:
                    pack_padded(x[n].reshape((c_in,) + self.in3), self.x_zp, c0, self.c_g,
                                plan.pads, plan.strides, plan.dims, plan.cstride, buf)
                else:
                    pack_conv(x[n].reshape((c_in,) + self.in3), self.x_zp, self.geo_a, c0,
                              self.taps, buf)
                bias, mult, shift = self.rq[g]
                qgemm(self.apack[g], plan, m_g, bias, mult, shift, self.y_zp, self.lo,
                      self.hi, yn[g * m_g:(g + 1) * m_g], self.wide, buf)


@njit
def _qgemv(x, w, x_zp, bias, mult, shift, zo, lo, hi, y):
    """One row: ``y[n] = clamp(zo + requant(bias[n] + sum_k (x[k] - x_zp) * w[n, k]))``, the
    same integers and rounding as :func:`.qgemm.qgemm` (the caller checked that a row's sum
    fits int32; the bias is added in int64)."""
    n_n, k_n = w.shape
    xs = np.empty(k_n, np.int32)
    for k in range(k_n):
        xs[k] = np.int32(x[k]) - np.int32(x_zp)
    for n in range(n_n):
        row = w[n]
        acc = np.int32(0)
        for k in range(k_n):
            acc += xs[k] * np.int32(row[k])
        v = _requant(np.int64(acc) + bias[n], mult[n], shift[n]) + zo
        y[n] = min(max(v, lo), hi)


class QGemm(_QLinearBase):
    """Int8 fully connected: ``x [..., K] @ w[N, K].T`` (Gemm and MatMul with constant weights)."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        _need_dtype(self, x, INT8, "X")
        _need_dtype(self, w, INT8, "W")
        if len(w.shape) != 2 or len(x.shape) < 1 or x.shape[-1] != w.shape[1]:
            raise self.error(f"X {x.shape} does not fit W {w.shape} (expected [N, K])",
                             ShapeError)
        self._quant_params(w.shape[0], b, w.value)
        rows = int(np.prod(x.shape[:-1]))
        n_out, k = w.shape
        if k > 65_000:  # 65,000 * 255 * 128 < 2**31
            raise self.error(f"{k} taps per output could overflow the int32 accumulator")
        # y.T = W @ (x - zp).T on the pairwise multiply-add GEMM of qgemm.py.
        self.apack = pack_weights(np.asarray(w.value))
        self.wide = not fits_int32(np.asarray(w.value), self.bias)
        self._use_plan(Plan.gemm(k, rows))
        self.rows, self.k, self.kp = rows, k, (k + 1) // 2
        # the GEMM reads (K, rows) and writes (N, rows), both C-contiguous: transposed copies
        # of the input and output (K * rows and N * rows bytes, small next to the K * N MACs)
        self.xt = np.empty((k, rows), np.int8)
        self.yt = np.empty((n_out, rows), np.int8)
        # One row (batch-1 heads): a single compiled call on W's rows as stored; the transposes,
        # packing and tiled GEMM cost ~10 µs of calls around a few thousand multiply-adds.
        self.w_rows = np.ascontiguousarray(np.asarray(w.value, np.int8)) if rows == 1 else None
        return [TensorInfo(tuple(x.shape[:-1]) + (w.shape[0],), INT8)]

    def invoke(self, inputs, outputs):
        if self.rows == 0 or outputs[0].size == 0:  # an empty batch
            return
        if self.w_rows is not None:
            _qgemv(np.ascontiguousarray(inputs[0]).reshape(-1), self.w_rows, self.x_zp,
                   self.bias, self.mult, self.shift, self.y_zp, self.lo, self.hi,
                   outputs[0].reshape(-1))
            return
        np.copyto(self.xt, inputs[0].reshape(self.rows, self.k).T)
        buf = self.plan.buffer(self._scratch)
        pack_pointwise(self.xt, self.x_zp, 0, self.k, buf)
        qgemm(self.apack, self.plan, self.yt.shape[0], self.bias, self.mult, self.shift,
              self.y_zp, self.lo, self.hi, self.yt, self.wide, buf)
        np.copyto(outputs[0].reshape(self.rows, -1), self.yt.T)


# ----- QConvTranspose -----------------------------------------------------------------------------
@njit(parallel=True)
def _requant_exact(acc, bias, mult, shift, zo, lo, hi, y):
    """``y[m, p] = clamp(zo + requant(acc[m, p] + bias[m]))`` for float64 ``acc`` holding exact
    integers (any magnitude below 2**53; the sum is taken in int64)."""
    for m in prange(acc.shape[0]):
        b, mm, sh = bias[m], mult[m], shift[m]
        for p in range(acc.shape[1]):
            v = _requant(np.int64(acc[m, p]) + b, mm, sh) + zo
            y[m, p] = min(max(v, lo), hi)


class QConvTranspose(_QLinearBase):
    """Int8 ConvTranspose (1-3 spatial axes, groups, every ONNX geometry attribute).

    The float kernel's geometry and its ``Wᵀ @ X`` + col2im run on float64 copies of ``x - zp``
    and the int8 weights: every partial sum is an integer below ``2**53`` (at most
    ``C * k * 255 * 128`` per output), so float64 BLAS and the col2im additions are exact and
    the result is the int32 accumulator of the int8 scheme; the requantization is the shared
    fixed-point rule.
    """

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        _need_dtype(self, x, INT8, "X")
        _need_dtype(self, w, INT8, "W")
        if w.value is None:
            raise self.error("the weight input must be a constant (pre-packed at prepare)")
        if len(w.shape) < 3 or len(x.shape) != len(w.shape):
            raise self.error(f"X {x.shape} and W {w.shape} must both have rank 3..5", ShapeError)
        group = int(self.attr("group", 1))
        m_out = int(w.shape[1]) * max(group, 1)
        self._quant_params(m_out, b, w.value)
        self.float_kernel = ConvTransposeKernel(self.op)
        f64 = np.dtype(np.float64)
        (out,) = self.float_kernel.prepare(
            [TensorInfo(tuple(x.shape), f64),
             TensorInfo(tuple(w.shape), f64, np.asarray(w.value, np.float64))])
        self.check_alloc(tuple(out.shape), f64, "float64 accumulator")
        self.xf = np.empty(tuple(x.shape), np.float64)
        self.acc = np.empty(tuple(out.shape), np.float64)
        return [TensorInfo(tuple(out.shape), INT8)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        np.subtract(inputs[0], np.float64(self.x_zp), out=self.xf, dtype=np.float64)
        self.float_kernel.invoke([self.xf, None], [self.acc])
        n, m = y.shape[0], y.shape[1]
        for i in range(n):
            _requant_exact(self.acc[i].reshape(m, -1), self.bias, self.mult, self.shift,
                           self.y_zp, self.lo, self.hi, y[i].reshape(m, -1))


# ----- elementwise --------------------------------------------------------------------------------
ADD_LEFT_SHIFT = 20  # TFLite's headroom: (q - zp) << 20 keeps 11 bits of precision per input


@njit
def _qadd(a, b, ma, sa, za, mb, sb, zb, mo, so, zo, lo, hi, out):
    for i in prange(out.shape[0]):
        va = _requant((np.int64(a[i]) - za) << 20, ma, sa)
        vb = _requant((np.int64(b[i]) - zb) << 20, mb, sb)
        v = _requant(va + vb, mo, so) + zo
        out[i] = min(max(v, lo), hi)


@njit
def _qmul(a, b, za, zb, mo, so, zo, lo, hi, out):
    for i in prange(out.shape[0]):
        v = _requant((np.int64(a[i]) - za) * (np.int64(b[i]) - zb), mo, so) + zo
        out[i] = min(max(v, lo), hi)


class _QBinary(Kernel):
    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 2)
        a, b = inputs
        _need_dtype(self, a, INT8, "A")
        _need_dtype(self, b, INT8, "B")
        self.shape = broadcast_shapes(self.where(), tuple(a.shape), tuple(b.shape))
        self.sa, self.za = _scale_attr(self, "a_scale"), _zp_attr(self, "a_zero_point")
        self.sb, self.zb = _scale_attr(self, "b_scale"), _zp_attr(self, "b_zero_point")
        self.so, self.zo = _scale_attr(self, "y_scale"), _zp_attr(self, "y_zero_point")
        self.lo, self.hi = _clamp_attrs(self)
        self.setup()
        return [TensorInfo(self.shape, INT8)]

    def operands(self, inputs):
        a, b = inputs
        if a.shape != self.shape:
            a = np.broadcast_to(a, self.shape)
        if b.shape != self.shape:
            b = np.broadcast_to(b, self.shape)
        return np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)


class QAdd(_QBinary):
    """Int8 Add (TFLite's arithmetic): both inputs rescaled to ``2 * max(sa, sb) / 2**20``."""

    def setup(self):
        twice_max = 2.0 * max(self.sa, self.sb)
        self.ma, self.sha = quantize_multiplier(self.sa / twice_max)
        self.mb, self.shb = quantize_multiplier(self.sb / twice_max)
        self.mo, self.sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * self.so))
        # the vector kernel (qgemm.qadd) splits every shift at 32 bits; a multiplier >= 0.5
        # (an output scale far below the inputs') takes the scalar kernel
        self.prm = None
        if min(self.sha, self.shb, self.sho) >= 32:
            self.prm = np.array([self.za, self.zb,
                                 self.ma, 1 << (self.sha - 1), self.sha - 32,
                                 self.mb, 1 << (self.shb - 1), self.shb - 32,
                                 self.mo, 1 << (self.sho - 1), self.sho - 32,
                                 self.zo, self.lo, self.hi], np.int64)

    def invoke(self, inputs, outputs):
        if outputs[0].size == 0:  # an empty batch
            return
        a, b = self.operands(inputs)
        if self.prm is not None:
            qadd(a, b, self.prm, outputs[0].reshape(-1))
            return
        _qadd(a, b, self.ma, self.sha, self.za, self.mb, self.shb, self.zb, self.mo, self.sho,
              self.zo, self.lo, self.hi, outputs[0].reshape(-1))


class QMul(_QBinary):
    """Int8 Mul: ``requant((a - za) * (b - zb), sa * sb / so)``."""

    def setup(self):
        self.mo, self.sho = quantize_multiplier(self.sa * self.sb / self.so)

    def invoke(self, inputs, outputs):
        if outputs[0].size == 0:  # an empty batch
            return
        a, b = self.operands(inputs)
        _qmul(a, b, self.za, self.zb, self.mo, self.sho, self.zo, self.lo, self.hi,
              outputs[0].reshape(-1))


@njit
def _rescale(x, zi, m, s, zo, out):
    for i in prange(x.shape[0]):
        v = _requant(np.int64(x[i]) - zi, m, s) + zo
        out[i] = min(max(v, -128), 127)


class QConcat(Kernel):
    """Int8 Concat: each input is rescaled to the output's parameters (copied when equal)."""

    def prepare(self, inputs):
        if not inputs or any(i is None for i in inputs):
            raise self.error("needs at least one input and no omitted inputs")
        for k, info in enumerate(inputs):
            _need_dtype(self, info, INT8, str(k))
        rank = len(inputs[0].shape)
        self.axis = self.normalize_axis(int(self.attr("axis", 0)), rank)
        scales = list(self.attr("scales", []))
        zps = list(self.attr("zero_points", []))
        if len(scales) != len(inputs) or len(zps) != len(inputs):
            raise self.error(f"{len(scales)} scales / {len(zps)} zero points for "
                             f"{len(inputs)} inputs")
        so, self.zo = _scale_attr(self, "y_scale"), _zp_attr(self, "y_zero_point")
        shape = list(inputs[0].shape)
        total = 0
        for info in inputs:
            s = list(info.shape)
            if len(s) != rank or s[:self.axis] + s[self.axis + 1:] != \
                    shape[:self.axis] + shape[self.axis + 1:]:
                raise self.error(f"input shapes {[tuple(i.shape) for i in inputs]} differ "
                                 f"outside axis {self.axis}", ShapeError)
            total += s[self.axis]
        shape[self.axis] = total
        self.params = []
        for s, z in zip(scales, zps):
            s, z = float(s), int(z)
            if not s > 0 or not -128 <= z <= 127:
                raise self.error(f"bad input quantization ({s}, {z})")
            same = s == so and z == self.zo
            self.params.append(None if same else (z,) + quantize_multiplier(s / so))
        self.sizes = [i.shape[self.axis] for i in inputs]
        return [TensorInfo(tuple(shape), INT8)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:  # an empty batch
            return
        start = 0
        for x, size, p in zip(inputs, self.sizes, self.params):
            dst = y[(slice(None),) * self.axis + (slice(start, start + size),)]
            start += size
            if p is None:
                dst[...] = x
            else:
                tmp = np.empty(x.size, INT8)
                _rescale(np.ascontiguousarray(x).reshape(-1), p[0], p[1], p[2], self.zo, tmp)
                dst[...] = tmp.reshape(x.shape)


# ----- pooling ------------------------------------------------------------------------------------
@njit(parallel=True)
def _qpool(x, y, geo_a, is_max, count_pad):
    """Max or average pool of int8 ``x (NC, D, H, W)`` into ``y (NC, OD, OH, OW)``.

    Each output row is built tap by tap over the tap's valid output range (``tap_ranges``), as
    slices, so the inner loops have no bounds tests and vectorize (the per-element form with
    bounds tests ran squeezenet's max pools 10x slower). Average: an int32 sum and a per-element
    count, divided with rounding half away from zero (TFLite's ``(sum ± count / 2) / count``),
    exactly in integers.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh = geo.dd, geo.dh
    pd, ph = geo.pd, geo.ph
    nc, d_n, h_n = x.shape[0], x.shape[1], x.shape[2]
    od_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    taps = tap_ranges(geo)
    full = kd_n * kh_n * kw_n
    for t in prange(nc):
        acc = np.empty(ow_n, np.int32)
        cnt = np.empty(ow_n, np.int32)
        for od in range(od_n):
            for oh in range(oh_n):
                if is_max:
                    acc[:] = -128
                else:
                    acc[:] = 0
                cnt[:] = 0
                for kd in range(kd_n):
                    iz = od * sd - pd + kd * dd
                    if iz < 0 or iz >= d_n:
                        continue
                    for kh in range(kh_n):
                        iy = oh * sh - ph + kh * dh
                        if iy < 0 or iy >= h_n:
                            continue
                        src = x[t, iz, iy]
                        for kw in range(kw_n):
                            off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
                            if hi <= lo:
                                continue
                            seg = src[lo * sw + off:(hi - 1) * sw + off + 1:sw]
                            aseg = acc[lo:hi]
                            cseg = cnt[lo:hi]
                            if is_max:
                                for i in range(hi - lo):
                                    aseg[i] = max(aseg[i], np.int32(seg[i]))
                            else:
                                for i in range(hi - lo):
                                    aseg[i] += np.int32(seg[i])
                                    cseg[i] += 1
                yrow = y[t, od, oh]
                if is_max:
                    for i in range(ow_n):
                        yrow[i] = acc[i]
                else:
                    for i in range(ow_n):
                        c = full if count_pad else max(cnt[i], 1)
                        v = acc[i]
                        if v >= 0:
                            yrow[i] = (v + c // 2) // c
                        else:
                            yrow[i] = -((-v + c // 2) // c)


class _QPool(Kernel):
    is_max = True

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        _need_dtype(self, x, INT8, "X")
        if not 3 <= len(x.shape) <= 5:
            raise self.error(f"input must have rank 3..5, got {x.shape}", ShapeError)
        ks = self.attr("kernel_shape")
        if ks is None or len(ks) != len(x.shape) - 2:
            raise self.error(f"attribute kernel_shape {ks} must have {len(x.shape) - 2} values")
        win = sliding_window(self, tuple(x.shape[2:]), tuple(int(k) for k in ks),
                             ceil_mode=bool(self.attr("ceil_mode", 0)))
        self.geo = win.geo()
        self.geo_a = packed(self.geo)
        self.in3, self.out3 = as3d(win.in_shape), as3d(win.out_shape)
        self.count_pad = bool(self.attr("count_include_pad", 0))
        # 2-D max pool without dilation: the float kernel's row-wise form (vectorized maxes
        # over contiguous rows; the tap-range kernel below read strided int8 slices)
        self.phase = (self.is_max and len(x.shape) == 4 and int(np.prod(win.out_shape)) > 0
                      and all(d == 1 for d in win.dilations))
        # An average whose one window is the whole unpadded plane (ResNet's and GoogLeNet's
        # final 7x7 pools): the global average's kernel, one contiguous sum per channel (the
        # tap-by-tap kernel set up 49 one-element slices per channel: 2.6 ms of ResNet-50's
        # int8 run, measured).
        self.whole = (not self.is_max and tuple(win.kernel) == tuple(win.in_shape)
                      and not any(win.pads_begin) and not any(win.pads_end)
                      and all(d == 1 for d in win.out_shape) and all(d == 1 for d in win.dilations)
                      and int(np.prod(win.in_shape)) > 0)
        return [TensorInfo(tuple(x.shape[:2]) + win.out_shape, INT8)]

    def invoke(self, inputs, outputs):
        x, y = np.ascontiguousarray(inputs[0]), outputs[0]
        if y.size == 0:  # an empty batch (or no channels)
            return
        nc = x.shape[0] * x.shape[1]
        if self.whole:
            _qgap(x.reshape(nc, -1), y.reshape(nc))
            return
        if self.phase:
            g = self.geo
            _max_pool_rows(x.reshape((nc,) + self.in3[1:]), y.reshape((nc,) + self.out3[1:]),
                           g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, np.int8(-128))
            return
        _qpool(x.reshape((nc,) + self.in3), y.reshape((nc,) + self.out3), self.geo_a,
               self.is_max, self.count_pad)


class QMaxPool(_QPool):
    """Int8 MaxPool; the output keeps the input's quantization (max commutes with it)."""

    is_max = True


class QAveragePool(_QPool):
    """Int8 AveragePool with exact integer rounding; output parameters = input's."""

    is_max = False


@njit
def _qgap(x, y):
    n = x.shape[1]
    for t in prange(x.shape[0]):
        acc = np.int64(0)
        for i in range(n):
            acc += x[t, i]
        if acc >= 0:
            y[t] = (acc + n // 2) // n
        else:
            y[t] = -((-acc + n // 2) // n)


class QGlobalAveragePool(Kernel):
    """Int8 GlobalAveragePool (int64 sum, rounding half away from zero); input's parameters."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        _need_dtype(self, x, INT8, "X")
        if len(x.shape) < 3 or int(np.prod(x.shape[2:])) == 0:
            raise self.error(f"input must have rank >= 3 and spatial size > 0, got {x.shape}",
                             ShapeError)
        return [TensorInfo(tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2), INT8)]

    def invoke(self, inputs, outputs):
        if outputs[0].size == 0:  # an empty batch (or no channels): reshape(0, -1) is ambiguous
            return
        x = np.ascontiguousarray(inputs[0])
        nc = x.shape[0] * x.shape[1]
        _qgap(x.reshape(nc, -1), outputs[0].reshape(nc))


# ----- lookup tables and softmax ------------------------------------------------------------------
class QLut(Kernel):
    """Any elementwise int8 → int8 function through a 256-entry table built by the quantizer."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        _need_dtype(self, inputs[0], INT8, "X")
        table = np.asarray(self.attr("table", []), np.int64)
        if table.shape != (256,) or table.min() < -128 or table.max() > 127:
            raise self.error("attribute 'table' must hold 256 int8 values")
        self.table = table.astype(np.int8)
        return [TensorInfo(tuple(inputs[0].shape), INT8)]

    def invoke(self, inputs, outputs):
        if outputs[0].size == 0:  # an empty batch
            return
        idx = inputs[0].astype(np.int16) + 128
        np.take(self.table, idx, out=outputs[0])


@njit
def _qsoftmax(x, sx, zx, so, zo, y):
    """Rows of ``x (R, L)``: dequantize, softmax in float32, quantize (round half even)."""
    r_n, l_n = x.shape
    for r in prange(r_n):
        mx = -128
        for i in range(l_n):
            mx = max(mx, np.int32(x[r, i]))
        e = np.empty(l_n, np.float32)
        tot = np.float32(0.0)
        for i in range(l_n):
            e[i] = np.exp(np.float32(sx) * np.float32(np.int32(x[r, i]) - mx))
            tot += e[i]
        for i in range(l_n):
            v = np.rint(e[i] / tot / np.float32(so)) + zo
            y[r, i] = np.int8(min(max(v, -128.0), 127.0))


class QSoftmax(Kernel):
    """Int8 Softmax over ``axis`` (opset-13 semantics: one axis), float32 inside the row."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        _need_dtype(self, x, INT8, "X")
        self.axis = self.normalize_axis(int(self.attr("axis", -1)), len(x.shape))
        self.sx, self.zx = _scale_attr(self, "x_scale"), _zp_attr(self, "x_zero_point")
        self.so, self.zo = _scale_attr(self, "y_scale"), _zp_attr(self, "y_zero_point")
        # Only size-1 dims after the axis (a classifier's (N, C, 1, 1) logits): rows as they lie.
        self.rows = all(int(d) == 1 for d in x.shape[self.axis + 1:])
        return [TensorInfo(tuple(x.shape), INT8)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        if self.rows and y.flags.c_contiguous:  # rows in place: no copies
            n = y.shape[self.axis]
            _qsoftmax(np.ascontiguousarray(inputs[0]).reshape(-1, n), self.sx, self.zx, self.so,
                      self.zo, y.reshape(-1, n))
            return
        x = np.moveaxis(inputs[0], self.axis, -1)
        shape = x.shape
        xr = np.ascontiguousarray(x).reshape(-1, shape[-1])
        yr = np.empty_like(xr)
        _qsoftmax(xr, self.sx, self.zx, self.so, self.zo, yr)
        np.copyto(outputs[0], np.moveaxis(yr.reshape(shape), -1, self.axis))


def register(reg: KernelRegistry) -> None:
    for name, kernel in (
        ("Quantize", Quantize),
        ("Dequantize", Dequantize),
        ("QConv", QConv),
        ("QConvTranspose", QConvTranspose),
        ("QGemm", QGemm),
        ("QAdd", QAdd),
        ("QMul", QMul),
        ("QConcat", QConcat),
        ("QMaxPool", QMaxPool),
        ("QAveragePool", QAveragePool),
        ("QGlobalAveragePool", QGlobalAveragePool),
        ("QLut", QLut),
        ("QSoftmax", QSoftmax),
    ):
        reg.add(name, kernel, domain="edgert")
