"""Compiled time loops of the RNN, GRU and LSTM kernels (see :mod:`.recurrent`).

Each cell type has one loop over time, ``_rnn_part`` / ``_gru_part`` / ``_lstm_part``, that runs
one direction for a range of batch entries; ``rnn_run`` / ``gru_run`` / ``lstm_run`` spread the
``(direction, batch range)`` parts over threads (``prange``; their ``*_serial`` twins on one
thread). The parts share nothing but read-only inputs: each writes its own rows of the state,
scratch and ``Y`` arrays.

Array forms (checked by the caller, :mod:`.recurrent`, before any loop runs):

* ``xw [rows, dirs*G]``: ``X·Wᵀ`` of every step, both directions side by side (``G`` = gates x
  hidden); row ``t*batch + b`` (layout 0) or ``b*seq + t`` (layout 1). ``bias [dirs, G]`` is
  added here (``Wb + Rb``, except GRU's ``Rbh`` under ``linear_before_reset``: ``rbh``).
* ``r [dirs, G, hidden]`` (ONNX's R) and ``rt [dirs, hidden, G]`` (its transpose, for BLAS).
* ``hs``, ``cs [dirs, batch, hidden]``: the state, initial on entry, final on return.
* ``gbuf``, ``abuf [dirs, batch, G]``: one step's gate pre-activations and their activations
  (two arrays: vmath's sigmoid/tanh rows vectorize only out of place);
  ``rh [dirs, batch, hidden]``: GRU's ``r ⊙ H``.
* ``y [seq*dirs*batch, hidden]``: ``Y`` flattened, row ``(t*dirs + d)*batch + b`` (layout 0)
  or ``(b*seq + t)*dirs + d`` (layout 1); written only when ``write_y``.
* ``lens [batch]`` in ``[0, seq]``: entry ``b`` runs steps ``0..lens[b]-1``; the reverse
  direction reads times ``lens[b]-1`` down to 0; ``Y`` is 0 at times ``>= lens[b]``.
* activations: ``codes``, ``alphas``, ``betas [dirs, k]`` (the ``ACT_*`` codes below).

The per-step product ``H·Rᵀ`` goes to BLAS (``_native.openblas``) for larger sizes, else to a
compiled dot-product loop (``use_blas`` is decided by the caller). Sigmoid and tanh on float32
use :mod:`.vmath`'s vectorized rows (within a few ulp of float64); float64 uses libm.
"""

from __future__ import annotations

import math

from edgert.runtime._jit import njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native.openblas import gemm_at
from edgert.runtime.kernels.cpu.vmath import sigmoid_row, tanh_row

# Activation codes (the ONNX names, lower-cased, in ACT_CODES).
ACT_RELU, ACT_TANH, ACT_SIGMOID, ACT_AFFINE, ACT_LEAKYRELU, ACT_THRESHOLDEDRELU = 0, 1, 2, 3, 4, 5
ACT_SCALEDTANH, ACT_HARDSIGMOID, ACT_ELU, ACT_SOFTSIGN, ACT_SOFTPLUS = 6, 7, 8, 9, 10
ACT_CODES = {
    "relu": ACT_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID, "affine": ACT_AFFINE,
    "leakyrelu": ACT_LEAKYRELU, "thresholdedrelu": ACT_THRESHOLDEDRELU,
    "scaledtanh": ACT_SCALEDTANH, "hardsigmoid": ACT_HARDSIGMOID, "elu": ACT_ELU,
    "softsign": ACT_SOFTSIGN, "softplus": ACT_SOFTPLUS,
}


