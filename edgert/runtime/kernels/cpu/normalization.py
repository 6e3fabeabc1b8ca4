"""CPU kernels: normalization family.

BatchNormalization (inference), InstanceNormalization, LayerNormalization,
GroupNormalization, LRN, LpNormalization, MeanVarianceNormalization, Softmax, LogSoftmax and
Hardmax, as Numba kernels over flat contiguous arrays (one compilation per dtype, any rank).

Two layouts cover every op:

* **rows** — the tensor is ``rows × n`` with each row normalized on its own (LayerNorm: the
  trailing dims; InstanceNorm: one (batch, channel); GroupNorm: one (batch, group); MVN after
  moving the reduced axes last). :func:`_normalize_rows` computes mean and variance per row and
  applies a scale/bias whose index is a fixed function of (row, position), see there.
* **outer × n × inner** — an op along one axis (Softmax, LogSoftmax, Hardmax, LpNormalization).
  With ``inner == 1`` a row is contiguous; otherwise a task takes a block of ``_BLOCK``
  neighbouring columns so that every inner loop still walks memory contiguously.

Numerical choices: mean and variance use two passes (mean first, then the mean of squared
deviations) because the one-pass E[x²] - E[x]² cancels catastrophically when |mean| >> std
(activations offset by a large bias), and even turns negative so that 1/sqrt(var + eps) is NaN.
Sums accumulate in float64 (Numba's float literals), so float16/float32 data are at least as
precise as ONNX's ``stash_type=1`` (float32) asks. Softmax subtracts the row maximum before
``exp`` so that it never overflows. Numba has no CPU float16 arithmetic: float16 tensors go
through float32 scratch buffers allocated in ``prepare``.
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.kernels.cpu.elementwise import planned_view
from edgert.runtime.kernels.cpu.vmath import exp_row
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo, broadcast_shapes

_FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_BLOCK = 256  # columns per task when normalizing along a non-innermost axis


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _flat(a: np.ndarray) -> np.ndarray:
    return planned_view(a, -1)


# ----- rows: mean / variance normalization -----------------------------------------------------
@njit(fastmath=False)
def _affine_row(xr, orow, mu, inv, sc, bi):
    """``orow = (xr - mu) * inv * sc + bi`` in the data's precision (float32: full vector width;
    ``mu``/``inv`` are float64 statistics), the mean split in two so that ``x - mu`` keeps its
    float64 accuracy (``x - hi`` is exact near the mean: rows at 1e4 +- 1 would lose 4 digits).
    No fast-math: reassociation would fold the two halves back together."""
    mu_hi = xr.dtype.type(mu)
    mu_lo = xr.dtype.type(mu - mu_hi)
    inv_t = xr.dtype.type(inv)
    for k in range(xr.size):
        orow[k] = ((xr[k] - mu_hi) - mu_lo) * inv_t * sc[k] + bi[k]


@njit(parallel=True)
def _normalize_rows(x, out, n, scale, bias, rmod, sdiv, eps, eps_outside, mean_out, inv_out):
    """Normalize each length-``n`` row of ``x`` and apply a scale and bias.

    Element ``k`` of row ``r`` uses ``scale[((r % rmod) * n + k) // sdiv]`` (and the same bias
    index): ``rmod=1, sdiv=1`` is LayerNorm's per-position scale, ``rmod=C, sdiv=n``
    InstanceNorm's per-channel one, ``rmod=G, sdiv=spatial`` GroupNorm's per-channel one.
    ``eps_outside`` selects 1/(std + eps) (MeanVarianceNormalization) over 1/sqrt(var + eps).
    The row's mean and 1/std go to ``mean_out[r]`` and ``inv_out[r]``.
    """
    rows = x.size // n
    for r_ in prange(rows):
        r = np.int64(r_)
        base = r * n
        # Row views: indices from 0 that LLVM can see are non-negative. (base + k with a prange
        # index kept Numba's negative-index wraparound in the loops, which then ran as vector
        # gathers and scatters, 4x slower.)
        xr = x[base:base + n]
        orow = out[base:base + n]
        s = 0.0
        for k in range(n):
            s += xr[k]
        mu = s / n
        q = 0.0
        for k in range(n):
            d = xr[k] - mu
            q += d * d
        var = q / n
        if eps_outside:
            inv = 1.0 / (math.sqrt(var) + eps)
        else:
            inv = 1.0 / math.sqrt(var + eps)
        mean_out[r] = mu
        inv_out[r] = inv
        c0 = (r % rmod) * n
        if sdiv == 1:
            _affine_row(xr, orow, mu, inv, scale[c0:c0 + n], bias[c0:c0 + n])
        else:
            for seg in range(n // sdiv):
                ci = (c0 + seg * sdiv) // sdiv
                a = inv * scale[ci]
                b = bias[ci] - mu * a
                xs = xr[seg * sdiv:(seg + 1) * sdiv]
                os_ = orow[seg * sdiv:(seg + 1) * sdiv]
                for k in range(sdiv):
                    os_[k] = xs[k] * a + b


@njit(parallel=True)
def _channel_affine(x, out, channels, spatial, a, b):
    """``out = x * a[c] + b[c]`` for x of shape (N, C, spatial) (BatchNormalization)."""
    for r_ in prange(x.size // spatial):
        r = np.int64(r_)
        c = r % channels
        ac = a[c]
        bc = b[c]
        base = r * spatial
        for k in range(spatial):
            out[base + k] = x[base + k] * ac + bc


@njit(parallel=True)
def _lrn(x, out, channels, spatial, before, after, alpha_over_size, beta, bias):
    """Local response normalization across channels of x (N, C, spatial).

    ``square_sum[c] = sum(x[i]**2 for i in c - before .. c + after)`` (clipped to the channel
    range), ``out = x / (bias + alpha/size * square_sum) ** beta``, the sum and the power in
    float64. ``t ** beta`` through libm's ``pow`` is one scalar call per element (it was 80%
    of the kernel, 14 ms of GoogLeNet's 74 ms); the exponents in use (0.75 in AlexNet,
    GoogLeNet and CaffeNet; 0.5; 1) are taken with square roots and a division instead, which
    vectorize. Any other exponent keeps ``pow``.
    """
    rows = x.size // spatial
    nchunk = min(rows, 64)
    for ch in prange(nchunk):
        acc = np.empty(spatial)
        for r_ in range(ch * rows // nchunk, (ch + 1) * rows // nchunk):
            r = np.int64(r_)
            c = r % channels
            img = r - c  # first row of this image
            lo = max(0, c - before)
            hi = min(channels - 1, c + after)
            acc[:] = 0.0
            for i in range(lo, hi + 1):
                src = x[(img + i) * spatial:(img + i + 1) * spatial]
                for k in range(spatial):
                    v = np.float64(src[k])
                    acc[k] += v * v
            # row slices (not flat indices) let LLVM see the rows apart: 2x faster
            xs = x[r * spatial:(r + 1) * spatial]
            os = out[r * spatial:(r + 1) * spatial]
            if beta == 0.75:
                for k in range(spatial):
                    t = np.sqrt(bias + alpha_over_size * acc[k])
                    os[k] = xs[k] / (t * np.sqrt(t))
            elif beta == 0.5:
                for k in range(spatial):
                    os[k] = xs[k] / np.sqrt(bias + alpha_over_size * acc[k])
            elif beta == 1.0:
                for k in range(spatial):
                    os[k] = xs[k] / (bias + alpha_over_size * acc[k])
            else:
                for k in range(spatial):
                    os[k] = xs[k] / (bias + alpha_over_size * acc[k]) ** beta


# ----- outer × n × inner: ops along one axis ---------------------------------------------------
@njit(parallel=True)
def _softmax(x, out, outer, n, inner, log):
    """Softmax (or LogSoftmax when ``log``) along the middle axis of (outer, n, inner).

    The max is found with ``v > m``, which skips NaN; a NaN then poisons the sum through
    exp(NaN - m), so the whole slice is NaN (as onnxruntime). An all -inf slice gives
    -inf - -inf = NaN, also as onnxruntime.
    """
    nblk = (inner + _BLOCK - 1) // _BLOCK
    for t_ in prange(outer * nblk):
        t = np.int64(t_)
        o = t // nblk
        base = o * n * inner
        if inner == 1:
            m = -np.inf
            for k in range(n):
                if x[base + k] > m:  # noqa: PLR1730 (an explicit compare: NaN never wins)
                    m = x[base + k]
            s = 0.0
            for k in range(n):
                e = math.exp(x[base + k] - m)
                out[base + k] = e
                s += e
            if log:
                shift = m + math.log(s)
                for k in range(n):
                    out[base + k] = x[base + k] - shift
            else:
                inv = 1.0 / s
                for k in range(n):
                    out[base + k] *= inv
        else:
            j0 = (t % nblk) * _BLOCK
            w = min(_BLOCK, inner - j0)
            mx = np.full(w, -np.inf)
            sm = np.zeros(w)
            for k in range(n):
                row = base + k * inner + j0
                for j in range(w):
                    if x[row + j] > mx[j]:  # noqa: PLR1730 (as above)
                        mx[j] = x[row + j]
            for k in range(n):
                row = base + k * inner + j0
                for j in range(w):
                    e = math.exp(x[row + j] - mx[j])
                    out[row + j] = e
                    sm[j] += e
            for j in range(w):
                if log:
                    sm[j] = mx[j] + math.log(sm[j])
                else:
                    sm[j] = 1.0 / sm[j]
            for k in range(n):
                row = base + k * inner + j0
                for j in range(w):
                    if log:
                        out[row + j] = x[row + j] - sm[j]
                    else:
                        out[row + j] *= sm[j]


@njit(parallel=True)
def _hardmax(x, out, outer, n, inner):
    """1 at the first maximum along the middle axis of (outer, n, inner), 0 elsewhere.

    A NaN counts as the maximum (the first NaN wins), so that Hardmax is one-hot(ArgMax) with
    ArgMax's NumPy / onnx.reference semantics. (onnxruntime differs and is not self-consistent
    here: it can even return a slice with no 1 at all.)
    """
    nblk = (inner + _BLOCK - 1) // _BLOCK
    for t_ in prange(outer * nblk):
        t = np.int64(t_)
        o = t // nblk
        base = o * n * inner
        j0 = (t % nblk) * _BLOCK
        w = min(_BLOCK, inner - j0)
        best = np.zeros(w, np.int64)
        for j in range(w):
            col = base + j0 + j
            bv = x[col]
            if math.isnan(bv):
                continue
            for k in range(1, n):
                v = x[col + k * inner]
                if math.isnan(v):
                    best[j] = k
                    break
                if v > bv:
                    bv = v
                    best[j] = k
        for k in range(n):
            row = base + k * inner + j0
            for j in range(w):
                out[row + j] = 1 if best[j] == k else 0


@njit(parallel=True)
def _lp_normalize(x, out, outer, n, inner, p):
    """x / ||x||_p along the middle axis (p = 1 or 2); a zero norm gives 0 (as onnxruntime)."""
    nblk = (inner + _BLOCK - 1) // _BLOCK
    for t_ in prange(outer * nblk):
        t = np.int64(t_)
        o = t // nblk
        base = o * n * inner
        j0 = (t % nblk) * _BLOCK
        w = min(_BLOCK, inner - j0)
        acc = np.zeros(w)
        for k in range(n):
            row = base + k * inner + j0
            for j in range(w):
                v = x[row + j]
                acc[j] += abs(v) if p == 1 else v * v
        for j in range(w):
            norm = acc[j] if p == 1 else math.sqrt(acc[j])
            acc[j] = 0.0 if norm == 0 else 1.0 / norm
        for k in range(n):
            row = base + k * inner + j0
            for j in range(w):
                out[row + j] = x[row + j] * acc[j]


# ----- base class and parameter helper ---------------------------------------------------------
class _Param:
    """A parameter input (scale, bias, mean...) held contiguous in the compute dtype.

    A constant one is converted (and broadcast to ``shape``) once in ``prepare``; a computed
    one is copied into the same buffer at each invoke. Either way the Numba kernels always see
    one writable array type, whatever dtype or memory (a read-only file mapping) it came from.
    """

    def __init__(self, index: int, value: np.ndarray | None, shape: tuple[int, ...], dtype,
                 default: float = 0.0):
        self.index = index
        self.shape = shape
        self.buf = np.empty(_prod(shape), dtype)
        self.static = value is not None or index < 0
        if index < 0:
            self.buf.fill(default)
        elif value is not None:
            self.fill(value)

    def fill(self, value: np.ndarray) -> None:
        np.copyto(self.buf.reshape(self.shape), value, casting="unsafe")

    def get(self, inputs: list[np.ndarray | None]) -> np.ndarray:
        if not self.static:
            self.fill(inputs[self.index])
        return self.buf


class _FloatKernel(Kernel):
    """Float-only kernels with float16 routed through float32 scratch buffers."""

    def setup_io(self, x: TensorInfo) -> np.dtype:
        dt = np.dtype(x.dtype)
        if dt not in _FLOATS:
            raise self.error(
                f"input has dtype {dt}, which this op does not support (supported: float16, "
                "float32, float64)",
                DTypeError,
            )
        self._cdt = _F32 if dt == _F16 else dt
        if dt == _F16:
            self._scratch = (np.empty(x.size, _F32), np.empty(x.size, _F32))
        else:
            self._scratch = None
        return dt

    def flat_io(self, x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._scratch is None:
            return x.reshape(-1), _flat(out)
        xs, ys = self._scratch
        np.copyto(xs, x.reshape(-1))
        return xs, ys

    def finish_io(self, out: np.ndarray) -> None:
        if self._scratch is not None:
            np.copyto(_flat(out), self._scratch[1], casting="unsafe")

    def param(self, inputs, i: int, shape: tuple[int, ...], what: str,
              default: float | None = None) -> _Param:
        """Check optional input ``i`` broadcasts to ``shape`` and wrap it as a :class:`_Param`."""
        info = inputs[i] if i < len(inputs) else None
        if info is None:
            if default is None:
                raise self.error(f"required input {i} ({what}) is missing")
            return _Param(-1, None, shape, self._cdt, default)
        if np.dtype(info.dtype) not in _FLOATS:
            raise self.error(f"{what} (input {i}) has dtype {np.dtype(info.dtype)}; expected a "
                             "float type", DTypeError)
        got = tuple(info.shape)
        try:
            fits = len(got) <= len(shape) and broadcast_shapes(self.where(), got, shape) == shape
        except ShapeError:
            fits = False
        if not fits:
            raise self.error(f"{what} (input {i}) has shape {got}, expected {shape} (or a shape "
                             "that broadcasts to it)", ShapeError)
        return _Param(i, info.value, shape, self._cdt)


# ----- row normalizations ----------------------------------------------------------------------
class _RowNorm(_FloatKernel):
    """Shared invoke for kernels built on :func:`_normalize_rows`.

    ``prepare`` of a subclass sets ``_n`` (row length), ``_rmod``, ``_sdiv``, ``_eps``,
    ``_eps_outside`` and ``_mean``/``_inv`` (float32 per-row buffers, :meth:`row_stats`); its
    invoke passes the scale and bias arrays.
    """

    _eps_outside = False

    def run_rows(self, x: np.ndarray, out: np.ndarray, scale: np.ndarray,
                 bias: np.ndarray) -> None:
        if x.size == 0:
            return
        xf, of = self.flat_io(x, out)
        _normalize_rows(xf, of, self._n, scale, bias, self._rmod, self._sdiv, self._eps,
                        self._eps_outside, self._mean, self._inv)
        self.finish_io(out)

    def row_stats(self, rows: int) -> None:
        self._mean = np.empty(rows, _F32)
        self._inv = np.empty(rows, _F32)


class LayerNormalization(_RowNorm):
    """Normalize over dims ``axis..``; Scale and B broadcast to those dims.

    Optional outputs Mean and InvStdDev have shape ``X.shape[:axis] + (1,) * (rank - axis)`` and
    dtype float32 (``stash_type=1``, the only stash type NumPy can hold besides float64; the
    spec allows float32 and bfloat16).
    """

    def prepare(self, inputs):
        self.require_inputs(inputs, 2, 3)
        x = inputs[0]
        dt = self.setup_io(x)
        stash = int(self.attr("stash_type", 1))
        if stash != 1:
            raise self.error(f"stash_type {stash} is not supported (only 1, float32)")
        rank = len(x.shape)
        if rank == 0:
            raise self.error("input must have rank >= 1")
        axis = self.normalize_axis(int(self.attr("axis", -1)), rank)
        norm_shape = tuple(int(d) for d in x.shape[axis:])
        rows = _prod(x.shape[:axis])
        self._n = _prod(norm_shape)
        self._rmod, self._sdiv = 1, 1
        self._eps = float(self.attr("epsilon", 1e-5))
        self._scale = self.param(inputs, 1, norm_shape, "Scale")
        self._bias = self.param(inputs, 2, norm_shape, "B", default=0.0)
        self.row_stats(rows)
        stat_shape = tuple(x.shape[:axis]) + (1,) * (rank - axis)
        return [TensorInfo(tuple(x.shape), dt), TensorInfo(stat_shape, _F32),
                TensorInfo(stat_shape, _F32)]

    def invoke(self, inputs, outputs):
        x = inputs[0]
        if self._n == 0:
            self._mean.fill(np.nan)
            self._inv.fill(np.nan)
        else:
            self.run_rows(x, outputs[0], self._scale.get(inputs), self._bias.get(inputs))
        # Mean and InvStdDev are optional: the model may not use (or list) them.
        for buf, arr in zip((self._mean, self._inv), outputs[1:3], strict=False):
            if arr is not None:
                np.copyto(_flat(arr), buf)


class InstanceNormalization(_RowNorm):
    """Per (batch, channel) normalization over the spatial dims; scale and B per channel."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 3, 3)
        x = inputs[0]
        dt = self.setup_io(x)
        if len(x.shape) < 2:
            raise self.error(f"input must be (N, C, ...), got shape {tuple(x.shape)}", ShapeError)
        channels = int(x.shape[1])
        self._n = _prod(x.shape[2:])
        self._rmod, self._sdiv = channels, self._n
        self._eps = float(self.attr("epsilon", 1e-5))
        self._scale = self.param(inputs, 1, (channels,), "scale")
        self._bias = self.param(inputs, 2, (channels,), "B")
        self.row_stats(_prod(x.shape[:2]))
        return [TensorInfo(tuple(x.shape), dt)]

    def invoke(self, inputs, outputs):
        self.run_rows(inputs[0], outputs[0], self._scale.get(inputs), self._bias.get(inputs))


