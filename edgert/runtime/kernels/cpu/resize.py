"""CPU kernels: Resize (ONNX opset 11..19 semantics; older Upsample forms are normalized by the
importer to Resize's inputs ``(X, roi, scales, sizes)``).

How it works
------------
Resize is separable: every output element is a weighted sum over a small window of source
positions on each resized axis, and the weights of an axis depend only on that axis. So
``prepare`` turns every resized axis into a table — for output coordinate ``o``, ``T`` source
indices ``idx[o, :]`` (already clamped into range) and weights ``w[o, :]`` — and ``invoke`` only
gathers and multiplies:

* nearest: ``T = 1``, weight 1 (a pure gather, exact for every dtype);
* linear: ``T = 2``; cubic: ``T = 4`` (Keys kernel with ``cubic_coeff_a``; ``exclude_outside``
  drops and renormalizes taps outside the input);
* antialias (linear/cubic): the filter is stretched by ``1 / scale`` when downscaling, so
  ``T = 2 * ceil(support) + 1`` (Pillow's scheme, which onnxruntime follows).

The source coordinate of output ``o`` comes from ``coordinate_transformation_mode`` and is computed
in float32 with the same operation order as onnxruntime: nearest-neighbour picks flip at halves,
so a float64 evaluation would pick a different pixel on some outputs. For the same reason a
coordinate within 1e-6 of a half counts as the half in the ``round_prefer_*`` modes (the float32
value of 2 / (4/7) is 3.4999998, and "prefer ceil" must still give 4).

Where onnxruntime departs from the specification, edgert follows the specification (as the ONNX
reference implementation does): an axis whose scale is not 1 is resampled even if its length does
not change (onnxruntime copies the input when the whole output shape equals the input shape), and
``tf_crop_and_resize`` applies the roi on axes of scale 1 too.

When only the last two axes change (NCHW images, or any rank >= 2 with the outer axes untouched)
invoke runs a parallel Numba kernel on the tensor viewed as ``(B, H, W)``: a gather for nearest,
two separable passes (along W into a scratch buffer planned at prepare, then along H) for linear
and cubic. Anything else (resizing N or C, 3-D volumes, ...) applies the tables axis by axis with
NumPy.

Integer outputs of linear/cubic are rounded half to even and saturated to the type's range, like
the ONNX reference (onnxruntime truncates on some paths and rounds on others).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu.shape import ShapeKernel
from edgert.runtime.registry import KernelRegistry, OpTraits, TensorInfo

MODES = ("nearest", "linear", "cubic")
COORD_MODES = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
    "tf_crop_and_resize", "tf_half_pixel_for_nn",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
POLICIES = ("stretch", "not_larger", "not_smaller")

_F32 = np.float32

# Nearest is a pure gather, so the Numba kernel runs on the raw bits: every dtype is viewed as
# the unsigned integer of its width, and four compilations cover bool, every int and float16/32/64.
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


# ----- Numba kernels ------------------------------------------------------------------------------
@njit(parallel=True)
def _nearest_hw(x, hidx, widx, out):  # pragma: no cover - compiled
    """out[b, i, j] = x[b, hidx[i], widx[j]]; indices were clamped into range at prepare."""
    nb, oh, ow = out.shape
    for r in prange(nb * oh):
        b = r // oh
        i = r - b * oh
        h = hidx[i]
        for j in range(ow):
            out[b, i, j] = x[b, h, widx[j]]


@njit(parallel=True)
def _separable_hw(x, widx, ww, hidx, hw, tmp, out):  # pragma: no cover - compiled
    """Two passes: along W into ``tmp`` (nb, H, OW), then along H into ``out`` (nb, OH, OW).

    Indices were clamped into range at prepare. The second pass accumulates whole rows so that
    its inner loop is contiguous and vectorizes.
    """
    nb, h, _ = x.shape
    ow, tw = ww.shape
    oh, th = hw.shape
    for r in prange(nb * h):
        b = r // h
        i = r - b * h
        for j in range(ow):
            acc = 0.0
            for t in range(tw):
                acc += ww[j, t] * x[b, i, widx[j, t]]
            tmp[b, i, j] = acc
    for r in prange(nb * oh):
        b = r // oh
        i = r - b * oh
        for j in range(ow):
            out[b, i, j] = 0.0
        for t in range(th):
            wt = hw[i, t]
            if wt != 0.0:
                src = hidx[i, t]
                for j in range(ow):
                    out[b, i, j] += wt * tmp[b, src, j]


# ----- per-axis tables ----------------------------------------------------------------------------
class _Axis:
    """Resampling table of one axis: ``idx`` / ``w`` are (out_len, T); ``outside`` flags the
    outputs that take ``extrapolation_value`` (tf_crop_and_resize), or is None."""

    def __init__(self, idx: np.ndarray, w: np.ndarray | None, outside: np.ndarray | None):
        self.idx = np.ascontiguousarray(idx, dtype=np.int64)
        self.w = w
        self.outside = outside if outside is not None and outside.any() else None

    def is_identity(self, length: int) -> bool:
        n = self.idx.shape[0]
        if n != length or self.outside is not None:
            return False
        if n == 0:
            return True
        own = self.idx == np.arange(n)[:, None]
        if self.w is None:
            return bool(own.all())
        w = self.w.astype(np.float64)
        return bool((np.where(own, w, 0.0).sum(1) == 1.0).all()
                    and (np.where(own, 0.0, np.abs(w)).sum(1) == 0.0).all())


def _source_coords(ctm: str, n_out: int, n_in: int, scale: np.float32, roi: tuple[float, float],
                   from_scales: bool = False) -> np.ndarray:
    """Source coordinate of every output index, in float32 with onnxruntime's operation order.

    ``from_scales``: the output length came from a ``scales`` input. align_corners then maps the
    corners of the *unrounded* resized length ``scale * n_in`` (ONNX's ``output_width``, as the
    specification and its reference implementation do), not of ``n_out = floor(scale * n_in)``:
    downsampling 4 -> 2 by 0.6 samples 0 and 3 / 1.4. onnxruntime uses ``n_out`` there and fails
    test_resize_downsample_scales_{linear,cubic}_align_corners.
    """
    y = np.arange(n_out, dtype=_F32)
    s = _F32(scale)
    half = _F32(0.5)
    lo, li = _F32(n_out), _F32(n_in)
    if ctm == "asymmetric":
        return y / s
    if ctm == "half_pixel":
        return (y + half) / s - half
    if ctm == "tf_half_pixel_for_nn":
        return (y + half) / s
    if ctm == "pytorch_half_pixel":
        return (y + half) / s - half if n_out > 1 else np.zeros(n_out, _F32)
    if ctm == "align_corners":
        if from_scales:
            # float64: the exact product of the float32 scale and the length (2.4 is stored as
            # 2.4000001, so 5 -> 12.0000005 and row 11 maps to 3.9999998, not 4)
            length = float(s) * n_in
            if length == 1:
                return np.zeros(n_out, _F32)
            return (np.arange(n_out) * float(n_in - 1) / (length - 1)).astype(_F32)
        if n_out == 1:
            return np.zeros(1, _F32)
        return y * (li - 1) / (lo - 1)
    if ctm == "half_pixel_symmetric":
        adjustment = lo / (s * li)
        offset = (li / 2) * (1 - adjustment)
        return (offset + (y.astype(np.float64) + 0.5) / s - 0.5).astype(_F32)
    # tf_crop_and_resize
    start, end = _F32(roi[0]), _F32(roi[1])
    if n_out > 1:
        return start * (li - 1) + (y * (end - start) * (li - 1)) / (lo - 1)
    return np.full(n_out, 0.5 * (float(start) + float(end)) * (n_in - 1), dtype=_F32)


# A coordinate within this distance of a half is a tie for the round_prefer_* modes. The float32
# coordinate of an exact half often lands an ulp or two away (2 / (4/7.) is 3.4999998), and
# onnxruntime's rounding absorbs that the same way, so "prefer floor/ceil" decides exact halves.
_TIE = 1e-6


def _nearest_table(x: np.ndarray, n_in: int, nearest_mode: str) -> np.ndarray:
    v = x.astype(np.float64)
    fl = np.floor(v)
    if nearest_mode == "floor":
        i = fl
    elif nearest_mode == "ceil":
        i = np.ceil(v)
    else:
        tie = np.abs((v - fl) - 0.5) <= _TIE
        nearest = np.floor(v + 0.5)
        i = np.where(tie, fl + 1 if nearest_mode == "round_prefer_ceil" else fl, nearest)
    return np.clip(i, 0, n_in - 1).astype(np.int64)[:, None]


def _linear_table(x: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    xc = np.clip(x, _F32(0), _F32(n_in - 1))
    i1 = np.minimum(xc.astype(np.int64), n_in - 1)
    i2 = np.minimum(i1 + 1, n_in - 1)
    d1 = np.abs(xc - i1.astype(_F32))
    d2 = np.abs(xc - i2.astype(_F32))
    same = i1 == i2
    w = np.stack([np.where(same, _F32(0.5), d2), np.where(same, _F32(0.5), d1)], axis=1)
    return np.stack([i1, i2], axis=1), w


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fraction t."""
    t = t.astype(np.float64)
    p, q = t + 1, 1 - t
    r = 2 - t
    return np.stack([
        ((a * p - 5 * a) * p + 8 * a) * p - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * q - (a + 3)) * q * q + 1,
        ((a * r - 5 * a) * r + 8 * a) * r - 4 * a,
    ], axis=1)


