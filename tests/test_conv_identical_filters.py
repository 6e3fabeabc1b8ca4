"""Conv output channels with bit-identical filters must come out bit-identical.

OpenBLAS's sgemm is not position-independent: on Haswell/Zen its micro-kernel sums some tiles
with two accumulators (even and odd k) and others with one, so identical rows of the weight
matrix can give results one ulp apart depending on where they sit. ONNX's light SqueezeNet (all
weights 0.02, logits ~7e9) turns that ulp into a wrong Softmax. The Conv kernel computes each
class of identical constant filters once (``blas.identical_rows``); these tests check the property
directly on every group-1 GEMM route of the kernel (pointwise, im2col per image, batched im2col,
row-blocked im2col, threaded GEMM), and the numerics against onnxruntime.

Inputs are positive and the reduction is long (64-144 terms), so that a different summation order
does change the rounding: without the class dedup the pointwise and im2col cases here differ in
some channels on the Haswell/Zen kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node

from edgert.runtime.kernels.cpu import blas, registry
from edgert.runtime.kernels.cpu.blas import identical_rows
from edgert.runtime.kernels.cpu.conv import ConvPath, ConvTuning
from edgert.runtime.registry import OpContext, TensorInfo


def _conv(x, w, b, attrs, threads=1, tuning=None):
    """Prepare (constant W and B) and invoke one Conv kernel; returns (kernel, output)."""
    cls = registry().lookup("Conv", "edgert", 21)
    kernel = cls(OpContext("Conv", "conv_under_test", dict(attrs), "edgert", 21, threads,
                           tuning=tuning))
    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w),
             TensorInfo(b.shape, b.dtype, b)]
    (info,) = kernel.prepare(infos)
    y = np.full(info.shape, np.nan, info.dtype)
    kernel.invoke([x, w, b], [y])
    return kernel, y


def _filters(rng, m_out, c_in, k, n_distinct):
    """``m_out`` filters drawn from ``n_distinct`` classes in a scrambled order, and a bias that
    is equal within a class. Returns (w, b, class of each channel)."""
    classes = rng.permutation(np.arange(m_out) % n_distinct)
    base = rng.standard_normal((n_distinct, c_in) + k).astype(np.float32)
    bias = rng.standard_normal(n_distinct).astype(np.float32)
    return np.ascontiguousarray(base[classes]), bias[classes], classes


def _assert_identical_channels(y, classes):
    for c in np.unique(classes):
        rows = np.nonzero(classes == c)[0]
        for r in rows[1:]:
            np.testing.assert_array_equal(
                y[:, r], y[:, rows[0]],
                err_msg=f"channels {rows[0]} and {r} have identical filters",
            )


# (n, c_in, hw, kernel, pads, m_out, distinct filters, expected route)
CASES = {
    "pointwise": (1, 64, (13, 13), (1, 1), [0, 0, 0, 0], 36, 3, "pointwise"),
    "pointwise_all_equal": (1, 64, (13, 13), (1, 1), [0, 0, 0, 0], 40, 1, "pointwise"),
    "pointwise_batch": (2, 32, (9, 9), (1, 1), [0, 0, 0, 0], 28, 5, "pointwise"),
    # (more than IMPLICIT_MAX_M channels and IMPLICIT_MAX_P positions: the BLAS routes)
    "im2col_image": (1, 16, (18, 18), (3, 3), [1, 1, 1, 1], 36, 4, "image"),
    "im2col_batch": (2, 8, (20, 20), (3, 3), [1, 1, 1, 1], 34, 2, "batch"),
    "im2col_row_blocks": (1, 16, (48, 48), (3, 3), [1, 1, 1, 1], 36, 3, "blocks"),
    # few channels: the implicit-GEMM kernel, which computes every channel alike by itself
    "implicit": (2, 16, (14, 14), (3, 3), [1, 1, 1, 1], 30, 4, "implicit"),
    "implicit_strided": (1, 12, (23, 58), (3, 3), [1, 0, 1, 0], 20, 3, "implicit"),
    # the direct kernel (dconv.py, the default for these shapes), alike by construction too
    "direct": (1, 16, (18, 18), (3, 3), [1, 1, 1, 1], 36, 4, "direct"),
    "direct_strided": (2, 12, (23, 58), (3, 3), [1, 0, 1, 0], 20, 3, "direct"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("act", [None, "Relu"])
def test_identical_filters_give_identical_channels(name, act):
    n, c_in, hw, k, pads, m_out, n_distinct, route = CASES[name]
    tuning = None if route == "direct" else ConvTuning(dconv_min_c=1 << 30)  # keep off DIRECT
    rng = np.random.default_rng(sorted(CASES).index(name))
    x = rng.uniform(0.5, 1.5, (n, c_in) + hw).astype(np.float32)
    w, b, classes = _filters(rng, m_out, c_in, k, n_distinct)
    if name == "pointwise_all_equal":  # the light SqueezeNet pattern: every weight 0.02
        w[...] = np.float32(0.02)
        x *= np.float32(1e9)
        b[...] = np.float32(0.02)
    attrs = {"pads": pads, "strides": [2, 2] if name.endswith("_strided") else [1, 1]}
    want = ort_node("Conv", [x, w, b], attrs)[0]
    if act == "Relu":
        want = np.maximum(want, 0)
        attrs["activation"] = "Relu"
    kernel, got = _conv(x, w, b, attrs, tuning=tuning)

    # The route under test was taken, and the filter classes were found (GEMM routes): the
    # fused BLAS paths, which cannot keep classes alike, are not.
    want_path = {"pointwise": ConvPath.POINTWISE_GEMM, "implicit": ConvPath.IMPLICIT_GEMM,
                 "direct": ConvPath.DIRECT}.get(route, ConvPath.IM2COL_GEMM)
    assert kernel.path is want_path
    if route not in ("implicit", "direct"):
        if route != "pointwise":
            assert kernel.plan.col_batch == (route == "batch")
            assert bool(kernel.plan.block_rows) == (route == "blocks")
        keep, _ = kernel.plan.classes
        assert len(keep) == n_distinct

    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    _assert_identical_channels(got, classes)


def test_identical_filters_with_threaded_gemm(monkeypatch):
    """The column split over GEMM threads keeps identical channels identical."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0.5, 1.5, (1, 64, 24, 24)).astype(np.float32)
    w, b, classes = _filters(rng, 48, 64, (1, 1), 4)
    want = ort_node("Conv", [x, w, b], {})[0]
    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 0)  # split even this small GEMM
    kernel, got = _conv(x, w, b, {}, threads=2)
    assert kernel.path is ConvPath.POINTWISE_GEMM
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    _assert_identical_channels(got, classes)