@njit(error_model="numpy")
def _act(code, alpha, beta, s, d, lo, hi):
    """``d[lo:hi] = f(s[lo:hi])`` for the activation ``code`` with its ``alpha``/``beta``
    (``s`` may be changed too). ``s`` and ``d`` must be different arrays: vmath's rows vectorize
    only when LLVM's run-time overlap test passes, and in place it never does (3x slower).
    NaN stays NaN (no ``max``/``min`` that would drop it)."""
    one = d.dtype.type(1.0)
    zero = d.dtype.type(0.0)
    fast = d.itemsize == 4
    if code == ACT_TANH or code == ACT_SCALEDTANH:
        if code == ACT_SCALEDTANH:
            for j in range(lo, hi):
                s[j] = beta * s[j]
        if fast:
            tanh_row(d[lo:hi], s[lo:hi], hi - lo)
        else:
            for j in range(lo, hi):
                d[j] = math.tanh(s[j])
        if code == ACT_SCALEDTANH:
            for j in range(lo, hi):
                d[j] = alpha * d[j]
    elif code == ACT_SIGMOID:
        if fast:
            sigmoid_row(d[lo:hi], s[lo:hi], hi - lo)
        else:
            for j in range(lo, hi):
                x = s[j]
                e = math.exp(-abs(x))
                d[j] = one / (one + e) if x >= zero else e / (one + e)
    elif code == ACT_RELU:
        for j in range(lo, hi):
            x = s[j]
            d[j] = zero if x < zero else x
    elif code == ACT_AFFINE:
        for j in range(lo, hi):
            d[j] = alpha * s[j] + beta
    elif code == ACT_LEAKYRELU:
        for j in range(lo, hi):
            x = s[j]
            d[j] = alpha * x if x < zero else x
    elif code == ACT_THRESHOLDEDRELU:
        for j in range(lo, hi):
            x = s[j]
            d[j] = x if x > alpha else (x if x != x else zero)
    elif code == ACT_HARDSIGMOID:
        for j in range(lo, hi):
            x = alpha * s[j] + beta
            x = zero if x < zero else x
            d[j] = one if x > one else x
    elif code == ACT_ELU:
        for j in range(lo, hi):
            x = s[j]
            d[j] = alpha * (math.exp(x) - one) if x < zero else x
    elif code == ACT_SOFTSIGN:
        for j in range(lo, hi):
            x = s[j]
            d[j] = x / (one + abs(x))
    elif code == ACT_SOFTPLUS:
        for j in range(lo, hi):
            x = s[j]
            # log(1 + e^x) without overflow: x + log1p(e^-x) above 0
            d[j] = x + math.log1p(math.exp(-x)) if x > zero else math.log1p(math.exp(x))


@njit
def _clip(v, lo, hi, c):
    """``v[lo:hi]`` bounded to ``[-c, c]`` (NaN stays NaN)."""
    for j in range(lo, hi):
        x = v[j]
        if x > c:
            v[j] = c
        elif x < -c:
            v[j] = -c


@njit
def _dot8x1(hb, r, c0, nc, o):
    """``o[j] = hb · r[c0 + j]``, eight rows of ``r`` per pass sharing the loads of ``hb``."""
    n = hb.shape[0]
    zero = hb.dtype.type(0.0)
    j = 0
    while j + 8 <= nc:
        w0, w1, w2, w3 = r[c0 + j], r[c0 + j + 1], r[c0 + j + 2], r[c0 + j + 3]
        w4, w5, w6, w7 = r[c0 + j + 4], r[c0 + j + 5], r[c0 + j + 6], r[c0 + j + 7]
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        for k in range(n):
            x = hb[k]
            a0 += x * w0[k]
            a1 += x * w1[k]
            a2 += x * w2[k]
            a3 += x * w3[k]
            a4 += x * w4[k]
            a5 += x * w5[k]
            a6 += x * w6[k]
            a7 += x * w7[k]
        o[j], o[j + 1], o[j + 2], o[j + 3] = a0, a1, a2, a3
        o[j + 4], o[j + 5], o[j + 6], o[j + 7] = a4, a5, a6, a7
        j += 8
    while j < nc:
        w0 = r[c0 + j]
        a0 = zero
        for k in range(n):
            a0 += hb[k] * w0[k]
        o[j] = a0
        j += 1


