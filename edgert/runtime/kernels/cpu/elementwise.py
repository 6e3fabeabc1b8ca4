"""CPU kernels: elementwise family (binary with broadcasting, variadic, unary, Where, Clip).

Semantics are the newest ONNX opset's; the importer rewrites older forms before kernels see them.

How the work is split:

* Simple arithmetic, comparisons, logic and math functions are NumPy ufuncs called with
  ``out=`` the planned buffer: they are compiled loops that broadcast by themselves, and
  writing into ``out`` keeps invoke allocation-free.
* What NumPy lacks or gets "wrong" for ONNX goes to Numba kernels over flat, contiguous arrays,
  so that one compilation per dtype serves every rank: Erf, Gelu and the other compound
  activations, C-style truncating integer division, and PRelu. Binary Numba kernels broadcast
  through a small stride table computed in ``prepare`` (:func:`_broadcast_plan`).
* Numba has no float16 arithmetic on the CPU: float16 tensors go through float32 scratch
  buffers that ``prepare`` allocates.

Floating-point warnings (division by zero, overflow, log of a negative number) are silenced:
ONNX defines IEEE results (inf, nan) for them, and a runtime should not print per call.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu.vmath import erf_row
from edgert.runtime.ops import fusion
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo, broadcast_shapes

# ----- element types (NumPy has no bfloat16 / float8: those are rejected) ----------------------
FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
SIGNED = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
UNSIGNED = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
INTS = SIGNED | UNSIGNED
NUMERIC = FLOATS | INTS
BOOL = frozenset({np.dtype(np.bool_)})
STRING = frozenset({np.dtype(object)})
ALL = NUMERIC | BOOL | STRING | frozenset(np.dtype(t) for t in (np.complex64, np.complex128))

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


def _names(dts) -> str:
    return ", ".join(sorted(str(d) for d in dts))


def planned_view(a: np.ndarray, shape) -> np.ndarray:
    """A planned output buffer viewed with another shape of the same size.

    Planned buffers are C-contiguous, so this is a view; anything else raises, because
    ``reshape`` would silently copy and the kernel would then fill the copy, not the buffer.
    """
    if not a.flags.c_contiguous:
        raise ValueError(f"output buffer of shape {a.shape} is not C-contiguous")
    return a.reshape(shape)


def _flat(a: np.ndarray) -> np.ndarray:
    return planned_view(a, -1)


# ----- broadcasting for Numba binary kernels --------------------------------------------------
def _broadcast_plan(
    out_shape: tuple[int, ...], *in_shapes: tuple[int, ...]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Shape and per-input element strides that walk ``out`` in C order.

    Size-1 output dims are dropped and adjacent dims that every input walks contiguously (or
    broadcasts over together) are merged: for ``(8, 16, 32) + (32,)`` the plan is shape
    ``(128, 32)`` with strides ``(32, 1)`` and ``(0, 1)``, so one compiled kernel serves every
    rank and runs a long inner loop per outer index. Always returns at least one dim.
    """
    rank = len(out_shape)
    strides = []
    for shape in in_shapes:
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        st = [0] * rank
        step = 1
        for d in range(rank - 1, -1, -1):
            st[d] = 0 if padded[d] == 1 else step
            step *= padded[d]
        strides.append(st)
    dims = [d for d in range(rank) if out_shape[d] != 1]
    shape_out: list[int] = []
    strides_out: list[list[int]] = [[] for _ in in_shapes]
    for d in dims:
        pairs = list(zip(strides_out, strides, strict=True))
        if shape_out and all(s[-1] == st[d] * out_shape[d] for s, st in pairs):
            shape_out[-1] *= out_shape[d]
            for s, st in pairs:
                s[-1] = st[d]
            continue
        shape_out.append(out_shape[d])
        for s, st in pairs:
            s.append(st[d])
    if not shape_out:
        shape_out = [1]
        strides_out = [[0] for _ in in_shapes]
    return np.array(shape_out, np.int64), [np.array(s, np.int64) for s in strides_out]


@njit
def _offsets(o, shape, sa, sb):
    """Element offsets into both inputs of the first element of outer row ``o``."""
    ia = 0
    ib = 0
    rem = o
    for d in range(shape.shape[0] - 2, -1, -1):
        k = rem % shape[d]
        rem //= shape[d]
        ia += k * sa[d]
        ib += k * sb[d]
    return ia, ib


