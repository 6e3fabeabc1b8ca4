"""The flat-plane 3x3 depthwise kernel (``ConvPath.DEPTHWISE_3X3``) against onnxruntime.

``_depthwise3`` takes MobileNet's depthwise layers: 3x3, pads 1, stride 1 (any plane of at least
2x2) or stride 2 (even planes). Each plane is computed as one contiguous stream plus separately
computed border rows and columns, so the cases below cover planes with and without an interior
(2x2, 2x5, 3x3, odd widths), both strides, a channel multiplier, batch 2, bias or none, fused
activations, weights given at run time, float64, NaN propagation, and the parallel build.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node

from edgert.runtime.kernels.cpu import registry
from edgert.runtime.kernels.cpu.conv import ConvPath, ConvTuning, depthwise, depthwise3
from edgert.runtime.registry import OpContext, TensorInfo

# DEPTHWISE_3X3 on small planes too (not DEPTHWISE_HWC); and the other way round.
DW3_ALWAYS = ConvTuning(dw3_min_plane=(0, 0))
HWC_FIRST = ConvTuning(dw3_min_plane=(1 << 40, 1 << 40))


def _kernel(x, w, b, attrs, const=True, threads=1, tuning=None):
    """A prepared ConvKernel and its output shape."""
    kern = registry().lookup("Conv", "edgert", 21)(
        OpContext("Conv", "dw3", dict(attrs), "edgert", 21, threads, tuning=tuning))
    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w if const else None)]
    if b is not None:
        infos.append(TensorInfo(b.shape, b.dtype, b if const else None))
    (out,) = kern.prepare(infos)
    return kern, kern, out


def _run(kern, out, ins):
    y = np.full(out.shape, np.nan, out.dtype)  # unwritten elements fail the comparison
    kern.invoke(ins, [y])
    return y


def _want(ins, attrs, act):
    want = ort_node("Conv", ins, {k: v for k, v in attrs.items()
                                  if k not in ("activation", "activation_params")})[0]
    if act == "Relu":
        want = np.maximum(want, 0)
    elif act == "Clip":
        want = np.clip(want, -0.5, 1.5)
    return want


def _attrs(c, mult, stride, pads, act):
    attrs = {"group": c, "strides": [stride, stride], "pads": pads, "kernel_shape": [3, 3]}
    if act == "Relu":
        attrs["activation"] = "Relu"
    elif act == "Clip":
        attrs.update(activation="Clip", activation_params=[-0.5, 1.5])
    return attrs


@pytest.mark.parametrize(
    "n,c,mult,hw,stride,pads",
    [
        (1, 4, 1, (2, 2), 1, [1, 1, 1, 1]),  # no interior: corners only
        (1, 3, 1, (2, 5), 1, [1, 1, 1, 1]),  # two rows: border rows only
        (1, 3, 1, (3, 3), 1, [1, 1, 1, 1]),  # one interior pixel
        (2, 3, 2, (6, 7), 1, [1, 1, 1, 1]),  # batch 2, multiplier 2, odd width
        (1, 5, 1, (9, 2), 1, [1, 1, 1, 1]),  # two columns
        (1, 4, 1, (2, 2), 2, [1, 1, 1, 1]),  # stride 2, one output pixel
        (1, 3, 1, (2, 6), 2, [1, 1, 1, 1]),  # stride 2, one output row
        (2, 3, 2, (8, 10), 2, [1, 1, 1, 1]),  # stride 2, batch 2, multiplier 2
        (1, 4, 1, (6, 6), 2, [1, 1, 0, 0]),  # stride 2, no end padding (same output size)
    ],
)
@pytest.mark.parametrize("bias,act", [(True, None), (False, "Relu"), (True, "Clip")])
def test_depthwise3_matches_ort(n, c, mult, hw, stride, pads, bias, act):
    rng = np.random.default_rng(hash((n, c, mult, hw, stride)) % 2**32)
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    w = rng.standard_normal((c * mult, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32) if bias else None
    attrs = _attrs(c, mult, stride, pads, act)
    kern, inner, out = _kernel(x, w, b, attrs, tuning=DW3_ALWAYS)
    assert inner.path is ConvPath.DEPTHWISE_3X3 and inner.plan.stride == stride
    assert inner.plan.fn is depthwise3._depthwise3_serial
    ins = [x, w] + ([b] if bias else [])
    np.testing.assert_allclose(_run(kern, out, ins), _want(ins, attrs, act), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise3_parallel_runtime_weights_and_float64(stride):
    """Above PARALLEL_MIN_WORK the parallel build runs; weights and bias given only at run
    time are packed per call; float64 takes the same kernel."""
    rng = np.random.default_rng(5 + stride)
    c = 40
    x = rng.standard_normal((1, c, 64, 64)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    attrs = _attrs(c, 1, stride, [1, 1, 1, 1], "Relu")
    want = _want([x, w, b], attrs, "Relu")
    kern, inner, out = _kernel(x, w, b, attrs, threads=2)
    assert inner.plan.fn is depthwise3._depthwise3
    np.testing.assert_allclose(_run(kern, out, [x, w, b]), want, rtol=RTOL, atol=ATOL)
    kern, inner, out = _kernel(x, w, b, attrs, const=False, threads=2)
    assert inner.plan.fn is depthwise3._depthwise3
    np.testing.assert_allclose(_run(kern, out, [x, w, b]), want, rtol=RTOL, atol=ATOL)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    kern, inner, out = _kernel(x64, w64, b64, attrs, threads=2)
    assert inner.plan.fn is depthwise3._depthwise3
    got = _run(kern, out, [x64, w64, b64])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _numpy_dw3(x64, w64, b64, stride, "Relu"), rtol=1e-10,
                               atol=1e-12)


def _numpy_dw3(x, w, b, stride, act):
    """NumPy reference (onnxruntime has no float64 Conv): zero-pad by 1, sum the nine taps."""
    n, c, h, wd = x.shape
    oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((n, c, oh, ow), x.dtype)
    for kh in range(3):
        for kw in range(3):
            win = xp[:, :, kh : kh + (oh - 1) * stride + 1 : stride,
                     kw : kw + (ow - 1) * stride + 1 : stride]
            y += w[None, :, 0, kh, kw, None, None] * win
    y += b[None, :, None, None]
    return np.maximum(y, 0) if act == "Relu" else y


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise3_keeps_nan(stride):
    """A NaN input reaches exactly the outputs whose window covers it, through Relu, wherever
    it sits (interior, border row, border column)."""
    attrs = _attrs(3, 1, stride, [1, 1, 1, 1], "Relu")
    for pos in [(0, 3, 3), (1, 0, 4), (2, 5, 0), (0, 7, 7)]:
        x = np.zeros((1, 3, 8, 8), np.float32)
        x[(0,) + pos] = np.nan
        w = np.ones((3, 1, 3, 3), np.float32)
        kern, inner, out = _kernel(x, w, None, attrs, tuning=DW3_ALWAYS)
        assert inner.path is ConvPath.DEPTHWISE_3X3
        got = _run(kern, out, [x, w])
        want = _want([x, w], attrs, "Relu")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise3_row_end_inf_stays_in_its_row(stride):
    """The flat stream reads across row ends at columns 0 and W-1 and selects those taps away:
    an Inf at the end of one row must not reach the next row's column 0 (a product with 0 would
    make it NaN), nor -Inf at a row's start the row above."""
    attrs = _attrs(2, 1, stride, [1, 1, 1, 1], None)
    x = np.random.default_rng(3).standard_normal((1, 2, 8, 6)).astype(np.float32)
    x[0, 0, 3, 5] = np.inf
    x[0, 1, 4, 0] = -np.inf
    x[0, 1, 6, 5] = np.inf
    w = np.random.default_rng(4).uniform(0.5, 1.5, (2, 1, 3, 3)).astype(np.float32)
    b = np.array([0.25, -0.5], np.float32)
    kern, inner, out = _kernel(x, w, b, attrs, tuning=DW3_ALWAYS)
    assert inner.path is ConvPath.DEPTHWISE_3X3
    got = _run(kern, out, [x, w, b])
    want = _want([x, w, b], attrs, None)
    assert np.isinf(want).any() and not np.isnan(want).any()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("act,params,ref", [
    ("Sigmoid", None, lambda v: 1 / (1 + np.exp(-v))),
    ("HardSigmoid", [0.2, 0.5], lambda v: np.clip(0.2 * v + 0.5, 0, 1)),
])
def test_depthwise3_other_activations_after_the_bias(stride, act, params, ref):
    """Relu and Clip are clamps in the kernel's store; other fused activations run after it,
    on the biased sum."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 6, 8)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    attrs = _attrs(3, 1, stride, [1, 1, 1, 1], None)
    attrs["activation"] = act
    if params is not None:
        attrs["activation_params"] = params
    kern, inner, out = _kernel(x, w, b, attrs, tuning=DW3_ALWAYS)
    assert inner.path is ConvPath.DEPTHWISE_3X3
    want = ref(_want([x, w, b], attrs, None)).astype(np.float32)
    np.testing.assert_allclose(_run(kern, out, [x, w, b]), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "hw,stride,pads,k",
    [
        ((7, 8), 2, [1, 1, 1, 1], 3),  # odd height at stride 2
        ((8, 8), 1, [1, 1, 0, 0], 3),  # output smaller than input at stride 1
        ((8, 8), 1, [2, 2, 2, 2], 5),  # 5x5
        ((1, 6), 1, [1, 1, 1, 1], 3),  # a single row
    ],
)
def test_depthwise3_not_taken_outside_its_shapes(hw, stride, pads, k):
    """Layers outside 3x3 / pads 1 / stride 1 or 2 on even planes keep the other kernels."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3) + hw).astype(np.float32)
    w = rng.standard_normal((3, 1, k, k)).astype(np.float32)
    attrs = {"group": 3, "strides": [stride, stride], "pads": pads}
    kern, inner, out = _kernel(x, w, None, attrs, tuning=DW3_ALWAYS)
    assert inner.path is not ConvPath.DEPTHWISE_3X3
    np.testing.assert_allclose(_run(kern, out, [x, w]), _want([x, w], attrs, None),
                               rtol=RTOL, atol=ATOL)


