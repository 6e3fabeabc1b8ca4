"""Which algorithm a float Conv runs: one pure decision from shapes, dtypes, constness and
threads (XNNPACK's convolution operator chooses the same way).

A layer belongs to one of three families, and each family tries its paths in a fixed order,
taking the first that *applies* (a hard constraint: the code can compute this layer) and is
*preferred* (a measured heuristic of :class:`ConvTuning`):

========== ==================================================================================
family     paths, in order
========== ==================================================================================
pointwise  ``POINTWISE_SMALL`` → ``POINTWISE_BLAS`` → ``POINTWISE_GEMM``
           (1x1 kernel, no padding; strided ones gather their pixels first)
depthwise  ``DEPTHWISE_3X3`` → ``DEPTHWISE_HWC`` → ``DEPTHWISE_PHASE`` → ``DEPTHWISE_PADDED``
           → ``DEPTHWISE`` (one input channel per group, ``group > 1``)
general    ``STEM_3X3_S2`` → ``DIRECT`` → ``IMPLICIT_GEMM`` → ``IM2COL_BLAS_ROWS`` →
           ``IM2COL_GEMM``
========== ==================================================================================

A caller may force a path (``OpContext.path``: tests, benchmarks, a user working around a slow
layer); it must apply, and may come from another family where its constraints allow it
(``DIRECT`` on a 1x1 conv, ``IM2COL_GEMM`` on anything). Each path's module describes its
algorithm and the measurements behind its thresholds.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import numpy as np

from edgert.runtime._jit import PARALLEL_MIN_WORK
from edgert.runtime.kernels.cpu.blas import SPLIT_MIN_MACS
from edgert.runtime.ops.window import Window, as3d


class ConvPath(enum.Enum):
    """The float Conv algorithms (module: what computes it)."""

    POINTWISE_SMALL = "pointwise_small"  # pointwise.py: one fused Numba call, tiny 1x1 layers
    POINTWISE_BLAS = "pointwise_blas"  # pointwise.py: OpenBLAS from compiled code, fused epilogue
    POINTWISE_GEMM = "pointwise_gemm"  # pointwise.py: np.matmul + epilogue
    DEPTHWISE_3X3 = "depthwise_3x3"  # depthwise3.py: flat 3x3 streams, pads 1, stride 1 or 2
    DEPTHWISE_HWC = "depthwise_hwc"  # depthwise.py: channels in the vector lanes, small planes
    DEPTHWISE_PHASE = "depthwise_phase"  # depthwise.py: stride-phase planes, any stride
    DEPTHWISE_PADDED = "depthwise_padded"  # depthwise.py: one padded plane, stride 1
    DEPTHWISE = "depthwise"  # depthwise.py: any rank, stride and dilation
    STEM_3X3_S2 = "stem_3x3_s2"  # depthwise3.py: dense 3x3/2 over phase planes, few channels
    DIRECT = "direct"  # direct.py (dconv): 16 output channels in the lanes
    IMPLICIT_GEMM = "implicit_gemm"  # direct.py (fgemm): no column matrix, FMA micro-tiles
    IM2COL_BLAS_ROWS = "im2col_blas_rows"  # im2col.py: row blocks per thread, OpenBLAS, fused
    IM2COL_GEMM = "im2col_gemm"  # im2col.py: column matrix + np.matmul (everything else)


@dataclass(frozen=True)
class ConvTuning:
    """The measured thresholds behind the choice and the plans (defaults: this project's
    measurements on x86-64; see each path's module). Pass another through ``OpContext.tuning``
    to try other values on a device."""

    # 1x1 convs (one group) of at most this many multiply-adds run as one fused Numba call.
    pointwise_small_macs: int = 1 << 17
    # Strided 1x1 convs (ResNet's projection shortcuts) gather their pixels and take the
    # pointwise paths: interleaved A/B on ResNet-50 0.98x at 1 thread, 0.95x at 2; its three
    # shortcuts from 13-17 to 22-30 GMAC/s. False: they go through im2col.
    strided_pointwise: bool = True
    # Depthwise layers (multiplier 1, constant weights) with input planes up to this size take
    # DEPTHWISE_HWC.
    dw_hwc_max_plane: int = 32 * 32
    # 3x3 depthwise layers take DEPTHWISE_3X3 from these input plane sizes on (stride 1,
    # stride 2) where DEPTHWISE_HWC would apply; elsewhere always. DEPTHWISE_3X3 / HWC time at
    # 1 and 2 threads: stride 1 at 16x16 0.58-0.59, 10x10 0.89-0.97, 8x8 1.13-1.26, 7x7
    # 1.27-1.82; stride 2 at 32x32 0.69-0.86, 28x28 1.05-1.17.
    dw3_min_plane: tuple[int, int] = (10 * 10, 30 * 30)
    # Stride-1 depthwise planes with at least this many outputs take DEPTHWISE_PHASE, smaller
    # ones DEPTHWISE_PADDED (its lower per-channel set-up wins at 7x7..28x28, MobileNetV2).
    dw_phase_min_plane: int = 48 * 48
    # Dense 3x3 stride-2 convs with at most this many input channels (network stems).
    conv3_s2_max_c: int = 4
    # DIRECT: group-1 float32 2-D convs with at least dconv_min_c input and dconv_min_m output
    # channels, or RGB stems with at least dconv_stem_taps taps. Against the best of im2col +
    # OpenBLAS and the implicit GEMM, one thread, interleaved: 0.71-0.94x on stride-1 3x3 layers
    # of ResNet/DenseNet/SqueezeNet/GoogLeNet shapes (0.35x on 7x7 maps), even on stride 2;
    # 7x7/2 stems 0.97x, 11x11/4 0.93x; their 3x3 stems stay on im2col + OpenBLAS (dconv
    # 1.11-1.27x, the implicit GEMM 1.4-1.8x), as do 1x1 layers (1.00-1.10x).
    dconv_min_c: int = 5
    dconv_min_m: int = 16
    dconv_stem_taps: int = 25
    # IMPLICIT_GEMM: group-1 float32 convs with at most this many output channels or output
    # positions (measured faster than im2col + single-threaded OpenBLAS there).
    implicit_max_m: int = 32
    implicit_max_p: int = 256
    # IM2COL_GEMM: the batched column matrix costs N times one image's; above this many bytes
    # the images go one by one through a single-image buffer.
    col_batch_bytes: int = 32 << 20
    # A single image's column matrix larger than this is built and multiplied in blocks of
    # whole output rows (2-D convs), each block sized to stay in L2 while BLAS reads it.
    col_block_bytes: int = 1 << 20
    # POINTWISE_BLAS thread split. Each BLAS call packs all of its W rows and X columns: a
    # column split packs W once per thread, a row split X once per thread. Below
    # pw_row_split_p positions per thread, with more output channels than positions
    # (pw_row_split_wide: ResNet's 14x14 and 7x7 stages, MobileNetV2's late layers) and for
    # expansion layers (pw_row_split_expand) the split is by output channels: at 2 threads
    # ResNet-50 0.92-0.96x, MobileNetV2 0.92x, SqueezeNet 0.97x, DenseNet-121 0.97x; a column
    # split of MobileNetV2's 24->144 and 32->192 layers ran 1.2-3.4x slower than a row split.
    pw_row_split_p: int = 32
    pw_row_split_wide: bool = True
    pw_row_split_expand: bool = True
    # Grouped pointwise convs whose group count the threads divide give each thread whole groups
    # (ShuffleNet's group-4 layers at 2 threads: 0.79-0.99x of the better of the other splits).
    pw_group_split: bool = True
    # Work below this many output elements runs in a kernel's serial build (see
    # edgert.runtime._jit.PARALLEL_MIN_WORK).
    parallel_min_work: int = PARALLEL_MIN_WORK
    # GEMM work (multiply-adds) below which a layer is not split over threads
    # (edgert.runtime.kernels.cpu.blas.SPLIT_MIN_MACS).
    split_min_macs: int = SPLIT_MIN_MACS


DEFAULT_TUNING = ConvTuning()


@dataclass(frozen=True)
class ConvProblem:
    """A float Conv layer as the choice sees it (derived sizes computed once: the plans read
    them at every run)."""

    n: int  # batch
    c_in: int
    m_out: int
    group: int
    win: Window
    dtype: np.dtype
    w_const: bool  # weights known at prepare
    identical_filters: bool  # constant group-1 weights with bit-identical rows (see gemm paths)
    blas: bool  # NumPy's OpenBLAS is callable from compiled code (_native.openblas)
    threads: int

    @functools.cached_property
    def rank(self) -> int:
        return len(self.win.kernel) + 2

    @functools.cached_property
    def c_per_group(self) -> int:
        return self.c_in // self.group

    @functools.cached_property
    def k_size(self) -> int:
        return math.prod(self.win.kernel)

    @functools.cached_property
    def p_out(self) -> int:
        return math.prod(self.win.out_shape)

    @functools.cached_property
    def in_plane(self) -> int:
        return math.prod(self.win.in_shape)

    @functools.cached_property
    def in3(self) -> tuple[int, int, int]:
        return as3d(self.win.in_shape)

    @functools.cached_property
    def out3(self) -> tuple[int, int, int]:
        return as3d(self.win.out_shape)

    @functools.cached_property
    def macs(self) -> int:
        return self.n * self.m_out * self.c_per_group * self.k_size * self.p_out

    # ----- shape classes --------------------------------------------------------------------
    @functools.cached_property
    def is_1x1(self) -> bool:
        w = self.win
        return (all(k == 1 for k in w.kernel) and not any(w.pads_begin)
                and not any(w.pads_end))

    @functools.cached_property
    def is_depthwise(self) -> bool:
        return self.c_per_group == 1 and self.group > 1

    @functools.cached_property
    def plain_2d(self) -> bool:
        """2-D with dilation 1 (the specialized depthwise kernels)."""
        return self.rank == 4 and all(v == 1 for v in self.win.dilations)

    def dw3_stride(self) -> int:
        """1 or 2 where the layer is a 3x3 pads-1 window DEPTHWISE_3X3 / STEM_3X3_S2 compute
        (stride 1 keeping the plane's size, or stride 2 halving even planes), else 0."""
        w = self.win
        if not (self.plain_2d and w.kernel == (3, 3) and tuple(w.pads_begin) == (1, 1)):
            return 0
        h_in, w_in = w.in_shape
        if tuple(w.strides) == (1, 1) and tuple(w.out_shape) == (h_in, w_in) and min(
                h_in, w_in) >= 2:
            return 1
        if (tuple(w.strides) == (2, 2) and h_in % 2 == 0 and w_in % 2 == 0
                and tuple(w.out_shape) == (h_in // 2, w_in // 2)):
            return 2
        return 0


_CHAINS = {
    "pointwise": (ConvPath.POINTWISE_SMALL, ConvPath.POINTWISE_BLAS, ConvPath.POINTWISE_GEMM),
    "depthwise": (ConvPath.DEPTHWISE_3X3, ConvPath.DEPTHWISE_HWC, ConvPath.DEPTHWISE_PHASE,
                  ConvPath.DEPTHWISE_PADDED, ConvPath.DEPTHWISE),
    "general": (ConvPath.STEM_3X3_S2, ConvPath.DIRECT, ConvPath.IMPLICIT_GEMM,
                ConvPath.IM2COL_BLAS_ROWS, ConvPath.IM2COL_GEMM),
}


def family(p: ConvProblem, t: ConvTuning = DEFAULT_TUNING) -> str:
    strided = any(s != 1 for s in p.win.strides)
    if p.is_1x1 and (t.strided_pointwise or not strided):
        return "pointwise"
    if p.is_depthwise:
        return "depthwise"
    return "general"


def why_not(path: ConvPath, p: ConvProblem) -> str | None:
    """Why ``path`` cannot compute ``p`` (a hard constraint), or None when it can."""
    f32_const = "float32 with constant weights" if not (
        p.dtype == np.float32 and p.w_const) else None
    if path in (ConvPath.POINTWISE_SMALL, ConvPath.POINTWISE_BLAS, ConvPath.POINTWISE_GEMM):
        if not p.is_1x1:
            return "a 1x1 kernel without padding"
        if path is ConvPath.POINTWISE_SMALL and p.group != 1:
            return "group 1"
        if path is ConvPath.POINTWISE_BLAS:
            return _blas_reason(p)
        return None
    if path in (ConvPath.DEPTHWISE_3X3, ConvPath.DEPTHWISE_HWC, ConvPath.DEPTHWISE_PHASE,
                ConvPath.DEPTHWISE_PADDED, ConvPath.DEPTHWISE):
        if not p.is_depthwise:
            return "one input channel per group (group > 1)"
        if path is ConvPath.DEPTHWISE:
            return None
        if not p.plain_2d:
            return "a 2-D window with dilation 1"
        if path is ConvPath.DEPTHWISE_3X3 and not p.dw3_stride():
            return "a 3x3 window, pads 1, stride 1 (same size) or 2 (even planes, halved)"
        if path is ConvPath.DEPTHWISE_HWC and not (p.m_out == p.c_in and p.w_const):
            return "channel multiplier 1 and constant weights"
        if path is ConvPath.DEPTHWISE_PADDED and any(s != 1 for s in p.win.strides):
            return "stride 1"
        return None
    if path is ConvPath.STEM_3X3_S2:
        if p.group != 1 or p.dw3_stride() != 2:
            return "group 1, a 3x3 window, pads 1, stride 2 over even planes"
        return None
    if path is ConvPath.DIRECT:
        if p.group != 1 or p.rank != 4:
            return "group 1 and a 2-D window"
        return f32_const
    if path is ConvPath.IMPLICIT_GEMM:
        if p.group != 1:
            return "group 1"
        if f32_const:
            return f32_const
        from edgert.runtime.kernels.cpu import fgemm

        if fgemm.plan(p.win.geo(), p.c_in) is None:
            return "output rows wide enough for its row tiles"
        return None
    if path is ConvPath.IM2COL_BLAS_ROWS:
        if p.group != 1 or p.in3[0] != 1 or p.out3[0] != 1:
            return "group 1 and a 1-D or 2-D window"
        return _blas_reason(p)
    return None  # IM2COL_GEMM: everything


def _blas_reason(p: ConvProblem) -> str | None:
    if not p.blas:
        return "NumPy's OpenBLAS callable from compiled code"
    if p.identical_filters:
        return "no bit-identical filters (they take np.matmul, computed once per class)"
    return None


def _preferred(path: ConvPath, p: ConvProblem, t: ConvTuning) -> bool:
    """The measured heuristics (see :class:`ConvTuning`)."""
    if path is ConvPath.POINTWISE_SMALL:
        return p.macs <= t.pointwise_small_macs
    if path is ConvPath.DEPTHWISE_3X3:
        stride = p.dw3_stride()
        if not stride:
            return False
        hwc = (why_not(ConvPath.DEPTHWISE_HWC, p) is None
               and p.in_plane <= t.dw_hwc_max_plane)
        return not (hwc and p.in_plane < t.dw3_min_plane[stride - 1])
    if path is ConvPath.DEPTHWISE_HWC:
        return p.in_plane <= t.dw_hwc_max_plane
    if path is ConvPath.DEPTHWISE_PHASE:
        return not (all(s == 1 for s in p.win.strides) and p.p_out < t.dw_phase_min_plane)
    if path is ConvPath.STEM_3X3_S2:
        return p.c_in <= t.conv3_s2_max_c
    if path is ConvPath.DIRECT:
        return p.m_out >= t.dconv_min_m and (
            p.c_in >= t.dconv_min_c or p.k_size >= t.dconv_stem_taps)
    if path is ConvPath.IMPLICIT_GEMM:
        return p.m_out <= t.implicit_max_m or p.p_out <= t.implicit_max_p
    return True


def choose(p: ConvProblem, tuning: ConvTuning = DEFAULT_TUNING,
           force: ConvPath | None = None) -> ConvPath | str:
    """The path for ``p``; with ``force``, that path, or a string saying why it cannot run."""
    if force is not None:
        reason = why_not(force, p)
        return force if reason is None else f"path {force.name} needs {reason}"
    for path in _CHAINS[family(p, tuning)]:
        if _preferred(path, p, tuning) and why_not(path, p) is None:
            return path
    raise AssertionError("every chain ends in a path that always applies")
