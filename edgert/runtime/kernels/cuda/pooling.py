"""CUDA kernels: MaxPool, AveragePool and the global pools.

Windowed pools use one thread per output element over the geometry table that the CPU
``prepare`` computed (``Window.geo()``: kernel, strides, dilations, pads, in/out sizes).

* MaxPool is NaN-propagating like the CPU kernel (a NaN in the window wins) and writes the
  optional ``Indices`` output (row-major flat index into X, ``storage_order=0``; the column-major
  order runs on the CPU).
* AveragePool divides by the window's count of real input elements, or with
  ``count_include_pad=1`` of positions inside the padded input (positions past the end padding
  that ``ceil_mode`` adds are never counted, as in onnxruntime).
* Global pools: one thread per (N, C) row, accumulating in float64 like the CPU kernel.

Device coverage: float32. LpPool and GlobalLpPool run on the CPU, and so do MaxPool on int8 /
uint8 tensors (QOperator models) and with ``storage_order=1`` (``on_device`` is cleared: the
interpreter runs the CPU kernel and lists the op in ``host_ops``).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime.kernels.cpu import pooling as cpu
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
from edgert.runtime.registry import KernelRegistry

F32 = np.dtype(np.float32)


@cuda.jit
def _max_pool(x, y, ind, geo, nc, with_indices):
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    d_n, h_n, w_n = geo[12], geo[13], geo[14]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    p_in = d_n * h_n * w_n
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % ow_n
        t = i // ow_n
        oh = t % oh_n
        t //= oh_n
        od = t % od_n
        r = t // od_n  # the (n, c) row
        base = r * p_in
        best = -math.inf
        best_at = -1
        nan = False
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
                    at = (iz * h_n + iy) * w_n + ix
                    v = x[base + at]
                    if math.isnan(v):
                        if not nan:
                            nan = True
                            best = v
                            best_at = at
                    elif not nan and (v > best or best_at < 0):
                        best = v
                        best_at = at
        y[i] = best
        if with_indices:
            ind[i] = base + (max(best_at, 0))


@cuda.jit
def _avg_pool(x, y, geo, include_pad):
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    d_n, h_n, w_n = geo[12], geo[13], geo[14]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    ed, eh, ew = geo[18], geo[19], geo[20]
    p_in = d_n * h_n * w_n
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % ow_n
        t = i // ow_n
        oh = t % oh_n
        t //= oh_n
        od = t % od_n
        base = (t // od_n) * p_in
        acc = 0.0
        count = 0
        for kd in range(kd_n):
            iz = od * sd + kd * dd - pd
            if iz < -pd or iz >= d_n + ed:
                continue
            for kh in range(kh_n):
                iy = oh * sh + kh * dh - ph
                if iy < -ph or iy >= h_n + eh:
                    continue
                for kw in range(kw_n):
                    ix = ow * sw + kw * dw - pw
                    if ix < -pw or ix >= w_n + ew:
                        continue
                    inside = 0 <= iz < d_n and 0 <= iy < h_n and 0 <= ix < w_n
                    if inside:
                        acc += x[base + (iz * h_n + iy) * w_n + ix]
                    if inside or include_pad:
                        count += 1
        y[i] = acc / count if count > 0 else math.nan


@cuda.jit
def _global_pool(x, y, length, is_max):
    for r in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        base = r * length
        if is_max:
            best = x[base]
            for j in range(1, length):
                v = x[base + j]
                if not math.isnan(best) and (math.isnan(v) or v > best):
                    best = v
            y[r] = best
        else:
            acc = 0.0  # float64: the CPU kernel's accumulation too
            for j in range(length):
                acc += x[base + j]
            y[r] = acc / length


class CudaMaxPool(CudaKernel):
    CPU = cpu.MaxPoolKernel

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = self.dtype == F32 and self.storage_order == 0
        self._nc = int(inputs[0].shape[0] * inputs[0].shape[1])
        self._d_geo = self.upload(np.asarray(self.geo, np.int64), "geo")
        self._d_none = self.upload(np.zeros(1, np.int64), "none")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        ind = outputs[1] if len(outputs) > 1 else None
        _max_pool[blocks(y.size), THREADS, self.stream](
            inputs[0].reshape(-1), y.reshape(-1),
            ind.reshape(-1) if ind is not None else self._d_none, self._d_geo, self._nc,
            ind is not None,
        )


class CudaAveragePool(CudaKernel):
    CPU = cpu.AveragePoolKernel

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = self.dtype == F32
        self._include = bool(int(self.attr("count_include_pad", 0)))
        self._d_geo = self.upload(np.asarray(self.geo, np.int64), "geo")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _avg_pool[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._d_geo, self._include
            )


class _CudaGlobal(CudaKernel):
    IS_MAX = False

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        x = inputs[0].shape
        self.on_device = np.dtype(outs[0].dtype) == F32
        self._len = int(np.prod(x[2:], dtype=np.int64))
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _global_pool[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._len, self.IS_MAX
            )


class CudaGlobalAveragePool(_CudaGlobal):
    CPU = cpu.GlobalAveragePoolKernel


class CudaGlobalMaxPool(_CudaGlobal):
    CPU = cpu.GlobalMaxPoolKernel
    IS_MAX = True


def register(reg: KernelRegistry) -> None:
    reg.add("MaxPool", CudaMaxPool)
    reg.add("AveragePool", CudaAveragePool)
    reg.add("GlobalAveragePool", CudaGlobalAveragePool)
    reg.add("GlobalMaxPool", CudaGlobalMaxPool)