def test_depthwise3_leaves_small_planes_to_hwc():
    """With the measured thresholds a 7x7 layer keeps the channel-vectorized kernel."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 8, 7, 7)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    _, inner, _ = _kernel(x, w, None, _attrs(8, 1, 1, [1, 1, 1, 1], None))
    assert inner.path is ConvPath.DEPTHWISE_HWC
    x = rng.standard_normal((1, 8, 56, 56)).astype(np.float32)
    _, inner, _ = _kernel(x, w, None, _attrs(8, 1, 1, [1, 1, 1, 1], None))
    assert inner.path is ConvPath.DEPTHWISE_3X3


def test_repeated_invoke_reuses_the_call_and_sees_new_data():
    """A second invoke with the same (planned) arrays repeats the remembered kernel call: new
    input values are read, other arrays take the full path, a non-contiguous input (copied per
    call) is never remembered, and a runtime bias disables the shortcut."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    attrs = _attrs(4, 1, 1, [1, 1, 1, 1], "Relu")
    kern, inner, out = _kernel(x, w, b, attrs, tuning=DW3_ALWAYS)
    y = np.empty(out.shape, np.float32)
    kern.invoke([x, w, b], [y])
    assert inner._fast is not None and inner._fast[0] is x and inner._fast[1] is y
    x[...] = rng.standard_normal(x.shape)  # same array object, new values
    y[...] = np.nan
    kern.invoke([x, w, b], [y])
    np.testing.assert_allclose(y, _want([x, w, b], attrs, "Relu"), rtol=RTOL, atol=ATOL)
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    y2 = _run(kern, out, [x2, w, b])
    np.testing.assert_allclose(y2, _want([x2, w, b], attrs, "Relu"), rtol=RTOL, atol=ATOL)

    xt = np.asfortranarray(x2)  # not C-contiguous: copied in invoke, so not remembered
    kern, inner, out = _kernel(xt, w, b, attrs, tuning=DW3_ALWAYS)
    np.testing.assert_allclose(_run(kern, out, [xt, w, b]), _want([x2, w, b], attrs, "Relu"),
                               rtol=RTOL, atol=ATOL)
    assert inner._fast is None
    kern, inner, out = _kernel(x, w, b, attrs, const=False, tuning=DW3_ALWAYS)
    y = np.empty(out.shape, np.float32)
    kern.invoke([x, w, b], [y])
    assert inner._fast is None


@pytest.mark.parametrize("c,hw,stride,threads", [(13, (7, 7), 1, 1), (17, (10, 8), 2, 1),
                                                 (24, (6, 6), 1, 1), (200, (24, 24), 2, 2)])
def test_hwc_blocked_transposes(c, hw, stride, threads):
    """_depthwise_hwc transposes by blocks of 8 channels plus a channel tail (13, 17), or
    blocks only (24, 200); 200 channels also run its parallel build."""
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, c) + hw).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    attrs = _attrs(c, 1, stride, [1, 1, 1, 1], "Clip")
    kern, inner, out = _kernel(x, w, b, attrs, threads=threads, tuning=HWC_FIRST)
    assert inner.path is not ConvPath.DEPTHWISE_3X3
    assert inner.plan.fn is (depthwise._depthwise_hwc if threads == 2
                              else depthwise._depthwise_hwc_serial)
    np.testing.assert_allclose(_run(kern, out, [x, w, b]), _want([x, w, b], attrs, "Clip"),
                               rtol=RTOL, atol=ATOL)