def _cubic_table(x: np.ndarray, n_in: int, a: float, exclude_outside: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    v = x.astype(np.float64)
    base = np.floor(v)
    w = _cubic_weights(v - base, a)
    idx = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, n_in - 1), w


def _filter(mode: str, v: np.ndarray, a: float) -> np.ndarray:
    v = np.abs(v)
    if mode == "linear":
        return np.where(v < 1, 1 - v, 0.0)
    return np.where(v < 1, ((a + 2) * v - (a + 3)) * v * v + 1,
                    np.where(v < 2, (((v - 5) * v + 8) * v - 4) * a, 0.0))


def _antialias_table(x: np.ndarray, n_in: int, scale: float, mode: str, a: float,
                     exclude_outside: bool, identity: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pillow-style window: the filter (support 2 for linear, 4 for cubic) is stretched by
    ``1 / scale`` when downscaling and normalized to sum 1. Taps outside the input are dropped
    (``exclude_outside``) or folded onto the edge pixel (clamped index)."""
    n_out = x.shape[0]
    support_size = 2.0 if mode == "linear" else 4.0
    inv = 1.0 / scale
    support = support_size * 0.5 * inv if inv >= 1 else support_size * 0.5
    inv_scale = 1.0 / inv if inv >= 1 else 1.0
    window = math.ceil(support) * 2 + 1
    center = 0.5 + (np.arange(n_out, dtype=np.float64) if identity else x.astype(np.float64))
    lo = np.floor(center - support + 0.5).astype(np.int64)
    hi = np.floor(center + support + 0.5).astype(np.int64)
    hi = lo + np.clip(hi - lo, 0, window)
    if exclude_outside:
        lo, hi = np.clip(lo, 0, n_in), np.clip(hi, 0, n_in)
    taps = lo[:, None] + np.arange(window)[None, :]
    w = _filter(mode, (taps - center[:, None] + 0.5) * inv_scale, a)
    w = np.where(taps < hi[:, None], w, 0.0)
    total = w.sum(1, keepdims=True)
    w = w / np.where(total == 0, 1.0, total)
    return np.clip(taps, 0, n_in - 1), w


# ----- the kernel ---------------------------------------------------------------------------------
class Resize(ShapeKernel):
    """Resize: nearest / linear / cubic over any axes, by ``scales`` or ``sizes``.

    Supports every coordinate_transformation_mode (half_pixel, half_pixel_symmetric,
    pytorch_half_pixel, align_corners, asymmetric, tf_crop_and_resize with ``roi`` and
    ``extrapolation_value``, and the deprecated tf_half_pixel_for_nn), every nearest_mode,
    ``cubic_coeff_a``, ``exclude_outside``, ``antialias``, ``axes`` and
    ``keep_aspect_ratio_policy``. When scales, sizes or roi are computed at run time the output
    shape is only known at invoke.
    """

    traits = OpTraits(int8="move")

    foldable = False  # real compute, not shape arithmetic

    def _attrs(self) -> None:
        self._mode = self.str_attr("mode", "nearest")
        self._ctm = self.str_attr("coordinate_transformation_mode", "half_pixel")
        self._nearest_mode = self.str_attr("nearest_mode", "round_prefer_floor")
        self._policy = self.str_attr("keep_aspect_ratio_policy", "stretch")
        for value, allowed, what in (
            (self._mode, MODES, "mode"),
            (self._ctm, COORD_MODES, "coordinate_transformation_mode"),
            (self._nearest_mode, NEAREST_MODES, "nearest_mode"),
            (self._policy, POLICIES, "keep_aspect_ratio_policy"),
        ):
            if value not in allowed:
                raise self.error(f"{what} {value!r} is not one of {', '.join(allowed)}")
        self._a = float(self.attr("cubic_coeff_a", -0.75))
        self._exclude = bool(int(self.attr("exclude_outside", 0)))
        self._antialias = bool(int(self.attr("antialias", 0))) and self._mode != "nearest"
        self._extrapolation = float(self.attr("extrapolation_value", 0.0))

    def plan(self, inputs):
        self.require_inputs(inputs, 1, 4)
        self._attrs()
        x = inputs[0]
        dt = np.dtype(x.dtype)
        r = len(x.shape)
        if dt.kind == "O" or (dt.kind == "b" and self._mode != "nearest"):
            raise self.error(f"{self._mode} resize of {dt} tensors is not supported", DTypeError)
        if dt.kind not in "biuf":
            raise self.error(f"input dtype {dt} is not supported", DTypeError)
        axes_attr = self.attr("axes", None)
        axes = list(range(r)) if axes_attr is None else self.axes_list(
            [int(a) for a in axes_attr], r)

        scales_v = self.param(inputs, 2)
        sizes_v = self.param(inputs, 3)
        if scales_v is not None and scales_v.size == 0:
            scales_v = None
        if sizes_v is not None and sizes_v.size == 0:
            sizes_v = None
        if (scales_v is None) == (sizes_v is None):
            raise self.error("exactly one of the 'scales' and 'sizes' inputs must be given")
        in_shape = tuple(x.shape)
        out_shape = list(in_shape)
        scales = [_F32(1)] * r
        self._from_scales = scales_v is not None
        if scales_v is not None:
            if scales_v.dtype.kind != "f":
                raise self.error(f"scales must be float, got {scales_v.dtype}", DTypeError)
            vals = [_F32(v) for v in scales_v.reshape(-1).tolist()]
            if len(vals) != len(axes):
                raise self.error(f"scales has {len(vals)} values, expected {len(axes)} "
                                 f"(input shape {in_shape}, axes {axes})", ShapeError)
            for a, s in zip(axes, vals):
                if not s > 0 or not math.isfinite(s):
                    raise self.error(f"scales must be finite and > 0, got {vals}")
                scales[a] = s
                out_shape[a] = math.floor(_F32(s) * _F32(in_shape[a]))
        else:
            vals = self.int_list(sizes_v, "sizes")
            if len(vals) != len(axes):
                raise self.error(f"sizes has {len(vals)} values, expected {len(axes)} "
                                 f"(input shape {in_shape}, axes {axes})", ShapeError)
            if any(v < 0 for v in vals):
                raise self.error(f"sizes must be >= 0, got {vals}", ShapeError)
            for a, n in zip(axes, vals):
                if in_shape[a] == 0 and n != 0:
                    raise self.error(f"axis {a} has size 0 and cannot be resized to {n}",
                                     ShapeError)
                scales[a] = _F32(1) if in_shape[a] == 0 else _F32(n) / _F32(in_shape[a])
                out_shape[a] = n
            if self._policy != "stretch":
                pick = min if self._policy == "not_larger" else max
                common = pick(scales[a] for a in axes)
                for a in axes:
                    scales[a] = common
                    out_shape[a] = math.floor(float(_F32(common) * _F32(in_shape[a])) + 0.5)

        # the per-axis tables and the fast path's buffers below grow with the output: refuse an
        # output past max_alloc_bytes before building them
        self.check_alloc(tuple(out_shape), dt)
        roi = [(0.0, 1.0)] * r
        if self._ctm == "tf_crop_and_resize":
            roi_v = self.param(inputs, 1)
            if roi_v is None or roi_v.size == 0:
                raise self.error("tf_crop_and_resize needs the 'roi' input")
            rv = roi_v.reshape(-1).astype(np.float64).tolist()
            if len(rv) != 2 * len(axes):
                raise self.error(f"roi has {len(rv)} values, expected {2 * len(axes)} "
                                 f"(starts and ends for axes {axes})", ShapeError)
            for k, a in enumerate(axes):
                roi[a] = (rv[k], rv[k + len(axes)])

        tables: dict[int, _Axis] = {}
        for a in axes:
            if in_shape[a] == 0 or out_shape[a] == 0:
                continue
            t = self._table(in_shape[a], out_shape[a], scales[a], roi[a])
            if not t.is_identity(in_shape[a]):
                tables[a] = t
        self._tables = tables
        self._in_shape = in_shape
        self._out_shape = tuple(out_shape)
        self._fast = bool(tables) and r >= 2 and set(tables) <= {r - 2, r - 1}
        if self._fast:
            self._prepare_fast(dt)
        return [TensorInfo(self._out_shape, dt)]

    def _table(self, n_in: int, n_out: int, scale: np.float32, roi: tuple[float, float]) -> _Axis:
        x = _source_coords(self._ctm, n_out, n_in, scale, roi, self._from_scales)
        outside = None
        if self._ctm == "tf_crop_and_resize":
            outside = (x < 0) | (x > n_in - 1)
        if self._mode == "nearest":
            return _Axis(_nearest_table(x, n_in, self._nearest_mode), None, outside)
        if self._antialias:
            idx, w = _antialias_table(x, n_in, float(scale), self._mode, self._a, self._exclude,
                                      identity=scale == 1)
        elif self._mode == "linear":
            idx, w = _linear_table(x, n_in)
        else:
            idx, w = _cubic_table(x, n_in, self._a, self._exclude)
        return _Axis(idx, w, outside)

    # ----- fast (B, H, W) path ------------------------------------------------------------------
    def _prepare_fast(self, dt: np.dtype) -> None:
        r = len(self._in_shape)
        h, w = self._in_shape[-2:]
        oh, ow = self._out_shape[-2:]
        nb = int(np.prod(self._in_shape[:-2], dtype=np.int64))
        self._hw = (nb, h, w, oh, ow)
        th = self._tables.get(r - 2) or _Axis(np.arange(h)[:, None], None, None)
        tw = self._tables.get(r - 1) or _Axis(np.arange(w)[:, None], None, None)
        self._th, self._tw = th, tw
        if self._mode == "nearest":
            self._hidx = np.ascontiguousarray(th.idx[:, 0])
            self._widx = np.ascontiguousarray(tw.idx[:, 0])
            return
        # float64 data computes in float64, everything else in float32 (as onnxruntime does).
        cdt = np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)
        self._cdt = cdt

        def weights(t: _Axis) -> np.ndarray:
            if t.w is None:
                return np.ones(t.idx.shape, cdt)
            return np.ascontiguousarray(t.w, dtype=cdt)

        self._ww, self._hwt = weights(tw), weights(th)
        self._tmp = np.empty((nb, h, ow), cdt)
        self._xc = None if dt == cdt else np.empty((nb, h, w), cdt)
        self._oc = None if dt == cdt else np.empty((nb, oh, ow), cdt)

    def _run_fast(self, x: np.ndarray, out: np.ndarray) -> None:
        nb, h, w, oh, ow = self._hw
        x3 = np.ascontiguousarray(x).reshape(nb, h, w)
        direct = out.flags.c_contiguous
        o3 = out.reshape(nb, oh, ow) if direct else np.empty((nb, oh, ow), out.dtype)
        if self._mode == "nearest":
            bits = _BITS[x3.dtype.itemsize]
            _nearest_hw(x3.view(bits), self._hidx, self._widx, o3.view(bits))
        else:
            xin = x3
            if self._xc is not None:
                np.copyto(self._xc, x3, casting="unsafe")
                xin = self._xc
            dst = o3 if self._oc is None else self._oc
            _separable_hw(xin, self._tw.idx, self._ww, self._th.idx, self._hwt, self._tmp, dst)
            if self._oc is not None:
                _store(o3, self._oc)
        for axis, t in ((1, self._th), (2, self._tw)):
            if t.outside is not None:
                index = [slice(None)] * 3
                index[axis] = t.outside
                o3[tuple(index)] = self._extrapolation
        if not direct:
            out[...] = o3.reshape(out.shape)

    # ----- general path -------------------------------------------------------------------------
    def _run_general(self, x: np.ndarray, out: np.ndarray) -> None:
        cur = x
        if self._mode != "nearest":
            cur = x.astype(np.float64)
        for axis in sorted(self._tables):
            t = self._tables[axis]
            if t.w is None:
                cur = np.take(cur, t.idx[:, 0], axis=axis)
            else:
                g = np.take(cur, t.idx, axis=axis)  # the axis becomes (out_len, T)
                shape = [1] * g.ndim
                shape[axis], shape[axis + 1] = t.w.shape
                cur = (g * t.w.reshape(shape)).sum(axis=axis + 1)
            if t.outside is not None:
                index = [slice(None)] * cur.ndim
                index[axis] = t.outside
                cur[tuple(index)] = self._extrapolation
        if self._mode == "nearest":
            out[...] = cur
        else:
            _store(out, cur)

    def run(self, inputs, outputs):
        x, out = inputs[0], outputs[0]
        if out.size == 0:
            return
        if not self._tables:
            np.copyto(out, x)
        elif self._fast:
            self._run_fast(x, out)
        else:
            self._run_general(x, out)


def _store(out: np.ndarray, values: np.ndarray) -> None:
    """Write interpolated values into ``out``: integers rounded half to even and saturated."""
    if out.dtype.kind in "iu":
        info = np.iinfo(out.dtype)
        np.copyto(out, np.clip(np.rint(values), info.min, info.max), casting="unsafe")
    else:
        np.copyto(out, values, casting="unsafe")


def register(reg: KernelRegistry) -> None:
    reg.add("Resize", Resize)
