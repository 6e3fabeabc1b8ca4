"""The stem kernel (``ConvPath.STEM_3X3_S2``, ``conv/depthwise3.py``) against onnxruntime.

Dense 3x3 convs with stride 2, pads 1, even planes and at most ``CONV3_S2_MAX_C`` input channels
(a network's first layer) are summed over input channels from stride-2 phase planes instead of
im2col + GEMM. Covered: planes with and without an interior, batch 2, one to four input
channels, bias or none, fused activations, end padding 0 (same output size), weights given at
run time, the parallel build, identical filters giving identical channels, and the shapes that
keep im2col.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node

from edgert.runtime.kernels.cpu import registry
from edgert.runtime.kernels.cpu.conv import ConvPath, depthwise3
from edgert.runtime.registry import OpContext, TensorInfo


def _kernel(x, w, b, attrs, const=True, threads=1):
    kern = registry().lookup("Conv", "edgert", 21)(
        OpContext("Conv", "stem", dict(attrs), "edgert", 21, threads))
    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w if const else None)]
    if b is not None:
        infos.append(TensorInfo(b.shape, b.dtype, b if const else None))
    (out,) = kern.prepare(infos)
    return kern, kern, out


def _run(kern, out, ins):
    y = np.full(out.shape, np.nan, out.dtype)  # unwritten elements fail the comparison
    kern.invoke(ins, [y])
    return y


def _want(ins, attrs):
    want = ort_node("Conv", ins, {k: v for k, v in attrs.items()
                                  if k not in ("activation", "activation_params")})[0]
    if attrs.get("activation") == "Relu":
        want = np.maximum(want, 0)
    elif attrs.get("activation") == "Clip":
        want = np.clip(want, *attrs["activation_params"])
    return want


@pytest.mark.parametrize(
    "n,c,m,hw,pads",
    [
        (1, 3, 8, (32, 32), [1, 1, 1, 1]),  # a small MobileNet stem
        (2, 3, 5, (6, 8), [1, 1, 1, 1]),  # batch 2, non-square
        (1, 1, 4, (2, 2), [1, 1, 1, 1]),  # one output pixel
        (1, 4, 3, (2, 10), [1, 1, 1, 1]),  # one output row, four channels
        (1, 2, 6, (8, 4), [1, 1, 0, 0]),  # no end padding: same output size
    ],
)
@pytest.mark.parametrize("bias,act", [(True, "Clip"), (False, "Relu"), (True, None)])
def test_conv3_s2_matches_ort(n, c, m, hw, pads, bias, act):
    rng = np.random.default_rng(hash((n, c, m, hw)) % 2**32)
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    attrs = {"strides": [2, 2], "pads": pads}
    if act == "Relu":
        attrs["activation"] = "Relu"
    elif act == "Clip":
        attrs.update(activation="Clip", activation_params=[0.0, 6.0])
    kern, inner, out = _kernel(x, w, b, attrs)
    assert inner.path is ConvPath.STEM_3X3_S2 and inner.plan.fn is depthwise3._conv3_s2_serial
    ins = [x, w] + ([b] if bias else [])
    np.testing.assert_allclose(_run(kern, out, ins), _want(ins, attrs), rtol=RTOL, atol=ATOL)


def test_conv3_s2_parallel_and_runtime_weights():
    """Above PARALLEL_MIN_WORK the parallel build runs; weights and bias known only at run time
    work too; the phase planes live in the kernel's scratch."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 96, 96)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "activation": "Relu"}
    want = _want([x, w, b], attrs)
    for const in (True, False):
        kern, inner, out = _kernel(x, w, b, attrs, const=const, threads=2)
        assert inner.plan.fn is depthwise3._conv3_s2
        assert inner.scratch_nbytes == x.nbytes
        np.testing.assert_allclose(_run(kern, out, [x, w, b]), want, rtol=RTOL, atol=ATOL)


def test_conv3_s2_identical_filters_identical_channels():
    """Every output channel is computed alone, so bit-identical filters (and biases) give
    bit-identical channels (see test_conv_identical_filters.py for why that matters)."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0.5, 1.5, (1, 3, 16, 16)).astype(np.float32) * np.float32(1e9)
    w = np.full((12, 3, 3, 3), 0.02, np.float32)
    w[6:] = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    b = np.full(12, 0.02, np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    kern, inner, out = _kernel(x, w, b, attrs)
    assert inner.path is ConvPath.STEM_3X3_S2
    got = _run(kern, out, [x, w, b])
    np.testing.assert_allclose(got, _want([x, w, b], attrs), rtol=RTOL, atol=ATOL)
    for ch in range(1, 6):
        np.testing.assert_array_equal(got[:, ch], got[:, 0])
    for ch in range(7, 12):
        np.testing.assert_array_equal(got[:, ch], got[:, 6])


@pytest.mark.parametrize(
    "c,hw,strides,pads,group",
    [
        (5, (8, 8), [2, 2], [1, 1, 1, 1], 1),  # too many input channels
        (3, (7, 8), [2, 2], [1, 1, 1, 1], 1),  # odd height
        (3, (8, 8), [1, 1], [1, 1, 1, 1], 1),  # stride 1
        (3, (8, 8), [2, 2], [0, 0, 1, 1], 1),  # no begin padding
        (4, (8, 8), [2, 2], [1, 1, 1, 1], 2),  # grouped
    ],
)
def test_conv3_s2_not_taken_outside_its_shapes(c, hw, strides, pads, group):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = rng.standard_normal((4, c // group, 3, 3)).astype(np.float32)
    attrs = {"strides": strides, "pads": pads, "group": group}
    kern, inner, out = _kernel(x, w, None, attrs)
    assert inner.path is not ConvPath.STEM_3X3_S2
    np.testing.assert_allclose(_run(kern, out, [x, w]), _want([x, w], attrs), rtol=RTOL,
                               atol=ATOL)
