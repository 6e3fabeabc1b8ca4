"""Sampling and geometry operators: GridSample, AffineGrid, RoiAlign, DeformConv, Col2Im,
CenterCropPad.

The interpolating kernels (GridSample, RoiAlign, DeformConv's column build) run in Numba and
accumulate in float64 whatever the input's float type, then round once into the output; Col2Im's
scatter-add sums float32 data in float32 (a pixel receives at most prod(block_shape) terms).
GridSample's cubic mode pads each of the 4x4 taps as PyTorch and onnxruntime do (the ONNX
reference clamps or reflects the coordinate first, which differs only within two pixels of the
border with ``border``/``reflection`` padding; no conformance case covers that).

Coordinates read from tensors are clamped before they become integer indices: a grid or an
offset holding NaN, Inf or 1e30 can never produce an out-of-bounds read (casting a NaN or a
huge float to an integer is undefined in LLVM); a NaN grid coordinate gives a NaN output, an
infinite one samples the padding. Integer indices read from tensors (RoiAlign's
``batch_indices``) are checked against the data before any kernel runs and raise
:class:`~edgert.errors.InputError`.

Shapes follow the ONNX definitions (opset 20 GridSample with ``mode`` "linear"/"nearest"/"cubic";
the importer rewrites opset 16's "bilinear"/"bicubic" names). GridSample and AffineGrid work in
any number of spatial dimensions; DeformConv supports 2-D inputs only (the one form ONNX defines
a reference for), and says so for other ranks.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import InputError, KernelError, ShapeError
from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.registry import KernelRegistry, TensorInfo

# GridSample modes and padding modes as the Numba kernel takes them.
_NEAREST, _LINEAR, _CUBIC = 0, 1, 2
_ZEROS, _BORDER, _REFLECTION = 0, 1, 2
_MODES = {"nearest": _NEAREST, "linear": _LINEAR, "cubic": _CUBIC,
          "bilinear": _LINEAR, "bicubic": _CUBIC}
_PADDINGS = {"zeros": _ZEROS, "border": _BORDER, "reflection": _REFLECTION}


def _str_attr(kernel: EagerKernel, name: str, default: str) -> str:
    v = kernel.attr(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _int_list(kernel: EagerKernel, name: str, length: int, default: int, minimum: int) -> list:
    value = kernel.attr(name)
    if value is None or len(value) == 0:
        return [default] * length
    vals = [int(v) for v in value]
    if len(vals) != length:
        raise kernel.error(f"attribute '{name}' has {len(vals)} values, expected {length}")
    if any(v < minimum for v in vals):
        raise kernel.error(f"attribute '{name}' = {vals}: every value must be >= {minimum}")
    return vals


# ----- GridSample ---------------------------------------------------------------------------------
@njit
def _reflect(v, lo, hi):
    """Reflect ``v`` at the borders ``lo``/``hi`` until it lies between them."""
    rng = hi - lo
    if not np.isfinite(v) or rng <= 0.0:
        return lo
    if v < lo:
        dx = lo - v
        n = np.floor(dx / rng)
        r = dx - n * rng
        return lo + r if n % 2 == 0 else hi - r
    if v > hi:
        dx = v - hi
        n = np.floor(dx / rng)
        r = dx - n * rng
        return hi - r if n % 2 == 0 else lo + r
    return v


@njit
def _round_half_even(v):
    r = np.floor(v + 0.5)
    if r - v == 0.5 and r % 2.0 != 0.0:
        r -= 1.0
    return r


@njit
def _cubic_coeffs(t, out):
    """Keys cubic convolution weights (alpha = -0.75) for taps at -1, 0, 1, 2 around ``t``."""
    a = -0.75
    x = t + 1.0
    out[0] = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    x = t
    out[1] = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    x = 1.0 - t
    out[2] = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    x = 2.0 - t
    out[3] = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


@njit
def _point_taps(grid, n, p, dims, strides, mode, padding, align, idx, wts, ok, coef, offs, ws):
    """The taps of one grid point: flat offsets ``offs`` (-1 for a zero-padding tap) and weights
    ``ws``. Returns False when a coordinate is NaN (the output is then NaN)."""
    nd = dims.shape[0]
    taps = 1 if mode == _NEAREST else (2 if mode == _LINEAR else 4)
    for d in range(nd):
        length = dims[d]
        g = grid[n, p, nd - 1 - d]  # the grid's last axis lists x (width) first
        if align:
            v = (g + 1.0) * 0.5 * (length - 1)
            lo, hi = 0.0, length - 1.0
        else:
            v = ((g + 1.0) * length - 1.0) * 0.5
            lo, hi = -0.5, length - 0.5
        if v != v:
            return False
        if mode == _NEAREST:
            v = _round_half_even(v) if np.isfinite(v) else v
        if mode == _CUBIC:
            # PyTorch / onnxruntime pad each of the 4x4 taps, not the coordinate (the ONNX
            # reference clamps the coordinate first, which differs near the border). Far
            # coordinates are brought near without changing any tap: border and zeros taps
            # are all clamped / all outside beyond 8 pixels, and reflection is periodic.
            if padding == _REFLECTION:
                if not np.isfinite(v):
                    v = lo
                elif v < lo - 4.0 * (hi - lo) or v > hi + 4.0 * (hi - lo):
                    period = 2.0 * (hi - lo)
                    if period > 0.0:
                        dist = v - lo
                        v = lo + (dist - period * np.floor(dist / period))
                    else:
                        v = lo
            else:
                v = min(max(v, lo - 8.0), hi + 8.0)
        elif v < lo or v > hi:
            if padding == _BORDER:
                v = min(max(v, 0.0), length - 1.0)
            elif padding == _REFLECTION:
                v = _reflect(v, lo, hi)
            else:
                # every tap is outside anyway; keeps the integer cast below defined
                v = min(max(v, lo - 8.0), hi + 8.0)
        if mode == _NEAREST:
            idx[d, 0] = np.int64(v)  # truncation, as the ONNX reference casts
            wts[d, 0] = 1.0
        elif mode == _LINEAR:
            f = np.floor(v)
            t = v - f
            idx[d, 0] = np.int64(f)
            idx[d, 1] = np.int64(f) + 1
            wts[d, 0] = 1.0 - t
            wts[d, 1] = t
        else:
            f = np.floor(v)
            _cubic_coeffs(v - f, coef)
            for k in range(4):
                idx[d, k] = np.int64(f) - 1 + k
                wts[d, k] = coef[k]
        for k in range(taps):
            i = idx[d, k]
            if padding == _ZEROS:
                ok[d, k] = 0 <= i < length
            elif padding == _BORDER:
                idx[d, k] = min(max(i, 0), length - 1)
                ok[d, k] = True
            else:
                r = np.int64(_reflect(np.float64(i), lo, hi))
                idx[d, k] = min(max(r, 0), length - 1)
                ok[d, k] = True
    for t in range(offs.shape[0]):
        rem = t
        w = 1.0
        off = 0
        for d in range(nd - 1, -1, -1):
            k = rem % taps
            rem //= taps
            if not ok[d, k]:
                off = -1
                break
            w *= wts[d, k]
            off += idx[d, k] * strides[d]
        offs[t] = off
        ws[t] = w
    return True


@njit(parallel=True)
def _grid_sample(x, grid, dims, mode, padding, align, out):
    """x [N, C, S] (spatial flattened), grid [N, P, nd] (x, y, z order), out [N, C, P].

    The taps of a point are computed once and applied to every channel; scratch arrays are
    allocated once per chunk of points (the taps of all points at once would need
    ``P · 4^nd`` entries: 64 per point for 3-D cubic).
    """
    n_batch, channels, _ = x.shape
    points = grid.shape[1]
    nd = dims.shape[0]
    taps = 1 if mode == _NEAREST else (2 if mode == _LINEAR else 4)
    total = 1
    for _ in range(nd):
        total *= taps
    strides = np.ones(nd, np.int64)
    for d in range(nd - 2, -1, -1):
        strides[d] = strides[d + 1] * dims[d + 1]
    jobs = n_batch * points
    chunk = 256
    for ci in prange((jobs + chunk - 1) // chunk):
        idx = np.zeros((nd, 4), np.int64)
        wts = np.zeros((nd, 4), np.float64)
        ok = np.zeros((nd, 4), np.bool_)
        coef = np.empty(4, np.float64)
        offs = np.empty(total, np.int64)
        ws = np.empty(total, np.float64)
        for job in range(ci * chunk, min(jobs, (ci + 1) * chunk)):
            n = job // points
            p = job % points
            if not _point_taps(grid, n, p, dims, strides, mode, padding, align, idx, wts, ok,
                               coef, offs, ws):
                for c in range(channels):
                    out[n, c, p] = np.nan
                continue
            for c in range(channels):
                plane = x[n, c]
                acc = 0.0
                for t in range(total):
                    i = offs[t]
                    if i >= 0:  # a zero-padding tap adds nothing, even next to an Inf pixel
                        acc += ws[t] * plane[i]
                out[n, c, p] = acc


class GridSample(EagerKernel):
    """GridSample (opset 16/20/22): sample X [N, C, D1..Dk] at grid [N, O1..Ok, k]."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x, grid = inputs
        self.require_float(x, "X")
        self.require_float(grid, "grid")
        nd = len(x.shape) - 2
        if nd < 1 or len(grid.shape) != nd + 2:
            raise self.error(f"X {x.shape} and grid {grid.shape} must be [N, C, D1..Dk] and "
                             "[N, O1..Ok, k]", ShapeError)
        if grid.shape[0] != x.shape[0] or grid.shape[-1] != nd:
            raise self.error(f"grid shape {grid.shape} does not fit X {x.shape}: expected "
                             f"[{x.shape[0]}, ..., {nd}]", ShapeError)
        mode = _str_attr(self, "mode", "linear")
        pad = _str_attr(self, "padding_mode", "zeros")
        if mode not in _MODES:
            raise self.error(f"unknown mode {mode!r} (expected linear, nearest or cubic)")
        if pad not in _PADDINGS:
            raise self.error(f"unknown padding_mode {pad!r} (expected zeros, border or reflection)")
        self._mode, self._pad = _MODES[mode], _PADDINGS[pad]
        self._align = bool(self.attr("align_corners", 0))
        if min(x.shape[2:]) == 0 and x.shape[0] * x.shape[1] * int(np.prod(grid.shape[1:-1])):
            raise self.error(f"cannot sample an empty image {x.shape}", ShapeError)
        return [TensorInfo((x.shape[0], x.shape[1], *grid.shape[1:-1]), np.dtype(x.dtype))]

    def compute(self, inputs):
        x, grid = inputs
        n, c = x.shape[:2]
        nd = x.ndim - 2
        out_sp = grid.shape[1:-1]
        work = np.float64 if x.dtype == np.float64 else np.float32
        # explicit sizes, not -1: a reshape cannot infer a dimension of a zero-size array
        xf = np.ascontiguousarray(x, dtype=work).reshape(n, c, int(np.prod(x.shape[2:])))
        gf = np.ascontiguousarray(grid, dtype=np.float64).reshape(n, int(np.prod(out_sp)), nd)
        out = np.empty((n, c, gf.shape[1]), work)
        if out.size:
            _grid_sample(xf, gf, np.array(x.shape[2:], np.int64), self._mode, self._pad,
                         self._align, out)
        return [out.reshape(n, c, *out_sp).astype(x.dtype, copy=False)]


