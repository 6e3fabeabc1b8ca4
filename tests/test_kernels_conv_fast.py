"""Fast convolution paths (issue 7) against onnxruntime: the phase-plane depthwise kernel.

Shapes are small so that each case runs in milliseconds; they still cover every branch of
``_depthwise_phase``: stride 1 and 2 (and 3), the unrolled 3x3 and the generic tap loop,
asymmetric padding, a channel multiplier, batch > 1, fused activations and the serial and
parallel builds.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgert.runtime.kernels.cpu import conv
from helpers import ATOL, RTOL, ort_node, run_kernel


def _dw_case(rng, n, c, mult, hw, k):
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    w = rng.standard_normal((c * mult, 1) + k).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize(
    "n,c,mult,hw,k,strides,pads",
    [
        (1, 5, 1, (9, 9), (3, 3), [2, 2], [1, 1, 1, 1]),  # MobileNet stride-2 layer
        (2, 4, 1, (8, 7), (3, 3), [2, 2], [0, 1, 1, 0]),  # even sizes, asymmetric pads
        (1, 3, 2, (10, 9), (3, 3), [2, 1], [1, 1, 1, 1]),  # multiplier 2, mixed strides
        (1, 4, 1, (11, 11), (5, 5), [2, 2], [2, 2, 2, 2]),  # generic tap loop, stride 2
        (1, 3, 1, (10, 10), (3, 3), [3, 3], [1, 1, 1, 1]),  # stride 3
        (2, 3, 1, (6, 8), (3, 5), [1, 1], [1, 2, 1, 2]),  # stride 1, non-square kernel
        (1, 4, 1, (3, 3), (3, 3), [2, 2], [0, 0, 0, 0]),  # one output pixel
    ],
)
@pytest.mark.parametrize("act", [None, "Relu"])
def test_depthwise_phase_kernel(n, c, mult, hw, k, strides, pads, act, monkeypatch):
    monkeypatch.setattr(conv, "DW_PHASE_MIN_PLANE", 0)  # route stride-1 cases here too
    rng = np.random.default_rng(hash((n, c, mult, hw, k)) % 2**32)
    x, w, b = _dw_case(rng, n, c, mult, hw, k)
    attrs = {"group": c, "strides": strides, "pads": pads}
    want = ort_node("Conv", [x, w, b], attrs)[0]
    if act == "Relu":
        want = np.maximum(want, 0)
        attrs = dict(attrs, activation="Relu")
    got = run_kernel("Conv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_depthwise_phase_selected_and_parallel_matches():
    """Strided depthwise layers take the phase kernel; its parallel build matches ORT too."""
    rng = np.random.default_rng(3)
    # 40 channels of 64x64 -> 32x32: above PARALLEL_MIN_WORK, so the parallel build runs.
    x, w, b = _dw_case(rng, 1, 40, 1, (64, 64), (3, 3))
    attrs = {"group": 40, "strides": [2, 2], "pads": [1, 1, 1, 1]}
    want = ort_node("Conv", [x, w, b], attrs)[0]
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    kern = registry().lookup("Conv", "", 21)(OpContext("Conv", "dw", attrs, "", 21, 2))
    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w),
             TensorInfo(b.shape, b.dtype, b)]
    (out,) = kern.prepare(infos)
    inner = getattr(kern, "inner", kern)  # float16 wrapper, if any
    assert inner.dw_plane is conv._depthwise_phase
    y = np.full(out.shape, np.nan, np.float32)
    kern.invoke([x, w, b], [y])
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def test_depthwise_phase_keeps_nan():
    """A NaN input reaches exactly the outputs whose window covers it (no masking by Relu)."""
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 1, 2, 3] = np.nan
    w = np.ones((2, 1, 3, 3), np.float32)
    attrs = {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1], "activation": "Relu"}
    got = run_kernel("Conv", [x, w], attrs, const_inputs=(1,), domain="edgert")[0]
    want = np.maximum(ort_node("Conv", [x, w], {k: v for k, v in attrs.items()
                                                   if k != "activation"})[0], 0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ort_node(
        "Conv", [x, w], {k: v for k, v in attrs.items() if k != "activation"})[0]))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=RTOL, atol=ATOL)
