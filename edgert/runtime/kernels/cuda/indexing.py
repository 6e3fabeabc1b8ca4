"""CUDA kernels: Gather (the indexing op of the light models and of token embeddings).

``out = data.take(indices, axis)`` seen as ``data (outer, n, inner)`` and ``out (outer, m,
inner)`` with ``m = indices.size``: one thread per output element reads
``data[o, idx[j], i]``. Negative indices count from the end.

Bounds: constant indices are checked by the CPU ``prepare``. Indices computed at run time (token
ids fed by the caller) cannot raise from inside a kernel, so a thread that meets an index out of
range writes 0 instead of reading, and sets a device flag; after the stream is synchronized the
interpreter calls :meth:`CudaGather.after_invoke`, which reads the flag and raises the same
KernelError as the CPU kernel (naming the op and the valid range). No read ever leaves ``data``.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import indexing as cpu
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
from edgert.runtime.registry import KernelRegistry


@cuda.jit
def _gather(data, idx, out, n, m, inner, flag):
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i = t % inner
        r = t // inner
        j = r % m
        o = r // m
        k = np.int64(idx[j])
        if k < 0:
            k += n
        if k < 0 or k >= n:
            flag[0] = 1
            out[t] = 0
        else:
            out[t] = data[(o * n + k) * inner + i]


class CudaGather(CudaKernel):
    """Gather on the device for numeric dtypes; indices checked after the run (see above)."""

    CPU = cpu.Gather

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = (not self._deferred and np.dtype(outs[0].dtype).kind in "biuf"
                          and np.dtype(inputs[0].dtype).kind in "biuf")
        if not self.on_device:
            return outs
        shape = tuple(inputs[0].shape)
        axis = self._axis
        self._n = int(shape[axis])
        self._inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
        self._m = int(np.prod(inputs[1].shape, dtype=np.int64))
        self._checked = inputs[1].value is not None  # validated by the CPU prepare
        self._flag = cuda.to_device(np.zeros(1, np.int32))
        return outs

    def invoke(self, inputs, outputs):
        out = outputs[0]
        if out.size:
            _gather[blocks(out.size), THREADS, self.stream](
                inputs[0].reshape(-1), inputs[1].reshape(-1), out.reshape(-1), self._n,
                self._m, self._inner, self._flag)

    def after_invoke(self) -> None:
        """Raise if a run-time index was out of range (called after the stream synchronized)."""
        if self._checked:
            return
        if self._flag.copy_to_host()[0]:
            self._flag.copy_to_device(np.zeros(1, np.int32))
            raise self.error(f"an index is out of range for a dimension of size {self._n} "
                             f"(valid: {-self._n}..{self._n - 1}); the output was not computed")


def register(reg: KernelRegistry) -> None:
    reg.add("Gather", CudaGather)
