"""CUDA kernels: the int8 ops of ``edgert.quantize``'s models (``edgert`` domain), bit-exact
with the CPU kernels.

Same arithmetic as ``cpu/quantized.py`` (TFLite's int8 scheme): products of ``x - x_zero_point``
and the int8 weight summed exactly in an integer accumulator (padding taps contribute 0, i.e.
the zero point), plus the int32 bias, then the fixed-point requantization ``(acc * M +
2**(s-1)) >> s`` per output channel in int64 (an arithmetic shift: rounds half up, as the CPU),
plus the output zero point, clamped to ``[act_min, act_max]``. Integer arithmetic has one exact
answer, so the device result equals the CPU one bit for bit (the tests use tolerance 0).

One thread per output element (the windowed sum of :mod:`.conv`'s direct kernel; QConvTranspose
in its gather form). The weights, bias and multipliers are uploaded once.

The other int8 ops follow their CPU kernels' integer arithmetic line by line:

* Quantize (float32 → int8): ``x / scale`` in float32, rounded half to even, plus the zero point,
  saturated; NaN maps to the zero point. Dequantize: ``(float32(q) - zp) * scale`` in float32,
  per tensor or per channel.
* QAdd / QMul: TFLite's fixed-point rescaling with broadcasting (the strides tables of
  :mod:`.elementwise`). QConcat: each input copied into its slab, rescaled when its parameters
  differ from the output's.
* QMaxPool / QAveragePool / QGlobalAveragePool: integer max, or an integer sum divided with
  rounding half away from zero (count = taps inside the input, or the full window with
  ``count_include_pad``).
* QLut: a 256-entry table gather. QSoftmax: per row, the float32 softmax of the CPU kernel
  (dequantize relative to the row max, ``exp``, sequential float32 sum, round half to even).
  ``exp`` is the one non-integer step: the GPU's ``expf`` may differ from the host's by an ulp,
  so on a GPU an output can land one int8 step away from the CPU's on a rounding tie (the
  simulator evaluates the same float32 expression as the CPU).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime.kernels.cpu import quantized as cpu
from edgert.runtime.kernels.cuda._common import (
    MAX_RANK,
    THREADS,
    CudaKernel,
    blocks,
    cuda,
)
from edgert.runtime.kernels.cuda.elementwise import binary_plan
from edgert.runtime.registry import KernelRegistry


@cuda.jit(device=True)
def _requant_store(acc, m, bias, mult, shift, zo, lo, hi):
    s = shift[m]
    v = ((acc + bias[m]) * mult[m] + (np.int64(1) << (s - 1))) >> s
    return min(max(v + zo, lo), hi)


@cuda.jit
def _qconv(x, w, bias, mult, shift, y, geo, c_in, m_out, group, x_zp, zo, lo, hi):
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    d_n, h_n, w_n = geo[12], geo[13], geo[14]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    ksz = kd_n * kh_n * kw_n
    mpg = m_out // group
    cpg = c_in // group
    p_in = d_n * h_n * w_n
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % ow_n
        t = i // ow_n
        oh = t % oh_n
        t //= oh_n
        od = t % od_n
        t //= od_n
        m = t % m_out
        n = t // m_out
        g = m // mpg
        acc = np.int64(0)
        for c in range(cpg):
            xc = (n * c_in + g * cpg + c) * p_in
            wc = (m * cpg + c) * ksz
            for kd in range(kd_n):
                iz = od * sd + kd * dd - pd
                if iz < 0 or iz >= d_n:
                    continue
                for kh in range(kh_n):
                    iy = oh * sh + kh * dh - ph
                    if iy < 0 or iy >= h_n:
                        continue
                    xrow = xc + (iz * h_n + iy) * w_n
                    wrow = wc + (kd * kh_n + kh) * kw_n
                    for kw in range(kw_n):
                        ix = ow * sw + kw * dw - pw
                        if 0 <= ix < w_n:
                            acc += (np.int64(x[xrow + ix]) - x_zp) * np.int64(w[wrow + kw])
        y[i] = _requant_store(acc, m, bias, mult, shift, zo, lo, hi)


@cuda.jit
def _qgemm(a, w, bias, mult, shift, y, n_out, k, x_zp, zo, lo, hi):
    """``y[r, n] = clamp(zo + requant(bias[n] + sum_k (a[r, k] - x_zp) * w[n, k]))``."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n = i % n_out
        r = i // n_out
        acc = np.int64(0)
        for j in range(k):
            acc += (np.int64(a[r * k + j]) - x_zp) * np.int64(w[n * k + j])
        y[i] = _requant_store(acc, n, bias, mult, shift, zo, lo, hi)