@njit
def _dot4x4(h0, h1, h2, h3, r, c0, nc, o0, o1, o2, o3):
    """Four batch rows times four rows of ``r`` per pass (16 sums sharing 8 loads a step)."""
    n = h0.shape[0]
    zero = h0.dtype.type(0.0)
    j = 0
    while j + 4 <= nc:
        w0, w1, w2, w3 = r[c0 + j], r[c0 + j + 1], r[c0 + j + 2], r[c0 + j + 3]
        a0 = a1 = a2 = a3 = e0 = e1 = e2 = e3 = zero
        f0 = f1 = f2 = f3 = g0 = g1 = g2 = g3 = zero
        for k in range(n):
            x, y, z, u = h0[k], h1[k], h2[k], h3[k]
            v0, v1, v2, v3 = w0[k], w1[k], w2[k], w3[k]
            a0 += x * v0
            a1 += x * v1
            a2 += x * v2
            a3 += x * v3
            e0 += y * v0
            e1 += y * v1
            e2 += y * v2
            e3 += y * v3
            f0 += z * v0
            f1 += z * v1
            f2 += z * v2
            f3 += z * v3
            g0 += u * v0
            g1 += u * v1
            g2 += u * v2
            g3 += u * v3
        o0[j], o0[j + 1], o0[j + 2], o0[j + 3] = a0, a1, a2, a3
        o1[j], o1[j + 1], o1[j + 2], o1[j + 3] = e0, e1, e2, e3
        o2[j], o2[j + 1], o2[j + 2], o2[j + 3] = f0, f1, f2, f3
        o3[j], o3[j + 1], o3[j + 2], o3[j + 3] = g0, g1, g2, g3
        j += 4
    return j


@njit
def _hmul(h, b0, b1, r, rt, c0, nc, out, fn, wide, use_blas, zero):
    """``out[b, c0 + j] = h[b] · r[c0 + j]`` for ``b`` in ``[b0, b1)``, ``j`` in ``[0, nc)``
    (columns ``c0..c0+nc`` of ``H·Rᵀ``): BLAS on ``rt``, or dot products over ``r``'s contiguous
    rows (four batch rows by four ``r`` rows per pass, single rows eight ``r`` rows per pass)."""
    n = h.shape[1]
    if b1 <= b0 or nc <= 0:
        return
    if use_blas and b1 - b0 >= 2:  # one row: the dot loop is quicker than sgemm's packing
        isz = h.itemsize
        gemm_at(fn, wide, b1 - b0, nc, n, h.ctypes.data + b0 * n * isz, n,
                rt.ctypes.data + c0 * isz, rt.shape[1], zero,
                out.ctypes.data + (b0 * out.shape[1] + c0) * isz, out.shape[1])
        return
    b = b0
    done = 0  # columns of rows b0..b done by _dot4x4; the rest by _dot8x1 (one call site)
    while b < b1:
        if b + 4 <= b1:
            done = _dot4x4(h[b], h[b + 1], h[b + 2], h[b + 3], r, c0, nc, out[b, c0:c0 + nc],
                           out[b + 1, c0:c0 + nc], out[b + 2, c0:c0 + nc],
                           out[b + 3, c0:c0 + nc])
            rows = 4
        else:
            done = 0
            rows = 1
        if done < nc:
            for q in range(rows):
                _dot8x1(h[b + q], r, c0 + done, nc - done, out[b + q, c0 + done:c0 + nc])
        b += rows


@njit
def _xrow(layout, t, b, seq, batch):
    return t * batch + b if layout == 0 else b * seq + t


@njit
def _yrow(layout, t, d, b, seq, dirs, batch):
    return (t * dirs + d) * batch + b if layout == 0 else (b * seq + t) * dirs + d


