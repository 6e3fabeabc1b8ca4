"""Conv and ConvTranspose CPU kernels against onnxruntime (and ONNX's reference where ORT lacks).

Shapes are small and float32 unless a test says otherwise, so the Numba kernels compile once per
path (im2col, depthwise, col2im, epilogue) and each case then runs in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import DTypeError, EdgeRTError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.registry import OpContext, TensorInfo

CONSTS = [pytest.param((1, 2), id="const_w"), pytest.param((), id="dynamic_w")]


def rand(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def check(op: str, inputs: list, attrs: dict, const=(1, 2), domain: str = "") -> np.ndarray:
    got = run_kernel(op, inputs, attrs, const_inputs=const, domain=domain)[0]
    want = ort_node(op, inputs, attrs)[0]
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return got


# ----- Conv: the im2col + GEMM path ---------------------------------------------------------------
CONV2D_CASES = {
    "plain": {},
    "pads_sym": {"pads": [1, 1, 1, 1]},
    "pads_asym": {"pads": [0, 2, 1, 0]},
    "strides": {"strides": [2, 3], "pads": [1, 1, 1, 1]},
    "dilations": {"dilations": [2, 1], "pads": [2, 0, 1, 1]},
    "all": {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 0, 2, 2]},
    "kernel_shape_attr": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
}


@pytest.mark.parametrize("const", CONSTS)
@pytest.mark.parametrize("case", CONV2D_CASES)
def test_conv2d(case, const):
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, 2, 3, 7, 9), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    check("Conv", [x, w, b], CONV2D_CASES[case], const)


@pytest.mark.parametrize("const", CONSTS)
@pytest.mark.parametrize("auto_pad", ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"])
def test_conv_auto_pad(auto_pad, const):
    rng = np.random.default_rng(2)
    # Odd sizes and stride 2 so that SAME needs an odd total padding (UPPER and LOWER differ).
    x, w, b = rand(rng, 1, 2, 8, 7), rand(rng, 3, 2, 4, 3), rand(rng, 3)
    check("Conv", [x, w, b], {"auto_pad": auto_pad, "strides": [2, 2]}, const)


def test_conv_no_bias():
    rng = np.random.default_rng(3)
    check("Conv", [rand(rng, 2, 3, 6, 6), rand(rng, 5, 3, 2, 2)], {"strides": [2, 2]}, (1,))


@pytest.mark.parametrize("const", CONSTS)
def test_conv_grouped(const):
    rng = np.random.default_rng(4)
    x, w, b = rand(rng, 2, 6, 7, 8), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    check("Conv", [x, w, b], {"group": 2, "pads": [1, 0, 1, 2], "strides": [1, 2]}, const)


DEPTHWISE_CASES = {
    "same": {"pads": [1, 1, 1, 1]},
    "stride2": {"pads": [1, 1, 1, 1], "strides": [2, 2]},
    "asym_dilated": {"pads": [0, 2, 1, 0], "dilations": [2, 1]},
    "stride3_unpadded": {"strides": [3, 2]},
}


@pytest.mark.parametrize("const", CONSTS)
@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_conv_depthwise(case, const):
    rng = np.random.default_rng(5)
    x, w, b = rand(rng, 2, 4, 9, 10), rand(rng, 4, 1, 3, 3), rand(rng, 4)
    check("Conv", [x, w, b], dict(group=4, **DEPTHWISE_CASES[case]), const)


def test_conv_depthwise_multiplier():
    rng = np.random.default_rng(6)
    x, w, b = rand(rng, 1, 3, 8, 8), rand(rng, 6, 1, 3, 3), rand(rng, 6)
    check("Conv", [x, w, b], {"group": 3, "pads": [1, 1, 1, 1]})


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("const", CONSTS)
def test_conv_pointwise(group, const):
    rng = np.random.default_rng(7)
    x, w, b = rand(rng, 3, 4, 5, 6), rand(rng, 6, 4 // group, 1, 1), rand(rng, 6)
    check("Conv", [x, w, b], {"group": group}, const)


def test_conv_pointwise_strided_uses_im2col():
    rng = np.random.default_rng(8)
    x, w, b = rand(rng, 2, 4, 7, 7), rand(rng, 6, 4, 1, 1), rand(rng, 6)
    check("Conv", [x, w, b], {"strides": [2, 2]})


@pytest.mark.parametrize("const", CONSTS)
def test_conv1d(const):
    rng = np.random.default_rng(9)
    x, w, b = rand(rng, 2, 3, 11), rand(rng, 4, 3, 3), rand(rng, 4)
    check("Conv", [x, w, b], {"pads": [2, 1], "strides": [2], "dilations": [2]}, const)


def test_conv1d_depthwise():
    rng = np.random.default_rng(10)
    x, w, b = rand(rng, 2, 4, 11), rand(rng, 4, 1, 3), rand(rng, 4)
    check("Conv", [x, w, b], {"group": 4, "pads": [1, 1]})


@pytest.mark.parametrize("const", CONSTS)
def test_conv3d(const):
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, 1, 2, 5, 6, 5), rand(rng, 3, 2, 2, 3, 3), rand(rng, 3)
    attrs = {"pads": [1, 0, 1, 0, 1, 2], "strides": [1, 2, 2], "dilations": [2, 1, 1]}
    check("Conv", [x, w, b], attrs, const)


def test_conv3d_grouped_depthwise():
    rng = np.random.default_rng(12)
    x, w, b = rand(rng, 1, 4, 4, 5, 6), rand(rng, 4, 1, 2, 2, 3), rand(rng, 4)
    check("Conv", [x, w, b], {"group": 4, "pads": [1, 0, 1, 0, 1, 1]})
    w2 = rand(rng, 4, 2, 2, 2, 3)
    check("Conv", [x, w2, b], {"group": 2, "strides": [2, 1, 2]})


def onnx_reference(op: str, inputs: list, attrs: dict) -> np.ndarray:
    """The op run by ONNX's own reference evaluator (covers what onnxruntime does not)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, inputs)
        ],
        [helper.make_tensor_value_info("y", 0, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))[0]