@njit(parallel=True)
def _div_trunc_int(a, b, out, shape, sa, sb):
    """Integer division rounding toward zero (C, onnxruntime), not NumPy's floor division.

    Division by zero gives 0 (as NumPy's integer division does) instead of trapping, and
    ``x / -1`` is computed as ``-x`` because ``INT_MIN / -1`` overflows and traps on x86.
    """
    inner = shape[shape.shape[0] - 1]
    ea = sa[sa.shape[0] - 1]
    eb = sb[sb.shape[0] - 1]
    for o_ in prange(out.size // inner):
        o = np.int64(o_)  # the prange index may be unsigned; int64 maths stays integral
        ia, ib = _offsets(o, shape, sa, sb)
        base = o * inner
        if a.itemsize <= 4:
            # Up to 32 bits, float64 division truncated is exact (53-bit mantissa) and, unlike
            # an integer divide, vectorizes. Division by zero gives inf / nan: replaced by 0.
            # INT32_MIN / -1 = 2**31 wraps to INT32_MIN when stored, as negation does.
            for j in range(inner):
                y = b[ib + j * eb]
                q = np.int64(np.float64(a[ia + j * ea]) / np.float64(y)) if y != 0 else 0
                out[base + j] = q
        else:
            for j in range(inner):
                x = a[ia + j * ea]
                y = b[ib + j * eb]
                if y == 0:
                    out[base + j] = 0
                elif y == -1:
                    out[base + j] = -x
                else:
                    q = x // y  # floor; one step toward zero when inexact with mixed signs
                    if q * y != x and (x < 0) != (y < 0):
                        q += 1
                    out[base + j] = q


@njit(parallel=True)
def _prelu(x, slope, out, shape, sx, ss):
    """y = x if x >= 0 else slope * x (NaN stays NaN: it fails ``x < 0``)."""
    inner = shape[shape.shape[0] - 1]
    ex = sx[sx.shape[0] - 1]
    es = ss[ss.shape[0] - 1]
    for o_ in prange(out.size // inner):
        o = np.int64(o_)
        ix, i_s = _offsets(o, shape, sx, ss)
        base = o * inner
        for j in range(inner):
            v = x[ix + j * ex]
            out[base + j] = v * slope[i_s + j * es] if v < 0 else v


# ----- Numba unary kernels: flat contiguous x and out, two scalar parameters -------------------
# Parameters arrive typed like the tensor (np.float32 for float32 data) so that float32 maths
# stays float32 and vectorizes. Every branch is written so that NaN falls through to a NaN
# result: Python's max()/min() would silently turn NaN into the other operand.
@njit(parallel=True)
def _leaky_relu(x, out, alpha, unused):
    for i in prange(x.size):
        v = x[i]
        out[i] = v * alpha if v < 0 else v


@njit(parallel=True)
def _elu(x, out, alpha, unused):
    for i in prange(x.size):
        v = x[i]
        # expm1 rather than exp(v) - 1: no cancellation for small |v|.
        out[i] = alpha * math.expm1(v) if v < 0 else v


@njit(parallel=True)
def _selu(x, out, alpha, gamma):
    for i in prange(x.size):
        v = x[i]
        out[i] = gamma * (alpha * math.expm1(v) if v <= 0 else v)


@njit(parallel=True)
def _celu(x, out, alpha, unused):
    # max(0, v) + min(0, alpha * (exp(v / alpha) - 1)) reduces to this for any alpha != 0.
    for i in prange(x.size):
        v = x[i]
        out[i] = v if v > 0 else alpha * math.expm1(v / alpha)


@njit(parallel=True)
def _thresholded_relu(x, out, alpha, unused):
    for i in prange(x.size):
        v = x[i]
        out[i] = v if v > alpha else 0


@njit(parallel=True)
def _hard_sigmoid(x, out, alpha, beta):
    for i in prange(x.size):
        t = alpha * x[i] + beta
        if t < 0:
            t = 0
        elif t > 1:
            t = 1
        out[i] = t


@njit(parallel=True)
def _hard_swish(x, out, alpha, beta):
    # x * HardSigmoid(x) with alpha = 1/6, beta = 0.5 (passed in, typed like x). The product
    # is always taken, as the spec's formula does: -inf * 0 is NaN, as in onnxruntime.
    for i in prange(x.size):
        v = x[i]
        t = alpha * v + beta
        if t < 0:
            t = 0
        elif t > 1:
            t = 1
        out[i] = v * t


@njit(parallel=True)
def _softsign(x, out, unused_a, unused_b):
    for i in prange(x.size):
        v = x[i]
        out[i] = v / (1 + abs(v))


@njit(parallel=True)
def _mish(x, out, unused_a, unused_b):
    for i in prange(x.size):
        v = x[i]
        # softplus(v) = max(v, 0) + log1p(exp(-|v|)): exp never overflows.
        sp = math.log1p(math.exp(-abs(v))) + max(v, 0.0)
        out[i] = v * math.tanh(sp)


# float32 erf runs vectorized (vmath.erf_row), block by block over the threads.
_VBLOCK = 4096


@njit(parallel=True)
def _erf(x, out, unused_a, unused_b):
    if x.itemsize == 4:
        for b in prange((x.size + _VBLOCK - 1) // _VBLOCK):
            lo = b * _VBLOCK
            hi = min(lo + _VBLOCK, x.size)
            erf_row(out[lo:hi], x[lo:hi], hi - lo)
        return
    for i in prange(x.size):
        out[i] = math.erf(x[i])


@njit(parallel=True)
def _gelu_erf(x, out, half, inv_sqrt2):
    if x.itemsize == 4:
        for b in prange((x.size + _VBLOCK - 1) // _VBLOCK):
            lo = b * _VBLOCK
            hi = min(lo + _VBLOCK, x.size)
            xs = x[lo:hi]
            # two scratch rows: out may be x itself, and erf_row in place would not vectorize
            # (the overlap check sends the loop to its scalar version)
            t = np.empty(hi - lo, np.float32)
            e = np.empty(hi - lo, np.float32)
            for i in range(hi - lo):
                t[i] = xs[i] * inv_sqrt2
            erf_row(e, t, hi - lo)
            seg = out[lo:hi]
            for i in range(hi - lo):
                seg[i] = half * xs[i] * (np.float32(1.0) + e[i])
        return
    for i in prange(x.size):
        v = x[i]
        out[i] = half * v * (1 + math.erf(v * inv_sqrt2))


@njit(parallel=True)
def _gelu_tanh(x, out, half, sqrt_2_over_pi):
    for i in prange(x.size):
        v = x[i]
        out[i] = half * v * (1 + math.tanh(sqrt_2_over_pi * (v + 0.044715 * v * v * v)))


@njit(parallel=True)
def _shrink(x, out, bias, lambd):
    for i in prange(x.size):
        v = x[i]
        if v < -lambd:
            out[i] = v + bias
        elif v > lambd:
            out[i] = v - bias
        else:
            out[i] = 0


# ----- base classes ----------------------------------------------------------------------------
class _Elementwise(Kernel):
    """Shared checks. Elementwise kernels are cheap: the interpreter may fold them."""

    foldable = True

    def check_dtype(self, info: TensorInfo, allowed, what: str = "input") -> np.dtype:
        dt = np.dtype(info.dtype)
        if dt not in allowed:
            raise self.error(
                f"{what} has dtype {dt}, which this op does not support (supported: "
                f"{_names(allowed)})",
                DTypeError,
            )
        return dt

    def same_dtype(self, infos: list[TensorInfo]) -> np.dtype:
        dts = [np.dtype(i.dtype) for i in infos]
        if any(d != dts[0] for d in dts):
            raise self.error(
                f"inputs must share one dtype, got {', '.join(str(d) for d in dts)}", DTypeError
            )
        return dts[0]


class _UfuncUnary(_Elementwise):
    """``y = UFUNC(x)`` with NumPy writing into the planned buffer."""

    UFUNC: np.ufunc
    DTYPES: frozenset = FLOATS
    OUT_DTYPE: np.dtype | None = None  # None: same as the input

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        dt = self.check_dtype(inputs[0], self.DTYPES)
        return [TensorInfo(inputs[0].shape, self.OUT_DTYPE or dt)]

    def invoke(self, inputs, outputs):
        with np.errstate(all="ignore"):
            self.UFUNC(inputs[0], out=outputs[0])


class _NumbaUnary(_Elementwise):
    """``y = FN(x)`` with a flat Numba kernel; float16 goes through float32 scratch."""

    FN = None  # a staticmethod wrapping one of the kernels above
    DTYPES: frozenset = FLOATS

    def params(self, dt: np.dtype) -> tuple[float, float]:
        return (0.0, 0.0)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        dt = self.check_dtype(x, self.DTYPES)
        compute = _F32 if dt == _F16 else dt
        # Integer inputs (Shrink) compare against float thresholds: keep those in float64.
        ptype = compute.type if compute.kind == "f" else np.float64
        self._params = tuple(ptype(p) for p in self.params(dt))
        if dt == _F16:
            self._scratch = (np.empty(x.size, _F32), np.empty(x.size, _F32))
        else:
            self._scratch = None
        return [TensorInfo(x.shape, dt)]

    def invoke(self, inputs, outputs):
        x = inputs[0].reshape(-1)
        out = _flat(outputs[0])
        if x.size == 0:
            return
        if self._scratch is None:
            self.FN(x, out, *self._params)
        else:
            xs, os_ = self._scratch
            np.copyto(xs, x)
            self.FN(xs, os_, *self._params)
            np.copyto(out, os_, casting="unsafe")


class _Binary(_Elementwise):
    """``y = UFUNC(a, b)`` with multidirectional broadcasting; both inputs share one dtype."""

    UFUNC: np.ufunc
    DTYPES: frozenset = NUMERIC
    OUT_BOOL = False

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 2)
        dt = self.same_dtype(inputs)
        self.check_dtype(inputs[0], self.DTYPES)
        shape = broadcast_shapes(self.where(), inputs[0].shape, inputs[1].shape)
        self.prepare_more(inputs, shape, dt)
        return [TensorInfo(shape, np.dtype(np.bool_) if self.OUT_BOOL else dt)]

    def prepare_more(self, inputs, shape, dt) -> None:
        """Hook for subclasses: per-dtype choices made once."""

    def invoke(self, inputs, outputs):
        with np.errstate(all="ignore"):
            self.UFUNC(inputs[0], inputs[1], out=outputs[0])


class _Variadic(_Elementwise):
    """Max, Min, Sum, Mean: one or more inputs, all broadcast together."""

    UFUNC: np.ufunc
    DTYPES: frozenset = NUMERIC

    def prepare(self, inputs):
        if len(inputs) < 1 or any(i is None for i in inputs):
            raise self.error("expects one or more inputs, none of them omitted")
        dt = self.same_dtype(inputs)
        self.check_dtype(inputs[0], self.DTYPES)
        shape = broadcast_shapes(self.where(), *(i.shape for i in inputs))
        return [TensorInfo(shape, dt)]

    def invoke(self, inputs, outputs):
        out = outputs[0]
        with np.errstate(all="ignore"):
            if len(inputs) == 1:
                np.copyto(out, inputs[0])
            else:
                # A ufunc broadcasts its inputs up to ``out``'s shape, which may be larger than
                # the first two inputs' broadcast shape when a later input is bigger.
                self.UFUNC(inputs[0], inputs[1], out=out)
                for x in inputs[2:]:
                    self.UFUNC(out, x, out=out)
            self.finish(out, len(inputs))

    def finish(self, out: np.ndarray, n: int) -> None:
        pass


# ----- binary arithmetic -----------------------------------------------------------------------
def _no_zero_divisor(kernel: Kernel, divisor: TensorInfo) -> None:
    """A constant integer divisor holding 0 is a model error, caught before running.

    A divisor computed at run time cannot be checked in ``prepare``; its zeros give 0.
    """
    if divisor.value is not None and divisor.size and not np.all(divisor.value):
        raise kernel.error("integer divisor (input 1) is a constant containing 0")


class Add(_Binary):
    traits = OpTraits(int8="binary", fusion=fusion.OP_ADD)

    UFUNC = np.add


class Sub(_Binary):
    traits = OpTraits(fusion=fusion.OP_SUB)

    UFUNC = np.subtract


class Mul(_Binary):
    traits = OpTraits(int8="binary", fusion=fusion.OP_MUL)

    UFUNC = np.multiply


class Div(_Binary):
    """Float division is IEEE (x/0 = ±inf); integer division truncates toward zero like C.

    Integer division by a constant 0 is rejected in ``prepare`` (onnxruntime fails at run
    time); a zero computed at run time gives 0 rather than trapping.
    """

    traits = OpTraits(fusion=fusion.OP_DIV)

    UFUNC = np.divide

    def prepare_more(self, inputs, shape, dt):
        self._int = dt.kind in "iu"
        if self._int:
            _no_zero_divisor(self, inputs[1])
            self._plan = _broadcast_plan(shape, inputs[0].shape, inputs[1].shape)

    def invoke(self, inputs, outputs):
        out = outputs[0]
        if not self._int:
            with np.errstate(all="ignore"):
                np.divide(inputs[0], inputs[1], out=out)
            return
        if out.size == 0:
            return
        if out.size <= _SMALL:
            _div_trunc_int_small(inputs[0], inputs[1], out)
            return
        shape, (sa, sb) = self._plan
        _div_trunc_int(inputs[0].reshape(-1), inputs[1].reshape(-1), _flat(out), shape, sa, sb)


# Below this many elements integer division runs in NumPy: shape arithmetic folded at prepare
# time (Shape -> Div -> Reshape) then never waits for a Numba compilation.
_SMALL = 256


def _div_trunc_int_small(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """NumPy twin of :func:`_div_trunc_int` for small tensors (it allocates temporaries)."""
    with np.errstate(all="ignore"):
        q = np.floor_divide(a, b)  # 0 where b == 0; INT_MIN // -1 wraps to INT_MIN
        if a.dtype.kind == "u":
            np.copyto(out, q)  # floor is truncation for unsigned numbers
            return
        # Floor and truncation differ by one when the signs differ and the division is inexact.
        step = (np.not_equal(q * b, a) & np.not_equal(b, 0)) & (np.less(a, 0) != np.less(b, 0))
        np.add(q, step, out=out, casting="unsafe")


class Mod(_Binary):
    """``fmod=1``: C fmod (sign of the dividend); ``fmod=0``: sign of the divisor (floor mod).

    Integer modulo by a constant 0 is rejected in ``prepare``; a zero computed at run time
    gives 0 (NumPy's definition; C would trap).
    """

    def prepare_more(self, inputs, shape, dt):
        if dt.kind in "iu":
            _no_zero_divisor(self, inputs[1])
        fmod = int(self.attr("fmod", 0))
        if fmod not in (0, 1):
            raise self.error(f"attribute fmod must be 0 or 1, got {fmod}")
        self.UFUNC = np.fmod if fmod else np.mod


class Pow(_Elementwise):
    """``y = a ** b`` with the base's dtype; the exponent may be any numeric type.

    Float bases are computed in the wider float of the two types. Integer bases are computed
    in float64 and truncated back (as onnxruntime's ``static_cast<T>(std::pow(x, y))``), which
    also defines negative integer exponents (2 ** -1 = 0) where NumPy would raise. Exact for
    results below 2**53.
    """

    BASE = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int32, np.int64))

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 2)
        base = self.check_dtype(inputs[0], self.BASE, "base (input 0)")
        expo = self.check_dtype(inputs[1], NUMERIC, "exponent (input 1)")
        shape = broadcast_shapes(self.where(), inputs[0].shape, inputs[1].shape)
        if base.kind == "f":
            self._compute = np.result_type(base, expo) if expo.kind == "f" else base
        else:
            self._compute = np.dtype(np.float64)
        return [TensorInfo(shape, base)]

    def invoke(self, inputs, outputs):
        with np.errstate(all="ignore"):
            np.power(inputs[0], inputs[1], out=outputs[0], dtype=self._compute, casting="unsafe")


class PRelu(_Elementwise):
    """``y = x < 0 ? slope * x : x``; ``slope`` broadcasts to ``x`` (unidirectionally)."""

    DTYPES = FLOATS | frozenset(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64))

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 2)
        dt = self.same_dtype(inputs)
        self.check_dtype(inputs[0], self.DTYPES)
        x, slope = inputs
        shape = broadcast_shapes(self.where(), x.shape, slope.shape)
        if shape != tuple(x.shape):
            raise self.error(
                f"slope shape {tuple(slope.shape)} must broadcast to the input shape "
                f"{tuple(x.shape)} without growing it",
                ShapeError,
            )
        self._plan = _broadcast_plan(shape, x.shape, slope.shape)
        self._f16 = dt == _F16
        if self._f16:
            self._scratch = tuple(np.empty(n, _F32) for n in (x.size, slope.size, x.size))
        return [TensorInfo(shape, dt)]

    def invoke(self, inputs, outputs):
        out = outputs[0]
        if out.size == 0:
            return
        x, slope = inputs[0].reshape(-1), inputs[1].reshape(-1)
        shape, (sx, ss) = self._plan
        if not self._f16:
            _prelu(x, slope, _flat(out), shape, sx, ss)
            return
        xs, ss_, os_ = self._scratch
        np.copyto(xs, x)
        np.copyto(ss_, slope)
        _prelu(xs, ss_, os_, shape, sx, ss)
        np.copyto(_flat(out), os_, casting="unsafe")


