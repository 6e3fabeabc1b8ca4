"""CUDA kernels: data movement (Reshape & co., Transpose, Slice, Concat).

Everything here is one kernel, :func:`_strided_copy`: walk an index space of up to
``MAX_RANK`` dims in C order and copy ``src[off_s + sum(k * ss)]`` to ``dst[off_d + sum(k *
sd)]``. The tables are built in ``prepare``:

* Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout: a device-to-device copy of the flat
  buffer (the planner gives each tensor its own slot, so a view would alias a reused region);
* Transpose: the source strides permuted;
* Slice: the source strides times the steps, the offset at the starts;
* Concat: one launch per input, writing into its slab of the output;
* edgert.ChannelShuffle: the ``(N, g, C/g, inner) -> (N, C/g, g, inner)`` transpose.

Shape parameters (Reshape's target, Slice's starts...) are known at prepare or the op is
dynamic, in which case the interpreter runs it on the host like any data-dependent op.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import shape as cpu
from edgert.runtime.kernels.cpu import shuffle as cpu_shuffle
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


@cuda.jit
def _strided_copy(src, dst, shape, ss, sd, off_s, off_d, total):
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        rem = i
        a = off_s
        b = off_d
        for d in range(MAX_RANK - 1, -1, -1):
            k = rem % shape[d]
            rem //= shape[d]
            a += k * ss[d]
            b += k * sd[d]
        dst[b] = src[a]


def _movable(dt) -> bool:
    return np.dtype(dt).kind in "biuf"


def launch_copy(stream, src, dst, plan) -> None:
    shape, ss, sd, off_s, off_d, total = plan
    if total:
        _strided_copy[blocks(total), THREADS, stream](
            src.reshape(-1), dst.reshape(-1), shape, ss, sd, off_s, off_d, total
        )


def _permuted(strides: np.ndarray, perm) -> np.ndarray:
    return np.array([strides[p] for p in perm], np.int64)


def _table(values, rank: int) -> np.ndarray:
    """Right-align a rank-``rank`` list in a MAX_RANK table padded with 0s (strides)."""
    out = np.zeros(MAX_RANK, np.int64)
    out[MAX_RANK - rank:] = values
    return out


class _CudaFlatCopy(CudaKernel):
    """Same elements, same order, new shape: one device-to-device copy."""

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        live = [o for o in outs[:1]]
        self.on_device = all(o.shape is not None and _movable(o.dtype) for o in live)
        return outs

    def invoke(self, inputs, outputs):
        if len(outputs) > 1 and outputs[1] is not None:  # Dropout's mask: all True in inference
            launch_fill_true(self.stream, outputs[1])
        out = outputs[0]
        if out.size:
            out.reshape(-1).copy_to_device(inputs[0].reshape(-1), stream=self.stream)


@cuda.jit
def _fill_true(a):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = True


def launch_fill_true(stream, a) -> None:
    if a.size:
        _fill_true[blocks(a.size), THREADS, stream](a.reshape(-1))


def _flat(name: str, cpu_cls):
    return type(name, (_CudaFlatCopy,), {"CPU": cpu_cls})


CudaIdentity = _flat("CudaIdentity", cpu.Identity)
CudaDropout = _flat("CudaDropout", cpu.Dropout)
CudaReshape = _flat("CudaReshape", cpu.Reshape)
CudaFlatten = _flat("CudaFlatten", cpu.Flatten)
CudaSqueeze = _flat("CudaSqueeze", cpu.Squeeze)
CudaUnsqueeze = _flat("CudaUnsqueeze", cpu.Unsqueeze)


class CudaTranspose(CudaKernel):
    CPU = cpu.Transpose

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        x_shape = tuple(inputs[0].shape)
        rank = len(x_shape)
        self.on_device = _movable(outs[0].dtype) and rank <= MAX_RANK and not self._deferred
        if self.on_device:
            ss = strides_for(x_shape, rank)
            y_shape = outs[0].shape
            self._plan = (padded_shape(y_shape), _table(_permuted(ss, self._perm), rank),
                          strides_for(y_shape), 0, 0, int(np.prod(y_shape, dtype=np.int64)))
            self._plan = self.upload_plan(self._plan)
        return outs

    def invoke(self, inputs, outputs):
        launch_copy(self.stream, inputs[0], outputs[0], self._plan)


class CudaSlice(CudaKernel):
    CPU = cpu.Slice

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = not self._deferred and _movable(outs[0].dtype)
        if not self.on_device:
            return outs
        x_shape = tuple(inputs[0].shape)
        rank = len(x_shape)
        if rank > MAX_RANK:
            self.on_device = False
            return outs
        ss = strides_for(x_shape, rank)
        off = 0
        steps = []
        for a, sl in enumerate(self._index):
            start, _, step = sl.indices(x_shape[a])
            off += start * int(ss[a])
            steps.append(step * int(ss[a]))
        y_shape = outs[0].shape
        self._plan = (padded_shape(y_shape), _table(steps, rank), strides_for(y_shape), off, 0,
                      int(np.prod(y_shape, dtype=np.int64)))
        self._plan = self.upload_plan(self._plan)
        return outs

    def invoke(self, inputs, outputs):
        launch_copy(self.stream, inputs[0], outputs[0], self._plan)


class CudaConcat(CudaKernel):
    CPU = cpu.Concat

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        y_shape = tuple(outs[0].shape)
        rank = len(y_shape)
        self.on_device = _movable(outs[0].dtype) and rank <= MAX_RANK
        if not self.on_device:
            return outs
        sd = strides_for(y_shape, rank)
        self._plans = []
        pos = 0
        for x in inputs:
            x_shape = tuple(x.shape)
            self._plans.append((padded_shape(x_shape), strides_for(x_shape), _table(sd, rank), 0,
                                pos * int(sd[self._axis]), int(np.prod(x_shape, dtype=np.int64))))
            pos += x_shape[self._axis]
        self._plans = [self.upload_plan(p, k) for k, p in enumerate(self._plans)]
        return outs

    def invoke(self, inputs, outputs):
        for x, plan in zip(inputs, self._plans):
            launch_copy(self.stream, x, outputs[0], plan)


class CudaChannelShuffle(CudaKernel):
    """``out[n, j * g + i] = x[n, i * (C / g) + j]``: a 4-D strided copy."""

    CPU = cpu_shuffle.ChannelShuffle

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        shape = tuple(inputs[0].shape)
        self.on_device = _movable(outs[0].dtype)
        n, c, g = int(shape[0]), int(shape[1]), self._group
        inner = int(np.prod(shape[2:], dtype=np.int64))
        # Walk the output as (n, c/g, g, inner); the source of (n, j, i, k) is x[n, i, j, k] of
        # x viewed as (n, g, c/g, inner).
        ss = strides_for((n, g, c // g, inner), 4)
        self._plan = self.upload_plan((padded_shape((n, c // g, g, inner)),
                                       _table(_permuted(ss, (0, 2, 1, 3)), 4),
                                       strides_for((n, c // g, g, inner)), 0, 0,
                                       n * c * inner))
        return outs

    def invoke(self, inputs, outputs):
        launch_copy(self.stream, inputs[0], outputs[0], self._plan)


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("Identity", CudaIdentity),
        ("Dropout", CudaDropout),
        ("Reshape", CudaReshape),
        ("Flatten", CudaFlatten),
        ("Squeeze", CudaSqueeze),
        ("Unsqueeze", CudaUnsqueeze),
        ("Transpose", CudaTranspose),
        ("Slice", CudaSlice),
        ("Concat", CudaConcat),
    ):
        reg.add(op_type, kernel)
    reg.add("ChannelShuffle", CudaChannelShuffle, domain="edgert")