@njit
def _zero_y(y, layout, t, d, b0, b1, seq, dirs, batch, zero):
    for b in range(b0, b1):
        yr = y[_yrow(layout, t, d, b, seq, dirs, batch)]
        for j in range(yr.shape[0]):
            yr[j] = zero


@njit
def _max_len(lens, b0, b1):
    m = 0
    for b in range(b0, b1):
        m = max(m, lens[b])
    return m


# ----- RNN ----------------------------------------------------------------------------------------
@njit
def _rnn_part(d, b0, b1, rev, xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens, codes, alphas,
              betas, layout, seq, clip, use_clip, fn, wide, use_blas):
    dirs, batch, n = hs.shape
    g_n = n
    zero = hs.dtype.type(0.0)
    h = hs[d]
    gb = gbuf[d]
    off = d * g_n
    top = _max_len(lens, b0, b1)
    for t in range(seq):
        if t >= top:
            if write_y:
                _zero_y(y, layout, t, d, b0, b1, seq, dirs, batch, zero)
            continue
        _hmul(h, b0, b1, r[d], rt[d], 0, g_n, gb, fn, wide, use_blas, zero)
        for b in range(b0, b1):
            ln = lens[b]
            if t >= ln:
                if write_y:
                    _zero_y(y, layout, t, d, b, b + 1, seq, dirs, batch, zero)
                continue
            ti = ln - 1 - t if rev else t
            x = xw[_xrow(layout, ti, b, seq, batch)]
            g = gb[b]
            bi = bias[d]
            for j in range(g_n):
                g[j] += x[off + j] + bi[j]
            if use_clip:
                _clip(g, 0, n, clip)
            a = abuf[d, b]
            _act(codes[d, 0], alphas[d, 0], betas[d, 0], g, a, 0, n)
            hb = h[b]
            for j in range(n):
                hb[j] = a[j]
            if write_y:
                yr = y[_yrow(layout, ti, d, b, seq, dirs, batch)]
                for j in range(n):
                    yr[j] = a[j]


# ----- GRU ----------------------------------------------------------------------------------------
@njit
def _gru_part(d, b0, b1, rev, xw, bias, rbh, r, rt, hs, gbuf, abuf, rh, y, write_y, lens, codes,
              alphas, betas, layout, seq, clip, use_clip, linear_before_reset, fn, wide,
              use_blas):
    """Gates z r h (ONNX order). ``linear_before_reset``: ``h~ = g(xh + r ⊙ (H·Rhᵀ + Rbh))``,
    else ``h~ = g(xh + (r ⊙ H)·Rhᵀ)`` with ``Rbh`` folded into ``bias``."""
    dirs, batch, n = hs.shape
    g_n = 3 * n
    zero = hs.dtype.type(0.0)
    one = hs.dtype.type(1.0)
    h = hs[d]
    gb = gbuf[d]
    rhd = rh[d]
    off = d * g_n
    rbd = rbh[d]
    bi = bias[d]
    top = _max_len(lens, b0, b1)
    for t in range(seq):
        if t >= top:
            if write_y:
                _zero_y(y, layout, t, d, b0, b1, seq, dirs, batch, zero)
            continue
        # z and r (and h under linear_before_reset) from H·Rᵀ
        _hmul(h, b0, b1, r[d], rt[d], 0, g_n if linear_before_reset else 2 * n, gb, fn, wide,
              use_blas, zero)
        for b in range(b0, b1):
            ln = lens[b]
            if t >= ln:
                continue
            ti = ln - 1 - t if rev else t
            x = xw[_xrow(layout, ti, b, seq, batch)]
            g = gb[b]
            for j in range(2 * n):
                g[j] += x[off + j] + bi[j]
            if use_clip:
                _clip(g, 0, 2 * n, clip)
            a = abuf[d, b]
            _act(codes[d, 0], alphas[d, 0], betas[d, 0], g, a, 0, 2 * n)
            if not linear_before_reset:
                hb = h[b]
                rb = rhd[b]
                for j in range(n):
                    rb[j] = a[n + j] * hb[j]
        if not linear_before_reset:
            _hmul(rhd, b0, b1, r[d], rt[d], 2 * n, n, gb, fn, wide, use_blas, zero)
        for b in range(b0, b1):
            ln = lens[b]
            if t >= ln:
                if write_y:
                    _zero_y(y, layout, t, d, b, b + 1, seq, dirs, batch, zero)
                continue
            ti = ln - 1 - t if rev else t
            x = xw[_xrow(layout, ti, b, seq, batch)]
            g = gb[b]
            a = abuf[d, b]
            if linear_before_reset:
                for j in range(n):
                    g[2 * n + j] = x[off + 2 * n + j] + bi[2 * n + j] + a[n + j] * (
                        g[2 * n + j] + rbd[j])
            else:
                for j in range(n):
                    g[2 * n + j] += x[off + 2 * n + j] + bi[2 * n + j]
            if use_clip:
                _clip(g, 2 * n, 3 * n, clip)
            _act(codes[d, 1], alphas[d, 1], betas[d, 1], g, a, 2 * n, 3 * n)
            hb = h[b]
            for j in range(n):
                z = a[j]
                hb[j] = (one - z) * a[2 * n + j] + z * hb[j]
            if write_y:
                yr = y[_yrow(layout, ti, d, b, seq, dirs, batch)]
                for j in range(n):
                    yr[j] = hb[j]


