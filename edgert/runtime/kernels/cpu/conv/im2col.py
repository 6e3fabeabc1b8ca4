"""Convolution as a GEMM over a column matrix (im2col): the general path, any rank, group,
stride, dilation and padding.

* ``IM2COL_BLAS_ROWS`` (group 1, 1-D and 2-D, OpenBLAS reachable from compiled code): per
  thread, blocks of output rows are unrolled into the thread's part of the scratch, multiplied by
  OpenBLAS and finished by the epilogue while in cache (``_conv_rows_blas``): one parallel
  region per conv.
* ``IM2COL_GEMM`` (everything else): a Numba im2col into the scratch and ``np.matmul`` split
  over the run's threads, then one epilogue pass. All images at once while their column
  matrices fit ``col_batch_bytes``; else image by image, and a single 2-D image whose matrix is
  larger than ``col_block_bytes`` in blocks of output rows that stay in L2 while BLAS reads
  them.

Output channels with bit-identical constant filters (group 1) are computed once and copied: the
GEMM paths here multiply only the first of each class (:class:`GemmPlan`). OpenBLAS rounds
identical rows of a GEMM operand differently depending on their position (see
:func:`edgert.runtime.kernels.cpu.blas.identical_rows`), and an ill-conditioned consumer such as
a Softmax over logits of ~1e9 turns that one-ulp gap into a visible error, where every channel
should be equal. The fused BLAS paths do not apply to such layers.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native import openblas
from edgert.runtime.kernels.cpu._native.geometry import tap_ranges, valid_range
from edgert.runtime.kernels.cpu._native.openblas import gemm_at
from edgert.runtime.kernels.cpu.blas import matmul
from edgert.runtime.kernels.cpu.conv.choose import ConvPath
from edgert.runtime.kernels.cpu.conv.plan import ConvPlan
from edgert.runtime.kernels.cpu.epilogue import ACT_NONE, act_row, epilogue
from edgert.runtime.ops.window import packed


@njit(parallel=True)
def _im2col(x, col, geo_a):
    """Unroll receptive fields: ``col[(c, kd, kh, kw), (od, oh, ow)] = x[c, id, ih, iw]`` or 0.

    ``x``: one image ``(C, D, H, W)``; ``col``: ``(C * KD * KH * KW, OD * OH * OW)``.
    Parallel over rows; each row is written by exactly one thread.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh = geo.dd, geo.dh
    pd, ph = geo.pd, geo.ph
    od_n, oh_n, ow_n = geo.od, geo.oh, geo.ow
    c_n, d_n, h_n = x.shape[0], x.shape[1], x.shape[2]
    k_n = kd_n * kh_n * kw_n
    taps = tap_ranges(geo)
    zero = col.dtype.type(0.0)
    for r in prange(c_n * k_n):
        c = r // k_n
        t = r - c * k_n
        kd = t // (kh_n * kw_n)
        kh = (t // kw_n) % kh_n
        kw = t % kw_n
        dst = col[r]
        off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
        for od in range(od_n):
            iz = od * sd - pd + kd * dd
            for oh in range(oh_n):
                iy = oh * sh - ph + kh * dh
                seg = dst[(od * oh_n + oh) * ow_n : (od * oh_n + oh + 1) * ow_n]
                if iz < 0 or iz >= d_n or iy < 0 or iy >= h_n or hi == lo:
                    seg[:] = zero
                    continue
                seg[:lo] = zero
                seg[hi:] = zero
                dseg = seg[lo:hi]
                if sw == 1:
                    dseg[:] = x[c, iz, iy, lo + off : hi + off]
                else:
                    sseg = x[c, iz, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for i in range(hi - lo):
                        dseg[i] = sseg[i]


@njit(parallel=True)
def _im2col_batch(x, col, geo_a):
    """:func:`_im2col` for every image at once: ``x`` ``(N, C, D, H, W)``, ``col``
    ``(N, C * K, P)``. One parallel region for the whole batch instead of one per image."""
    rows = col.shape[1]
    for r in prange(x.shape[0] * rows):
        n = r // rows
        _im2col_row(x[n], col[n], geo_a, r - n * rows)


@njit(parallel=True)
def _im2col_hrows(x, col, geo_a, h0, h1):
    """The columns of output rows ``h0 <= oh < h1`` of a 2-D conv (``OD == 1``).

    ``x``: one image ``(C, 1, H, W)``; ``col``: ``(C * KH * KW, (h1 - h0) * OW)``. Lets invoke
    build the column matrix block by block so that each block is still in cache when BLAS
    reads it (a whole 3x3 column matrix of a 128-channel 56x56 layer is 14 MB).
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kh_n, kw_n = geo.kh, geo.kw
    sh, sw = geo.sh, geo.sw
    dh, dw = geo.dh, geo.dw
    ph, pw = geo.ph, geo.pw
    ow_n = geo.ow
    h_n, w_n = x.shape[2], x.shape[3]
    k_n = kh_n * kw_n
    zero = col.dtype.type(0.0)
    for r in prange(col.shape[0]):
        c = r // k_n
        t = r - c * k_n
        kh = t // kw_n
        kw = t - kh * kw_n
        dst = col[r]
        off = kw * dw - pw
        lo, hi = valid_range(ow_n, w_n, sw, off)
        for oh in range(h0, h1):
            iy = oh * sh - ph + kh * dh
            seg = dst[(oh - h0) * ow_n : (oh - h0 + 1) * ow_n]
            if iy < 0 or iy >= h_n or hi == lo:
                seg[:] = zero
                continue
            seg[:lo] = zero
            seg[hi:] = zero
            dseg = seg[lo:hi]
            if sw == 1:
                dseg[:] = x[c, 0, iy, lo + off : hi + off]
            else:
                sseg = x[c, 0, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                for i in range(hi - lo):
                    dseg[i] = sseg[i]


_im2col_hrows_serial = serial_twin(_im2col_hrows)


@njit(parallel=True)
def _conv_rows_blas(fn, wide, x, w, bias, y, geo_a, act, p0, p1, col, block_rows, parts):
    """A group-1 2-D conv as im2col + BLAS GEMM + epilogue, in blocks of output rows.

    ``x`` ``(N, C, 1, H, W)``, ``w`` ``(M, C * KH * KW)``, ``y`` ``(N, M, OH * OW)``, all
    C-contiguous; ``col`` ``(>= parts, C * KH * KW * block_rows * OW)``. Each of ``parts``
    threads takes a contiguous range of output rows of every image and, per block of at most
    ``block_rows`` rows, unrolls it into its own ``col[t]``, multiplies it into ``y`` through the
    BLAS routine at ``fn`` (``_native/openblas.py``), then adds the bias and activation while
    the block is in cache: one parallel region per conv, no separate epilogue pass.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    n_img, m_n, p_n = y.shape
    k_n = w.shape[1]
    oh_n, ow_n = geo.oh, geo.ow
    isz = y.itemsize
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    for t in prange(parts):
        r0 = oh_n * t // parts
        r1 = oh_n * (t + 1) // parts
        buf = col[t]
        for i in range(n_img):
            for h0 in range(r0, r1, block_rows):
                h1 = min(h0 + block_rows, r1)
                cols = (h1 - h0) * ow_n
                blk = buf[: k_n * cols].reshape((k_n, cols))
                _im2col_hrows_serial(x[i], blk, geo_a, h0, h1)
                gemm_at(fn, wide, m_n, cols, k_n, w.ctypes.data, k_n, blk.ctypes.data, cols,
                        zero, y.ctypes.data + (i * m_n * p_n + h0 * ow_n) * isz, p_n)
                if nb > 0 or act != ACT_NONE:
                    for m in range(m_n):
                        act_row(y[i, m, h0 * ow_n : h1 * ow_n], bias[m] if nb > 0 else zero,
                                act, p0, p1)


_conv_rows_blas_serial = serial_twin(_conv_rows_blas)


@njit
def _im2col_row(x, col, geo_a, r):
    """Row ``r`` of :func:`_im2col` (one ``(c, kd, kh, kw)`` tap over all output positions)."""
    geo = geo_a[0]
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh, dw = geo.dd, geo.dh, geo.dw
    pd, ph, pw = geo.pd, geo.ph, geo.pw
    od_n, oh_n, ow_n = geo.od, geo.oh, geo.ow
    d_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    k_n = kd_n * kh_n * kw_n
    zero = col.dtype.type(0.0)
    c = r // k_n
    t = r - c * k_n
    kd = t // (kh_n * kw_n)
    kh = (t // kw_n) % kh_n
    kw = t % kw_n
    dst = col[r]
    off = kw * dw - pw
    lo, hi = valid_range(ow_n, w_n, sw, off)
    for od in range(od_n):
        iz = od * sd - pd + kd * dd
        for oh in range(oh_n):
            iy = oh * sh - ph + kh * dh
            seg = dst[(od * oh_n + oh) * ow_n : (od * oh_n + oh + 1) * ow_n]
            if iz < 0 or iz >= d_n or iy < 0 or iy >= h_n or hi == lo:
                seg[:] = zero
                continue
            seg[:lo] = zero
            seg[hi:] = zero
            dseg = seg[lo:hi]
            if sw == 1:
                dseg[:] = x[c, iz, iy, lo + off : hi + off]
            else:
                sseg = x[c, iz, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                for i in range(hi - lo):
                    dseg[i] = sseg[i]


_im2col_batch_serial = serial_twin(_im2col_batch)


class GemmPlan(ConvPlan):
    """Base of the plans that multiply through :func:`~edgert.runtime.kernels.cpu.blas.matmul`:
    the run's threads, and classes of bit-identical filters computed once."""

    def __init__(self, *args, classes=None, **kwargs):
        super().__init__(*args, **kwargs)
        # (keep, index) of edgert.runtime.kernels.cpu.blas.identical_rows, or None
        self.classes = classes
        self.y_unique = None
        self._w_unique = (None, None)  # (packed W, its first row of each class)

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        matmul(a, b, out=out, threads=self.p.threads)

    def gemm(self, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """``out = w @ b`` for group 1 (``w``: ``(M, C·K)``, ``b``: ``(..., C·K, P)``); classes
        of identical filters are multiplied once, into a buffer, and copied to their rows."""
        if self.classes is None:
            self.matmul(w, b, out)
            return
        keep, index = self.classes
        shape = b.shape[:-2] + (len(keep), b.shape[-1])
        size = int(np.prod(shape))
        if self.y_unique is None or self.y_unique.shape[0] < size:
            self.y_unique = np.empty(size, self.p.dtype)
        y_u = self.y_unique[:size].reshape(shape)
        if self._w_unique[0] is not w:
            self._w_unique = (w, w[keep])
        self.matmul(self._w_unique[1], b, y_u)
        np.take(y_u, index, axis=-2, out=out, mode="clip")

    def epilogue(self, y2d: np.ndarray, bias: np.ndarray) -> None:
        epilogue(y2d, bias, self.act, (self.p0, self.p1))


class Im2colGemmPlan(GemmPlan):
    path = ConvPath.IM2COL_GEMM

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p, t = self.p, self.t
        isz = p.dtype.itemsize
        self.rows = p.c_in * p.k_size
        per_image = self.rows * p.p_out * isz
        self.col_batch = p.n > 1 and p.n * per_image <= t.col_batch_bytes
        n_cols = p.n if self.col_batch else 1
        self.scratch_shape = (n_cols * self.rows, p.p_out)
        self.scratch_nbytes = n_cols * per_image
        # Row blocking (single images of 2-D convs, no groups): output rows per block.
        self.block_rows = 0
        oh_n, ow_n = p.out3[1], p.out3[2]
        if (not self.col_batch and p.out3[0] == 1 and p.in3[0] == 1 and p.group == 1
                and per_image > t.col_block_bytes and oh_n > 1):
            row_bytes = self.rows * ow_n * isz
            block = max(1, min(oh_n, t.col_block_bytes // row_bytes))
            if block < oh_n:  # the scratch only ever holds one block
                self.block_rows = block
                self.scratch_nbytes = block * row_bytes
                self.scratch_shape = (self.rows, block * ow_n)
        self.im2col = (_im2col_batch if per_image // isz >= PARALLEL_MIN_WORK
                       else _im2col_batch_serial)
        self.geo_a = packed(p.win.geo())

    def run(self, x, w, bias, y, z, scratch):
        p, g, rows = self.p, self.p.group, self.rows
        n_img, m_out, p_out = p.n, p.m_out, p.p_out
        x5 = x.reshape((n_img, p.c_in) + p.in3)
        if self.col_batch:  # all images: one im2col launch, one batched GEMM, one epilogue
            col = scratch.reshape(n_img, rows, p_out)
            self.im2col(x5, col, self.geo_a)
            if g == 1:
                self.gemm(w[0], col, y.reshape(n_img, m_out, p_out))
            else:
                self.matmul(w, col.reshape(n_img, g, rows // g, p_out),
                            y.reshape(n_img, g, m_out // g, p_out))
            self.epilogue(y.reshape(n_img * m_out, p_out), bias)
            return None
        if self.block_rows:
            oh_n, ow_n = p.out3[1], p.out3[2]
            flat = scratch.reshape(-1)
            for n in range(n_img):
                yn = y[n].reshape(m_out, p_out)
                for h0 in range(0, oh_n, self.block_rows):
                    h1 = min(h0 + self.block_rows, oh_n)
                    blk = flat[: rows * (h1 - h0) * ow_n].reshape(rows, (h1 - h0) * ow_n)
                    _im2col_hrows(x5[n], blk, self.geo_a, h0, h1)
                    self.gemm(w[0], blk, yn[:, h0 * ow_n : h1 * ow_n])
                self.epilogue(yn, bias)
            return None
        col = scratch.reshape(1, rows, p_out)
        col_g = scratch.reshape(g, rows // g, p_out)
        for n in range(n_img):
            self.im2col(x5[n : n + 1], col, self.geo_a)
            yn = y[n].reshape(m_out, p_out)
            if g == 1:
                self.gemm(w[0], col[0], yn)
            else:
                self.matmul(w, col_g, yn.reshape(g, m_out // g, p_out))
            self.epilogue(yn, bias)
        return None


class Im2colBlasRowsPlan(ConvPlan):
    path = ConvPath.IM2COL_BLAS_ROWS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p, t = self.p, self.t
        r = openblas.routines()
        self.fn, self.wide = r.address(p.dtype), r.wide
        oh_n, ow_n = p.out3[1], p.out3[2]
        row_elems = p.c_in * p.k_size * ow_n
        self.block_rows = max(1, min(oh_n, t.col_block_bytes // (row_elems * p.dtype.itemsize)))
        macs = p.m_out * p.c_in * p.k_size * p.p_out
        self.parts = p.threads if p.threads > 1 and macs >= t.split_min_macs else 1
        # one column block per thread
        self.scratch_shape = (self.parts, self.block_rows * row_elems)
        self.scratch_nbytes = self.parts * self.block_rows * row_elems * p.dtype.itemsize
        self.fn_run = _conv_rows_blas if self.parts > 1 else _conv_rows_blas_serial
        self.geo_a = packed(p.win.geo())

    def run(self, x, w, bias, y, z, scratch):
        p = self.p
        args = (self.fn, self.wide, x.reshape((p.n, p.c_in) + p.in3), w[0], bias,
                y.reshape(p.n, p.m_out, p.p_out), self.geo_a, self.code, self.p0, self.p1,
                scratch, self.block_rows, self.parts)
        self.fn_run(*args)
        return self.fn_run, args
