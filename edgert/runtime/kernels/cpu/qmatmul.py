"""Integer matmul of 8-bit operands with a constant B, exact in int32: MatMulInteger as
``quantize_dynamic`` writes it (``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul``), the
layers of hub-style dynamically quantized transformers.

Every operand pair is brought to u8 x s8, the form of the CPU's byte dot products: a uint8 A is
used as is, an int8 A is offset by 128 (its zero point too); an int8 B as is, a uint8 B offset by
-128. With ``A' = A + a_off``, ``B' = B + b_off`` and the zero points moved alike (``za``, ``zb``)::

    sum_k (A - za)(B - zb) = sum_k A'B' - za * colsum(B') - zb * (rowsum(A') - K * za)

so the product kernel never sees a zero point: the column sums of B' are computed once at
prepare, the row sums of A' while packing it. All of it is int32 arithmetic that wraps, so the
result equals the exact integer result modulo 2^32, which is MatMulInteger's int32 output (no
inner dimension a real model uses comes near overflow).

Two micro-kernels compute ``C = A'B'`` on tiles:

* **VNNI** (AVX-512 with ``vpdpbusd``): A' packed as u8 quads (4 consecutive k of one row in an
  int32), B' as s8 quads of 32 columns; each step broadcasts a row's quad and adds 64 byte
  products per instruction into 16 int32 lanes. An 8 x 32 tile keeps 16 zmm accumulators.
* **int16 pairs** everywhere else: qgemm's ``vpmaddwd``-form tile (16 products per instruction
  on AVX2), A' and B' packed as int16 pairs.

:func:`features <edgert.runtime.kernels.cpu._native.isa.features>` decides which one the CPU that
Numba compiles for can run. Tiles are split over the threads in column-panel order (a panel of B
stays in cache while the row tiles of A pass over it).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import get_num_threads, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu._native import isa
from edgert.runtime.kernels.cpu._native.llvm import MR, NR, data_ptr, is_array
from edgert.runtime.kernels.cpu.epilogue import ACT_NONE, act_row
from edgert.runtime.kernels.cpu.qgemm import _tile as _tile_pairs

MRV = 8  # VNNI tile: rows of A
NRV = 32  # VNNI tile: columns of B (two 16-lane vectors)


@intrinsic
def _tile_vnni(typingctx, a, a_off, b, b_off, kq_n, c):
    """``c[r, j] = sum_q dot4(u8 quad a[a_off + q * MRV + r], s8 quads of b[b_off + q * NRV +
    j])`` over ``kq_n`` quads, for an ``MRV x NRV`` tile; ``a``/``b``: int32 1-D holding byte
    quads, ``c``: C-contiguous int32 ``(MRV, NRV)``. The caller checks the offsets."""
    if not (is_array(a, types.int32, 1) and is_array(b, types.int32, 1)
            and is_array(c, types.int32, 2)):
        return None
    sig = types.void(a, types.intp, b, types.intp, types.intp, c)

    def codegen(context, builder, signature, args):
        a_arr, a_off_v, b_arr, b_off_v, kq_v, c_arr = args
        idx_t = a_off_v.type
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16] * 3),
                                            "llvm.x86.avx512.vpdpbusd.512")
        zeros16 = ir.Constant(v16, [0] * 16)

        def const(v):
            return ir.Constant(idx_t, v)

        ap = builder.gep(data_ptr(context, builder, signature.args[0], a_arr), [a_off_v])
        bp = builder.gep(data_ptr(context, builder, signature.args[2], b_arr), [b_off_v])
        cp = data_ptr(context, builder, signature.args[5], c_arr)
        slots = []
        for r in range(MRV):
            for h in range(2):
                slot = cgutils.alloca_once(builder, v16)
                builder.store(ir.Constant(v16, None), slot)
                slots.append(slot)
        with cgutils.for_range(builder, kq_v) as loop:
            q = loop.index
            bq = builder.gep(bp, [builder.mul(q, const(NRV))])
            b0 = builder.load(builder.bitcast(bq, v16.as_pointer()), align=4)
            b1 = builder.load(builder.bitcast(builder.gep(bq, [const(16)]), v16.as_pointer()),
                              align=4)
            aq = builder.gep(ap, [builder.mul(q, const(MRV))])
            for r in range(MRV):
                scalar = builder.load(builder.gep(aq, [const(r)]))
                vec = builder.insert_element(ir.Constant(v16, ir.Undefined), scalar,
                                             ir.Constant(i32, 0))
                vec = builder.shuffle_vector(vec, vec, zeros16)
                for h, bv in enumerate((b0, b1)):
                    slot = slots[r * 2 + h]
                    builder.store(builder.call(fn, [builder.load(slot), vec, bv]), slot)
        for r in range(MRV):
            for h in range(2):
                ptr = builder.bitcast(builder.gep(cp, [const(r * NRV + h * 16)]),
                                      v16.as_pointer())
                builder.store(builder.load(slots[r * 2 + h]), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


# ----- packing A (per call) -----------------------------------------------------------------------
@njit(parallel=True)
def _pack_a(a, flip, zp, group, mr, out, rowsum, rowzp):
    """Pack A' = (a xor flip) (uint8 view, [M, K]) into ``out[mt, kg, r, u]`` (u < ``group``:
    4 for byte quads, 2 for int16 pairs; padding zero); ``rowsum[m]`` = sum of row m of A',
    ``rowzp[m]`` = its zero point (``zp``: one per row, or one for all) offset alike."""
    m_n, k_n = a.shape
    mt_n, kg_n = out.shape[0], out.shape[1]
    for mt in prange(mt_n):
        panel = out[mt]  # [kg, r, u] (views indexed from 0: no wraparound tests in the loops)
        for r in range(mr):
            m = mt * mr + r
            if m >= m_n:
                for q in range(kg_n):
                    for u in range(group):
                        panel[q, r, u] = 0
                continue
            row = a[m]
            s = 0
            for q in range(kg_n):
                for u in range(group):
                    k = q * group + u
                    v = np.int32(row[k] ^ flip) if k < k_n else np.int32(0)
                    panel[q, r, u] = v
                    s += v
            rowsum[m] = s
            rowzp[m] = (np.int32(zp[m if zp.size > 1 else 0]) ^ flip)


@njit(parallel=True)
def _pack_conv_a(x, flip, zp, kh, kw, sh, sw, dh, dw, ph, pw, ow_n, m_n, k_n, mr, out32, rowsum,
                 rowzp, elem):
    """im2col straight into the packed layout: row ``m`` (output position ``(m // ow_n,
    m % ow_n)``) of A' holds the input window ``x[c, ih, iw]`` in W's ``(c, i, j)`` order, the
    zero point ``zp`` (a raw byte) where the window leaves the input, each byte xor ``flip``.
    ``x``: uint8 view ``[C, H, W]``; ``out32``: the packing buffer as int32 words ``[mt, kg,
    r]`` (a word holds the row's byte quad or int16 pair); ``elem``: an empty array of the
    element type (uint8 quads, int16 pairs). Every index into ``x`` is tested first."""
    c_n, h_n, w_n = x.shape
    mt_n, kg_n = out32.shape[0], out32.shape[1]
    pad = zp ^ flip
    for mt in prange(mt_n):
        row = np.zeros(out32.shape[1] * (4 // elem.itemsize), elem.dtype)  # (tail stays 0)
        words = row.view(np.int32)
        panel = out32[mt]
        for r in range(mr):
            m = mt * mr + r
            if m >= m_n:
                for q in range(kg_n):
                    panel[q, r] = 0
                continue
            oh = m // ow_n
            ow = m - oh * ow_n
            ih0 = oh * sh - ph
            iw0 = ow * sw - pw
            k = 0
            for c in range(c_n):
                plane = x[c]
                for i in range(kh):
                    ih = ih0 + i * dh
                    if 0 <= ih < h_n:
                        line = plane[ih]
                        for j in range(kw):
                            iw = iw0 + j * dw
                            row[k + j] = (line[iw] ^ flip) if 0 <= iw < w_n else pad
                    else:
                        for j in range(kw):
                            row[k + j] = pad
                    k += kw
            s = 0
            for t in range(k_n):
                s += np.int32(row[t])
            rowsum[m] = s
            rowzp[m] = np.int32(pad)
            for q in range(kg_n):
                panel[q, r] = words[q]


@njit
def _finish_tile(c, mt, nt, mr, nr, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr, out,
                 trans):
    """int32 results of a tile, the zero-point terms applied (int32 arithmetic: wraps).

    ``colcorr`` (when not empty): ``za * colsum`` for a zero point ``za`` shared by all rows and
    no column zero points, the common case, which leaves one subtraction per element. ``trans``:
    ``out`` is ``[N, M]`` (a convolution's channel-major output, written column by column)."""
    rows = min(mr, m_n - mt * mr)
    cols = min(nr, n_n - nt * nr)
    n0 = nt * nr
    m0 = mt * mr
    if trans:
        for j in range(cols):
            n = n0 + j
            dst = out[n, m0:m0 + rows]
            if colcorr.size:
                cj = colcorr[n]
                for r in range(rows):
                    dst[r] = c[r, j] - cj
            else:
                zb = colzp[n]
                cs = colsum[n]
                for r in range(rows):
                    za = np.int64(rowzp[m0 + r])
                    dst[r] = np.int64(c[r, j]) - za * cs - zb * (np.int64(rowsum[m0 + r])
                                                                 - k_n * za)
        return
    if colcorr.size:
        cc = colcorr[n0:n0 + cols]  # (views indexed from 0: offsets from a prange index kept
        for r in range(rows):       # Numba's negative-index wraparound and ran as gathers)
            dst = out[mt * mr + r, n0:n0 + cols]
            for j in range(cols):
                dst[j] = c[r, j] - cc[j]
        return
    for r in range(rows):
        m = mt * mr + r
        za = np.int64(rowzp[m])
        rt = np.int64(rowsum[m]) - k_n * za
        for j in range(cols):
            n = n0 + j
            out[m, n] = np.int64(c[r, j]) - za * colsum[n] - colzp[n] * rt  # (wraps to int32)


@njit(fastmath=False)
def _finish_tile_float(c, mt, nt, mr, nr, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr,
                       scale, bias, act, p0, p1, out):
    """``act(float32(int32 result) * scale[n] (+ bias[n]))``: Cast, Mul and Add each rounded as
    the unfused ops round them (no contraction into a fused multiply-add), then the fused
    activation (epilogue.py's codes). ``scale``: N values."""
    rows = min(mr, m_n - mt * mr)
    cols = min(nr, n_n - nt * nr)
    n0 = nt * nr
    if colcorr.size:  # one zero point for all rows, none per column: vectorized
        cc = colcorr[n0:n0 + cols]  # (views indexed from 0, as in _finish_tile)
        sc = scale[n0:n0 + cols]
        bi = bias[n0:n0 + cols] if bias.size else bias
        for r in range(rows):
            dst = out[mt * mr + r, n0:n0 + cols]
            if bias.size:
                for j in range(cols):
                    dst[j] = np.float32(np.int32(c[r, j] - cc[j])) * sc[j] + bi[j]
            else:
                for j in range(cols):
                    dst[j] = np.float32(np.int32(c[r, j] - cc[j])) * sc[j]
            if act != ACT_NONE:
                act_row(dst, np.float32(0.0), act, p0, p1)
        return
    for r in range(rows):
        m = mt * mr + r
        za = np.int64(rowzp[m])
        rt = np.int64(rowsum[m]) - k_n * za
        for j in range(cols):
            n = n0 + j
            v = np.int32(np.int64(c[r, j]) - za * colsum[n] - colzp[n] * rt)
            y = np.float32(v) * scale[n]
            if bias.size:
                y = y + bias[n]
            out[m, n] = y
        if act != ACT_NONE:
            act_row(out[m, n0:n0 + cols], np.float32(0.0), act, p0, p1)


@njit(inline="always")
def _finish(c, mt, nt, mr, nr, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr, out, scale,
            bias, act, p0, p1, out_f, trans):
    """A tile's epilogue, shared by both drivers: float32 into ``out_f`` when it is not empty,
    else int32 into ``out``."""
    if out_f.size > 0:
        _finish_tile_float(c, mt, nt, mr, nr, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp,
                           colcorr, scale, bias, act, p0, p1, out_f)
    else:
        _finish_tile(c, mt, nt, mr, nr, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr,
                     out, trans)


@njit(parallel=True)
def _mm_vnni(apack, bpack, kq_n, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr, out, scale,
             bias, act, p0, p1, out_f, trans, threads):
    mt_n = (m_n + MRV - 1) // MRV
    nt_n = (n_n + NRV - 1) // NRV
    tasks = mt_n * nt_n
    workers = max(1, min(threads, tasks))
    for w in prange(workers):
        c = np.empty((MRV, NRV), np.int32)
        for task in range(w * tasks // workers, (w + 1) * tasks // workers):
            nt = task // mt_n
            mt = task - nt * mt_n
            _tile_vnni(apack, mt * kq_n * MRV, bpack, nt * kq_n * NRV, kq_n, c)
            _finish(c, mt, nt, MRV, NRV, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr,
                    out, scale, bias, act, p0, p1, out_f, trans)


@njit(parallel=True)
def _mm_pairs(apack, bpack, kp_n, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr, out, scale,
              bias, act, p0, p1, out_f, trans, threads):
    mt_n = (m_n + MR - 1) // MR
    nt_n = (n_n + NR - 1) // NR
    tasks = mt_n * nt_n
    workers = max(1, min(threads, tasks))
    offs = np.zeros(1, np.int64)
    for w in prange(workers):
        c = np.empty((MR, NR), np.int32)
        for task in range(w * tasks // workers, (w + 1) * tasks // workers):
            nt = task // mt_n
            mt = task - nt * mt_n
            _tile_pairs(apack, mt * kp_n * MR, bpack, nt * kp_n * NR * 2, offs, kp_n, 2 * NR, c)
            _finish(c, mt, nt, MR, NR, m_n, n_n, k_n, rowsum, rowzp, colsum, colzp, colcorr,
                    out, scale, bias, act, p0, p1, out_f, trans)


_NO_I32 = np.zeros((0, 0), np.int32)
_NO_F32 = np.zeros((0, 0), np.float32)
_NO_VEC = np.zeros(0, np.float32)
_NO_I32V = np.zeros(0, np.int32)


# ----- DynamicQuantizeLinear -----------------------------------------------------------------
@njit(fastmath=False)
def quantize_u8(x, scale, zp, y):
    """``y = clip(rint(x / scale) + zp, 0, 255)`` in float32 (a true division, not a
    reciprocal's product: DynamicQuantizeLinear's rounding). Serial: ~0.1 ns per element, a
    parallel launch costs more."""
    for i in range(x.size):
        v = np.rint(x[i] / scale) + zp
        y[i] = np.uint8(min(max(v, np.float32(0)), np.float32(255)))


# ----- the operator -----------------------------------------------------------------------
class PackedB:
    """A constant B [K, N] (int8 or uint8) and its column zero points, packed for the tile."""

    def __init__(self, b: np.ndarray, zp: np.ndarray | None, vnni: bool | None = None):
        self.vnni = isa.has_avx512_vnni() if vnni is None else vnni
        k_n, n_n = b.shape
        self.k, self.n = k_n, n_n
        shift = -128 if b.dtype == np.uint8 else 0
        bs = b.astype(np.int16) + shift  # s8 values
        z = np.zeros(n_n, np.int64) if zp is None else np.broadcast_to(
            np.asarray(zp).astype(np.int64).reshape(-1), (n_n,))
        z = z + shift  # (the zero point moves with B)
        self.colzp = np.ascontiguousarray(z, np.int64)
        self.any_colzp = bool(np.any(self.colzp))
        self.colsum = bs.sum(axis=0, dtype=np.int64)
        self.group, mr, nr, dt = (4, MRV, NRV, np.int8) if self.vnni else (2, MR, NR, np.int16)
        self.mr, self.nr = mr, nr
        self.kg = -(-k_n // self.group)
        nt_n = -(-n_n // nr)
        full = np.zeros((self.kg * self.group, nt_n * nr), np.int16)
        full[:k_n, :n_n] = bs
        # [nt, kg, j, u] = B'[kg * group + u, nt * nr + j]
        packed = full.reshape(self.kg, self.group, nt_n, nr).transpose(2, 0, 3, 1)
        self.data = np.ascontiguousarray(packed.astype(dt)).reshape(-1)
        if self.vnni:
            self.data = self.data.view(np.int32)

    def a_buffer(self, m_n: int) -> np.ndarray:
        """The packing buffer of an A with ``m_n`` rows: ``[mt, kg, r, u]``."""
        mt_n = -(-m_n // self.mr)
        dt = np.uint8 if self.vnni else np.int16
        return np.empty((mt_n, self.kg, self.mr, self.group), dt)

    def matmul(self, a: np.ndarray, a_zp: np.ndarray, out: np.ndarray,
               apack: np.ndarray, rowsum: np.ndarray, rowzp: np.ndarray,
               scale: np.ndarray | None = None, bias: np.ndarray | None = None,
               act: int = 0, p0: float = 0.0, p1: float = 0.0) -> None:
        """``out[M, N] = (a - a_zp) @ (B - zp)``; ``a``: C-contiguous [M, K] int8 or uint8,
        ``a_zp``: 1 or M values of a's type; the buffers from :meth:`a_buffer` and two int32 [M].

        ``out`` int32, or float32 with ``scale`` (float32, N values):
        ``act(float32(result) * scale (+ bias))``, as Cast -> Mul -> Add compute it, ``act`` an
        activation code of epilogue.py with its parameters."""
        m_n, k_n = a.shape
        to_float = scale is not None
        if k_n != self.k or out.shape != (m_n, self.n) or apack.shape[0] * self.mr < m_n \
                or apack.shape[1] != self.kg or rowsum.size < m_n or rowzp.size < m_n \
                or a_zp.size not in (1, m_n) or a.dtype not in (np.int8, np.uint8) \
                or out.dtype != (np.float32 if to_float else np.int32) \
                or (to_float and (scale.dtype != np.float32 or scale.size != self.n
                                  or (bias is not None and (bias.dtype != np.float32
                                                            or bias.size != self.n)))):
            raise ValueError("qmatmul: operands do not match the packed B")
        if m_n == 0 or self.n == 0:
            return
        flip = 128 if a.dtype == np.int8 else 0
        zp8 = a_zp.view(np.uint8).reshape(-1)
        _pack_a(a.view(np.uint8), np.uint8(flip), zp8, self.group, self.mr, apack, rowsum, rowzp)
        shared_zp = (int(zp8[0]) ^ flip) if zp8.size == 1 else None
        self._run(apack, m_n, shared_zp, rowsum, rowzp, out, scale, bias, act, p0, p1, False)

    def conv(self, x: np.ndarray, x_zp: int, geometry: tuple[int, ...], out: np.ndarray,
             apack: np.ndarray, rowsum: np.ndarray, rowzp: np.ndarray) -> None:
        """One image of a 2-D integer convolution whose filters are this B (``W`` flattened
        ``[M, C*kh*kw]``, transposed): ``out[M, OH*OW]`` int32 from ``x`` ``[C, H, W]`` (int8 or
        uint8, C-contiguous) with its zero point ``x_zp`` (padding takes it), ``geometry`` =
        ``(kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)``."""
        kh, kw, sh, sw, dh, dw, ph, pw, oh_n, ow_n = geometry
        m_n = oh_n * ow_n
        if x.ndim != 3 or x.dtype not in (np.int8, np.uint8) or not x.flags.c_contiguous \
                or x.shape[0] * kh * kw != self.k or out.shape != (self.n, m_n) \
                or out.dtype != np.int32 or apack.shape[0] * self.mr < m_n \
                or apack.shape[1] != self.kg or apack.shape[2:] != (self.mr, self.group) \
                or rowsum.size < m_n or rowzp.size < m_n or min(geometry) < 0 \
                or min(kh, kw, sh, sw, dh, dw) < 1:
            raise ValueError("qmatmul: the convolution does not match the packed filters")
        if m_n == 0 or self.n == 0:
            return
        flip = 128 if x.dtype == np.int8 else 0
        zp = int(np.uint8(np.int64(x_zp) & 0xFF))  # the raw byte
        words = apack.reshape(apack.shape[0], apack.shape[1], -1).view(np.int32)
        _pack_conv_a(x.view(np.uint8), np.uint8(flip), np.uint8(zp), kh, kw, sh, sw, dh, dw, ph,
                     pw, ow_n, m_n, self.k, self.mr, words, rowsum, rowzp, apack[:0, 0, 0, 0])
        self._run(apack, m_n, zp ^ flip, rowsum, rowzp, out, None, None, 0, 0.0, 0.0, True)

    def _run(self, apack, m_n, shared_zp, rowsum, rowzp, out, scale, bias, act, p0, p1,
             trans) -> None:
        colcorr = _NO_I32V
        if shared_zp is not None and not self.any_colzp:
            colcorr = (shared_zp * self.colsum).astype(np.int32)  # (wraps)
        flat = apack.reshape(-1).view(np.int32)
        args = (flat, self.data, self.kg, m_n, self.n, self.k, rowsum, rowzp, self.colsum,
                self.colzp, colcorr)
        f32 = np.float32
        if scale is not None:
            tail = (_NO_I32, scale, _NO_VEC if bias is None else bias, int(act), f32(p0), f32(p1),
                    out)
        else:
            tail = (out, _NO_VEC, _NO_VEC, 0, f32(0), f32(0), _NO_F32)
        (_mm_vnni if self.vnni else _mm_pairs)(*args, *tail, trans, get_num_threads())