# ----- LSTM ---------------------------------------------------------------------------------------
@njit
def _lstm_part(d, b0, b1, rev, xw, bias, r, rt, p, has_p, hs, cs, gbuf, abuf, y, write_y, lens,
               codes, alphas, betas, layout, seq, clip, use_clip, input_forget, fn, wide,
               use_blas):
    """Gates i o f c (ONNX order); peepholes ``p [dirs, 3*hidden]`` as i o f."""
    dirs, batch, n = hs.shape
    g_n = 4 * n
    zero = hs.dtype.type(0.0)
    one = hs.dtype.type(1.0)
    h = hs[d]
    c = cs[d]
    gb = gbuf[d]
    off = d * g_n
    bi = bias[d]
    pd = p[d]
    top = _max_len(lens, b0, b1)
    for t in range(seq):
        if t >= top:
            if write_y:
                _zero_y(y, layout, t, d, b0, b1, seq, dirs, batch, zero)
            continue
        _hmul(h, b0, b1, r[d], rt[d], 0, g_n, gb, fn, wide, use_blas, zero)
        for b in range(b0, b1):
            ln = lens[b]
            if t >= ln:
                if write_y:
                    _zero_y(y, layout, t, d, b, b + 1, seq, dirs, batch, zero)
                continue
            ti = ln - 1 - t if rev else t
            x = xw[_xrow(layout, ti, b, seq, batch)]
            g = gb[b]
            cb = c[b]
            hb = h[b]
            for j in range(g_n):
                g[j] += x[off + j] + bi[j]
            if has_p:  # i and f see the previous cell state
                for j in range(n):
                    g[j] += pd[j] * cb[j]
                    g[2 * n + j] += pd[2 * n + j] * cb[j]
            if use_clip:
                _clip(g, 0, n, clip)
                _clip(g, 2 * n, g_n, clip)
            a = abuf[d, b]
            # i, f, c~ (one call site in a loop: each inlined _act is a lot of machine code)
            for q in range(3):
                if q == 1 and input_forget:
                    continue
                k = 1 if q == 2 else 0
                lo = (0, 2 * n, 3 * n)[q]
                _act(codes[d, k], alphas[d, k], betas[d, k], g, a, lo, lo + n)
            if input_forget:
                for j in range(n):
                    a[2 * n + j] = one - a[j]
            for j in range(n):
                cb[j] = a[2 * n + j] * cb[j] + a[j] * a[3 * n + j]
            if has_p:  # o sees the new cell state
                for j in range(n):
                    g[n + j] += pd[n + j] * cb[j]
            if use_clip:
                _clip(g, n, 2 * n, clip)
            for j in range(n):
                g[j] = cb[j]  # h(C)'s input where i was (spent)
            # o, then h(C) over i
            for q in range(2):
                k = 0 if q == 0 else 2
                lo = n if q == 0 else 0
                _act(codes[d, k], alphas[d, k], betas[d, k], g, a, lo, lo + n)
            for j in range(n):
                hb[j] = a[n + j] * a[j]
            if write_y:
                yr = y[_yrow(layout, ti, d, b, seq, dirs, batch)]
                for j in range(n):
                    yr[j] = hb[j]