class BitShift(_Binary):
    """Shifts; a shift by the bit width or more gives 0 (NumPy's definition for unsigned types).

    Signed types: the right shift is arithmetic (the sign bit fills), the left shift wraps; a
    shift amount outside ``[0, width)`` gives 0 to the left and the sign fill (0 or -1) to the
    right. NumPy leaves out-of-range shift amounts of signed types to C, hence the ``where``.
    """

    DTYPES = INTS

    def prepare_more(self, inputs, shape, dt):
        direction = self.attr("direction")
        if isinstance(direction, bytes):
            direction = direction.decode()
        if direction not in ("LEFT", "RIGHT"):
            raise self.error(f"attribute direction must be 'LEFT' or 'RIGHT', got {direction!r}")
        self.UFUNC = np.left_shift if direction == "LEFT" else np.right_shift
        self._signed_left = dt in SIGNED and direction == "LEFT"
        self._signed_right = dt in SIGNED and direction == "RIGHT"

    def invoke(self, inputs, outputs):
        if not (self._signed_left or self._signed_right):
            return super().invoke(inputs, outputs)
        x, n = inputs
        width = x.dtype.itemsize * 8
        bad = (n < 0) | (n >= width)
        safe = np.where(bad, 0, n).astype(x.dtype)
        with np.errstate(all="ignore"):
            shifted = self.UFUNC(x, safe)
        fill = np.zeros((), x.dtype) if self._signed_left else np.where(x < 0, -1, 0).astype(
            x.dtype)
        np.copyto(outputs[0], np.where(bad, fill, shifted), casting="unsafe")


