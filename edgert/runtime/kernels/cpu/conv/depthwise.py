"""Depthwise convolutions (one input channel per group): direct Numba kernels. Im2col would copy
each input ``K`` times to feed a GEMM with inner dimension ``K`` (about 9), which BLAS runs far
below peak.

By plane size (measured on MobileNetV2's shapes; 3x3 pads-1 layers first try
:mod:`.depthwise3`):

* ``DEPTHWISE_HWC`` — small planes (input up to ``dw_hwc_max_plane``), multiplier 1, constant
  weights: channels in the vector lanes (``_depthwise_hwc``);
* ``DEPTHWISE_PHASE`` — strided or large planes: stride-phase planes, every tap one contiguous
  stream (``_depthwise_phase``);
* ``DEPTHWISE_PADDED`` — small stride-1 planes: one zero-padded plane (``_depthwise_s1``);
* ``DEPTHWISE`` — everything else (any rank, dilation), row by row (``_depthwise``).
"""

from __future__ import annotations

import numpy as np

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native.arrays import owned
from edgert.runtime.kernels.cpu._native.geometry import tap_ranges, valid_range
from edgert.runtime.kernels.cpu.conv.choose import ConvPath
from edgert.runtime.kernels.cpu.conv.plan import ConvPlan
from edgert.runtime.kernels.cpu.epilogue import act_row, clamp_bounds
from edgert.runtime.ops.window import as3d, packed