# ----- AffineGrid ---------------------------------------------------------------------------------
def _base_coords(n: int, align: bool) -> np.ndarray:
    """Normalized coordinates of ``n`` pixel centres (align_corners=0) or corners (=1)."""
    i = np.arange(n, dtype=np.float64)
    if align:
        return -1.0 + 2.0 * i / (n - 1) if n > 1 else np.full(n, -1.0)
    return -1.0 + (2.0 * i + 1.0) / n


class AffineGrid(EagerKernel):
    """AffineGrid: the GridSample grid [N, (D,) H, W, k] of affine matrices theta [N, k, k+1]."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        theta, size = inputs
        self.require_float(theta, "theta")
        if len(theta.shape) != 3 or theta.shape[1] not in (2, 3) or \
                theta.shape[2] != theta.shape[1] + 1:
            raise self.error(f"theta must be [N, 2, 3] or [N, 3, 4], got {theta.shape}",
                             ShapeError)
        if np.dtype(size.dtype) != np.int64 or tuple(size.shape) != (theta.shape[1] + 2,):
            raise self.error(f"size must be an int64 vector of {theta.shape[1] + 2} values "
                             f"for theta {theta.shape}, got {size.dtype} {size.shape}", ShapeError)
        self._align = bool(self.attr("align_corners", 0))
        shape = None
        if size.value is not None:
            shape = self._out_shape(theta.shape, size.value)
        return [TensorInfo(shape, np.dtype(theta.dtype))]

    def _out_shape(self, theta_shape, size) -> tuple[int, ...]:
        size = [int(v) for v in np.asarray(size).reshape(-1)]
        if size[0] != theta_shape[0] or any(v < 0 for v in size):
            raise self.error(f"size {size} does not fit theta {tuple(theta_shape)} (N must "
                             "match, sizes must be >= 0)", InputError)
        return (size[0], *size[2:], theta_shape[1])

    def compute(self, inputs):
        theta, size = inputs
        shape = self._out_shape(theta.shape, size)
        spatial = shape[1:-1]
        axes = [_base_coords(n, self._align) for n in spatial]
        mesh = np.meshgrid(*axes, indexing="ij")  # D, H, W order
        k = len(spatial)
        # homogeneous points (x, y[, z], 1): x runs along the last spatial axis
        pts = np.stack([mesh[k - 1 - i].reshape(-1) for i in range(k)]
                       + [np.ones(mesh[0].size)], axis=0)
        grid = np.matmul(theta.astype(np.float64), pts)  # [N, k, P]
        return [np.ascontiguousarray(grid.transpose(0, 2, 1)).reshape(shape).astype(theta.dtype)]


# ----- RoiAlign -----------------------------------------------------------------------------------
# Largest sampling grid per bin axis. The adaptive grid is ceil(roi size / bins): a box of 1e30
# pixels (or sampling_ratio=2**31) would loop for ever, and silently capping the grid would
# change the average, so anything larger is rejected with an InputError instead.
_MAX_GRID = 4096

@njit
def _bilinear_taps(y, x, height, width, pos, w):
    """RoiAlign's bilinear sample at (y, x): 4 flat positions and weights (0 outside)."""
    if y < -1.0 or y > height or x < -1.0 or x > width or y != y or x != x:
        for k in range(4):
            pos[k] = 0
            w[k] = 0.0
        return
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low = np.int64(y)
    x_low = np.int64(x)
    if y_low >= height - 1:
        y_low = height - 1
        y_high = y_low
        y = np.float64(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = width - 1
        x_high = x_low
        x = np.float64(x_low)
    else:
        x_high = x_low + 1
    ly = y - y_low
    lx = x - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    pos[0] = y_low * width + x_low
    pos[1] = y_low * width + x_high
    pos[2] = y_high * width + x_low
    pos[3] = y_high * width + x_high
    w[0] = hy * hx
    w[1] = hy * lx
    w[2] = ly * hx
    w[3] = ly * lx


@njit(parallel=True)
def _roi_align(x, height, width, rois, batch, out, scale, ratio, half_pixel, use_max):
    """x [N, C, H*W], rois [R, 4] (x1, y1, x2, y2), batch [R] (validated), out [R, C, PH, PW]."""
    n_rois, channels, ph_n, pw_n = out.shape
    for r in prange(n_rois):
        b = batch[r]
        offset = 0.5 if half_pixel else 0.0
        x1 = rois[r, 0] * scale - offset
        y1 = rois[r, 1] * scale - offset
        x2 = rois[r, 2] * scale - offset
        y2 = rois[r, 3] * scale - offset
        rw = x2 - x1
        rh = y2 - y1
        if not half_pixel:
            rw = max(rw, 1.0)
            rh = max(rh, 1.0)
        bin_h = rh / ph_n
        bin_w = rw / pw_n
        if ratio > 0:
            gh = ratio
            gw = ratio
        else:
            ch = np.ceil(rh / ph_n)
            cw = np.ceil(rw / pw_n)
            # RoiAlign.compute rejects a finite grid above _MAX_GRID before this runs; the
            # clamp keeps the integer cast defined whatever reaches here (NaN: no samples)
            gh = np.int64(min(max(ch, 0.0), _MAX_GRID)) if ch == ch else 0
            gw = np.int64(min(max(cw, 0.0), _MAX_GRID)) if cw == cw else 0
        count = max(gh * gw, 1)
        pos = np.empty(4, np.int64)
        w = np.empty(4, np.float64)
        for ph in range(ph_n):
            for pw in range(pw_n):
                for c in range(channels):
                    out[r, c, ph, pw] = 0.0
                first = True
                for iy in range(gh):
                    yy = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        xx = x1 + pw * bin_w + (ix + 0.5) * bin_w / gw
                        _bilinear_taps(yy, xx, height, width, pos, w)
                        for c in range(channels):
                            if use_max:
                                # the ONNX definition: max over the four *weighted* taps
                                v = max(max(w[0] * x[b, c, pos[0]], w[1] * x[b, c, pos[1]]),
                                        max(w[2] * x[b, c, pos[2]], w[3] * x[b, c, pos[3]]))
                                if first or v > out[r, c, ph, pw]:
                                    out[r, c, ph, pw] = v
                            else:
                                out[r, c, ph, pw] += (w[0] * x[b, c, pos[0]]
                                                      + w[1] * x[b, c, pos[1]]
                                                      + w[2] * x[b, c, pos[2]]
                                                      + w[3] * x[b, c, pos[3]])
                        first = False
                if not use_max:
                    for c in range(channels):
                        out[r, c, ph, pw] /= count


class RoiAlign(EagerKernel):
    """RoiAlign (opset 16 form): average or max of bilinear samples over each ROI bin."""

    def check(self, inputs):
        self.require_inputs(inputs, 3, 3)
        x, rois, batch = inputs
        self.require_float(x, "X")
        self.require_float(rois, "rois")
        if len(x.shape) != 4:
            raise self.error(f"X must be [N, C, H, W], got {x.shape}", ShapeError)
        if len(rois.shape) != 2 or rois.shape[1] != 4:
            raise self.error(f"rois must be [num_rois, 4], got {rois.shape}", ShapeError)
        if np.dtype(batch.dtype).kind not in "iu" or tuple(batch.shape) != (rois.shape[0],):
            raise self.error(f"batch_indices must be an integer vector of {rois.shape[0]} "
                             f"values, got {batch.dtype} {batch.shape}", ShapeError)
        mode = _str_attr(self, "mode", "avg")
        ctm = _str_attr(self, "coordinate_transformation_mode", "half_pixel")
        if mode not in ("avg", "max"):
            raise self.error(f"unknown mode {mode!r} (expected avg or max)")
        if ctm not in ("half_pixel", "output_half_pixel"):
            raise self.error(f"unknown coordinate_transformation_mode {ctm!r}")
        self._max, self._half = mode == "max", ctm == "half_pixel"
        self._oh = int(self.attr("output_height", 1))
        self._ow = int(self.attr("output_width", 1))
        self._ratio = int(self.attr("sampling_ratio", 0))
        self._scale = float(self.attr("spatial_scale", 1.0))
        if self._oh < 1 or self._ow < 1 or not 0 <= self._ratio <= _MAX_GRID:
            raise self.error(f"output_height/output_width must be >= 1 and sampling_ratio in "
                             f"[0, {_MAX_GRID}], got {self._oh}, {self._ow}, {self._ratio}")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise self.error(f"X has an empty spatial shape {x.shape}", ShapeError)
        if batch.value is not None:
            self._check_batch(batch.value, x.shape[0])
        return [TensorInfo((rois.shape[0], x.shape[1], self._oh, self._ow), np.dtype(x.dtype))]

    def _check_batch(self, batch: np.ndarray, n: int) -> None:
        if batch.size and (batch.min() < 0 or batch.max() >= n):
            raise self.error(f"batch_indices must lie in [0, {n}), got values from "
                             f"{batch.min()} to {batch.max()}", InputError)

    def _check_grid(self, rois: np.ndarray) -> None:
        """The adaptive sampling grid of every ROI (as the kernel computes it) fits _MAX_GRID."""
        if self._ratio > 0 or not rois.size:
            return
        r = rois.astype(np.float64) * self._scale
        size = r[:, 2:] - r[:, :2]  # (width, height): the half-pixel offset cancels
        if not self._half:
            size = np.maximum(size, 1.0)
        with np.errstate(invalid="ignore", over="ignore"):
            grid = np.ceil(size / np.array([self._ow, self._oh], np.float64))
            bad = (grid > _MAX_GRID).any(axis=1)  # NaN compares False: it samples nothing
        if bad.any():
            k = int(np.argmax(bad))
            raise self.error(f"ROI {k} {rois[k].tolist()} needs a sampling grid of "
                             f"{grid[k].tolist()} points per bin; at most {_MAX_GRID} per axis "
                             "are supported (set sampling_ratio)", InputError)

    def compute(self, inputs):
        x, rois, batch = inputs
        self._check_batch(batch, x.shape[0])  # data-dependent: before the kernel reads X
        self._check_grid(rois)
        n, c, h, w = x.shape
        out = np.empty((rois.shape[0], c, self._oh, self._ow), np.float64)
        if out.size:
            _roi_align(np.ascontiguousarray(x, dtype=np.float64).reshape(n, c, h * w), h, w,
                       np.ascontiguousarray(rois, dtype=np.float64),
                       np.ascontiguousarray(batch, dtype=np.int64), out, self._scale,
                       self._ratio, self._half, self._max)
        return [out.astype(x.dtype)]


# ----- CenterCropPad ------------------------------------------------------------------------------
class CenterCropPad(EagerKernel):
    """CenterCropPad: crop or zero-pad each listed axis to ``shape``, keeping the centre."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x, shape = inputs
        rank = len(x.shape)
        axes = self.attr("axes", None)
        axes = list(range(rank)) if axes is None else [int(a) for a in axes]
        self._axes = [self.normalize_axis(a, rank) for a in axes]
        if len(set(self._axes)) != len(self._axes):
            raise self.error(f"axes {axes} repeat an axis")
        if np.dtype(shape.dtype).kind not in "iu" or tuple(shape.shape) != (len(self._axes),):
            raise self.error(f"shape must be an integer vector of {len(self._axes)} values, got "
                             f"{shape.dtype} {shape.shape}", ShapeError)
        out = None
        if shape.value is not None:
            out = self._out_shape(x.shape, shape.value)
        return [TensorInfo(out, np.dtype(x.dtype))]

    def _out_shape(self, in_shape, shape) -> tuple[int, ...]:
        out = list(in_shape)
        for a, s in zip(self._axes, np.asarray(shape).reshape(-1)):
            if s < 0:
                raise self.error(f"shape value {int(s)} for axis {a} is negative", InputError)
            out[a] = int(s)
        return tuple(out)

    def compute(self, inputs):
        x, shape = inputs
        out_shape = self._out_shape(x.shape, shape)
        y = np.zeros(out_shape, x.dtype)
        src, dst = [slice(None)] * x.ndim, [slice(None)] * x.ndim
        for a in self._axes:
            n, m = x.shape[a], out_shape[a]
            if m < n:  # crop: the extra element of an odd difference goes to the end
                start = (n - m) // 2
                src[a] = slice(start, start + m)
            elif m > n:
                start = (m - n) // 2
                dst[a] = slice(start, start + n)
        y[tuple(dst)] = x[tuple(src)]
        return [y]


# ----- Col2Im -------------------------------------------------------------------------------------
@njit(parallel=True)
def _col2im(col, where, out):
    """col [N, C, K, L] summed into out [N, C, S] at flat image offsets where [K, L] (-1: pad)."""
    n_batch, channels, kprod, n_blocks = col.shape
    for job in prange(n_batch * channels):
        n = job // channels
        c = job % channels
        dst = out[n, c]
        dst[:] = 0.0
        for k in range(kprod):
            src = col[n, c, k]
            idx = where[k]
            for blk in range(n_blocks):
                i = idx[blk]
                if i >= 0:
                    dst[i] += src[blk]


def _col2im_offsets(image, block, counts, strides, dilations, pads) -> np.ndarray:
    """Flat image offset [K, L] of every (kernel tap, block) pair; -1 where it lands in padding.

    Built per axis with broadcasting: position = block · stride - pad + tap · dilation.
    """
    where = np.zeros((1, 1), np.int64)
    inside = np.ones((1, 1), bool)
    for d in range(len(image)):
        pos = (np.arange(counts[d])[None, :] * strides[d] - pads[d]
               + np.arange(block[d])[:, None] * dilations[d])  # [k_d, b_d]
        ok = (pos >= 0) & (pos < image[d])
        k_prev, b_prev = where.shape
        where = (where[:, None, :, None] * image[d] + pos[None, :, None, :]).reshape(
            k_prev * block[d], b_prev * counts[d])
        inside = (inside[:, None, :, None] & ok[None, :, None, :]).reshape(where.shape)
    return np.where(inside, where, -1)


class Col2Im(EagerKernel):
    """Col2Im: sum sliding blocks [N, C*prod(block), L] back into an image [N, C, *image]."""

    def check(self, inputs):
        self.require_inputs(inputs, 3, 3)
        x, image, block = inputs
        self.require_float(x, "input")
        if len(x.shape) != 3:
            raise self.error(f"input must be [N, C*prod(block_shape), L], got {x.shape}",
                             ShapeError)
        for info, what in ((image, "image_shape"), (block, "block_shape")):
            if np.dtype(info.dtype).kind not in "iu" or len(info.shape) != 1:
                raise self.error(f"{what} must be an integer vector, got {info.dtype} "
                                 f"{info.shape}", ShapeError)
        nd = image.shape[0]
        if block.shape[0] != nd or nd < 1:
            raise self.error(f"image_shape and block_shape must have the same length >= 1, got "
                             f"{image.shape[0]} and {block.shape[0]}", ShapeError)
        self._nd = nd
        self._strides = _int_list(self, "strides", nd, 1, 1)
        self._dilations = _int_list(self, "dilations", nd, 1, 1)
        self._pads = _int_list(self, "pads", 2 * nd, 0, 0)
        out = None
        if image.value is not None and block.value is not None:
            out = self._geometry(x.shape, image.value, block.value)[0]
        return [TensorInfo(out, np.dtype(x.dtype))]

    def _geometry(self, x_shape, image, block):
        """(output shape, image dims, block dims, blocks per dim), after every check."""
        image = [int(v) for v in np.asarray(image).reshape(-1)]
        block = [int(v) for v in np.asarray(block).reshape(-1)]
        nd = self._nd
        if any(v < 1 for v in image) or any(v < 1 for v in block):
            raise self.error(f"image_shape {image} and block_shape {block} must be >= 1",
                             InputError)
        kprod = int(np.prod(block))
        if x_shape[1] % kprod:
            raise self.error(f"input dimension 1 ({x_shape[1]}) is not a multiple of "
                             f"prod(block_shape) = {kprod}", ShapeError)
        counts = []
        for d in range(nd):
            span = self._dilations[d] * (block[d] - 1) + 1
            full = image[d] + self._pads[d] + self._pads[d + nd]
            counts.append((full - span) // self._strides[d] + 1)
        if any(c < 1 for c in counts) or int(np.prod(counts)) != x_shape[2]:
            raise self.error(f"input has {x_shape[2]} blocks but image_shape {image}, "
                             f"block_shape {block}, strides, pads and dilations give "
                             f"{counts} = {int(np.prod(counts)) if min(counts) > 0 else 0}",
                             ShapeError)
        out = (x_shape[0], x_shape[1] // kprod, *image)
        return out, image, block, counts

    def compute(self, inputs):
        x, image, block = inputs
        out_shape, image, block, counts = self._geometry(x.shape, image, block)
        n, c = out_shape[:2]
        kprod = int(np.prod(block))
        # float32 data is summed in float32: a pixel receives at most prod(block) terms
        work = np.float64 if x.dtype == np.float64 else np.float32
        col = np.ascontiguousarray(x, dtype=work).reshape(n, c, kprod, x.shape[2])
        out = np.empty((n, c, int(np.prod(image))), work)
        if out.size:
            key = (tuple(image), tuple(block))
            if getattr(self, "_where_key", None) != key:  # the geometry of the last call
                self._where = np.ascontiguousarray(_col2im_offsets(
                    image, block, counts, self._strides, self._dilations, self._pads[:self._nd]))
                self._where_key = key
            _col2im(col, self._where, out)
        return [out.reshape(out_shape).astype(x.dtype, copy=False)]


# ----- DeformConv ---------------------------------------------------------------------------------
@njit(parallel=True)
def _deform_columns(x, offset, mask, geo, offset_groups, col):
    """Bilinearly sampled columns of a 2-D deformable convolution.

    x [N, C, H, W]; offset [N, G, KH, KW, 2, OH, OW]; mask [N, G, KH, KW, OH, OW];
    geo = (KH, KW, stride h/w, dilation h/w, pad top/left); col [N, C, KH*KW, OH*OW].
    Samples outside the image read zeros (GridSample with align_corners=1, zero padding).
    """
    n_batch, channels, height, width = x.shape
    kh, kw, sh, sw, dh, dw, pt, pl = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6], \
        geo[7]
    oh, ow = offset.shape[5], offset.shape[6]
    per_group = channels // offset_groups
    for job in prange(n_batch * channels):
        n = job // channels
        c = job % channels
        g = c // per_group
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                for oy in range(oh):
                    for ox in range(ow):
                        y = oy * sh - pt + i * dh + offset[n, g, i, j, 0, oy, ox]
                        xx = ox * sw - pl + j * dw + offset[n, g, i, j, 1, oy, ox]
                        val = 0.0
                        if y == y and xx == xx and -1.0 < y < height and -1.0 < xx < width:
                            y0 = np.floor(y)
                            x0 = np.floor(xx)
                            ty = y - y0
                            tx = xx - x0
                            iy = np.int64(y0)
                            ix = np.int64(x0)
                            for a in range(2):
                                yy = iy + a
                                if yy < 0 or yy >= height:
                                    continue
                                wy = ty if a == 1 else 1.0 - ty
                                for b in range(2):
                                    xb = ix + b
                                    if xb < 0 or xb >= width:
                                        continue
                                    wx = tx if b == 1 else 1.0 - tx
                                    val += wy * wx * x[n, c, yy, xb]
                        col[n, c, k, oy * ow + ox] = val * mask[n, g, i, j, oy, ox]


class DeformConv(EagerKernel):
    """DeformConv (opset 19+), 2-D: a convolution whose taps move by learned offsets."""

    def check(self, inputs):
        self.require_inputs(inputs, 3, 5)
        x, w, off = inputs[:3]
        b = inputs[3] if len(inputs) > 3 else None
        m = inputs[4] if len(inputs) > 4 else None
        for info, what in ((x, "X"), (w, "W"), (off, "offset"), (b, "B"), (m, "mask")):
            if info is not None:
                self.require_float(info, what)
        if len(x.shape) != 4:
            raise self.error(f"only 2-D deformable convolution is supported; X has shape "
                             f"{x.shape}", KernelError)
        if len(w.shape) != 4 or len(off.shape) != 4:
            raise self.error(f"W and offset must be 4-D, got {w.shape} and {off.shape}",
                             ShapeError)
        n, c, h, wd = x.shape
        oc, icg, kh, kw = w.shape
        group = int(self.attr("group", 1))
        ogroups = int(self.attr("offset_group", 1))
        ks = self.attr("kernel_shape", None)
        if ks is not None and [int(v) for v in ks] != [kh, kw]:
            raise self.error(f"kernel_shape {list(ks)} does not match W {w.shape}", ShapeError)
        if group < 1 or ogroups < 1 or c != icg * group or oc % group or c % ogroups:
            raise self.error(f"channels do not fit: X {x.shape}, W {w.shape}, group {group}, "
                             f"offset_group {ogroups}", ShapeError)
        self._strides = _int_list(self, "strides", 2, 1, 1)
        self._dil = _int_list(self, "dilations", 2, 1, 1)
        self._pads = _int_list(self, "pads", 4, 0, 0)
        out_hw = []
        for d, size in enumerate((h, wd)):
            span = self._dil[d] * (w.shape[2 + d] - 1) + 1
            out_hw.append((size + self._pads[d] + self._pads[d + 2] - span) // self._strides[d]
                          + 1)
        if min(out_hw) < 1:
            raise self.error(f"the kernel does not fit the padded input {x.shape}", ShapeError)
        oh, ow = out_hw
        if tuple(off.shape) != (n, ogroups * kh * kw * 2, oh, ow):
            raise self.error(f"offset must have shape {(n, ogroups * kh * kw * 2, oh, ow)}, "
                             f"got {off.shape}", ShapeError)
        if m is not None and tuple(m.shape) != (n, ogroups * kh * kw, oh, ow):
            raise self.error(f"mask must have shape {(n, ogroups * kh * kw, oh, ow)}, got "
                             f"{m.shape}", ShapeError)
        if b is not None and tuple(b.shape) != (oc,):
            raise self.error(f"B must have shape ({oc},), got {b.shape}", ShapeError)
        self._group, self._ogroups = group, ogroups
        return [TensorInfo((n, oc, oh, ow), np.dtype(x.dtype))]

    def compute(self, inputs):
        x, w, off = inputs[:3]
        b = inputs[3] if len(inputs) > 3 else None
        m = inputs[4] if len(inputs) > 4 else None
        n, c = x.shape[:2]
        oc, icg, kh, kw = w.shape
        oh, ow = off.shape[2:]
        g, og = self._group, self._ogroups
        offset = np.ascontiguousarray(off, dtype=np.float64).reshape(n, og, kh, kw, 2, oh, ow)
        if m is None:
            mask = np.ones((n, og, kh, kw, oh, ow), np.float64)
        else:
            mask = np.ascontiguousarray(m, dtype=np.float64).reshape(n, og, kh, kw, oh, ow)
        geo = np.array([kh, kw, *self._strides, *self._dil, self._pads[0], self._pads[1]],
                       np.int64)
        col = np.empty((n, c, kh * kw, oh * ow), np.float64)
        if col.size:
            _deform_columns(np.ascontiguousarray(x, dtype=np.float64), offset, mask, geo, og, col)
        # per group: [oc/g, icg*K] @ [icg*K, P] (BLAS)
        colg = col.reshape(n, g, icg * kh * kw, oh * ow)
        wg = w.astype(np.float64).reshape(g, oc // g, icg * kh * kw)
        y = np.matmul(wg[None], colg).reshape(n, oc, oh, ow)
        if b is not None:
            y = y + b.astype(np.float64).reshape(1, oc, 1, 1)
        return [y.astype(x.dtype)]


def register(reg: KernelRegistry) -> None:
    reg.add("GridSample", GridSample, since=16)
    reg.add("AffineGrid", AffineGrid, since=20)
    reg.add("RoiAlign", RoiAlign, since=10)
    reg.add("CenterCropPad", CenterCropPad, since=18)
    reg.add("Col2Im", Col2Im, since=18)
    reg.add("DeformConv", DeformConv, since=19)