class BitwiseAnd(_Binary):
    UFUNC, DTYPES = np.bitwise_and, INTS


class BitwiseOr(_Binary):
    UFUNC, DTYPES = np.bitwise_or, INTS


class BitwiseXor(_Binary):
    UFUNC, DTYPES = np.bitwise_xor, INTS


class And(_Binary):
    UFUNC, DTYPES = np.logical_and, BOOL


class Or(_Binary):
    UFUNC, DTYPES = np.logical_or, BOOL


class Xor(_Binary):
    UFUNC, DTYPES = np.logical_xor, BOOL


class Equal(_Binary):
    UFUNC, DTYPES, OUT_BOOL = np.equal, NUMERIC | BOOL | STRING, True


class Less(_Binary):
    UFUNC, OUT_BOOL = np.less, True


class Greater(_Binary):
    UFUNC, OUT_BOOL = np.greater, True


class LessOrEqual(_Binary):
    UFUNC, OUT_BOOL = np.less_equal, True


class GreaterOrEqual(_Binary):
    UFUNC, OUT_BOOL = np.greater_equal, True


# ----- variadic --------------------------------------------------------------------------------
class Max(_Variadic):
    """Elementwise maximum; NaN propagates (``np.maximum``, as onnxruntime)."""

    traits = OpTraits(fusion=fusion.OP_MAX)

    UFUNC = np.maximum