def test_conv_float64():
    """onnxruntime has no float64 Conv on CPU: ONNX's reference evaluator is the reference."""
    rng = np.random.default_rng(13)
    x, w, b = (
        rand(rng, 1, 3, 6, 6, dtype=np.float64),
        rand(rng, 2, 3, 3, 3, dtype=np.float64),
        rand(rng, 2, dtype=np.float64),
    )
    attrs = {"pads": [1, 0, 1, 1], "strides": [1, 2]}
    got = run_kernel("Conv", [x, w, b], attrs, const_inputs=(1, 2))[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, onnx_reference("Conv", [x, w, b], attrs), rtol=1e-12)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_same_with_dilation_against_onnx_reference(auto_pad):
    """onnxruntime rejects SAME with dilation; the spec defines it and ONNX's reference runs it."""
    rng = np.random.default_rng(14)
    x, w, b = rand(rng, 2, 3, 7, 8), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    attrs = {"auto_pad": auto_pad, "strides": [2, 3], "dilations": [2, 1]}
    want = onnx_reference("Conv", [x, w, b], attrs)
    got = run_kernel("Conv", [x, w, b], attrs, const_inputs=(1, 2))[0]
    assert got.shape == want.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_conv_prepare_again_after_resize():
    """A kernel instance is re-prepared when an input shape changes; scratch must follow."""
    rng = np.random.default_rng(15)
    w, b = rand(rng, 4, 3, 3, 3), rand(rng, 4)
    kernel = registry().lookup("Conv")(OpContext("Conv", "c", {"pads": [1, 1, 1, 1]}))
    for shape in [(1, 3, 5, 5), (2, 3, 9, 7)]:
        x = rand(rng, *shape)
        infos = [
            TensorInfo(x.shape, x.dtype),
            TensorInfo(w.shape, w.dtype, w),
            TensorInfo(b.shape, b.dtype, b),
        ]
        (out,) = kernel.prepare(infos)
        y = np.full(out.shape, np.nan, np.float32)
        kernel.invoke([x, w, b], [y])
        np.testing.assert_allclose(
            y, ort_node("Conv", [x, w, b], {"pads": [1, 1, 1, 1]})[0], rtol=RTOL, atol=ATOL
        )


