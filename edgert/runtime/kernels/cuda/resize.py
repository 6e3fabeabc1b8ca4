"""CUDA kernel: Resize over the last two axes (NCHW images), from the CPU kernel's tables.

The CPU ``prepare`` (:mod:`edgert.runtime.kernels.cpu.resize`) already turns every
coordinate_transformation_mode, nearest_mode, cubic coefficient and antialias setting into
per-axis tables: for output row ``r``, ``TH`` source rows ``hidx[r, :]`` (clamped into range)
with weights ``hw[r, :]``, and the same along W. The device only applies them, one thread per
output element::

    y[b, r, c] = sum_a hw[r, a] * sum_t ww[c, t] * x[b, hidx[r, a], widx[c, t]]

Nearest is the one-tap case with weight 1 and runs as a pure gather (exact for every numeric
dtype). Linear and cubic accumulate in float64 (the CPU's per-row accumulators are float64 too)
and run for float32/float64 data. ``tf_crop_and_resize`` outputs outside the roi take
``extrapolation_value``.

On the host instead: resizing an outer axis (N or C) or a volume, integer linear/cubic (the CPU
rounds half to even and saturates), and scales/sizes computed at run time (the output shape is
then data-dependent).
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import resize as cpu
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
from edgert.runtime.registry import KernelRegistry

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@cuda.jit
def _resize_hw(x, y, h, w, oh, ow, hidx, hw, th, widx, ww, tw, h_out, w_out, extrap, nearest):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = i % ow
        t = i // ow
        r = t % oh
        b = t // oh
        if h_out[r] or w_out[c]:
            y[i] = extrap
        elif nearest:
            y[i] = x[(b * h + hidx[r * th]) * w + widx[c * tw]]
        else:
            acc = 0.0
            for a in range(th):
                wa = hw[r * th + a]
                if wa != 0.0:
                    row = (b * h + hidx[r * th + a]) * w
                    s = 0.0
                    for k in range(tw):
                        s += ww[c * tw + k] * x[row + widx[c * tw + k]]
                    acc += wa * s
            y[i] = acc


class CudaResize(CudaKernel):
    CPU = cpu.Resize

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        if self._deferred:
            self.on_device = False
            return outs
        dt = np.dtype(outs[0].dtype)
        nearest = self._mode == "nearest"
        self._copy = not self._tables
        self.on_device = dt.kind in "biuf" and (self._copy or (
            self._fast and (nearest or dt in _FLOATS)))
        if not self.on_device or self._copy:
            return outs
        nb, h, w, oh, ow = self._hw
        th, tw = self._th, self._tw

        def weights(t) -> np.ndarray:
            return (np.ones(t.idx.size, np.float64) if t.w is None
                    else np.ascontiguousarray(t.w, np.float64).reshape(-1))

        def outside(t, n) -> np.ndarray:
            return (np.zeros(n, np.uint8) if t.outside is None
                    else np.ascontiguousarray(t.outside, np.uint8))

        self._geo = (h, w, oh, ow)
        self._d = (self.upload(th.idx.reshape(-1), "hidx"), self.upload(weights(th), "hw"),
                   int(th.idx.shape[1]), self.upload(tw.idx.reshape(-1), "widx"),
                   self.upload(weights(tw), "ww"), int(tw.idx.shape[1]),
                   self.upload(outside(th, oh), "hout"), self.upload(outside(tw, ow), "wout"))
        self._extrap = np.array(self._extrapolation if dt.kind == "f" else 0, dt)[()]
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        if self._copy:
            y.reshape(-1).copy_to_device(inputs[0].reshape(-1), stream=self.stream)
            return
        h, w, oh, ow = self._geo
        hidx, hw, th, widx, ww, tw, h_out, w_out = self._d
        _resize_hw[blocks(y.size), THREADS, self.stream](
            inputs[0].reshape(-1), y.reshape(-1), h, w, oh, ow, hidx, hw, th, widx, ww, tw,
            h_out, w_out, self._extrap, self._mode == "nearest")


def register(reg: KernelRegistry) -> None:
    reg.add("Resize", CudaResize)