class Min(_Variadic):
    traits = OpTraits(fusion=fusion.OP_MIN)

    UFUNC = np.minimum


class Sum(_Variadic):
    UFUNC, DTYPES = np.add, FLOATS


class Mean(_Variadic):
    UFUNC, DTYPES = np.add, FLOATS

    def finish(self, out, n):
        np.divide(out, n, out=out)


# ----- Where -----------------------------------------------------------------------------------
class Where(_Elementwise):
    """``y = cond ? x : y`` with three-way broadcasting."""

    traits = OpTraits(moves_bits=True)

    def prepare(self, inputs):
        self.require_inputs(inputs, 3, 3)
        self.check_dtype(inputs[0], BOOL, "condition (input 0)")
        dt = self.same_dtype(inputs[1:])
        self.check_dtype(inputs[1], ALL, "X (input 1)")
        shape = broadcast_shapes(self.where(), *(i.shape for i in inputs))
        return [TensorInfo(shape, dt)]

    def invoke(self, inputs, outputs):
        cond, x, y = inputs
        out = outputs[0]
        # Two broadcasting passes and no temporary: fill with Y, then overwrite where cond.
        np.copyto(out, y)
        np.copyto(out, x, where=cond)


# ----- unary through NumPy ---------------------------------------------------------------------
class Relu(_UfuncUnary):
    """``max(x, 0)``; NaN propagates (``np.maximum``), as in onnxruntime."""

    traits = OpTraits(int8="lut", fusion=fusion.OP_RELU)

    DTYPES = FLOATS | SIGNED

    def invoke(self, inputs, outputs):
        np.maximum(inputs[0], 0, out=outputs[0])


