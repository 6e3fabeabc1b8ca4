"""CPU kernel: ``edgert.FusedElementwise`` — a chain of elementwise ops in one pass over memory.

The graph optimizer (:func:`edgert.optimizer.elementwise.fuse_elementwise`) replaces a group of
elementwise nodes (residual ``Add -> Relu`` tails, ``BatchNormalization -> Relu`` pre-activations,
decomposed Gelu...) by one node that runs a small *program* over registers. Instead of generating
Python source per model, the program uses a closed set of opcodes interpreted by one Numba
kernel, compiled once and cached like every other kernel.

Node attributes:

* ``program`` (ints): 5 per instruction ``[opcode, dst, src1, src2, src3]`` over registers;
  registers ``0..n_inputs-1`` hold the inputs, the result is the last instruction's ``dst``.
  Every register index lies below ``n_inputs + len(program)``, an instruction reads only inputs
  and registers that earlier instructions wrote and never writes an input register
  (:func:`edgert.runtime.ops.fusion.program_error`; prepare refuses any other program).
* ``params`` (floats): 2 per instruction (``p0, p1``: LeakyRelu alpha, HardSigmoid alpha/beta).
* ``modes`` (ints): one per input: 0 = full tensor of the output shape, 1 = scalar (one element),
  2 = a vector indexed by the channel (axis 1) of the output.

Why blocks: the output is cut in blocks of ``BLOCK`` elements (within one channel row); each
instruction runs as its own tight loop over the block's registers (which stay in L1), so the
opcode dispatch costs once per block, not once per element, and LLVM vectorizes each loop.
Blocks run in parallel. A first version computed the channel of every element with a division
and ran at half NumPy's speed on BatchNormalization+Relu; filling per block fixed that.

Numerical traps: Numba's ``/`` raises on a zero divisor (Python error model), so DIV spells
out IEEE division; Relu/Clip/Max keep NaN as NumPy does.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.kernels.cpu import vmath
from edgert.runtime.ops import fusion as opc
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo

# Opcodes: edgert.runtime.ops.fusion (the elementwise kernels name theirs in their traits); it
# also checks programs (program_error).
MODE_FULL, MODE_SCALAR, MODE_CHANNEL = 0, 1, 2
BLOCK = 2048
# Inputs travel to Numba as a tuple padded to this length: one compiled specialization serves
# every node (a tuple of each length would compile the whole kernel again, ~10 s each cold).
MAX_INPUTS = 8


@njit
def _copy(d, s, m):
    for j in range(m):
        d[j] = s[j]


@njit
def _fill(d, v, m):
    for j in range(m):
        d[j] = v


@njit
def _relu(d, s, m):
    # A loop of its own: inside _run_op's long branch chain LLVM left this select scalar
    # (1.1 ns/element against 0.09 here, measured on float32 blocks of 2048).
    zero = d.dtype.type(0.0)
    for j in range(m):
        v = s[j]
        d[j] = zero if v < zero else v  # noqa: FURB136 (NaN stays)


@njit
def _run_op(op, d, s1, s2, s3, p0, p1, m):
    """One instruction over ``m`` elements of the register rows ``d = f(s1, s2, s3)``."""
    zero = d.dtype.type(0.0)
    one = d.dtype.type(1.0)
    half = d.dtype.type(0.5)
    sixth = d.dtype.type(1.0 / 6.0)
    if op == opc.OP_ADD:
        for j in range(m):
            d[j] = s1[j] + s2[j]
    elif op == opc.OP_SUB:
        for j in range(m):
            d[j] = s1[j] - s2[j]
    elif op == opc.OP_MUL:
        for j in range(m):
            d[j] = s1[j] * s2[j]
    elif op == opc.OP_DIV:
        for j in range(m):
            b = s2[j]
            if b != zero:
                d[j] = s1[j] / b
            else:
                a = s1[j]
                if a != a or a == zero:
                    d[j] = math.nan
                else:
                    d[j] = math.copysign(math.inf, a) * math.copysign(1.0, b)
    elif op == opc.OP_MAX:
        for j in range(m):
            a = s1[j]
            b = s2[j]
            d[j] = a if (a > b or a != a) else b
    elif op == opc.OP_MIN:
        for j in range(m):
            a = s1[j]
            b = s2[j]
            d[j] = a if (a < b or a != a) else b
    elif op == opc.OP_RELU:
        _relu(d, s1, m)
    elif op == opc.OP_SIGMOID and d.itemsize == 4:
        vmath.sigmoid_row(d, s1, m)
    elif op == opc.OP_SIGMOID:
        for j in range(m):
            v = s1[j]
            if v >= zero:
                d[j] = one / (one + math.exp(-v))
            else:
                e = math.exp(v)
                d[j] = e / (one + e)
    elif op == opc.OP_TANH and d.itemsize == 4:
        vmath.tanh_row(d, s1, m)
    elif op == opc.OP_TANH:
        for j in range(m):
            d[j] = math.tanh(s1[j])
    elif op == opc.OP_EXP and d.itemsize == 4:
        vmath.exp_row(d, s1, m)
    elif op == opc.OP_EXP:
        for j in range(m):
            d[j] = math.exp(s1[j])
    elif op == opc.OP_NEG:
        for j in range(m):
            d[j] = -s1[j]
    elif op == opc.OP_ABS:
        for j in range(m):
            d[j] = abs(s1[j])
    elif op == opc.OP_SQRT:
        for j in range(m):
            v = s1[j]
            d[j] = math.sqrt(v) if v >= zero else math.nan
    elif op == opc.OP_ERF and d.itemsize == 4:
        vmath.erf_row(d, s1, m)
    elif op == opc.OP_ERF:
        for j in range(m):
            d[j] = math.erf(s1[j])
    elif op == opc.OP_RECIPROCAL:
        for j in range(m):
            v = s1[j]
            d[j] = one / v if v != zero else math.copysign(math.inf, v)
    elif op == opc.OP_LEAKY_RELU:
        for j in range(m):
            v = s1[j]
            d[j] = v * p0 if v < zero else v
    elif op == opc.OP_HARD_SIGMOID:
        for j in range(m):
            v = p0 * s1[j] + p1
            if v < zero:  # noqa: PLR1730
                v = zero
            if v > one:  # noqa: PLR1730
                v = one
            d[j] = v
    elif op == opc.OP_HARD_SWISH:
        for j in range(m):
            x = s1[j]
            v = sixth * x + half
            if v < zero:  # noqa: PLR1730
                v = zero
            if v > one:  # noqa: PLR1730
                v = one
            d[j] = x * v
    elif op == opc.OP_CLIP:
        for j in range(m):
            v = s1[j]
            if v < s2[j]:  # noqa: PLR1730 (NaN passes through both tests)
                v = s2[j]
            if v > s3[j]:  # noqa: PLR1730
                v = s3[j]
            d[j] = v
    elif op == opc.OP_LOG:
        for j in range(m):
            v = s1[j]
            if v > zero:
                d[j] = math.log(v)
            elif v == zero:
                d[j] = -math.inf
            else:
                d[j] = math.nan


@njit(parallel=True)
def fused_eval(out, ins, nin, modes, inner, nch, prog, params, nreg):
    """Run ``prog`` over every element of the flat ``out`` (see the module docstring).

    Work items are blocks of at most ``BLOCK`` elements that never cross a channel row
    (``inner`` elements), so a per-channel or scalar input is one value per block, filled
    into its register with a vectorized store instead of an index computed per element.
    """
    n = out.shape[0]
    rows = n // inner
    per_row = (inner + BLOCK - 1) // BLOCK
    res = prog[prog.shape[0] - 1, 1]
    for w in prange(rows * per_row):
        row = w // per_row
        start = row * inner + (w % per_row) * BLOCK
        stop = min(row * inner + inner, start + BLOCK)
        m = stop - start
        c = row % nch
        regs = np.empty((nreg, BLOCK), out.dtype)
        for k in range(nin):
            a = ins[k]
            mode = modes[k]
            if mode == MODE_FULL:
                _copy(regs[k], a[start:stop], m)
            else:
                _fill(regs[k], a[0] if mode == MODE_SCALAR else a[c], m)
        for pc in range(prog.shape[0]):
            _run_op(prog[pc, 0], regs[prog[pc, 1]], regs[prog[pc, 2]], regs[prog[pc, 3]],
                    regs[prog[pc, 4]], params[pc, 0], params[pc, 1], m)
        _copy(out[start:stop], regs[res], m)


@njit(parallel=True)
def affine_rows(x, s, t, out, inner, nch, relu, clip, lo, hi):
    """``out = act(x * s[c] + t[c])`` over rows of ``inner`` elements, row ``r`` of channel
    ``r % nch``; ``act`` is Relu (``relu``), Clip to ``[lo, hi]`` (``clip``) or none.

    BatchNormalization (+ Relu/Clip) as one multiply-add per element: the pre-activations of
    DenseNet and of pre-activation ResNets. The register program took ~1.1 ns per element
    (a copy, two fills and three passes per block); this loop is one pass.
    """
    n = out.shape[0]
    rows = n // inner
    zero = out.dtype.type(0.0)
    for r in prange(rows):
        c = r % nch
        sv = s[c]
        tv = t[c]
        src = x[r * inner:(r + 1) * inner]
        dst = out[r * inner:(r + 1) * inner]
        if relu:
            for i in range(inner):
                v = src[i] * sv + tv
                dst[i] = zero if v < zero else v  # noqa: FURB136 (NaN stays)
        elif clip:
            for i in range(inner):
                v = src[i] * sv + tv
                v = lo if v < lo else v  # noqa: FURB136 (NaN passes through both tests)
                dst[i] = hi if v > hi else v  # noqa: FURB136
        else:
            for i in range(inner):
                dst[i] = src[i] * sv + tv


affine_rows_serial = serial_twin(affine_rows)


def _affine_form(modes, prog, consts, nch, dtype):
    """``(s, t, relu, clip, lo, hi)`` when the program is ``act(x * s + t)`` for the one
    full-shape input ``x`` (register 0) and constant per-channel or scalar ``s``, ``t`` (as the
    optimizer writes BatchNormalization, optionally followed by Relu or Clip), else None."""
    if len(modes) < 3 or modes[0] != MODE_FULL or any(m == MODE_FULL for m in modes[1:]):
        return None
    if any(c is None for c in consts[1:]):
        return None
    ops = [tuple(int(v) for v in row) for row in prog]
    if len(ops) not in (2, 3):
        return None

    def vec(reg):
        c = consts[reg]
        return np.broadcast_to(c.reshape(-1), (nch,)).astype(dtype) if c.size in (1, nch) \
            else None

    (op1, d1, a1, b1, _), (op2, d2, a2, b2, _) = ops[:2]
    if op1 != opc.OP_MUL or 0 not in (a1, b1) or op2 != opc.OP_ADD or d1 not in (a2, b2):
        return None
    s_reg = b1 if a1 == 0 else a1
    t_reg = b2 if a2 == d1 else a2
    if s_reg == 0 or t_reg in (0, d1) or s_reg >= len(modes) or t_reg >= len(modes):
        return None
    s_v, t_v = vec(s_reg), vec(t_reg)
    if s_v is None or t_v is None:
        return None
    relu = clip = False
    lo = hi = dtype.type(0.0)
    if len(ops) == 3:
        op3, _, a3, lo_reg, hi_reg = ops[2]
        if a3 != d2:
            return None
        if op3 == opc.OP_RELU:
            relu = True
        elif op3 == opc.OP_CLIP and lo_reg < len(modes) and hi_reg < len(modes) \
                and modes[lo_reg] == MODE_SCALAR and modes[hi_reg] == MODE_SCALAR:
            clip = True
            lo, hi = dtype.type(consts[lo_reg][0]), dtype.type(consts[hi_reg][0])
        else:
            return None
    return (np.ascontiguousarray(s_v), np.ascontiguousarray(t_v), relu, clip, lo, hi)


class FusedElementwiseKernel(Kernel):
    """``edgert.FusedElementwise``: one output, float32/float64, inputs full/scalar/per-channel."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        modes = [int(m) for m in self.attr("modes", [])]
        prog = np.asarray(self.attr("program", []), dtype=np.int64)
        params = np.asarray(self.attr("params", []), dtype=np.float64)
        if len(inputs) > MAX_INPUTS:
            raise self.error(f"takes at most {MAX_INPUTS} inputs, got {len(inputs)}")
        if not inputs or len(modes) != len(inputs) or any(x is None for x in inputs):
            raise self.error(f"expects one present input per mode ({len(modes)}), "
                             f"got {len(inputs)}")
        if prog.size == 0 or prog.size % 5 or params.size != 2 * (prog.size // 5):
            raise self.error("program must hold 5 ints and params 2 floats per instruction")
        prog = prog.reshape(-1, 5)
        # registers out of range, unknown opcodes and reads of registers no instruction wrote
        # (uninitialized memory: stale values of another block) are refused here
        bad = opc.program_error(prog, len(inputs))
        if bad is not None:
            raise self.error(f"invalid program: {bad}")
        nreg = max(int(prog[:, 1:].max()) + 1, len(inputs))
        full = [x for x, m in zip(inputs, modes) if m == MODE_FULL]
        if not full:
            raise self.error("needs at least one full-shape input")
        shape = full[0].shape
        dtype = np.dtype(full[0].dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise self.error(f"supports float32/float64, got {dtype}", DTypeError)
        nch = shape[1] if len(shape) > 1 else 1
        for i, (x, m) in enumerate(zip(inputs, modes)):
            if np.dtype(x.dtype) != dtype:
                raise self.error(f"input {i} is {x.dtype}, expected {dtype}", DTypeError)
            ok = (
                (m == MODE_FULL and x.shape == shape)
                or (m == MODE_SCALAR and x.size == 1)
                or (m == MODE_CHANNEL and len(shape) > 1 and x.size == nch)
            )
            if not ok:
                raise self.error(f"input {i} of shape {x.shape} does not fit mode {m} for "
                                 f"output shape {shape}", ShapeError)
        # Rows of `inner` elements share one channel; without per-channel inputs the whole
        # tensor is one row (so blocks are full length).
        size = 1
        for d in shape:
            size *= d
        inner = size
        if MODE_CHANNEL in modes:
            inner = 1
            for d in shape[2:]:
                inner *= d
        else:
            nch = 1
        self.const_copies = [
            None if x.value is None else np.array(x.value, dtype=dtype, order="C").reshape(-1)
            for x in inputs
        ]
        self.modes = np.asarray(modes, dtype=np.int64)
        self.prog = np.ascontiguousarray(prog)
        self.params = np.ascontiguousarray(params.reshape(-1, 2).astype(dtype))
        self.nreg = nreg
        self.inner = max(inner, 1)
        self.nch = max(nch, 1)
        self.affine = _affine_form(modes, prog, self.const_copies, self.nch, dtype)
        size = int(np.prod(shape))
        self.affine_fn = affine_rows_serial if size < PARALLEL_MIN_WORK else affine_rows
        return [TensorInfo(tuple(shape), dtype)]

    def invoke(self, inputs, outputs):
        out = outputs[0]
        if out.size == 0:
            return None
        if self.affine is not None and out.flags.c_contiguous:
            s, t, relu, clip, lo, hi = self.affine
            self.affine_fn(np.ascontiguousarray(inputs[0]).reshape(-1), s, t, out.reshape(-1),
                           self.inner, self.nch, relu, clip, lo, hi)
            return None
        # Numba indexes a tuple at run time only when every element has one type, so all
        # inputs must be writable C arrays: constants (often read-only views of the mapped
        # file) were copied once at prepare.
        flat = [
            self.const_copies[i] if self.const_copies[i] is not None else _writable(x)
            for i, x in enumerate(inputs)
        ]
        flat += [flat[0]] * (MAX_INPUTS - len(flat))
        target = out.reshape(-1) if out.flags.c_contiguous else np.empty(out.size, out.dtype)
        fused_eval(target, tuple(flat), len(inputs), self.modes, self.inner, self.nch, self.prog,
                   self.params, self.nreg)
        if not out.flags.c_contiguous:
            out[...] = target.reshape(out.shape)
        return None


def _writable(x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x).reshape(-1)
    return flat if flat.flags.writeable else flat.copy()


def register(reg: KernelRegistry) -> None:
    reg.add("FusedElementwise", FusedElementwiseKernel, domain="edgert")