def test_distinct_filters_take_the_plain_gemm():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    kernel, got = _conv(x, w, b, {"pads": [1, 1, 1, 1]},
                        tuning=ConvTuning(dconv_min_c=1 << 30, implicit_max_m=0))
    assert not kernel.plan.p.identical_filters
    assert kernel.path in (ConvPath.IM2COL_BLAS_ROWS, ConvPath.IM2COL_GEMM)
    np.testing.assert_allclose(got, ort_node("Conv", [x, w, b], {"pads": [1, 1, 1, 1]})[0],
                               rtol=RTOL, atol=ATOL)


# ----- identical_rows ---------------------------------------------------------------------------
def test_identical_rows_classes():
    rng = np.random.default_rng(13)
    a = rng.standard_normal((9, 20)).astype(np.float32)
    a[4] = a[1]
    a[7] = a[1]
    a[6] = a[2]
    a[8] = a[2]
    a[8, -1] += 1.0  # equal to row 2 in the screened columns only: a class of its own
    keep, index = identical_rows(a)
    assert keep.tolist() == [0, 1, 2, 3, 5, 8]  # first of each class, in row order
    assert index.tolist() == [0, 1, 2, 3, 1, 4, 2, 1, 5]
    np.testing.assert_array_equal(a[keep][index], a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identical_rows_compares_bits(dtype):
    z = np.zeros((3, 5), dtype)
    z[1, 3] = -0.0  # -0.0 == 0.0 numerically, but the products' signs can differ: distinct
    z[2] = z[0]
    keep, index = identical_rows(z)
    assert keep.tolist() == [0, 1] and index.tolist() == [0, 1, 0]
    n = np.full((2, 3), np.nan, dtype)  # identical NaN rows do match
    assert identical_rows(n)[0].tolist() == [0]


def test_identical_rows_none_when_distinct():
    rng = np.random.default_rng(14)
    assert identical_rows(rng.standard_normal((50, 30)).astype(np.float32)) is None
    assert identical_rows(np.ones((1, 4), np.float32)) is None
    assert identical_rows(np.ones((3, 0), np.float32)) is None
