"""CUDA kernels: int8 QConv and QGemm (``edgert`` domain), bit-exact with the CPU kernels.

Same arithmetic as ``cpu/quantized.py`` (TFLite's int8 scheme): products of ``x - x_zero_point``
and the int8 weight summed exactly in an integer accumulator (padding taps contribute 0, i.e.
the zero point), plus the int32 bias, then the fixed-point requantization ``(acc * M +
2**(s-1)) >> s`` per output channel in int64 (an arithmetic shift: rounds half up, as the CPU),
plus the output zero point, clamped to ``[act_min, act_max]``. Integer arithmetic has one exact
answer, so the device result equals the CPU one bit for bit (the tests use tolerance 0).

One thread per output element (the windowed sum of :mod:`.conv`'s direct kernel). The weights,
bias and multipliers are uploaded once. The other int8 ops (QAdd, QConcat, Quantize...) run on
the host.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import quantized as cpu
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
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


class _CudaQLinear(CudaKernel):
    def _upload_quant(self):
        self._d_w = self.upload(np.asarray(self.w_packed, np.int8), "W")
        self._d_bias = self.upload(self.bias, "bias")
        self._d_mult = self.upload(self.mult, "mult")
        self._d_shift = self.upload(self.shift, "shift")


class CudaQConv(_CudaQLinear, cpu.QConv):
    CPU = cpu.QConv

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._c_in = int(inputs[0].shape[1])
        self._m_out = int(outs[0].shape[1])
        self._upload_quant()
        self._d_geo = self.upload(self.geo, "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _qconv[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), self._d_w.reshape(-1), self._d_bias, self._d_mult,
                self._d_shift, y.reshape(-1), self._d_geo, self._c_in, self._m_out, self.group,
                self.x_zp, self.y_zp, self.lo, self.hi,
            )


class CudaQGemm(_CudaQLinear, cpu.QGemm):
    CPU = cpu.QGemm

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self._nk = (int(self.w_packed.shape[0]), int(self.w_packed.shape[1]))
        self._upload_quant()
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        n_out, k = self._nk
        if y.size:
            _qgemm[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), self._d_w.reshape(-1), self._d_bias, self._d_mult,
                self._d_shift, y.reshape(-1), n_out, k, self.x_zp, self.y_zp, self.lo, self.hi,
            )


def register(reg: KernelRegistry) -> None:
    reg.add("QConv", CudaQConv, domain="edgert")
    reg.add("QGemm", CudaQGemm, domain="edgert")
