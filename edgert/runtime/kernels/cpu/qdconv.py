"""Int8 direct convolution with output channels in the vector lanes (2-D, group 1, k x k).

The int8 counterpart of :mod:`.dconv`: a micro-tile is 16 output channels by ``NP = 6``
positions. The input is copied once per call into a padded layout of channel *pairs*,
``(x - x_zero_point)`` as int16 with the two channels of a pair side by side, so one 32-bit
load at a position is the pair; broadcast to all lanes, it meets a vector of packed weights
(8 output channels x the same 2 input channels, int16) in a pairwise multiply-add
(sext/mul/add of even and odd lanes, which LLVM lowers to ``vpmaddwd``): 16 multiply-adds per
instruction, exact in int32. Per step 2 weight vectors, 6 broadcasts, 12 multiply-adds.

The implicit GEMM of :mod:`.qgemm` puts positions in the lanes, so its tiles touch a different
input row per step and 7x7 or 13x13 maps waste lanes; here positions are addressed one by one
(any stride and dilation) and the weights stream in order. The epilogue requantizes each
accumulator exactly as :mod:`.quantized` does (int64 ``(acc + bias) * M`` rounded by one shift),
so results are bit-identical with the other int8 paths.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu import dconv
from edgert.runtime.kernels.cpu._native.llvm import data_ptr, is_array
from edgert.runtime.kernels.cpu.dconv import (
    MC,
    NP,
    reach_fits,
    rolled_loop,
    share,
    tile_positions,
    unit_span,
    units,
)


@intrinsic
def _qtile(typingctx, w, w_off, x, pos, offs, cp_n, cstride, out, out_off):
    """``out[out_off + j*MC + r] = sum_t sum_cp sum_e w[w_off + ((t*cp_n + cp)*MC + r)*2 + e] *
    x[pos[j] + offs[t] + cp*cstride + e]`` (int16 products summed in int32), ``j < NP``,
    ``r < MC``. The caller checks every offset."""
    if not (is_array(w, types.int16, 1) and is_array(x, types.int16, 1)
            and is_array(pos, types.int64, 1) and is_array(offs, types.int64, 1)
            and is_array(out, types.int32, 1)):
        return None
    sig = types.void(w, types.intp, x, pos, offs, types.intp, types.intp, out, types.intp)

    def codegen(context, builder, signature, args):
        w_a, w_off_v, x_a, pos_a, offs_a, cp_v, cs_v, out_a, out_off_v = args
        idx_t = w_off_v.type
        i16, i32 = ir.IntType(16), ir.IntType(32)
        v8 = ir.VectorType(i32, 8)
        h16 = ir.VectorType(i16, 16)
        w16 = ir.VectorType(i32, 16)
        zeros8 = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
        even = ir.Constant(v8, list(range(0, 16, 2)))
        odd = ir.Constant(v8, list(range(1, 16, 2)))

        def const(v):
            return ir.Constant(idx_t, v)

        def madd(acc, a, b):
            p = builder.mul(builder.sext(a, w16), builder.sext(b, w16))
            return builder.add(acc, builder.add(builder.shuffle_vector(p, p, even),
                                                builder.shuffle_vector(p, p, odd)))

        wp0 = builder.gep(data_ptr(context, builder, signature.args[0], w_a), [w_off_v])
        xp0 = data_ptr(context, builder, signature.args[2], x_a)
        pp = data_ptr(context, builder, signature.args[3], pos_a)
        op = data_ptr(context, builder, signature.args[4], offs_a)
        n_taps = context.make_array(signature.args[4])(context, builder, offs_a).nitems
        cp = builder.gep(data_ptr(context, builder, signature.args[7], out_a), [out_off_v])
        pos = [builder.load(builder.gep(pp, [const(j)])) for j in range(NP)]
        slots = []
        for _ in range(NP * 2):
            slot = cgutils.alloca_once(builder, v8)
            builder.store(ir.Constant(v8, None), slot)
            slots.append(slot)
        with cgutils.for_range(builder, n_taps) as taps:
            t = taps.index
            xt = builder.gep(xp0, [builder.load(builder.gep(op, [t]))])
            wt = builder.gep(wp0, [builder.mul(builder.mul(t, cp_v), const(2 * MC))])

            def step(c):
                wc = builder.gep(wt, [builder.mul(c, const(2 * MC))])
                w0 = builder.load(builder.bitcast(wc, h16.as_pointer()), align=2)
                w1 = builder.load(builder.bitcast(builder.gep(wc, [const(16)]), h16.as_pointer()),
                                  align=2)
                xc = builder.gep(xt, [builder.mul(c, cs_v)])
                for j in range(NP):
                    pair = builder.load(builder.bitcast(builder.gep(xc, [pos[j]]),
                                                        i32.as_pointer()), align=2)
                    vec = builder.insert_element(ir.Constant(v8, ir.Undefined), pair,
                                                 ir.Constant(i32, 0))
                    vec = builder.bitcast(builder.shuffle_vector(vec, vec, zeros8), h16)
                    for h, wv in enumerate((w0, w1)):
                        slot = slots[j * 2 + h]
                        builder.store(madd(builder.load(slot), wv, vec), slot)

            rolled_loop(builder, cp_v, step)
        for j in range(NP):
            for h in range(2):
                ptr = builder.bitcast(builder.gep(cp, [const(j * MC + h * 8)]), v8.as_pointer())
                builder.store(builder.load(slots[j * 2 + h]), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Int8 weights ``(M, C, KH, KW)`` -> flat int16 ``[m_block, tap, c_pair, MC, 2]`` (zeros
    past M and past an odd C)."""
    m_n, c_n = w.shape[:2]
    taps = int(np.prod(w.shape[2:]))
    mb_n = -(-m_n // MC)
    cp_n = -(-c_n // 2)
    t = np.zeros((mb_n * MC, cp_n * 2, taps), np.int16)
    t[:m_n, :c_n] = np.asarray(w, np.int16).reshape(m_n, c_n, taps)
    t = t.reshape(mb_n, MC, cp_n, 2, taps).transpose(0, 4, 2, 1, 3)
    return np.ascontiguousarray(t).reshape(-1)


class Geometry(dconv.Geometry):
    """:class:`.dconv.Geometry` for the pair layout: padded planes of ``(HP, WP, 2)`` int16 per
    channel pair, offsets in int16 elements."""

    def __init__(self, geo: np.ndarray, c_n: int):
        super().__init__(geo, -(-c_n // 2))  # blocks sized by pairs of 4 bytes, as floats
        self.cp_n = self.c_n
        self.cstride = self.plane * 2  # int16 elements per channel pair
        self.size = self.cp_n * self.cstride
        self.offs = self.offs * 2


@njit(parallel=True)
def pack_pairs(x, zp, buf, pt, pl):
    """``buf (CP, HP, WP, 2)`` int16 = ``x (C, H, W)`` int8 minus ``zp`` at ``(pt, pl)``, pairs
    of channels interleaved; padding (and the missing channel of an odd count) is 0."""
    c_n, h_n, w_n = x.shape
    cp_n, hp_n, wp_n = buf.shape[0], buf.shape[1], buf.shape[2]
    if (pt < 0 or pl < 0 or pt + h_n > hp_n or pl + w_n > wp_n or buf.shape[3] != 2
            or cp_n * 2 < c_n or (cp_n - 1) * 2 >= c_n):
        raise ValueError("pack_pairs: the buffer does not fit the input")
    z = np.int16(zp)
    for cp in prange(cp_n):
        c0 = 2 * cp
        two = c0 + 1 < c_n
        for r in range(hp_n):
            dst = buf[cp, r]
            if r < pt or r >= pt + h_n:
                dst[:, :] = 0
                continue
            dst[:pl, :] = 0
            dst[pl + w_n:, :] = 0
            a = x[c0, r - pt]
            if two:
                b = x[c0 + 1, r - pt]
                for i in range(w_n):
                    dst[pl + i, 0] = np.int16(a[i]) - z
                    dst[pl + i, 1] = np.int16(b[i]) - z
            else:
                for i in range(w_n):
                    dst[pl + i, 0] = np.int16(a[i]) - z
                    dst[pl + i, 1] = 0


pack_pairs_serial = serial_twin(pack_pairs)


@njit(parallel=True)
def qdconv(wpack, x, offs, cp_n, cstride, wp, sh, sw, oh_n, ow_n, block_tiles, sub, bias, mult,
           shift, zo, lo, hi, y, parts):
    """``y[m, q] = clamp(requant(conv + bias[m]) + zo, lo, hi)`` for int8 ``y (M, OH*OW)`` from
    the pair layout ``x``; work split and blocking as :func:`.dconv.dconv`."""
    m_n, p_n = y.shape
    mb_n = (m_n + MC - 1) // MC
    t_n = offs.size
    ok = (cp_n >= 1 and cstride >= 0 and wp >= 1 and sh >= 1 and sw >= 1 and p_n == oh_n * ow_n
          and wpack.size >= mb_n * t_n * cp_n * MC * 2 and bias.size >= m_n
          and mult.size >= m_n and shift.size >= m_n and block_tiles >= 1 and sub >= 1
          and reach_fits(offs, oh_n, ow_n, sh, sw, wp, 2, cstride, cp_n, 2, x.size))
    for m in range(min(m_n, shift.size)):
        ok = ok and 1 <= shift[m] <= 62
    if not ok:
        raise ValueError("qdconv: the geometry does not fit its buffers")
    tiles = (p_n + NP - 1) // NP
    k_n = t_n * cp_n * 2
    for g in prange(parts):
        ta, tb, ma, mz = share(tiles, mb_n, parts, g)
        acc = np.empty(sub * NP * MC, np.int32)
        pos = np.empty(NP, np.int64)
        for u in range(units(ta, tb, ma, mz, block_tiles)):
            mb, t0, t1, oh, ow = unit_span(u, ta, tb, ma, mz, block_tiles, ow_n)
            m0 = mb * MC
            rows = min(MC, m_n - m0)
            for s0 in range(t0, t1, sub):
                s1 = min(t1, s0 + sub)
                for tile in range(s0, s1):
                    oh, ow = tile_positions(pos, min(NP, p_n - tile * NP), oh, ow, ow_n, sh, sw,
                                            wp, 2)
                    _qtile(wpack, mb * k_n * MC, x, pos, offs, cp_n, cstride, acc,
                           (tile - s0) * NP * MC)
                q0 = s0 * NP
                nq = min(p_n, s1 * NP) - q0
                for r in range(rows):
                    m = m0 + r
                    b, mm, s = np.int64(bias[m]), np.int64(mult[m]), np.int64(shift[m])
                    rnd = np.int64(1) << (s - 1)
                    dst = y[m, q0:q0 + nq]
                    for q in range(nq):
                        v = ((np.int64(acc[q * MC + r]) + b) * mm + rnd) >> s
                        v += zo
                        dst[q] = min(max(v, lo), hi)


qdconv_serial = serial_twin(qdconv)
