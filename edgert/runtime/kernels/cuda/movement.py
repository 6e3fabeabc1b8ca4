"""CUDA kernels: Pad (constant, edge, reflect and wrap modes; negative pads crop).

One thread per output element maps each of its coordinates back to the input with the plan the
CPU ``prepare`` made (per axis: the crop start ``lo``, the kept length ``K`` after cropping and
the leading pad ``pb``). With ``i = c - pb`` the position inside the kept part:

* ``0 <= i < K``: read ``x[lo + i]``;
* otherwise ``constant`` writes the pad value; ``edge`` clamps ``i`` into ``[0, K)``;
  ``reflect`` mirrors it without repeating the border (``-1 -> 1``, ``K -> K - 2``; the CPU
  ``prepare`` already limits reflect pads to ``K - 1`` per side, so one mirror suffices);
  ``wrap`` takes ``i mod K`` (any number of periods, as ``numpy.pad``).

Every dtype but strings runs on the device (int8 Pad is in the quantizer's models). A pad value
computed at run time runs on the host.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import movement as cpu
from edgert.runtime.kernels.cpu.shape import fill_value
from edgert.runtime.kernels.cuda._common import (
    MAX_RANK,
    THREADS,
    CudaKernel,
    blocks,
    cuda,
    padded_shape,
    strides_for,
)
from edgert.runtime.registry import KernelRegistry

MODE_CODES = {"constant": 0, "edge": 1, "reflect": 2, "wrap": 3}


@cuda.jit
def _pad(x, y, value, oshape, lo, kept, pb, xs, mode):
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        rem = t
        src = 0
        outside = False
        for d in range(MAX_RANK - 1, -1, -1):
            c = rem % oshape[d]
            rem //= oshape[d]
            k = kept[d]
            i = c - pb[d]
            if i < 0 or i >= k:
                if mode == 0:
                    outside = True
                    break
                if mode == 1:
                    i = min(max(i, 0), k - 1)
                elif mode == 2:
                    if i < 0:
                        i = -i
                    if i >= k:
                        i = 2 * (k - 1) - i
                else:
                    i = i % k  # Python semantics: in [0, k) for negative i too
            src += (lo[d] + i) * xs[d]
        if outside:
            y[t] = value[0]
        else:
            y[t] = x[src]


class CudaPad(CudaKernel):
    CPU = cpu.Pad

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        x = inputs[0]
        dt = np.dtype(x.dtype)
        has_value = len(inputs) > 2 and inputs[2] is not None
        self.on_device = (not self._deferred and dt.kind in "biuf" and len(x.shape) <= MAX_RANK
                          and not (self._mode == "constant" and has_value
                                   and self._value is None))
        if not self.on_device:
            return outs
        rank = len(x.shape)
        lo = np.zeros(MAX_RANK, np.int64)
        kept = np.ones(MAX_RANK, np.int64)
        pb = np.zeros(MAX_RANK, np.int64)
        for a, (sl, (b, _)) in enumerate(zip(self._crop, self._grow)):
            lo[MAX_RANK - rank + a] = sl.start
            kept[MAX_RANK - rank + a] = sl.stop - sl.start
            pb[MAX_RANK - rank + a] = b
        value = self._value if self._value is not None else fill_value(dt)
        self._d_value = self.upload(np.array([value], dt), "value")
        self._plan = self.upload_plan((padded_shape(tuple(outs[0].shape)), lo, kept, pb,
                                       strides_for(tuple(x.shape))))
        self._code = MODE_CODES[self._mode]
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            oshape, lo, kept, pb, xs = self._plan
            _pad[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._d_value, oshape, lo, kept, pb, xs,
                self._code)


def register(reg: KernelRegistry) -> None:
    reg.add("Pad", CudaPad)
