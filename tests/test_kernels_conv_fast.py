"""Fast convolution paths (issue 7) against onnxruntime: the phase-plane depthwise kernel.

Shapes are small so that each case runs in milliseconds; they still cover every branch of
``_depthwise_phase``: stride 1 and 2 (and 3), the unrolled 3x3 and the generic tap loop,
asymmetric padding, a channel multiplier, batch > 1, fused activations and the serial and
parallel builds.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.runtime import KernelOptions
from edgert.runtime.kernels.cpu.conv import ConvKernel, ConvPath, ConvTuning, depthwise


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
def test_depthwise_phase_kernel(n, c, mult, hw, k, strides, pads, act):
    rng = np.random.default_rng(hash((n, c, mult, hw, k)) % 2**32)
    x, w, b = _dw_case(rng, n, c, mult, hw, k)
    attrs = {"group": c, "strides": strides, "pads": pads}
    want = ort_node("Conv", [x, w, b], attrs)[0]
    if act == "Relu":
        want = np.maximum(want, 0)
        attrs = dict(attrs, activation="Relu")
    got = run_kernel("Conv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert",
                     path=ConvPath.DEPTHWISE_PHASE)[0]
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

    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w),
             TensorInfo(b.shape, b.dtype, b)]
    kern = registry().lookup("Conv", "", 21)(OpContext("Conv", "dw", attrs, "", 21, 2))
    kern.prepare(infos)
    assert kern.path is ConvPath.DEPTHWISE_3X3  # this layer's own choice
    # forced, the phase kernel runs it
    kern = registry().lookup("Conv", "", 21)(
        OpContext("Conv", "dw", attrs, "", 21, 2, path=ConvPath.DEPTHWISE_PHASE))
    (out,) = kern.prepare(infos)
    assert kern.plan.fn is depthwise._depthwise_phase
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


@pytest.mark.parametrize(
    "n,c,hw,k,strides,pads,bias",
    [
        (1, 6, (7, 7), (3, 3), [1, 1], [1, 1, 1, 1], True),  # late MobileNet layer
        (2, 5, (8, 9), (3, 3), [2, 2], [1, 1, 1, 1], False),  # stride 2, batch 2, no bias
        (1, 4, (9, 9), (5, 5), [2, 1], [2, 1, 0, 2], True),  # generic taps, asymmetric pads
        (1, 3, (2, 3), (3, 3), [1, 1], [1, 1, 1, 1], True),  # no interior pixel at all
        (1, 4, (5, 6), (3, 3), [1, 1], [2, 2, 2, 3], True),  # pixels with every tap in padding
    ],
)
@pytest.mark.parametrize("act", [None, "Clip", "HardSwish"])
def test_depthwise_hwc_kernel(n, c, hw, k, strides, pads, bias, act):
    """The channel-vectorized kernel that small depthwise planes take."""
    rng = np.random.default_rng(c * 7 + k[0])
    x, w, b = _dw_case(rng, n, c, 1, hw, k)
    ins = [x, w, b] if bias else [x, w]
    attrs = {"group": c, "strides": strides, "pads": pads}
    want = ort_node("Conv", ins, attrs)[0]
    if act == "Clip":
        want = np.clip(want, -0.5, 1.5)
        attrs = dict(attrs, activation="Clip", activation_params=[-0.5, 1.5])
    elif act == "HardSwish":  # not a clamp: applied after the kernel's biased sum
        want = want * np.clip(want / 6 + 0.5, 0, 1)
        attrs = dict(attrs, activation="HardSwish")
    got = run_kernel("Conv", ins, attrs, const_inputs=(1, 2), domain="edgert")[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_depthwise_hwc_selected_parallel_and_shared_scratch():
    """A small-plane layer takes _depthwise_hwc (parallel build here) inside a model, through
    the interpreter's shared scratch buffer, and matches onnxruntime."""
    # not DEPTHWISE_3X3; 96x24x24 outputs above, 96x12x12 below: one parallel and one serial
    tuning = ConvTuning(dw3_min_plane=(1 << 40, 1 << 40), parallel_min_work=96 * 16 * 16)
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgert.converter import convert
    from edgert.runtime import Interpreter

    rng = np.random.default_rng(11)
    c = 96
    w1 = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b2 = rng.standard_normal(c).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], group=c, pads=[1, 1, 1, 1],
                         strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "dw2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 24, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, nm) for a, nm in ((w1, "w1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((1, c, 24, 24)).astype(np.float32)
    interp = Interpreter(convert(model), num_threads=2,
                         kernel_options={"Conv": KernelOptions(tuning=tuning)})
    convs = [s.kernel for s in interp._steps if isinstance(s.kernel, ConvKernel)]
    assert [k.path for k in convs] == [ConvPath.DEPTHWISE_HWC] * 2
    assert [k.plan.fn for k in convs] == [depthwise._depthwise_hwc,
                                          depthwise._depthwise_hwc_serial]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(interp.run({"x": x})["y"], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n,c,m,hw", [(1, 8, 16, (4, 4)), (2, 5, 3, (3, 7)), (1, 1, 4, (2, 2))])
@pytest.mark.parametrize("bias,act", [(True, "Relu"), (False, None)])
def test_pointwise_small_kernel(n, c, m, hw, bias, act):
    """Small 1x1 convs go through the fused _pointwise_small call."""
    rng = np.random.default_rng(n * 100 + c)
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c, 1, 1)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    ins = [x, w, b] if bias else [x, w]
    want = ort_node("Conv", ins, {})[0]
    attrs = {}
    if act == "Relu":
        want = np.maximum(want, 0)
        attrs = {"activation": "Relu"}
    got = run_kernel("Conv", ins, attrs, const_inputs=(1, 2), domain="edgert")[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # a computed (non-constant) weight takes the same path
    got2 = run_kernel("Conv", ins, attrs, const_inputs=(), domain="edgert")[0]
    np.testing.assert_allclose(got2, want, rtol=RTOL, atol=ATOL)


def _maxpool_y_only(x, attrs):
    """MaxPool invoked as the interpreter does for a node without the Indices output."""
    from edgert.runtime.kernels.cpu import pooling, registry
    from edgert.runtime.registry import OpContext, TensorInfo

    kern = registry().lookup("MaxPool", "", 21)(OpContext("MaxPool", "mp", attrs, "", 21, 1))
    out = kern.prepare([TensorInfo(x.shape, x.dtype)])[0]
    inner = kern if isinstance(kern, pooling.MaxPoolKernel) else kern.inner
    assert inner.rows  # the row-wise kernel (_max_pool_rows)
    y = np.full(out.shape, np.nan, x.dtype)
    kern.invoke([x], [y])
    return y


@pytest.mark.parametrize(
    "shape,attrs",
    [
        ((1, 3, 11, 11), {"kernel_shape": [3, 3], "strides": [2, 2]}),  # SqueezeNet's pool
        ((2, 2, 8, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ((1, 2, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        ((1, 3, 7, 6), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
        ((1, 2, 9, 9), {"kernel_shape": [2, 3], "strides": [3, 2], "pads": [0, 1, 1, 0]}),
        ((1, 1, 2, 2), {"kernel_shape": [2, 2]}),
    ],
)
def test_maxpool_phase_kernel(shape, attrs):
    """2-D MaxPool without Indices takes the phase-plane kernel; against onnxruntime."""
    x = np.random.default_rng(len(shape) + shape[2]).standard_normal(shape).astype(np.float32)
    want = ort_node("MaxPool", [x], attrs)[0]
    np.testing.assert_allclose(_maxpool_y_only(x, attrs), want, rtol=RTOL, atol=ATOL)


def test_maxpool_phase_parallel_and_nan():
    """The parallel build (a large input) matches NumPy, and a NaN wins its windows."""
    x = np.random.default_rng(5).standard_normal((2, 8, 48, 48)).astype(np.float32)
    x[1, 3, 10, 10] = np.nan
    got = _maxpool_y_only(x, {"kernel_shape": [3, 3], "strides": [2, 2]})
    # NumPy reference: the max over the nine strided views (np.max propagates NaN).
    views = [x[:, :, i : i + 2 * 23 : 2, j : j + 2 * 23 : 2] for i in range(3) for j in range(3)]
    want = np.max(np.stack(views), axis=0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() > 0
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=RTOL, atol=ATOL)

