"""Operators whose work is a few vectorized NumPy calls: losses, RMSNormalization, Swish,
CumProd, Einsum, Compress, Unique, window functions, ReverseSequence.

They share :class:`EagerKernel`: ``check`` validates attributes and infers output infos at
prepare (``shape=None`` where the shape depends on data), ``compute`` returns the outputs and
``invoke`` copies them into the planned buffers (or hands them over when the shapes were only
known at run time). None of them is on a hot path of the models edgert targets; the heavy ones
(BLAS matmul inside Einsum) already run in compiled code.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo

FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class EagerKernel(Kernel):
    """A kernel computed by NumPy calls: subclasses implement ``check`` and ``compute``."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        return self.check(inputs)

    def check(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        raise NotImplementedError

    def compute(self, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
        raise NotImplementedError

    def invoke(self, inputs, outputs):
        results = self.compute(inputs)
        if all(o is None for o in outputs):
            return [np.asarray(r) for r in results]
        for out, res in zip(outputs, results):
            if out is not None:
                np.copyto(out, res, casting="unsafe")
        return None

    def require_float(self, info: TensorInfo, what: str) -> None:
        if np.dtype(info.dtype) not in FLOATS:
            raise self.error(f"{what} has dtype {np.dtype(info.dtype)}; expected a float type",
                             DTypeError)


# ----- losses -------------------------------------------------------------------------------------
def _nll(where: str, logp: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
         reduction: str, ignore_index: int | None) -> np.ndarray:
    """Negative log-likelihood of ``logp`` [N, C, d...] at ``target`` [N, d...]."""
    c = logp.shape[1]
    tgt = target.astype(np.int64)
    ignored = (tgt == ignore_index) if ignore_index is not None else np.zeros(tgt.shape, bool)
    bad = ~ignored & ((tgt < 0) | (tgt >= c))
    if bad.any():
        raise KernelError(f"{where}: target values must lie in [0, {c}) (or be ignore_index)")
    safe = np.where(ignored, 0, tgt)
    picked = np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    w = np.ones(tgt.shape, logp.dtype) if weight is None else weight[safe].astype(logp.dtype)
    w = np.where(ignored, 0, w).astype(logp.dtype)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(logp.dtype)
    if reduction == "sum":
        return np.asarray(loss.sum(), dtype=logp.dtype)
    # mean: weighted by the gathered weights (0/0 is NaN, as in the ONNX reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(loss.sum() / w.sum(), dtype=logp.dtype)


class _LossBase(EagerKernel):
    def _check_loss(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x, t = inputs[0], inputs[1]
        self.require_float(x, "input")
        if len(x.shape) < 2:
            raise self.error(f"input must be [N, C, ...], got shape {x.shape}", ShapeError)
        if np.dtype(t.dtype).kind not in "iu":
            raise self.error(f"target must be an integer tensor, got {t.dtype}", DTypeError)
        if tuple(t.shape) != (x.shape[0], *x.shape[2:]):
            raise self.error(f"target shape {t.shape} does not match input {x.shape}", ShapeError)
        w = inputs[2] if len(inputs) > 2 else None
        if w is not None and tuple(w.shape) != (x.shape[1],):
            raise self.error(f"weight must have shape ({x.shape[1]},), got {w.shape}", ShapeError)
        self._reduction = self.attr("reduction", "mean")
        if self._reduction not in ("none", "sum", "mean"):
            raise self.error(f"unknown reduction {self._reduction!r}")
        self._ignore = self.attr("ignore_index", None)
        shape = tuple(t.shape) if self._reduction == "none" else ()
        return TensorInfo(shape, np.dtype(x.dtype))


class NegativeLogLikelihoodLoss(_LossBase):
    """NegativeLogLikelihoodLoss: ``-input[n, target[n, d...], d...] * weight[target]``."""

    def check(self, inputs):
        return [self._check_loss(inputs)]

    def compute(self, inputs):
        w = inputs[2] if len(inputs) > 2 else None
        return [_nll(self.where(), inputs[0], inputs[1], w, self._reduction, self._ignore)]


class SoftmaxCrossEntropyLoss(_LossBase):
    """SoftmaxCrossEntropyLoss: NLL of ``log_softmax(scores, axis=1)``; output 1 = log_prob."""

    def check(self, inputs):
        loss = self._check_loss(inputs)
        return [loss, TensorInfo(tuple(inputs[0].shape), np.dtype(inputs[0].dtype))]

    def compute(self, inputs):
        x = inputs[0]
        # log_softmax with the max subtracted: exp of large scores overflows otherwise
        m = x.max(axis=1, keepdims=True)
        logp = (x - m) - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        w = inputs[2] if len(inputs) > 2 else None
        return [_nll(self.where(), logp, inputs[1], w, self._reduction, self._ignore), logp]


# ----- normalization / activations ----------------------------------------------------------------
class RMSNormalization(EagerKernel):
    """RMSNormalization: ``x / sqrt(mean(x^2 over axes >= axis) + epsilon) * scale``."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x, s = inputs
        self.require_float(x, "X")
        rank = len(x.shape)
        self._axis = self.normalize_axis(int(self.attr("axis", -1)), rank)
        self._eps = float(self.attr("epsilon", 1e-5))
        norm_shape = tuple(x.shape[self._axis:])
        try:
            np.broadcast_shapes(tuple(s.shape), norm_shape)
        except ValueError:
            raise self.error(f"scale shape {s.shape} does not broadcast to {norm_shape}",
                             ShapeError) from None
        stash = self.attr("stash_type", 1)
        self._acc = np.float64 if stash == dtypes.DOUBLE else np.float32
        self.require_float(s, "scale")
        # Y has the scale's type (V), which may differ from X's (T)
        return [TensorInfo(tuple(x.shape), np.dtype(s.dtype))]

    def compute(self, inputs):
        x, s = inputs
        xa = x.astype(self._acc)
        axes = tuple(range(self._axis, x.ndim))
        rms = np.sqrt(np.mean(xa * xa, axis=axes, keepdims=True) + self._eps)
        if s.dtype == x.dtype:
            return [((xa / rms) * s.astype(self._acc)).astype(x.dtype)]
        # the spec's function: Normalized cast back to T, then Mul with Scale in V
        normalized = (xa / rms).astype(x.dtype).astype(s.dtype)
        return [normalized * s]


class Swish(EagerKernel):
    """Swish: ``x * sigmoid(alpha * x)``."""

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        self.require_float(inputs[0], "X")
        self._alpha = float(self.attr("alpha", 1.0))
        return [TensorInfo(tuple(inputs[0].shape), np.dtype(inputs[0].dtype))]

    def compute(self, inputs):
        x = inputs[0]
        xa = x.astype(np.float64)
        return [(xa / (1.0 + np.exp(-self._alpha * xa))).astype(x.dtype)]


# ----- scans, einsum, selection -------------------------------------------------------------------
class CumProd(EagerKernel):
    """CumProd along ``axis`` (input 1), with ``exclusive`` and ``reverse``."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = inputs[0]
        if np.dtype(x.dtype) == object or np.dtype(x.dtype) == np.bool_:
            raise self.error(f"unsupported dtype {x.dtype}", DTypeError)
        if inputs[1].value is not None:  # else read at run time
            self._axis = self.normalize_axis(int(np.ravel(inputs[1].value)[0]), len(x.shape))
        else:
            self._axis = None
        return [TensorInfo(tuple(x.shape), np.dtype(x.dtype))]

    def compute(self, inputs):
        x = inputs[0]
        axis = self._axis
        if axis is None:
            axis = self.normalize_axis(int(np.ravel(inputs[1])[0]), x.ndim)
        y = np.flip(x, axis) if self.attr("reverse", 0) else x
        if self.attr("exclusive", 0):
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            y = np.pad(y, pad, constant_values=1)
            y = np.take(y, np.arange(x.shape[axis]), axis=axis)
        r = np.cumprod(y, axis=axis, dtype=x.dtype)
        return [np.flip(r, axis) if self.attr("reverse", 0) else r]


class Einsum(EagerKernel):
    """Einsum with NumPy's planner (``optimize=True`` contracts through BLAS)."""

    def check(self, inputs):
        if not inputs or any(x is None for x in inputs):
            raise self.error("needs at least one input and no omitted ones")
        eq = str(self.attr("equation", "")).replace(" ", "")
        if not eq:
            raise self.error("attribute 'equation' is required")
        self._eq = eq
        dts = {np.dtype(x.dtype) for x in inputs}
        if len(dts) != 1 or next(iter(dts)) in (np.dtype(object), np.dtype(np.bool_)):
            raise self.error(f"inputs must share one numeric dtype, got {sorted(map(str, dts))}",
                             DTypeError)
        try:
            dummy = [np.zeros(x.shape, x.dtype) for x in inputs]
            shape = np.einsum(eq, *dummy).shape
        except ValueError as exc:
            raise self.error(f"equation {eq!r} does not fit the input shapes: {exc}",
                             ShapeError) from None
        return [TensorInfo(tuple(shape), next(iter(dts)))]

    def compute(self, inputs):
        x0 = inputs[0]
        return [np.asarray(np.einsum(self._eq, *inputs, optimize=True)).astype(x0.dtype)]


class Compress(EagerKernel):
    """Compress: the slices along ``axis`` (or of the flattened input) where condition is true."""

    traits = OpTraits(moves_bits=True)

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x, c = inputs
        if np.dtype(c.dtype) != np.bool_ or len(c.shape) != 1:
            raise self.error(f"condition must be a 1-D bool tensor, got {c.dtype} {c.shape}")
        axis = self.attr("axis", None)
        self._axis = None if axis is None else self.normalize_axis(int(axis), len(x.shape))
        limit = x.size if self._axis is None else x.shape[self._axis]
        if c.shape[0] > limit:
            raise self.error(f"condition has {c.shape[0]} entries, the axis only {limit}",
                             ShapeError)
        return [TensorInfo(None, np.dtype(x.dtype))]

    def compute(self, inputs):
        return [np.compress(inputs[1], inputs[0], axis=self._axis)]


class Unique(EagerKernel):
    """Unique: values (sorted or in first-occurrence order), indices, inverse indices, counts."""

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        axis = self.attr("axis", None)
        self._axis = None if axis is None else self.normalize_axis(int(axis), len(x.shape))
        i64 = np.dtype(np.int64)
        return [TensorInfo(None, np.dtype(x.dtype)), TensorInfo(None, i64),
                TensorInfo(None, i64), TensorInfo(None, i64)]

    def compute(self, inputs):
        x = inputs[0]
        axis = self._axis
        vals, idx, inv, cnt = np.unique(x, return_index=True, return_inverse=True,
                                        return_counts=True, axis=axis)
        inv = inv.reshape(-1)
        if not self.attr("sorted", 1):
            # first-occurrence order: sort the unique entries by where they first appear
            order = np.argsort(idx, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            vals = np.take(vals, order, axis=0 if axis is None else axis)
            idx, cnt, inv = idx[order], cnt[order], rank[inv]
        i64 = np.int64
        return [vals, idx.astype(i64), inv.astype(i64), cnt.astype(i64)]


class _Window(EagerKernel):
    """Hann / Hamming / Blackman windows of length ``size`` (input 0), periodic by default."""

    coeffs: tuple[float, ...] = ()

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        size = inputs[0].value  # None: the length is only known at run time
        out_dt = dtypes.to_numpy(int(self.attr("output_datatype", dtypes.FLOAT)))
        if out_dt.kind == "O":
            raise self.error("output_datatype cannot be string", DTypeError)
        if size is None:
            return [TensorInfo(None, out_dt)]
        n = int(np.ravel(size)[0])
        if n < 0:
            raise self.error(f"size must be >= 0, got {n}", ShapeError)
        return [TensorInfo((n,), out_dt)]

    def compute(self, inputs):
        n = int(np.ravel(inputs[0])[0])
        out_dt = dtypes.to_numpy(int(self.attr("output_datatype", dtypes.FLOAT)))
        periodic = int(self.attr("periodic", 1))
        denom = n if periodic else n - 1
        k = np.arange(n, dtype=np.float64)
        w = np.zeros(n)
        for j, a in enumerate(self.coeffs):  # a few cosine terms, not a per-element loop
            w = w + ((-1) ** j) * a * np.cos(2 * np.pi * j * k / max(denom, 1))
        return [w.astype(out_dt)]


class HannWindow(_Window):
    coeffs = (0.5, 0.5)


class HammingWindow(_Window):
    coeffs = (25.0 / 46.0, 21.0 / 46.0)


class BlackmanWindow(_Window):
    coeffs = (0.42, 0.5, 0.08)


class ReverseSequence(EagerKernel):
    """ReverseSequence: reverse the first ``sequence_lens[b]`` steps of each batch entry."""

    traits = OpTraits(moves_bits=True)

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x, lens = inputs
        self._t = self.normalize_axis(int(self.attr("time_axis", 0)), len(x.shape))
        self._b = self.normalize_axis(int(self.attr("batch_axis", 1)), len(x.shape))
        if self._t == self._b or len(x.shape) < 2:
            raise self.error("time_axis and batch_axis must differ on a rank >= 2 input")
        if tuple(lens.shape) != (x.shape[self._b],):
            raise self.error(f"sequence_lens must have shape ({x.shape[self._b]},)", ShapeError)
        return [TensorInfo(tuple(x.shape), np.dtype(x.dtype))]

    def compute(self, inputs):
        x, lens = inputs
        xt = np.moveaxis(x, (self._b, self._t), (0, 1))
        steps = xt.shape[1]
        lens = lens.astype(np.int64)
        if np.any((lens < 0) | (lens > steps)):
            raise KernelError(f"{self.where()}: sequence_lens must lie in [0, {steps}]")
        t = np.arange(steps)[None, :]
        src = np.where(t < lens[:, None], lens[:, None] - 1 - t, t)  # [B, T]
        src = src.reshape(src.shape + (1,) * (xt.ndim - 2))
        y = np.take_along_axis(xt, np.broadcast_to(src, xt.shape), axis=1)
        return [np.moveaxis(y, (0, 1), (self._b, self._t))]


class BitCast(EagerKernel):
    """BitCast: the same bytes read as another element type of the same width."""

    traits = OpTraits(moves_bits=True)

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        to = int(self.attr("to", 0))
        if not dtypes.is_known(to) or to == dtypes.STRING or np.dtype(x.dtype) == object:
            raise self.error(f"cannot bit-cast {x.dtype} to {dtypes.name(to)}", DTypeError)
        out = dtypes.to_numpy(to)
        if out.itemsize != np.dtype(x.dtype).itemsize:
            raise self.error(f"{x.dtype} and {dtypes.name(to)} differ in bit width", DTypeError)
        self._out = out
        return [TensorInfo(tuple(x.shape), out)]

    def compute(self, inputs):
        # little endian as ONNX requires (the byte order of every platform edgert runs on)
        return [np.ascontiguousarray(inputs[0]).view(self._out)]


class StringNormalizer(EagerKernel):
    """StringNormalizer: drop stop words from a [C] / [1, C] string tensor, change case."""

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if np.dtype(x.dtype) != object:
            raise self.error(f"input must be a string tensor, got {x.dtype}", DTypeError)
        if len(x.shape) not in (1, 2) or (len(x.shape) == 2 and x.shape[0] != 1):
            raise self.error(f"input must be [C] or [1, C], got {x.shape}", ShapeError)
        self._action = self.attr("case_change_action", "NONE")
        if self._action not in ("NONE", "LOWER", "UPPER"):
            raise self.error(f"unknown case_change_action {self._action!r}")
        return [TensorInfo(None, np.dtype(object))]

    def compute(self, inputs):
        x = inputs[0]
        # Python's str methods on each element: NumPy's fixed-width strings truncated a case
        # change that lengthens a word ("Grüße".upper() is "GRÜSSE", one letter longer)
        words = [str(w) for w in x.reshape(-1)]
        stop = [str(w) for w in (self.attr("stopwords", []) or [])]
        if stop:
            if self.attr("is_case_sensitive", 0):
                drop = set(stop)
                words = [w for w in words if w not in drop]
            else:
                drop = {w.lower() for w in stop}
                words = [w for w in words if w.lower() not in drop]
        if self._action == "LOWER":
            words = [w.lower() for w in words]
        elif self._action == "UPPER":
            words = [w.upper() for w in words]
        out = np.empty(max(len(words), 1), dtype=object)
        out[:] = words or [""]
        return [out.reshape((-1,) if x.ndim == 1 else (1, -1))]


class StringConcat(EagerKernel):
    """StringConcat: element-wise concatenation with broadcasting."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        if any(np.dtype(i.dtype) != object for i in inputs):
            raise self.error("inputs must be string tensors", DTypeError)
        try:
            shape = np.broadcast_shapes(tuple(inputs[0].shape), tuple(inputs[1].shape))
        except ValueError:
            raise self.error("input shapes do not broadcast", ShapeError) from None
        return [TensorInfo(tuple(shape), np.dtype(object))]

    def compute(self, inputs):
        a, b = inputs
        return [np.char.add(a.astype(str), b.astype(str)).astype(object)]


class RegexFullMatch(EagerKernel):
    """RegexFullMatch: whether each string matches ``pattern`` entirely.

    ONNX specifies RE2 syntax: the pattern runs on RE2 when google-re2 is installed (the
    ``re2`` extra), else on Python's ``re`` after a check that refuses patterns that could
    backtrack catastrophically (:mod:`.regex`)."""

    _fullmatch = None
    _pattern = None

    def check(self, inputs):
        from edgert.runtime.kernels.cpu.regex import compile_full_match

        self.require_inputs(inputs, 1, 1)
        if np.dtype(inputs[0].dtype) != object:
            raise self.error("input must be a string tensor", DTypeError)
        pattern = self.attr("pattern", "")
        pattern = pattern.decode() if isinstance(pattern, bytes) else str(pattern)
        if self._fullmatch is None or pattern != self._pattern:  # compiled once per node
            self._fullmatch = compile_full_match(pattern, self.where())
            self._pattern = pattern
        return [TensorInfo(tuple(inputs[0].shape), np.dtype(np.bool_))]

    def compute(self, inputs):
        fullmatch = self._fullmatch
        match = np.frompyfunc(lambda s: fullmatch(str(s)), 1, 1)
        return [match(inputs[0]).astype(np.bool_)]


class SwiGLU(EagerKernel):
    """SwiGLU: ``Swish_alpha(A) * B`` for a gate A and a value B of one shape."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        a, b = inputs
        self.require_float(a, "A")
        if tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
            raise self.error(f"A {a.shape} {a.dtype} and B {b.shape} {b.dtype} must match",
                             ShapeError)
        self._alpha = float(self.attr("alpha", 1.0))
        return [TensorInfo(tuple(a.shape), np.dtype(a.dtype))]

    def compute(self, inputs):
        a, b = inputs
        af = a.astype(np.float64)
        return [(af / (1.0 + np.exp(-self._alpha * af)) * b).astype(a.dtype)]


def register(reg: KernelRegistry) -> None:
    for op_type, kernel in (
        ("NegativeLogLikelihoodLoss", NegativeLogLikelihoodLoss),
        ("SoftmaxCrossEntropyLoss", SoftmaxCrossEntropyLoss),
        ("RMSNormalization", RMSNormalization),
        ("Swish", Swish),
        ("CumProd", CumProd),
        ("Einsum", Einsum),
        ("Compress", Compress),
        ("Unique", Unique),
        ("HannWindow", HannWindow),
        ("HammingWindow", HammingWindow),
        ("BlackmanWindow", BlackmanWindow),
        ("ReverseSequence", ReverseSequence),
        ("BitCast", BitCast),
        ("StringNormalizer", StringNormalizer),
        ("StringConcat", StringConcat),
        ("RegexFullMatch", RegexFullMatch),
        ("SwiGLU", SwiGLU),
    ):
        reg.add(op_type, kernel)