class Tanh(_UfuncUnary):
    traits = OpTraits(int8="lut", fusion=fusion.OP_TANH)

    UFUNC = np.tanh


class Softplus(_UfuncUnary):
    """``log(1 + exp(x))`` as ``logaddexp(x, 0)``, which never overflows."""

    def invoke(self, inputs, outputs):
        with np.errstate(all="ignore"):
            np.logaddexp(inputs[0], 0, out=outputs[0])


class Exp(_UfuncUnary):
    traits = OpTraits(fusion=fusion.OP_EXP)

    UFUNC = np.exp


class Log(_UfuncUnary):
    traits = OpTraits(fusion=fusion.OP_LOG)

    UFUNC = np.log


class Sqrt(_UfuncUnary):
    traits = OpTraits(fusion=fusion.OP_SQRT)

    UFUNC = np.sqrt


class Reciprocal(_UfuncUnary):
    traits = OpTraits(fusion=fusion.OP_RECIPROCAL)

    UFUNC = np.reciprocal


class Abs(_UfuncUnary):
    traits = OpTraits(fusion=fusion.OP_ABS)

    UFUNC, DTYPES = np.absolute, NUMERIC


class Neg(_UfuncUnary):
    traits = OpTraits(fusion=fusion.OP_NEG)

    UFUNC, DTYPES = np.negative, FLOATS | SIGNED


class Sign(_UfuncUnary):
    UFUNC, DTYPES = np.sign, NUMERIC


class Floor(_UfuncUnary):
    UFUNC = np.floor


class Ceil(_UfuncUnary):
    UFUNC = np.ceil


class Round(_UfuncUnary):
    """Round half to even (``np.rint``), as ONNX specifies."""

    UFUNC = np.rint


class Sin(_UfuncUnary):
    UFUNC = np.sin


class Cos(_UfuncUnary):
    UFUNC = np.cos


class Tan(_UfuncUnary):
    UFUNC = np.tan


class Asin(_UfuncUnary):
    UFUNC = np.arcsin


class Acos(_UfuncUnary):
    UFUNC = np.arccos


class Atan(_UfuncUnary):
    UFUNC = np.arctan


class Sinh(_UfuncUnary):
    UFUNC = np.sinh


class Cosh(_UfuncUnary):
    UFUNC = np.cosh


class Asinh(_UfuncUnary):
    UFUNC = np.arcsinh


