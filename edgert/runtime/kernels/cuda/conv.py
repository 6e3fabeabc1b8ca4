"""CUDA kernels: Conv (1-D/2-D/3-D, grouped, depthwise) with fused bias and activation.

Two device paths, chosen in ``prepare`` from the shared Conv semantics
(:func:`edgert.runtime.ops.conv.conv_spec`):

* **implicit GEMM** (dense and grouped convolutions): per image and group, ``Y (M/G, P) =
  W (M/G, C/G*K) @ col (C/G*K, P)``, computed with 16x16 shared-memory tiles as in
  :mod:`.gemm`, except that the tile of ``col`` is gathered from ``X`` while loading (the
  im2col matrix is never stored: for ResNet-50's first layer at batch 32 it would be 470 MB).
  Padding taps load 0.
* **direct** (depthwise and groups with few output channels): one thread per output element
  summing its window. A GEMM tile would leave 15 of 16 rows idle when a group has one channel.

The weight is uploaded once, in ONNX's flat ``(M, C/G, kD, kH, kW)`` layout. Device coverage:
float32 with constant weights and bias; other cases run the CPU kernel (the host kernel this
one holds, prepared only then).

ConvTranspose (decoders, PyTorch upsampling): one thread per output element gathers the input
positions that scatter into it. On axis ``a`` output ``o`` receives tap ``k`` from input
``i = (o + pad_begin - k * dilation) / stride`` when that division is exact and ``i`` is in
range, so the sum is over ``C/G`` input channels and the kernel window, as for a direct Conv,
with the ONNX weight ``(C, M/G, k...)`` read in place. Bias and the fused activation follow,
as in the CPU kernel's col2im epilogue. Positions no tap reaches (``output_shape`` larger than
the full output) get the bias alone.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import conv as cpu
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
from edgert.runtime.kernels.cuda.epilogue import activate
from edgert.runtime.ops.conv import conv_spec
from edgert.runtime.registry import KernelRegistry, TensorInfo

TILE = 16
F32 = np.dtype(np.float32)
# Below this many output channels per group the direct kernel wins over 16-row GEMM tiles.
DIRECT_BELOW = 8


@cuda.jit
def _conv_igemm(x, w, bias, y, geo, c_in, m_out, group, has_bias, code, p0, p1, zsum, has_sum):
    """Implicit-GEMM convolution; grid ``(P/16, (M/G)/16, N*G)``, block 16x16."""
    sa = cuda.shared.array((TILE, TILE), np.float32)
    sb = cuda.shared.array((TILE, TILE), np.float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    d_n, h_n, w_n = geo[12], geo[13], geo[14]
    oh_n, ow_n = geo[16], geo[17]
    p_out = geo[15] * oh_n * ow_n
    ksz = kd_n * kh_n * kw_n
    mpg = m_out // group
    cpg = c_in // group
    kc = cpg * ksz
    z = cuda.blockIdx.z
    n = z // group
    g = z % group
    row = cuda.blockIdx.y * TILE + ty  # output channel within the group
    col = cuda.blockIdx.x * TILE + tx  # output pixel
    # The pixel this thread gathers for the B tile (column tx of the tile) is fixed per block.
    pcol = cuda.blockIdx.x * TILE + tx
    ow = pcol % ow_n
    q = pcol // ow_n
    oh = q % oh_n
    od = q // oh_n
    x_base = (n * c_in + g * cpg) * d_n * h_n * w_n
    w_row = (g * mpg + cuda.blockIdx.y * TILE + ty) * kc
    acc = np.float32(0.0)
    for t0 in range(0, kc, TILE):
        ka = t0 + tx
        if row < mpg and ka < kc:
            sa[ty, tx] = w[w_row + ka]
        else:
            sa[ty, tx] = np.float32(0.0)
        kb = t0 + ty
        v = np.float32(0.0)
        if kb < kc and pcol < p_out:
            c = kb // ksz
            r = kb % ksz
            kw = r % kw_n
            r //= kw_n
            kh = r % kh_n
            kd = r // kh_n
            iz = od * sd + kd * dd - pd
            iy = oh * sh + kh * dh - ph
            ix = ow * sw + kw * dw - pw
            if 0 <= iz < d_n and 0 <= iy < h_n and 0 <= ix < w_n:
                v = x[x_base + ((c * d_n + iz) * h_n + iy) * w_n + ix]
        sb[ty, tx] = v
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()
    if row < mpg and col < p_out:
        m = g * mpg + row
        if has_bias:
            acc += bias[m]
        i = (n * m_out + m) * p_out + col
        if has_sum:
            acc += zsum[i]
        y[i] = activate(acc, code, p0, p1)


@cuda.jit
def _conv_direct(x, w, bias, y, geo, c_in, m_out, group, has_bias, code, p0, p1, zsum,
                 has_sum):
    """One thread per output element (grid-stride), summing its whole window."""
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
        acc = np.float32(0.0)
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
                            acc += x[xrow + ix] * w[wrow + kw]
        if has_bias:
            acc += bias[m]
        if has_sum:
            acc += zsum[i]
        y[i] = activate(acc, code, p0, p1)


class CudaConv(CudaKernel):
    """ONNX Conv / edgert.Conv (with a fused activation and residual) on the device (see the
    module docstring)."""

    CPU = cpu.ConvKernel

    def prepare(self, inputs):
        # The shared Conv semantics (edgert.runtime.ops.conv); the CPU kernel, with its path
        # choice and weight packing, is prepared only for the cases that run on the host.
        spec = self.spec = conv_spec(self, inputs)
        w, b = inputs[1], inputs[2] if len(inputs) > 2 else None
        self.on_device = (
            spec.dtype == F32
            and w.value is not None
            and (b is None or b.value is not None)
            and not spec.shuffle_g  # a fused channel shuffle runs on the host
        )
        if not self.on_device:
            return super().prepare(inputs)
        self.defer_host(inputs)
        outs = [TensorInfo(spec.y_shape, spec.dtype)]
        mpg = spec.m_out // spec.group
        self._direct = mpg < DIRECT_BELOW
        self._d_w = self.upload(np.ascontiguousarray(w.value, F32).reshape(-1), "W")
        bias = np.asarray(b.value, F32) if b is not None else np.zeros(1, F32)
        self._d_b = self.upload(bias, "B")
        self._d_geo = self.upload(spec.geo.as_array(), "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        # The graph's activation, applied to conv + bias + the residual Z (edgert.Conv's fourth
        # input) in the one device pass.
        spec = self.spec
        code = spec.act.code
        p0, p1 = spec.act.params(F32)
        zsum = inputs[3].reshape(-1) if spec.has_sum else self._d_b
        args = (inputs[0].reshape(-1), self._d_w, self._d_b, y.reshape(-1),
                self._d_geo, spec.c_in, spec.m_out, spec.group, spec.has_bias, code, p0, p1,
                zsum, spec.has_sum)
        if self._direct:
            _conv_direct[blocks(y.size), THREADS, self.stream](*args)
            return
        mpg = spec.m_out // spec.group
        grid = ((spec.p_out + TILE - 1) // TILE, (mpg + TILE - 1) // TILE, spec.n * spec.group)
        _conv_igemm[grid, (TILE, TILE), self.stream](*args)


@cuda.jit
def _conv_transpose(x, w, bias, y, geo, c_in, m_out, group, has_bias, code, p0, p1):
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
        ml = m - g * mpg
        acc = np.float32(0.0)
        for kd in range(kd_n):
            qz = od + pd - kd * dd
            if qz < 0 or qz % sd != 0 or qz // sd >= d_n:
                continue
            iz = qz // sd
            for kh in range(kh_n):
                qy = oh + ph - kh * dh
                if qy < 0 or qy % sh != 0 or qy // sh >= h_n:
                    continue
                iy = qy // sh
                for kw in range(kw_n):
                    qx = ow + pw - kw * dw
                    if qx < 0 or qx % sw != 0 or qx // sw >= w_n:
                        continue
                    at = (iz * h_n + iy) * w_n + qx // sw
                    tap = (kd * kh_n + kh) * kw_n + kw
                    for c in range(cpg):
                        cc = g * cpg + c
                        acc += x[(n * c_in + cc) * p_in + at] * w[(cc * mpg + ml) * ksz + tap]
        if has_bias:
            acc += bias[m]
        y[i] = activate(acc, code, p0, p1)


class CudaConvTranspose(CudaKernel):
    """ConvTranspose / edgert.ConvTranspose: float32 with constant weights and bias."""

    CPU = cpu.ConvTransposeKernel

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        w = inputs[1]
        self.on_device = (np.dtype(outs[0].dtype) == F32 and w.value is not None
                          and (not self.has_bias_input or self.b_packed.shape[0] > 0))
        if not self.on_device:
            return outs
        self._c_in = int(inputs[0].shape[1])
        self._m_out = int(outs[0].shape[1])
        self._d_w = self.upload(np.asarray(w.value, F32).reshape(-1), "W")
        bias = self.b_packed if self.b_packed.shape[0] else np.zeros(1, F32)
        self._d_b = self.upload(np.asarray(bias, F32), "B")
        self._d_geo = self.upload(np.asarray(self.geo, np.int64), "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        p0, p1 = (np.float32(v) for v in self.params)
        _conv_transpose[blocks(y.size), THREADS, self.stream](
            inputs[0].reshape(-1), self._d_w, self._d_b, y.reshape(-1), self._d_geo,
            self._c_in, self._m_out, self.group, self.b_packed.shape[0] > 0, self.act.code,
            p0, p1)


def register(reg: KernelRegistry) -> None:
    reg.add("Conv", CudaConv)
    reg.add("Conv", CudaConv, domain="edgert")
    reg.add("ConvTranspose", CudaConvTranspose)
    reg.add("ConvTranspose", CudaConvTranspose, domain="edgert")