# ----- ConvTranspose ----------------------------------------------------------------------------
CONVT_CASES = {
    "plain": {},
    "strides": {"strides": [2, 3]},
    "pads_asym": {"strides": [2, 2], "pads": [1, 0, 0, 2]},
    "output_padding": {"strides": [2, 3], "output_padding": [1, 2], "pads": [1, 1, 0, 0]},
    "dilations": {"dilations": [2, 1], "strides": [1, 2]},
    "output_shape": {"strides": [2, 2], "output_shape": [10, 12]},
    "same_upper": {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    "same_lower": {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
    "valid": {"strides": [2, 1], "auto_pad": "VALID"},
    "output_shape_same_upper": {
        "strides": [2, 2],
        "output_shape": [10, 11],
        "auto_pad": "SAME_UPPER",
    },
}


@pytest.mark.parametrize("const", CONSTS)
@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose2d(case, const):
    rng = np.random.default_rng(20)
    x, w, b = rand(rng, 2, 3, 5, 6), rand(rng, 3, 4, 3, 3), rand(rng, 4)
    check("ConvTranspose", [x, w, b], CONVT_CASES[case], const)


def test_conv_transpose_output_shape_with_batch_and_channels():
    """Some exporters wrote output_shape as (N, C, spatial...); onnxruntime reads the tail."""
    rng = np.random.default_rng(25)
    x, w, b = rand(rng, 2, 3, 5, 6), rand(rng, 3, 4, 3, 3), rand(rng, 4)
    got = run_kernel(
        "ConvTranspose",
        [x, w, b],
        {"strides": [2, 2], "output_shape": [2, 4, 9, 11]},
        const_inputs=(1, 2),
    )[0]
    want = ort_node("ConvTranspose", [x, w, b], {"strides": [2, 2], "output_shape": [9, 11]})[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("const", CONSTS)
def test_conv_transpose_grouped(const):
    rng = np.random.default_rng(21)
    x, w, b = rand(rng, 2, 4, 4, 5), rand(rng, 4, 3, 3, 2), rand(rng, 6)
    check("ConvTranspose", [x, w, b], {"group": 2, "strides": [2, 1], "pads": [1, 0, 0, 1]}, const)


def test_conv_transpose_no_bias_and_depthwise():
    rng = np.random.default_rng(22)
    x, w = rand(rng, 1, 4, 5, 5), rand(rng, 4, 1, 3, 3)
    check("ConvTranspose", [x, w], {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (1,))


def test_conv_transpose1d():
    rng = np.random.default_rng(23)
    x, w, b = rand(rng, 2, 3, 7), rand(rng, 3, 2, 4), rand(rng, 2)
    check("ConvTranspose", [x, w, b], {"strides": [3], "dilations": [2], "output_padding": [1]})
    check("ConvTranspose", [x, w, b], {"strides": [2], "auto_pad": "SAME_LOWER"}, ())


def test_conv_transpose3d():
    rng = np.random.default_rng(24)
    x, w, b = rand(rng, 1, 2, 3, 4, 3), rand(rng, 2, 3, 2, 3, 2), rand(rng, 3)
    check("ConvTranspose", [x, w, b], {"strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]})


# ----- fused activations (edgert.Conv / edgert.ConvTranspose) -------------------------------------
def _activation_ref(y: np.ndarray, name: str, params: list[float]) -> np.ndarray:
    """The activation from its NumPy formula (float64), independent of the epilogue."""
    y = y.astype(np.float64)
    if name == "Relu":
        return np.maximum(y, 0)
    if name == "Clip":
        return np.minimum(np.maximum(y, params[0]), params[1])
    if name == "LeakyRelu":
        return np.where(y < 0, params[0] * y, y)
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-y))
    if name == "HardSigmoid":
        return np.clip(params[0] * y + params[1], 0, 1)
    if name == "HardSwish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if name == "Tanh":
        return np.tanh(y)
    if name == "Gelu":
        return 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    raise AssertionError(name)


FUSED = [
    ("Relu", []),
    ("Clip", [-0.5, 0.7]),
    ("LeakyRelu", [0.2]),
    ("Sigmoid", []),
    ("HardSigmoid", [0.3, 0.4]),
    ("HardSwish", []),
    ("Tanh", []),
    ("Gelu", []),
]


@pytest.mark.parametrize("name,params", FUSED, ids=[f[0] for f in FUSED])
def test_conv_fused_activation(name, params):
    rng = np.random.default_rng(30)
    x, w, b = rand(rng, 2, 3, 6, 7), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    attrs = {"pads": [1, 1, 1, 1]}
    fused = dict(attrs, activation=name, activation_params=params)
    got = run_kernel("Conv", [x, w, b], fused, const_inputs=(1, 2), domain="edgert")[0]
    want = _activation_ref(ort_node("Conv", [x, w, b], attrs)[0], name, params)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "op,w_shape,attrs",
    [
        ("Conv", (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise kernel
        ("Conv", (5, 4, 1, 1), {}),  # pointwise GEMM
        ("ConvTranspose", (4, 2, 3, 3), {"strides": [2, 2]}),  # col2im
    ],
    ids=["depthwise", "pointwise", "transpose"],
)
def test_fused_activation_every_path(op, w_shape, attrs):
    rng = np.random.default_rng(31)
    x, w = rand(rng, 2, 4, 5, 6), rand(rng, *w_shape)
    b = rand(rng, w_shape[1] if op == "ConvTranspose" else w_shape[0])
    fused = dict(attrs, activation="LeakyRelu", activation_params=[0.1])
    got = run_kernel(op, [x, w, b], fused, const_inputs=(1, 2), domain="edgert")[0]
    want = _activation_ref(ort_node(op, [x, w, b], attrs)[0], "LeakyRelu", [0.1])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_plain_conv_ignores_nothing_without_activation():
    """No ``activation`` attribute means no activation, also under the edgert domain."""
    rng = np.random.default_rng(32)
    x, w, b = rand(rng, 1, 2, 5, 5), rand(rng, 3, 2, 3, 3), rand(rng, 3)
    check("Conv", [x, w, b], {}, domain="edgert")


# ----- errors ------------------------------------------------------------------------------------
def _prepare(op: str, inputs: list, attrs: dict | None = None, const=(1, 2)):
    return run_kernel(op, inputs, attrs or {}, const_inputs=const)


ERRORS = [
    (
        "wrong_channels",
        "Conv",
        [(1, 4, 5, 5), (2, 3, 3, 3)],
        {},
        ShapeError,
        "input X has 4 channels but W of shape (2, 3, 3, 3) with group=1 expects 3",
    ),
    (
        "group_not_dividing_c",
        "Conv",
        [(1, 6, 5, 5), (4, 3, 3, 3)],
        {"group": 4},
        ShapeError,
        "input X has 6 channels but W",
    ),
    (
        "group_not_dividing_m",
        "Conv",
        [(1, 4, 5, 5), (3, 2, 3, 3)],
        {"group": 2},
        ShapeError,
        "W has 3 output channels, which group=2 does not divide",
    ),
    ("rank_2", "Conv", [(4, 5), (2, 4)], {}, ShapeError, "input X must have rank 3, 4 or 5"),
    ("w_rank", "Conv", [(1, 3, 5, 5), (2, 3, 3)], {}, ShapeError, "but X has rank 4"),
    (
        "kernel_too_big",
        "Conv",
        [(1, 3, 4, 4), (2, 3, 5, 3)],
        {},
        ShapeError,
        "spatial axis 0: the kernel extent 5 (kernel 5, dilation 1) is larger than the padded"
        " input 4",
    ),
    (
        "dilated_kernel_too_big",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"dilations": [3, 1]},
        ShapeError,
        "the kernel extent 7 (kernel 3, dilation 3)",
    ),
    (
        "kernel_shape_mismatch",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"kernel_shape": [2, 2]},
        ShapeError,
        "attribute kernel_shape [2, 2] does not match",
    ),
    (
        "bad_auto_pad",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"auto_pad": "SAME"},
        KernelError,
        "attribute 'auto_pad' = 'SAME'",
    ),
    (
        "negative_pads",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"pads": [-1, 0, 0, 0]},
        KernelError,
        "every value must be >= 0",
    ),
    (
        "zero_stride",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"strides": [0, 1]},
        KernelError,
        "attribute 'strides' = [0, 1]",
    ),
    (
        "strides_length",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"strides": [1]},
        KernelError,
        "attribute 'strides' has 1 values, expected 2",
    ),
    (
        "bias_shape",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3), (3,)],
        {},
        ShapeError,
        "bias B has shape (3,), expected (2,)",
    ),
    (
        "unknown_activation",
        "Conv",
        [(1, 3, 6, 6), (2, 3, 3, 3)],
        {"activation": "Softplus"},
        KernelError,
        "unsupported fused activation 'Softplus'",
    ),
    (
        "convT_channels",
        "ConvTranspose",
        [(1, 3, 5, 5), (4, 2, 3, 3)],
        {},
        ShapeError,
        "input X has 3 channels but W of shape (4, 2, 3, 3) expects 4",
    ),
    (
        "convT_group",
        "ConvTranspose",
        [(1, 3, 5, 5), (3, 2, 3, 3)],
        {"group": 2},
        ShapeError,
        "input X has 3 channels, which group=2 does not divide",
    ),
    (
        "convT_output_padding",
        "ConvTranspose",
        [(1, 3, 5, 5), (3, 2, 3, 3)],
        {"strides": [2, 2], "output_padding": [2, 0]},
        KernelError,
        "output_padding [2, 0] must be smaller than the stride or dilation",
    ),
    (
        "convT_pads_eat_output",
        "ConvTranspose",
        [(1, 3, 1, 1), (3, 2, 2, 2)],
        {"pads": [1, 1, 1, 1]},
        ShapeError,
        "leave an empty output",
    ),
]


