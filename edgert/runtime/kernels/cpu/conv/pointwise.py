"""Pointwise (1x1) convolutions: the image already *is* the GEMM operand,
``Y[n] (M, P) = W (M, C) @ X[n] (C, P)``.

* ``POINTWISE_BLAS``: NumPy's OpenBLAS called from a Numba kernel (:mod:`.._native.openblas`),
  over the run's threads, with the bias, the residual and the activation applied to each block
  while it is in cache (``_pointwise_blas``); a fused channel shuffle is written through the
  GEMM's output row stride.
* ``POINTWISE_SMALL``: layers of at most ``pointwise_small_macs`` multiply-adds as one fused
  Numba call (``_pointwise_small``): the BLAS call plus a separate epilogue call cost more than
  the arithmetic there.
* ``POINTWISE_GEMM``: ``np.matmul`` and an epilogue pass: no reachable OpenBLAS, or constant
  filters with bit-identical rows (computed once per class, see :mod:`.im2col`).

Strided 1x1 convs (ResNet's projection shortcuts) first gather every stride-th pixel into the
scratch, ``(N, C, P_out)``; through im2col they were blocked by output rows into GEMMs a few
columns wide, each packing all of W (ResNet-50's three such layers ran at 13-17 GMAC/s against
28-30 for its stride-1 1x1 convs).
"""

from __future__ import annotations

import numpy as np

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native import openblas
from edgert.runtime.kernels.cpu._native.openblas import gemm_at
from edgert.runtime.kernels.cpu.conv.choose import ConvPath
from edgert.runtime.kernels.cpu.conv.im2col import GemmPlan
from edgert.runtime.kernels.cpu.conv.plan import ConvPlan
from edgert.runtime.kernels.cpu.epilogue import ACT_NONE, act_row
from edgert.runtime.ops.window import as3d