class Acosh(_UfuncUnary):
    UFUNC = np.arccosh


class Atanh(_UfuncUnary):
    UFUNC = np.arctanh


class Not(_UfuncUnary):
    UFUNC, DTYPES = np.logical_not, BOOL


class BitwiseNot(_UfuncUnary):
    UFUNC, DTYPES = np.invert, INTS


class IsNaN(_UfuncUnary):
    UFUNC, OUT_DTYPE = np.isnan, np.dtype(np.bool_)


class IsInf(_UfuncUnary):
    """``detect_positive`` / ``detect_negative`` pick which infinities count."""

    OUT_DTYPE = np.dtype(np.bool_)

    def prepare(self, inputs):
        pos = int(self.attr("detect_positive", 1))
        neg = int(self.attr("detect_negative", 1))
        self._mode = (bool(pos), bool(neg))
        return super().prepare(inputs)

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        pos, neg = self._mode
        if pos and neg:
            np.isinf(x, out=out)
        elif pos:
            np.equal(x, np.inf, out=out)
        elif neg:
            np.equal(x, -np.inf, out=out)
        else:
            out.fill(False)


class Clip(_Elementwise):
    """``y = min(max(x, lo), hi)``; ``lo``/``hi`` are optional one-element inputs.

    When ``lo > hi`` every element becomes ``hi`` (the ONNX rule, which the max-then-min order
    gives). NaN inputs stay NaN.
    """

    traits = OpTraits(int8="lut", fusion=fusion.OP_CLIP)

    DTYPES = NUMERIC

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 3)
        dt = self.check_dtype(inputs[0], self.DTYPES)
        for i, what in ((1, "min"), (2, "max")):
            info = inputs[i] if i < len(inputs) else None
            if info is None:
                continue
            if np.dtype(info.dtype) != dt:
                raise self.error(
                    f"{what} (input {i}) has dtype {np.dtype(info.dtype)}, the input has {dt}",
                    DTypeError,
                )
            if info.size != 1:
                raise self.error(
                    f"{what} (input {i}) must hold one value, got shape {tuple(info.shape)}",
                    ShapeError,
                )
        self._has = tuple(i < len(inputs) and inputs[i] is not None for i in (1, 2))
        # Legacy (opset < 11) attributes, in case a graph still carries them.
        self._attr_bounds = (self.attr("min"), self.attr("max"))
        return [TensorInfo(inputs[0].shape, dt)]

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        lo = inputs[1].reshape(()) if self._has[0] else self._attr_bounds[0]
        hi = inputs[2].reshape(()) if self._has[1] else self._attr_bounds[1]
        if lo is None and hi is None:
            np.copyto(out, x)
        elif hi is None:
            np.maximum(x, lo, out=out)
        elif lo is None:
            np.minimum(x, hi, out=out)
        else:
            np.maximum(x, lo, out=out)
            np.minimum(out, hi, out=out)


# ----- unary through Numba ---------------------------------------------------------------------
class LeakyRelu(_NumbaUnary):
    traits = OpTraits(int8="lut", fusion=fusion.OP_LEAKY_RELU)

    FN = staticmethod(_leaky_relu)

    def params(self, dt):
        return (float(self.attr("alpha", 0.01)), 0.0)


class Elu(_NumbaUnary):
    FN = staticmethod(_elu)

    def params(self, dt):
        return (float(self.attr("alpha", 1.0)), 0.0)


class Selu(_NumbaUnary):
    FN = staticmethod(_selu)

    def params(self, dt):
        # Defaults are the float32-rounded constants the ONNX spec lists.
        return (
            float(self.attr("alpha", 1.67326319217681884765625)),
            float(self.attr("gamma", 1.05070102214813232421875)),
        )


class Celu(_NumbaUnary):
    FN = staticmethod(_celu)

    def params(self, dt):
        alpha = float(self.attr("alpha", 1.0))
        if alpha == 0:
            raise self.error("attribute alpha must not be 0 (Celu divides by it)")
        return (alpha, 0.0)


class ThresholdedRelu(_NumbaUnary):
    FN = staticmethod(_thresholded_relu)

    def params(self, dt):
        return (float(self.attr("alpha", 1.0)), 0.0)


class Sigmoid(_UfuncUnary):
    """``1 / (1 + exp(-x))`` as four in-place NumPy passes.

    NumPy's ``exp`` is SIMD-vectorized while Numba calls the scalar libm ``exp`` (no SVML here),
    so the four passes are several times faster than one fused Numba loop. The formula is safe
    at both ends: for x < -88, ``exp(-x)`` overflows to inf and the result is the right limit,
    0; for large x it rounds to 1. float16 is computed in a float32 scratch buffer, so it is
    rounded once.
    """

    traits = OpTraits(int8="lut", fusion=fusion.OP_SIGMOID)

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        x = inputs[0]
        self._scratch = np.empty(x.shape, _F32) if np.dtype(x.dtype) == _F16 else None
        return outs

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        buf = out if self._scratch is None else self._scratch
        with np.errstate(all="ignore"):
            np.negative(x, out=buf, casting="unsafe")
            np.exp(buf, out=buf)
            np.add(buf, 1, out=buf)
            np.reciprocal(buf, out=buf)
        if buf is not out:
            np.copyto(out, buf, casting="unsafe")