@cuda.jit
def _qconv_transpose(x, w, bias, mult, shift, y, geo, c_in, m_out, group, x_zp, zo, lo, hi):
    """One thread per output: the gather form of ConvTranspose (output ``o`` of the full
    result receives input ``i`` through tap ``k`` when ``o + pad = i * s + k * d``)."""
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    d_n, h_n, w_n = geo[12], geo[13], geo[14]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    ksz = kd_n * kh_n * kw_n
    mpg = m_out // group
    cpg = c_in // group
    p_in = d_n * h_n * w_n
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % ow_n
        t = i // ow_n
        oh = t % oh_n
        t //= oh_n
        od = t % od_n
        t //= od_n
        m = t % m_out
        n = t // m_out
        g = m // mpg
        mo = m - g * mpg
        acc = np.int64(0)
        for c in range(cpg):
            ci = g * cpg + c
            xc = (n * c_in + ci) * p_in
            wc = (ci * mpg + mo) * ksz
            for kd in range(kd_n):
                tz = od + pd - kd * dd
                if tz < 0 or tz % sd != 0 or tz // sd >= d_n:
                    continue
                for kh in range(kh_n):
                    ty = oh + ph - kh * dh
                    if ty < 0 or ty % sh != 0 or ty // sh >= h_n:
                        continue
                    xrow = xc + ((tz // sd) * h_n + ty // sh) * w_n
                    wrow = wc + (kd * kh_n + kh) * kw_n
                    for kw in range(kw_n):
                        tx = ow + pw - kw * dw
                        if tx >= 0 and tx % sw == 0 and tx // sw < w_n:
                            acc += (np.int64(x[xrow + tx // sw]) - x_zp) * np.int64(w[wrow + kw])
        y[i] = _requant_store(acc, m, bias, mult, shift, zo, lo, hi)


class _CudaQLinear(CudaKernel):
    def _upload_quant(self, w: np.ndarray):
        # The int8 weights as the model holds them ([M, K...] row-major), not the CPU kernel's
        # packing (which depends on the CPU algorithm chosen and may be float32 chunks).
        self._d_w = self.upload(np.ascontiguousarray(w, np.int8).reshape(w.shape[0], -1), "W")
        self._d_bias = self.upload(self.bias, "bias")
        self._d_mult = self.upload(self.mult, "mult")
        self._d_shift = self.upload(self.shift, "shift")


class CudaQConv(_CudaQLinear):
    CPU = cpu.QConv

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._c_in = int(inputs[0].shape[1])
        self._m_out = int(outs[0].shape[1])
        self._upload_quant(np.asarray(inputs[1].value))
        self._d_geo = self.upload(np.asarray(self.geo, np.int64), "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _qconv[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), self._d_w.reshape(-1), self._d_bias, self._d_mult,
                self._d_shift, y.reshape(-1), self._d_geo, self._c_in, self._m_out, self.group,
                self.x_zp, self.y_zp, self.lo, self.hi,
            )


class CudaQConvTranspose(_CudaQLinear):
    CPU = cpu.QConvTranspose

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._c_in = int(inputs[0].shape[1])
        self._m_out = int(outs[0].shape[1])
        self._group = int(self.attr("group", 1))
        self._upload_quant(np.asarray(inputs[1].value))
        self._d_geo = self.upload(np.asarray(self.float_kernel.geo, np.int64), "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _qconv_transpose[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), self._d_w.reshape(-1), self._d_bias, self._d_mult,
                self._d_shift, y.reshape(-1), self._d_geo, self._c_in, self._m_out,
                self._group, self.x_zp, self.y_zp, self.lo, self.hi,
            )


class CudaQGemm(_CudaQLinear):
    CPU = cpu.QGemm

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        w = np.asarray(inputs[1].value)
        self._nk = (int(w.shape[0]), int(w.shape[1]))
        self._upload_quant(w)
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        n_out, k = self._nk
        if y.size:
            _qgemm[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), self._d_w.reshape(-1), self._d_bias, self._d_mult,
                self._d_shift, y.reshape(-1), n_out, k, self.x_zp, self.y_zp, self.lo, self.hi,
            )


# ----- Quantize / Dequantize ----------------------------------------------------------------------
@cuda.jit(device=True)
def _round_clamp(v, zp):
    """``clip(round_half_even(v) + zp, -128, 127)``; NaN gives ``zp`` (the CPU's choice)."""
    if v != v:
        return min(max(zp, -128), 127)
    # Anything beyond +-512 saturates anyway: clamping first keeps floor() in int range (inf too).
    v = min(max(v, -512.0), 512.0)
    f = math.floor(v)
    d = v - f
    r = f
    if d > 0.5:
        r = f + 1
    elif d == 0.5 and f % 2 != 0:  # a tie: to the even neighbour
        r = f + 1
    return min(max(r + zp, -128), 127)


@cuda.jit
def _quantize(x, scale, zp, y):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = _round_clamp(x[i] / scale, zp)  # float32 / float32: the CPU's float32 quotient


@cuda.jit
def _dequantize(x, scale, zp, y, channels, inner):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = (i // inner) % channels
        y[i] = (np.float32(x[i]) - zp[c]) * scale[c]


class CudaQuantize(CudaKernel):
    CPU = cpu.Quantize

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = np.dtype(inputs[0].dtype) == np.float32
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _quantize[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), np.float32(self.scale), np.int64(self.zp), y.reshape(-1))


class CudaDequantize(CudaKernel):
    CPU = cpu.Dequantize

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        shape = tuple(inputs[0].shape)
        scale = self.scale.reshape(-1)
        axis = next((k for k, n in enumerate(self.scale.shape) if n > 1), None)
        self._channels = int(scale.size)
        self._inner = 1 if axis is None else int(np.prod(shape[axis + 1:], dtype=np.int64))
        self._d_scale = self.upload(np.ascontiguousarray(scale, np.float32), "scale")
        self._d_zp = self.upload(np.ascontiguousarray(self.zp.reshape(-1), np.float32), "zp")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _dequantize[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), self._d_scale, self._d_zp, y.reshape(-1), self._channels,
                self._inner)


# ----- QAdd / QMul --------------------------------------------------------------------------------
@cuda.jit(device=True)
def _requant(acc, m, s):
    return (acc * m + (np.int64(1) << (s - 1))) >> s


@cuda.jit
def _qbinary(a, b, y, shape, sa, sb, is_add, p, lo, hi):
    """``p``: int64[9] = (ma, sha, za, mb, shb, zb, mo, sho, zo) (QMul reads za, zb, mo, sho)."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rem = i
        ia = 0
        ib = 0
        for d in range(MAX_RANK - 1, -1, -1):
            k = rem % shape[d]
            rem //= shape[d]
            ia += k * sa[d]
            ib += k * sb[d]
        da = np.int64(a[ia]) - p[2]
        db = np.int64(b[ib]) - p[5]
        if is_add:
            va = _requant(da << 20, p[0], p[1])
            vb = _requant(db << 20, p[3], p[4])
            v = _requant(va + vb, p[6], p[7]) + p[8]
        else:
            v = _requant(da * db, p[6], p[7]) + p[8]
        y[i] = min(max(v, lo), hi)


class _CudaQBinary(CudaKernel):
    IS_ADD = True

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        if self.IS_ADD:
            p = (self.ma, self.sha, self.za, self.mb, self.shb, self.zb, self.mo, self.sho,
                 self.zo)
        else:
            p = (0, 1, self.za, 0, 1, self.zb, self.mo, self.sho, self.zo)
        self._d_p = self.upload(np.array(p, np.int64), "params")
        self._plan = self.upload_plan(binary_plan(inputs[0].shape, inputs[1].shape,
                                                  outs[0].shape))
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            shape, sa, sb = self._plan
            _qbinary[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), inputs[1].reshape(-1), y.reshape(-1), shape, sa, sb,
                self.IS_ADD, self._d_p, self.lo, self.hi)


class CudaQAdd(_CudaQBinary):
    CPU = cpu.QAdd


class CudaQMul(_CudaQBinary):
    CPU = cpu.QMul
    IS_ADD = False


# ----- QConcat ------------------------------------------------------------------------------------
@cuda.jit
def _qslab(x, y, row, y_row, start, rescale, zi, m, s, zo):
    """Copy ``x (outer, row)`` into columns ``[start, start + row)`` of ``y (outer, y_row)``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        o = i // row
        j = i - o * row
        v = x[i]
        if rescale:
            v = min(max(_requant(np.int64(v) - zi, m, s) + zo, -128), 127)
        y[o * y_row + start + j] = v


class CudaQConcat(CudaKernel):
    CPU = cpu.QConcat

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        shape = tuple(outs[0].shape)
        inner = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        self._y_row = int(shape[self.axis]) * inner
        self._slabs = []
        start = 0
        for size, p in zip(self.sizes, self.params):
            zi, m, s = (0, 0, 1) if p is None else p
            self._slabs.append((int(size) * inner, start, p is not None, zi, m, s))
            start += int(size) * inner
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0].reshape(-1)
        for x, (row, start, rescale, zi, m, s) in zip(inputs, self._slabs):
            if x.size:
                _qslab[blocks(x.size), THREADS, self.stream](
                    x.reshape(-1), y, row, self._y_row, start, rescale, zi, m, s, self.zo)


# ----- pooling ------------------------------------------------------------------------------------
@cuda.jit(device=True)
def _div_round_away(v, c):
    """``v / c`` rounded half away from zero, exactly in integers (TFLite's average)."""
    if v >= 0:
        return (v + c // 2) // c
    return -((-v + c // 2) // c)


@cuda.jit
def _qpool(x, y, geo, is_max, count_pad):
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    d_n, h_n, w_n = geo[12], geo[13], geo[14]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    p_in = d_n * h_n * w_n
    full = kd_n * kh_n * kw_n
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % ow_n
        t = i // ow_n
        oh = t % oh_n
        t //= oh_n
        od = t % od_n
        base = (t // od_n) * p_in
        acc = np.int64(-128) if is_max else np.int64(0)
        cnt = 0
        for kd in range(kd_n):
            iz = od * sd + kd * dd - pd
            if iz < 0 or iz >= d_n:
                continue
            for kh in range(kh_n):
                iy = oh * sh + kh * dh - ph
                if iy < 0 or iy >= h_n:
                    continue
                for kw in range(kw_n):
                    ix = ow * sw + kw * dw - pw
                    if ix < 0 or ix >= w_n:
                        continue
                    v = np.int64(x[base + (iz * h_n + iy) * w_n + ix])
                    if is_max:
                        acc = max(acc, v)
                    else:
                        acc += v
                        cnt += 1
        if is_max:
            y[i] = acc
        else:
            c = full if count_pad else max(cnt, 1)
            y[i] = _div_round_away(acc, c)


@cuda.jit
def _qgap(x, y, length):
    for r in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        acc = np.int64(0)
        for j in range(length):
            acc += x[r * length + j]
        y[r] = _div_round_away(acc, length)


class _CudaQPool(CudaKernel):
    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._d_geo = self.upload(np.asarray(self.geo, np.int64), "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _qpool[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._d_geo, self.is_max, self.count_pad)


class CudaQMaxPool(_CudaQPool):
    CPU = cpu.QMaxPool


class CudaQAveragePool(_CudaQPool):
    CPU = cpu.QAveragePool


class CudaQGlobalAveragePool(CudaKernel):
    CPU = cpu.QGlobalAveragePool

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._len = int(np.prod(inputs[0].shape[2:], dtype=np.int64))
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _qgap[blocks(y.size), THREADS, self.stream](inputs[0].reshape(-1), y.reshape(-1),
                                                        self._len)


# ----- QLut / QSoftmax ----------------------------------------------------------------------------
@cuda.jit
def _qlut(x, table, y):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = table[np.int32(x[i]) + 128]


class CudaQLut(CudaKernel):
    CPU = cpu.QLut

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._d_table = self.upload(self.table, "table")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _qlut[blocks(y.size), THREADS, self.stream](inputs[0].reshape(-1), self._d_table,
                                                        y.reshape(-1))


@cuda.jit
def _qsoftmax(x, y, outer, n, inner, sx, so, zo):
    """One thread per ``(outer, inner)`` row of ``n`` along the axis; float32 like the CPU."""
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        j = t - o * inner
        base = o * n * inner + j
        mx = np.int32(-128)
        for k in range(n):
            mx = max(mx, np.int32(x[base + k * inner]))
        tot = np.float32(0.0)
        for k in range(n):
            tot += np.float32(math.exp(sx * np.float32(np.int32(x[base + k * inner]) - mx)))
        for k in range(n):
            e = np.float32(math.exp(sx * np.float32(np.int32(x[base + k * inner]) - mx)))
            y[base + k * inner] = _round_clamp(e / tot / so, zo)


class CudaQSoftmax(CudaKernel):
    CPU = cpu.QSoftmax

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        shape = tuple(inputs[0].shape)
        self._dims = (int(np.prod(shape[:self.axis], dtype=np.int64)), int(shape[self.axis]),
                      int(np.prod(shape[self.axis + 1:], dtype=np.int64)))
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        outer, n, inner = self._dims
        if y.size:
            _qsoftmax[blocks(outer * inner), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), outer, n, inner, np.float32(self.sx),
                np.float32(self.so), np.int64(self.zo))


def register(reg: KernelRegistry) -> None:
    for name, kernel in (
        ("QConv", CudaQConv),
        ("QConvTranspose", CudaQConvTranspose),
        ("QGemm", CudaQGemm),
        ("Quantize", CudaQuantize),
        ("Dequantize", CudaDequantize),
        ("QAdd", CudaQAdd),
        ("QMul", CudaQMul),
        ("QConcat", CudaQConcat),
        ("QMaxPool", CudaQMaxPool),
        ("QAveragePool", CudaQAveragePool),
        ("QGlobalAveragePool", CudaQGlobalAveragePool),
        ("QLut", CudaQLut),
        ("QSoftmax", CudaQSoftmax),
    ):
        reg.add(name, kernel, domain="edgert")