@njit(parallel=True)
def _pointwise_blas(fn, wide, w, x, bias, y, z, act, p0, p1, parts, split_rows, block, shuffle):
    """A pointwise conv ``y[i, g] = act(w[g] @ x[i, g] + bias[g] + z[i, g])`` per group ``g``
    through the BLAS routine at ``fn``, over ``parts`` threads: each takes a range of every
    group's output channels (``split_rows`` 1), whole groups (``split_rows`` 2, ``G`` a
    multiple of ``parts``) or a range of positions (0), the latter in blocks of ``block``
    columns so that the epilogue finds its block in cache. ``w``
    ``(G, M/G, C/G)``, ``x`` ``(N, C, P)``, ``y`` and the residual ``z`` ``(N, M, P)`` (``z``
    empty: none), C-contiguous.

    ``shuffle``: ``y`` is channel-shuffled by the groups (edgert.Conv's ``channel_shuffle``):
    row ``j`` of group ``g`` is written at channel ``j * G + g``, through the GEMM's output row
    stride; bias and residual stay indexed by the conv's own channel."""
    n_img, m_n, p_n = y.shape
    g_n, mg_n, k_n = w.shape
    isz = y.itemsize
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    has_z = z.shape[0] > 0
    epi = nb > 0 or act != ACT_NONE or has_z
    # output channel of group g's row j, as (first channel, channel step)
    ch_step = g_n if shuffle else 1
    ldc = ch_step * p_n
    for t in prange(parts):
        for i in range(n_img):
            for g in range(g_n):
                pw = w.ctypes.data + g * mg_n * k_n * isz
                px = x.ctypes.data + (i * g_n + g) * k_n * p_n * isz
                ch0 = g if shuffle else g * mg_n
                py = y.ctypes.data + (i * m_n + ch0) * p_n * isz
                m_base = g * mg_n
                if split_rows != 0:
                    if split_rows == 2:  # whole groups per thread
                        if g % parts != t:
                            continue
                        r0, r1 = 0, mg_n
                    else:
                        r0 = mg_n * t // parts
                        r1 = mg_n * (t + 1) // parts
                    gemm_at(fn, wide, r1 - r0, p_n, k_n, pw + r0 * k_n * isz, k_n, px, p_n,
                            zero, py + r0 * ldc * isz, ldc)
                    if epi:
                        for j in range(r0, r1):
                            m = m_base + j
                            row = y[i, ch0 + j * ch_step]
                            if has_z:
                                row += z[i, m]
                            act_row(row, bias[m] if nb > 0 else zero, act, p0, p1)
                    continue
                step = ((p_n + parts - 1) // parts + 15) // 16 * 16
                c0 = t * step
                c1 = min(p_n, c0 + step)
                # equal blocks of at most ``block`` columns (no short tail: BLAS repacks W per
                # call)
                nblk = max(1, (c1 - c0 + block - 1) // block)
                bw = ((c1 - c0 + nblk - 1) // nblk + 15) // 16 * 16
                for b0 in range(c0, c1, bw):
                    b1 = min(c1, b0 + bw)
                    gemm_at(fn, wide, mg_n, b1 - b0, k_n, pw, k_n, px + b0 * isz, p_n,
                            zero, py + b0 * isz, ldc)
                    if epi:
                        for j in range(mg_n):
                            m = m_base + j
                            row = y[i, ch0 + j * ch_step, b0:b1]
                            if has_z:
                                row += z[i, m, b0:b1]
                            act_row(row, bias[m] if nb > 0 else zero, act, p0, p1)


_pointwise_blas_serial = serial_twin(_pointwise_blas)


@njit
def _pointwise_small(w, x, bias, y, z, act, p0, p1):
    """A small 1x1 conv in one call: ``y[n, m] = act(sum_k w[m, k] * x[n, k] + bias[m] +
    z[n, m])``.

    ``w``: ``(M, K)``, ``x``: ``(N, K, P)``, ``y`` and the residual ``z`` (empty: none):
    ``(N, M, P)``. For layers of a few thousand
    multiply-adds the BLAS call plus the separate epilogue call cost more than the arithmetic
    (about 15 µs per layer measured on a 32x32-input MobileNet, against ~3 µs per op in
    onnxruntime); this is one dispatch with the epilogue fused while the row is in L1.
    """
    n_img, k_n, p_n = x.shape
    m_n = w.shape[0]
    nb = bias.shape[0]
    has_z = z.shape[0] > 0
    zero = y.dtype.type(0.0)
    for n in range(n_img):
        for m in range(m_n):
            row = y[n, m]
            wv = w[m, 0]
            xs = x[n, 0]
            if has_z:
                zs = z[n, m]
                for p in range(p_n):
                    row[p] = zs[p] + wv * xs[p]
            else:
                for p in range(p_n):
                    row[p] = wv * xs[p]
            for k in range(1, k_n):
                wv = w[m, k]
                xs = x[n, k]
                for p in range(p_n):
                    row[p] += wv * xs[p]
            act_row(row, bias[m] if nb > 0 else zero, act, p0, p1)


class _Gather:
    """The strided-1x1 gather shared by the pointwise plans (listed before ConvPlan: its
    ``__init__`` runs after the plan's own)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        self.stride = as3d(p.win.strides) if any(s != 1 for s in p.win.strides) else None
        if self.stride is not None:
            self.scratch_shape = (p.n, p.c_in, p.p_out)
            self.scratch_nbytes = p.n * p.c_in * p.p_out * p.dtype.itemsize

    def gather(self, x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """``x`` itself, or every stride-th pixel of it as a contiguous ``(N, C, P_out)``
        array in ``scratch``."""
        if self.stride is None:
            return x
        p = self.p
        (sd, sh, sw), (od, oh, ow) = self.stride, p.out3
        x5 = x.reshape((p.n, p.c_in) + p.in3)
        xs = scratch.reshape((p.n, p.c_in) + p.out3)
        np.copyto(xs, x5[:, :, : (od - 1) * sd + 1 : sd, : (oh - 1) * sh + 1 : sh,
                         : (ow - 1) * sw + 1 : sw])
        return scratch


class PointwiseSmallPlan(_Gather, ConvPlan):
    path = ConvPath.POINTWISE_SMALL
    adds_residual = True

    def run(self, x, w, bias, y, z, scratch):
        p = self.p
        xg = self.gather(x, scratch)
        args = (w[0], xg.reshape(p.n, p.c_in, p.p_out), bias, y.reshape(p.n, p.m_out, p.p_out),
                self.residual(z, (p.n, p.m_out, p.p_out)), self.code, self.p0, self.p1)
        _pointwise_small(*args)
        return None if xg is not x else (_pointwise_small, args)


class PointwiseBlasPlan(_Gather, ConvPlan):
    """OpenBLAS per thread block, epilogue fused; the thread split is chosen here, once."""

    path = ConvPath.POINTWISE_BLAS
    adds_residual = True
    shuffles = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p, t = self.p, self.t
        r = openblas.routines()
        self.fn, self.wide = r.address(p.dtype), r.wide
        # Column blocks whose input and output slices fit the cache block together. At least
        # 512: every BLAS call packs all of W again (M x K), about as much as 16 columns.
        cols = t.col_block_bytes // ((p.m_out + p.c_in) // p.group * p.dtype.itemsize)
        self.block = max(512, cols // 16 * 16)
        macs = p.m_out * p.c_per_group * p.p_out
        parts = p.threads if p.threads > 1 and macs >= t.split_min_macs else 1
        mg = p.m_out // p.group
        split_rows = int(mg >= 2 * parts and (
            p.p_out < t.pw_row_split_p * parts or (t.pw_row_split_wide and mg > p.p_out)
            or (t.pw_row_split_expand and mg >= p.c_in // p.group)))
        if t.pw_group_split and parts > 1 and p.group % parts == 0:
            split_rows = 2
        self.parts, self.split_rows = parts, split_rows
        self.fn_run = _pointwise_blas if parts > 1 else _pointwise_blas_serial

    def run(self, x, w, bias, y, z, scratch):
        p = self.p
        xg = self.gather(x, scratch)
        args = (self.fn, self.wide, w, xg.reshape(p.n, p.c_in, p.p_out), bias,
                y.reshape(p.n, p.m_out, p.p_out), self.residual(z, (p.n, p.m_out, p.p_out)),
                self.code, self.p0, self.p1, self.parts, self.split_rows, self.block,
                self.shuffle)
        self.fn_run(*args)
        return None if xg is not x else (self.fn_run, args)


class PointwiseGemmPlan(_Gather, GemmPlan):
    """np.matmul (split over the run's threads) and an epilogue pass."""

    path = ConvPath.POINTWISE_GEMM

    def run(self, x, w, bias, y, z, scratch):
        p = self.p
        xg = self.gather(x, scratch)
        n, g = p.n, p.group
        yv = y.reshape(n, p.m_out, p.p_out)
        if g == 1:
            self.gemm(w[0], xg.reshape(n, p.c_in, p.p_out), yv)
        else:
            for i in range(n):
                self.matmul(w, xg[i].reshape(g, p.c_in // g, p.p_out),
                            yv[i].reshape(g, p.m_out // g, p.p_out))
        self.epilogue(yv.reshape(n * p.m_out, p.p_out), bias)
        return None
