"""CUDA kernels: the reduce family (ReduceSum ... ReduceLogSumExp over any axes, ArgMax/ArgMin).

Reductions: the CPU ``prepare`` resolves the axes (attribute or constant input,
``noop_with_empty_axes``, ``keepdims``). Here the input's dims are split into the kept ones
(which index the output) and the reduced ones; ``prepare`` builds a compact (shape, stride)
table for each group, and one thread per output element walks its reduced index space. Any set
of axes works, contiguous or not, with a single kernel.

Numerics follow the CPU kernels: sums accumulate in float64; Max/Min propagate NaN; an empty
reduction gives the identity (0 for the sums, 1 for Prod, -inf/+inf for Max/Min, -inf for the
logs) and NaN for Mean; LogSumExp subtracts the maximum first and uses 0 instead when the
maximum is not finite (so an all -inf slice gives -inf and +inf stays +inf). Device coverage:
float32 and float64; other dtypes, and axes computed at run time, run on the host.

ArgMax / ArgMin: the tensor seen as ``(outer, n, inner)``, one thread per ``(outer, inner)``
pair. NaN counts as the maximum (and the minimum) and the first one wins, as in NumPy (the CPU
kernel); ``select_last_index`` takes the last of equal candidates. ``v != v`` is the NaN test,
so the same code serves the integer dtypes.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime.kernels.cpu import reduce as cpu
from edgert.runtime.kernels.cuda._common import MAX_RANK, THREADS, CudaKernel, blocks, cuda
from edgert.runtime.registry import KernelRegistry

R_SUM, R_MEAN, R_PROD, R_MAX, R_MIN, R_L1, R_L2, R_SUMSQ, R_LOGSUM, R_LOGSUMEXP = range(10)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@cuda.jit(device=True)
def _log(v):
    # The simulator's math.log raises on 0 and negatives; on a GPU this is what log gives.
    if v > 0:
        return math.log(v)
    if v == 0:
        return -math.inf
    return math.nan


@cuda.jit(device=True)
def _offset(t, nd, shape, strides):
    """Offset of the ``t``-th C-order position of a (shape[:nd], strides[:nd]) index space."""
    off = 0
    for d in range(nd - 1, -1, -1):
        k = t % shape[d]
        t //= shape[d]
        off += k * strides[d]
    return off


@cuda.jit
def _reduce(x, y, nk, kshape, kstr, nr, rshape, rstr, count, op):
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        base = _offset(o, nk, kshape, kstr)
        if op == R_MAX or op == R_LOGSUMEXP:
            acc = -math.inf
        elif op == R_MIN:
            acc = math.inf
        elif op == R_PROD:
            acc = 1.0
        else:
            acc = 0.0
        for r in range(count):
            v = x[base + _offset(r, nr, rshape, rstr)]
            if op == R_MAX or op == R_LOGSUMEXP:
                if v != v or v > acc:
                    if acc == acc:  # keep a NaN once met
                        acc = v
            elif op == R_MIN:
                if v != v or v < acc:
                    if acc == acc:
                        acc = v
            elif op == R_PROD:
                acc *= v
            elif op == R_L1:
                acc += abs(v)
            elif op == R_L2 or op == R_SUMSQ:
                acc += v * v
            else:
                acc += v
        if op == R_LOGSUMEXP:
            m = acc
            if math.isinf(m) or math.isnan(m):  # shift by 0 instead
                m = 0.0
            s = 0.0
            for r in range(count):
                d = x[base + _offset(r, nr, rshape, rstr)] - m
                # (the simulator's math.exp raises on overflow; NaN must reach exp)
                s += math.inf if d >= 709.0 else math.exp(d)
            acc = _log(s) + m
        elif op == R_MEAN:
            acc = acc / count if count > 0 else math.nan
        elif op == R_L2:
            acc = math.sqrt(acc)
        elif op == R_LOGSUM:
            acc = _log(acc)
        y[o] = acc


class _CudaReduce(CudaKernel):
    OP: int

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        if outs[0].shape is None:  # axes computed at run time
            self.on_device = False
            return outs
        shape = tuple(int(d) for d in inputs[0].shape)
        self.on_device = np.dtype(inputs[0].dtype) in _FLOATS and len(shape) <= MAX_RANK
        if not self.on_device:
            return outs
        strides = [1] * len(shape)
        for d in range(len(shape) - 2, -1, -1):
            strides[d] = strides[d + 1] * shape[d + 1]
        kept = [d for d in range(len(shape)) if d not in self._axis]
        red = [d for d in range(len(shape)) if d in self._axis]

        def table(dims, values) -> np.ndarray:
            out = np.ones(MAX_RANK, np.int64)
            out[:len(dims)] = [values[d] for d in dims]
            return out

        self._plan = self.upload_plan((len(kept), table(kept, shape), table(kept, strides),
                                       len(red), table(red, shape), table(red, strides),
                                       self._count))
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _reduce[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), *self._plan, self.OP)


def _reduce_cls(name: str, cpu_cls, op: int):
    return type(name, (_CudaReduce,), {"CPU": cpu_cls, "OP": op})


CudaReduceSum = _reduce_cls("CudaReduceSum", cpu.ReduceSum, R_SUM)
CudaReduceMean = _reduce_cls("CudaReduceMean", cpu.ReduceMean, R_MEAN)
CudaReduceProd = _reduce_cls("CudaReduceProd", cpu.ReduceProd, R_PROD)
CudaReduceMax = _reduce_cls("CudaReduceMax", cpu.ReduceMax, R_MAX)
CudaReduceMin = _reduce_cls("CudaReduceMin", cpu.ReduceMin, R_MIN)
CudaReduceL1 = _reduce_cls("CudaReduceL1", cpu.ReduceL1, R_L1)
CudaReduceL2 = _reduce_cls("CudaReduceL2", cpu.ReduceL2, R_L2)
CudaReduceSumSquare = _reduce_cls("CudaReduceSumSquare", cpu.ReduceSumSquare, R_SUMSQ)
CudaReduceLogSum = _reduce_cls("CudaReduceLogSum", cpu.ReduceLogSum, R_LOGSUM)
CudaReduceLogSumExp = _reduce_cls("CudaReduceLogSumExp", cpu.ReduceLogSumExp, R_LOGSUMEXP)


# ----- ArgMax / ArgMin ----------------------------------------------------------------------------
@cuda.jit
def _arg(x, y, n, inner, is_max, last):
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        o = t // inner
        j = t - o * inner
        base = o * n * inner + j
        best = x[base]
        at = 0
        for k in range(1, n):
            v = x[base + k * inner]
            if best != best:  # the best is NaN: only another NaN ties it
                better = False
                tie = v != v
            elif v != v:
                better = True
                tie = False
            elif is_max:
                better = v > best
                tie = v == best
            else:
                better = v < best
                tie = v == best
            if better or (last and tie):
                best = v
                at = k
        y[t] = at


class _CudaArg(CudaKernel):
    IS_MAX = True

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        shape = tuple(int(d) for d in inputs[0].shape)
        dt = np.dtype(inputs[0].dtype)
        self.on_device = dt.kind in "iuf" and dt != np.dtype(np.float16)
        self._dims = (int(np.prod(shape[self._axis + 1:], dtype=np.int64)),)
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size:
            _arg[blocks(y.size), THREADS, self.stream](
                inputs[0].reshape(-1), y.reshape(-1), self._n, self._dims[0], self.IS_MAX,
                self._last)


class CudaArgMax(_CudaArg):
    CPU = cpu.ArgMax


class CudaArgMin(_CudaArg):
    CPU = cpu.ArgMin
    IS_MAX = False


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("ReduceSum", CudaReduceSum),
        ("ReduceMean", CudaReduceMean),
        ("ReduceProd", CudaReduceProd),
        ("ReduceMax", CudaReduceMax),
        ("ReduceMin", CudaReduceMin),
        ("ReduceL1", CudaReduceL1),
        ("ReduceL2", CudaReduceL2),
        ("ReduceSumSquare", CudaReduceSumSquare),
        ("ReduceLogSum", CudaReduceLogSum),
        ("ReduceLogSumExp", CudaReduceLogSumExp),
        ("ArgMax", CudaArgMax),
        ("ArgMin", CudaArgMin),
    ):
        reg.add(op_type, kernel)
