"""Int8 GEMM on pairwise int16 multiply-adds (``vpmaddwd``), with packing and requantization.

The int8 scheme's products are small: ``|x - zp| <= 255`` and ``|w| <= 128``. Each fits an
int16, and a *pair* of products summed fits an int32 with room to spare. x86's ``vpmaddwd``
(and NEON's ``smlal`` pairs) does exactly that for 16 int16 lanes at once: 16 multiply-adds per
instruction against 8 for a float32 FMA, and bit-exact. Numba's auto-vectorizer would not
produce it for a register-blocked loop (it emitted ``vpmulld`` at half the float32 rate), so
the inner kernel here is written directly in LLVM IR through a Numba intrinsic, in the generic
form LLVM's backends match to their pairwise multiply-add: sign-extend, multiply, add the even
and odd lanes. No target-specific intrinsic is named, so the code is valid on every CPU Numba
supports; on this project's AVX2 reference machine it reaches 55-75 GMAC/s against 30-45 for
OpenBLAS sgemm (``benchmarks/quantize_speed.py``).

Operands (the reduction runs over int16 *pairs*; an odd count is padded with a zero):

* weights ``A`` -> ``apack[mt, kp, r]``: int32 holding the int16 pair of output channel
  ``mt*MR + r`` for pair ``kp``; rows past ``M`` are zero. Packed once at prepare.
* activations ``B``, packed per call in one of two layouts, both read by the same micro-kernel
  through a :class:`Plan` (per column tile: where its data starts and where its outputs go;
  per reduction step: a list of tap offsets and a pair stride):

  - *GEMM layout* ``bpack[pt, kp, j, h]`` = ``B[2kp + h, pt*NR + j]``: for 1x1 convs, Gemm, and
    strided convs (filled by an im2col fused with the zero-point subtraction, :func:`pack_conv`);
  - *implicit layout* for stride-1 convs: the input itself, zero-point subtracted, padded with
    zeros and channel pairs interleaved, ``xpack[cp, z, y, x, h]``. The ``B`` vector of tap
    ``(kd, kh, kw)`` for 16 consecutive outputs of one output row is then 32 contiguous int16
    at a fixed offset: no im2col matrix (9x the input for a 3x3 conv) is ever built, and the
    padding costs no bounds tests. Column tiles follow output rows (a row's last tile may be
    partial).

The micro-kernel computes an ``MR x NR`` int32 tile: per step it loads two vectors of ``B`` and
broadcasts each row's int32 pair of ``A`` (12 accumulators, 2 operands and a broadcast: 15 of
AVX2's 16 registers). :func:`qgemm_tiles` walks the tiles in the order that re-reads the smaller
operand from cache, in parallel, and requantizes each tile straight to int8 while it is in L1
(no int32 or float intermediate matrix).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import get_num_threads, types
from numba.extending import intrinsic

from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu._native.llvm import MR, NR, data_ptr, emit_tile, is_array

BLOCK_BYTES = 1 << 20  # B data per cache block of column tiles (measured: 192 KB-8 MB)
# A plan buffer above this size goes to the interpreter's shared scratch instead of being kept
# per layer (a 1024x1024 image with 32 channels would otherwise hold 130 MB in every layer).
SHARE_BYTES = 4 << 20


@intrinsic
def _tile(typingctx, a, a_off, b, b_off, offs, cp_n, cstride, c):
    """``c[r, j] = sum_t sum_cp madd(A pair (t, cp) of row r, B pair at b_off + offs[t] +
    cp * cstride + 2j)``.

    ``a``: int32 1-D (:func:`pack_weights`, pairs ordered ``(t, cp)``), ``b``: int16 1-D,
    ``offs``: int64 1-D tap offsets, ``c``: C-contiguous int32 ``(MR, NR)``. The GEMM layout is
    one tap at offset 0 with ``cstride = 2 * NR``. The caller guarantees every offset is in
    bounds (:func:`qgemm_tiles` checks the plan before any tile runs).
    """
    if not (is_array(a, types.int32, 1) and is_array(b, types.int16, 1)
            and is_array(offs, types.int64, 1) and is_array(c, types.int32, 2)):
        return None
    sig = types.void(a, types.intp, b, types.intp, offs, types.intp, types.intp, c)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        v8 = ir.VectorType(i32, 8)
        v16 = ir.VectorType(i32, 16)
        even = ir.Constant(v8, list(range(0, 16, 2)))
        odd = ir.Constant(v8, list(range(1, 16, 2)))

        def madd(acc, x16, y16):
            # sext-mul-add of even and odd lanes: the pattern LLVM lowers to vpmaddwd.
            p = builder.mul(builder.sext(x16, v16), builder.sext(y16, v16))
            return builder.add(acc, builder.add(builder.shuffle_vector(p, p, even),
                                                builder.shuffle_vector(p, p, odd)))

        emit_tile(context, builder, signature, args, v8, ir.VectorType(ir.IntType(16), 16),
                  madd)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _interleave16(typingctx, dst, d_off, r0, o0, r1, o1, zp):
    """``dst[d_off + 2j] = r0[o0 + j] - zp``, ``dst[d_off + 2j + 1] = r1[o1 + j] - zp``, j < 16.

    One 64-byte line of ``bpack`` from two int8 rows: two 16-byte loads, sign extension, a
    subtraction and an interleaving shuffle (the loop form of this ran scalar, 0.65 ns per
    element). ``dst``: int16 1-D; ``r0``/``r1``: int8 1-D; offsets checked by the caller.
    """
    if not (is_array(dst, types.int16, 1) and is_array(r0, types.int8, 1)
            and is_array(r1, types.int8, 1)):
        return None
    sig = types.void(dst, types.intp, r0, types.intp, r1, types.intp, types.int16)

    def codegen(context, builder, signature, args):
        dst_a, d_off_v, r0_a, o0_v, r1_a, o1_v, zp_v = args
        b16 = ir.VectorType(ir.IntType(8), 16)
        h16 = ir.VectorType(ir.IntType(16), 16)
        h32 = ir.VectorType(ir.IntType(16), 32)
        zp_vec = builder.shuffle_vector(
            builder.insert_element(ir.Constant(h16, ir.Undefined), zp_v,
                                   ir.Constant(ir.IntType(32), 0)),
            ir.Constant(h16, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 16),
                                                        [0] * 16))

        def row(arr, arrty, off):
            ptr = builder.gep(data_ptr(context, builder, arrty, arr), [off])
            v = builder.load(builder.bitcast(ptr, b16.as_pointer()), align=1)
            return builder.sub(builder.sext(v, h16), zp_vec)

        a = row(r0_a, signature.args[2], o0_v)
        b = row(r1_a, signature.args[4], o1_v)
        order = [i // 2 + (16 if i % 2 else 0) for i in range(32)]
        both = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 32),
                                                        order))
        ptr = builder.gep(data_ptr(context, builder, signature.args[0], dst_a), [d_off_v])
        builder.store(both, builder.bitcast(ptr, h32.as_pointer()), align=2)
        return context.get_dummy_value()

    return sig, codegen


def _splat(builder, val, vt):
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), val, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vt.count),
                                              [0] * vt.count))


def _emit_fixed_mul(builder, v, mm, rnd, s2):
    """IR for ``(int64(v) * mm + rnd) >> 32 >> s2`` on a vector of int32 ``v``.

    ``mm`` (i32), ``rnd`` (i64) and ``s2`` (i32) are scalars: the fixed-point multiply of the
    int8 scheme with a single rounding, ``shift = s2 + 32``. The 32x32 -> 64-bit product
    (``vpmuldq``), taking the high half and an int32 shift are exact: nested floor divisions
    by powers of two compose.
    """
    n = v.type.count
    i32, i64 = ir.IntType(32), ir.IntType(64)
    q_t, v_t = ir.VectorType(i64, n), ir.VectorType(i32, n)
    q = builder.mul(builder.sext(v, q_t), builder.sext(_splat(builder, mm, v_t), q_t))
    q = builder.add(q, _splat(builder, rnd, q_t))
    t = builder.trunc(builder.lshr(q, _splat(builder, ir.Constant(i64, 32), q_t)), v_t)
    return builder.ashr(t, _splat(builder, s2, v_t))


def _emit_clamp_store(context, builder, t, zo, lo, hi, arrty, arr, off):
    """IR: ``arr[off + j] = int8(clamp(t[j] + zo, lo, hi))`` for a vector ``t`` of int32."""
    v_t = t.type
    t = builder.add(t, _splat(builder, zo, v_t))
    lo_s, hi_s = _splat(builder, lo, v_t), _splat(builder, hi, v_t)
    t = builder.select(builder.icmp_signed("<", t, lo_s), lo_s, t)
    t = builder.select(builder.icmp_signed(">", t, hi_s), hi_s, t)
    b_t = ir.VectorType(ir.IntType(8), v_t.count)
    yp = builder.gep(data_ptr(context, builder, arrty, arr), [off])
    builder.store(builder.trunc(t, b_t), builder.bitcast(yp, b_t.as_pointer()), align=1)


@intrinsic
def _requant16(typingctx, c, r, y, y_off, b, mm, rnd, s2, zo, lo, hi):
    """``y[y_off + j] = clamp(zo + ((int64(c[r, j] + b) * mm + rnd) >> 32 >> s2))``, j < 16.

    The requantization of one full tile row in vectors (:func:`_emit_fixed_mul`): ``c[r] + b``
    is int32 (the caller checked it cannot overflow), ``mm`` the int32 multiplier, ``rnd =
    2**(shift - 1)`` and ``s2 = shift - 32 >= 0``. ``y``: int8 1-D.
    """
    if not (is_array(c, types.int32, 2) and is_array(y, types.int8, 1)):
        return None
    sig = types.void(c, types.intp, y, types.intp, types.int32, types.int32, types.int64,
                     types.int32, types.int32, types.int32, types.int32)

    def codegen(context, builder, signature, args):
        c_a, r_v, y_a, y_off_v, b_v, mm_v, rnd_v, s2_v, zo_v, lo_v, hi_v = args
        v16 = ir.VectorType(ir.IntType(32), 16)
        cp = builder.gep(data_ptr(context, builder, signature.args[0], c_a),
                         [builder.mul(r_v, ir.Constant(r_v.type, NR))])
        acc = builder.load(builder.bitcast(cp, v16.as_pointer()), align=4)
        acc = builder.add(acc, _splat(builder, b_v, v16))
        t = _emit_fixed_mul(builder, acc, mm_v, rnd_v, s2_v)
        _emit_clamp_store(context, builder, t, zo_v, lo_v, hi_v, signature.args[2], y_a, y_off_v)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _qadd16(typingctx, a, b, out, off, prm):
    """TFLite's int8 Add for ``a[off:off+16] + b[off:off+16]`` into ``out``, in vectors.

    ``prm`` (int64): ``za, zb, ma, rnd_a, s2_a, mb, rnd_b, s2_b, mo, rnd_o, s2_o, zo, lo,
    hi``: ``va = fixed_mul((a - za) << 20, ma)``, likewise ``vb``, ``out = clamp(zo +
    fixed_mul(va + vb, mo))`` (every shift >= 32, checked by the caller; ``(a - za) << 20``
    and ``va + vb`` fit int32).
    """
    if not (is_array(a, types.int8, 1) and is_array(b, types.int8, 1)
            and is_array(out, types.int8, 1) and is_array(prm, types.int64, 1)):
        return None
    sig = types.void(a, b, out, types.intp, prm)

    def codegen(context, builder, signature, args):
        a_a, b_a, o_a, off_v, p_a = args
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        b16 = ir.VectorType(ir.IntType(8), 16)
        pp = data_ptr(context, builder, signature.args[4], p_a)

        def prm_at(i, t=i32):
            v = builder.load(builder.gep(pp, [ir.Constant(off_v.type, i)]))
            return v if t is None else builder.trunc(v, t)

        def side(arr, arrty, zi, base):
            ptr = builder.gep(data_ptr(context, builder, arrty, arr), [off_v])
            x = builder.sext(builder.load(builder.bitcast(ptr, b16.as_pointer()), align=1), v16)
            x = builder.shl(builder.sub(x, _splat(builder, prm_at(zi), v16)),
                            _splat(builder, ir.Constant(i32, 20), v16))
            return _emit_fixed_mul(builder, x, prm_at(base), prm_at(base + 1, None),
                                   prm_at(base + 2))

        va = side(a_a, signature.args[0], 0, 2)
        vb = side(b_a, signature.args[1], 1, 5)
        t = _emit_fixed_mul(builder, builder.add(va, vb), prm_at(8), prm_at(9, None),
                            prm_at(10))
        _emit_clamp_store(context, builder, t, prm_at(11), prm_at(12), prm_at(13),
                          signature.args[2], o_a, off_v)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True)
def qadd(a, b, prm, out):
    """:func:`_qadd16` over whole int8 vectors (equal sizes), the tail element by element with
    the same integer arithmetic."""
    n = out.size
    if a.size != n or b.size != n or prm.size < 14:
        raise ValueError("qadd: operand sizes do not match")
    blocks = n // NR
    chunk = 4096 // NR
    for c in prange((blocks + chunk - 1) // chunk):
        for blk in range(c * chunk, min(blocks, (c + 1) * chunk)):
            _qadd16(a, b, out, blk * NR, prm)
    for i in range(blocks * NR, n):
        va = ((((np.int64(a[i]) - prm[0]) << 20) * prm[2] + prm[3]) >> 32) >> prm[4]
        vb = ((((np.int64(b[i]) - prm[1]) << 20) * prm[5] + prm[6]) >> 32) >> prm[7]
        v = ((((va + vb) * prm[8]) + prm[9]) >> 32 >> prm[10]) + prm[11]
        out[i] = min(max(v, prm[12]), prm[13])


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Int8 weights ``(M, K)`` -> flat int32 ``apack``; pairs are consecutive ``k``."""
    m_n, k_n = w.shape
    mt_n = -(-m_n // MR)
    kp_n = -(-k_n // 2)
    w16 = np.zeros((mt_n * MR, kp_n * 2), np.int16)
    w16[:m_n, :k_n] = w
    t = w16.reshape(mt_n, MR, kp_n, 2).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(t).view(np.int32).reshape(-1)


def pack_conv_weights(w: np.ndarray) -> np.ndarray:
    """Conv weights ``(M, C, *kernel)`` -> ``apack`` for the implicit layout: steps ordered
    ``(tap, channel pair)``, each pair two channels of one tap."""
    m_n, c_n = w.shape[:2]
    taps = int(np.prod(w.shape[2:]))
    t = np.zeros((m_n, taps, c_n + c_n % 2), np.int16)
    t[:, :, :c_n] = w.reshape(m_n, c_n, taps).transpose(0, 2, 1)
    return pack_weights(t.reshape(m_n, -1))


class Plan:
    """How :func:`qgemm_tiles` reads ``B`` and where each column tile's outputs go.

    ``offs``/``cp_n``/``cstride``: the reduction (taps x channel pairs, see :func:`_tile`);
    ``tile_b``/``tile_y``/``tile_cols``: per column tile, its ``B`` offset, its first output
    column and its width (``<= NR``); ``buf``: the zeroed ``B`` buffer the packer fills.
    """

    def __init__(self, offs, cp_n: int, cstride: int, tile_b, tile_y, tile_cols, size: int,
                 pads=(0, 0, 0), strides=(1, 1, 1), dims=(0, 0, 0), dtype=np.int16):
        self.offs = np.asarray(offs, np.int64)
        self.cp_n, self.cstride = int(cp_n), int(cstride)
        self.tile_b = np.asarray(tile_b, np.int64)
        self.tile_y = np.asarray(tile_y, np.int64)
        self.tile_cols = np.asarray(tile_cols, np.int64)
        self.size, self.dtype = int(size), np.dtype(dtype)
        # Large buffers are not kept per layer: the kernel puts them in the interpreter's
        # shared scratch (see :meth:`share`), zeroed before each use.
        self.buf = np.zeros(size, dtype) if self.size * self.dtype.itemsize <= SHARE_BYTES \
            else None
        # implicit layout only: pads begin, strides and the per-phase plane (Dq, Hq, Wq)
        self.pads = np.asarray(pads, np.int64)
        self.strides = np.asarray(strides, np.int64)
        self.dims = np.asarray(dims, np.int64)
        self.implicit = bool(self.dims[0] > 0)

    @property
    def shared(self) -> bool:
        """True when the buffer lives in a shared scratch: :meth:`buffer` zeroes it per use."""
        return self.buf is None

    def buffer(self, scratch: np.ndarray | None) -> np.ndarray:
        """The buffer to pack into: the plan's own, or the shared ``scratch`` (bytes, at least
        ``size`` elements; a fresh array when the kernel runs outside an interpreter), zeroed:
        the packers write only where data goes and leave the padding to the zeros."""
        if self.buf is not None:
            return self.buf
        n = self.size * self.dtype.itemsize
        buf = (np.empty(self.size, self.dtype) if scratch is None
               else scratch[:n].view(self.dtype))
        buf[:] = 0
        return buf

    @classmethod
    def gemm(cls, k_n: int, p_n: int) -> Plan:
        """The GEMM layout for a ``(K, P)`` operand (:func:`pack_pointwise`, :func:`pack_conv`)."""
        kp_n = -(-k_n // 2)
        pt = np.arange(-(-p_n // NR), dtype=np.int64)
        return cls([0], kp_n, 2 * NR, pt * kp_n * 2 * NR, pt * NR,
                   np.minimum(NR, p_n - pt * NR), pt.size * kp_n * 2 * NR)

    @classmethod
    def implicit_conv(cls, geo: np.ndarray, c_n: int, lanes: int = 2,
                      dtype=np.int16) -> Plan | None:
        """The implicit layout for a conv of ``c_n`` input channels (``geo`` as conv.py's
        ``Window.geo``), or None when output rows are so short that a row-aligned tile would
        waste over a quarter of its lanes (the GEMM layout is then better). ``lanes``: values
        per input position, 2 (an int16 channel pair, this module) or 1 (fgemm.py's float32).

        A strided conv is split into stride phases (space-to-depth): phase ``(py, px)`` holds
        the padded input's rows ``py, py + s, ...`` and columns likewise, so that tap ``kh`` of
        output row ``oh`` is row ``oh + kh*dh // s`` of phase ``kh*dh % s`` and 16 consecutive
        outputs again read 16 consecutive inputs. Stride 1 is the single-phase case.
        """
        kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw = (int(v) for v in geo[:12])
        od_n, oh_n, ow_n = (int(v) for v in geo[15:18])
        if min(od_n, oh_n, ow_n, sd, sh, sw) < 1 or min(pd, ph, pw) < 0:
            return None
        tpr = -(-ow_n // NR)
        if 4 * ow_n < 3 * tpr * NR:
            return None
        dq = od_n + (kd - 1) * dd // sd
        hq = oh_n + (kh - 1) * dh // sh
        wq = tpr * NR + (kw - 1) * dw // sw
        plane = dq * hq * wq * lanes
        cp_n = -(-c_n // lanes)
        cstride = sd * sh * sw * plane
        offs = []
        for a in range(kd):
            for b in range(kh):
                for c in range(kw):
                    phase = (((a * dd) % sd) * sh + (b * dh) % sh) * sw + (c * dw) % sw
                    offs.append(phase * plane + (((a * dd) // sd * hq + (b * dh) // sh) * wq
                                                 + (c * dw) // sw) * lanes)
        i = np.arange(od_n * oh_n * tpr, dtype=np.int64)
        row, q = i // tpr, i % tpr
        od, oh = row // oh_n, row % oh_n
        tile_b = ((od * hq + oh) * wq + q * NR) * lanes
        return cls(offs, cp_n, cstride, tile_b, row * ow_n + q * NR,
                   np.minimum(NR, ow_n - q * NR), cp_n * cstride, (pd, ph, pw), (sd, sh, sw),
                   (dq, hq, wq), dtype)


@njit(parallel=True)
def pack_pointwise(x, zp, c0, k_n, bpack):
    """``bpack`` from rows ``c0 .. c0 + k_n`` of C-contiguous int8 ``x (C, P)`` minus ``zp``
    (a 1x1 conv's input, or a Gemm's transposed input).

    Parallel over pairs of rows: the pair ``kp`` of a column tile is one 64-byte line, written
    whole by one thread with one vector shuffle (:func:`_interleave16`).
    """
    p_n = x.shape[1]
    kp_n = (k_n + 1) // 2
    stride = kp_n * 2 * NR
    if bpack.size < ((p_n + NR - 1) // NR) * stride or x.shape[0] < c0 + k_n or c0 < 0:
        raise ValueError("pack_pointwise: buffer or rows do not match")
    full = p_n // NR
    zp16 = np.int16(zp)
    for kp in prange(kp_n):
        r0 = x[c0 + 2 * kp]
        if 2 * kp + 1 < k_n:
            r1 = x[c0 + 2 * kp + 1]
            for t in range(full):
                _interleave16(bpack, t * stride + kp * 2 * NR, r0, t * NR, r1, t * NR, zp16)
            dst = full * stride + kp * 2 * NR
            for j in range(p_n - full * NR):
                bpack[dst + 2 * j] = np.int16(r0[full * NR + j]) - zp16
                bpack[dst + 2 * j + 1] = np.int16(r1[full * NR + j]) - zp16
        else:  # the last row of an odd K: its pair-mate stays the zero written at allocation
            for p in range(p_n):
                bpack[(p // NR) * stride + kp * 2 * NR + 2 * (p % NR)] = (
                    np.int16(r0[p]) - zp16)


@njit(parallel=True)
def pack_padded(x, zp, c0, c_n, pads, strides, dims, cstride, buf):
    """Fill the implicit layout (see :meth:`Plan.implicit_conv`) from channels ``c0 .. c0 +
    c_n`` of int8 ``x (C, D, H, W)`` minus ``zp``.

    The padding, the pad channel of an odd count and inputs no output reads are the zeros
    written at allocation; only the interior is written, one channel pair per thread (stride 1
    along W: 16 columns per vector shuffle; otherwise element by element into the phases).
    """
    d_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    pd, ph, pw = pads[0], pads[1], pads[2]
    sd, sh, sw = strides[0], strides[1], strides[2]
    dq, hq, wq = dims[0], dims[1], dims[2]
    plane = dq * hq * wq * 2
    cp_n = (c_n + 1) // 2
    if (buf.size < cp_n * cstride or cstride < sd * sh * sw * plane or min(pd, ph, pw) < 0
            or min(sd, sh, sw) < 1 or x.shape[0] < c0 + c_n or c0 < 0):
        raise ValueError("pack_padded: buffer or input do not match the plan")
    zp16 = np.int16(zp)
    # input columns [x_lo, x_hi) land inside the phase planes (x + pw < wq * sw)
    x_hi = min(w_n, wq * sw - pw)
    for cp in prange(cp_n):
        two = 2 * cp + 1 < c_n
        for z in range(d_n):
            zz = z + pd
            if zz >= dq * sd:
                continue
            for yy in range(h_n):
                yp = yy + ph
                if yp >= hq * sh:
                    continue
                r0 = x[c0 + 2 * cp, z, yy]
                r1 = x[c0 + 2 * cp + 1, z, yy] if two else r0
                base = cp * cstride + ((zz % sd) * sh + yp % sh) * sw * plane + (
                    ((zz // sd) * hq + yp // sh) * wq * 2)
                if sw == 1 and two:
                    dst = base + pw * 2
                    full = x_hi // NR
                    for t in range(full):
                        _interleave16(buf, dst + t * 2 * NR, r0, t * NR, r1, t * NR, zp16)
                    for i in range(full * NR, x_hi):
                        buf[dst + 2 * i] = np.int16(r0[i]) - zp16
                        buf[dst + 2 * i + 1] = np.int16(r1[i]) - zp16
                else:
                    # phase by phase: input column i = j * sw + b - pw lands at (b, j)
                    for b in range(sw):
                        j0 = max(0, (pw - b + sw - 1) // sw)
                        dst = base + b * plane
                        for j in range(j0, wq):
                            i = j * sw + b - pw
                            if i >= x_hi:
                                break
                            buf[dst + 2 * j] = np.int16(r0[i]) - zp16
                            if two:
                                buf[dst + 2 * j + 1] = np.int16(r1[i]) - zp16


@njit
def conv_taps(geo_a, c_n):
    """Per row ``k = (c, kd, kh, kw)`` of the column matrix: ``(c, kd*dd - pd, kh*dh - ph,
    ow_lo, ow_hi, kw*dw - pw)`` where ``[ow_lo, ow_hi)`` are the output columns whose input
    column ``ow * sw + kw*dw - pw`` lies inside the row (an empty range has ``lo >= hi``)."""
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sw = geo.sw
    dd, dh, dw = geo.dd, geo.dh, geo.dw
    pd, ph, pw = geo.pd, geo.ph, geo.pw
    w_n, ow_n = geo.w, geo.ow
    taps = kd_n * kh_n * kw_n
    out = np.empty((c_n * taps, 6), np.int64)
    for k in range(c_n * taps):
        c = k // taps
        t = k - c * taps
        kd = t // (kh_n * kw_n)
        kh = (t // kw_n) % kh_n
        kw = t % kw_n
        off = kw * dw - pw
        lo = 0 if off >= 0 else (-off + sw - 1) // sw
        hi = min(ow_n, (w_n - 1 - off) // sw + 1) if w_n - 1 - off >= 0 else 0
        out[k, 0] = c
        out[k, 1] = kd * dd - pd
        out[k, 2] = kh * dh - ph
        out[k, 3] = lo
        out[k, 4] = max(hi, lo)
        out[k, 5] = off
    return out


@njit
def _tap_offset(x, taps, k, z0, y0, ow0, c0):
    """Flat offset in ``x`` of the 16 inputs of row ``k`` for output columns ``ow0 ..
    ow0 + 16`` (stride 1), or -1 when any of them falls into the padding."""
    iz = z0 + taps[k, 1]
    iy = y0 + taps[k, 2]
    if (iz < 0 or iz >= x.shape[1] or iy < 0 or iy >= x.shape[2] or ow0 < taps[k, 3]
            or ow0 + NR > taps[k, 4]):
        return -1
    return ((c0 + taps[k, 0]) * x.shape[1] + iz) * x.shape[2] * x.shape[3] + (
        iy * x.shape[3] + ow0 + taps[k, 5])


@njit
def _pack_tap(x, taps, k, z0, y0, ow0, run, sw, c0, zp16, bpack, dst):
    """``bpack[dst + 2j] = x[tap k at output column ow0 + j] - zp`` for ``j < run``, or 0 where
    the tap falls into the padding (no per-element bounds test: the valid range is clipped)."""
    iz = z0 + taps[k, 1]
    iy = y0 + taps[k, 2]
    lo = max(ow0, taps[k, 3])
    hi = min(ow0 + run, taps[k, 4])
    if iz < 0 or iz >= x.shape[1] or iy < 0 or iy >= x.shape[2] or hi <= lo:
        for j in range(run):
            bpack[dst + 2 * j] = 0
        return
    for j in range(lo - ow0):
        bpack[dst + 2 * j] = 0
    src = x[c0 + taps[k, 0], iz, iy]
    off = taps[k, 5]
    for ow in range(lo, hi):
        bpack[dst + 2 * (ow - ow0)] = np.int16(src[ow * sw + off]) - zp16
    for j in range(hi - ow0, run):
        bpack[dst + 2 * j] = 0


@njit(parallel=True)
def pack_conv(x, zp, geo_a, c0, taps, bpack):
    """``bpack`` of the im2col matrix of channels ``c0 ..`` of one image, minus ``zp``.

    ``x``: int8 ``(C, D, H, W)``; ``geo``: the conv geometry (conv.py ``Window.geo``); ``taps``:
    :func:`conv_taps` for the group's channel count (computed once at prepare). Row ``k`` of
    the column matrix is ``(c, kd, kh, kw)``, column ``p`` is ``(od, oh, ow)``; taps in the
    padding are ``x - zp = 0`` (ONNX pads a quantized conv with the zero point).

    Parallel over column tiles: each tile's block of ``bpack`` is contiguous and written front
    to back by one thread. A tile's 16 columns are split into runs along one output row, so
    each tap copies a contiguous (or strided) input segment with no per-element bounds test.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    d_n, h_n = x.shape[1], x.shape[2]
    od_n, oh_n, ow_n = geo.od, geo.oh, geo.ow
    k_n = taps.shape[0]
    kp_n = (k_n + 1) // 2
    stride = kp_n * 2 * NR
    p_n = od_n * oh_n * ow_n
    pt_n = (p_n + NR - 1) // NR
    c_max = 0
    for k in range(k_n):
        c_max = max(c_max, taps[k, 0] + 1)
    if (bpack.size < pt_n * stride or x.shape[0] < c0 + c_max or geo.d != d_n
            or geo.h != h_n or geo.w != x.shape[3] or taps.shape[1] != 6):
        raise ValueError("pack_conv: buffer or input do not match the geometry")
    xf = x.reshape(-1)
    zp16 = np.int16(zp)
    for pt in prange(pt_n):
        base = pt * stride
        p = pt * NR
        p1 = min(p + NR, p_n)
        while p < p1:
            row = p // ow_n  # (od, oh) flattened
            ow0 = p - row * ow_n
            run = min(p1 - p, ow_n - ow0)  # columns of this tile on this output row
            od = row // oh_n
            oh = row - od * oh_n
            j0 = p - pt * NR
            for kp in range(kp_n):
                dst = base + kp * 2 * NR + 2 * j0
                k0 = 2 * kp
                if run == NR and sw == 1 and k0 + 1 < k_n:
                    o0 = _tap_offset(x, taps, k0, od * sd, oh * sh, ow0, c0)
                    o1 = _tap_offset(x, taps, k0 + 1, od * sd, oh * sh, ow0, c0)
                    if o0 >= 0 and o1 >= 0:  # both taps wholly inside: one vector line
                        _interleave16(bpack, dst, xf, o0, xf, o1, zp16)
                        continue
                _pack_tap(x, taps, k0, od * sd, oh * sh, ow0, run, sw, c0, zp16, bpack, dst)
                if k0 + 1 < k_n:
                    _pack_tap(x, taps, k0 + 1, od * sd, oh * sh, ow0, run, sw, c0, zp16,
                              bpack, dst + 1)
            p += run


def qgemm(apack: np.ndarray, plan: Plan, m_n: int, bias, mult, shift, zo: int, lo: int,
          hi: int, y: np.ndarray, wide: bool, buf: np.ndarray | None = None) -> None:
    """Run :func:`qgemm_tiles` for a packed ``buf`` (default ``plan.buf``) into int8 ``y``."""
    qgemm_tiles(apack, plan.buf if buf is None else buf, plan.offs, plan.cp_n, plan.cstride,
                plan.tile_b, plan.tile_y, plan.tile_cols, m_n, bias, mult, shift, zo, lo, hi, y,
                wide, get_num_threads())


@njit(parallel=True)
def qgemm_tiles(apack, b, offs, cp_n, cstride, tile_b, tile_y, tile_cols, m_n, bias, mult,
                shift, zo, lo, hi, y, wide, threads=1):
    """``y[m, col] = clamp(zo + requant(bias[m] + sum A[m, :] * B[:, col]))``.

    ``apack`` from :func:`pack_weights` / :func:`pack_conv_weights`; ``b`` and the tile arrays
    from a :class:`Plan`; ``y`` a C-contiguous int8 ``(M, P)`` array. ``bias``/``mult``/``shift``
    are int64 per row; the requantization is quantized.py's fixed-point rule (``(v * mult +
    2**(shift-1)) >> shift``, ties up), exact. ``wide=False`` promises that ``acc + bias`` fits
    int32 (:func:`fits_int32`), which lets the epilogue run in vectors. ``threads``: Numba's
    thread count (picks what to split: column blocks, or row tiles when blocks are fewer).

    Every offset the micro-kernel will use is checked first: a plan that does not fit its
    buffers raises instead of reading or writing out of bounds.
    """
    mt_n = (m_n + MR - 1) // MR
    t_n = tile_b.size
    kp_n = offs.size * cp_n
    p_n = y.shape[1]
    ok = (apack.size >= mt_n * kp_n * MR and y.shape[0] == m_n and bias.size >= m_n
          and mult.size >= m_n and shift.size >= m_n and tile_y.size == t_n
          and tile_cols.size == t_n and cp_n >= 0 and cstride >= 0)
    reach = 0
    for t in range(offs.size):
        ok = ok and offs[t] >= 0
        reach = max(reach, offs[t])
    reach += max(cp_n - 1, 0) * cstride + 2 * NR
    for i in range(t_n):
        ok = (ok and tile_b[i] >= 0 and tile_b[i] + reach <= b.size and tile_y[i] >= 0
              and 0 < tile_cols[i] <= NR and tile_y[i] + tile_cols[i] <= p_n)
    if not ok:
        raise ValueError("qgemm_tiles: the plan does not fit its buffers")
    yf = y.reshape(-1)
    # Cache blocking: a block of column tiles whose B data (K x 64 bytes each) fits half of
    # L2 is multiplied by every row tile in turn, so each A panel (K x 24 bytes) is read from
    # L2/L3 once per block and reused from L1 across the block's tiles, and the block's B is
    # read from L2. (Walking all tiles per row tile streamed B from L3 for large K x P, and
    # all row tiles per column tile streamed A: 40-45 GMAC/s against 55-60 blocked.)
    tb = max(1, BLOCK_BYTES // (kp_n * 4 * NR))
    nb = (t_n + tb - 1) // tb
    by_blocks = nb >= threads or mt_n < 2
    units = nb if by_blocks else mt_n  # what the threads split: column blocks or row tiles
    for u in prange(units):
        c = np.empty((MR, NR), np.int32)
        tail = np.empty(NR, np.int8)
        mt0 = 0 if by_blocks else u
        mt1 = mt_n if by_blocks else u + 1
        t0 = u * tb if by_blocks else 0
        t1 = min(t_n, (u + 1) * tb) if by_blocks else t_n
        for mt in range(mt0, mt1):
            for i in range(t0, t1):
                # (written out here, not as a called function: the call with its twenty
                # array arguments cost as much as a 64-deep tile)
                _tile(apack, mt * kp_n * MR, b, tile_b[i], offs, cp_n, cstride, c)
                p0 = tile_y[i]
                cols = tile_cols[i]
                for r in range(min(MR, m_n - mt * MR)):
                    m = mt * MR + r
                    sh = shift[m]
                    rnd = np.int64(1) << (sh - 1)
                    if wide:
                        for j in range(cols):
                            v = (((np.int64(c[r, j]) + bias[m]) * mult[m] + rnd) >> sh) + zo
                            y[m, p0 + j] = min(max(v, lo), hi)
                    elif sh >= 32:
                        # int32 acc + bias (checked by the caller: fits_int32), vectors
                        dst = yf if cols == NR else tail
                        _requant16(c, r, dst, m * p_n + p0 if cols == NR else 0,
                                   np.int32(bias[m]), np.int32(mult[m]), rnd,
                                   np.int32(sh - 32), np.int32(zo), np.int32(lo),
                                   np.int32(hi))
                        if cols < NR:  # a row's last tile: through a scratch row
                            for j in range(cols):
                                y[m, p0 + j] = tail[j]
                    else:
                        bb = np.int32(bias[m])
                        mm = np.int64(np.int32(mult[m]))
                        for j in range(cols):
                            v = ((np.int64(np.int32(c[r, j] + bb)) * mm + rnd) >> sh) + zo
                            y[m, p0 + j] = min(max(v, lo), hi)


def fits_int32(w: np.ndarray, bias: np.ndarray) -> bool:
    """True when every ``acc + bias`` of int8 weights ``w (M, K)`` stays inside int32.

    ``|acc| <= 255 * sum_k |w[m, k]|`` (``|x - zp| <= 255``), an exact bound per row.
    """
    bound = 255 * np.abs(w.astype(np.int64)).sum(axis=1) + np.abs(bias.astype(np.int64))
    return bool(np.all(bound < 2**31))
