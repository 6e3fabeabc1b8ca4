"""Numba kernels for training: im2col/col2im (convolution), pooling forward and backward, erf.

Layouts (all C-contiguous, NCHW):

* ``im2col`` writes ``cols[(c*KH + i)*KW + j, (n*OH + oh)*OW + ow] = x[n, c, ih, iw]`` with
  ``ih = oh*SH - PH + i*DH`` (zero where the tap falls into the padding). Channels are the major
  row index, so the rows of channel group ``g`` form one contiguous block and a grouped
  convolution is a single batched ``matmul`` over ``(G, Cg*KH*KW, N*OH*OW)``.
* ``col2im`` is its adjoint: it *adds* every column entry back into ``x``'s gradient (taps of
  overlapping windows hit the same input element).
* Max pooling stores, per output, the flat ``ih*W + iw`` index of the winner (-1 when the window
  holds only padding); the backward pass scatters through it.

Loops are plain (not ``prange``): inputs here are small, and a parallel kernel costs seconds of
compile time on a cold cache.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime._jit import njit


@njit
def im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    n_n, c_n, h_n, w_n = x.shape
    for c in range(c_n):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for n in range(n_n):
                    base = n * oh_n * ow_n
                    for oh in range(oh_n):
                        ih = oh * sh - ph + i * dh
                        col0 = base + oh * ow_n
                        if ih < 0 or ih >= h_n:
                            for ow in range(ow_n):
                                cols[row, col0 + ow] = 0
                            continue
                        for ow in range(ow_n):
                            iw = ow * sw - pw + j * dw
                            if 0 <= iw < w_n:
                                cols[row, col0 + ow] = x[n, c, ih, iw]
                            else:
                                cols[row, col0 + ow] = 0


@njit
def col2im(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """``gx += adjoint(im2col)(cols)``; ``gx`` must start zeroed."""
    n_n, c_n, h_n, w_n = gx.shape
    for c in range(c_n):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for n in range(n_n):
                    base = n * oh_n * ow_n
                    for oh in range(oh_n):
                        ih = oh * sh - ph + i * dh
                        if ih < 0 or ih >= h_n:
                            continue
                        col0 = base + oh * ow_n
                        for ow in range(ow_n):
                            iw = ow * sw - pw + j * dw
                            if 0 <= iw < w_n:
                                gx[n, c, ih, iw] += cols[row, col0 + ow]


@njit
def max_pool_fwd(x, y, idx, kh, kw, sh, sw, ph, pw, dh, dw):
    n_n, c_n, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    for n in range(n_n):
        for c in range(c_n):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    best = -np.inf
                    arg = -1
                    for i in range(kh):
                        ih = oh * sh - ph + i * dh
                        if ih < 0 or ih >= h_n:
                            continue
                        for j in range(kw):
                            iw = ow * sw - pw + j * dw
                            if iw < 0 or iw >= w_n:
                                continue
                            v = x[n, c, ih, iw]
                            # take a NaN when it arrives and keep it (NaN > v is false)
                            if arg < 0 or v > best or (math.isnan(v) and not math.isnan(best)):
                                best = v
                                arg = ih * w_n + iw
                    y[n, c, oh, ow] = best
                    idx[n, c, oh, ow] = arg


@njit
def max_pool_bwd(gy, idx, gx):
    n_n, c_n, oh_n, ow_n = gy.shape
    w_n = gx.shape[3]
    for n in range(n_n):
        for c in range(c_n):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    a = idx[n, c, oh, ow]
                    if a >= 0:
                        gx[n, c, a // w_n, a % w_n] += gy[n, c, oh, ow]


@njit
def avg_pool_fwd(x, y, kh, kw, sh, sw, ph, pw, include_pad):
    n_n, c_n, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    for n in range(n_n):
        for c in range(c_n):
            for oh in range(oh_n):
                h0 = oh * sh - ph
                h1 = min(h0 + kh, h_n + ph)
                for ow in range(ow_n):
                    w0 = ow * sw - pw
                    w1 = min(w0 + kw, w_n + pw)
                    acc = 0.0
                    for ih in range(max(h0, 0), min(h1, h_n)):
                        for iw in range(max(w0, 0), min(w1, w_n)):
                            acc += x[n, c, ih, iw]
                    if include_pad:
                        cnt = (h1 - h0) * (w1 - w0)
                    else:
                        cnt = (min(h1, h_n) - max(h0, 0)) * (min(w1, w_n) - max(w0, 0))
                    y[n, c, oh, ow] = acc / cnt if cnt > 0 else 0.0


@njit
def avg_pool_bwd(gy, gx, kh, kw, sh, sw, ph, pw, include_pad):
    n_n, c_n, h_n, w_n = gx.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    for n in range(n_n):
        for c in range(c_n):
            for oh in range(oh_n):
                h0 = oh * sh - ph
                h1 = min(h0 + kh, h_n + ph)
                for ow in range(ow_n):
                    w0 = ow * sw - pw
                    w1 = min(w0 + kw, w_n + pw)
                    if include_pad:
                        cnt = (h1 - h0) * (w1 - w0)
                    else:
                        cnt = (min(h1, h_n) - max(h0, 0)) * (min(w1, w_n) - max(w0, 0))
                    if cnt <= 0:
                        continue
                    g = gy[n, c, oh, ow] / cnt
                    for ih in range(max(h0, 0), min(h1, h_n)):
                        for iw in range(max(w0, 0), min(w1, w_n)):
                            gx[n, c, ih, iw] += g


@njit
def adaptive_avg_fwd(x, y):
    """PyTorch's adaptive windows: ``[floor(o*H/OH), ceil((o+1)*H/OH))``."""
    n_n, c_n, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    for n in range(n_n):
        for c in range(c_n):
            for oh in range(oh_n):
                h0 = (oh * h_n) // oh_n
                h1 = -((-(oh + 1) * h_n) // oh_n)
                for ow in range(ow_n):
                    w0 = (ow * w_n) // ow_n
                    w1 = -((-(ow + 1) * w_n) // ow_n)
                    acc = 0.0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            acc += x[n, c, ih, iw]
                    y[n, c, oh, ow] = acc / ((h1 - h0) * (w1 - w0))


@njit
def adaptive_avg_bwd(gy, gx):
    n_n, c_n, h_n, w_n = gx.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    for n in range(n_n):
        for c in range(c_n):
            for oh in range(oh_n):
                h0 = (oh * h_n) // oh_n
                h1 = -((-(oh + 1) * h_n) // oh_n)
                for ow in range(ow_n):
                    w0 = (ow * w_n) // ow_n
                    w1 = -((-(ow + 1) * w_n) // ow_n)
                    g = gy[n, c, oh, ow] / ((h1 - h0) * (w1 - w0))
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            gx[n, c, ih, iw] += g


@njit
def _erf(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise error function (NumPy has none)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    _erf(flat, out)
    return out.reshape(x.shape)
