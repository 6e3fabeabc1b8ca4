"""3x3 windows with pads 1 over flat planes: ``DEPTHWISE_3X3`` (stride 1 or 2) and the dense
``STEM_3X3_S2`` (stride 2, few input channels: network stems).

Stride 1 runs each plane as nine contiguous streams (no padded copy); stride 2 first splits the
input into its four stride-phase planes. The taps that would read across a row end are
selected away by per-column flags (:func:`keep_cols`, built at prepare), and bias and Relu/Clip
are applied in the same store. Im2col built a 27-row column matrix for a stem's 27-deep GEMM.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native.arrays import owned
from edgert.runtime.kernels.cpu.conv.choose import ConvPath
from edgert.runtime.kernels.cpu.conv.plan import ConvPlan
from edgert.runtime.kernels.cpu.epilogue import _clip, act_row, clamp_bounds


@njit
def _dw3_s1_plane(xp, wm, yp, h_n, w_n, b, lo, hi, keep):
    """One channel of a 3x3 depthwise conv, stride 1, pads 1 (``H, W >= 2``):
    ``yp = clamp(conv(xp) + b, lo, hi)`` (``lo``/``hi`` infinite: no clamp; NaN passes).

    ``xp``/``yp``: the flat ``H * W`` input and output planes, ``wm``: ``(3, 3)``, ``keep``:
    ``(2, H * W)`` flags, column ``!= 0`` and ``!= W - 1`` of each output position. Rows 1..H-2
    run as one flat stream: tap ``(kh, kw)`` of output ``p`` reads ``p + (kh - 1) * W + kw - 1``,
    nine contiguous slices taken once per plane. At columns 0 and W-1 the left or right taps read
    across a row boundary; the flags select them away (a select, not a product with 0, so that an
    Inf there cannot turn into NaN). Recomputing those columns with scalar code instead, and the
    separate bias/activation pass, took three times as long as the stream itself (14x14 and 28x28
    planes, measured). Rows 0 and H-1 have two input rows each.
    """
    w0, w1, w2 = wm[0, 0], wm[0, 1], wm[0, 2]
    w3, w4, w5 = wm[1, 0], wm[1, 1], wm[1, 2]
    w6, w7, w8 = wm[2, 0], wm[2, 1], wm[2, 2]
    e = w_n - 1
    if h_n >= 3:
        # Outputs W+1 .. (H-1)*W-2; the two ends of that range are done below.
        n = (h_n - 2) * w_n - 2
        s0 = xp[0:n]
        s1 = xp[1 : n + 1]
        s2 = xp[2 : n + 2]
        s3 = xp[w_n : w_n + n]
        s4 = xp[w_n + 1 : w_n + 1 + n]
        s5 = xp[w_n + 2 : w_n + 2 + n]
        s6 = xp[2 * w_n : 2 * w_n + n]
        s7 = xp[2 * w_n + 1 : 2 * w_n + 1 + n]
        s8 = xp[2 * w_n + 2 : 2 * w_n + 2 + n]
        kl = keep[0, w_n + 1 : w_n + 1 + n]
        kr = keep[1, w_n + 1 : w_n + 1 + n]
        yo = yp[w_n + 1 : w_n + 1 + n]
        for i in range(n):
            v = w1 * s1[i] + w4 * s4[i] + w7 * s7[i] + b
            left = w0 * s0[i] + w3 * s3[i] + w6 * s6[i]
            right = w2 * s2[i] + w5 * s5[i] + w8 * s8[i]
            v = v + left if kl[i] else v
            v = v + right if kr[i] else v
            v = lo if v < lo else v
            yo[i] = hi if v > hi else v
        # Row 1 column 0 and row H-2 column W-1: six taps each.
        a = (h_n - 3) * w_n
        c = a + w_n
        yp[w_n] = _clip(w1 * xp[0] + w2 * xp[1] + w4 * xp[w_n] + w5 * xp[w_n + 1]
                        + w7 * xp[2 * w_n] + w8 * xp[2 * w_n + 1] + b, lo, hi)
        yp[c + e] = _clip(w0 * xp[a + e - 1] + w1 * xp[a + e] + w3 * xp[c + e - 1]
                          + w4 * xp[c + e] + w6 * xp[c + w_n + e - 1] + w7 * xp[c + w_n + e]
                          + b, lo, hi)
    # Rows 0 and H-1, columns 1..W-2: two input rows each.
    m = w_n - 2
    lo_r = (h_n - 2) * w_n
    hi_r = lo_r + w_n
    if m > 0:
        a0 = xp[0:m]
        a1 = xp[1 : m + 1]
        a2 = xp[2 : m + 2]
        b0 = xp[w_n : w_n + m]
        b1 = xp[w_n + 1 : w_n + 1 + m]
        b2 = xp[w_n + 2 : w_n + 2 + m]
        yi = yp[1 : m + 1]
        for i in range(m):
            v = w3 * a0[i] + w4 * a1[i] + w5 * a2[i] + w6 * b0[i] + w7 * b1[i] + w8 * b2[i] + b
            v = lo if v < lo else v
            yi[i] = hi if v > hi else v
        a0 = xp[lo_r : lo_r + m]
        a1 = xp[lo_r + 1 : lo_r + 1 + m]
        a2 = xp[lo_r + 2 : lo_r + 2 + m]
        b0 = xp[hi_r : hi_r + m]
        b1 = xp[hi_r + 1 : hi_r + 1 + m]
        b2 = xp[hi_r + 2 : hi_r + 2 + m]
        yi = yp[hi_r + 1 : hi_r + 1 + m]
        for i in range(m):
            v = w0 * a0[i] + w1 * a1[i] + w2 * a2[i] + w3 * b0[i] + w4 * b1[i] + w5 * b2[i] + b
            v = lo if v < lo else v
            yi[i] = hi if v > hi else v
    # The corners: four taps each.
    yp[0] = _clip(w4 * xp[0] + w5 * xp[1] + w7 * xp[w_n] + w8 * xp[w_n + 1] + b, lo, hi)
    yp[e] = _clip(w3 * xp[e - 1] + w4 * xp[e] + w6 * xp[w_n + e - 1] + w7 * xp[w_n + e] + b,
                  lo, hi)
    yp[hi_r] = _clip(w1 * xp[lo_r] + w2 * xp[lo_r + 1] + w4 * xp[hi_r] + w5 * xp[hi_r + 1] + b,
                     lo, hi)
    yp[hi_r + e] = _clip(w0 * xp[lo_r + e - 1] + w1 * xp[lo_r + e] + w3 * xp[hi_r + e - 1]
                         + w4 * xp[hi_r + e] + b, lo, hi)


@njit
def _phases2(xp, buf, h_n, w_n):
    """The four stride-2 phase planes of one flat even ``H x W`` plane into ``buf`` (``H * W``):
    ``P[a, b][r, q] = x[2r + a, 2q + b]`` at ``buf[(2a + b) * Q + r * OW + q]``, ``Q = OH * OW``.
    The de-interleaving loop vectorizes with shuffles."""
    ow_n = w_n // 2
    q = (h_n // 2) * ow_n
    for r in range(h_n):
        src = xp[r * w_n : (r + 1) * w_n]
        base = (r % 2) * 2 * q + (r // 2) * ow_n
        ev = buf[base : base + ow_n]
        od = buf[base + q : base + q + ow_n]
        for i in range(ow_n):
            ev[i] = src[2 * i]
            od[i] = src[2 * i + 1]


def keep_cols(h_n: int, w_n: int) -> np.ndarray:
    """``(2, H * W)`` flags of a flat ``H x W`` plane: column ``!= 0``, column ``!= W - 1``
    (the cross-row taps of :func:`_dw3_s1_plane` / :func:`_dw3_s2_phases`, built at prepare)."""
    col = np.arange(h_n * w_n) % w_n
    return np.stack([col != 0, col != w_n - 1]).astype(np.uint8)


@njit
def _dw3_s2_phases(buf, wm, yp, oh_n, ow_n, acc, b, lo, hi, keep_l):
    """One 3x3 stride-2 pads-1 filter over phase planes (:func:`_phases2`) into the flat
    ``OH * OW`` plane ``yp``: ``yp = clamp([yp +] conv + b, lo, hi)``, adding to what is there
    when ``acc`` (``lo``/``hi`` infinite: no clamp; NaN passes). ``keep_l``: ``OH * OW`` flags,
    output column ``!= 0``.

    Tap ``(kh, kw)`` of output ``p = oh * OW + ow`` reads ``P[a, b][p + dr * OW + dq]``, a
    constant offset: ``kh = 0, 1, 2 -> (a, dr) = (1, -1), (0, 0), (1, 0)``, and alike for
    columns. Outputs ``p > OW`` are one flat stream, where the column-0 outputs' left taps
    (``dq = -1``) read across a row and are selected away by ``keep_l``; row 0 has two input
    rows. :func:`_depthwise_phase` gathered the phases with strided scalar copies and
    zero-padded them, which cost more than the arithmetic; recomputing column 0 with scalar code
    cost as much as the stream.
    """
    q = oh_n * ow_n
    w0, w1, w2 = wm[0, 0], wm[0, 1], wm[0, 2]
    w3, w4, w5 = wm[1, 0], wm[1, 1], wm[1, 2]
    w6, w7, w8 = wm[2, 0], wm[2, 1], wm[2, 2]
    p00 = buf[0:q]
    p01 = buf[q : 2 * q]
    p10 = buf[2 * q : 3 * q]
    p11 = buf[3 * q : 4 * q]
    zero = yp.dtype.type(0.0)
    n = q - ow_n - 1
    if n > 0:
        s0 = p11[0:n]                      # (kh, kw) = (0, 0): P[1, 1][p - OW - 1]
        s1 = p10[1 : n + 1]                # (0, 1): P[1, 0][p - OW]
        s2 = p11[1 : n + 1]                # (0, 2): P[1, 1][p - OW]
        s3 = p01[ow_n : ow_n + n]          # (1, 0): P[0, 1][p - 1]
        s4 = p00[ow_n + 1 : ow_n + 1 + n]  # (1, 1): P[0, 0][p]
        s5 = p01[ow_n + 1 : ow_n + 1 + n]  # (1, 2): P[0, 1][p]
        s6 = p11[ow_n : ow_n + n]          # (2, 0): P[1, 1][p - 1]
        s7 = p10[ow_n + 1 : ow_n + 1 + n]  # (2, 1): P[1, 0][p]
        s8 = p11[ow_n + 1 : ow_n + 1 + n]  # (2, 2): P[1, 1][p]
        kl = keep_l[ow_n + 1 : ow_n + 1 + n]
        yo = yp[ow_n + 1 : ow_n + 1 + n]
        for i in range(n):
            v = (w1 * s1[i] + w2 * s2[i] + w4 * s4[i] + w5 * s5[i] + w7 * s7[i] + w8 * s8[i]
                 + b)
            left = w0 * s0[i] + w3 * s3[i] + w6 * s6[i]
            v = v + left if kl[i] else v
            if acc:
                v += yo[i]
            v = lo if v < lo else v
            yo[i] = hi if v > hi else v
    if oh_n > 1:
        # Row 1, column 0.
        p = ow_n
        yp[p] = _clip((yp[p] if acc else zero) + w1 * p10[0] + w2 * p11[0] + w4 * p00[p]
                      + w5 * p01[p] + w7 * p10[p] + w8 * p11[p] + b, lo, hi)
    m = ow_n - 1
    if m > 0:
        t3 = p01[0:m]
        t4 = p00[1 : m + 1]
        t5 = p01[1 : m + 1]
        t6 = p11[0:m]
        t7 = p10[1 : m + 1]
        t8 = p11[1 : m + 1]
        yo = yp[1:ow_n]
        for i in range(m):
            v = w3 * t3[i] + w4 * t4[i] + w5 * t5[i] + w6 * t6[i] + w7 * t7[i] + w8 * t8[i] + b
            if acc:
                v += yo[i]
            v = lo if v < lo else v
            yo[i] = hi if v > hi else v
    yp[0] = _clip((yp[0] if acc else zero) + w4 * p00[0] + w5 * p01[0] + w7 * p10[0]
                  + w8 * p11[0] + b, lo, hi)


@njit(parallel=True)
def _depthwise3(x, w, bias, y, h_n, w_n, stride, act, p0, p1, keep):
    """Depthwise 3x3 conv with pads 1, dilation 1, stride 1 or 2 (even planes), NCHW.

    ``x``: ``(N, C, H * W)``, ``w``: ``(M, 3, 3)``, ``y``: ``(N, M, OH * OW)`` (flat planes:
    a reshape per plane inside the kernel cost ~50 ns, a tenth of a 7x7 plane's time),
    ``keep``: :func:`keep_cols` of the output plane; one plane at a time through
    :func:`_dw3_s1_plane` / :func:`_dw3_s2_phases`, with bias and Relu/Clip in their stores
    (another activation over the whole plane after, while it is in L1). Channels go out in at
    most 32 chunks, so the scratch of stride 2 is allocated once per chunk.
    """
    n_img, c_n = x.shape[0], x.shape[1]
    m_n = y.shape[1]
    oh_n = (h_n - 1) // stride + 1
    ow_n = (w_n - 1) // stride + 1
    mult = m_n // c_n
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    total = n_img * m_n
    nchunk = min(total, 32)
    lo, hi, fused = clamp_bounds(act, p0, p1, zero, y.dtype.type(np.inf))
    keep_l = keep[0]
    for ch in prange(nchunk):
        buf = np.empty(h_n * w_n if stride == 2 else 1, y.dtype)
        last = -1
        for t in range(ch * total // nchunk, (ch + 1) * total // nchunk):
            n = t // m_n
            m = t - n * m_n
            c = m // mult
            yp = y[n, m]
            xp = x[n, c]
            b = bias[m] if nb > 0 else zero
            if stride == 1:
                _dw3_s1_plane(xp, w[m], yp, h_n, w_n, b, lo, hi, keep)
            else:
                if n * c_n + c != last:  # a channel multiplier reuses the phases
                    last = n * c_n + c
                    _phases2(xp, buf, h_n, w_n)
                _dw3_s2_phases(buf, w[m], yp, oh_n, ow_n, False, b, lo, hi, keep_l)
            if not fused:
                act_row(yp, zero, act, p0, p1)


@njit(parallel=True)
def _conv3_s2(x, w, bias, y, act, p0, p1, phases, keep):
    """Dense 3x3 conv, stride 2, pads 1, even planes, few input channels (a network's stem).

    ``x``: ``(N, C, H, W)``, ``w``: ``(M, C, 3, 3)``, ``y``: ``(N, M, H/2, W/2)``, ``phases``:
    scratch of ``C * H * W``, ``keep``: :func:`keep_cols` of the output plane. Each input channel is
    split into its stride-2 phase planes once (:func:`_phases2`); every output plane is then the sum
    over ``C`` of flat 9-tap streams (:func:`_dw3_s2_phases`), with bias and activation in the same
    call. The im2col path made three dispatches (column matrix with strided copies, a 27-deep GEMM,
    a separate epilogue pass): 43 µs against onnxruntime's 17 µs on a 3x32x32 stem; on a 224x224
    stem the two are at par (~0.6 ms, memory-bound either way).
    """
    n_img, c_n, h_n, w_n = x.shape
    m_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    plane = h_n * w_n
    inf = y.dtype.type(np.inf)
    lo, hi, fused = clamp_bounds(act, p0, p1, zero, inf)
    keep_l = keep[0]
    for n in range(n_img):
        for c in prange(c_n):
            _phases2(x[n, c].reshape(plane), phases[c * plane : (c + 1) * plane], h_n, w_n)
        for m in prange(m_n):
            yp = y[n, m].reshape(oh_n * ow_n)
            # The clamp only after the last channel's sum.
            for c in range(c_n):
                b = bias[m] if nb > 0 and c == c_n - 1 else zero
                last = c == c_n - 1
                _dw3_s2_phases(phases[c * plane : (c + 1) * plane], w[m, c], yp, oh_n, ow_n,
                               c > 0, b, lo if last else -inf, hi if last else inf, keep_l)
            if not fused:
                act_row(yp, zero, act, p0, p1)


_depthwise3_serial = serial_twin(_depthwise3)


_conv3_s2_serial = serial_twin(_conv3_s2)


class Depthwise3x3Plan(ConvPlan):
    path = ConvPath.DEPTHWISE_3X3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        self.stride = p.dw3_stride()
        self.keep = keep_cols(*p.win.out_shape)
        big = p.n * p.m_out * p.p_out >= self.t.parallel_min_work
        self.fn = _depthwise3 if big else _depthwise3_serial

    def pack(self, w, const):
        w3 = w.reshape(self.p.m_out, 3, 3)
        return owned(w3, self.p.dtype) if const else w3

    def run(self, x, w, bias, y, z, scratch):
        p = self.p
        args = (x.reshape(p.n, p.c_in, -1), w, bias, y.reshape(p.n, p.m_out, -1), p.in3[1],
                p.in3[2], self.stride, self.code, self.p0, self.p1, self.keep)
        self.fn(*args)
        return self.fn, args


class Stem3x3S2Plan(ConvPlan):
    """Dense 3x3/2: ``_conv3_s2`` sums flat 9-tap streams over the input's stride-2 phase
    planes (in the scratch), one call with the epilogue fused."""

    path = ConvPath.STEM_3X3_S2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        self.keep = keep_cols(*p.win.out_shape)
        big = p.n * p.m_out * p.p_out >= self.t.parallel_min_work
        self.fn = _conv3_s2 if big else _conv3_s2_serial
        self.scratch_shape = (p.c_in * p.in_plane,)
        self.scratch_nbytes = p.c_in * p.in_plane * p.dtype.itemsize

    def pack(self, w, const):
        return owned(w, self.p.dtype) if const else w

    def run(self, x, w, bias, y, z, scratch):
        args = (x, w, bias, y, self.code, self.p0, self.p1, scratch, self.keep)
        self.fn(*args)
        return self.fn, args