class GroupNormalization(_RowNorm):
    """Opset 21: statistics per (batch, group), scale and bias per channel.

    Opset 18 had scale and bias per group; a graph of that version with (G,)-shaped parameters
    is accepted too (each group's value is repeated over its channels).
    """

    def prepare(self, inputs):
        self.require_inputs(inputs, 3, 3)
        x = inputs[0]
        dt = self.setup_io(x)
        if len(x.shape) < 2:
            raise self.error(f"input must be (N, C, ...), got shape {tuple(x.shape)}", ShapeError)
        groups = self.attr("num_groups")
        if groups is None:
            raise self.error("attribute num_groups is required")
        groups = int(groups)
        channels = int(x.shape[1])
        if groups <= 0 or channels % groups:
            raise self.error(f"num_groups {groups} must be positive and divide the "
                             f"{channels} channels")
        stash = int(self.attr("stash_type", 1))
        if stash != 1:
            raise self.error(f"stash_type {stash} is not supported (only 1, float32)")
        spatial = _prod(x.shape[2:])
        self._n = channels // groups * spatial
        self._rmod, self._sdiv = groups, spatial
        self._eps = float(self.attr("epsilon", 1e-5))
        per_group = (0 < self.op.version < 21 and groups != channels
                     and all(i.shape is not None and tuple(i.shape) == (groups,)
                             for i in inputs[1:3]))
        pshape = (groups,) if per_group else (channels,)
        self._scale = self.param(inputs, 1, pshape, "scale")
        self._bias = self.param(inputs, 2, pshape, "bias")
        # Opset-18 per-group parameters are expanded to the per-channel form the kernel uses.
        self._expanded = (np.empty((groups, channels // groups), self._cdt),
                          np.empty((groups, channels // groups), self._cdt)) if per_group else None
        self.row_stats(int(x.shape[0]) * groups)
        return [TensorInfo(tuple(x.shape), dt)]

    def invoke(self, inputs, outputs):
        scale, bias = self._scale.get(inputs), self._bias.get(inputs)
        if self._expanded is not None:
            sc, bc = self._expanded
            np.copyto(sc, scale[:, None])
            np.copyto(bc, bias[:, None])
            scale, bias = sc.reshape(-1), bc.reshape(-1)
        self.run_rows(inputs[0], outputs[0], scale, bias)


class MeanVarianceNormalization(_RowNorm):
    """``(x - mean) / (std + 1e-9)`` over ``axes`` (default [0, 2, 3]), as the ONNX function.

    The reduced axes are moved last (a transposed copy into scratch) unless they already are.
    """

    _eps_outside = True

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        dt = self.setup_io(x)
        rank = len(x.shape)
        raw = self.attr("axes", [0, 2, 3])
        axes = [self.normalize_axis(int(a), rank) for a in raw]
        if len(set(axes)) != len(axes):
            raise self.error(f"axes {list(raw)} name the same axis twice")
        axes = sorted(axes)
        kept = [d for d in range(rank) if d not in axes]
        perm = tuple(kept + axes)
        self._perm = None if perm == tuple(range(rank)) else perm
        self._n = _prod(x.shape[d] for d in axes)
        self._rmod, self._sdiv = 1, max(self._n, 1)
        self._eps = 1e-9
        self._scale = _Param(-1, None, (1,), self._cdt, 1.0)
        self._bias = _Param(-1, None, (1,), self._cdt, 0.0)
        self.row_stats(_prod(x.shape[d] for d in kept))
        if self._perm is not None:
            pshape = tuple(x.shape[d] for d in perm)
            self._tin = np.empty(pshape, dt)
            self._tout = np.empty(pshape, dt)
        return [TensorInfo(tuple(x.shape), dt)]

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        scale, bias = self._scale.buf, self._bias.buf
        if self._perm is None:
            self.run_rows(x, out, scale, bias)
            return
        np.copyto(self._tin, x.transpose(self._perm))
        self.run_rows(self._tin, self._tout, scale, bias)
        np.copyto(out.transpose(self._perm), self._tout)


# ----- per-channel ops -------------------------------------------------------------------------
class BatchNormalization(_FloatKernel):
    """Inference: ``y = (x - mean) / sqrt(var + eps) * scale + B`` per channel (axis 1).

    Folded to ``y = x * a[c] + b[c]`` with ``a = scale / sqrt(var + eps)`` and
    ``b = B - mean * a``, computed in float64 once in ``prepare`` when the parameters are
    constant (the usual case), otherwise at each invoke.
    """

    def prepare(self, inputs):
        self.require_inputs(inputs, 5, 5)
        if int(self.attr("training_mode", 0)) != 0:
            raise self.error("training_mode=1 is not supported: edgert runs inference only "
                             "(export the model in eval mode)")
        x = inputs[0]
        dt = self.setup_io(x)
        if len(x.shape) < 2:
            raise self.error(f"input must be (N, C, ...), got shape {tuple(x.shape)}", ShapeError)
        channels = int(x.shape[1])
        self._channels = channels
        self._spatial = _prod(x.shape[2:])
        eps = float(self.attr("epsilon", 1e-5))
        names = ("scale", "B", "input_mean", "input_var")
        params = [self._check_channel_param(inputs, i, channels, names[i - 1])
                  for i in (1, 2, 3, 4)]
        self._eps = eps
        self._a = np.empty(channels, self._cdt)
        self._b = np.empty(channels, self._cdt)
        self._static = all(p.value is not None for p in params)
        if self._static:
            self._fold(*(p.value for p in params))
        return [TensorInfo(tuple(x.shape), dt)]

    def _check_channel_param(self, inputs, i, channels, what) -> TensorInfo:
        info = inputs[i]
        if np.dtype(info.dtype) not in _FLOATS:
            raise self.error(f"{what} (input {i}) has dtype {np.dtype(info.dtype)}; expected a "
                             "float type", DTypeError)
        if tuple(info.shape) != (channels,):
            raise self.error(f"{what} (input {i}) has shape {tuple(info.shape)}, expected "
                             f"({channels},)", ShapeError)
        return info

    def _fold(self, scale, bias, mean, var) -> None:
        a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + self._eps)
        np.copyto(self._a, a, casting="unsafe")
        np.copyto(self._b, np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * a,
                  casting="unsafe")

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if not self._static:
            self._fold(*inputs[1:5])
        if x.size == 0:
            return
        xf, of = self.flat_io(x, out)
        _channel_affine(xf, of, self._channels, self._spatial, self._a, self._b)
        self.finish_io(out)


class LRN(_FloatKernel):
    """Local response normalization across channels (ONNX's window: ``c - floor((size-1)/2)``
    to ``c + ceil((size-1)/2)``)."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        dt = self.setup_io(x)
        if len(x.shape) < 2:
            raise self.error(f"input must be (N, C, ...), got shape {tuple(x.shape)}", ShapeError)
        size = self.attr("size")
        if size is None or int(size) < 1:
            raise self.error(f"attribute size must be a positive integer, got {size!r}")
        size = int(size)
        self._before = (size - 1) // 2
        self._after = size - 1 - self._before  # ceil((size - 1) / 2)
        self._alpha = float(self.attr("alpha", 1e-4)) / size
        self._beta = float(self.attr("beta", 0.75))
        self._bias = float(self.attr("bias", 1.0))
        self._channels = int(x.shape[1])
        self._spatial = _prod(x.shape[2:])
        return [TensorInfo(tuple(x.shape), dt)]

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if x.size == 0:
            return
        xf, of = self.flat_io(x, out)
        _lrn(xf, of, self._channels, self._spatial, self._before, self._after, self._alpha,
             self._beta, self._bias)
        self.finish_io(out)


# ----- along one axis --------------------------------------------------------------------------
class _AxisKernel(_FloatKernel):
    """Ops along ``axis``, viewed as (outer, n, inner)."""

    DEFAULT_AXIS = -1
    COERCE_2D_BEFORE = 0  # opsets below this flatten to 2-D at axis (Softmax family: 13)

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        dt = self.setup_io(x)
        shape = tuple(int(d) for d in x.shape)
        rank = len(shape)
        old = 0 < self.op.version < self.COERCE_2D_BEFORE
        default = 1 if old else self.DEFAULT_AXIS
        if rank == 0:
            raise self.error("input must have rank >= 1")
        axis = self.normalize_axis(int(self.attr("axis", default)), rank)
        if old:
            # Opset < 13: the input is coerced to 2-D [prod(shape[:axis]), prod(shape[axis:])]
            # and the op runs along the second dim, i.e. over all of dims axis.. at once.
            self._dims = (_prod(shape[:axis]), _prod(shape[axis:]), 1)
        else:
            self._dims = (_prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:]))
        self.prepare_more()
        return [TensorInfo(shape, dt)]

    def prepare_more(self) -> None:
        pass

    def invoke(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if x.size == 0:
            return
        xf, of = self.flat_io(x, out)
        self.run(xf, of, *self._dims)
        self.finish_io(out)

    def run(self, x, out, outer, n, inner) -> None:
        raise NotImplementedError


@njit(parallel=True)
def _softmax_rows_f32(x, out, outer, n, log):
    """Softmax (LogSoftmax when ``log``) of float32 rows (the last axis: attention scores,
    logits): the shifted values exponentiated by vmath's vectorized exp (a libm call per
    element made a 12 x 128 x 128 attention softmax 12x slower than onnxruntime), summed in
    float64. NaN and -inf as :func:`_softmax`. (The shifted row goes through a scratch row:
    exp_row in place does not vectorize.)"""
    chunk = 64
    for c in prange((outer + chunk - 1) // chunk):
        shifted = np.empty(n, np.float32)
        for o in range(c * chunk, min(outer, (c + 1) * chunk)):
            base = o * n
            xr = x[base:base + n]  # (views indexed from 0: see _normalize_rows)
            row = out[base:base + n]
            m = np.float32(-np.inf)
            for k in range(n):
                if xr[k] > m:  # noqa: PLR1730 (an explicit compare: NaN never wins)
                    m = xr[k]
            for k in range(n):
                shifted[k] = xr[k] - m
            exp_row(row, shifted, n)
            s = 0.0
            for k in range(n):
                s += row[k]
            if log:
                shift = np.float32(m + math.log(s))
                for k in range(n):
                    row[k] = xr[k] - shift
            else:
                inv = np.float32(1.0 / s)
                for k in range(n):
                    row[k] *= inv


# Small inputs (a classifier's logits) run serially: a parallel launch costs more than the work.
_softmax_serial = serial_twin(_softmax)
_softmax_rows_f32_serial = serial_twin(_softmax_rows_f32)


class Softmax(_AxisKernel):
    traits = OpTraits(int8="softmax")

    COERCE_2D_BEFORE = 13

    def run(self, x, out, outer, n, inner):
        small = x.size < PARALLEL_MIN_WORK
        if inner == 1 and x.dtype == np.float32:
            (_softmax_rows_f32_serial if small else _softmax_rows_f32)(x, out, outer, n, False)
            return
        fn = _softmax_serial if small else _softmax
        fn(x, out, outer, n, inner, False)


class LogSoftmax(_AxisKernel):
    COERCE_2D_BEFORE = 13

    def run(self, x, out, outer, n, inner):
        small = x.size < PARALLEL_MIN_WORK
        if inner == 1 and x.dtype == np.float32:
            (_softmax_rows_f32_serial if small else _softmax_rows_f32)(x, out, outer, n, True)
            return
        fn = _softmax_serial if small else _softmax
        fn(x, out, outer, n, inner, True)


class Hardmax(_AxisKernel):
    COERCE_2D_BEFORE = 13

    def run(self, x, out, outer, n, inner):
        _hardmax(x, out, outer, n, inner)


class LpNormalization(_AxisKernel):
    def prepare_more(self):
        p = int(self.attr("p", 2))
        if p not in (1, 2):
            raise self.error(f"attribute p must be 1 or 2, got {p}")
        self._p = p

    def run(self, x, out, outer, n, inner):
        _lp_normalize(x, out, outer, n, inner, self._p)


def register(reg: KernelRegistry) -> None:
    """Add the normalization kernels to ``reg`` (all opset versions).

    Softmax, LogSoftmax and Hardmax implement both semantics themselves: opset < 13 coerces
    the input to 2-D at ``axis`` (default 1), opset >= 13 works along ``axis`` (default -1).
    """
    for op_type, kernel in (
        ("BatchNormalization", BatchNormalization),
        ("InstanceNormalization", InstanceNormalization),
        ("LayerNormalization", LayerNormalization),
        ("GroupNormalization", GroupNormalization),
        ("LRN", LRN),
        ("LpNormalization", LpNormalization),
        ("MeanVarianceNormalization", MeanVarianceNormalization),
        ("Softmax", Softmax),
        ("LogSoftmax", LogSoftmax),
        ("Hardmax", Hardmax),
    ):
        reg.add(op_type, kernel)


__all__ = ["register"]