# ----- threads ------------------------------------------------------------------------------------
@njit
def _part(u, parts, batch):
    """Direction and batch range ``[b0, b1)`` of work unit ``u``."""
    d = u // parts
    k = u - d * parts
    return d, batch * k // parts, batch * (k + 1) // parts


@njit
def _project(d, dirs, x2, wcat, xw, fn, wide):
    """Direction ``d``'s columns of the input projection, ``xw[:, d*G:(d+1)*G] = x2 ·
    wcat[:, d*G:(d+1)*G]``, through BLAS: each direction's unit computes its own inside the one
    parallel region (one region per layer instead of two: entering one costs microseconds on an
    idle machine, up to a scheduler time slice when another process holds a core)."""
    rows, k = x2.shape
    g_n = xw.shape[1] // dirs
    isz = xw.itemsize
    gemm_at(fn, wide, rows, g_n, k, x2.ctypes.data, k, wcat.ctypes.data + d * g_n * isz,
            wcat.shape[1], xw.dtype.type(0.0), xw.ctypes.data + d * g_n * isz, xw.shape[1])


@njit
def _check(gates, n_acts, xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens, codes, alphas,
           betas, layout, seq, parts, x2, wcat, fuse):
    """Every extent the loops rely on, checked once per call before any of them runs (the
    caller checked them already; this keeps an out-of-range index impossible whatever it
    passes). Raises ValueError."""
    dirs, batch, n = hs.shape
    g_n = gates * n
    if dirs < 1 or dirs > 2 or parts < 1 or seq < 0 or (layout != 0 and layout != 1):
        raise ValueError("recurrent: bad directions, parts, sequence length or layout")
    if xw.shape[0] != seq * batch or xw.shape[1] != dirs * g_n:
        raise ValueError("recurrent: input projection shape")
    if bias.shape[0] != dirs or bias.shape[1] != g_n:
        raise ValueError("recurrent: bias shape")
    if r.shape[0] != dirs or r.shape[1] != g_n or r.shape[2] != n:
        raise ValueError("recurrent: R shape")
    if rt.shape[0] != dirs or rt.shape[1] != n or rt.shape[2] != g_n:
        raise ValueError("recurrent: R transposed shape")
    for buf in (gbuf, abuf):
        if buf.shape[0] != dirs or buf.shape[1] != batch or buf.shape[2] != g_n:
            raise ValueError("recurrent: scratch shape")
    if write_y and (y.shape[0] != seq * dirs * batch or y.shape[1] != n):
        raise ValueError("recurrent: Y shape")
    if lens.shape[0] != batch:
        raise ValueError("recurrent: sequence_lens shape")
    for b in range(batch):
        if lens[b] < 0 or lens[b] > seq:
            raise ValueError("recurrent: sequence_lens out of range")
    for a in (alphas, betas):
        if a.shape[0] != dirs or a.shape[1] < n_acts:
            raise ValueError("recurrent: activation parameters shape")
    if codes.shape[0] != dirs or codes.shape[1] < n_acts:
        raise ValueError("recurrent: activations shape")
    if fuse and (parts != 1 or x2.shape[0] != seq * batch or x2.shape[1] < 1
                 or wcat.shape[0] != x2.shape[1] or wcat.shape[1] != dirs * g_n):
        raise ValueError("recurrent: X or W shape for the fused projection")


