"""The pairwise multiply-add int8 GEMM (runtime/kernels/cpu/qgemm.py) against NumPy int64.

The goldens are plain NumPy: an int64 matrix product, a fixed-point requantization written out
in int64, and an im2col built by slicing a zero-point-padded input. Shapes are chosen to hit
every tile remainder (rows not a multiple of MR, columns not a multiple of NR, odd K) and every
geometry the packer handles (1-D/2-D/3-D, strides, dilations, asymmetric pads, taps that fall
entirely into the padding).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgert.runtime.kernels.cpu import qgemm as Q
from edgert.runtime.ops.window import Geo, packed

RNG = np.random.default_rng(11)


def golden_requant(acc, bias, mult, shift, zo, lo, hi):
    v = acc + bias[:, None]
    v = ((v * mult[:, None] + (np.int64(1) << (shift[:, None] - 1))) >> shift[:, None]) + zo
    return np.clip(v, lo, hi).astype(np.int8)


def quant_params(m):
    bias = RNG.integers(-50_000, 50_000, m).astype(np.int64)
    mult = RNG.integers(1 << 30, 1 << 31, m).astype(np.int64)
    shift = RNG.integers(28, 46, m).astype(np.int64)  # both sides of the 32-bit split
    return bias, mult, shift


@pytest.mark.parametrize("m,k,p", [(1, 1, 1), (7, 5, 3), (6, 32, 16), (13, 33, 17),
                                   (64, 300, 50), (5, 1000, 130), (40, 64, 1)])
@pytest.mark.parametrize("wide", [False, True])
def test_pointwise_gemm_bit_exact(m, k, p, wide):
    w = RNG.integers(-128, 128, (m, k)).astype(np.int8)
    x = RNG.integers(-128, 128, (k, p)).astype(np.int8)
    zp = int(RNG.integers(-128, 128))
    bias, mult, shift = quant_params(m)
    plan = Q.Plan.gemm(k, p)
    Q.pack_pointwise(x, zp, 0, k, plan.buf)
    y = np.empty((m, p), np.int8)
    assert Q.fits_int32(w, bias)
    Q.qgemm(Q.pack_weights(w), plan, m, bias, mult, shift, 3, -100, 127, y, wide)
    acc = w.astype(np.int64) @ (x.astype(np.int64) - zp)
    np.testing.assert_array_equal(y, golden_requant(acc, bias, mult, shift, 3, -100, 127))


def test_bias_near_int32_limit_takes_the_wide_path():
    """A bias that would overflow an int32 ``acc + bias`` is detected and computed exactly."""
    m, k, p = 4, 50, 20
    w = np.full((m, k), 127, np.int8)
    x = np.full((k, p), 127, np.int8)
    bias = np.full(m, 2**31 - 1000, np.int64)
    mult = np.full(m, 1 << 30, np.int64)
    shift = np.full(m, 62, np.int64)
    assert not Q.fits_int32(w, bias)
    plan = Q.Plan.gemm(k, p)
    Q.pack_pointwise(x, -128, 0, k, plan.buf)
    y = np.empty((m, p), np.int8)
    Q.qgemm(Q.pack_weights(w), plan, m, bias, mult, shift, 0, -128, 127, y, True)
    acc = w.astype(np.int64) @ (x.astype(np.int64) + 128)
    np.testing.assert_array_equal(y, golden_requant(acc, bias, mult, shift, 0, -128, 127))


def test_worst_case_products_exact():
    """|x - zp| = 255 and w = -128 or 127 everywhere (the largest pair sums)."""
    m, k, p = 9, 4001, 21
    w = np.full((m, k), -128, np.int8)
    w[::2] = 127
    x = np.full((p, k), -128, np.int8)  # used transposed: (K, P)
    bias = np.zeros(m, np.int64)
    mult = np.full(m, 1 << 30, np.int64)
    shift = np.full(m, 52, np.int64)
    plan = Q.Plan.gemm(k, p)
    Q.pack_pointwise(np.ascontiguousarray(x.T), 127, 0, k, plan.buf)
    out = np.empty((m, p), np.int8)
    Q.qgemm(Q.pack_weights(w), plan, m, bias, mult, shift, 0, -128, 127, out, False)
    acc = w.astype(np.int64) @ (x.T.astype(np.int64) - 127)
    np.testing.assert_array_equal(out, golden_requant(acc, bias, mult, shift, 0, -128, 127))


def golden_im2col(x, ks, strides, dil, pb, pe, zp):
    """(C*taps, P) int64 of ``x - zp`` with zero padding, by slicing a padded copy."""
    c = x.shape[0]
    sp = x.shape[1:]
    padded = np.zeros((c,) + tuple(s + a + b for s, a, b in zip(sp, pb, pe)), np.int64)
    padded[(slice(None),) + tuple(slice(a, a + s) for a, s in zip(pb, sp))] = (
        x.astype(np.int64) - zp)
    out = [(s + a + b - d * (kk - 1) - 1) // st + 1
           for s, a, b, d, kk, st in zip(sp, pb, pe, dil, ks, strides)]
    cols = []
    for tap in np.ndindex(*ks):
        sl = tuple(slice(t * d, t * d + st * (o - 1) + 1, st)
                   for t, d, st, o in zip(tap, dil, strides, out))
        cols.append(padded[(slice(None),) + sl].reshape(c, -1))
    col = np.stack(cols, axis=1).reshape(c * len(cols), -1)
    return col, out


def geo3(ks, strides, dil, pb, pe, sp, out):
    pad = 3 - len(ks)
    ones, zeros = [1] * pad, [0] * pad
    vals = (ones + list(ks), ones + list(strides), ones + list(dil), zeros + list(pb),
            ones + list(sp), ones + list(out), zeros + list(pe))
    return Geo(*(int(v) for g in vals for v in g))


@pytest.mark.parametrize("c,sp,ks,strides,dil,pb,pe", [
    (3, (9, 11), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    (5, (13, 10), (3, 2), (2, 3), (1, 2), (0, 2), (1, 0)),
    (2, (20,), (5,), (3,), (2,), (4,), (1,)),                  # 1-D
    (2, (4, 5, 6), (2, 3, 2), (1, 2, 1), (2, 1, 1), (1, 0, 1), (0, 1, 2)),  # 3-D
    (1, (3, 3), (3, 3), (1, 1), (1, 1), (4, 4), (4, 4)),        # taps wholly in the padding
    (7, (17, 17), (7, 7), (2, 2), (1, 1), (3, 3), (3, 3)),
])
def test_pack_conv_matches_im2col(c, sp, ks, strides, dil, pb, pe):
    x = RNG.integers(-128, 128, (c,) + sp).astype(np.int8)
    zp = -9
    col, out = golden_im2col(x, ks, strides, dil, pb, pe, zp)
    k, p = col.shape
    geo = geo3(ks, strides, dil, pb, pe, sp, out)
    x4 = x.reshape((c,) + (1,) * (3 - len(sp)) + sp)
    bp = Q.Plan.gemm(k, p).buf
    bp[:] = 77  # every element the packer owns must be overwritten; the rest stays 77
    Q.pack_conv(x4, zp, packed(geo), 0, Q.conv_taps(packed(geo), c), bp)
    ref = Q.Plan.gemm(k, p).buf
    ref[:] = 77
    # the same layout from the pointwise packer over the golden columns (+ zp, back to int8)
    Q.pack_pointwise((col + zp).astype(np.int8), zp, 0, k, ref)
    np.testing.assert_array_equal(bp, ref)
    # and the GEMM on top of it
    m = 8
    w = RNG.integers(-128, 128, (m, k)).astype(np.int8)
    bias, mult, shift = quant_params(m)
    plan = Q.Plan.gemm(k, p)
    Q.pack_conv(x4, zp, packed(geo), 0, Q.conv_taps(packed(geo), c), plan.buf)
    y = np.empty((m, p), np.int8)
    Q.qgemm(Q.pack_weights(w), plan, m, bias, mult, shift, -4, -128, 127, y, False)
    want = golden_requant(w.astype(np.int64) @ col, bias, mult, shift, -4, -128, 127)
    np.testing.assert_array_equal(y, want)
    # the implicit layout, where the geometry allows it, gives the same result
    implicit = Q.Plan.implicit_conv(geo, c)
    if implicit is not None:
        pack_padded_into(x4, zp, implicit, 0, c)
        y[:] = 0
        w_full = w.reshape((m, c) + ks)
        Q.qgemm(Q.pack_conv_weights(w_full), implicit, m, bias, mult, shift, -4, -128, 127, y,
                False)
        np.testing.assert_array_equal(y, want)


def pack_padded_into(x4, zp, plan, c0, c_n):
    Q.pack_padded(x4, zp, c0, c_n, plan.pads, plan.strides, plan.dims, plan.cstride, plan.buf)


def test_channel_range_of_pack_conv():
    """Packing channels ``c0 .. c0 + c_n`` (one group) reads only those channels."""
    x = RNG.integers(-128, 128, (6, 5, 5)).astype(np.int8)
    ks, st, dl, pb, pe = (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)
    col, out = golden_im2col(x[2:4], ks, st, dl, pb, pe, 5)
    geo = geo3(ks, st, dl, pb, pe, (5, 5), out)
    bp = Q.Plan.gemm(*col.shape).buf
    Q.pack_conv(x.reshape(6, 1, 5, 5), 5, packed(geo), 2, Q.conv_taps(packed(geo), 2), bp)
    ref = Q.Plan.gemm(*col.shape).buf
    Q.pack_pointwise((col + 5).astype(np.int8), 5, 0, col.shape[0], ref)
    np.testing.assert_array_equal(bp, ref)


@pytest.mark.parametrize("c,sp,ks,st,dil,pb,pe", [
    (3, (12, 14), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),      # odd channel count
    (4, (5, 33), (3, 3), (1, 1), (1, 1), (0, 0), (0, 0)),       # two tiles per row
    (6, (9, 16), (3, 5), (1, 1), (2, 1), (2, 0), (1, 3)),       # dilation, asymmetric pads
    (2, (44,), (7,), (1,), (2,), (3,), (3,)),                   # 1-D
    (5, (3, 4, 26), (2, 3, 3), (1, 1, 1), (1, 1, 2), (1, 0, 2), (0, 1, 1)),  # 3-D
    (3, (30, 31), (7, 7), (2, 2), (1, 1), (3, 3), (3, 3)),      # stem conv: 7x7 stride 2
    (4, (9, 40), (3, 3), (2, 3), (1, 1), (1, 0), (1, 1)),       # mixed strides, unused input
    (2, (11, 60), (3, 4), (3, 2), (2, 3), (2, 1), (0, 2)),      # stride with dilation
    (5, (4, 5, 50), (3, 2, 3), (2, 1, 2), (1, 2, 1), (1, 1, 1), (1, 0, 1)),  # 3-D strided
])
def test_implicit_layout_matches_golden_conv(c, sp, ks, st, dil, pb, pe):
    x = RNG.integers(-128, 128, (c,) + sp).astype(np.int8)
    zp = 11
    col, out = golden_im2col(x, ks, st, dil, pb, pe, zp)
    geo = geo3(ks, st, dil, pb, pe, sp, out)
    plan = Q.Plan.implicit_conv(geo, c)
    assert plan is not None
    m = 13
    w = RNG.integers(-128, 128, (m, c) + ks).astype(np.int8)
    bias, mult, shift = quant_params(m)
    pack_padded_into(x.reshape((c,) + (1,) * (3 - len(sp)) + sp), zp, plan, 0, c)
    y = np.empty((m, col.shape[1]), np.int8)
    Q.qgemm(Q.pack_conv_weights(w), plan, m, bias, mult, shift, 2, -128, 127, y, False)
    acc = w.reshape(m, -1).astype(np.int64) @ col
    np.testing.assert_array_equal(y, golden_requant(acc, bias, mult, shift, 2, -128, 127))


def test_implicit_layout_declined_for_short_rows():
    geo = geo3((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (7, 7), (7, 7))
    assert Q.Plan.implicit_conv(geo, 4) is None  # 7 of 16 lanes used
    geo = geo3((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (14, 14), (14, 14))
    assert Q.Plan.implicit_conv(geo, 4) is not None


def test_buffer_mismatch_raises_instead_of_reading_out_of_bounds():
    w = RNG.integers(-128, 128, (8, 10)).astype(np.int8)
    bias, mult, shift = quant_params(8)
    plan = Q.Plan.gemm(10, 40)
    small = Q.Plan.gemm(10, 16)
    y = np.empty((8, 40), np.int8)
    args = (bias, mult, shift, 0, -128, 127)
    with pytest.raises(ValueError):  # tiles of a 40-column plan, buffer of a 16-column one
        Q.qgemm_tiles(Q.pack_weights(w), small.buf, plan.offs, plan.cp_n, plan.cstride,
                      plan.tile_b, plan.tile_y, plan.tile_cols, 8, *args, y, False)
    with pytest.raises(ValueError):  # output narrower than the tiles
        Q.qgemm(Q.pack_weights(w), plan, 8, *args, np.empty((8, 30), np.int8), False)
    with pytest.raises(ValueError):  # weights for fewer rows
        Q.qgemm(Q.pack_weights(w[:5]), plan, 8, *args, y, False)
    with pytest.raises(ValueError):
        Q.pack_pointwise(np.zeros((10, 40), np.int8), 0, 0, 10, small.buf)
