"""CUDA kernel: ``edgert.FusedElementwise`` — the optimizer's elementwise chains in one pass.

The CPU kernel (``cpu/fused.py``, whose docstring defines the program format) interprets the
program over blocks of 2048 elements. On the GPU each thread runs the whole program for one
element with its registers in thread-local memory (``MAX_REGS`` of them, which the compiler
keeps in hardware registers when the program is short); the opcode is the same for every thread
of a launch, so the dispatch does not diverge. One kernel compiled once serves every program.

Device coverage: float32 and programs of at most ``MAX_REGS`` registers; others run on the CPU.
Numerical rules are the CPU kernel's: IEEE division by zero, NaN kept by Relu/Clip/Max/Min.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime.kernels.cpu import fused as cpu
from edgert.runtime.kernels.cpu.fused import MAX_INPUTS, MODE_FULL, MODE_SCALAR
from edgert.runtime.kernels.cuda._common import THREADS, CudaKernel, blocks, cuda
from edgert.runtime.kernels.cuda.epilogue import sigmoid
from edgert.runtime.ops import fusion as opc
from edgert.runtime.registry import KernelRegistry

MAX_REGS = 24
F32 = np.dtype(np.float32)


@cuda.jit(device=True)
def _op(op, a, b, c, p0, p1):
    if op == opc.OP_ADD:
        return a + b
    if op == opc.OP_SUB:
        return a - b
    if op == opc.OP_MUL:
        return a * b
    if op == opc.OP_DIV:
        return a / b  # CUDA float division is IEEE: x/0 = +-inf, 0/0 = NaN
    if op == opc.OP_MAX:
        return a if (a > b or math.isnan(a)) else b
    if op == opc.OP_MIN:
        return a if (a < b or math.isnan(a)) else b
    if op == opc.OP_RELU:
        return 0.0 if a < 0 else a
    if op == opc.OP_SIGMOID:
        return sigmoid(a)
    if op == opc.OP_TANH:
        return math.tanh(a)
    if op == opc.OP_EXP:
        return math.exp(a)
    if op == opc.OP_NEG:
        return -a
    if op == opc.OP_ABS:
        return abs(a)
    if op == opc.OP_SQRT:
        return math.sqrt(a) if a >= 0 else math.nan
    if op == opc.OP_ERF:
        return math.erf(a)
    if op == opc.OP_RECIPROCAL:
        return 1.0 / a
    if op == opc.OP_LEAKY_RELU:
        return a * p0 if a < 0 else a
    if op == opc.OP_HARD_SIGMOID or op == opc.OP_HARD_SWISH:
        v = p0 * a + p1 if op == opc.OP_HARD_SIGMOID else a / 6.0 + 0.5
        if v < 0:
            v = 0.0
        if v > 1:
            v = 1.0
        return v if op == opc.OP_HARD_SIGMOID else a * v
    if op == opc.OP_CLIP:
        a = max(a, b)
        a = min(a, c)
        return a
    if op == opc.OP_LOG:
        return math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)
    return a


@cuda.jit(device=True)
def _load(k, j, x0, x1, x2, x3, x4, x5, x6, x7):
    # Eight array parameters rather than a tuple: every CUDA target passes plain arrays alike.
    if k == 0:
        return x0[j]
    if k == 1:
        return x1[j]
    if k == 2:
        return x2[j]
    if k == 3:
        return x3[j]
    if k == 4:
        return x4[j]
    if k == 5:
        return x5[j]
    if k == 6:
        return x6[j]
    return x7[j]


@cuda.jit
def _fused(out, x0, x1, x2, x3, x4, x5, x6, x7, nin, modes, inner, nch, prog, params):
    regs = cuda.local.array(MAX_REGS, np.float32)
    nprog = prog.shape[0]
    res = prog[nprog - 1, 1]
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        for k in range(nin):
            mode = modes[k]
            j = i
            if mode == MODE_SCALAR:
                j = 0
            elif mode != MODE_FULL:
                j = (i // inner) % nch
            regs[k] = _load(k, j, x0, x1, x2, x3, x4, x5, x6, x7)
        for pc in range(nprog):
            regs[prog[pc, 1]] = _op(prog[pc, 0], regs[prog[pc, 2]], regs[prog[pc, 3]],
                                    regs[prog[pc, 4]], params[pc, 0], params[pc, 1])
        out[i] = regs[res]


class CudaFusedElementwise(CudaKernel):
    CPU = cpu.FusedElementwiseKernel

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = np.dtype(outs[0].dtype) == F32 and self.nreg <= MAX_REGS
        if self.on_device:
            self._d_modes = self.upload(self.modes, "modes")
            self._d_prog = self.upload(self.prog, "prog")
            self._d_params = self.upload(self.params, "params")
            self._d_consts = [self.upload(c, f"const{k}") if c is not None else None
                              for k, c in enumerate(self.const_copies)]
        return outs

    def invoke(self, inputs, outputs):
        out = outputs[0]
        if out.size == 0:
            return
        flat = [c if c is not None else x.reshape(-1) for c, x in zip(self._d_consts, inputs)]
        flat += [flat[0]] * (MAX_INPUTS - len(flat))
        _fused[blocks(out.size), THREADS, self.stream](
            out.reshape(-1), *flat, len(inputs), self._d_modes, self.inner, self.nch,
            self._d_prog, self._d_params,
        )


def register(reg: KernelRegistry) -> None:
    reg.add("FusedElementwise", CudaFusedElementwise, domain="edgert")
