"""CPU kernels: Conv and ConvTranspose (1-D, 2-D and 3-D, NCHW layout, float32/float64).

Semantics are the newest ONNX opset's (the importer rewrites older forms). Every spatial rank is
handled as 3-D: a 1-D input ``(N, C, W)`` is viewed as ``(N, C, 1, 1, W)`` and a 2-D one as
``(N, C, 1, H, W)``, with kernel 1, stride 1, dilation 1 and no padding on the added axes. One
compiled kernel per dtype then serves every rank, which keeps Numba compile time down, and the
size-1 loops cost nothing measurable.

How Conv is computed (the path is chosen once, in ``prepare``):

* **pointwise** (1×1 kernel, stride 1, no padding): the image already *is* the GEMM operand,
  ``Y[n] (M, P) = W (M, C) @ X[n] (C, P)``: NumPy's OpenBLAS called from a Numba kernel
  (:mod:`.cblas`), in column blocks per thread with the bias and activation applied to each
  block while it is in cache (``_pointwise_blas``).
* **direct** (group 1, float32, 2-D, at least ``DCONV_MIN_C`` input and ``DCONV_MIN_M``
  output channels): :mod:`.dconv`, 16 output channels in the vector lanes by 6 positions per
  tile, read straight from a padded copy of the input.
* **depthwise** (one input channel per group, ``group > 1``): direct Numba kernels. Im2col would
  copy each input ``K`` times to feed a GEMM with inner dimension ``K`` (≈9), which BLAS runs far
  below peak. 3x3 layers with pads 1 and stride 1 or 2 (MobileNet's) take the flat-plane
  ``_depthwise3`` (no padded copy, nine contiguous streams per plane) except on planes small enough
  for ``_depthwise_hwc`` to win (``DW3_MIN_PLANE``). Other 2-D layers with dilation 1 take, by
  plane size (measured on MobileNetV2's shapes):
  small planes (input ≤ 32×32, multiplier 1) the channel-vectorized ``_depthwise_hwc``; strided
  or large planes the phase-plane ``_depthwise_phase``; small stride-1 planes otherwise the
  padded-plane ``_depthwise_s1``; everything else the general ``_depthwise``.
* **small pointwise** (≤ ``POINTWISE_SMALL_MACS``): one fused Numba call (``_pointwise_small``)
  instead of a BLAS call plus an epilogue call, whose dispatch dominated tiny layers.
* **stems** (dense 3x3, stride 2, pads 1, even planes, ≤ ``CONV3_S2_MAX_C`` input channels):
  ``_conv3_s2`` sums flat 9-tap streams over the input's stride-2 phase planes, one call with the
  epilogue fused (im2col built a 27-row column matrix for a 27-deep GEMM).

Paths that are one Numba call remember it (``_single``): later invokes with the same planned
arrays repeat the call without rebuilding views and arguments in Python.
* **implicit GEMM** (group 1, float32, constant weights, at most ``IMPLICIT_MAX_M`` output
  channels or ``IMPLICIT_MAX_P`` output positions, where dconv does not apply):
  :mod:`.fgemm` reads the receptive fields
  straight from a padded copy of the input (no column matrix) with its own FMA micro-kernel.
* **im2col + GEMM** (everything else): per thread, blocks of output rows are unrolled into the
  thread's scratch, multiplied by OpenBLAS and finished by the epilogue while in cache
  (``_conv_rows_blas``); without a BLAS reachable from compiled code, a Numba im2col into a
  scratch buffer and ``np.matmul(..., out=...)`` for all groups.

ConvTranspose is the adjoint: ``col (M·K, P_in) = Wᵀ @ X[n]`` by BLAS, then a Numba col2im
scatters-adds the columns into the output, parallel over output channels (disjoint writes).

Bias and a fused activation (``activation`` attribute, see :mod:`.epilogue`) are applied while
each image's output is still in cache.

Output channels with bit-identical constant filters (group 1, GEMM paths) are computed once and
copied: OpenBLAS rounds identical rows of a GEMM operand differently depending on their position
(see :func:`.blas.identical_rows`), and an ill-conditioned consumer such as a Softmax over
logits of ~1e9 turns that one-ulp gap into a visible error, where every channel should be equal.

Constant weights are packed in ``prepare`` into owned, writable, contiguous arrays. That also
matters to Numba: weights mapped read-only from a ``.edgert`` file would otherwise be a different
array type and compile the kernels a second time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import PARALLEL_MIN_WORK, njit, prange, serial_twin
from edgert.runtime.kernels.cpu import blas, cblas, dconv, fgemm
from edgert.runtime.kernels.cpu.blas import identical_rows, matmul
from edgert.runtime.kernels.cpu.cblas import gemm_at
from edgert.runtime.kernels.cpu.epilogue import (
    ACT_NONE,
    Activation,
    _clip,
    act_row,
    clamp_bounds,
    epilogue,
    parse_activation,
    sum_epilogue,
)
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


# ----- shared validation and window geometry (also used by pooling) -------------------------------
def float_dtype(kernel: Kernel, infos: list[tuple[TensorInfo | None, str]]) -> np.dtype:
    """The common float32/float64 dtype of the given inputs, or a DTypeError naming the op."""
    first = infos[0][0].dtype
    for info, name in infos:
        if info is None:
            continue
        dt = np.dtype(info.dtype)
        if dt not in FLOAT_DTYPES:
            raise kernel.error(
                f"input {name} has dtype {dt}; this kernel supports float32 and float64", DTypeError
            )
        if dt != np.dtype(first):
            raise kernel.error(
                f"input {name} has dtype {dt} but input {infos[0][1]} has {np.dtype(first)}",
                DTypeError,
            )
    return np.dtype(first)


def int_list_attr(
    kernel: Kernel, name: str, length: int, default: int | None, minimum: int
) -> list[int]:
    """An integer-list attribute of exactly ``length`` items, each ``>= minimum``."""
    value = kernel.attr(name)
    if value is None or (len(value) == 0 and default is not None):
        if default is None:
            raise kernel.error(f"attribute '{name}' is required")
        return [default] * length
    vals = [int(v) for v in value]
    if len(vals) != length:
        raise kernel.error(f"attribute '{name}' has {len(vals)} values, expected {length}")
    for v in vals:
        if v < minimum:
            raise kernel.error(f"attribute '{name}' = {vals}: every value must be >= {minimum}")
    return vals


def auto_pad_attr(kernel: Kernel) -> str:
    mode = kernel.attr("auto_pad", "NOTSET")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in AUTO_PADS:
        raise kernel.error(
            f"attribute 'auto_pad' = {mode!r}; expected one of {', '.join(AUTO_PADS)}"
        )
    return mode


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry over the spatial axes (``nsp`` of them) of one op."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def geo(self) -> np.ndarray:
        """The geometry as Numba kernels take it, extended to 3 spatial axes at the front.

        ``int64[21]``: kernel[3], strides[3], dilations[3], pads_begin[3], in[3], out[3],
        pads_end[3].
        """
        pad = 3 - len(self.kernel)
        ones, zeros = [1] * pad, [0] * pad
        vals = (
            ones + list(self.kernel),
            ones + list(self.strides),
            ones + list(self.dilations),
            zeros + list(self.pads_begin),
            ones + list(self.in_shape),
            ones + list(self.out_shape),
            zeros + list(self.pads_end),
        )
        return np.array([v for group in vals for v in group], dtype=np.int64)


def as3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A spatial shape of rank 1..3 extended to 3 axes by leading 1s."""
    return (1,) * (3 - len(shape)) + tuple(shape)  # type: ignore[return-value]


def sliding_window(
    kernel: Kernel,
    in_shape: tuple[int, ...],
    kshape: tuple[int, ...],
    ceil_mode: bool = False,
    check_pad_smaller_than_kernel: bool = False,
) -> Window:
    """Resolve strides, dilations, pads and ``auto_pad`` into a :class:`Window`.

    Output size per axis (ONNX Conv / pooling, newest opsets), with ``ext = (k - 1) * d + 1``:

    * explicit pads: ``floor((in + pb + pe - ext) / s) + 1``; with ``ceil_mode`` the ceiling, minus
      one when the last window would start inside the end padding;
    * ``VALID``: as explicit pads of 0. (With ``ceil_mode`` the spec's text gives one window fewer
      than onnxruntime and ONNX shape inference, which agree with each other; they are followed.)
    * ``SAME_*``: ``ceil(in / s)``, with total padding ``(out - 1) * s + ext - in`` split evenly,
      the odd element at the end (``SAME_UPPER``) or at the beginning (``SAME_LOWER``).

    Raises:
        KernelError: malformed attributes.
        ShapeError: the dilated kernel does not fit the padded input (an empty output).
    """
    nsp = len(in_shape)
    strides = int_list_attr(kernel, "strides", nsp, 1, 1)
    dilations = int_list_attr(kernel, "dilations", nsp, 1, 1)
    mode = auto_pad_attr(kernel)
    pads = int_list_attr(kernel, "pads", 2 * nsp, 0, 0)
    if check_pad_smaller_than_kernel and mode == "NOTSET":
        for i in range(nsp):
            if pads[i] >= kshape[i] or pads[i + nsp] >= kshape[i]:
                raise kernel.error(
                    f"pads {pads} must be smaller than kernel_shape {list(kshape)} on every axis"
                )
    pb, pe, out = [], [], []
    for i in range(nsp):
        n, k, s, d = in_shape[i], kshape[i], strides[i], dilations[i]
        ext = (k - 1) * d + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
            total = max(0, (o - 1) * s + ext - n)
            head = total // 2 if mode == "SAME_UPPER" else total - total // 2
            b, e = head, total - head
        else:
            b, e = (pads[i], pads[i + nsp]) if mode == "NOTSET" else (0, 0)
            span = n + b + e - ext
            if span < 0:
                raise kernel.error(
                    f"spatial axis {i}: the kernel extent {ext} (kernel {k}, dilation {d}) is "
                    f"larger than the padded input {n + b + e} (input {n}, pads {b}+{e})",
                    ShapeError,
                )
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + b:  # the last window would start in the end padding
                    o -= 1
            else:
                o = span // s + 1
        if o <= 0:
            raise kernel.error(f"spatial axis {i}: empty output (input size {n})", ShapeError)
        pb.append(b)
        pe.append(e)
        out.append(o)
    return Window(
        tuple(kshape),
        tuple(strides),
        tuple(dilations),
        tuple(pb),
        tuple(pe),
        tuple(in_shape),
        tuple(out),
    )


def kernel_shape_attr(kernel: Kernel, w_spatial: tuple[int, ...]) -> None:
    """Check the optional ``kernel_shape`` attribute against the weight's spatial shape."""
    ks = kernel.attr("kernel_shape")
    if ks is not None and len(ks) > 0 and tuple(int(v) for v in ks) != tuple(w_spatial):
        raise kernel.error(
            f"attribute kernel_shape {list(ks)} does not match the weight's spatial shape "
            f"{list(w_spatial)}",
            ShapeError,
        )