@pytest.mark.parametrize("name,op,shapes,attrs,exc,msg", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, op, shapes, attrs, exc, msg):
    rng = np.random.default_rng(40)
    inputs = [rand(rng, *s) for s in shapes]
    with pytest.raises(exc) as info:
        _prepare(op, inputs, attrs)
    assert msg in str(info.value)
    assert f"{op} 'test_node'" in str(info.value)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_wrong_dtype(op):
    rng = np.random.default_rng(41)
    x = rand(rng, 1, 2, 4, 4)
    w = rand(rng, 2, 2, 3, 3)
    with pytest.raises(DTypeError, match="input X has dtype int32; this kernel supports float32"):
        _prepare(op, [x.astype(np.int32), w])
    with pytest.raises(DTypeError, match="input W has dtype float16"):
        _prepare(op, [x, w.astype(np.float16)])
    with pytest.raises(DTypeError, match="input W has dtype float64 but input X has float32"):
        _prepare(op, [x, w.astype(np.float64)])


def test_errors_are_edgert_errors():
    assert issubclass(ShapeError, EdgeRTError) and issubclass(KernelError, EdgeRTError)


def test_registered_for_onnx_and_edgert_domains():
    reg = registry()
    for op in ("Conv", "ConvTranspose"):
        assert reg.lookup(op, "", 1) is reg.lookup(op, "", 22) is not None
        assert reg.lookup(op, "edgert") is reg.lookup(op, "")