class HardSigmoid(_NumbaUnary):
    traits = OpTraits(int8="lut", fusion=fusion.OP_HARD_SIGMOID)

    FN = staticmethod(_hard_sigmoid)

    def params(self, dt):
        return (float(self.attr("alpha", 0.2)), float(self.attr("beta", 0.5)))


class HardSwish(_NumbaUnary):
    traits = OpTraits(int8="lut", fusion=fusion.OP_HARD_SWISH)

    FN = staticmethod(_hard_swish)

    def params(self, dt):
        return (1.0 / 6.0, 0.5)


class Softsign(_NumbaUnary):
    FN = staticmethod(_softsign)


class Mish(_NumbaUnary):
    FN = staticmethod(_mish)


class Erf(_NumbaUnary):
    traits = OpTraits(fusion=fusion.OP_ERF)

    FN = staticmethod(_erf)


class Gelu(_NumbaUnary):
    """``approximate='none'``: 0.5x(1 + erf(x/√2)); ``'tanh'``: the tanh approximation."""

    def params(self, dt):
        approx = self.attr("approximate", "none")
        if isinstance(approx, bytes):
            approx = approx.decode()
        if approx == "none":
            self.FN = _gelu_erf
            return (0.5, 1.0 / math.sqrt(2.0))
        if approx == "tanh":
            self.FN = _gelu_tanh
            return (0.5, math.sqrt(2.0 / math.pi))
        raise self.error(f"attribute approximate must be 'none' or 'tanh', got {approx!r}")


class Shrink(_NumbaUnary):
    """``x < -lambd: x + bias; x > lambd: x - bias; else 0``; integer results truncate."""

    FN = staticmethod(_shrink)
    DTYPES = NUMERIC

    def params(self, dt):
        return (float(self.attr("bias", 0.0)), float(self.attr("lambd", 0.5)))


def register(reg: KernelRegistry) -> None:
    """Add the elementwise kernels to ``reg`` (all opset versions; see the module docstring)."""
    for op_type, kernel in (
        # binary, broadcasting
        ("Add", Add),
        ("Sub", Sub),
        ("Mul", Mul),
        ("Div", Div),
        ("Pow", Pow),
        ("Mod", Mod),
        ("PRelu", PRelu),
        ("BitShift", BitShift),
        ("BitwiseAnd", BitwiseAnd),
        ("BitwiseOr", BitwiseOr),
        ("BitwiseXor", BitwiseXor),
        ("And", And),
        ("Or", Or),
        ("Xor", Xor),
        ("Equal", Equal),
        ("Less", Less),
        ("Greater", Greater),
        ("LessOrEqual", LessOrEqual),
        ("GreaterOrEqual", GreaterOrEqual),
        # variadic and ternary
        ("Max", Max),
        ("Min", Min),
        ("Sum", Sum),
        ("Mean", Mean),
        ("Where", Where),
        # unary, NumPy
        ("Relu", Relu),
        ("Tanh", Tanh),
        ("Softplus", Softplus),
        ("Exp", Exp),
        ("Log", Log),
        ("Sqrt", Sqrt),
        ("Reciprocal", Reciprocal),
        ("Abs", Abs),
        ("Neg", Neg),
        ("Sign", Sign),
        ("Floor", Floor),
        ("Ceil", Ceil),
        ("Round", Round),
        ("Sin", Sin),
        ("Cos", Cos),
        ("Tan", Tan),
        ("Asin", Asin),
        ("Acos", Acos),
        ("Atan", Atan),
        ("Sinh", Sinh),
        ("Cosh", Cosh),
        ("Asinh", Asinh),
        ("Acosh", Acosh),
        ("Atanh", Atanh),
        ("Not", Not),
        ("BitwiseNot", BitwiseNot),
        ("IsNaN", IsNaN),
        ("IsInf", IsInf),
        ("Clip", Clip),
        # unary, Numba
        ("LeakyRelu", LeakyRelu),
        ("Elu", Elu),
        ("Selu", Selu),
        ("Celu", Celu),
        ("ThresholdedRelu", ThresholdedRelu),
        ("Sigmoid", Sigmoid),
        ("HardSigmoid", HardSigmoid),
        ("HardSwish", HardSwish),
        ("Softsign", Softsign),
        ("Mish", Mish),
        ("Erf", Erf),
        ("Gelu", Gelu),
        ("Shrink", Shrink),
    ):
        reg.add(op_type, kernel)


__all__ = ["register"]
