"""Float32 direct convolution with output channels in the vector lanes (2-D, group 1).

The GEMM routes put output *positions* in the lanes: im2col + BLAS writes and re-reads a
column matrix ``k*k`` times the input, and the implicit GEMM of :mod:`.fgemm` loads 16
positions of one output row per step, so 7x7 maps waste lanes and every step touches a
different input plane with a vector load. Here a micro-tile is 16 output channels (two vectors
of 8) by ``NP = 6`` output positions: per reduction step it loads two vectors of packed weights
(contiguous: the weights stream in order) and broadcasts one input value per position
(12 FMAs, 2 vector loads, 6 scalar broadcasts: 15 of AVX2's 16 registers). Positions are
addressed one by one, so a tile may run across output rows and strides and dilations cost
nothing; the input only needs a padded copy (none without padding). This is the loop structure
of onnxruntime's NCHWc convolution, without converting the activations to a blocked layout.

Reduction order per output: taps outer, input channels inner, the same for every channel and
position (identical filters come out bit-identical).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native.llvm import data_ptr, is_array
from edgert.runtime.kernels.cpu.epilogue import ACT_CLIP, ACT_NONE, ACT_RELU, act_row

MC = 16  # output channels per micro-tile (two float32 vectors)
NP = 6  # output positions per micro-tile
# Input bytes per block of output positions: a block's padded input rows stay in L2 while every
# block of output channels runs over them.
BLOCK_BYTES = 256 << 10
SUB = 24  # tiles per epilogue pass: their results (9 KB) stay in L1 for the transpose


@intrinsic
def _dtile(typingctx, w, w_off, x, pos, offs, c_n, plane, out, out_off):
    """``out[out_off + j*MC + r] = sum_t sum_c w[w_off + (t*c_n + c)*MC + r] *
    x[pos[j] + offs[t] + c*plane]`` for ``j < NP``, ``r < MC`` (FMAs in that order). The
    caller checks every offset."""
    if not (is_array(w, types.float32, 1) and is_array(x, types.float32, 1)
            and is_array(pos, types.int64, 1) and is_array(offs, types.int64, 1)
            and is_array(out, types.float32, 1)):
        return None
    sig = types.void(w, types.intp, x, pos, offs, types.intp, types.intp, out, types.intp)

    def codegen(context, builder, signature, args):
        w_a, w_off_v, x_a, pos_a, offs_a, c_v, plane_v, out_a, out_off_v = args
        idx_t = w_off_v.type
        f32 = ir.FloatType()
        v8 = ir.VectorType(f32, 8)
        i32 = ir.IntType(32)
        zeros8 = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]),
                                             "llvm.fma.v8f32")

        def const(v):
            return ir.Constant(idx_t, v)

        wp0 = builder.gep(data_ptr(context, builder, signature.args[0], w_a), [w_off_v])
        xp0 = data_ptr(context, builder, signature.args[2], x_a)
        pp = data_ptr(context, builder, signature.args[3], pos_a)
        op = data_ptr(context, builder, signature.args[4], offs_a)
        n_taps = context.make_array(signature.args[4])(context, builder, offs_a).nitems
        cp = builder.gep(data_ptr(context, builder, signature.args[7], out_a), [out_off_v])
        pos = [builder.load(builder.gep(pp, [const(j)])) for j in range(NP)]
        slots = []
        for j in range(NP):
            for h in range(2):
                slot = cgutils.alloca_once(builder, v8)
                builder.store(ir.Constant(v8, None), slot)
                slots.append(slot)
        with cgutils.for_range(builder, n_taps) as taps:
            t = taps.index
            xt = builder.gep(xp0, [builder.load(builder.gep(op, [t]))])
            wt = builder.gep(wp0, [builder.mul(builder.mul(t, c_v), const(MC))])

            def step(c):
                wc = builder.gep(wt, [builder.mul(c, const(MC))])
                w0 = builder.load(builder.bitcast(wc, v8.as_pointer()), align=4)
                w1 = builder.load(builder.bitcast(builder.gep(wc, [const(8)]), v8.as_pointer()),
                                  align=4)
                xc = builder.gep(xt, [builder.mul(c, plane_v)])
                for j in range(NP):
                    s = builder.load(builder.gep(xc, [pos[j]]))
                    vec = builder.insert_element(ir.Constant(v8, ir.Undefined), s,
                                                 ir.Constant(i32, 0))
                    vec = builder.shuffle_vector(vec, vec, zeros8)
                    for h, wv in enumerate((w0, w1)):
                        slot = slots[j * 2 + h]
                        builder.store(builder.call(fma, [wv, vec, builder.load(slot)]), slot)

            rolled_loop(builder, c_v, step)
        for j in range(NP):
            for h in range(2):
                ptr = builder.bitcast(builder.gep(cp, [const(j * MC + h * 8)]), v8.as_pointer())
                builder.store(builder.load(slots[j * 2 + h]), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


def rolled_loop(builder, count, body) -> None:
    """``for i in range(count): body(i)`` in IR, marked ``llvm.loop.unroll.disable``.

    LLVM's runtime unrolling of the micro-tile's reduction loop doubled the live address
    registers (one strength-reduced pointer per broadcast position), which spilled to the stack
    inside the loop and halved its speed (seen in the assembly); the rolled loop addresses
    every position from one base register.
    """
    module = builder.module
    unroll = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = module.add_metadata([ir.MetaDataString(module, f"edgert.loop.{id(builder)}")])
    loop_id.operands = (loop_id, unroll)  # a loop ID names itself first
    idx_t = count.type
    pre = builder.basic_block
    head = builder.append_basic_block("rolled.head")
    body_bb = builder.append_basic_block("rolled.body")
    end = builder.append_basic_block("rolled.end")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(idx_t)
    i.add_incoming(ir.Constant(idx_t, 0), pre)
    builder.cbranch(builder.icmp_signed("<", i, count), body_bb, end)
    builder.position_at_end(body_bb)
    body(i)
    nxt = builder.add(i, ir.Constant(idx_t, 1))
    latch = builder.basic_block
    br = builder.branch(head)
    br.set_metadata("llvm.loop", loop_id)
    i.add_incoming(nxt, latch)
    builder.position_at_end(end)


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Float32 weights ``(M, C, KH, KW)`` -> flat ``[m_block, tap, c, MC]`` (zeros past M)."""
    m_n, c_n = w.shape[:2]
    taps = int(np.prod(w.shape[2:]))
    mb_n = -(-m_n // MC)
    t = np.zeros((mb_n * MC, c_n, taps), np.float32)
    t[:m_n] = np.asarray(w, np.float32).reshape(m_n, c_n, taps)
    return np.ascontiguousarray(t.reshape(mb_n, MC, c_n, taps).transpose(0, 3, 2, 1)).reshape(-1)


class Geometry:
    """A 2-D conv's padded-input layout and tap offsets (from a conv.py ``geo`` array)."""

    def __init__(self, geo: np.ndarray, c_n: int):
        kh, kw = int(geo.kh), int(geo.kw)
        self.sh, self.sw = int(geo.sh), int(geo.sw)
        dh, dw = int(geo.dh), int(geo.dw)
        self.pt, self.pl = int(geo.ph), int(geo.pw)
        h, w = int(geo.h), int(geo.w)
        self.oh, self.ow = int(geo.oh), int(geo.ow)
        pb, pr = int(geo.phe), int(geo.pwe)
        self.c_n = c_n
        self.padded = bool(self.pt or self.pl or pb or pr)
        self.hp, self.wp = h + self.pt + pb, w + self.pl + pr
        self.plane = self.hp * self.wp
        self.offs = np.array([a * dh * self.wp + b * dw for a in range(kh) for b in range(kw)],
                             np.int64)
        # Positions per block: the padded input rows one block of output rows reads.
        row_bytes = c_n * self.wp * 4 * self.sh
        rows = max(1, BLOCK_BYTES // max(row_bytes, 1))
        self.block_tiles = max(1, -(-rows * self.ow // NP))

    @property
    def pad_elems(self) -> int:
        """Scratch floats for the padded copy (0 without padding)."""
        return self.c_n * self.plane if self.padded else 0


@njit(parallel=True)
def pad_input(x, xp, pt, pl):
    """``xp (C, HP, WP)`` = ``x (C, H, W)`` placed at ``(pt, pl)``, zeros around, per channel."""
    c_n, h_n, w_n = x.shape
    hp_n, wp_n = xp.shape[1], xp.shape[2]
    if pt < 0 or pl < 0 or pt + h_n > hp_n or pl + w_n > wp_n or xp.shape[0] != c_n:
        raise ValueError("pad_input: the padded buffer does not fit the input")
    zero = np.float32(0.0)
    for c in prange(c_n):
        for r in range(hp_n):
            dst = xp[c, r]
            if r < pt or r >= pt + h_n:
                dst[:] = zero
                continue
            dst[:pl] = zero
            dst[pl:pl + w_n] = x[c, r - pt]
            dst[pl + w_n:] = zero


pad_input_serial = serial_twin(pad_input)


@njit
def share(tiles, mb_n, parts, g):
    """Thread ``g``'s share of ``parts``: a range of position tiles with every channel block, or
    (on maps of a few tiles) every tile with a range of channel blocks. Returns ``(ta, tb, ma,
    mz)``."""
    if tiles >= 4 * parts or mb_n < parts:
        return tiles * g // parts, tiles * (g + 1) // parts, 0, mb_n
    return 0, tiles, mb_n * g // parts, mb_n * (g + 1) // parts


@njit
def reach_fits(offs, oh_n, ow_n, sh, sw, wp, unit, cstride, c_n, width, size):
    """True when every tap offset is >= 0 and the farthest element a tile can read (the last
    position's last tap of the last channel, ``width`` elements wide) lies below ``size``."""
    max_off = 0
    for t in range(offs.size):
        if offs[t] < 0:
            return False
        max_off = max(max_off, offs[t])
    if oh_n * ow_n == 0:
        return True
    last = unit * ((oh_n - 1) * sh * wp + (ow_n - 1) * sw) + max_off + (c_n - 1) * cstride
    return last + width - 1 < size


@njit
def units(ta, tb, ma, mz, block_tiles):
    """How many (position block, channel block) units a :func:`share` covers."""
    return ((tb - ta + block_tiles - 1) // block_tiles) * (mz - ma)


@njit
def unit_span(u, ta, tb, ma, mz, block_tiles, ow_n):
    """Unit ``u`` of a share: its channel block, tile range and the first tile's output row and
    column, blocks of positions outer (consecutive units reuse the same input rows)."""
    blk = u // (mz - ma)
    mb = ma + u - blk * (mz - ma)
    t0 = ta + blk * block_tiles
    t1 = min(tb, t0 + block_tiles)
    oh = t0 * NP // ow_n
    return mb, t0, t1, oh, t0 * NP - oh * ow_n


@njit
def tile_positions(pos, cols, oh, ow, ow_n, sh, sw, wp, unit):
    """Fill ``pos[j]`` with the offsets (``unit`` elements per input position) of the next
    ``cols`` output positions from ``(oh, ow)``, a short tile repeating its last; returns the
    ``(oh, ow)`` after them."""
    for j in range(NP):
        if j < cols:
            pos[j] = unit * (oh * sh * wp + ow * sw)
            ow += 1
            if ow == ow_n:
                ow = 0
                oh += 1
        else:
            pos[j] = pos[j - 1]
    return oh, ow


@njit(parallel=True)
def dconv(wpack, x, offs, c_n, plane, wp, sh, sw, oh_n, ow_n, block_tiles, sub, bias, act, p0,
          p1, y, z, parts):
    """``y[m, q] = act(bias[m] + conv + z[m, q])`` for ``y (M, OH*OW)`` from the flat padded
    input ``x``; ``z``, the residual (edgert.Conv's fourth input), is of ``y``'s shape or empty.

    Blocks of ``block_tiles`` position tiles times blocks of ``MC`` output channels are the
    units of work, blocks of positions outer so that consecutive units reuse the same input
    rows; the epilogue runs after every ``sub`` tiles. Every offset a tile can reach is checked
    first.
    """
    m_n, p_n = y.shape
    mb_n = (m_n + MC - 1) // MC
    t_n = offs.size
    ok = (c_n >= 1 and plane >= 0 and wp >= 1 and sh >= 1 and sw >= 1 and p_n == oh_n * ow_n
          and wpack.size >= mb_n * t_n * c_n * MC and (bias.size == 0 or bias.size >= m_n)
          and block_tiles >= 1 and sub >= 1
          and (z.size == 0 or (z.shape[0] == m_n and z.shape[1] == p_n))
          and reach_fits(offs, oh_n, ow_n, sh, sw, wp, 1, plane, c_n, 1, x.size))
    if not ok:
        raise ValueError("dconv: the geometry does not fit its buffers")
    tiles = (p_n + NP - 1) // NP
    has_bias = bias.size > 0
    has_z = z.size > 0
    k_n = t_n * c_n
    zero = np.float32(0.0)
    for g in prange(parts):
        ta, tb, ma, mz = share(tiles, mb_n, parts, g)
        # SUB tiles' results, position-major (16 channels per position): the tiles store whole
        # vectors here, and the epilogue transposes them into y's rows while they are in L1.
        acc = np.empty(sub * NP * MC, np.float32)
        pos = np.empty(NP, np.int64)
        for u in range(units(ta, tb, ma, mz, block_tiles)):
            mb, t0, t1, oh, ow = unit_span(u, ta, tb, ma, mz, block_tiles, ow_n)
            m0 = mb * MC
            rows = min(MC, m_n - m0)
            for s0 in range(t0, t1, sub):
                s1 = min(t1, s0 + sub)
                for tile in range(s0, s1):
                    oh, ow = tile_positions(pos, min(NP, p_n - tile * NP), oh, ow, ow_n, sh, sw,
                                            wp, 1)
                    _dtile(wpack, mb * k_n * MC, x, pos, offs, c_n, plane, acc,
                           (tile - s0) * NP * MC)
                q0 = s0 * NP
                nq = min(p_n, s1 * NP) - q0
                for r in range(rows):
                    bv = bias[m0 + r] if has_bias else zero
                    dst = y[m0 + r, q0:q0 + nq]
                    if has_z:
                        zr = z[m0 + r, q0:q0 + nq]
                        for q in range(nq):
                            dst[q] = acc[q * MC + r] + bv + zr[q]
                        if act != ACT_NONE:
                            act_row(dst, zero, act, p0, p1)
                    elif act == ACT_RELU:  # NaN stays NaN, as epilogue.py's Relu
                        for q in range(nq):
                            v = acc[q * MC + r] + bv
                            dst[q] = zero if v < zero else v  # noqa: FURB136
                    elif act == ACT_CLIP:  # NaN passes through, as epilogue.py's clip
                        for q in range(nq):
                            v = acc[q * MC + r] + bv
                            v = p0 if v < p0 else v  # noqa: FURB136
                            dst[q] = p1 if v > p1 else v  # noqa: FURB136
                    else:
                        for q in range(nq):
                            dst[q] = acc[q * MC + r] + bv
                        if act != ACT_NONE:
                            act_row(dst, zero, act, p0, p1)


dconv_serial = serial_twin(dconv)
