"""CUDA kernels: elementwise family (binary with broadcasting, variadic, unary, Clip).

One thread per output element, grid-stride loops. Broadcasting works through the same idea as
the CPU Numba kernels: a right-aligned shape table and per-input element strides (0 on a
stretched axis), computed once in ``prepare``; the kernel turns the flat output index into
per-input offsets. The op is a run-time code, uniform across a launch, so one compiled kernel
per dtype serves every binary op.

Device coverage: float32 and float64. Other dtypes (integer division, comparisons to bool...)
clear ``on_device`` and run through the CPU kernel (the interpreter reports it).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.runtime.kernels.cpu import elementwise as cpu
from edgert.runtime.kernels.cpu.epilogue import (
    ACT_CLIP,
    ACT_GELU,
    ACT_HARD_SIGMOID,
    ACT_HARD_SWISH,
    ACT_LEAKY_RELU,
    ACT_NONE,
    ACT_RELU,
    ACT_SIGMOID,
    ACT_TANH,
)
from edgert.runtime.kernels.cuda._common import (
    MAX_RANK,
    THREADS,
    CudaKernel,
    blocks,
    broadcast_strides,
    cuda,
    padded_shape,
)
from edgert.runtime.kernels.cuda.epilogue import activate
from edgert.runtime.registry import KernelRegistry

DEVICE_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})

# Binary op codes.
B_ADD, B_SUB, B_MUL, B_DIV, B_MAX, B_MIN = 0, 1, 2, 3, 4, 5

# Unary codes beyond the fused activations (which keep their epilogue codes).
U_EXP, U_LOG, U_SQRT, U_ABS, U_NEG, U_RECIP, U_FLOOR, U_CEIL, U_ERF, U_ELU, U_SOFTPLUS = range(
    100, 111
)
U_GELU_TANH = 111


@cuda.jit(device=True)
def _binary_op(a, b, op):
    if op == B_ADD:
        return a + b
    if op == B_SUB:
        return a - b
    if op == B_MUL:
        return a * b
    if op == B_DIV:
        return a / b
    if op == B_MAX:
        # NaN-propagating, as numpy.maximum (ONNX Max): a NaN on either side wins.
        if math.isnan(a) or a > b:
            return a
        return b
    if math.isnan(a) or a < b:  # B_MIN
        return a
    return b


@cuda.jit
def _binary_kernel(a, b, out, shape, sa, sb, op):
    """``out[i] = op(a[ia], b[ib])`` over the flat output, ``shape``/``sa``/``sb`` of MAX_RANK."""
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, out.size, step):
        rem = i
        ia = 0
        ib = 0
        for d in range(MAX_RANK - 1, -1, -1):
            k = rem % shape[d]
            rem //= shape[d]
            ia += k * sa[d]
            ib += k * sb[d]
        out[i] = _binary_op(a[ia], b[ib], op)


@cuda.jit
def _scale_kernel(out, factor):
    start = cuda.grid(1)
    for i in range(start, out.size, cuda.gridsize(1)):
        out[i] = out[i] * factor


@cuda.jit(device=True)
def _floor(v):
    # math.floor returns an integer in Numba (and overflows or fails on NaN/inf): stay in float.
    # Floats of magnitude >= 2**52 are already integral (also NaN and +-inf, which fail the test).
    if not abs(v) < 4503599627370496.0:
        return v
    r = v % 1.0  # Python semantics: in [0, 1) for negative v too
    return v - r


@cuda.jit(device=True)
def _unary(v, code, p0, p1):
    if code < 100:
        return activate(v, code, p0, p1)
    if code == U_EXP:
        return math.exp(v)
    if code == U_LOG:
        return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)
    if code == U_SQRT:
        return math.sqrt(v) if v >= 0 else math.nan
    if code == U_ABS:
        return abs(v)
    if code == U_NEG:
        return -v
    if code == U_RECIP:
        return 1.0 / v
    if code == U_FLOOR:
        return _floor(v)
    if code == U_CEIL:
        return -_floor(-v)
    if code == U_ERF:
        return math.erf(v)
    if code == U_ELU:
        return p0 * (math.exp(v) - 1.0) if v < 0 else v
    if code == U_SOFTPLUS:
        # log(1 + e^v) without overflow: v + log1p(e^-v) for positive v.
        return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))
    # U_GELU_TANH
    return 0.5 * v * (1.0 + math.tanh(p1 * (v + 0.044715 * v * v * v)))


@cuda.jit
def _unary_kernel(x, out, code, p0, p1):
    start = cuda.grid(1)
    for i in range(start, out.size, cuda.gridsize(1)):
        out[i] = _unary(x[i], code, p0, p1)


def launch_binary(stream, a, b, out, plan, op: int) -> None:
    """Run ``out = op(a, b)`` with a broadcast ``plan`` from :func:`binary_plan`."""
    shape, sa, sb = plan
    n = out.size
    _binary_kernel[blocks(n), THREADS, stream](
        a.reshape(-1), b.reshape(-1), out.reshape(-1), shape, sa, sb, op
    )


def binary_plan(a_shape, b_shape, out_shape):
    """Host tables for :func:`launch_binary` (uploaded by Numba at launch: 3 x 64 bytes)."""
    return (
        padded_shape(tuple(out_shape)),
        broadcast_strides(tuple(a_shape), tuple(out_shape)),
        broadcast_strides(tuple(b_shape), tuple(out_shape)),
    )


def launch_unary(stream, x, out, code: int, p0: float = 0.0, p1: float = 0.0) -> None:
    n = out.size
    if n == 0:
        return
    _unary_kernel[blocks(n), THREADS, stream](x.reshape(-1), out.reshape(-1), code, p0, p1)


# ----- kernels ------------------------------------------------------------------------------------
class _CudaBinary(CudaKernel):
    OP: int

    def prepare(self, inputs):
        outs = super().prepare(inputs)  # the CPU kernel's checks and shape
        self.on_device = np.dtype(outs[0].dtype) in DEVICE_FLOATS
        self._plan = self.upload_plan(binary_plan(inputs[0].shape, inputs[1].shape, outs[0].shape))
        return outs

    def invoke(self, inputs, outputs):
        if outputs[0].size:
            launch_binary(self.stream, inputs[0], inputs[1], outputs[0], self._plan, self.OP)


def _binary(name: str, cpu_cls, op: int):
    return type(name, (_CudaBinary,), {"CPU": cpu_cls, "OP": op, "__doc__":
                f"CUDA {cpu_cls.__name__}: float32/float64 on device, other dtypes on the CPU."})


CudaAdd = _binary("CudaAdd", cpu.Add, B_ADD)
CudaSub = _binary("CudaSub", cpu.Sub, B_SUB)
CudaMul = _binary("CudaMul", cpu.Mul, B_MUL)
CudaDiv = _binary("CudaDiv", cpu.Div, B_DIV)


class _CudaVariadic(CudaKernel):
    """Max, Min, Sum, Mean: ``out = op(in0, in1)`` then ``out = op(out, ink)``."""

    OP: int
    MEAN = False

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        shape = outs[0].shape
        self.on_device = np.dtype(outs[0].dtype) in DEVICE_FLOATS
        self._plans = []
        if len(inputs) == 1:
            self._plans.append(binary_plan(inputs[0].shape, inputs[0].shape, shape))
        else:
            self._plans.append(binary_plan(inputs[0].shape, inputs[1].shape, shape))
            for x in inputs[2:]:
                self._plans.append(binary_plan(shape, x.shape, shape))
        self._plans = [self.upload_plan(p, k) for k, p in enumerate(self._plans)]
        return outs

    def invoke(self, inputs, outputs):
        out = outputs[0]
        if out.size == 0:
            return
        s = self.stream
        if len(inputs) == 1:
            # max(x, x) = min(x, x) = x; Sum/Mean of one input: x + 0 would turn -0 into +0.
            op = B_ADD if self.OP == B_ADD else self.OP
            if op == B_ADD:
                launch_unary(s, inputs[0], out, ACT_NONE)
            else:
                launch_binary(s, inputs[0], inputs[0], out, self._plans[0], op)
            return
        launch_binary(s, inputs[0], inputs[1], out, self._plans[0], self.OP)
        for x, plan in zip(inputs[2:], self._plans[1:]):
            launch_binary(s, out, x, out, plan, self.OP)
        if self.MEAN:
            _scale_kernel[blocks(out.size), THREADS, s](out.reshape(-1), 1.0 / len(inputs))


def _variadic(name: str, cpu_cls, op: int, mean: bool = False):
    return type(name, (_CudaVariadic,), {"CPU": cpu_cls, "OP": op, "MEAN": mean})


CudaMax = _variadic("CudaMax", cpu.Max, B_MAX)
CudaMin = _variadic("CudaMin", cpu.Min, B_MIN)
CudaSum = _variadic("CudaSum", cpu.Sum, B_ADD)
CudaMean = _variadic("CudaMean", cpu.Mean, B_ADD, mean=True)


class _CudaUnary(CudaKernel):
    CODE: int

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        self.on_device = np.dtype(outs[0].dtype) in DEVICE_FLOATS
        self._p = self.unary_params()
        return outs

    def unary_params(self) -> tuple[float, float]:
        p = getattr(self, "_params", None)  # _NumbaUnary kernels keep theirs here
        return (float(p[0]), float(p[1])) if p else (0.0, 0.0)

    def code(self) -> int:
        return self.CODE

    def invoke(self, inputs, outputs):
        launch_unary(self.stream, inputs[0], outputs[0], self.code(), *self._p)


def _unary_cls(name: str, cpu_cls, code: int):
    return type(name, (_CudaUnary,), {"CPU": cpu_cls, "CODE": code})


CudaRelu = _unary_cls("CudaRelu", cpu.Relu, ACT_RELU)
CudaSigmoid = _unary_cls("CudaSigmoid", cpu.Sigmoid, ACT_SIGMOID)
CudaTanh = _unary_cls("CudaTanh", cpu.Tanh, ACT_TANH)
CudaLeakyRelu = _unary_cls("CudaLeakyRelu", cpu.LeakyRelu, ACT_LEAKY_RELU)
CudaHardSigmoid = _unary_cls("CudaHardSigmoid", cpu.HardSigmoid, ACT_HARD_SIGMOID)
CudaHardSwish = _unary_cls("CudaHardSwish", cpu.HardSwish, ACT_HARD_SWISH)
CudaExp = _unary_cls("CudaExp", cpu.Exp, U_EXP)
CudaLog = _unary_cls("CudaLog", cpu.Log, U_LOG)
CudaSqrt = _unary_cls("CudaSqrt", cpu.Sqrt, U_SQRT)
CudaAbs = _unary_cls("CudaAbs", cpu.Abs, U_ABS)
CudaNeg = _unary_cls("CudaNeg", cpu.Neg, U_NEG)
CudaReciprocal = _unary_cls("CudaReciprocal", cpu.Reciprocal, U_RECIP)
CudaFloor = _unary_cls("CudaFloor", cpu.Floor, U_FLOOR)
CudaCeil = _unary_cls("CudaCeil", cpu.Ceil, U_CEIL)
CudaErf = _unary_cls("CudaErf", cpu.Erf, U_ERF)
CudaElu = _unary_cls("CudaElu", cpu.Elu, U_ELU)
CudaSoftplus = _unary_cls("CudaSoftplus", cpu.Softplus, U_SOFTPLUS)


class CudaGelu(_CudaUnary):
    CPU = cpu.Gelu

    def code(self) -> int:
        approx = self.attr("approximate", "none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        return ACT_GELU if approx == "none" else U_GELU_TANH


class CudaClip(CudaKernel):
    """Clip with bounds known at prepare (constants or attributes); computed bounds run on CPU."""

    CPU = cpu.Clip

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        lo, hi = self._attr_bounds
        known = True
        for k, i in enumerate((1, 2)):
            info = inputs[i] if i < len(inputs) else None
            if info is None:
                continue
            if info.value is None:
                known = False
                continue
            v = float(np.asarray(info.value).reshape(()))
            lo, hi = (v, hi) if k == 0 else (lo, v)
        self.on_device = known and np.dtype(outs[0].dtype) in DEVICE_FLOATS
        self._bounds = (-math.inf if lo is None else float(lo),
                        math.inf if hi is None else float(hi))
        return outs

    def invoke(self, inputs, outputs):
        launch_unary(self.stream, inputs[0], outputs[0], ACT_CLIP, *self._bounds)


def register(reg: KernelRegistry) -> None:
    """Add the CUDA elementwise kernels (ops not listed run through the CPU kernels)."""
    for op_type, kernel in (
        ("Add", CudaAdd),
        ("Sub", CudaSub),
        ("Mul", CudaMul),
        ("Div", CudaDiv),
        ("Max", CudaMax),
        ("Min", CudaMin),
        ("Sum", CudaSum),
        ("Mean", CudaMean),
        ("Relu", CudaRelu),
        ("Sigmoid", CudaSigmoid),
        ("Tanh", CudaTanh),
        ("LeakyRelu", CudaLeakyRelu),
        ("HardSigmoid", CudaHardSigmoid),
        ("HardSwish", CudaHardSwish),
        ("Exp", CudaExp),
        ("Log", CudaLog),
        ("Sqrt", CudaSqrt),
        ("Abs", CudaAbs),
        ("Neg", CudaNeg),
        ("Reciprocal", CudaReciprocal),
        ("Floor", CudaFloor),
        ("Ceil", CudaCeil),
        ("Erf", CudaErf),
        ("Elu", CudaElu),
        ("Softplus", CudaSoftplus),
        ("Gelu", CudaGelu),
        ("Clip", CudaClip),
    ):
        reg.add(op_type, kernel)
