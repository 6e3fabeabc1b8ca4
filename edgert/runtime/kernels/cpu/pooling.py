"""CPU kernels: MaxPool, AveragePool, LpPool and their Global forms (1-D, 2-D, 3-D, float32/64;
MaxPool also int8/uint8, as ONNX allows since opset 12).

Semantics are the newest ONNX opset's (kernel_shape, strides, pads, auto_pad, dilations,
ceil_mode, count_include_pad, storage_order, the optional MaxPool ``Indices`` output). The window
geometry, including ``auto_pad`` and ``ceil_mode``, is resolved by
:func:`edgert.runtime.ops.window.sliding_window`: ``SAME_*`` pads include the dilation as
the spec says, and with ``ceil_mode`` a window that would start inside the end padding is dropped.

As in :mod:`.conv`, every spatial rank is viewed as 3-D (leading axes of size 1) so one compiled
kernel per dtype serves 1-D, 2-D and 3-D pooling. Kernels run in parallel over ``N × C``.

Numerical choices:

* MaxPool propagates NaN as NumPy's ``max`` does: once a window holds a NaN the result is NaN
  (a NaN is taken when it arrives and, since ``v > NaN`` is false, never replaced; a plain
  ``v > best`` would skip it). onnxruntime is not consistent here: its result depends on where
  the NaN sits in the window.
* The Global forms accumulate in float64, so a large global average of float32 data keeps its
  digits; windowed sums (a few dozen terms at most) accumulate in the tensor's dtype, as
  onnxruntime does, which keeps the row loops vectorized.
* AveragePool with ``count_include_pad`` divides by the window's size clipped to the padded input
  (a ``ceil_mode`` window hanging past the end padding counts only up to it), as onnxruntime and
  PyTorch do; a window that covers no input element yields 0.
* Pads must be smaller than the kernel (onnxruntime's rule). Should a dilated window still miss
  every input element, MaxPool gives -inf (int8/uint8: the type's minimum) and index -1
  (onnxruntime gives the lowest float).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.kernels.cpu._native.geometry import tap_ranges
from edgert.runtime.ops.window import (
    FLOAT_DTYPES,
    Window,
    as3d,
    float_dtype,
    packed,
    sliding_window,
)
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo

_AVG, _LP = 0, 2
_INT8S = (np.dtype(np.int8), np.dtype(np.uint8))
_G_AVG, _G_MAX, _G_LP = 0, 1, 2


# ----- Numba kernels ------------------------------------------------------------------------------
# Output rows are built tap by tap over each tap's valid range (see the performance note in
# conv.py: inner loops run over slices, so they vectorize and carry no bounds tests).
@njit(parallel=True)
def _max_pool(x, y, ind, geo_a, storage_order, want_indices, one, lowest):
    """``y[t, o] = max`` over the window of ``x[t]``; ``ind`` gets the flat input index if asked.

    ``x``: ``(N*C, D, H, W)``; ``y`` and ``ind``: ``(N*C, OD, OH, OW)`` (``ind`` may be empty).
    ``lowest``: the value of a window that holds no input element (``-inf``, or the integer
    type's minimum).
    The value update ``v > cur or isnan(v)`` keeps a NaN once it is in (``NaN > v`` is false) and
    takes a NaN when it arrives; the index update takes the first valid element, then only a
    strictly larger one or the first NaN, in window order (onnxruntime's tie rule).

    ``one`` must be 1.0, passed at run time: multiplying the selected value by it keeps LLVM from
    turning ``yseg[i] = v if ... else yseg[i]`` into a masked store (``vmaskmovps``), which made
    the loop 6x slower than an unconditional store.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh = geo.dd, geo.dh
    pd, ph = geo.pd, geo.ph
    nc, d_n, h_n, w_n = x.shape
    od_n, oh_n = y.shape[1], y.shape[2]
    plane = d_n * h_n * w_n
    taps = tap_ranges(geo)
    # Flat-index step along the innermost axis: 1 (row-major) or D*H (column-major).
    step = 1 if storage_order == 0 else d_n * h_n
    for t in prange(nc):
        for od in range(od_n):
            for oh in range(oh_n):
                yrow = y[t, od, oh]
                yrow[:] = lowest
                if want_indices:
                    irow = ind[t, od, oh]
                    irow[:] = -1
                for kd in range(kd_n):
                    iz = od * sd - pd + kd * dd
                    if iz < 0 or iz >= d_n:
                        continue
                    for kh in range(kh_n):
                        iy = oh * sh - ph + kh * dh
                        if iy < 0 or iy >= h_n:
                            continue
                        src = x[t, iz, iy]
                        for kw in range(kw_n):
                            off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
                            if hi == lo:
                                continue
                            yseg = yrow[lo:hi]
                            xseg = src[lo * sw + off :]
                            if want_indices:
                                iseg = irow[lo:hi]
                                # flat index of x[t, iz, iy, (lo + i) * sw + off]
                                if storage_order == 0:
                                    base = t * plane + (iz * h_n + iy) * w_n + lo * sw + off
                                else:
                                    base = t * plane + iz + d_n * iy + (lo * sw + off) * step
                                for i in range(hi - lo):
                                    v = xseg[i * sw]
                                    cur = yseg[i]
                                    if (
                                        iseg[i] < 0
                                        or v > cur
                                        or (math.isnan(v) and not math.isnan(cur))
                                    ):
                                        yseg[i] = v
                                        iseg[i] = base + i * sw * step
                            elif sw == 1:
                                xc = src[lo + off : hi + off]
                                for i in range(hi - lo):
                                    v = xc[i]
                                    cur = yseg[i]
                                    yseg[i] = (v if (v > cur or math.isnan(v)) else cur) * one
                            else:
                                xs = src[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    v = xs[i]
                                    cur = yseg[i]
                                    yseg[i] = (v if (v > cur or math.isnan(v)) else cur) * one


@njit(parallel=True)
def _max_pool_rows(x, y, kh_n, kw_n, sh, sw, ph, pw, lowest):
    """2-D MaxPool, dilation 1, no indices: the window's rows first, then its columns.

    ``x``: ``(N*C, H, W)``, ``y``: ``(N*C, OH, OW)``. Per output row, the max over the
    ``KH`` input rows is taken element-wise over whole contiguous rows (vectorized), into a
    row buffer padded with ``lowest`` on both sides; the output row is then the max over
    ``KW`` columns of that buffer at stride ``sw`` (no bounds tests: the padding covers every
    window, ``ceil_mode`` included). Measured 3-5x faster for int8 and 1.2-2.4x for float32
    than splitting the plane into stride phases first (a strided copy per input row and
    phase). NaN rule as in :func:`_max_pool`. ``lowest``: the padding value, ``-inf`` for
    floats, the type's minimum for int8 / uint8 (MaxPool on quantized tensors, and the int8
    QMaxPool: max commutes with quantization).
    """
    nc, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    width = max(w_n + pw, (ow_n - 1) * sw + kw_n)
    nchunk = min(nc, 64)
    for ch in prange(nchunk):
        v = np.empty(width, y.dtype)
        for i in range(width):
            v[i] = lowest
        vr = v[pw:pw + w_n]
        for t in range(ch * nc // nchunk, (ch + 1) * nc // nchunk):
            for oh in range(oh_n):
                # The window's rows inside the plane, merged in one pass for up to three rows
                # (a copy and a read-modify-write pass per row ran 3-4x slower: measured).
                iy0 = oh * sh - ph
                a0 = max(iy0, 0)
                a1 = min(iy0 + kh_n, h_n)
                if a1 <= a0:  # every row of the window is padding
                    for i in range(w_n):
                        vr[i] = lowest
                elif a1 - a0 == 1:
                    r0 = x[t, a0]
                    for i in range(w_n):
                        vr[i] = r0[i]
                else:
                    r0 = x[t, a0]
                    r1 = x[t, a0 + 1]
                    if a1 - a0 == 2:
                        for i in range(w_n):
                            a = r0[i]
                            b = r1[i]
                            vr[i] = a if ((a > b) | (a != a)) else b
                    else:
                        r2 = x[t, a0 + 2]
                        for i in range(w_n):
                            a = r0[i]
                            b = r1[i]
                            c = r2[i]
                            m = a if ((a > b) | (a != a)) else b
                            vr[i] = c if ((c > m) | (c != c)) else m
                        for iy in range(a0 + 3, a1):
                            xr = x[t, iy]
                            for i in range(w_n):
                                a = xr[i]
                                b = vr[i]
                                vr[i] = a if ((a > b) | (a != a)) else b
                yr = y[t, oh]
                if sw == 2 and kw_n == 3:  # the common 3x3/2 window, unrolled
                    for ow in range(ow_n):
                        a = v[2 * ow]
                        b = v[2 * ow + 1]
                        c = v[2 * ow + 2]
                        m = a if ((a > b) | (a != a)) else b
                        yr[ow] = c if ((c > m) | (c != c)) else m
                elif sw == 2 and kw_n == 2:
                    for ow in range(ow_n):
                        a = v[2 * ow]
                        b = v[2 * ow + 1]
                        yr[ow] = a if ((a > b) | (a != a)) else b
                else:
                    for ow in range(ow_n):
                        m = v[ow * sw]
                        for kw in range(1, kw_n):
                            a = v[ow * sw + kw]
                            m = a if ((a > m) | (a != a)) else m
                        yr[ow] = m


@njit(parallel=True)
def _sum_pool(x, y, geo_a, inv_outer, inv_w, mode, p):
    """Average (``mode`` 0) or Lp (``mode`` 2) pooling, row by row.

    The divisor of an average is separable: ``inv_outer[od * OH + oh] * inv_w[ow]`` holds
    1 / (window count along D·H) × 1 / (count along W), with 0 for an empty window; ``prepare``
    computes the counts for ``count_include_pad`` either way.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh = geo.dd, geo.dh
    pd, ph = geo.pd, geo.ph
    nc, d_n, h_n = x.shape[0], x.shape[1], x.shape[2]
    od_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    taps = tap_ranges(geo)
    zero = y.dtype.type(0.0)
    inv_p = 1.0 / p
    for t in prange(nc):
        for od in range(od_n):
            for oh in range(oh_n):
                yrow = y[t, od, oh]
                yrow[:] = zero
                for kd in range(kd_n):
                    iz = od * sd - pd + kd * dd
                    if iz < 0 or iz >= d_n:
                        continue
                    for kh in range(kh_n):
                        iy = oh * sh - ph + kh * dh
                        if iy < 0 or iy >= h_n:
                            continue
                        src = x[t, iz, iy]
                        for kw in range(kw_n):
                            off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
                            if hi == lo:
                                continue
                            yseg = yrow[lo:hi]
                            if mode == _LP:
                                xs = src[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                if p == 2:
                                    for i in range(hi - lo):
                                        v = xs[i]
                                        yseg[i] += v * v
                                elif p == 1:
                                    for i in range(hi - lo):
                                        yseg[i] += abs(xs[i])
                                else:
                                    for i in range(hi - lo):
                                        yseg[i] += abs(xs[i]) ** p
                            elif sw == 1:
                                xseg = src[lo + off : hi + off]
                                for i in range(hi - lo):
                                    yseg[i] += xseg[i]
                            else:
                                xs = src[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    yseg[i] += xs[i]
                if mode == _LP:
                    if p == 2:
                        for i in range(ow_n):
                            yrow[i] = np.sqrt(yrow[i])
                    elif p != 1:
                        for i in range(ow_n):
                            yrow[i] = yrow[i] ** inv_p
                else:
                    scale = inv_outer[od * oh_n + oh]
                    for i in range(ow_n):
                        yrow[i] = yrow[i] * (scale * inv_w[i])


@njit(parallel=True)
def _avg_pool_rows(x, y, kh_n, kw_n, sh, sw, ph, pw, inv_outer, inv_w):
    """2-D AveragePool, dilation 1: the window's rows summed first, then its columns.

    As :func:`_max_pool_rows`: per output row the ``KH`` input rows are added element-wise
    (vectorized) into a row buffer with zeros on both sides, and each output is the sum of
    ``KW`` buffer entries at stride ``sw`` times its separable reciprocal count (see
    :func:`_inverse_counts`). The row-by-tap strided loops of :func:`_sum_pool` ran ShuffleNet's
    3x3/2 pools 7-10x slower than onnxruntime (measured).
    """
    nc, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    width = max(w_n + pw, (ow_n - 1) * sw + kw_n)
    zero = y.dtype.type(0.0)
    nchunk = min(nc, 64)
    for ch in prange(nchunk):
        v = np.zeros(width, y.dtype)
        vr = v[pw:pw + w_n]
        for t in range(ch * nc // nchunk, (ch + 1) * nc // nchunk):
            for oh in range(oh_n):
                # The window's rows inside the plane, summed in one pass for up to three rows.
                iy0 = oh * sh - ph
                a0 = max(iy0, 0)
                a1 = min(iy0 + kh_n, h_n)
                if a1 <= a0:
                    for i in range(w_n):
                        vr[i] = zero
                elif a1 - a0 == 1:
                    r0 = x[t, a0]
                    for i in range(w_n):
                        vr[i] = r0[i]
                elif a1 - a0 == 2:
                    r0 = x[t, a0]
                    r1 = x[t, a0 + 1]
                    for i in range(w_n):
                        vr[i] = r0[i] + r1[i]
                else:
                    r0 = x[t, a0]
                    r1 = x[t, a0 + 1]
                    r2 = x[t, a0 + 2]
                    for i in range(w_n):
                        vr[i] = r0[i] + r1[i] + r2[i]
                    for iy in range(a0 + 3, a1):
                        xr = x[t, iy]
                        for i in range(w_n):
                            vr[i] += xr[i]
                yr = y[t, oh]
                scale = inv_outer[oh]
                if sw == 2 and kw_n == 3:  # the common 3x3/2 window, unrolled
                    for ow in range(ow_n):
                        yr[ow] = (v[2 * ow] + v[2 * ow + 1] + v[2 * ow + 2]) * (scale * inv_w[ow])
                elif sw == 2 and kw_n == 2:
                    for ow in range(ow_n):
                        yr[ow] = (v[2 * ow] + v[2 * ow + 1]) * (scale * inv_w[ow])
                else:
                    for ow in range(ow_n):
                        acc = v[ow * sw]
                        for kw in range(1, kw_n):
                            acc += v[ow * sw + kw]
                        yr[ow] = acc * (scale * inv_w[ow])


@njit(parallel=True)
def _global_pool(x, y, mode, p):
    """Reduce each row of ``x`` ``(N*C, S)`` into ``y[row]``: average, max or Lp norm."""
    nc, size = x.shape
    inv_p = 1.0 / p
    for t in prange(nc):
        row = x[t]
        if mode == _G_MAX:
            best = row[0]
            for i in range(1, size):
                v = row[i]
                if not math.isnan(best) and not v <= best:  # NaN propagates (module docstring)
                    best = v
            y[t] = best
        elif mode == _G_AVG:
            acc = 0.0
            for i in range(size):
                acc += row[i]
            y[t] = acc / size
        else:
            acc = 0.0
            if p == 2:
                for i in range(size):
                    v = np.float64(row[i])
                    acc += v * v
            else:
                for i in range(size):
                    acc += abs(np.float64(row[i])) ** p
            y[t] = acc**inv_p


# Serial twins for inputs smaller than PARALLEL_MIN_WORK elements (no parallel launch).
_max_pool_serial = serial_twin(_max_pool)
_max_pool_rows_serial = serial_twin(_max_pool_rows)
_sum_pool_serial = serial_twin(_sum_pool)
_avg_pool_rows_serial = serial_twin(_avg_pool_rows)
_global_pool_serial = serial_twin(_global_pool)


def _inverse_counts(win: Window, include_pad: bool) -> tuple[np.ndarray, np.ndarray]:
    """The separable reciprocal divisors of AveragePool: ``(inv_outer[OD*OH], inv_w[OW])``.

    Along each axis, output position ``o`` averages over the taps ``o*s - pb + k*d`` that fall
    inside the input (``count_include_pad=0``), or inside the padded input clipped at its end
    (``count_include_pad=1``; a ceil_mode window hanging past the end padding is cut there).
    An empty window gets 0, so its output is 0 as in onnxruntime.
    """
    counts = []
    for i in range(len(win.kernel)):
        k, s, d = win.kernel[i], win.strides[i], win.dilations[i]
        n, pe, o = win.in_shape[i], win.pads_end[i], win.out_shape[i]
        starts = np.arange(o, dtype=np.int64) * s - win.pads_begin[i]
        if include_pad:
            ends = np.minimum(starts + k * d, n + pe)
            c = 1 + (ends - starts - 1) // d
        else:
            taps = starts[:, None] + np.arange(k, dtype=np.int64)[None, :] * d
            c = ((taps >= 0) & (taps < n)).sum(axis=1)
        counts.append(c.astype(np.float64))
    counts = [np.ones(1)] * (3 - len(counts)) + counts
    outer = (counts[0][:, None] * counts[1][None, :]).ravel()

    def inv(c: np.ndarray) -> np.ndarray:
        return np.divide(1.0, c, out=np.zeros_like(c), where=c > 0)

    return inv(outer), inv(counts[2])


# ----- kernels ------------------------------------------------------------------------------------
class _PoolBase(Kernel):
    """Shared prepare for the windowed pools: validation, geometry, output shape."""

    def _prepare_window(self, inputs: list[TensorInfo | None],
                        ints: bool = False) -> tuple[np.dtype, tuple]:
        """``ints``: int8 / uint8 inputs are accepted too (MaxPool)."""
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        if ints and np.dtype(x.dtype) in _INT8S:
            dt = np.dtype(x.dtype)
        elif ints and np.dtype(x.dtype) not in FLOAT_DTYPES:
            raise self.error(f"input X has dtype {np.dtype(x.dtype)}; this kernel supports "
                             "float32, float64, int8 and uint8", DTypeError)
        else:
            dt = float_dtype(self, [(x, "X")])
        rank = len(x.shape)
        if not 3 <= rank <= 5:
            raise self.error(
                f"input X must have rank 3, 4 or 5 (N, C, spatial...), got shape {x.shape}",
                ShapeError,
            )
        nsp = rank - 2
        ks = self.attr("kernel_shape")
        if ks is None or len(ks) == 0:
            raise self.error("attribute 'kernel_shape' is required")
        ks = tuple(int(k) for k in ks)
        if len(ks) != nsp:
            raise self.error(
                f"kernel_shape {list(ks)} has {len(ks)} axes but X of shape {x.shape} has {nsp} "
                "spatial axes",
                ShapeError,
            )
        if any(k < 1 for k in ks):
            raise self.error(f"kernel_shape {list(ks)} must be positive")
        ceil_mode = int(self.attr("ceil_mode", 0))
        if ceil_mode not in (0, 1):
            raise self.error(f"attribute 'ceil_mode' = {ceil_mode} must be 0 or 1")
        win = sliding_window(
            self,
            tuple(x.shape[2:]),
            ks,
            ceil_mode=bool(ceil_mode),
            check_pad_smaller_than_kernel=True,
        )
        self.dtype = dt
        self.win = win
        self.geo = win.geo()
        self.geo_a = packed(self.geo)
        self.in3 = as3d(win.in_shape)
        self.out3 = as3d(win.out_shape)
        y_shape = tuple(x.shape[:2]) + win.out_shape
        self.small = int(np.prod(x.shape)) < PARALLEL_MIN_WORK
        return dt, y_shape

    def _views(self, x: np.ndarray, y: np.ndarray):
        nc = x.shape[0] * x.shape[1]
        return (
            np.ascontiguousarray(x).reshape((nc,) + self.in3),
            y.reshape((nc,) + self.out3),
        )


class MaxPoolKernel(_PoolBase):
    """ONNX MaxPool: outputs Y and the optional int64 ``Indices`` (flat index into X).

    float32 / float64, and int8 / uint8 (MaxPool-12: quantized tensors of QOperator models),
    whose windows are padded with the type's minimum.
    """

    traits = OpTraits(int8="pool")

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        dt, y_shape = self._prepare_window(inputs, ints=True)
        self.storage_order = int(self.attr("storage_order", 0))
        if self.storage_order not in (0, 1):
            raise self.error(f"attribute 'storage_order' = {self.storage_order} must be 0 or 1")
        self.no_indices = np.zeros((0, 0, 0, 0), np.int64)
        self.one = dt.type(1)
        self.lowest = dt.type(np.iinfo(dt).min) if dt.kind in "iu" else dt.type(-np.inf)
        # 2-D, dilation 1: the row-wise kernel (used when the Indices output is not wanted).
        self.rows = len(y_shape) == 4 and all(d == 1 for d in self.win.dilations)
        return [TensorInfo(y_shape, dt), TensorInfo(y_shape, np.dtype(np.int64))]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        x4, y4 = self._views(inputs[0], y)
        ind = outputs[1] if len(outputs) > 1 else None
        if ind is None and self.rows:
            pool2 = _max_pool_rows_serial if self.small else _max_pool_rows
            g = self.geo
            pool2(x4.reshape(x4.shape[0], x4.shape[2], x4.shape[3]),
                  y4.reshape(y4.shape[0], y4.shape[2], y4.shape[3]),
                  g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, self.lowest)
            return
        pool = _max_pool_serial if self.small else _max_pool
        if ind is not None:
            pool(x4, y4, ind.reshape(y4.shape), self.geo_a, self.storage_order, True, self.one,
                 self.lowest)
        else:
            pool(x4, y4, self.no_indices, self.geo_a, self.storage_order, False, self.one,
                 self.lowest)


class AveragePoolKernel(_PoolBase):
    """ONNX AveragePool (``count_include_pad``, ``ceil_mode``, ``dilations``)."""

    traits = OpTraits(int8="pool")

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        dt, y_shape = self._prepare_window(inputs)
        include = int(self.attr("count_include_pad", 0))
        if include not in (0, 1):
            raise self.error(f"attribute 'count_include_pad' = {include} must be 0 or 1")
        self.inv_outer, self.inv_w = _inverse_counts(self.win, bool(include))
        # Reciprocal counts in the tensor's dtype for the row-wise kernel (float64 otherwise).
        self.rows = len(y_shape) == 4 and all(d == 1 for d in self.win.dilations)
        if self.rows:
            self.inv_outer_t = self.inv_outer.astype(dt)
            self.inv_w_t = self.inv_w.astype(dt)
        return [TensorInfo(y_shape, dt)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        x4, y4 = self._views(inputs[0], y)
        if self.rows:
            g = self.geo
            (_avg_pool_rows_serial if self.small else _avg_pool_rows)(
                x4.reshape(x4.shape[0], x4.shape[2], x4.shape[3]),
                y4.reshape(y4.shape[0], y4.shape[2], y4.shape[3]),
                g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, self.inv_outer_t, self.inv_w_t)
            return
        pool = _sum_pool_serial if self.small else _sum_pool
        pool(x4, y4, self.geo_a, self.inv_outer, self.inv_w, _AVG, 1)


def _p_attr(kernel: Kernel) -> int:
    p = int(kernel.attr("p", 2))
    if p < 1:
        raise kernel.error(f"attribute 'p' = {p} must be >= 1")
    return p


class LpPoolKernel(_PoolBase):
    """ONNX LpPool: ``(sum |x|^p)^(1/p)`` over each window; pads contribute nothing."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        dt, y_shape = self._prepare_window(inputs)
        self.p = _p_attr(self)
        self.unused = np.zeros(0)
        return [TensorInfo(y_shape, dt)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        x4, y4 = self._views(inputs[0], y)
        pool = _sum_pool_serial if self.small else _sum_pool
        pool(x4, y4, self.geo_a, self.unused, self.unused, _LP, self.p)


class _GlobalPoolBase(Kernel):
    mode = _G_AVG

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 1, 1)
        x = inputs[0]
        dt = float_dtype(self, [(x, "X")])
        if len(x.shape) < 3:
            raise self.error(
                f"input X must have rank >= 3 (N, C, spatial...), got shape {x.shape}", ShapeError
            )
        if any(d == 0 for d in x.shape[2:]):
            raise self.error(f"input X has an empty spatial axis: {x.shape}", ShapeError)
        self.p = _p_attr(self) if self.mode == _G_LP else 1
        return [TensorInfo(tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2), dt)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        x = np.ascontiguousarray(inputs[0])
        nc = x.shape[0] * x.shape[1]
        fn = _global_pool_serial if x.size < PARALLEL_MIN_WORK else _global_pool
        fn(x.reshape(nc, -1), y.reshape(nc), self.mode, self.p)


class GlobalAveragePoolKernel(_GlobalPoolBase):
    """ONNX GlobalAveragePool: the mean over all spatial axes (float64 accumulation)."""

    traits = OpTraits(int8="pool")

    mode = _G_AVG


class GlobalMaxPoolKernel(_GlobalPoolBase):
    """ONNX GlobalMaxPool: the max over all spatial axes, NaN-propagating."""

    mode = _G_MAX


class GlobalLpPoolKernel(_GlobalPoolBase):
    """ONNX GlobalLpPool: the Lp norm over all spatial axes."""

    mode = _G_LP


# ----- MaxUnpool (issue 3) ------------------------------------------------------------------------
class MaxUnpoolKernel(Kernel):
    """ONNX MaxUnpool: scatter X to the flat positions ``I`` of MaxPool's Indices output.

    ``I`` indexes the tensor of the pooled input's shape, ``(in - 1) * stride - pads + kernel``
    per spatial axis; with ``output_shape`` that tensor is then placed at the origin of a larger
    zero tensor, as the ONNX definition and its conformance case do (onnxruntime instead reads
    the indices as positions in the ``output_shape`` tensor). Indices are data: each is checked
    against that size before anything is written (an :class:`~edgert.errors.InputError`
    otherwise).
    """

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        from edgert.errors import DTypeError

        self.require_inputs(inputs, 2, 3)
        x, ind = inputs[0], inputs[1]
        if np.dtype(x.dtype).kind != "f":
            raise self.error(f"X has dtype {x.dtype}; expected a float type", DTypeError)
        if np.dtype(ind.dtype) != np.int64 or tuple(ind.shape) != tuple(x.shape):
            raise self.error(f"I must be int64 of X's shape {x.shape}, got {ind.dtype} "
                             f"{ind.shape}", ShapeError)
        nsp = len(x.shape) - 2
        ks = [int(v) for v in (self.attr("kernel_shape") or [])]
        if nsp < 1 or len(ks) != nsp or min(ks) < 1:
            raise self.error(f"kernel_shape {ks} must give one size >= 1 per spatial axis of "
                             f"X {x.shape}")
        strides = [int(v) for v in (self.attr("strides") or [1] * nsp)]
        pads = [int(v) for v in (self.attr("pads") or [0] * (2 * nsp))]
        if len(strides) != nsp or len(pads) != 2 * nsp or min(strides) < 1 or min(pads) < 0:
            raise self.error(f"strides {strides} / pads {pads} do not fit {nsp} spatial axes")
        inferred = [x.shape[0], x.shape[1]] + [
            (x.shape[2 + d] - 1) * strides[d] - pads[d] - pads[nsp + d] + ks[d]
            for d in range(nsp)]
        if min(inferred[2:]) < 1:
            raise self.error(f"the unpooled shape {inferred} is empty", ShapeError)
        self._inferred = tuple(inferred)
        shape_info = inputs[2] if len(inputs) > 2 else None
        if shape_info is None:
            return [TensorInfo(self._inferred, np.dtype(x.dtype))]
        if shape_info.value is None:  # known only at run time
            return [TensorInfo(None, np.dtype(x.dtype))]
        return [TensorInfo(self._out_shape(shape_info.value), np.dtype(x.dtype))]

    def _out_shape(self, value: np.ndarray) -> tuple[int, ...]:
        out = tuple(int(v) for v in np.asarray(value).reshape(-1))
        inferred = self._inferred
        if len(out) != len(inferred) or any(o < i for o, i in zip(out, inferred)) or \
                out[:2] != inferred[:2]:
            raise self.error(f"output_shape {list(out)} must keep N, C and be at least the "
                             f"unpooled shape {list(inferred)}", ShapeError)
        return out

    def invoke(self, inputs, outputs):
        from edgert.errors import InputError

        x, ind = inputs[0], inputs[1]
        size = math.prod(self._inferred)
        if ind.size and (ind.min() < 0 or ind.max() >= size):
            raise self.error(f"indices must lie in [0, {size}) for the unpooled shape "
                             f"{list(self._inferred)}, got {ind.min()}..{ind.max()}", InputError)
        flat = np.zeros(size, x.dtype)
        flat[ind.reshape(-1)] = x.reshape(-1)
        y = outputs[0]
        dynamic = y is None
        if dynamic:
            y = np.empty(self._out_shape(inputs[2]), x.dtype)
        y.fill(0)
        y[tuple(slice(0, d) for d in self._inferred)] = flat.reshape(self._inferred)
        return [y] if dynamic else None


def register(reg: KernelRegistry) -> None:
    reg.add("MaxUnpool", MaxUnpoolKernel, since=9)
    reg.add("MaxPool", MaxPoolKernel)
    reg.add("AveragePool", AveragePoolKernel)
    reg.add("LpPool", LpPoolKernel)
    reg.add("GlobalAveragePool", GlobalAveragePoolKernel)
    reg.add("GlobalMaxPool", GlobalMaxPoolKernel)
    reg.add("GlobalLpPool", GlobalLpPoolKernel)
