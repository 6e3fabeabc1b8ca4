"""Float32 implicit-GEMM convolution: the int8 path's layout and tiling with FMA micro-tiles.

A k x k convolution through im2col writes and re-reads a column matrix k*k times the size of
its input, then hands BLAS a GEMM whose shape it may run far below its peak (few output
channels, or few output positions). Here the input is copied once into the implicit layout of
:meth:`qgemm.Plan.implicit_conv` (padded, split into stride phases, one float per position),
and an ``MR x NR`` micro-tile reads, for tap ``t`` and input channel ``c``, the 16 floats of
one output row segment at a fixed offset: the column matrix never exists. The micro-kernel is
LLVM IR through a Numba intrinsic (12 vector accumulators of 8 floats, ``llvm.fma``); the bias
and the fused activation are applied while the tile is in L1, and the threads split column
blocks in Numba's pool (no BLAS hand-off).

conv.py takes this path for group-1 k x k convs that :mod:`.dconv` does not take (fewer than
16 output channels, 1-D and 3-D convs) where it was measured faster than im2col + OpenBLAS: at
most 32 output channels or at most 256 output positions.

Every output channel runs the same instruction sequence over the same reduction order, so
channels with identical filters come out bit-identical wherever they sit (OpenBLAS's sgemm
does not promise that; see ``blas.identical_rows``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import get_num_threads, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu._native.llvm import MR, NR, emit_tile, is_array
from edgert.runtime.kernels.cpu.epilogue import ACT_CLIP, ACT_NONE, ACT_RELU, act_row
from edgert.runtime.kernels.cpu.qgemm import Plan

BLOCK_BYTES = 1 << 20  # B data per cache block of column tiles, as in qgemm.py

@intrinsic
def _ftile(typingctx, a, a_off, b, b_off, offs, c_n, cstride, c):
    """``c[r, j] = sum_t sum_ch a[a_off + (t*c_n + ch)*MR + r] * b[b_off + offs[t] +
    ch*cstride + j]`` (float32 FMAs in that order), ``r < MR``, ``j < NR``.

    The caller guarantees every offset is in bounds (:func:`fconv_tiles` checks the plan).
    """
    if not (is_array(a, types.float32, 1) and is_array(b, types.float32, 1)
            and is_array(offs, types.int64, 1) and is_array(c, types.float32, 2)):
        return None
    sig = types.void(a, types.intp, b, types.intp, offs, types.intp, types.intp, c)
    def codegen(context, builder, signature, args):
        v8 = ir.VectorType(ir.FloatType(), 8)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]),
                                             "llvm.fma.v8f32")
        emit_tile(context, builder, signature, args, v8, v8,
                  lambda acc, a, b: builder.call(fma, [a, b, acc]))
        return context.get_dummy_value()

    return sig, codegen


def pack_conv_weights(w: np.ndarray) -> np.ndarray:
    """Float32 conv weights ``(M, C, *kernel)`` -> flat ``apack[mt, t, c, r]`` (zero rows past
    ``M``), the reduction ordered ``(tap, channel)`` as the implicit layout reads it."""
    m_n, c_n = w.shape[:2]
    taps = int(np.prod(w.shape[2:]))
    mt_n = -(-m_n // MR)
    t = np.zeros((mt_n * MR, taps, c_n), np.float32)
    t[:m_n] = np.asarray(w, np.float32).reshape(m_n, c_n, taps).transpose(0, 2, 1)
    return np.ascontiguousarray(t.reshape(mt_n, MR, taps * c_n).transpose(0, 2, 1)).reshape(-1)

def plan(geo: np.ndarray, c_n: int) -> Plan | None:
    """The implicit float32 layout for a conv with ``c_n`` input channels, or None where row
    tiles would waste lanes (see :meth:`Plan.implicit_conv`)."""
    return Plan.implicit_conv(geo, c_n, lanes=1, dtype=np.float32)

@njit(parallel=True)
def pack_input(x, pads, strides, dims, cstride, buf):
    """Copy float32 ``x (C, D, H, W)`` into the implicit layout (padding and inputs no output
    reads stay the zeros written at allocation), one channel per thread."""
    c_n, d_n, h_n, w_n = x.shape
    pd, ph, pw = pads[0], pads[1], pads[2]
    sd, sh, sw = strides[0], strides[1], strides[2]
    dq, hq, wq = dims[0], dims[1], dims[2]
    plane = dq * hq * wq
    if (buf.size < c_n * cstride or cstride < sd * sh * sw * plane or min(pd, ph, pw) < 0
            or min(sd, sh, sw) < 1):
        raise ValueError("pack_input: buffer or input do not match the plan")
    x_hi = min(w_n, wq * sw - pw)
    for c in prange(c_n):
        for z in range(d_n):
            zz = z + pd
            if zz >= dq * sd:
                continue
            for yy in range(h_n):
                yp = yy + ph
                if yp >= hq * sh:
                    continue
                src = x[c, z, yy]
                base = c * cstride + ((zz % sd) * sh + yp % sh) * sw * plane + (
                    ((zz // sd) * hq + yp // sh) * wq)
                if sw == 1:
                    dst = buf[base + pw:base + pw + x_hi]
                    for i in range(x_hi):
                        dst[i] = src[i]
                else:
                    for b in range(sw):
                        j0 = max(0, (pw - b + sw - 1) // sw)
                        dst = base + b * plane
                        for j in range(j0, wq):
                            i = j * sw + b - pw
                            if i >= x_hi:
                                break
                            buf[dst + j] = src[i]

def fconv(apack: np.ndarray, p: Plan, m_n: int, bias: np.ndarray, act: int, p0, p1,
          y: np.ndarray, buf: np.ndarray | None = None) -> None:
    """Run :func:`fconv_tiles` on a packed ``buf`` (default ``p.buf``) into float32 ``y (M, P)``."""
    fconv_tiles(apack, p.buf if buf is None else buf, p.offs, p.cp_n, p.cstride, p.tile_b,
                p.tile_y, p.tile_cols, m_n, bias, act, p0, p1, y, get_num_threads())

@njit(parallel=True)
def fconv_tiles(apack, b, offs, c_n, cstride, tile_b, tile_y, tile_cols, m_n, bias, act, p0,
                p1, y, threads):
    """``y[m, col] = act(bias[m] + sum A[m, :] * B[:, col])`` over the plan's tiles.

    ``bias`` may be empty. The plan is checked against the buffers first: a plan that does not
    fit raises instead of reading or writing out of bounds. Cache blocking and the split across
    threads are qgemm.py's.
    """
    mt_n = (m_n + MR - 1) // MR
    t_n = tile_b.size
    k_n = offs.size * c_n
    p_n = y.shape[1]
    ok = (apack.size >= mt_n * k_n * MR and y.shape[0] == m_n
          and (bias.size == 0 or bias.size >= m_n) and tile_y.size == t_n
          and tile_cols.size == t_n and c_n >= 0 and cstride >= 0)
    reach = 0
    for t in range(offs.size):
        ok = ok and offs[t] >= 0
        reach = max(reach, offs[t])
    reach += max(c_n - 1, 0) * cstride + NR
    for i in range(t_n):
        ok = (ok and tile_b[i] >= 0 and tile_b[i] + reach <= b.size and tile_y[i] >= 0
              and 0 < tile_cols[i] <= NR and tile_y[i] + tile_cols[i] <= p_n)
    if not ok:
        raise ValueError("fconv_tiles: the plan does not fit its buffers")
    tb = max(1, BLOCK_BYTES // (k_n * 4 * NR))
    nb = (t_n + tb - 1) // tb
    by_blocks = nb >= threads or mt_n < 2
    units = nb if by_blocks else mt_n
    has_bias = bias.size > 0
    for u in prange(units):
        c = np.empty((MR, NR), np.float32)
        mt0 = 0 if by_blocks else u
        mt1 = mt_n if by_blocks else u + 1
        t0 = u * tb if by_blocks else 0
        t1 = min(t_n, (u + 1) * tb) if by_blocks else t_n
        for mt in range(mt0, mt1):
            for i in range(t0, t1):
                _ftile(apack, mt * k_n * MR, b, tile_b[i], offs, c_n, cstride, c)
                q0 = tile_y[i]
                cols = tile_cols[i]
                for r in range(min(MR, m_n - mt * MR)):
                    m = mt * MR + r
                    bv = bias[m] if has_bias else np.float32(0.0)
                    dst = y[m]
                    if act == ACT_NONE:
                        for j in range(cols):
                            dst[q0 + j] = c[r, j] + bv
                    elif act == ACT_RELU:  # NaN stays NaN, as epilogue.py's Relu
                        zero = np.float32(0.0)
                        for j in range(cols):
                            v = c[r, j] + bv
                            dst[q0 + j] = zero if v < zero else v  # noqa: FURB136
                    elif act == ACT_CLIP:  # NaN passes through, as epilogue.py's clip
                        for j in range(cols):
                            v = c[r, j] + bv
                            v = p0 if v < p0 else v  # noqa: FURB136
                            dst[q0 + j] = p1 if v > p1 else v  # noqa: FURB136
                    else:
                        for j in range(cols):
                            dst[q0 + j] = c[r, j]
                        act_row(dst[q0:q0 + cols], bv, act, p0, p1)
