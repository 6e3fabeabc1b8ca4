"""CUDA kernels: BatchNormalization (inference), LayerNormalization, LRN, Softmax, LogSoftmax.

* BatchNormalization: the CPU ``prepare`` folds the four parameters into a per-channel affine
  ``y = a[c] * x + b[c]`` (in float64, then rounded once); the device applies it, one thread per
  element. Usually the optimizer has already folded BN into the preceding Conv; this serves the
  models where it could not.
* LayerNormalization: one thread per row (the trailing ``n`` elements from ``axis`` on), two
  passes for mean and variance in float64 (the CPU's reason: E[x^2] - E[x]^2 cancels when
  |mean| >> std), then ``(x - mean) * inv_std * scale[k] + bias[k]``; the optional Mean and
  InvStdDev outputs are written as float32. Scale and bias must be constants.
* LRN (AlexNet, GoogLeNet): one thread per element summing squares over its channel window.
* Softmax / LogSoftmax along an axis viewed as ``(outer, n, inner)``: one thread per
  ``(outer, inner)`` slice, three passes (max, sum of exp, write). The max skips NaN (``v > m``)
  and a NaN then poisons the sum, as in the CPU kernel and onnxruntime. The sum accumulates in
  float64 like the CPU kernel.

Device coverage: float32 with constant BN parameters; other cases run on the CPU.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime.kernels.cpu import normalization as cpu
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
from edgert.runtime.registry import KernelRegistry

F32 = np.dtype(np.float32)


@cuda.jit
def _channel_affine(x, y, channels, spatial, a, b):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = (i // spatial) % channels
        y[i] = x[i] * a[c] + b[c]


@cuda.jit
def _softmax(x, y, outer, n, inner, log):
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        j = t % inner
        base = o * n * inner + j
        m = -math.inf
        for k in range(n):
            v = x[base + k * inner]
            m = max(m, v)
        s = 0.0
        for k in range(n):
            s += math.exp(x[base + k * inner] - m)
        if log:
            shift = m + math.log(s)
            for k in range(n):
                y[base + k * inner] = x[base + k * inner] - shift
        else:
            inv = 1.0 / s
            for k in range(n):
                y[base + k * inner] = math.exp(x[base + k * inner] - m) * inv


@cuda.jit
def _lrn(x, y, channels, spatial, before, after, alpha_over_size, beta, bias):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        k = i % spatial
        r = i // spatial
        c = r % channels
        img = r - c
        acc = 0.0  # float64, as the CPU kernel's square sum
        for ch in range(max(0, c - before), min(channels - 1, c + after) + 1):
            v = x[(img + ch) * spatial + k]
            acc += v * v
        y[i] = x[i] / (bias + alpha_over_size * acc) ** beta


@cuda.jit
def _layer_norm(x, y, n, scale, bias, eps, mean_out, inv_out):
    for r in range(cuda.grid(1), x.size // n, cuda.gridsize(1)):
        base = r * n
        s = 0.0
        for k in range(n):
            s += x[base + k]
        mu = s / n
        q = 0.0
        for k in range(n):
            d = x[base + k] - mu
            q += d * d
        inv = 1.0 / math.sqrt(q / n + eps)
        mean_out[r] = mu
        inv_out[r] = inv
        for k in range(n):
            y[base + k] = (x[base + k] - mu) * inv * scale[k] + bias[k]


class CudaLayerNormalization(CudaKernel):
    CPU = cpu.LayerNormalization

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = (np.dtype(outs[0].dtype) == F32 and self._scale.static
                          and self._bias.static and self._n > 0)
        if self.on_device:
            rows = self._mean.size
            self._d_scale = self.upload(self._scale.buf, "scale")
            self._d_bias = self.upload(self._bias.buf, "bias")
            # Where Mean / InvStdDev go when the model does not use them (one kernel either way).
            self._d_stats = (self.upload(np.zeros(rows, np.float32), "mean"),
                             self.upload(np.zeros(rows, np.float32), "inv"))
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        stats = [outputs[k].reshape(-1) if len(outputs) > k and outputs[k] is not None
                 else self._d_stats[k - 1] for k in (1, 2)]
        _layer_norm[blocks(y.size // self._n), THREADS, self.stream](
            inputs[0].reshape(-1), y.reshape(-1), self._n, self._d_scale, self._d_bias,
            self._eps, stats[0], stats[1])


class CudaLRN(CudaKernel):
    """LRN across channels: one thread per element summing its channel window."""

    CPU = cpu.LRN

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = np.dtype(outs[0].dtype) == F32
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _lrn[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._channels, max(self._spatial, 1),
                self._before, self._after, self._alpha, self._beta, self._bias,
            )


class CudaBatchNormalization(CudaKernel):
    CPU = cpu.BatchNormalization

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = np.dtype(outs[0].dtype) == F32 and self._static
        if self.on_device:
            self._d_a = self.upload(np.asarray(self._a, F32), "a")
            self._d_b = self.upload(np.asarray(self._b, F32), "b")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _channel_affine[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._channels, max(self._spatial, 1),
                self._d_a, self._d_b,
            )


class _CudaSoftmaxBase(CudaKernel):
    LOG = False

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = np.dtype(outs[0].dtype) == F32
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        outer, n, inner = self._dims
        if y.size:
            _softmax[blocks(outer * inner), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), outer, n, inner, self.LOG
            )


class CudaSoftmax(_CudaSoftmaxBase):
    CPU = cpu.Softmax


class CudaLogSoftmax(_CudaSoftmaxBase):
    CPU = cpu.LogSoftmax
    LOG = True


def register(reg: KernelRegistry) -> None:
    reg.add("BatchNormalization", CudaBatchNormalization)
    reg.add("LayerNormalization", CudaLayerNormalization)
    reg.add("LRN", CudaLRN)
    reg.add("Softmax", CudaSoftmax)
    reg.add("LogSoftmax", CudaLogSoftmax)