def owned(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A writable, C-contiguous copy of a constant (mapped weights may be read-only)."""
    return np.array(value, dtype=dtype, order="C", copy=True)


# ----- Numba kernels ------------------------------------------------------------------------------
# Performance note (measured, Numba 0.68 / LLVM): an inner loop that indexes ``a[i + offset]``
# with a signed offset is NOT vectorized, because Numba's negative-index wraparound test stays in
# the loop. Every hot loop below therefore runs ``for i in range(n)`` over slices taken outside
# the loop (``yrow[lo:hi]``, ``src[lo + off:hi + off]``); that form compiles to AVX FMAs and made
# the depthwise kernel ~6x faster. Strided windows are slices with a step (``src[a:b:sw]``),
# 3x faster than ``src[i * sw]``; stride 1 keeps its own contiguous branch.
@njit
def valid_range(n_out, n_in, stride, offset):
    """``[lo, hi)``: the positions ``o < n_out`` with ``0 <= o * stride + offset < n_in``."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = (n_in - 1 - offset) // stride + 1  # Python floor division: negative stays negative
    hi = min(hi, n_out)
    hi = max(hi, lo)
    return lo, hi


@njit
def tap_ranges(geo):
    """Per innermost-axis tap ``kw``: the input offset and the valid output range ``[lo, hi)``.

    Returns an ``int64[KW, 3]`` array of ``(offset, lo, hi)``, hoisting two integer divisions per
    tap out of the row loops.
    """
    kw_n, sw, dw, pw = geo[2], geo[5], geo[8], geo[11]
    w_n, ow_n = geo[14], geo[17]
    out = np.empty((kw_n, 3), np.int64)
    for kw in range(kw_n):
        off = kw * dw - pw
        lo, hi = valid_range(ow_n, w_n, sw, off)
        out[kw, 0] = off
        out[kw, 1] = lo
        out[kw, 2] = hi
    return out


@njit(parallel=True)
def _im2col(x, col, geo):
    """Unroll receptive fields: ``col[(c, kd, kh, kw), (od, oh, ow)] = x[c, id, ih, iw]`` or 0.

    ``x``: one image ``(C, D, H, W)``; ``col``: ``(C * KD * KH * KW, OD * OH * OW)``.
    Parallel over rows; each row is written by exactly one thread.
    """
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh = geo[6], geo[7]
    pd, ph = geo[9], geo[10]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    c_n, d_n, h_n = x.shape[0], x.shape[1], x.shape[2]
    k_n = kd_n * kh_n * kw_n
    taps = tap_ranges(geo)
    zero = col.dtype.type(0.0)
    for r in prange(c_n * k_n):
        c = r // k_n
        t = r - c * k_n
        kd = t // (kh_n * kw_n)
        kh = (t // kw_n) % kh_n
        kw = t % kw_n
        dst = col[r]
        off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
        for od in range(od_n):
            iz = od * sd - pd + kd * dd
            for oh in range(oh_n):
                iy = oh * sh - ph + kh * dh
                seg = dst[(od * oh_n + oh) * ow_n : (od * oh_n + oh + 1) * ow_n]
                if iz < 0 or iz >= d_n or iy < 0 or iy >= h_n or hi == lo:
                    seg[:] = zero
                    continue
                seg[:lo] = zero
                seg[hi:] = zero
                dseg = seg[lo:hi]
                if sw == 1:
                    dseg[:] = x[c, iz, iy, lo + off : hi + off]
                else:
                    sseg = x[c, iz, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for i in range(hi - lo):
                        dseg[i] = sseg[i]


@njit(parallel=True)
def _im2col_batch(x, col, geo):
    """:func:`_im2col` for every image at once: ``x`` ``(N, C, D, H, W)``, ``col``
    ``(N, C * K, P)``. One parallel region for the whole batch instead of one per image."""
    rows = col.shape[1]
    for r in prange(x.shape[0] * rows):
        n = r // rows
        _im2col_row(x[n], col[n], geo, r - n * rows)


@njit(parallel=True)
def _im2col_hrows(x, col, geo, h0, h1):
    """The columns of output rows ``h0 <= oh < h1`` of a 2-D conv (``OD == 1``).

    ``x``: one image ``(C, 1, H, W)``; ``col``: ``(C * KH * KW, (h1 - h0) * OW)``. Lets invoke
    build the column matrix block by block so that each block is still in cache when BLAS
    reads it (a whole 3x3 column matrix of a 128-channel 56x56 layer is 14 MB).
    """
    kh_n, kw_n = geo[1], geo[2]
    sh, sw = geo[4], geo[5]
    dh, dw = geo[7], geo[8]
    ph, pw = geo[10], geo[11]
    ow_n = geo[17]
    h_n, w_n = x.shape[2], x.shape[3]
    k_n = kh_n * kw_n
    zero = col.dtype.type(0.0)
    for r in prange(col.shape[0]):
        c = r // k_n
        t = r - c * k_n
        kh = t // kw_n
        kw = t - kh * kw_n
        dst = col[r]
        off = kw * dw - pw
        lo, hi = valid_range(ow_n, w_n, sw, off)
        for oh in range(h0, h1):
            iy = oh * sh - ph + kh * dh
            seg = dst[(oh - h0) * ow_n : (oh - h0 + 1) * ow_n]
            if iy < 0 or iy >= h_n or hi == lo:
                seg[:] = zero
                continue
            seg[:lo] = zero
            seg[hi:] = zero
            dseg = seg[lo:hi]
            if sw == 1:
                dseg[:] = x[c, 0, iy, lo + off : hi + off]
            else:
                sseg = x[c, 0, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                for i in range(hi - lo):
                    dseg[i] = sseg[i]


_im2col_hrows_serial = serial_twin(_im2col_hrows)


@njit(parallel=True)
def _conv_rows_blas(fn, wide, x, w, bias, y, geo, act, p0, p1, col, block_rows, parts):
    """A group-1 2-D conv as im2col + BLAS GEMM + epilogue, in blocks of output rows.

    ``x`` ``(N, C, 1, H, W)``, ``w`` ``(M, C * KH * KW)``, ``y`` ``(N, M, OH * OW)``, all
    C-contiguous; ``col`` ``(>= parts, C * KH * KW * block_rows * OW)``. Each of ``parts``
    threads takes a contiguous range of output rows of every image and, per block of at most
    ``block_rows`` rows, unrolls it into its own ``col[t]``, multiplies it into ``y`` through the
    BLAS routine at ``fn`` (:mod:`.cblas`), then adds the bias and activation while the block is
    in cache: one parallel region per conv, no separate epilogue pass.
    """
    n_img, m_n, p_n = y.shape
    k_n = w.shape[1]
    oh_n, ow_n = geo[16], geo[17]
    isz = y.itemsize
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    for t in prange(parts):
        r0 = oh_n * t // parts
        r1 = oh_n * (t + 1) // parts
        buf = col[t]
        for i in range(n_img):
            for h0 in range(r0, r1, block_rows):
                h1 = min(h0 + block_rows, r1)
                cols = (h1 - h0) * ow_n
                blk = buf[: k_n * cols].reshape((k_n, cols))
                _im2col_hrows_serial(x[i], blk, geo, h0, h1)
                gemm_at(fn, wide, m_n, cols, k_n, w.ctypes.data, k_n, blk.ctypes.data, cols,
                        zero, y.ctypes.data + (i * m_n * p_n + h0 * ow_n) * isz, p_n)
                if nb > 0 or act != ACT_NONE:
                    for m in range(m_n):
                        act_row(y[i, m, h0 * ow_n : h1 * ow_n], bias[m] if nb > 0 else zero,
                                act, p0, p1)


_conv_rows_blas_serial = serial_twin(_conv_rows_blas)


@njit(parallel=True)
def _pointwise_blas(fn, wide, w, x, bias, y, z, act, p0, p1, parts, split_rows, block, shuffle):
    """A pointwise conv ``y[i, g] = act(w[g] @ x[i, g] + bias[g] + z[i, g])`` per group ``g``
    through the BLAS routine at ``fn``, over ``parts`` threads: each takes a range of every
    group's output channels (``split_rows`` 1), whole groups (``split_rows`` 2, ``G`` a
    multiple of ``parts``) or a range of positions (0), the latter in blocks of ``block``
    columns so that the epilogue finds its block in cache. ``w``
    ``(G, M/G, C/G)``, ``x`` ``(N, C, P)``, ``y`` and the residual ``z`` ``(N, M, P)`` (``z``
    empty: none), C-contiguous.

    ``shuffle``: ``y`` is channel-shuffled by the groups (edgert.Conv's ``channel_shuffle``):
    row ``j`` of group ``g`` is written at channel ``j * G + g``, through the GEMM's output row
    stride; bias and residual stay indexed by the conv's own channel."""
    n_img, m_n, p_n = y.shape
    g_n, mg_n, k_n = w.shape
    isz = y.itemsize
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    has_z = z.shape[0] > 0
    epi = nb > 0 or act != ACT_NONE or has_z
    # output channel of group g's row j, as (first channel, channel step)
    ch_step = g_n if shuffle else 1
    ldc = ch_step * p_n
    for t in prange(parts):
        for i in range(n_img):
            for g in range(g_n):
                pw = w.ctypes.data + g * mg_n * k_n * isz
                px = x.ctypes.data + (i * g_n + g) * k_n * p_n * isz
                ch0 = g if shuffle else g * mg_n
                py = y.ctypes.data + (i * m_n + ch0) * p_n * isz
                m_base = g * mg_n
                if split_rows != 0:
                    if split_rows == 2:  # whole groups per thread
                        if g % parts != t:
                            continue
                        r0, r1 = 0, mg_n
                    else:
                        r0 = mg_n * t // parts
                        r1 = mg_n * (t + 1) // parts
                    gemm_at(fn, wide, r1 - r0, p_n, k_n, pw + r0 * k_n * isz, k_n, px, p_n,
                            zero, py + r0 * ldc * isz, ldc)
                    if epi:
                        for j in range(r0, r1):
                            m = m_base + j
                            row = y[i, ch0 + j * ch_step]
                            if has_z:
                                row += z[i, m]
                            act_row(row, bias[m] if nb > 0 else zero, act, p0, p1)
                    continue
                step = ((p_n + parts - 1) // parts + 15) // 16 * 16
                c0 = t * step
                c1 = min(p_n, c0 + step)
                # equal blocks of at most ``block`` columns (no short tail: BLAS repacks W per
                # call)
                nblk = max(1, (c1 - c0 + block - 1) // block)
                bw = ((c1 - c0 + nblk - 1) // nblk + 15) // 16 * 16
                for b0 in range(c0, c1, bw):
                    b1 = min(c1, b0 + bw)
                    gemm_at(fn, wide, mg_n, b1 - b0, k_n, pw, k_n, px + b0 * isz, p_n,
                            zero, py + b0 * isz, ldc)
                    if epi:
                        for j in range(mg_n):
                            m = m_base + j
                            row = y[i, ch0 + j * ch_step, b0:b1]
                            if has_z:
                                row += z[i, m, b0:b1]
                            act_row(row, bias[m] if nb > 0 else zero, act, p0, p1)


_pointwise_blas_serial = serial_twin(_pointwise_blas)


@njit
def _im2col_row(x, col, geo, r):
    """Row ``r`` of :func:`_im2col` (one ``(c, kd, kh, kw)`` tap over all output positions)."""
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    od_n, oh_n, ow_n = geo[15], geo[16], geo[17]
    d_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    k_n = kd_n * kh_n * kw_n
    zero = col.dtype.type(0.0)
    c = r // k_n
    t = r - c * k_n
    kd = t // (kh_n * kw_n)
    kh = (t // kw_n) % kh_n
    kw = t % kw_n
    dst = col[r]
    off = kw * dw - pw
    lo, hi = valid_range(ow_n, w_n, sw, off)
    for od in range(od_n):
        iz = od * sd - pd + kd * dd
        for oh in range(oh_n):
            iy = oh * sh - ph + kh * dh
            seg = dst[(od * oh_n + oh) * ow_n : (od * oh_n + oh + 1) * ow_n]
            if iz < 0 or iz >= d_n or iy < 0 or iy >= h_n or hi == lo:
                seg[:] = zero
                continue
            seg[:lo] = zero
            seg[hi:] = zero
            dseg = seg[lo:hi]
            if sw == 1:
                dseg[:] = x[c, iz, iy, lo + off : hi + off]
            else:
                sseg = x[c, iz, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                for i in range(hi - lo):
                    dseg[i] = sseg[i]


@njit(parallel=True)
def _depthwise(x, w, bias, y, geo, act, p0, p1):
    """Direct conv with one input channel per group: ``y[n, m] = x[n, m // mult] ⋆ w[m]``.

    ``x``: ``(N, C, D, H, W)``, ``w``: ``(M, KD, KH, KW)`` with ``M = C * mult``, ``y``:
    ``(N, M, OD, OH, OW)``. Each output row is accumulated tap by tap over its valid range (no
    bounds test in the inner loop) while it sits in L1, then gets bias and activation.
    """
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh = geo[6], geo[7]
    pd, ph = geo[9], geo[10]
    n_img, c_n, d_n, h_n = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    m_n, od_n, oh_n = y.shape[1], y.shape[2], y.shape[3]
    mult = m_n // c_n
    nb = bias.shape[0]
    taps = tap_ranges(geo)
    zero = y.dtype.type(0.0)
    for t in prange(n_img * m_n):
        n = t // m_n
        m = t - n * m_n
        c = m // mult
        b = bias[m] if nb > 0 else zero
        for od in range(od_n):
            for oh in range(oh_n):
                yrow = y[n, m, od, oh]
                yrow[:] = zero
                for kd in range(kd_n):
                    iz = od * sd - pd + kd * dd
                    if iz < 0 or iz >= d_n:
                        continue
                    for kh in range(kh_n):
                        iy = oh * sh - ph + kh * dh
                        if iy < 0 or iy >= h_n:
                            continue
                        src = x[n, c, iz, iy]
                        for kw in range(kw_n):
                            off, lo, hi = taps[kw, 0], taps[kw, 1], taps[kw, 2]
                            wv = w[m, kd, kh, kw]
                            yseg = yrow[lo:hi]
                            if sw == 1:
                                xseg = src[lo + off : hi + off]
                                for i in range(hi - lo):
                                    yseg[i] += wv * xseg[i]
                            elif hi > lo:
                                xseg = src[lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    yseg[i] += wv * xseg[i]
                act_row(yrow, b, act, p0, p1)


@njit(parallel=True)
def _depthwise_s1(x, w, bias, y, ph, pw, act, p0, p1):
    """Depthwise 2-D conv with stride 1 and dilation 1, one zero-padded plane at a time.

    ``x``: ``(N, C, H, W)``, ``w``: ``(M, KH, KW)``, ``y``: ``(N, M, OH, OW)``. The plane is
    copied into a padded buffer of row width ``Wp = OW + KW - 1``; then every tap is one long
    contiguous multiply-add over ``OH * Wp`` elements (the ``KW - 1`` extra columns per row are
    computed and dropped). :func:`_depthwise` runs a short loop per output row and tap instead,
    whose set-up dominated on 7..56-wide rows (measured 0.8-2.8 GMAC/s).
    """
    n_img, c_n, h_n, w_n = x.shape
    m_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    kh_n, kw_n = w.shape[1], w.shape[2]
    mult = m_n // c_n
    nb = bias.shape[0]
    hp = oh_n + kh_n - 1
    wp = ow_n + kw_n - 1
    span = oh_n * wp
    zero = y.dtype.type(0.0)
    for t in prange(n_img * m_n):
        n = t // m_n
        m = t - n * m_n
        c = m // mult
        xp = np.zeros(hp * wp + kw_n, y.dtype)
        ncopy = min(w_n, wp - pw)
        for iy in range(h_n):
            py = iy + ph
            if py >= hp:
                break
            if ncopy > 0:
                xp[py * wp + pw : py * wp + pw + ncopy] = x[n, c, iy, :ncopy]
        acc = np.zeros(span, y.dtype)
        for kh in range(kh_n):
            for kw in range(kw_n):
                wv = w[m, kh, kw]
                src = xp[kh * wp + kw : kh * wp + kw + span]
                for i in range(span):
                    acc[i] += wv * src[i]
        b = bias[m] if nb > 0 else zero
        for oh in range(oh_n):
            yrow = y[n, m, oh]
            yrow[:] = acc[oh * wp : oh * wp + ow_n]
            act_row(yrow, b, act, p0, p1)


@njit(parallel=True)
def _depthwise_phase(x, w, bias, y, sh, sw, ph, pw, act, p0, p1):
    """Depthwise 2-D conv, any stride, dilation 1, over zero-padded *phase planes*.

    ``x``: ``(N, C, H, W)``, ``w``: ``(M, KH, KW)``, ``y``: ``(N, M, OH, OW)``. The padded input
    plane is split into ``sh * sw`` phase planes ``P[a, b][r, q] = xpad[r * sh + a, q * sw + b]``
    of row width ``Wq = OW + (KW - 1) // sw``. Tap ``(kh, kw)`` of output ``i = oh * Wq + ow``
    then reads ``P[kh % sh, kw % sw][i + (kh // sh) * Wq + kw // sw]``: every tap is one
    contiguous stream at any stride (the ``Wq - OW`` extra columns per row are computed and
    dropped). A stride-2 layer so runs as fast as a stride-1 one, where :func:`_depthwise`
    read strided slices tap by tap (measured 1.0 -> 0.84 ms on a 144-channel 56x56 layer).

    3x3 kernels (nearly all depthwise layers) sum their nine taps in one loop, one store per
    output instead of nine read-modify-writes. Channels are handed out in at most 32 chunks so
    that the plane buffers are allocated once per chunk, not once per channel.
    """
    n_img, c_n, h_n, w_n = x.shape
    m_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    kh_n, kw_n = w.shape[1], w.shape[2]
    mult = m_n // c_n
    nb = bias.shape[0]
    hq = oh_n + (kh_n - 1) // sh
    wq = ow_n + (kw_n - 1) // sw
    # The last tap's stream runs (KW - 1) // sw elements past hq * wq (dropped columns): pad.
    plane = hq * wq + (kw_n - 1) // sw + 1
    span = oh_n * wq
    zero = y.dtype.type(0.0)
    total = n_img * m_n
    nchunk = min(total, 32)
    unrolled = kh_n == 3 and kw_n == 3
    for ch in prange(nchunk):
        t0 = ch * total // nchunk
        t1 = (ch + 1) * total // nchunk
        buf = np.empty(sh * sw * plane, y.dtype)
        acc = np.empty(span, y.dtype)
        last = -1
        for t in range(t0, t1):
            n = t // m_n
            m = t - n * m_n
            c = m // mult
            if n * c_n + c != last:  # a channel multiplier reuses the planes
                last = n * c_n + c
                for a in range(sh):
                    for bb in range(sw):
                        base = (a * sw + bb) * plane
                        off = bb - pw
                        lo, hi = valid_range(wq, w_n, sw, off)
                        for r in range(hq):
                            iy = r * sh + a - ph
                            dst = buf[base + r * wq : base + (r + 1) * wq]
                            if iy < 0 or iy >= h_n or hi == lo:
                                dst[:] = zero
                                continue
                            dst[:lo] = zero
                            dst[hi:] = zero
                            dseg = dst[lo:hi]
                            if sw == 1:
                                dseg[:] = x[n, c, iy, lo + off : hi + off]
                            else:
                                sseg = x[n, c, iy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    dseg[i] = sseg[i]
                        buf[base + hq * wq : base + plane] = zero
            if unrolled:
                s0 = buf[(0 % sh * sw + 0 % sw) * plane + (0 // sh) * wq + 0 // sw :]
                s1 = buf[(0 % sh * sw + 1 % sw) * plane + (0 // sh) * wq + 1 // sw :]
                s2 = buf[(0 % sh * sw + 2 % sw) * plane + (0 // sh) * wq + 2 // sw :]
                s3 = buf[(1 % sh * sw + 0 % sw) * plane + (1 // sh) * wq + 0 // sw :]
                s4 = buf[(1 % sh * sw + 1 % sw) * plane + (1 // sh) * wq + 1 // sw :]
                s5 = buf[(1 % sh * sw + 2 % sw) * plane + (1 // sh) * wq + 2 // sw :]
                s6 = buf[(2 % sh * sw + 0 % sw) * plane + (2 // sh) * wq + 0 // sw :]
                s7 = buf[(2 % sh * sw + 1 % sw) * plane + (2 // sh) * wq + 1 // sw :]
                s8 = buf[(2 % sh * sw + 2 % sw) * plane + (2 // sh) * wq + 2 // sw :]
                w0, w1, w2 = w[m, 0, 0], w[m, 0, 1], w[m, 0, 2]
                w3, w4, w5 = w[m, 1, 0], w[m, 1, 1], w[m, 1, 2]
                w6, w7, w8 = w[m, 2, 0], w[m, 2, 1], w[m, 2, 2]
                for i in range(span):
                    acc[i] = (w0 * s0[i] + w1 * s1[i] + w2 * s2[i] + w3 * s3[i] + w4 * s4[i]
                              + w5 * s5[i] + w6 * s6[i] + w7 * s7[i] + w8 * s8[i])
            else:
                acc[:] = zero
                for kh in range(kh_n):
                    for kw in range(kw_n):
                        wv = w[m, kh, kw]
                        st = ((kh % sh) * sw + kw % sw) * plane + (kh // sh) * wq + kw // sw
                        src = buf[st : st + span]
                        for i in range(span):
                            acc[i] += wv * src[i]
            b = bias[m] if nb > 0 else zero
            for oh in range(oh_n):
                yrow = y[n, m, oh]
                yrow[:] = acc[oh * wq : oh * wq + ow_n]
                act_row(yrow, b, act, p0, p1)


@njit
def _hwc_row(iy, ix, h_n, w_n, pad_row):
    """Row of input pixel ``(iy, ix)`` in the pixel-major plane, or ``pad_row`` (zeros)."""
    if iy < 0 or iy >= h_n or ix < 0 or ix >= w_n:
        return pad_row
    return iy * w_n + ix


@njit(parallel=True)
def _depthwise_hwc(x, wt, bias, y, sh, sw, ph, pw, act, p0, p1, xt, yt):
    """Depthwise 2-D conv (multiplier 1, dilation 1) vectorized across channels.

    ``x``: ``(N, C, H, W)``, ``wt``: ``(KH, KW, C)`` (packed at prepare), ``bias``: ``(C,)``
    (zeros when absent), ``y``: ``(N, C, OH, OW)``; scratch ``xt`` ``(H * W + 1, C)`` and ``yt``
    ``(OH * OW, C)``. Each image is transposed to pixel-major order, every output pixel is then
    a multiply-add of ``KH * KW`` contiguous channel vectors, taps in the padding reading the
    extra zero row of ``xt`` (so border pixels take the same single pass as interior ones),
    with bias and Relu/Clip in the same store; then the result is transposed back. On small
    planes (7x7..28x28, where the late MobileNet layers have 384..960 channels) the per-channel
    kernels spend their time on set-up per row; here the inner loop runs over hundreds of
    channels instead.

    No array views are taken inside the parallel loops: each view of a shared array updates its
    reference count atomically, and with two threads doing so per pixel on the same counters the
    2-thread run was no faster than 1 thread (measured).
    """
    n_img, c_n, h_n, w_n = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    kh_n, kw_n = wt.shape[0], wt.shape[1]
    p_in = h_n * w_n
    p_out = oh_n * ow_n
    zero = y.dtype.type(0.0)
    lo, hi, fused = clamp_bounds(act, p0, p1, zero, y.dtype.type(np.inf))
    for c in range(c_n):
        xt[p_in, c] = zero
    # Transposes by blocks of 8 channels: 8 contiguous rows in, one 8-wide store per pixel (and
    # the reverse on the way out), 1.2-2x faster than a pixel-by-pixel gather on 7x7..28x28.
    cb = c_n // 8
    for n in range(n_img):
        xn = x[n].reshape(c_n, p_in)
        for blk in prange(cb):
            c0 = blk * 8
            for p in range(p_in):
                xt[p, c0], xt[p, c0 + 1] = xn[c0, p], xn[c0 + 1, p]
                xt[p, c0 + 2], xt[p, c0 + 3] = xn[c0 + 2, p], xn[c0 + 3, p]
                xt[p, c0 + 4], xt[p, c0 + 5] = xn[c0 + 4, p], xn[c0 + 5, p]
                xt[p, c0 + 6], xt[p, c0 + 7] = xn[c0 + 6, p], xn[c0 + 7, p]
        for c in range(cb * 8, c_n):
            for p in range(p_in):
                xt[p, c] = xn[c, p]
        for q in prange(p_out):
            oh = q // ow_n
            iy0 = oh * sh - ph
            ix0 = (q - oh * ow_n) * sw - pw
            if kh_n == 3 and kw_n == 3:
                r0 = _hwc_row(iy0, ix0, h_n, w_n, p_in)
                r1 = _hwc_row(iy0, ix0 + 1, h_n, w_n, p_in)
                r2 = _hwc_row(iy0, ix0 + 2, h_n, w_n, p_in)
                r3 = _hwc_row(iy0 + 1, ix0, h_n, w_n, p_in)
                r4 = _hwc_row(iy0 + 1, ix0 + 1, h_n, w_n, p_in)
                r5 = _hwc_row(iy0 + 1, ix0 + 2, h_n, w_n, p_in)
                r6 = _hwc_row(iy0 + 2, ix0, h_n, w_n, p_in)
                r7 = _hwc_row(iy0 + 2, ix0 + 1, h_n, w_n, p_in)
                r8 = _hwc_row(iy0 + 2, ix0 + 2, h_n, w_n, p_in)
                for c in range(c_n):
                    v = (wt[0, 0, c] * xt[r0, c] + wt[0, 1, c] * xt[r1, c]
                         + wt[0, 2, c] * xt[r2, c] + wt[1, 0, c] * xt[r3, c]
                         + wt[1, 1, c] * xt[r4, c] + wt[1, 2, c] * xt[r5, c]
                         + wt[2, 0, c] * xt[r6, c] + wt[2, 1, c] * xt[r7, c]
                         + wt[2, 2, c] * xt[r8, c] + bias[c])
                    v = lo if v < lo else v
                    yt[q, c] = hi if v > hi else v
            else:
                for c in range(c_n):
                    yt[q, c] = bias[c]
                for kh in range(kh_n):
                    for kw in range(kw_n):
                        r = _hwc_row(iy0 + kh, ix0 + kw, h_n, w_n, p_in)
                        if r == p_in:
                            continue
                        for c in range(c_n):
                            yt[q, c] += wt[kh, kw, c] * xt[r, c]
                for c in range(c_n):
                    v = yt[q, c]
                    v = lo if v < lo else v
                    yt[q, c] = hi if v > hi else v
            if not fused:
                act_row(yt[q], zero, act, p0, p1)
        yn = y[n].reshape(c_n, p_out)
        for blk in prange(cb):
            c0 = blk * 8
            for p in range(p_out):
                yn[c0, p], yn[c0 + 1, p] = yt[p, c0], yt[p, c0 + 1]
                yn[c0 + 2, p], yn[c0 + 3, p] = yt[p, c0 + 2], yt[p, c0 + 3]
                yn[c0 + 4, p], yn[c0 + 5, p] = yt[p, c0 + 4], yt[p, c0 + 5]
                yn[c0 + 6, p], yn[c0 + 7, p] = yt[p, c0 + 6], yt[p, c0 + 7]
        for c in range(cb * 8, c_n):
            for p in range(p_out):
                yn[c, p] = yt[p, c]


@njit
def _dw3_s1_plane(xp, wm, yp, h_n, w_n, b, lo, hi, keep):
    """One channel of a 3x3 depthwise conv, stride 1, pads 1 (``H, W >= 2``):
    ``yp = clamp(conv(xp) + b, lo, hi)`` (``lo``/``hi`` infinite: no clamp; NaN passes).

    ``xp``/``yp``: the flat ``H * W`` input and output planes, ``wm``: ``(3, 3)``, ``keep``:
    ``(2, H * W)`` flags, column ``!= 0`` and ``!= W - 1`` of each output position. Rows 1..H-2
    run as one flat stream: tap ``(kh, kw)`` of output ``p`` reads ``p + (kh - 1) * W + kw - 1``,
    nine contiguous slices taken once per plane. At columns 0 and W-1 the left or right taps read
    across a row boundary; the flags select them away (a select, not a product with 0, so that an
    Inf there cannot turn into NaN). Recomputing those columns with scalar code instead, and the
    separate bias/activation pass, took three times as long as the stream itself (14x14 and 28x28
    planes, measured). Rows 0 and H-1 have two input rows each.
    """
    w0, w1, w2 = wm[0, 0], wm[0, 1], wm[0, 2]
    w3, w4, w5 = wm[1, 0], wm[1, 1], wm[1, 2]
    w6, w7, w8 = wm[2, 0], wm[2, 1], wm[2, 2]
    e = w_n - 1
    if h_n >= 3:
        # Outputs W+1 .. (H-1)*W-2; the two ends of that range are done below.
        n = (h_n - 2) * w_n - 2
        s0 = xp[0:n]
        s1 = xp[1 : n + 1]
        s2 = xp[2 : n + 2]
        s3 = xp[w_n : w_n + n]
        s4 = xp[w_n + 1 : w_n + 1 + n]
        s5 = xp[w_n + 2 : w_n + 2 + n]
        s6 = xp[2 * w_n : 2 * w_n + n]
        s7 = xp[2 * w_n + 1 : 2 * w_n + 1 + n]
        s8 = xp[2 * w_n + 2 : 2 * w_n + 2 + n]
        kl = keep[0, w_n + 1 : w_n + 1 + n]
        kr = keep[1, w_n + 1 : w_n + 1 + n]
        yo = yp[w_n + 1 : w_n + 1 + n]
        for i in range(n):
            v = w1 * s1[i] + w4 * s4[i] + w7 * s7[i] + b
            left = w0 * s0[i] + w3 * s3[i] + w6 * s6[i]
            right = w2 * s2[i] + w5 * s5[i] + w8 * s8[i]
            v = v + left if kl[i] else v
            v = v + right if kr[i] else v
            v = lo if v < lo else v
            yo[i] = hi if v > hi else v
        # Row 1 column 0 and row H-2 column W-1: six taps each.
        a = (h_n - 3) * w_n
        c = a + w_n
        yp[w_n] = _clip(w1 * xp[0] + w2 * xp[1] + w4 * xp[w_n] + w5 * xp[w_n + 1]
                        + w7 * xp[2 * w_n] + w8 * xp[2 * w_n + 1] + b, lo, hi)
        yp[c + e] = _clip(w0 * xp[a + e - 1] + w1 * xp[a + e] + w3 * xp[c + e - 1]
                          + w4 * xp[c + e] + w6 * xp[c + w_n + e - 1] + w7 * xp[c + w_n + e]
                          + b, lo, hi)
    # Rows 0 and H-1, columns 1..W-2: two input rows each.
    m = w_n - 2
    lo_r = (h_n - 2) * w_n
    hi_r = lo_r + w_n
    if m > 0:
        a0 = xp[0:m]
        a1 = xp[1 : m + 1]
        a2 = xp[2 : m + 2]
        b0 = xp[w_n : w_n + m]
        b1 = xp[w_n + 1 : w_n + 1 + m]
        b2 = xp[w_n + 2 : w_n + 2 + m]
        yi = yp[1 : m + 1]
        for i in range(m):
            v = w3 * a0[i] + w4 * a1[i] + w5 * a2[i] + w6 * b0[i] + w7 * b1[i] + w8 * b2[i] + b
            v = lo if v < lo else v
            yi[i] = hi if v > hi else v
        a0 = xp[lo_r : lo_r + m]
        a1 = xp[lo_r + 1 : lo_r + 1 + m]
        a2 = xp[lo_r + 2 : lo_r + 2 + m]
        b0 = xp[hi_r : hi_r + m]
        b1 = xp[hi_r + 1 : hi_r + 1 + m]
        b2 = xp[hi_r + 2 : hi_r + 2 + m]
        yi = yp[hi_r + 1 : hi_r + 1 + m]
        for i in range(m):
            v = w0 * a0[i] + w1 * a1[i] + w2 * a2[i] + w3 * b0[i] + w4 * b1[i] + w5 * b2[i] + b
            v = lo if v < lo else v
            yi[i] = hi if v > hi else v
    # The corners: four taps each.
    yp[0] = _clip(w4 * xp[0] + w5 * xp[1] + w7 * xp[w_n] + w8 * xp[w_n + 1] + b, lo, hi)
    yp[e] = _clip(w3 * xp[e - 1] + w4 * xp[e] + w6 * xp[w_n + e - 1] + w7 * xp[w_n + e] + b,
                  lo, hi)
    yp[hi_r] = _clip(w1 * xp[lo_r] + w2 * xp[lo_r + 1] + w4 * xp[hi_r] + w5 * xp[hi_r + 1] + b,
                     lo, hi)
    yp[hi_r + e] = _clip(w0 * xp[lo_r + e - 1] + w1 * xp[lo_r + e] + w3 * xp[hi_r + e - 1]
                         + w4 * xp[hi_r + e] + b, lo, hi)


@njit
def _phases2(xp, buf, h_n, w_n):
    """The four stride-2 phase planes of one flat even ``H x W`` plane into ``buf`` (``H * W``):
    ``P[a, b][r, q] = x[2r + a, 2q + b]`` at ``buf[(2a + b) * Q + r * OW + q]``, ``Q = OH * OW``.
    The de-interleaving loop vectorizes with shuffles."""
    ow_n = w_n // 2
    q = (h_n // 2) * ow_n
    for r in range(h_n):
        src = xp[r * w_n : (r + 1) * w_n]
        base = (r % 2) * 2 * q + (r // 2) * ow_n
        ev = buf[base : base + ow_n]
        od = buf[base + q : base + q + ow_n]
        for i in range(ow_n):
            ev[i] = src[2 * i]
            od[i] = src[2 * i + 1]


def keep_cols(h_n: int, w_n: int) -> np.ndarray:
    """``(2, H * W)`` flags of a flat ``H x W`` plane: column ``!= 0``, column ``!= W - 1``
    (the cross-row taps of :func:`_dw3_s1_plane` / :func:`_dw3_s2_phases`, built at prepare)."""
    col = np.arange(h_n * w_n) % w_n
    return np.stack([col != 0, col != w_n - 1]).astype(np.uint8)


@njit
def _dw3_s2_phases(buf, wm, yp, oh_n, ow_n, acc, b, lo, hi, keep_l):
    """One 3x3 stride-2 pads-1 filter over phase planes (:func:`_phases2`) into the flat
    ``OH * OW`` plane ``yp``: ``yp = clamp([yp +] conv + b, lo, hi)``, adding to what is there
    when ``acc`` (``lo``/``hi`` infinite: no clamp; NaN passes). ``keep_l``: ``OH * OW`` flags,
    output column ``!= 0``.

    Tap ``(kh, kw)`` of output ``p = oh * OW + ow`` reads ``P[a, b][p + dr * OW + dq]``, a
    constant offset: ``kh = 0, 1, 2 -> (a, dr) = (1, -1), (0, 0), (1, 0)``, and alike for
    columns. Outputs ``p > OW`` are one flat stream, where the column-0 outputs' left taps
    (``dq = -1``) read across a row and are selected away by ``keep_l``; row 0 has two input
    rows. :func:`_depthwise_phase` gathered the phases with strided scalar copies and
    zero-padded them, which cost more than the arithmetic; recomputing column 0 with scalar code
    cost as much as the stream.
    """
    q = oh_n * ow_n
    w0, w1, w2 = wm[0, 0], wm[0, 1], wm[0, 2]
    w3, w4, w5 = wm[1, 0], wm[1, 1], wm[1, 2]
    w6, w7, w8 = wm[2, 0], wm[2, 1], wm[2, 2]
    p00 = buf[0:q]
    p01 = buf[q : 2 * q]
    p10 = buf[2 * q : 3 * q]
    p11 = buf[3 * q : 4 * q]
    zero = yp.dtype.type(0.0)
    n = q - ow_n - 1
    if n > 0:
        s0 = p11[0:n]                      # (kh, kw) = (0, 0): P[1, 1][p - OW - 1]
        s1 = p10[1 : n + 1]                # (0, 1): P[1, 0][p - OW]
        s2 = p11[1 : n + 1]                # (0, 2): P[1, 1][p - OW]
        s3 = p01[ow_n : ow_n + n]          # (1, 0): P[0, 1][p - 1]
        s4 = p00[ow_n + 1 : ow_n + 1 + n]  # (1, 1): P[0, 0][p]
        s5 = p01[ow_n + 1 : ow_n + 1 + n]  # (1, 2): P[0, 1][p]
        s6 = p11[ow_n : ow_n + n]          # (2, 0): P[1, 1][p - 1]
        s7 = p10[ow_n + 1 : ow_n + 1 + n]  # (2, 1): P[1, 0][p]
        s8 = p11[ow_n + 1 : ow_n + 1 + n]  # (2, 2): P[1, 1][p]
        kl = keep_l[ow_n + 1 : ow_n + 1 + n]
        yo = yp[ow_n + 1 : ow_n + 1 + n]
        for i in range(n):
            v = (w1 * s1[i] + w2 * s2[i] + w4 * s4[i] + w5 * s5[i] + w7 * s7[i] + w8 * s8[i]
                 + b)
            left = w0 * s0[i] + w3 * s3[i] + w6 * s6[i]
            v = v + left if kl[i] else v
            if acc:
                v += yo[i]
            v = lo if v < lo else v
            yo[i] = hi if v > hi else v
    if oh_n > 1:
        # Row 1, column 0.
        p = ow_n
        yp[p] = _clip((yp[p] if acc else zero) + w1 * p10[0] + w2 * p11[0] + w4 * p00[p]
                      + w5 * p01[p] + w7 * p10[p] + w8 * p11[p] + b, lo, hi)
    m = ow_n - 1
    if m > 0:
        t3 = p01[0:m]
        t4 = p00[1 : m + 1]
        t5 = p01[1 : m + 1]
        t6 = p11[0:m]
        t7 = p10[1 : m + 1]
        t8 = p11[1 : m + 1]
        yo = yp[1:ow_n]
        for i in range(m):
            v = w3 * t3[i] + w4 * t4[i] + w5 * t5[i] + w6 * t6[i] + w7 * t7[i] + w8 * t8[i] + b
            if acc:
                v += yo[i]
            v = lo if v < lo else v
            yo[i] = hi if v > hi else v
    yp[0] = _clip((yp[0] if acc else zero) + w4 * p00[0] + w5 * p01[0] + w7 * p10[0]
                  + w8 * p11[0] + b, lo, hi)


@njit(parallel=True)
def _depthwise3(x, w, bias, y, h_n, w_n, stride, act, p0, p1, keep):
    """Depthwise 3x3 conv with pads 1, dilation 1, stride 1 or 2 (even planes), NCHW.

    ``x``: ``(N, C, H * W)``, ``w``: ``(M, 3, 3)``, ``y``: ``(N, M, OH * OW)`` (flat planes:
    a reshape per plane inside the kernel cost ~50 ns, a tenth of a 7x7 plane's time),
    ``keep``: :func:`keep_cols` of the output plane; one plane at a time through
    :func:`_dw3_s1_plane` / :func:`_dw3_s2_phases`, with bias and Relu/Clip in their stores
    (another activation over the whole plane after, while it is in L1). Channels go out in at
    most 32 chunks, so the scratch of stride 2 is allocated once per chunk.
    """
    n_img, c_n = x.shape[0], x.shape[1]
    m_n = y.shape[1]
    oh_n = (h_n - 1) // stride + 1
    ow_n = (w_n - 1) // stride + 1
    mult = m_n // c_n
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    total = n_img * m_n
    nchunk = min(total, 32)
    lo, hi, fused = clamp_bounds(act, p0, p1, zero, y.dtype.type(np.inf))
    keep_l = keep[0]
    for ch in prange(nchunk):
        buf = np.empty(h_n * w_n if stride == 2 else 1, y.dtype)
        last = -1
        for t in range(ch * total // nchunk, (ch + 1) * total // nchunk):
            n = t // m_n
            m = t - n * m_n
            c = m // mult
            yp = y[n, m]
            xp = x[n, c]
            b = bias[m] if nb > 0 else zero
            if stride == 1:
                _dw3_s1_plane(xp, w[m], yp, h_n, w_n, b, lo, hi, keep)
            else:
                if n * c_n + c != last:  # a channel multiplier reuses the phases
                    last = n * c_n + c
                    _phases2(xp, buf, h_n, w_n)
                _dw3_s2_phases(buf, w[m], yp, oh_n, ow_n, False, b, lo, hi, keep_l)
            if not fused:
                act_row(yp, zero, act, p0, p1)


@njit(parallel=True)
def _conv3_s2(x, w, bias, y, act, p0, p1, phases, keep):
    """Dense 3x3 conv, stride 2, pads 1, even planes, few input channels (a network's stem).

    ``x``: ``(N, C, H, W)``, ``w``: ``(M, C, 3, 3)``, ``y``: ``(N, M, H/2, W/2)``, ``phases``:
    scratch of ``C * H * W``, ``keep``: :func:`keep_cols` of the output plane. Each input channel is
    split into its stride-2 phase planes once (:func:`_phases2`); every output plane is then the sum
    over ``C`` of flat 9-tap streams (:func:`_dw3_s2_phases`), with bias and activation in the same
    call. The im2col path made three dispatches (column matrix with strided copies, a 27-deep GEMM,
    a separate epilogue pass): 43 µs against onnxruntime's 17 µs on a 3x32x32 stem; on a 224x224
    stem the two are at par (~0.6 ms, memory-bound either way).
    """
    n_img, c_n, h_n, w_n = x.shape
    m_n, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    plane = h_n * w_n
    inf = y.dtype.type(np.inf)
    lo, hi, fused = clamp_bounds(act, p0, p1, zero, inf)
    keep_l = keep[0]
    for n in range(n_img):
        for c in prange(c_n):
            _phases2(x[n, c].reshape(plane), phases[c * plane : (c + 1) * plane], h_n, w_n)
        for m in prange(m_n):
            yp = y[n, m].reshape(oh_n * ow_n)
            # The clamp only after the last channel's sum.
            for c in range(c_n):
                b = bias[m] if nb > 0 and c == c_n - 1 else zero
                last = c == c_n - 1
                _dw3_s2_phases(phases[c * plane : (c + 1) * plane], w[m, c], yp, oh_n, ow_n,
                               c > 0, b, lo if last else -inf, hi if last else inf, keep_l)
            if not fused:
                act_row(yp, zero, act, p0, p1)


@njit
def _pointwise_small(w, x, bias, y, z, act, p0, p1):
    """A small 1x1 conv in one call: ``y[n, m] = act(sum_k w[m, k] * x[n, k] + bias[m] +
    z[n, m])``.

    ``w``: ``(M, K)``, ``x``: ``(N, K, P)``, ``y`` and the residual ``z`` (empty: none):
    ``(N, M, P)``. For layers of a few thousand
    multiply-adds the BLAS call plus the separate epilogue call cost more than the arithmetic
    (about 15 µs per layer measured on a 32x32-input MobileNet, against ~3 µs per op in
    onnxruntime); this is one dispatch with the epilogue fused while the row is in L1.
    """
    n_img, k_n, p_n = x.shape
    m_n = w.shape[0]
    nb = bias.shape[0]
    has_z = z.shape[0] > 0
    zero = y.dtype.type(0.0)
    for n in range(n_img):
        for m in range(m_n):
            row = y[n, m]
            wv = w[m, 0]
            xs = x[n, 0]
            if has_z:
                zs = z[n, m]
                for p in range(p_n):
                    row[p] = zs[p] + wv * xs[p]
            else:
                for p in range(p_n):
                    row[p] = wv * xs[p]
            for k in range(1, k_n):
                wv = w[m, k]
                xs = x[n, k]
                for p in range(p_n):
                    row[p] += wv * xs[p]
            act_row(row, bias[m] if nb > 0 else zero, act, p0, p1)


@njit(parallel=True)
def _col2im(col, y, bias, geo, act, p0, p1):
    """Scatter-add columns into one image: ``y[m, o] += col[(m, k), i]`` with ``o = i*s - p + k*d``.

    ``col``: ``(M * KD * KH * KW, ID * IH * IW)``; ``y``: ``(M, OD, OH, OW)``. Parallel over
    output channels, so no two threads touch the same element. Bias and activation follow.
    """
    kd_n, kh_n, kw_n = geo[0], geo[1], geo[2]
    sd, sh, sw = geo[3], geo[4], geo[5]
    dd, dh, dw = geo[6], geo[7], geo[8]
    pd, ph, pw = geo[9], geo[10], geo[11]
    id_n, ih_n, iw_n = geo[12], geo[13], geo[14]
    m_n, od_n, oh_n, ow_n = y.shape
    k_n = kd_n * kh_n * kw_n
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    for m in prange(m_n):
        ym = y[m]
        for oz in range(od_n):
            for oy in range(oh_n):
                ym[oz, oy, :] = zero
        for kd in range(kd_n):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    src = col[m * k_n + (kd * kh_n + kh) * kw_n + kw]
                    # Input positions ix whose output ix * sw + off lands inside the row.
                    off = kw * dw - pw
                    lo, hi = valid_range(iw_n, ow_n, sw, off)
                    if hi == lo:
                        continue
                    for iz in range(id_n):
                        oz = iz * sd - pd + kd * dd
                        if oz < 0 or oz >= od_n:
                            continue
                        for iy in range(ih_n):
                            oy = iy * sh - ph + kh * dh
                            if oy < 0 or oy >= oh_n:
                                continue
                            base = (iz * ih_n + iy) * iw_n
                            cseg = src[base + lo : base + hi]
                            if sw == 1:
                                yseg = ym[oz, oy, lo + off : hi + off]
                                for i in range(hi - lo):
                                    yseg[i] += cseg[i]
                            else:
                                yseg = ym[oz, oy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    yseg[i] += cseg[i]
        b = bias[m] if nb > 0 else zero
        for oz in range(od_n):
            for oy in range(oh_n):
                act_row(ym[oz, oy], b, act, p0, p1)


# Serial twins: layers with less work than PARALLEL_MIN_WORK output elements skip the parallel
# launch (5 µs at one thread, tens of µs at two on a loaded machine).
_im2col_batch_serial = serial_twin(_im2col_batch)
_depthwise_serial = serial_twin(_depthwise)
_depthwise_s1_serial = serial_twin(_depthwise_s1)
_depthwise_phase_serial = serial_twin(_depthwise_phase)
_depthwise_hwc_serial = serial_twin(_depthwise_hwc)
_depthwise3_serial = serial_twin(_depthwise3)
_conv3_s2_serial = serial_twin(_conv3_s2)

# Stride-1 depthwise planes with at least this many outputs take _depthwise_phase.
DW_PHASE_MIN_PLANE = 48 * 48
# Strided 1x1 convs gather their pixels and take the pointwise paths (see prepare). Interleaved
# A/B on ResNet-50: 0.98x at 1 thread, 0.95x at 2; its three projection shortcuts from 13-17 to
# 22-30 GMAC/s.
STRIDED_POINTWISE = True
# 1x1 convs (one group) of at most this many multiply-adds run as one fused Numba call.
POINTWISE_SMALL_MACS = 1 << 17
# Pointwise BLAS convs split over threads by output channels below this many positions per
# thread, else by columns. Each BLAS call packs all of its W rows and X columns: a column split
# packs W once per thread, a row split X once per thread. So layers with more output channels
# than positions (PW_ROW_SPLIT_WIDE: ResNet's 14x14 and 7x7 stages, MobileNetV2's late layers)
# split by rows too: interleaved A/B at 2 threads, ResNet-50 0.92-0.96x, MobileNetV2 0.92x,
# SqueezeNet 0.97x, DenseNet-121 0.97x, GoogLeNet 0.97x, ShuffleNet 0.99x.
# Expansion layers (at least as many output channels as inputs, PW_ROW_SPLIT_EXPAND) split by
# rows as well: at 2 threads a column split of MobileNetV2's 24->144 (56x56) and 32->192 (28x28)
# layers ran 1.2-3.4x slower than a row split, and the 32->192 one slower than 1 thread; with
# fewer outputs than inputs (96->24, 240->40) columns stay 0.85-0.93x of rows (measured per
# layer, interleaved).
PW_ROW_SPLIT_P = 32
PW_ROW_SPLIT_WIDE = True
PW_ROW_SPLIT_EXPAND = True
# Grouped pointwise convs whose group count the threads divide give each thread whole groups:
# one GEMM per group and thread, W and X packed once. ShuffleNet's group-4 layers at 2 threads
# ran 0.79-0.99x of the better of the row and column splits (measured per layer, interleaved).
PW_GROUP_SPLIT = True
# Depthwise layers (multiplier 1) with input planes up to this size take _depthwise_hwc.
DW_HWC_MAX_PLANE = 32 * 32
# 3x3 depthwise layers with pads 1 take _depthwise3 from these input plane sizes on (stride 1,
# stride 2); below, _depthwise_hwc where it applies. Measured with the masked-stream planes,
# _depthwise3 / _depthwise_hwc time at 1 and 2 threads: stride 1 at 16x16 0.58-0.59, 10x10
# 0.89-0.97, 8x8 1.13-1.26, 7x7 1.27-1.82; stride 2 at 32x32 0.69-0.86, 28x28 1.05-1.17.
DW3_MIN_PLANE = (10 * 10, 30 * 30)
# Dense 3x3 stride-2 convs (pads 1, even planes) with at most this many input channels (network
# stems) take _conv3_s2 instead of im2col + GEMM.
CONV3_S2_MAX_C = 4

# The batched column matrix costs N times one image's; above this many bytes the images go one
# by one through a single-image buffer instead.
COL_BATCH_BYTES = 32 << 20
# A single image's column matrix larger than this is built and multiplied in blocks of whole
# output rows (2-D convs), each block sized to stay in the L2 cache while BLAS reads it.
COL_BLOCK_BYTES = 1 << 20
# Group-1 float32 k x k convs with at most this many output channels, or output positions, take
# the implicit-GEMM kernel of fgemm.py (measured faster than im2col + single-threaded OpenBLAS
# there; see its docstring).
IMPLICIT_MAX_M = 32
IMPLICIT_MAX_P = 256
# Group-1 float32 2-D convs (not pointwise) with at least this many input and output channels
# take the direct kernel of dconv.py (output channels in the lanes). Measured against the best
# of im2col + OpenBLAS and the implicit GEMM, one thread, calls interleaved: 0.71-0.94x on
# stride-1 3x3 layers of ResNet/DenseNet/SqueezeNet/GoogLeNet shapes (0.35x on 7x7 maps), even
# on stride 2. RGB stems take it with kernels of at least DCONV_STEM_TAPS taps (7x7/2: 0.97x,
# 11x11/4: 0.93x); their 3x3 layers (a 27-deep reduction per tile) stay on im2col + OpenBLAS
# (dconv 1.11-1.27x, the implicit GEMM 1.4-1.8x), as do 1x1 layers (1.00-1.10x).
DCONV_MIN_C = 5
DCONV_MIN_M = 16
DCONV_STEM_TAPS = 25


# ----- Conv -------------------------------------------------------------------------------------
_POINTWISE, _DEPTHWISE, _IM2COL = "pointwise", "depthwise", "im2col"


class ConvKernel(Kernel):
    """ONNX Conv, and ``edgert.Conv``: a fused activation (``activation`` attributes) and an
    optional fourth input ``Z``, a residual of the output's shape added before the activation
    (``Y = act(conv(X, W) + B + Z)``, the optimizer's ``fuse_residual_add``). Inputs: X, W,
    optional B, optional Z."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self._fast = None  # see _single
        self.require_inputs(inputs, 2, 4)
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        z = inputs[3] if len(inputs) > 3 else None
        if z is not None and self.op.domain != "edgert":
            raise self.error("a fourth input (the residual Z) is edgert.Conv's, not ONNX Conv's")
        dt = float_dtype(self, [(x, "X"), (w, "W"), (b, "B"), (z, "Z")])
        rank = len(x.shape)
        if not 3 <= rank <= 5:
            raise self.error(
                f"input X must have rank 3, 4 or 5 (N, C, spatial...), got shape {x.shape}",
                ShapeError,
            )
        if len(w.shape) != rank:
            raise self.error(
                f"weight W has shape {w.shape} (rank {len(w.shape)}) but X has rank {rank}",
                ShapeError,
            )
        group = int(self.attr("group", 1))
        if group < 1:
            raise self.error(f"attribute 'group' = {group} must be >= 1")
        n_img, c_in = x.shape[0], x.shape[1]
        m_out, c_per_group = w.shape[0], w.shape[1]
        if c_in != c_per_group * group:
            raise self.error(
                f"input X has {c_in} channels but W of shape {w.shape} with group={group} "
                f"expects {c_per_group} x {group} = {c_per_group * group}",
                ShapeError,
            )
        if m_out % group != 0:
            raise self.error(
                f"W has {m_out} output channels, which group={group} does not divide", ShapeError
            )
        if b is not None and tuple(b.shape) != (m_out,):
            raise self.error(f"bias B has shape {b.shape}, expected ({m_out},)", ShapeError)
        ksp = tuple(w.shape[2:])
        kernel_shape_attr(self, ksp)
        if any(k <= 0 for k in ksp):
            raise self.error(f"weight W has an empty spatial shape {w.shape}", ShapeError)
        win = sliding_window(self, tuple(x.shape[2:]), ksp)
        self.act = parse_activation(self.where(), self.attrs)
        self.params = self.act.params(dt)
        self.dtype = dt
        self.group = group
        self.geo = win.geo()
        self.in3 = as3d(win.in_shape)
        self.out3 = as3d(win.out_shape)
        k_size = int(np.prod(ksp))
        p_out = int(np.prod(win.out_shape))
        self.ksize = k_size
        self.p_out = p_out

        pointwise = (
            all(k == 1 for k in ksp)
            and not any(win.pads_begin)
            and not any(win.pads_end)
        )
        # A strided 1x1 conv (ResNet's projection shortcuts) reads every stride-th pixel: those
        # are gathered into a contiguous scratch per invoke (C x P_out, a quarter of the input at
        # stride 2) and the layer is then a pointwise one. Through im2col it was blocked by
        # output rows into GEMMs a few columns wide, each packing all of W: ResNet-50's three
        # such layers ran at 13-17 GMAC/s against 28-30 for its stride-1 1x1 convs.
        self.pw_stride = None
        if pointwise and any(s != 1 for s in win.strides):
            if STRIDED_POINTWISE:
                self.pw_stride = as3d(win.strides)
            else:
                pointwise = False
        if pointwise:
            self.path = _POINTWISE
        elif c_per_group == 1 and group > 1:
            self.path = _DEPTHWISE
        else:
            self.path = _IM2COL

        # Weights: (G, M/G, C/G * K) for the GEMM paths, (M, KD, KH, KW) for depthwise.
        self.w_packed = None
        if w.value is not None:
            # The GEMM paths only reshape W, and BLAS reads a read-only mapped array as well as
            # an owned one: keep a zero-copy view of the file's weights there (an owned copy
            # doubled resident memory: the mapped pages are touched by the copy too). The
            # depthwise path feeds a Numba kernel, which wants one array type: owned copy.
            if self.path == _DEPTHWISE:
                self.w_packed = self._pack(owned(w.value, dt))
            else:
                self.w_packed = self._pack(np.ascontiguousarray(w.value, dtype=dt))
        self.b_packed = np.zeros(0, dt)
        if b is not None and b.value is not None:
            self.b_packed = owned(b.value, dt)
        self.has_bias_input = b is not None
        # Scratch for the column matrix, reused by every invoke.
        # Scratch for the column matrix. The interpreter hands every kernel of a model one
        # shared buffer (``bind_scratch``; steps run one at a time): one buffer per layer added
        # up to 56 MB for ResNet-50 against 7 MB for the largest. Used alone, the kernel
        # allocates its own on first invoke.
        self.col = None
        self.scratch_nbytes = 0
        if self.pw_stride is not None:
            self.col_shape = (n_img, c_in, p_out)
            self.scratch_nbytes = n_img * c_in * p_out * dt.itemsize
        if self.path == _IM2COL:
            per_image = c_in * k_size * p_out * dt.itemsize
            self.col_batch = n_img > 1 and n_img * per_image <= COL_BATCH_BYTES
            rows = n_img if self.col_batch else 1
            self.col_shape = (rows * c_in * k_size, p_out)
            self.scratch_nbytes = rows * per_image
            # Row blocking (single images of 2-D convs, no groups): output rows per block.
            self.block_rows = 0
            oh_n, ow_n = self.out3[1], self.out3[2]
            if (not self.col_batch and self.out3[0] == 1 and self.in3[0] == 1 and group == 1
                    and per_image > COL_BLOCK_BYTES and oh_n > 1):
                row_bytes = c_in * k_size * ow_n * dt.itemsize
                self.block_rows = max(1, min(oh_n, COL_BLOCK_BYTES // row_bytes))
                if self.block_rows >= oh_n:
                    self.block_rows = 0
                else:  # the scratch only ever holds one block
                    self.scratch_nbytes = self.block_rows * row_bytes
                    self.col_shape = (c_in * k_size, self.block_rows * ow_n)
            self.im2col = _im2col_batch if per_image // dt.itemsize >= PARALLEL_MIN_WORK \
                else _im2col_batch_serial
        big = n_img * m_out * p_out >= PARALLEL_MIN_WORK
        self.depthwise = _depthwise if big else _depthwise_serial
        # Stride 1, dilation 1, 2-D: the padded-plane kernel (see _depthwise_s1).
        self.dw_s1 = None
        # Dilation 1, 2-D: the phase-plane kernel for strided layers and large stride-1 planes
        # (see _depthwise_phase); the padded-plane kernel for small stride-1 planes, where its
        # lower per-channel set-up wins (measured at 7x7..28x28 on MobileNetV2's layers).
        self.dw_plane = None
        # Small planes, multiplier 1, constant weights: the channel-vectorized kernel
        # (_depthwise_hwc), with its two transposed copies in the shared scratch.
        self.dw_hwc = None
        in_plane = int(np.prod(win.in_shape))
        # 3x3, pads 1, stride 1 or 2: the flat-plane kernel (_depthwise3).
        self.dw3 = None
        self.dw3_stride = 0
        if (self.path == _DEPTHWISE and rank == 4 and ksp == (3, 3)
                and all(v == 1 for v in win.dilations) and tuple(win.pads_begin) == (1, 1)):
            h_in, w_in = win.in_shape
            if (tuple(win.strides) == (1, 1) and tuple(win.out_shape) == (h_in, w_in)
                    and h_in >= 2 and w_in >= 2):
                self.dw3_stride = 1
            elif (tuple(win.strides) == (2, 2) and h_in % 2 == 0 and w_in % 2 == 0
                    and tuple(win.out_shape) == (h_in // 2, w_in // 2)):
                self.dw3_stride = 2
            hwc_fits = m_out == c_in and w.value is not None and in_plane <= DW_HWC_MAX_PLANE
            if self.dw3_stride and not (
                    hwc_fits and in_plane < DW3_MIN_PLANE[self.dw3_stride - 1]):
                self.dw3 = _depthwise3 if big else _depthwise3_serial
                self.keep = keep_cols(*win.out_shape)
        # Stems (3x3, stride 2, pads 1, even planes, few input channels): _conv3_s2, with the
        # input's phase planes in the shared scratch.
        self.conv3s2 = None
        if (self.path == _IM2COL and group == 1 and rank == 4 and ksp == (3, 3)
                and c_in <= CONV3_S2_MAX_C and all(v == 1 for v in win.dilations)
                and tuple(win.strides) == (2, 2) and tuple(win.pads_begin) == (1, 1)):
            h_in, w_in = win.in_shape
            if (h_in % 2 == 0 and w_in % 2 == 0
                    and tuple(win.out_shape) == (h_in // 2, w_in // 2)):
                self.conv3s2 = _conv3_s2 if big else _conv3_s2_serial
                self.keep = keep_cols(*win.out_shape)
                self.w3 = None if w.value is None else owned(w.value, dt)
                self.scratch_nbytes = c_in * in_plane * dt.itemsize
                self.col_shape = (c_in * in_plane,)
        if (self.path == _DEPTHWISE and rank == 4 and all(v == 1 for v in win.dilations)
                and m_out == c_in and w.value is not None and in_plane <= DW_HWC_MAX_PLANE
                and self.dw3 is None):
            self.dw_hwc = _depthwise_hwc if big else _depthwise_hwc_serial
            self.wt_packed = owned(self.w_packed.reshape(m_out, -1).T, dt).reshape(
                ksp + (m_out,))
            self.hwc_bias = self.b_packed if self.b_packed.shape[0] else np.zeros(m_out, dt)
            self.hwc_sizes = ((in_plane + 1) * c_in, p_out * m_out)
            self.scratch_nbytes = sum(self.hwc_sizes) * dt.itemsize
            self.col_shape = (sum(self.hwc_sizes),)
        # The per-channel kernels stay selected as well (used when dw_hwc is not).
        if self.path == _DEPTHWISE and rank == 4 and all(v == 1 for v in win.dilations):
            if all(v == 1 for v in win.strides) and p_out < DW_PHASE_MIN_PLANE:
                self.dw_s1 = _depthwise_s1 if big else _depthwise_s1_serial
            else:
                self.dw_plane = _depthwise_phase if big else _depthwise_phase_serial
        self.pw_small = (self.path == _POINTWISE and group == 1
                         and n_img * m_out * c_in * p_out <= POINTWISE_SMALL_MACS)
        # Small GEMM shapes of a group-1 k x k conv: the implicit-GEMM kernel (no column
        # matrix; every channel computed alike, so no identical-filter classes either).
        self.fplan = None
        self.dgeo = None
        if (self.path == _IM2COL and group == 1 and dt == np.float32 and w.value is not None
                and self.conv3s2 is None and rank == 4 and m_out >= DCONV_MIN_M
                and (c_in >= DCONV_MIN_C or k_size >= DCONV_STEM_TAPS)):
            self.dgeo = dconv.Geometry(self.geo, c_in)
            self.dpack = dconv.pack_weights(np.asarray(w.value, np.float32))
            self.scratch_nbytes = self.dgeo.pad_elems * 4
            self.col_shape = (self.dgeo.pad_elems,)
        if (self.dgeo is None and self.path == _IM2COL and group == 1 and dt == np.float32
                and w.value is not None and self.conv3s2 is None
                and (m_out <= IMPLICIT_MAX_M or p_out <= IMPLICIT_MAX_P)):
            self.fplan = fgemm.plan(self.geo, c_in)
            if self.fplan is not None:
                self.fapack = fgemm.pack_conv_weights(np.asarray(w.value, np.float32))
                # a large padded input lives in the shared scratch (zeroed per invoke)
                self.scratch_nbytes = self.fplan.size * 4 if self.fplan.shared else 0
                self.col_shape = (self.fplan.size,)
        # Bit-identical filters: the GEMM multiplies only the first of each class (``w_unique``)
        # into a scratch, then ``row_index`` copies the rows out (see the module docstring).
        # ``_pointwise_small`` already computes every channel alike.
        self.row_index = None
        self.w_unique = None
        self.y_unique = None
        if self.w_packed is not None and group == 1 and self.path != _DEPTHWISE \
                and not self.pw_small and self.fplan is None and self.dgeo is None:
            classes = identical_rows(self.w_packed[0])
            if classes is not None:
                keep, self.row_index = classes
                self.w_unique = self.w_packed[0][keep]
        self._plan_blas(c_in, m_out, k_size, p_out, dt)
        y_shape = (n_img, m_out) + win.out_shape
        # The residual: added by the pointwise BLAS, small pointwise and direct kernels; every
        # other path runs without its activation and is followed by one pass y = act(y + z).
        self.has_sum = z is not None
        self.sum_act, self.sum_params = self.act, self.params
        self.sum_after = False
        self.no_sum = {3: np.zeros((0, 0, 0), dt), 2: np.zeros((0, 0), dt)}
        if self.has_sum:
            if tuple(z.shape) != y_shape:
                raise self.error(f"residual Z has shape {tuple(z.shape)}, expected the "
                                 f"output's {y_shape}", ShapeError)
            if not (self.blas_pw or self.pw_small) and self.dgeo is None:
                self.sum_after = True
                self.act = Activation()
                self.params = self.act.params(dt)
        # A fused channel shuffle (edgert.Conv's ``channel_shuffle``, the optimizer's
        # fuse_shuffle_into_conv): written in place by the pointwise BLAS path when the shuffle
        # groups are the conv's; elsewhere the conv runs into a buffer that is then moved.
        g_sh = int(self.attr("channel_shuffle", 0) or 0)
        if g_sh and self.op.domain != "edgert":
            raise self.error("attribute 'channel_shuffle' is edgert.Conv's, not ONNX Conv's")
        if g_sh < 0 or (g_sh and m_out % g_sh):
            raise self.error(f"channel_shuffle = {g_sh} must be >= 0 and divide the {m_out} "
                             "output channels", ShapeError)
        self.shuffle_g = g_sh if g_sh > 1 else 0
        self.shuffle_native = bool(self.shuffle_g) and self.blas_pw and group == self.shuffle_g
        self.shuffle_after = bool(self.shuffle_g) and not self.shuffle_native
        self._pre_shuffle = None
        return [TensorInfo(y_shape, dt)]

    def _plan_blas(self, c_in: int, m_out: int, k_size: int, p_out: int, dt: np.dtype) -> None:
        """Choose the fused BLAS paths (``_pointwise_blas``, ``_conv_rows_blas``) where NumPy's
        BLAS is callable from compiled code: no identical-filter classes, a GEMM route not
        already taken by a Numba kernel, and group 1 unless pointwise (a grouped pointwise conv is
        one GEMM per group, each with its epilogue fused)."""
        self.blas_pw = self.blas_rows = False
        if self.row_index is not None or self.pw_small:
            return
        if self.group != 1 and self.path != _POINTWISE:
            return
        r = cblas.routines()
        if r is None:
            return
        self.blas_fn, self.blas_wide = r.address(dt), r.wide
        self.blas_macs = m_out * (c_in // self.group) * k_size * p_out
        if self.path == _POINTWISE:
            # Column blocks whose input and output slices fit the cache block together.
            # At least 512: every BLAS call packs all of W again (M x K), which costs about as
            # much as 16 columns of the product.
            cols = COL_BLOCK_BYTES // ((m_out + c_in) // self.group * dt.itemsize)
            self.pw_block = max(512, cols // 16 * 16)
            self.blas_pw = True
        elif (self.path == _IM2COL and self.fplan is None and self.conv3s2 is None
              and self.dgeo is None and self.in3[0] == 1 and self.out3[0] == 1):
            import numba

            oh_n, ow_n = self.out3[1], self.out3[2]
            row_elems = c_in * k_size * ow_n
            self.block_rows = max(1, min(oh_n, COL_BLOCK_BYTES // (row_elems * dt.itemsize)))
            # One column block per thread (the pool's size: the most a run can use).
            threads = max(1, numba.config.NUMBA_NUM_THREADS)
            self.col_shape = (threads, self.block_rows * row_elems)
            self.scratch_nbytes = threads * self.block_rows * row_elems * dt.itemsize
            self.blas_rows = True

    def _blas_parts(self) -> int:
        """Threads for a fused BLAS path: the run's count, or 1 below the split size."""
        n = blas.gemm_threads()
        return n if n > 1 and self.blas_macs >= blas.SPLIT_MIN_MACS else 1

    def bind_scratch(self, buf: np.ndarray) -> None:
        """Use ``buf`` (bytes, at least ``scratch_nbytes``) as the column-matrix scratch."""
        self._fast = None
        if self.scratch_nbytes:
            self.col = buf[: self.scratch_nbytes].view(self.dtype).reshape(self.col_shape)

    def _gemm(self, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        """``out = w @ b`` for group 1 (``w``: ``(M, C·K)``, ``b``: ``(..., C·K, P)``).

        Classes of identical filters (``row_index``) are multiplied once, into a scratch, and
        copied to their rows of ``out``, so that they come out bit-identical.
        """
        if self.row_index is None:
            matmul(w, b, out=out)
            return
        shape = b.shape[:-2] + (self.w_unique.shape[0], b.shape[-1])
        size = int(np.prod(shape))
        if self.y_unique is None or self.y_unique.shape[0] < size:
            self.y_unique = np.empty(size, self.dtype)
        y_u = self.y_unique[:size].reshape(shape)
        matmul(self.w_unique, b, out=y_u)
        np.take(y_u, self.row_index, axis=-2, out=out, mode="clip")

    def _pack(self, w: np.ndarray) -> np.ndarray:
        m_out, c_per_group = w.shape[0], w.shape[1]
        if self.path == _DEPTHWISE:
            return w.reshape((m_out,) + as3d(w.shape[2:]))
        g = self.group
        return w.reshape(g, m_out // g, c_per_group * self.ksize)

    def _single(self, inputs, outputs, x, fn, args) -> None:
        """Run a path that is one Numba call, and remember the call for the next invoke.

        The interpreter hands a kernel the same planned arrays on every invoke, so with constant
        weights and bias and a contiguous input (no per-call copy) the next call can repeat
        ``fn(*args)`` as is: the views and the argument unpacking cost ~3 µs of Python per
        conv, a third of a small layer's time (measured on a 32x32 MobileNet).
        """
        fn(*args)
        if (x is inputs[0] and self.w_packed is not None
                and not (self.has_bias_input and self.b_packed.shape[0] == 0)):
            z = inputs[3] if self.has_sum else None
            self._fast = (inputs[0], outputs[0], fn, args, blas.gemm_threads(), z)

    def invoke(self, inputs, outputs):
        out = outputs[0]
        y = out
        if self.shuffle_after:
            if self._pre_shuffle is None or self._pre_shuffle.shape != out.shape:
                self._pre_shuffle = np.empty(out.shape, out.dtype)
            y = self._pre_shuffle
        self._invoke(inputs, [y])
        if self.sum_after:
            sum_epilogue(y.reshape(y.shape[0] * y.shape[1], -1),
                         np.ascontiguousarray(inputs[3]).reshape(y.shape[0] * y.shape[1], -1),
                         self.sum_act, self.sum_params)
        if self.shuffle_after:
            # out[n, j * g + i] = y[n, i * M/g + j] (edgert.ChannelShuffle's move)
            n, g, plane = y.shape[0], self.shuffle_g, int(np.prod(y.shape[2:]))
            np.copyto(out.reshape(n, -1, g, plane),
                      y.reshape(n, g, -1, plane).transpose(0, 2, 1, 3))

    def _subsample(self, x: np.ndarray) -> np.ndarray:
        """Every stride-th pixel of ``x`` (a strided 1x1 conv's input) as a contiguous
        ``(N, C, P_out)`` array in the scratch."""
        if self.col is None:
            self.col = np.empty(self.col_shape, self.dtype)
        n_img, c_in = x.shape[0], x.shape[1]
        (sd, sh, sw), (od, oh, ow) = self.pw_stride, self.out3
        x5 = x.reshape((n_img, c_in) + self.in3)
        xs = self.col.reshape((n_img, c_in) + self.out3)
        np.copyto(xs, x5[:, :, : (od - 1) * sd + 1 : sd, : (oh - 1) * sh + 1 : sh,
                         : (ow - 1) * sw + 1 : sw])
        return self.col

    def _residual(self, inputs, shape: tuple) -> np.ndarray:
        """The residual ``Z`` as a C-contiguous array of ``shape``, or an empty one."""
        if not self.has_sum:
            return self.no_sum[len(shape)]
        return np.ascontiguousarray(inputs[3]).reshape(shape)

    def _invoke(self, inputs, outputs):
        fast = self._fast
        if (fast is not None and inputs[0] is fast[0] and outputs[0] is fast[1]
                and fast[4] == blas.gemm_threads()
                and (not self.has_sum or inputs[3] is fast[5])):
            fast[2](*fast[3])
            return
        y = outputs[0]
        if y.size == 0:
            return
        x = np.ascontiguousarray(inputs[0])
        w = self.w_packed
        if w is None:
            w = self._pack(np.ascontiguousarray(inputs[1]))
        bias = self.b_packed
        if self.has_bias_input and bias.shape[0] == 0:
            bias = np.ascontiguousarray(inputs[2])
        n_img, c_in = x.shape[0], x.shape[1]
        m_out = y.shape[1]
        g = self.group
        p_out = self.p_out
        if self.pw_stride is not None:
            x = self._subsample(x)
        act, (p0, p1) = self.act, self.params
        if self.conv3s2 is not None:
            if self.col is None:
                self.col = np.empty(self.col_shape, self.dtype)
            w3 = self.w3 if self.w3 is not None else np.ascontiguousarray(inputs[1])
            self._single(inputs, outputs, x, self.conv3s2,
                         (x, w3, bias, y, act.code, p0, p1, self.col, self.keep))
            return
        if self.dw3 is not None:
            self._single(inputs, outputs, x, self.dw3,
                         (x.reshape(n_img, c_in, -1), w.reshape(m_out, 3, 3), bias,
                          y.reshape(n_img, m_out, -1), self.in3[1], self.in3[2],
                          self.dw3_stride, act.code, p0, p1, self.keep))
            return
        if self.dw_hwc is not None and bias.shape[0] in (0, m_out):
            if self.col is None:
                self.col = np.empty(self.col_shape, self.dtype)
            nx, ny = self.hwc_sizes
            hwc_bias = bias if bias.shape[0] else self.hwc_bias
            self._single(inputs, outputs, x, self.dw_hwc,
                         (x, self.wt_packed, hwc_bias, y, self.geo[4], self.geo[5],
                          self.geo[10], self.geo[11], act.code, p0, p1,
                          self.col[:nx].reshape(-1, c_in),
                          self.col[nx : nx + ny].reshape(-1, m_out)))
            return
        if self.dw_plane is not None:
            self.dw_plane(x, w.reshape(m_out, w.shape[2], w.shape[3]), bias, y,
                          self.geo[4], self.geo[5], self.geo[10], self.geo[11], act.code, p0, p1)
            return
        if self.dw_s1 is not None:
            self.dw_s1(x, w.reshape(m_out, w.shape[2], w.shape[3]), bias, y,
                       self.geo[10], self.geo[11], act.code, p0, p1)
            return
        if self.path == _DEPTHWISE:
            self.depthwise(
                x.reshape((n_img, c_in) + self.in3),
                w,
                bias,
                y.reshape((n_img, m_out) + self.out3),
                self.geo,
                act.code,
                p0,
                p1,
            )
            return
        if self.blas_pw:
            parts = self._blas_parts()
            mg = m_out // g
            split_rows = int(mg >= 2 * parts and (
                p_out < PW_ROW_SPLIT_P * parts or (PW_ROW_SPLIT_WIDE and mg > p_out)
                or (PW_ROW_SPLIT_EXPAND and mg >= c_in // g)))
            if PW_GROUP_SPLIT and parts > 1 and g % parts == 0:
                split_rows = 2
            self._single(inputs, outputs, x, _pointwise_blas if parts > 1 else
                         _pointwise_blas_serial,
                         (self.blas_fn, self.blas_wide, w, x.reshape(n_img, c_in, p_out), bias,
                          y.reshape(n_img, m_out, p_out),
                          self._residual(inputs, (n_img, m_out, p_out)),
                          act.code, p0, p1, parts, split_rows,
                          self.pw_block, self.shuffle_native))
            return
        if self.blas_rows:
            if self.col is None:
                self.col = np.empty(self.col_shape, self.dtype)
            parts = self._blas_parts()
            self._single(inputs, outputs, x, _conv_rows_blas if parts > 1 else
                         _conv_rows_blas_serial,
                         (self.blas_fn, self.blas_wide, x.reshape((n_img, c_in) + self.in3), w[0],
                          bias, y.reshape(n_img, m_out, p_out), self.geo, act.code, p0, p1,
                          self.col, self.block_rows, parts))
            return
        if self.path == _POINTWISE:
            if self.pw_small:
                self._single(inputs, outputs, x, _pointwise_small,
                             (w[0], x.reshape(n_img, c_in, p_out), bias,
                              y.reshape(n_img, m_out, p_out),
                              self._residual(inputs, (n_img, m_out, p_out)), act.code, p0, p1))
                return
            if g == 1:
                self._gemm(w[0], x.reshape(n_img, c_in, -1), y.reshape(n_img, m_out, p_out))
            else:
                for n in range(n_img):
                    matmul(
                        w, x[n].reshape(g, c_in // g, -1), out=y[n].reshape(g, m_out // g, p_out)
                    )
            epilogue(y.reshape(n_img * m_out, p_out), bias, act, self.params)
            return
        if self.dgeo is not None:
            geo = self.dgeo
            parts = blas.gemm_threads()
            if m_out * c_in * self.ksize * p_out < blas.SPLIT_MIN_MACS:
                parts = 1
            fn = dconv.dconv if parts > 1 else dconv.dconv_serial
            if geo.padded and self.col is None:
                self.col = np.empty(self.col_shape, np.float32)
            z3 = self._residual(inputs, (n_img, m_out, p_out))
            for n in range(n_img):
                src = x[n].reshape(-1)
                if geo.padded:
                    padded = self.col.reshape(c_in, geo.hp, geo.wp)
                    (dconv.pad_input if parts > 1 else dconv.pad_input_serial)(
                        x[n].reshape(c_in, self.in3[1], self.in3[2]), padded, geo.pt, geo.pl)
                    src = self.col
                fn(self.dpack, src, geo.offs, c_in, geo.plane, geo.wp, geo.sh, geo.sw, geo.oh,
                   geo.ow, geo.block_tiles, dconv.SUB, bias, act.code, p0, p1,
                   y[n].reshape(m_out, p_out), z3[n] if self.has_sum else self.no_sum[2], parts)
            return
        if self.fplan is not None:
            plan = self.fplan
            buf = plan.buffer(None if self.col is None else self.col.view(np.uint8))
            x5 = x.reshape((n_img, c_in) + self.in3)
            for n in range(n_img):
                fgemm.pack_input(x5[n], plan.pads, plan.strides, plan.dims, plan.cstride, buf)
                fgemm.fconv(self.fapack, plan, m_out, bias, act.code, p0, p1,
                            y[n].reshape(m_out, p_out), buf)
            return
        if self.col is None:
            self.col = np.empty(self.col_shape, self.dtype)
        x5 = x.reshape((n_img, c_in) + self.in3)
        rows = c_in * self.ksize
        if self.col_batch:
            # All images: one im2col launch, one batched GEMM, one epilogue.
            col = self.col.reshape(n_img, rows, p_out)
            self.im2col(x5, col, self.geo)
            if g == 1:
                self._gemm(w[0], col, y.reshape(n_img, m_out, p_out))
            else:
                matmul(w, col.reshape(n_img, g, rows // g, p_out),
                       out=y.reshape(n_img, g, m_out // g, p_out))
            epilogue(y.reshape(n_img * m_out, p_out), bias, act, self.params)
            return
        if self.block_rows:
            oh_n, ow_n = self.out3[1], self.out3[2]
            flat = self.col.reshape(-1)
            for n in range(n_img):
                yn = y[n].reshape(m_out, p_out)
                for h0 in range(0, oh_n, self.block_rows):
                    h1 = min(h0 + self.block_rows, oh_n)
                    cols = (h1 - h0) * ow_n
                    blk = flat[: rows * cols].reshape(rows, cols)
                    _im2col_hrows(x5[n], blk, self.geo, h0, h1)
                    self._gemm(w[0], blk, yn[:, h0 * ow_n : h1 * ow_n])
                epilogue(yn, bias, act, self.params)
            return
        col = self.col.reshape(1, rows, p_out)
        col_g = self.col.reshape(g, rows // g, p_out)
        for n in range(n_img):
            self.im2col(x5[n : n + 1], col, self.geo)
            yn = y[n].reshape(m_out, p_out)
            if g == 1:
                self._gemm(w[0], col[0], yn)
            else:
                matmul(w, col_g, out=yn.reshape(g, m_out // g, p_out))
            epilogue(yn, bias, act, self.params)


# ----- ConvTranspose ------------------------------------------------------------------------------
class ConvTransposeKernel(Kernel):
    """ONNX ConvTranspose (and ``edgert.ConvTranspose``). Inputs: X, W ``(C, M/G, k...)``, B."""

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 2, 3)
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        dt = float_dtype(self, [(x, "X"), (w, "W"), (b, "B")])
        rank = len(x.shape)
        if not 3 <= rank <= 5:
            raise self.error(
                f"input X must have rank 3, 4 or 5 (N, C, spatial...), got shape {x.shape}",
                ShapeError,
            )
        if len(w.shape) != rank:
            raise self.error(
                f"weight W has shape {w.shape} (rank {len(w.shape)}) but X has rank {rank}",
                ShapeError,
            )
        nsp = rank - 2
        group = int(self.attr("group", 1))
        if group < 1:
            raise self.error(f"attribute 'group' = {group} must be >= 1")
        n_img, c_in = x.shape[0], x.shape[1]
        if w.shape[0] != c_in:
            raise self.error(
                f"input X has {c_in} channels but W of shape {w.shape} expects {w.shape[0]}",
                ShapeError,
            )
        if c_in % group != 0:
            raise self.error(
                f"input X has {c_in} channels, which group={group} does not divide", ShapeError
            )
        m_per_group = w.shape[1]
        m_out = m_per_group * group
        if b is not None and tuple(b.shape) != (m_out,):
            raise self.error(f"bias B has shape {b.shape}, expected ({m_out},)", ShapeError)
        ksp = tuple(w.shape[2:])
        kernel_shape_attr(self, ksp)
        if any(k <= 0 for k in ksp):
            raise self.error(f"weight W has an empty spatial shape {w.shape}", ShapeError)
        in_sp = tuple(x.shape[2:])
        strides = int_list_attr(self, "strides", nsp, 1, 1)
        dilations = int_list_attr(self, "dilations", nsp, 1, 1)
        pads = int_list_attr(self, "pads", 2 * nsp, 0, 0)
        out_pad = int_list_attr(self, "output_padding", nsp, 0, 0)
        mode = auto_pad_attr(self)
        out_shape_attr = self.attr("output_shape")
        target = None
        if out_shape_attr is not None and len(out_shape_attr) > 0:
            target = [int(v) for v in out_shape_attr]
            if len(target) == nsp + 2:
                target = target[2:]
            if len(target) != nsp or any(t <= 0 for t in target):
                raise self.error(
                    f"attribute output_shape {list(out_shape_attr)} must hold {nsp} positive "
                    "spatial sizes"
                )
        pb, pe, out = [], [], []
        for i in range(nsp):
            s, d, k, n = strides[i], dilations[i], ksp[i], in_sp[i]
            if out_pad[i] >= max(s, d):
                raise self.error(
                    f"output_padding {out_pad} must be smaller than the stride or dilation on "
                    f"axis {i} (stride {s}, dilation {d})"
                )
            full = s * (n - 1) + out_pad[i] + (k - 1) * d + 1
            if target is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
                o = target[i] if target is not None else n * s
                # A target larger than the full output leaves the extra elements at the bias.
                total = max(0, full - o)
                head = total // 2 if mode == "SAME_UPPER" else total - total // 2
                pb.append(head)
                pe.append(total - head)
            elif mode == "VALID":
                o = full
                pb.append(0)
                pe.append(0)
            else:
                o = full - pads[i] - pads[i + nsp]
                pb.append(pads[i])
                pe.append(pads[i + nsp])
            if o <= 0:
                raise self.error(
                    f"spatial axis {i}: pads {pads} leave an empty output (full size {full})",
                    ShapeError,
                )
            out.append(o)
        win = Window(ksp, tuple(strides), tuple(dilations), tuple(pb), tuple(pe), in_sp, tuple(out))
        self.act = parse_activation(self.where(), self.attrs)
        self.params = self.act.params(dt)
        self.group = group
        self.geo = win.geo()
        self.out3 = as3d(win.out_shape)
        k_size = int(np.prod(ksp))
        p_in = int(np.prod(in_sp))
        self.p_in = p_in
        self.mk = m_per_group * k_size  # GEMM rows per group
        # Wᵀ per group: (G, M/G * K, C/G), so that col = Wᵀ @ X[n] is one batched BLAS call.
        # A constant W is packed contiguous once; a computed one is passed as the transposed view
        # (NumPy hands BLAS the transpose flag, measured as fast as a contiguous operand).
        self.w_packed = None
        if w.value is not None:
            self.w_packed = np.array(self._wt_view(np.asarray(w.value, dtype=dt)), order="C")
        self.b_packed = np.zeros(0, dt)
        if b is not None and b.value is not None:
            self.b_packed = owned(b.value, dt)
        self.has_bias_input = b is not None
        self.col = np.empty((m_out * k_size, p_in), dt)
        return [TensorInfo((n_img, m_out) + tuple(out), dt)]

    def _wt_view(self, w: np.ndarray) -> np.ndarray:
        g = self.group
        return w.reshape(g, w.shape[0] // g, self.mk).transpose(0, 2, 1)

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        x = np.ascontiguousarray(inputs[0])
        w = self.w_packed
        if w is None:
            w = self._wt_view(np.ascontiguousarray(inputs[1]))
        bias = self.b_packed
        if self.has_bias_input and bias.shape[0] == 0:
            bias = np.ascontiguousarray(inputs[2])
        n_img, c_in = x.shape[0], x.shape[1]
        m_out = y.shape[1]
        g = self.group
        col = self.col
        col_g = col.reshape(g, self.mk, self.p_in)
        y5 = y.reshape((n_img, m_out) + self.out3)
        code = self.act.code
        p0, p1 = self.params
        for n in range(n_img):
            matmul(w, x[n].reshape(g, c_in // g, self.p_in), out=col_g)
            _col2im(col, y5[n], bias, self.geo, code, p0, p1)


def register(reg: KernelRegistry) -> None:
    from edgert.runtime.kernels.cpu.float16 import with_float16

    # float16 operands run through the float32 kernels (one rounding at the end): float16.py
    conv, conv_t = with_float16(ConvKernel), with_float16(ConvTransposeKernel)
    reg.add("Conv", conv)
    reg.add("ConvTranspose", conv_t)
    reg.add("Conv", conv, domain="edgert")
    reg.add("ConvTranspose", conv_t, domain="edgert")