@njit(parallel=True)
def rnn_run(xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens, codes, alphas, betas, layout, seq,
            reverse, clip, use_clip, fn, wide, use_blas, parts, x2, wcat, fuse):
    """RNN over every direction; ``parts`` batch ranges per direction, all units in parallel.
    ``fuse``: ``xw`` is computed here from ``x2 [seq*batch, input]`` and ``wcat [input,
    dirs*G]`` (see :func:`_project`; needs BLAS and ``parts == 1``)."""
    _check(1, 1, xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens, codes, alphas, betas,
           layout, seq, parts, x2, wcat, fuse)
    dirs, batch = hs.shape[0], hs.shape[1]
    for u in prange(dirs * parts):
        d, b0, b1 = _part(u, parts, batch)
        if fuse:
            _project(d, dirs, x2, wcat, xw, fn, wide)
        _rnn_part(d, b0, b1, reverse or d == 1, xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens,
                  codes, alphas, betas, layout, seq, clip, use_clip, fn, wide, use_blas)


@njit(parallel=True)
def gru_run(xw, bias, rbh, r, rt, hs, gbuf, abuf, rh, y, write_y, lens, codes, alphas, betas,
            layout, seq, reverse, clip, use_clip, linear_before_reset, fn, wide, use_blas, parts,
            x2, wcat, fuse):
    """GRU over every direction (see :func:`rnn_run`)."""
    _check(3, 2, xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens, codes, alphas, betas,
           layout, seq, parts, x2, wcat, fuse)
    dirs, batch, n = hs.shape
    if rbh.shape[0] != dirs or rbh.shape[1] != n or (not linear_before_reset and (
            rh.shape[0] != dirs or rh.shape[1] != batch or rh.shape[2] != n)):
        raise ValueError("recurrent: GRU bias or scratch shape")
    for u in prange(dirs * parts):
        d, b0, b1 = _part(u, parts, batch)
        if fuse:
            _project(d, dirs, x2, wcat, xw, fn, wide)
        _gru_part(d, b0, b1, reverse or d == 1, xw, bias, rbh, r, rt, hs, gbuf, abuf, rh, y,
                  write_y, lens, codes, alphas, betas, layout, seq, clip, use_clip,
                  linear_before_reset,
                  fn, wide, use_blas)


@njit(parallel=True)
def lstm_run(xw, bias, r, rt, p, has_p, hs, cs, gbuf, abuf, y, write_y, lens, codes, alphas, betas,
             layout, seq, reverse, clip, use_clip, input_forget, fn, wide, use_blas, parts, x2,
             wcat, fuse):
    """LSTM over every direction (see :func:`rnn_run`)."""
    _check(4, 3, xw, bias, r, rt, hs, gbuf, abuf, y, write_y, lens, codes, alphas, betas,
           layout, seq, parts, x2, wcat, fuse)
    dirs, batch, n = hs.shape
    if cs.shape[0] != dirs or cs.shape[1] != batch or cs.shape[2] != n or p.shape[0] != dirs \
            or p.shape[1] != 3 * n:
        raise ValueError("recurrent: LSTM cell state or peephole shape")
    for u in prange(dirs * parts):
        d, b0, b1 = _part(u, parts, batch)
        if fuse:
            _project(d, dirs, x2, wcat, xw, fn, wide)
        _lstm_part(d, b0, b1, reverse or d == 1, xw, bias, r, rt, p, has_p, hs, cs, gbuf, abuf, y,
                   write_y, lens, codes, alphas, betas, layout, seq, clip, use_clip,
                   input_forget, fn, wide, use_blas)


rnn_run_serial = serial_twin(rnn_run)
gru_run_serial = serial_twin(gru_run)
lstm_run_serial = serial_twin(lstm_run)
