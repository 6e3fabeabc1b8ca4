"""Int8 kernels (edgert.Q*) bit-exact against NumPy goldens of the same integer arithmetic.

The goldens below are written independently of the kernels: plain NumPy int64 arithmetic, a
direct (non-im2col) convolution over a zero-point-padded input, and their own fixed-point
multiplier derivation (TFLite's QuantizeMultiplier: ``real = M * 2**(e-31)``, single rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgert.errors import KernelError
from tests.helpers import ort_node, run_kernel

RNG = np.random.default_rng(5)


def golden_multiplier(real: float) -> tuple[int, int]:
    if real == 0:
        return 0, 1
    q, e = math.frexp(real)
    m = int(round(q * 2**31))
    if m == 2**31:
        m, e = m // 2, e + 1
    if 31 - e > 62:
        return 0, 1
    return m, 31 - e


def golden_requant(acc: np.ndarray, real) -> np.ndarray:
    acc = np.asarray(acc, np.int64)
    real = np.broadcast_to(np.asarray(real, np.float64), acc.shape)
    out = np.empty(acc.shape, np.int64)
    for idx in np.ndindex(acc.shape):  # tiny test shapes: clarity over speed
        m, s = golden_multiplier(float(real[idx]))
        out[idx] = (int(acc[idx]) * m + (1 << (s - 1))) >> s
    return out


def i8(shape) -> np.ndarray:
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


def golden_conv(x, w, b, xs, xz, ws, ys, yz, stride, pad, group, lo=-128, hi=127):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.full((n, c, h + 2 * pad, wd + 2 * pad), xz, np.int64)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    xp -= xz
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    acc = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for oc in range(m):
        g = oc // mg
        for i in range(kh):
            for j in range(kw):
                rows = slice(i, i + stride * oh, stride)
                cols = slice(j, j + stride * ow, stride)
                patch = xp[:, g * cg:(g + 1) * cg, rows, cols]
                acc[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j].astype(np.int64))
    acc += b.reshape(1, -1, 1, 1)
    real = (np.float32(xs) * ws.astype(np.float32)).astype(np.float64) / ys
    y = golden_requant(acc, real.reshape(1, -1, 1, 1)) + yz
    return np.clip(y, lo, hi).astype(np.int8)


@pytest.mark.parametrize("group,cin,cout,stride,pad", [
    (1, 3, 4, 1, 1),   # plain 3x3
    (2, 4, 6, 2, 1),   # grouped, strided
    (5, 5, 10, 1, 1),  # depthwise with multiplier 2
    (1, 8, 7, 1, 1),   # 72 taps: the 2 x 4 blocked dot-product path, with remainders
    (2, 16, 6, 1, 0),  # grouped, 72 taps per group, odd output count
])
def test_qconv_bit_exact(group, cin, cout, stride, pad):
    x = i8((2, cin, 5, 5))
    w = RNG.integers(-127, 128, size=(cout, cin // group, 3, 3)).astype(np.int8)
    b = RNG.integers(-2000, 2000, size=cout).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, cout).astype(np.float32)
    attrs = dict(strides=[stride] * 2, pads=[pad] * 4, group=group, x_scale=0.05,
                 x_zero_point=-3, w_scale=[float(s) for s in ws], y_scale=0.11,
                 y_zero_point=7, act_min=-100, act_max=120)
    got = run_kernel("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    want = golden_conv(x, w, b, np.float32(0.05), -3, ws, float(np.float32(0.11)), 7, stride,
                       pad, group, -100, 120)
    np.testing.assert_array_equal(got, want)


def test_qconv_pointwise_bit_exact():
    x = i8((1, 8, 4, 4))
    w = RNG.integers(-127, 128, size=(5, 8, 1, 1)).astype(np.int8)
    b = RNG.integers(-500, 500, size=5).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, 5).astype(np.float32)
    attrs = dict(x_scale=0.02, x_zero_point=10, w_scale=[float(s) for s in ws], y_scale=0.03,
                 y_zero_point=-5)
    got = run_kernel("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    want = golden_conv(x, w, b, np.float32(0.02), 10, ws, float(np.float32(0.03)), -5, 1, 0, 1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("group,cin,cout,stride", [(1, 8, 13, 2), (2, 132, 10, 3)])
def test_qconv_strided_pointwise_bit_exact(group, cin, cout, stride):
    """1x1 convs with a stride (ResNet's downsampling shortcut): subsampled, then the GEMM."""
    x = i8((2, cin, 9, 11))
    w = RNG.integers(-127, 128, size=(cout, cin // group, 1, 1)).astype(np.int8)
    b = RNG.integers(-500, 500, size=cout).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, cout).astype(np.float32)
    attrs = dict(strides=[stride] * 2, group=group, x_scale=0.02, x_zero_point=4,
                 w_scale=[float(s) for s in ws], y_scale=0.03, y_zero_point=-2)
    got = run_kernel("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    want = golden_conv(x, w, b, np.float32(0.02), 4, ws, float(np.float32(0.03)), -2, stride, 0,
                       group)
    np.testing.assert_array_equal(got, want)


def golden_conv_transpose(x, w, b, xz, real, yz, stride, pad, out_pad, group, lo=-128, hi=127):
    """Direct scatter form of ConvTranspose in int64 (2-D), then the golden requantization."""
    n, c, h, wd = x.shape
    cg, mg, kh, kw = w.shape[0] // group, w.shape[1], w.shape[2], w.shape[3]
    full_h = stride * (h - 1) + out_pad + kh
    full_w = stride * (wd - 1) + out_pad + kw
    acc = np.zeros((n, mg * group, full_h, full_w), np.int64)
    xs = x.astype(np.int64) - xz
    for g in range(group):
        for ci in range(cg):
            for mo in range(mg):
                for i in range(kh):
                    for j in range(kw):
                        acc[:, g * mg + mo, i:i + stride * h:stride, j:j + stride * wd:stride] += (
                            xs[:, g * cg + ci] * int(w[g * cg + ci, mo, i, j]))
    acc = acc[:, :, pad:full_h - pad, pad:full_w - pad] + b.reshape(1, -1, 1, 1)
    y = golden_requant(acc, np.asarray(real).reshape(1, -1, 1, 1)) + yz
    return np.clip(y, lo, hi).astype(np.int8)


@pytest.mark.parametrize("group,cin,cout,stride,pad,out_pad", [
    (1, 3, 4, 2, 1, 1), (2, 4, 6, 1, 0, 0), (1, 5, 3, 3, 2, 2)])
def test_qconv_transpose_bit_exact(group, cin, cout, stride, pad, out_pad):
    x = i8((2, cin, 4, 5))
    w = RNG.integers(-127, 128, size=(cin, cout // group, 3, 3)).astype(np.int8)
    b = RNG.integers(-2000, 2000, size=cout).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, cout).astype(np.float32)
    attrs = dict(strides=[stride] * 2, pads=[pad] * 4, output_padding=[out_pad] * 2,
                 group=group, x_scale=0.05, x_zero_point=6, w_scale=[float(s) for s in ws],
                 y_scale=0.09, y_zero_point=-4, act_min=-120, act_max=127)
    got = run_kernel("QConvTranspose", [x, w, b], attrs, const_inputs=(1, 2),
                     domain="edgert")[0]
    real = (np.float32(0.05) * ws).astype(np.float64) / float(np.float32(0.09))
    want = golden_conv_transpose(x, w, b, 6, real, -4, stride, pad, out_pad, group, -120, 127)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("x_shape", [(3, 2, 7), (1, 7), (7,)])  # one row: the GEMV kernel
def test_qgemm_bit_exact(x_shape):
    x = i8(x_shape)
    w = RNG.integers(-127, 128, size=(4, 7)).astype(np.int8)
    b = RNG.integers(-900, 900, size=4).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, 4).astype(np.float32)
    attrs = dict(x_scale=0.04, x_zero_point=-20, w_scale=[float(s) for s in ws],
                 y_scale=0.07, y_zero_point=3)
    got = run_kernel("QGemm", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    acc = (x.astype(np.int64) + 20) @ w.astype(np.int64).T + b
    real = (np.float32(0.04) * ws).astype(np.float64) / float(np.float32(0.07))
    want = np.clip(golden_requant(acc, real) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, want)


def test_qconv_qgemm_long_reduction_worst_case_exact():
    """K = 1,152 > 2 chunks of the float32-BLAS path, with the largest products (|x - zp| = 255,
    |w| = 128): the int32 accumulators must still be exact (checked against int64 NumPy)."""
    cin = 128
    x = np.where(RNG.random((1, cin, 4, 4)) < 0.9, -128, 127).astype(np.int8)
    w = np.where(RNG.random((3, cin, 3, 3)) < 0.8, -128, 127).astype(np.int8)
    b = RNG.integers(-2000, 2000, size=3).astype(np.int32)
    ws = np.full(3, 1e-6, np.float32)
    attrs = dict(pads=[1] * 4, x_scale=1.0, x_zero_point=127, w_scale=[float(v) for v in ws],
                 y_scale=1.0, y_zero_point=0)
    got = run_kernel("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    want = golden_conv(x, w, b, np.float32(1.0), 127, ws, 1.0, 0, 1, 1, 1)
    np.testing.assert_array_equal(got, want)
    for rows in (2, 1):  # one row takes the GEMV kernel
        xg = np.ascontiguousarray(x.reshape(2, -1)[:rows, :1000])
        wg = np.ascontiguousarray(w.reshape(3, -1)[:, :1000])
        got = run_kernel("QGemm", [xg, wg, b], {k: v for k, v in attrs.items() if k != "pads"},
                         const_inputs=(1, 2), domain="edgert")[0]
        acc = (xg.astype(np.int64) - 127) @ wg.astype(np.int64).T + b
        real = (np.float32(1.0) * ws).astype(np.float64)
        want = np.clip(golden_requant(acc, real), -128, 127).astype(np.int8)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sa_shape,sb_shape,so", [
    ((2, 3, 4), (3, 1), 0.06),         # broadcasting: scalar kernel
    ((2, 5, 7, 9), (2, 5, 7, 9), 0.06),  # equal shapes: the vector kernel, and a tail
    ((3, 40), (3, 40), 1e-7),          # a multiplier >= 0.5 (shift < 32): scalar fallback
])
def test_qadd_bit_exact(sa_shape, sb_shape, so):
    a, b = i8(sa_shape), i8(sb_shape)
    sa, sb, so = (float(np.float32(v)) for v in (0.05, 0.02, so))
    attrs = dict(a_scale=sa, a_zero_point=4, b_scale=sb, b_zero_point=-9, y_scale=so,
                 y_zero_point=-2)
    got = run_kernel("QAdd", [a, b], attrs, domain="edgert")[0]
    twice = 2 * max(sa, sb)
    ab, bb = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    va = golden_requant((ab - 4) << 20, sa / twice)
    vb = golden_requant((bb + 9) << 20, sb / twice)
    want = golden_requant(va + vb, twice / (2**20 * so)) - 2
    np.testing.assert_array_equal(got, np.clip(want, -128, 127).astype(np.int8))
    # and, where it does not saturate, it is within one step of the real-valued sum
    real = sa * (ab - 4) + sb * (bb + 9)
    inside = (got > -128) & (got < 127)
    if inside.any():  # (with the tiny output scale everything saturates)
        assert np.max(np.abs((got.astype(np.float64) + 2) * so - real)[inside]) <= so


def test_qmul_bit_exact():
    a, b = i8((4, 5)), i8((5,))
    attrs = dict(a_scale=0.1, a_zero_point=0, b_scale=0.05, b_zero_point=3, y_scale=0.5,
                 y_zero_point=1)
    got = run_kernel("QMul", [a, b], attrs, domain="edgert")[0]
    prod = (a.astype(np.int64)) * (b.astype(np.int64) - 3)
    want = golden_requant(prod, float(np.float32(0.1)) * float(np.float32(0.05))
                          / float(np.float32(0.5))) + 1
    np.testing.assert_array_equal(got, np.clip(want, -128, 127).astype(np.int8))


def test_qconcat_rescales():
    a, b = i8((1, 2, 3)), i8((1, 3, 3))
    attrs = dict(axis=1, scales=[0.1, 0.05], zero_points=[0, 5], y_scale=0.1, y_zero_point=0)
    got = run_kernel("QConcat", [a, b], attrs, domain="edgert")[0]
    want_b = golden_requant(b.astype(np.int64) - 5,
                            float(np.float32(0.05)) / float(np.float32(0.1)))
    np.testing.assert_array_equal(got[:, :2], a)
    np.testing.assert_array_equal(got[:, 2:], np.clip(want_b, -128, 127).astype(np.int8))


def test_qpools_bit_exact():
    x = i8((2, 3, 5, 5))
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    got = run_kernel("QMaxPool", [x], attrs, domain="edgert")[0]
    xp = np.full((2, 3, 7, 7), -128, np.int64)
    xp[:, :, 1:6, 1:6] = x
    want = np.max([xp[:, :, i:i + 6:2, j:j + 6:2] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_array_equal(got, want.astype(np.int8))
    # average, pads excluded from the count; rounding half away from zero
    got = run_kernel("QAveragePool", [x], attrs, domain="edgert")[0]
    ones = np.zeros((2, 3, 7, 7), np.int64)
    ones[:, :, 1:6, 1:6] = 1
    xz = np.where(ones > 0, xp, 0)
    s = np.sum([xz[:, :, i:i + 6:2, j:j + 6:2] for i in range(3) for j in range(3)], axis=0)
    c = np.sum([ones[:, :, i:i + 6:2, j:j + 6:2] for i in range(3) for j in range(3)], axis=0)
    want = np.sign(s) * ((np.abs(s) * 2 + c) // (2 * c))
    np.testing.assert_array_equal(got, want.astype(np.int8))
    got = run_kernel("QGlobalAveragePool", [x], {}, domain="edgert")[0]
    s = x.astype(np.int64).reshape(2, 3, -1).sum(-1)
    want = np.sign(s) * ((np.abs(s) * 2 + 25) // 50)
    np.testing.assert_array_equal(got.reshape(2, 3), want.astype(np.int8))
    # an average over the whole unpadded plane (ResNet's final 7x7 pool), on a sum that needs
    # more than int16 and with exact halves
    for xx in (x, np.full((1, 2, 7, 7), -128, np.int8), np.array([[[[1, 0]], [[-1, 0]]]],
                                                                  np.int8)):
        hw = xx.shape[2] * xx.shape[3]
        got = run_kernel("QAveragePool", [xx], dict(kernel_shape=list(xx.shape[2:])),
                         domain="edgert")[0]
        s = xx.astype(np.int64).reshape(xx.shape[0], xx.shape[1], -1).sum(-1)
        want = np.sign(s) * ((np.abs(s) * 2 + hw) // (2 * hw))
        assert got.shape == xx.shape[:2] + (1, 1)
        np.testing.assert_array_equal(got.reshape(s.shape), want.astype(np.int8))


@pytest.mark.parametrize("shape,attrs", [
    ((1, 4, 11, 11), dict(kernel_shape=[3, 3], strides=[2, 2])),                     # phase form
    ((2, 3, 10, 9), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1],
                         ceil_mode=1)),
    ((1, 2, 8, 8), dict(kernel_shape=[2, 2], strides=[1, 1])),
    ((1, 2, 9, 9), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),  # tap form
    ((1, 3, 17), dict(kernel_shape=[4], strides=[3], pads=[1, 2])),                 # 1-D
    ((1, 2, 5, 6, 7), dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2])),             # 3-D
])
def test_qmaxpool_matches_onnxruntime_on_the_same_integers(shape, attrs):
    """Max commutes with quantization: int8 max pooling equals a float MaxPool of the codes."""
    x = i8(shape)
    got = run_kernel("QMaxPool", [x], attrs, domain="edgert")[0]
    want = ort_node("MaxPool", [x.astype(np.float32)], attrs)[0]
    np.testing.assert_array_equal(got, want.astype(np.int8))


def test_quantize_dequantize_lut():
    x = RNG.normal(size=(3, 7)).astype(np.float32) * 3
    q = run_kernel("Quantize", [x], dict(scale=0.02, zero_point=-4), domain="edgert")[0]
    want = np.clip(np.rint(x / np.float32(0.02)) - 4, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(q, want)
    d = run_kernel("Dequantize", [q], dict(scale=[0.02], zero_point=[-4]), domain="edgert")[0]
    np.testing.assert_array_equal(d, (q.astype(np.float32) + 4) * np.float32(0.02))
    table = list(range(127, -129, -1))
    y = run_kernel("QLut", [q], dict(table=table), domain="edgert")[0]
    np.testing.assert_array_equal(y, np.array(table, np.int8)[q.astype(np.int64) + 128])


@pytest.mark.parametrize("shape,axis", [((4, 10), 1), ((4, 10), 0),  # last axis: in place
                                        ((3, 10, 1, 1), 1),  # size-1 dims after it: in place
                                        ((2, 5, 3), 1)])  # moved to the last axis and back
def test_qsoftmax_close_to_float(shape, axis):
    x = i8(shape)
    y = run_kernel("QSoftmax", [x], dict(axis=axis, x_scale=0.1, x_zero_point=0,
                                         y_scale=1 / 256, y_zero_point=-128), domain="edgert")[0]
    r = x.astype(np.float64) * float(np.float32(0.1))
    p = np.exp(r - r.max(axis, keepdims=True))
    p /= p.sum(axis, keepdims=True)
    want = np.clip(np.rint(p * 256) - 128, -128, 127)
    assert np.max(np.abs(y.astype(np.int64) - want)) <= 1  # float32 vs float64 at exact ties


def test_bad_attributes_raise():
    x = i8((1, 2, 3, 3))
    w = i8((2, 2, 1, 1))
    with pytest.raises(KernelError, match="w_scale"):
        run_kernel("QConv", [x, w], dict(x_scale=0.1, w_scale=[0.1], y_scale=-1.0) | {
            "y_scale": 0.1, "w_scale": [0.1, 0.1, 0.1]}, const_inputs=(1,), domain="edgert")
    with pytest.raises(KernelError, match="scale"):
        run_kernel("Quantize", [x.astype(np.float32)], dict(scale=0.0), domain="edgert")
    with pytest.raises(KernelError, match="table"):
        run_kernel("QLut", [x], dict(table=[0] * 10), domain="edgert")