@njit(parallel=True)
def _depthwise(x, w, bias, y, geo_a, act, p0, p1):
    """Direct conv with one input channel per group: ``y[n, m] = x[n, m // mult] ⋆ w[m]``.

    ``x``: ``(N, C, D, H, W)``, ``w``: ``(M, KD, KH, KW)`` with ``M = C * mult``, ``y``:
    ``(N, M, OD, OH, OW)``. Each output row is accumulated tap by tap over its valid range (no
    bounds test in the inner loop) while it sits in L1, then gets bias and activation.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh = geo.dd, geo.dh
    pd, ph = geo.pd, geo.ph
    n_img, c_n, d_n, h_n = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    m_n, od_n, oh_n = y.shape[1], y.shape[2], y.shape[3]
    mult = m_n // c_n
    nb = bias.shape[0]
    taps = tap_ranges(geo)
    zero = y.dtype.type(0.0)
    for t in prange(n_img * m_n):
        n = t // m_n
        m = t - n * m_n
        c = m // mult
        b = bias[m] if nb > 0 else zero
        for od in range(od_n):
            for oh in range(oh_n):
                yrow = y[n, m, od, oh]
                yrow[:] = zero
                for kd in range(kd_n):
                    iz = od * sd - pd + kd * dd
                    if iz < 0 or iz >= d_n:
                        continue
                    for kh in range(kh_n):
                        iy = oh * sh - ph + kh * dh
                        if iy < 0 or iy >= h_n:
                            continue
                        src = x[n, c, iz, iy]
                        for kw in range(kw_n):
                            off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
                            wv = w[m, kd, kh, kw]
                            yseg = yrow[lo:hi]
                            if sw == 1:
                                xseg = src[lo + off : hi + off]
                                for i in range(hi - lo):
                                    yseg[i] += wv * xseg[i]
                            elif hi > lo:
                                xseg = src[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    yseg[i] += wv * xseg[i]
                act_row(yrow, b, act, p0, p1)


@njit(parallel=True)
def _depthwise_s1(x, w, bias, y, ph, pw, act, p0, p1):
    """Depthwise 2-D conv with stride 1 and dilation 1, one zero-padded plane at a time.

    ``x``: ``(N, C, H, W)``, ``w``: ``(M, KH, KW)``, ``y``: ``(N, M, OH, OW)``. The plane is
    copied into a padded buffer of row width ``Wp = OW + KW - 1``; then every tap is one long
    contiguous multiply-add over ``OH * Wp`` elements (the ``KW - 1`` extra columns per row are
    computed and dropped). :func:`_depthwise` runs a short loop per output row and tap instead,
    whose set-up dominated on 7..56-wide rows (measured 0.8-2.8 GMAC/s).
    """
    n_img, c_n, h_n, w_n = x.shape
    m_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    kh_n, kw_n = w.shape[1], w.shape[2]
    mult = m_n // c_n
    nb = bias.shape[0]
    hp = oh_n + kh_n - 1
    wp = ow_n + kw_n - 1
    span = oh_n * wp
    zero = y.dtype.type(0.0)
    for t in prange(n_img * m_n):
        n = t // m_n
        m = t - n * m_n
        c = m // mult
        xp = np.zeros(hp * wp + kw_n, y.dtype)
        ncopy = min(w_n, wp - pw)
        for iy in range(h_n):
            py = iy + ph
            if py >= hp:
                break
            if ncopy > 0:
                xp[py * wp + pw : py * wp + pw + ncopy] = x[n, c, iy, :ncopy]
        acc = np.zeros(span, y.dtype)
        for kh in range(kh_n):
            for kw in range(kw_n):
                wv = w[m, kh, kw]
                src = xp[kh * wp + kw : kh * wp + kw + span]
                for i in range(span):
                    acc[i] += wv * src[i]
        b = bias[m] if nb > 0 else zero
        for oh in range(oh_n):
            yrow = y[n, m, oh]
            yrow[:] = acc[oh * wp : oh * wp + ow_n]
            act_row(yrow, b, act, p0, p1)


@njit(parallel=True)
def _depthwise_phase(x, w, bias, y, sh, sw, ph, pw, act, p0, p1):
    """Depthwise 2-D conv, any stride, dilation 1, over zero-padded *phase planes*.

    ``x``: ``(N, C, H, W)``, ``w``: ``(M, KH, KW)``, ``y``: ``(N, M, OH, OW)``. The padded input
    plane is split into ``sh * sw`` phase planes ``P[a, b][r, q] = xpad[r * sh + a, q * sw + b]``
    of row width ``Wq = OW + (KW - 1) // sw``. Tap ``(kh, kw)`` of output ``i = oh * Wq + ow``
    then reads ``P[kh % sh, kw % sw][i + (kh // sh) * Wq + kw // sw]``: every tap is one
    contiguous stream at any stride (the ``Wq - OW`` extra columns per row are computed and
    dropped). A stride-2 layer so runs as fast as a stride-1 one, where :func:`_depthwise`
    read strided slices tap by tap (measured 1.0 -> 0.84 ms on a 144-channel 56x56 layer).

    3x3 kernels (nearly all depthwise layers) sum their nine taps in one loop, one store per
    output instead of nine read-modify-writes. Channels are handed out in at most 32 chunks so
    that the plane buffers are allocated once per chunk, not once per channel.
    """
    n_img, c_n, h_n, w_n = x.shape
    m_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    kh_n, kw_n = w.shape[1], w.shape[2]
    mult = m_n // c_n
    nb = bias.shape[0]
    hq = oh_n + (kh_n - 1) // sh
    wq = ow_n + (kw_n - 1) // sw
    # The last tap's stream runs (KW - 1) // sw elements past hq * wq (dropped columns): pad.
    plane = hq * wq + (kw_n - 1) // sw + 1
    span = oh_n * wq
    zero = y.dtype.type(0.0)
    total = n_img * m_n
    nchunk = min(total, 32)
    unrolled = kh_n == 3 and kw_n == 3
    for ch in prange(nchunk):
        t0 = ch * total // nchunk
        t1 = (ch + 1) * total // nchunk
        buf = np.empty(sh * sw * plane, y.dtype)
        acc = np.empty(span, y.dtype)
        last = -1
        for t in range(t0, t1):
            n = t // m_n
            m = t - n * m_n
            c = m // mult
            if n * c_n + c != last:  # a channel multiplier reuses the planes
                last = n * c_n + c
                for a in range(sh):
                    for bb in range(sw):
                        base = (a * sw + bb) * plane
                        off = bb - pw
                        lo, hi = valid_range(wq, w_n, sw, off)
                        for r in range(hq):
                            iy = r * sh + a - ph
                            dst = buf[base + r * wq : base + (r + 1) * wq]
                            if iy < 0 or iy >= h_n or hi == lo:
                                dst[:] = zero
                                continue
                            dst[:lo] = zero
                            dst[hi:] = zero
                            dseg = dst[lo:hi]
                            if sw == 1:
                                dseg[:] = x[n, c, iy, lo + off : hi + off]
                            else:
                                sseg = x[n, c, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    dseg[i] = sseg[i]
                        buf[base + hq * wq : base + plane] = zero
            if unrolled:
                s0 = buf[(0 % sh * sw + 0 % sw) * plane + (0 // sh) * wq + 0 // sw :]
                s1 = buf[(0 % sh * sw + 1 % sw) * plane + (0 // sh) * wq + 1 // sw :]
                s2 = buf[(0 % sh * sw + 2 % sw) * plane + (0 // sh) * wq + 2 // sw :]
                s3 = buf[(1 % sh * sw + 0 % sw) * plane + (1 // sh) * wq + 0 // sw :]
                s4 = buf[(1 % sh * sw + 1 % sw) * plane + (1 // sh) * wq + 1 // sw :]
                s5 = buf[(1 % sh * sw + 2 % sw) * plane + (1 // sh) * wq + 2 // sw :]
                s6 = buf[(2 % sh * sw + 0 % sw) * plane + (2 // sh) * wq + 0 // sw :]
                s7 = buf[(2 % sh * sw + 1 % sw) * plane + (2 // sh) * wq + 1 // sw :]
                s8 = buf[(2 % sh * sw + 2 % sw) * plane + (2 // sh) * wq + 2 // sw :]
                w0, w1, w2 = w[m, 0, 0], w[m, 0, 1], w[m, 0, 2]
                w3, w4, w5 = w[m, 1, 0], w[m, 1, 1], w[m, 1, 2]
                w6, w7, w8 = w[m, 2, 0], w[m, 2, 1], w[m, 2, 2]
                for i in range(span):
                    acc[i] = (w0 * s0[i] + w1 * s1[i] + w2 * s2[i] + w3 * s3[i] + w4 * s4[i]
                              + w5 * s5[i] + w6 * s6[i] + w7 * s7[i] + w8 * s8[i])
            else:
                acc[:] = zero
                for kh in range(kh_n):
                    for kw in range(kw_n):
                        wv = w[m, kh, kw]
                        st = ((kh % sh) * sw + kw % sw) * plane + (kh // sh) * wq + kw // sw
                        src = buf[st : st + span]
                        for i in range(span):
                            acc[i] += wv * src[i]
            b = bias[m] if nb > 0 else zero
            for oh in range(oh_n):
                yrow = y[n, m, oh]
                yrow[:] = acc[oh * wq : oh * wq + ow_n]
                act_row(yrow, b, act, p0, p1)


@njit
def _hwc_row(iy, ix, h_n, w_n, pad_row):
    """Row of input pixel ``(iy, ix)`` in the pixel-major plane, or ``pad_row`` (zeros)."""
    if iy < 0 or iy >= h_n or ix < 0 or ix >= w_n:
        return pad_row
    return iy * w_n + ix


@njit(parallel=True)
def _depthwise_hwc(x, wt, bias, y, sh, sw, ph, pw, act, p0, p1, xt, yt):
    """Depthwise 2-D conv (multiplier 1, dilation 1) vectorized across channels.

    ``x``: ``(N, C, H, W)``, ``wt``: ``(KH, KW, C)`` (packed at prepare), ``bias``: ``(C,)``
    (zeros when absent), ``y``: ``(N, C, OH, OW)``; scratch ``xt`` ``(H * W + 1, C)`` and ``yt``
    ``(OH * OW, C)``. Each image is transposed to pixel-major order, every output pixel is then
    a multiply-add of ``KH * KW`` contiguous channel vectors, taps in the padding reading the
    extra zero row of ``xt`` (so border pixels take the same single pass as interior ones),
    with bias and Relu/Clip in the same store; then the result is transposed back. On small
    planes (7x7..28x28, where the late MobileNet layers have 384..960 channels) the per-channel
    kernels spend their time on set-up per row; here the inner loop runs over hundreds of
    channels instead.

    No array views are taken inside the parallel loops: each view of a shared array updates its
    reference count atomically, and with two threads doing so per pixel on the same counters the
    2-thread run was no faster than 1 thread (measured).
    """
    n_img, c_n, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    kh_n, kw_n = wt.shape[0], wt.shape[1]
    p_in = h_n * w_n
    p_out = oh_n * ow_n
    zero = y.dtype.type(0.0)
    lo, hi, fused = clamp_bounds(act, p0, p1, zero, y.dtype.type(np.inf))
    for c in range(c_n):
        xt[p_in, c] = zero
    # Transposes by blocks of 8 channels: 8 contiguous rows in, one 8-wide store per pixel (and
    # the reverse on the way out), 1.2-2x faster than a pixel-by-pixel gather on 7x7..28x28.
    cb = c_n // 8
    for n in range(n_img):
        xn = x[n].reshape(c_n, p_in)
        for blk in prange(cb):
            c0 = blk * 8
            for p in range(p_in):
                xt[p, c0], xt[p, c0 + 1] = xn[c0, p], xn[c0 + 1, p]
                xt[p, c0 + 2], xt[p, c0 + 3] = xn[c0 + 2, p], xn[c0 + 3, p]
                xt[p, c0 + 4], xt[p, c0 + 5] = xn[c0 + 4, p], xn[c0 + 5, p]
                xt[p, c0 + 6], xt[p, c0 + 7] = xn[c0 + 6, p], xn[c0 + 7, p]
        for c in range(cb * 8, c_n):
            for p in range(p_in):
                xt[p, c] = xn[c, p]
        for q in prange(p_out):
            oh = q // ow_n
            iy0 = oh * sh - ph
            ix0 = (q - oh * ow_n) * sw - pw
            if kh_n == 3 and kw_n == 3:
                r0 = _hwc_row(iy0, ix0, h_n, w_n, p_in)
                r1 = _hwc_row(iy0, ix0 + 1, h_n, w_n, p_in)
                r2 = _hwc_row(iy0, ix0 + 2, h_n, w_n, p_in)
                r3 = _hwc_row(iy0 + 1, ix0, h_n, w_n, p_in)
                r4 = _hwc_row(iy0 + 1, ix0 + 1, h_n, w_n, p_in)
                r5 = _hwc_row(iy0 + 1, ix0 + 2, h_n, w_n, p_in)
                r6 = _hwc_row(iy0 + 2, ix0, h_n, w_n, p_in)
                r7 = _hwc_row(iy0 + 2, ix0 + 1, h_n, w_n, p_in)
                r8 = _hwc_row(iy0 + 2, ix0 + 2, h_n, w_n, p_in)
                for c in range(c_n):
                    v = (wt[0, 0, c] * xt[r0, c] + wt[0, 1, c] * xt[r1, c]
                         + wt[0, 2, c] * xt[r2, c] + wt[1, 0, c] * xt[r3, c]
                         + wt[1, 1, c] * xt[r4, c] + wt[1, 2, c] * xt[r5, c]
                         + wt[2, 0, c] * xt[r6, c] + wt[2, 1, c] * xt[r7, c]
                         + wt[2, 2, c] * xt[r8, c] + bias[c])
                    v = lo if v < lo else v
                    yt[q, c] = hi if v > hi else v
            else:
                for c in range(c_n):
                    yt[q, c] = bias[c]
                for kh in range(kh_n):
                    for kw in range(kw_n):
                        r = _hwc_row(iy0 + kh, ix0 + kw, h_n, w_n, p_in)
                        if r == p_in:
                            continue
                        for c in range(c_n):
                            yt[q, c] += wt[kh, kw, c] * xt[r, c]
                for c in range(c_n):
                    v = yt[q, c]
                    v = lo if v < lo else v
                    yt[q, c] = hi if v > hi else v
            if not fused:
                act_row(yt[q], zero, act, p0, p1)
        yn = y[n].reshape(c_n, p_out)
        for blk in prange(cb):
            c0 = blk * 8
            for p in range(p_out):
                yn[c0, p], yn[c0 + 1, p] = yt[p, c0], yt[p, c0 + 1]
                yn[c0 + 2, p], yn[c0 + 3, p] = yt[p, c0 + 2], yt[p, c0 + 3]
                yn[c0 + 4, p], yn[c0 + 5, p] = yt[p, c0 + 4], yt[p, c0 + 5]
                yn[c0 + 6, p], yn[c0 + 7, p] = yt[p, c0 + 6], yt[p, c0 + 7]
        for c in range(cb * 8, c_n):
            for p in range(p_out):
                yn[c, p] = yt[p, c]


_depthwise_serial = serial_twin(_depthwise)


_depthwise_s1_serial = serial_twin(_depthwise_s1)


_depthwise_phase_serial = serial_twin(_depthwise_phase)


_depthwise_hwc_serial = serial_twin(_depthwise_hwc)


class DepthwisePlan(ConvPlan):
    """``DEPTHWISE``: weights ``(M, KD, KH, KW)``, any rank."""

    path = ConvPath.DEPTHWISE
    parallel_fn = _depthwise
    serial_fn = _depthwise_serial

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        big = p.n * p.m_out * p.p_out >= self.t.parallel_min_work
        self.fn = type(self).parallel_fn if big else type(self).serial_fn
        self.geo = p.win.geo()
        self.geo_a = packed(self.geo)

    def pack(self, w, const):
        # a Numba kernel wants one array type: an owned copy of mapped weights
        wd = w.reshape((self.p.m_out,) + as3d(w.shape[2:]))
        return owned(wd, self.p.dtype) if const else wd

    def args(self, x, w, bias, y, scratch) -> tuple:
        p = self.p
        return (x.reshape((p.n, p.c_in) + p.in3), w, bias, y.reshape((p.n, p.m_out) + p.out3),
                self.geo_a, self.code, self.p0, self.p1)

    def run(self, x, w, bias, y, z, scratch):
        args = self.args(x, w, bias, y, scratch)
        self.fn(*args)
        return self.fn, args


class DepthwisePhasePlan(DepthwisePlan):
    path = ConvPath.DEPTHWISE_PHASE
    parallel_fn = _depthwise_phase
    serial_fn = _depthwise_phase_serial

    def args(self, x, w, bias, y, scratch):
        g = self.geo
        return (x, w.reshape(w.shape[0], w.shape[2], w.shape[3]), bias, y, g.sh, g.sw, g.ph,
                g.pw, self.code, self.p0, self.p1)


class DepthwisePaddedPlan(DepthwisePlan):
    path = ConvPath.DEPTHWISE_PADDED
    parallel_fn = _depthwise_s1
    serial_fn = _depthwise_s1_serial

    def args(self, x, w, bias, y, scratch):
        g = self.geo
        return (x, w.reshape(w.shape[0], w.shape[2], w.shape[3]), bias, y, g.ph, g.pw,
                self.code, self.p0, self.p1)


class DepthwiseHwcPlan(DepthwisePlan):
    """``DEPTHWISE_HWC``: weights ``(KH, KW, C)``; both transposed copies in the scratch."""

    path = ConvPath.DEPTHWISE_HWC
    parallel_fn = _depthwise_hwc
    serial_fn = _depthwise_hwc_serial

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        self.sizes = ((p.in_plane + 1) * p.c_in, p.p_out * p.m_out)
        self.scratch_shape = (sum(self.sizes),)
        self.scratch_nbytes = sum(self.sizes) * p.dtype.itemsize
        self.zero_bias = np.zeros(p.m_out, p.dtype)

    def pack(self, w, const):
        m = self.p.m_out
        return owned(w.reshape(m, -1).T, self.p.dtype).reshape(tuple(w.shape[2:]) + (m,))

    def args(self, x, w, bias, y, scratch):
        g, (nx, ny) = self.geo, self.sizes
        return (x, w, bias if bias.shape[0] else self.zero_bias, y, g.sh, g.sw, g.ph, g.pw,
                self.code, self.p0, self.p1, scratch[:nx].reshape(-1, self.p.c_in),
                scratch[nx : nx + ny].reshape(-1, self.p.m_out))
