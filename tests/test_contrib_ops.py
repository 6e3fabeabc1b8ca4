"""onnxruntime's contrib operators (com.microsoft) of the transformer fusions, lowered at import.

Every test builds a small model with onnx.helper, runs it in onnxruntime (the reference) and in
edgert (``edgert.convert`` + ``Interpreter``), and compares float32 results within 1e-5. Where
onnxruntime's CPU build has no kernel for an operator (GroupNorm, NhwcConv, BiasSplitGelu,
BiasAdd: CUDA only), the reference is onnxruntime running the standard-operator subgraph that its
transformers optimizer replaces with that operator (each test says which). The composite test
passes a BERT-like encoder built from standard operators through
``onnxruntime.transformers.optimizer.optimize_model`` and compares the fused model.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgert
from edgert.errors import UnsupportedOpError
from edgert.importer import import_onnx
from edgert.runtime import Interpreter

ort = pytest.importorskip("onnxruntime")

MS = "com.microsoft"
RTOL = ATOL = 1e-5


# ----- helpers ------------------------------------------------------------------------------------
def _model(nodes, feeds: dict, outputs, inits: dict | None = None, shapes: bool | dict = True,
           opset: int = 17) -> onnx.ModelProto:
    """Inputs ``feeds`` (declared with their shapes, or without when ``shapes`` is False or maps
    the name to False), initializers ``inits``, outputs ``outputs`` (types left to infer, but
    float32 for a name ending in ``:f``, where onnxruntime cannot infer one)."""
    def shape_of(name, v):
        keep = shapes.get(name, True) if isinstance(shapes, dict) else shapes
        return list(v.shape) if keep else None

    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype),
                                         shape_of(k, v)) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o[:-2], TensorProto.FLOAT, None) if o.endswith(":f")
            else helper.make_empty_tensor_value_info(o) for o in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", ins, outs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 10
    return model


def _ms(op: str, inputs, outputs, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, domain=MS, **attrs)


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _edgert(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    out = Interpreter(edgert.convert(model)).run(feeds)
    return [out[o.name] for o in model.graph.output]


def _compare(got: list[np.ndarray], ref: list[np.ndarray], rtol=RTOL, atol=ATOL) -> None:
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.dtype == r.dtype, (i, g.dtype, r.dtype)
        assert g.shape == r.shape, (i, g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"output {i}")


def _check(model: onnx.ModelProto, feeds: dict, rtol=RTOL, atol=ATOL) -> list[np.ndarray]:
    """edgert against onnxruntime on the same model; returns onnxruntime's outputs."""
    ref = _ort(model, feeds)
    _compare(_edgert(model, feeds), ref, rtol, atol)
    return ref


def _lowered(model: onnx.ModelProto) -> set[str]:
    """The op types edgert imports the model as (no contrib domain may remain)."""
    graph = import_onnx(model)
    assert all(n.domain == "" for n in graph.nodes), graph.op_histogram()
    return {n.op_type for n in graph.nodes}


def _declined(model: onnx.ModelProto, op: str, *words: str) -> str:
    with pytest.raises(UnsupportedOpError) as info:
        edgert.convert(model)
    reasons = [r for o, _, r in info.value.ops if o == op]
    assert reasons, info.value.ops
    for w in words:
        assert w in reasons[0], reasons[0]
    return reasons[0]


def _f(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ----- layer normalizations -----------------------------------------------------------------------
@pytest.mark.parametrize("skip_shape", ["full", "broadcast_batch", "2d_skip", "2d_input"])
@pytest.mark.parametrize("with_beta,with_bias", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("outputs", [("y",), ("y", "mean", "inv_std", "sum"), ("y", "", "", "sum"),
                                     ("y", "mean")])
def test_skip_layer_normalization(rng, skip_shape, with_beta, with_bias, outputs):
    b, s, h = 2, 3, 16
    x_shape = (b * s, h) if skip_shape == "2d_input" else (b, s, h)
    skip = {"full": x_shape, "broadcast_batch": (1, s, h), "2d_skip": (s, h),
            "2d_input": x_shape}[skip_shape]
    feeds = {"x": _f(rng, *x_shape), "skip": _f(rng, *skip)}
    inits = {"gamma": _f(rng, h), "beta": _f(rng, h), "bias": _f(rng, h)}
    ins = ["x", "skip", "gamma", "beta" if with_beta else "", "bias" if with_bias else ""]
    node = _ms("SkipLayerNormalization", ins, list(outputs), epsilon=1e-4)
    _check(_model([node], feeds, [o for o in outputs if o], inits), feeds)


def test_skip_layer_normalization_default_epsilon_and_chained_sum(rng):
    """epsilon defaults to 1e-12; the sum output feeds the next SkipLayerNormalization (as in the
    optimizer's output for a residual chain)."""
    h = 8
    feeds = {"x": _f(rng, 2, 4, h, scale=1e-3), "skip": _f(rng, 2, 4, h, scale=1e-3)}
    inits = {"g": _f(rng, h), "b": _f(rng, h), "g2": _f(rng, h)}
    nodes = [_ms("SkipLayerNormalization", ["x", "skip", "g", "b"], ["y", "", "", "sum"]),
             _ms("SkipLayerNormalization", ["y", "sum", "g2"], ["y2"])]
    _check(_model(nodes, feeds, ["y2"], inits), feeds)


def test_skip_layer_normalization_float16(rng):
    """float16: onnxruntime adds input, skip and bias in float32 and rounds once, the lowering
    rounds after each Add (and normalizes the rounded sum), so results differ by about one
    float16 step (2^-10 relative)."""
    h = 16
    feeds = {"x": _f(rng, 2, 3, h).astype(np.float16), "skip": _f(rng, 2, 3, h).astype(np.float16)}
    inits = {"g": _f(rng, h).astype(np.float16), "b": _f(rng, h).astype(np.float16)}
    node = _ms("SkipLayerNormalization", ["x", "skip", "g", "b", "b"], ["y", "mean", "inv", "sum"])
    _check(_model([node], feeds, ["y", "mean", "inv", "sum"], inits), feeds, rtol=4e-3, atol=4e-3)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("outputs", [("y",), ("y", "mean", "inv_std", "sum"), ("y", "", "inv_std"),
                                     ("y", "", "", "sum")])
def test_skip_simplified_layer_normalization(rng, with_bias, outputs):
    """The mean output of the RMS form is all zeros in onnxruntime; the lowering writes zeros."""
    h = 16
    feeds = {"x": _f(rng, 2, 3, h), "skip": _f(rng, 3, h)}
    inits = {"gamma": _f(rng, h), "bias": _f(rng, h)}
    node = _ms("SkipSimplifiedLayerNormalization",
               ["x", "skip", "gamma", "bias" if with_bias else ""], list(outputs), epsilon=1e-6)
    ref = _check(_model([node], feeds, [o for o in outputs if o], inits), feeds)
    if "mean" in outputs:
        assert not ref[1].any()


@pytest.mark.parametrize("axis", [-1, -2, 1, 2])
@pytest.mark.parametrize("inv_std", [False, True])
def test_simplified_layer_normalization(rng, axis, inv_std):
    """SimplifiedLayerNormalization is registered by onnxruntime in the default domain. The input
    comes out of a contrib operator, so its rank (needed for a non-negative axis) is found from
    the lowered producer, not by ONNX shape inference."""
    shape = (2, 3, 8)
    feeds = {"x": _f(rng, *shape)}
    inits = {"scale": _f(rng, *shape[axis:])}
    outs = ["y", "inv"] if inv_std else ["y"]
    nodes = [_ms("FastGelu", ["x"], ["xr"]),
             helper.make_node("SimplifiedLayerNormalization", ["xr", "scale"], outs, axis=axis,
                              epsilon=1e-3)]
    _check(_model(nodes, feeds, outs, inits), feeds)


def test_simplified_layer_normalization_defaults_and_ms_domain(rng):
    """Default epsilon (1e-5); the same operator written in com.microsoft (onnxruntime only
    registers the default-domain one) is lowered alike: compared to onnxruntime's default-domain
    result."""
    feeds = {"x": _f(rng, 2, 5, 8, scale=1e-2)}
    inits = {"scale": _f(rng, 8)}
    plain = _model([helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], ["y"])],
                   feeds, ["y"], inits)
    ref = _check(plain, feeds)
    ms = _model([_ms("SimplifiedLayerNormalization", ["x", "scale"], ["y"])], feeds, ["y"], inits)
    _compare(_edgert(ms, feeds), ref)


# ----- activations --------------------------------------------------------------------------------
def test_gelu_family(rng):
    feeds = {"x": _f(rng, 2, 3, 16, scale=2.0)}
    inits = {"bias": _f(rng, 16)}
    nodes = [_ms("Gelu", ["x"], ["gelu"]),
             _ms("BiasGelu", ["x", "bias"], ["bias_gelu"]),
             _ms("FastGelu", ["x", "bias"], ["fast_gelu_bias"]),
             _ms("FastGelu", ["x"], ["fast_gelu"]),
             _ms("QuickGelu", ["x"], ["quick_gelu"]),
             _ms("QuickGelu", ["x"], ["quick_gelu_alpha"], alpha=-0.75)]
    model = _model(nodes, feeds, [n.output[0] for n in nodes], inits)
    _check(model, feeds)
    assert _lowered(model) == {"Gelu", "Add", "Swish"}


def test_bias_add(rng):
    """BiasAdd (CUDA only in onnxruntime) against the Add(Add(X, bias), skip) onnxruntime's
    transformers optimizer fuses into it."""
    feeds = {"x": _f(rng, 2, 6, 8), "skip": _f(rng, 2, 6, 8)}
    inits = {"bias": _f(rng, 8)}
    fused = _model([_ms("BiasAdd", ["x", "bias", "skip"], ["y"])], feeds, ["y"], inits)
    plain = _model([helper.make_node("Add", ["x", "bias"], ["t"]),
                    helper.make_node("Add", ["t", "skip"], ["y"])], feeds, ["y"], inits)
    _compare(_edgert(fused, feeds), _ort(plain, feeds))


def test_bias_split_gelu(rng):
    """BiasSplitGelu (CUDA only) against the subgraph fusion_biassplitgelu replaces: Add(bias),
    the first half times Gelu (erf) of the second half along the last axis."""
    d = 16
    feeds = {"x": _f(rng, 2, 5, d)}
    inits = {"bias": _f(rng, d), "s0": np.array([0], np.int64), "s1": np.array([d // 2], np.int64),
             "s2": np.array([d], np.int64), "ax": np.array([-1], np.int64)}
    fused = _model([_ms("BiasSplitGelu", ["x", "bias"], ["y"])], feeds, ["y"], inits)
    plain = _model([helper.make_node("Add", ["x", "bias"], ["t"]),
                    helper.make_node("Slice", ["t", "s0", "s1", "ax"], ["left"]),
                    helper.make_node("Slice", ["t", "s1", "s2", "ax"], ["right"]),
                    _ms("Gelu", ["right"], ["g"]),
                    helper.make_node("Mul", ["left", "g"], ["y"])], feeds, ["y"], inits)
    _compare(_edgert(fused, feeds), _ort(plain, feeds))


# ----- MatMul / Gemm / Conv -----------------------------------------------------------------------
def _matmul_operand(rng, batch, rows, cols, trans, trans_batch):
    """An operand that FusedMatMul's transforms turn into batch + [rows, cols]."""
    core = [cols, rows] if trans else [rows, cols]
    shape = [core[0], *batch, core[1]] if trans_batch and batch else [*batch, *core]
    return _f(rng, *shape)


@pytest.mark.parametrize("flags", list(itertools.product([0, 1], repeat=4)))
@pytest.mark.parametrize("b_const", [True, False])
def test_fused_matmul(rng, flags, b_const):
    ta, tb, tba, tbb = flags
    a = _matmul_operand(rng, [2, 3], 4, 5, ta, tba)
    b = _matmul_operand(rng, [2, 3], 5, 6, tb, tbb)
    node = _ms("FusedMatMul", ["a", "b"], ["y"], alpha=0.75, transA=ta, transB=tb,
               transBatchA=tba, transBatchB=tbb)
    feeds = {"a": a} if b_const else {"a": a, "b": b}
    _check(_model([node], feeds, ["y"], {"b": b} if b_const else None), feeds)


@pytest.mark.parametrize("flags", [(1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 1, 0), (0, 1, 0, 1)])
def test_fused_matmul_unknown_rank(rng, flags):
    """Operands of unknown rank (undeclared inputs): the transposes become Einsums."""
    ta, tb, tba, tbb = flags
    a = _matmul_operand(rng, [3], 4, 5, ta, tba)
    b = _matmul_operand(rng, [3], 5, 6, tb, tbb)
    node = _ms("FusedMatMul", ["a", "b"], ["y"], transA=ta, transB=tb, transBatchA=tba,
               transBatchB=tbb)
    feeds = {"a": a, "b": b}
    model = _model([node], feeds, ["y"], shapes=False)
    _check(model, feeds)
    assert "Einsum" in _lowered(model)


def test_fused_matmul_alpha_of_unknown_type(rng):
    """Operands from TopK behind a contrib operator (ONNX shape inference stops at the contrib
    operator, the importer's type walk does not follow TopK): alpha is cast like A at run time."""
    feeds = {"a": _f(rng, 3, 4, 6), "b": _f(rng, 3, 5, 6)}
    k = {"k": np.array([5], np.int64)}
    nodes = [_ms("QuickGelu", ["a"], ["ga"]), _ms("QuickGelu", ["b"], ["gb"]),
             helper.make_node("TopK", ["ga", "k"], ["a5", "ia"]),
             helper.make_node("TopK", ["gb", "k"], ["b5", "ib"]),
             _ms("FusedMatMul", ["a5", "b5"], ["y"], transB=1, alpha=0.3)]
    model = _model(nodes, feeds, ["y"], k)
    _check(model, feeds)
    assert "CastLike" in _lowered(model)


def test_fused_matmul_broadcast_and_transpose_matmul(rng):
    feeds = {"a": _f(rng, 2, 1, 4, 5), "b": _f(rng, 3, 6, 5)}
    nodes = [_ms("FusedMatMul", ["a", "b"], ["y"], transB=1, alpha=-2.0),
             _ms("TransposeMatMul", ["a", "b"], ["y2"], transB=1)]
    _check(_model(nodes, feeds, ["y", "y2"]), feeds)


_GEMM_CASES = [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Softplus", {}), ("Softsign", {}),
    ("LeakyRelu", {"activation_alpha": 0.15}),
    ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.4}),
    ("Elu", {"activation_alpha": 0.8}),
    ("Selu", {"activation_alpha": 1.6, "activation_gamma": 1.1}),
    ("ThresholdedRelu", {"activation_alpha": 0.5}),
    ("Celu", {"activation_alpha": 0.7}),
    ("ScaledTanh", {"activation_alpha": 0.6, "activation_beta": 1.3}),
    ("ParametricSoftplus", {"activation_alpha": 0.6, "activation_beta": 1.3}),
]


@pytest.mark.parametrize("activation,params", _GEMM_CASES)
def test_fused_gemm(rng, activation, params):
    inits = {"b": _f(rng, 4, 3), "c": _f(rng, 4)}
    node = _ms("FusedGemm", ["a", "b", "c"], ["y"], activation=activation, alpha=0.7, beta=1.5,
               transA=1, transB=1, **params)
    feeds = {"a": _f(rng, 3, 5, scale=2.0)}
    _check(_model([node], feeds, ["y"], inits), feeds)


_CONV_CASES = [
    (None, None), ("Relu", None), ("Sigmoid", None), ("Tanh", None), ("HardSwish", None),
    ("LeakyRelu", [0.2]), ("HardSigmoid", [0.3, 0.45]), ("Clip", [-0.4, 0.6]),
]


@pytest.mark.parametrize("activation,params", _CONV_CASES)
@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv(rng, activation, params, with_z):
    feeds = {"x": _f(rng, 2, 4, 7, 7)}
    if with_z:
        feeds["z"] = _f(rng, 2, 6, 4, 3)
    inits = {"w": _f(rng, 6, 2, 3, 3, scale=0.5), "b": _f(rng, 6)}
    attrs = {"group": 2, "pads": [1, 0, 1, 1], "strides": [2, 2]}
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = params
    node = _ms("FusedConv", ["x", "w", "b", "z" if with_z else ""], ["y"], **attrs)
    _check(_model([node], feeds, ["y"], inits), feeds)


def test_fused_conv_residual_without_bias(rng):
    feeds = {"x": _f(rng, 1, 3, 6, 6), "z": _f(rng, 1, 4, 6, 6)}
    node = _ms("FusedConv", ["x", "w", "", "z"], ["y"], activation="Relu", auto_pad="SAME_UPPER",
               dilations=[1, 1], kernel_shape=[3, 3])
    _check(_model([node], feeds, ["y"], {"w": _f(rng, 4, 3, 3, 3)}), feeds)


@pytest.mark.parametrize("group,bias", [(1, True), (2, False)])
def test_nhwc_conv(rng, group, bias):
    """NhwcConv (CUDA only) against what onnxruntime's NhwcConv fusion replaces: Transpose to
    NHWC... here the other way round, the NCHW Conv between Transposes, with the fusion's weight
    layout [M, kH, kW, C/group] (fusion_nhwc_conv.py transposes the weight by [0, 2, 3, 1])."""
    w = _f(rng, 6, 4 // group, 3, 2, scale=0.5)
    feeds = {"x": _f(rng, 2, 5, 6, 4)}  # NHWC
    inits = {"w_ohwi": np.ascontiguousarray(w.transpose(0, 2, 3, 1)), "w": w, "b": _f(rng, 6)}
    attrs = {"group": group, "pads": [1, 0, 1, 0], "strides": [1, 2]}
    fused = _model([_ms("NhwcConv", ["x", "w_ohwi", "b" if bias else ""], ["y"], **attrs)],
                   feeds, ["y"], inits)
    plain = _model([helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
                    helper.make_node("Conv", ["xt", "w", "b" if bias else ""], ["yt"], **attrs),
                    helper.make_node("Transpose", ["yt"], ["y"], perm=[0, 2, 3, 1])],
                   feeds, ["y"], inits)
    _compare(_edgert(fused, feeds), _ort(plain, feeds))


@pytest.mark.parametrize("channels_last", [1, 0])
@pytest.mark.parametrize("activation", [0, 1])
def test_group_norm(rng, channels_last, activation):
    """GroupNorm (CUDA only) against the subgraph fusion_group_norm.py replaces: Reshape to
    (N, G, -1), InstanceNormalization (unit scale, zero bias), Reshape back, per-channel Mul and
    Add, and Sigmoid·x for the SiLU activation (with the fusion's NHWC Transposes)."""
    n, c, h, w, groups, eps = 2, 8, 3, 5, 4, 1e-4
    x = _f(rng, n, c, h, w, scale=3.0) + 1.0
    gamma, beta = _f(rng, c), _f(rng, c)
    feeds = {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x}
    inits = {"gamma": gamma, "beta": beta, "g3": gamma.reshape(c, 1, 1),
             "b3": beta.reshape(c, 1, 1), "ones": np.ones(groups, np.float32),
             "zeros": np.zeros(groups, np.float32), "grouped": np.array([0, groups, -1], np.int64)}
    fused = _model([_ms("GroupNorm", ["x", "gamma", "beta"], ["y"], groups=groups,
                        activation=activation, channels_last=channels_last, epsilon=eps)],
                   feeds, ["y"], inits)
    nodes = []
    src = "x"
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        src = "x_nchw"
    nodes += [helper.make_node("Reshape", [src, "grouped"], ["r3"]),
              helper.make_node("InstanceNormalization", ["r3", "ones", "zeros"], ["in"],
                               epsilon=eps),
              helper.make_node("Shape", [src], ["shape"]),
              helper.make_node("Reshape", ["in", "shape"], ["r4"]),
              helper.make_node("Mul", ["r4", "g3"], ["scaled"]),
              helper.make_node("Add", ["scaled", "b3"], ["gn"])]
    last = "gn"
    if activation:
        nodes += [helper.make_node("Sigmoid", ["gn"], ["sig"]),
                  helper.make_node("Mul", ["gn", "sig"], ["silu"])]
        last = "silu"
    if channels_last:
        nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    _compare(_edgert(fused, feeds), _ort(_model(nodes, feeds, ["y"], inits), feeds))


# ----- Attention ----------------------------------------------------------------------------------
_B, _S, _D, _N = 2, 4, 8, 2


def _attention_feeds(rng, sizes=(_D, _D, _D)):
    return ({"x": _f(rng, _B, _S, _D)},
            {"w": _f(rng, _D, sum(sizes), scale=0.5), "bias": _f(rng, sum(sizes), scale=0.5)})


_MASKS = {
    "lengths": np.array([2, 4], np.int32),
    "end_start": np.array([3, 4, 1, 0], np.int32),
    # onnxruntime reads only the end positions of the [3B + 2] form on CPU
    "cuda_form": np.array([3, 2, 0, 0, 0, 4, 8, 0], np.int32),
    "2d": np.array([[1, 0, 1, 1], [1, 1, 5, 0]], np.int32),
    "2d_negative": np.array([[1, -1, 1, 0], [0, 1, 1, 1]], np.int32),
    "3d": np.array([[[1, 1, 0, 1]] * 4, [[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]],
                   np.int32),
}


@pytest.mark.parametrize("mask", [None, *_MASKS])
@pytest.mark.parametrize("unidirectional", [0, 1])
def test_attention_masks(rng, mask, unidirectional):
    feeds, inits = _attention_feeds(rng)
    ins = ["x", "w", "bias"]
    if mask is not None:
        feeds["mask"] = _MASKS[mask]
        ins.append("mask")
    node = _ms("Attention", ins, ["y"], num_heads=_N, unidirectional=unidirectional)
    _check(_model([node], feeds, ["y"], inits), feeds)


@pytest.mark.parametrize("attrs", [{"scale": 0.2}, {"scale": -0.4}, {"mask_filter_value": -30.0},
                                   {"qkv_hidden_sizes": [8, 8, 12]}])
def test_attention_attributes(rng, attrs):
    sizes = attrs.get("qkv_hidden_sizes", (_D, _D, _D))
    feeds, inits = _attention_feeds(rng, sizes)
    feeds["mask"] = _MASKS["2d"]
    node = _ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=_N, **attrs)
    _check(_model([node], feeds, ["y"], inits), feeds)


def test_attention_bias_input_without_projection_bias(rng):
    feeds, inits = _attention_feeds(rng)
    feeds["attn_bias"] = _f(rng, 1, _N, _S, _S)
    feeds["mask"] = _MASKS["lengths"]
    node = _ms("Attention", ["x", "w", "", "mask", "", "attn_bias"], ["y"], num_heads=_N)
    _check(_model([node], feeds, ["y"], {"w": inits["w"]}), feeds)


@pytest.mark.parametrize("mask", [None, "lengths", "2d"])
@pytest.mark.parametrize("unidirectional", [0, 1])
def test_attention_past_present(rng, mask, unidirectional):
    """GPT-2 style: past [2, B, N, P, H] is concatenated before the new keys, present returned."""
    past_len = 3
    feeds, inits = _attention_feeds(rng)
    feeds["past"] = _f(rng, 2, _B, _N, past_len, _D // _N)
    masks = {None: None, "lengths": np.array([5, 7], np.int32),
             "2d": np.array([[1, 1, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], np.int32)}
    ins = ["x", "w", "bias", "", "past"]
    if mask is not None:
        feeds["mask"] = masks[mask]
        ins[3] = "mask"
    node = _ms("Attention", ins, ["y", "present"], num_heads=_N, unidirectional=unidirectional)
    _check(_model([node], feeds, ["y", "present"], inits), feeds)


def test_attention_fully_masked_row(rng):
    """A batch entry whose keys are all masked: onnxruntime adds -10000 to every score, so the
    softmax runs on the shifted raw scores. In float32, score - 10000 keeps about 1e-3 of the
    score (the spacing of floats near 1e4), so the two runtimes' different summation orders give
    probabilities that differ by up to ~1e-3 there; rows with any unmasked key are exact."""
    feeds, inits = _attention_feeds(rng)
    feeds["mask"] = np.array([0, 3], np.int32)
    node = _ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=_N)
    model = _model([node], feeds, ["y"], inits)
    ref = _ort(model, feeds)
    got = _edgert(model, feeds)
    np.testing.assert_allclose(got[0][1], ref[0][1], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[0][0], ref[0][0], rtol=0, atol=5e-3)


def test_attention_mask_rank_from_producer(rng):
    """The mask reaches Attention through Cast (as the optimizer writes it): its rank is found
    from the graph input behind the Cast."""
    feeds, inits = _attention_feeds(rng)
    feeds["m64"] = _MASKS["2d"].astype(np.int64)
    nodes = [helper.make_node("Cast", ["m64"], ["mask"], to=TensorProto.INT32),
             _ms("Attention", ["x", "w", "bias", "mask"], ["y"], num_heads=_N)]
    _check(_model(nodes, feeds, ["y"], inits), feeds)


# ----- MultiHeadAttention -------------------------------------------------------------------------
_L, _H = 5, 4


def _mha_feeds(rng, kv_len=_L):
    return {"q": _f(rng, _B, _S, _D), "k": _f(rng, _B, kv_len, _D), "v": _f(rng, _B, kv_len, _D)}


_KEY_MASKS = {
    "lengths": np.array([3, 5], np.int32),
    "2d": np.array([[1, 0, 2, -1, 1], [1, 1, 1, 1, 0]], np.int32),
    "3d": (np.arange(_B * _S * _L).reshape(_B, _S, _L) % 3 != 1).astype(np.int32),
}


@pytest.mark.parametrize("mask", [None, *_KEY_MASKS])
@pytest.mark.parametrize("bias", [False, True])
def test_multi_head_attention(rng, mask, bias):
    feeds = _mha_feeds(rng)
    ins = ["q", "k", "v", "bias" if bias else ""]
    if mask is not None:
        feeds["mask"] = _KEY_MASKS[mask]
        ins.append("mask")
    node = _ms("MultiHeadAttention", ins, ["y"], num_heads=_N)
    _check(_model([node], feeds, ["y"], {"bias": _f(rng, 3 * _D)}), feeds)


@pytest.mark.parametrize("attrs", [{"scale": 0.3}, {"scale": -0.3}, {"mask_filter_value": -7.0},
                                   {"unidirectional": 1}])
def test_multi_head_attention_attributes_and_qk(rng, attrs):
    """Self-attention with attention_bias; the optional qk output is the scaled scores plus the
    mask and attention bias."""
    feeds = _mha_feeds(rng, kv_len=_S)
    feeds["mask"] = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], np.int32)
    feeds["attn_bias"] = _f(rng, _B, 1, _S, _S)
    node = _ms("MultiHeadAttention", ["q", "k", "v", "", "mask", "attn_bias"],
               ["y", "", "", "qk"], num_heads=_N, **attrs)
    _check(_model([node], feeds, ["y", "qk:f"]), feeds)


@pytest.mark.parametrize("mask", [None, "lengths", "2d"])
@pytest.mark.parametrize("unidirectional", [0, 1])
def test_multi_head_attention_past_present(rng, mask, unidirectional):
    """Decoder self-attention with a cache: present = past ++ new keys / values. (onnxruntime
    reads past_key / past_value only when present outputs are requested; they always are here.)"""
    past = 2
    feeds = _mha_feeds(rng, kv_len=_S)
    feeds["pk"] = _f(rng, _B, _N, past, _H)
    feeds["pv"] = _f(rng, _B, _N, past, _H)
    ins = ["q", "k", "v", "bias", "", "", "pk", "pv"]
    if mask == "lengths":
        feeds["mask"] = np.array([4, 6], np.int32)
        ins[4] = "mask"
    elif mask == "2d":
        feeds["mask"] = np.array([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]], np.int32)
        ins[4] = "mask"
    node = _ms("MultiHeadAttention", ins, ["y", "present_key", "present_value"], num_heads=_N,
               unidirectional=unidirectional)
    _check(_model([node], feeds, ["y", "present_key", "present_value"],
                  {"bias": _f(rng, 3 * _D)}), feeds)


@pytest.mark.parametrize("mask", ["lengths", "2d"])
def test_multi_head_attention_4d_key_value(rng, mask):
    """Cross attention with key / value already in [B, N, L, H]: only the query gets its bias;
    the present outputs are key and value themselves."""
    feeds = _mha_feeds(rng)
    for name in ("k", "v"):
        heads = feeds[name].reshape(_B, _L, _N, _H)
        feeds[name] = np.ascontiguousarray(heads.transpose(0, 2, 1, 3))
    feeds["mask"] = _KEY_MASKS[mask]
    node = _ms("MultiHeadAttention", ["q", "k", "v", "bias", "mask"], ["y", "pk", "pv"],
               num_heads=_N)
    _check(_model([node], feeds, ["y", "pk", "pv"], {"bias": _f(rng, 3 * _D)}), feeds)


def test_multi_head_attention_projected_inputs(rng):
    """Q / K / V computed by MatMuls behind a contrib operator (their ranks are found from the
    producers), V wider than Q and K."""
    x = _f(rng, _B, _S, 6)
    inits = {"wq": _f(rng, 6, _D), "wk": _f(rng, 6, _D), "wv": _f(rng, 6, 12)}
    nodes = [_ms("Gelu", ["x"], ["xg"])]
    nodes += [helper.make_node("MatMul", ["xg", w], [w[1]]) for w in ("wq", "wk", "wv")]
    nodes.append(_ms("MultiHeadAttention", ["q", "k", "v"], ["y"], num_heads=_N))
    feeds = {"x": x}
    _check(_model(nodes, feeds, ["y"], inits), feeds)


@pytest.mark.parametrize("packing", ["qkv", "kv"])
def test_multi_head_attention_packed(rng, packing):
    """Packed QKV [B, L, N, 3, H] / KV [B, L, N, 2, H] (no onnxruntime CPU kernel): compared to
    onnxruntime's MultiHeadAttention on the unpacked tensors."""
    kv_len = _S if packing == "qkv" else _L
    feeds = _mha_feeds(rng, kv_len)
    split = {n: feeds[n].reshape(_B, -1, _N, 1, _H) for n in feeds}
    if packing == "qkv":
        packed = {"qkv": np.concatenate([split["q"], split["k"], split["v"]], axis=3)}
        node = _ms("MultiHeadAttention", ["qkv"], ["y"], num_heads=_N)
    else:
        packed = {"q": feeds["q"], "kv": np.concatenate([split["k"], split["v"]], axis=3)}
        node = _ms("MultiHeadAttention", ["q", "kv"], ["y"], num_heads=_N)
    plain = _model([_ms("MultiHeadAttention", ["q", "k", "v"], ["y"], num_heads=_N)], feeds, ["y"])
    _compare(_edgert(_model([node], packed, ["y"]), packed), _ort(plain, feeds))


# ----- EmbedLayerNormalization --------------------------------------------------------------------
_VOCAB, _HID = 11, 8


def _embed_inits(rng):
    return {"word": _f(rng, _VOCAB, _HID), "pos": _f(rng, 9, _HID), "seg": _f(rng, 2, _HID),
            "gamma": _f(rng, _HID), "beta": _f(rng, _HID)}


@pytest.mark.parametrize("segments", [True, False])
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("position_ids", [None, "row", "full"])
def test_embed_layer_normalization(rng, segments, mask, position_ids):
    b, s = 3, 6
    feeds = {"ids": rng.integers(0, _VOCAB, (b, s)).astype(np.int32)}
    ins = ["ids", "", "word", "pos", "", "gamma", "beta", "", ""]
    if segments:
        feeds["segs"] = rng.integers(0, 2, (b, s)).astype(np.int32)
        ins[1], ins[4] = "segs", "seg"
    if mask:
        # mask_index counts the 1s: other values (2, -1) count for nothing in onnxruntime
        feeds["mask"] = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [2, 1, 0, 1, -1, 1]],
                                 np.int32)
        ins[7] = "mask"
    if position_ids is not None:
        shape = (1, s) if position_ids == "row" else (b, s)
        feeds["pids"] = rng.integers(0, 9, shape).astype(np.int32)
        ins[8] = "pids"
    node = _ms("EmbedLayerNormalization", ins, ["out", "mask_index", "embedding_sum"],
               epsilon=1e-5)
    _check(_model([node], feeds, ["out", "mask_index", "embedding_sum"], _embed_inits(rng)),
           feeds)


def test_embed_layer_normalization_output_only(rng):
    feeds = {"ids": rng.integers(0, _VOCAB, (2, 7)).astype(np.int32),
             "segs": rng.integers(0, 2, (2, 7)).astype(np.int32)}
    node = _ms("EmbedLayerNormalization", ["ids", "segs", "word", "pos", "seg", "gamma", "beta"],
               ["out", ""])
    model = _model([node], feeds, ["out"], _embed_inits(rng))
    _check(model, feeds)
    assert _lowered(model) == {"Gather", "Add", "LayerNormalization", "Shape", "Squeeze",
                               "Range"}


# ----- RotaryEmbedding ----------------------------------------------------------------------------
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("layout", ["bsd", "bnsh"])
@pytest.mark.parametrize("positions", ["ids", "offset"])
@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_rotary_embedding(rng, interleaved, layout, positions, rotary_dim):
    b, s, n, h, max_pos = 2, 3, 2, 8, 12
    x = _f(rng, b, s, n * h) if layout == "bsd" else _f(rng, b, n, s, h)
    half = (rotary_dim or h) // 2
    feeds = {"x": x, "pos": (rng.integers(0, max_pos, (b, s)) if positions == "ids"
                             else np.array([5])).astype(np.int64)}
    attrs = {"interleaved": interleaved}
    if rotary_dim:
        attrs.update(rotary_embedding_dim=rotary_dim, num_heads=n)
    elif layout == "bsd" and interleaved:
        attrs["num_heads"] = n  # otherwise the head size comes from the cache
    node = _ms("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], scale=1.0, **attrs)
    inits = {"cos": _f(rng, max_pos, half), "sin": _f(rng, max_pos, half)}
    _check(_model([node], feeds, ["y"], inits), feeds)


# ----- onnxruntime's default-domain experimental leftovers ----------------------------------------
@pytest.mark.parametrize("op,attrs", [
    ("Affine", {"alpha": -1.5, "beta": 0.25}), ("Affine", {}), ("Scale", {"scale": 3.0}),
    ("Scale", {}), ("ScaledTanh", {"alpha": 2.0, "beta": 0.5}),
    ("ParametricSoftplus", {"alpha": 1.5, "beta": -0.7}),
])
def test_experimental_default_domain_ops(rng, op, attrs):
    """onnxruntime runs these (ONNX's early experimental operators) in the default domain up to
    opset 9."""
    feeds = {"x": _f(rng, 2, 3, 5, scale=2.0)}
    _check(_model([helper.make_node(op, ["x"], ["y"], **attrs)], feeds, ["y"], opset=9), feeds)


def test_dynamic_slice_and_memcpy(rng):
    feeds = {"x": _f(rng, 4, 6, 5), "starts": np.array([1, -4], np.int64),
             "ends": np.array([3, 100], np.int64)}
    inits = {"axes": np.array([0, 1], np.int64)}
    node = helper.make_node("DynamicSlice", ["x", "starts", "ends", "axes"], ["y"])
    _check(_model([node], feeds, ["y"], inits, opset=9), feeds)
    copies = [helper.make_node("MemcpyFromHost", ["x"], ["d"]),
              helper.make_node("MemcpyToHost", ["d"], ["y"])]
    x = {"x": feeds["x"]}
    np.testing.assert_array_equal(_edgert(_model(copies, x, ["y"]), x)[0], x["x"])


# ----- a BERT encoder through onnxruntime's transformers optimizer --------------------------------
def _bert(rng, layers: int, vocab: int, hidden: int, heads: int, inner: int) -> onnx.ModelProto:
    """A BERT-like encoder in standard operators, written as PyTorch exports it."""
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def param(name, *shape, scale=0.2, offset=0.0):
        inits.append(numpy_helper.from_array(_f(rng, *shape, scale=scale) + offset, name))
        return name

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(op_type, inputs, **attrs):
        out = f"{op_type.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(x, k, n, tag):
        product = op("MatMul", [x, param(f"{tag}_w", k, n)])
        return op("Add", [param(f"{tag}_b", n, scale=0.1), product])

    def layer_norm(x, tag):
        return op("LayerNormalization", [x, param(f"{tag}_g", hidden, scale=0.1, offset=1.0),
                                         param(f"{tag}_b", hidden, scale=0.1)], epsilon=1e-12)

    words = op("Gather", [param("word_embeddings", vocab, hidden), "input_ids"])
    seq = op("Gather", [op("Shape", ["input_ids"]), const("one", np.array(1, np.int64))], axis=0)
    positions = op("Unsqueeze", [op("Range", [const("zero", np.array(0, np.int64)), seq,
                                              const("step", np.array(1, np.int64))]),
                                 const("axis0", np.array([0], np.int64))])
    x = op("Add", [op("Add", [words, op("Gather", [param("position_embeddings", 16, hidden),
                                                   positions])]),
                   op("Gather", [param("token_type_embeddings", 2, hidden), "token_type_ids"])])
    x = layer_norm(x, "embeddings_ln")
    m = op("Unsqueeze", ["attention_mask", const("axis1", np.array([1], np.int64))])
    m = op("Cast", [op("Unsqueeze", [m, const("axis2", np.array([2], np.int64))])],
           to=TensorProto.FLOAT)
    mask = op("Mul", [op("Sub", [const("onef", np.array(1.0, np.float32)), m]),
                      const("minus", np.array(-10000.0, np.float32))])
    heads_shape = const("heads_shape", np.array([0, 0, heads, hidden // heads], np.int64))
    merged_shape = const("merged_shape", np.array([0, 0, hidden], np.int64))
    root = const("root", np.array(np.sqrt(hidden // heads), np.float32))
    for i in range(layers):
        def split_heads(tag, perm):
            return op("Transpose", [op("Reshape", [linear(x, hidden, hidden, f"l{i}_{tag}"),
                                                   heads_shape])], perm=perm)
        q = split_heads("q", [0, 2, 1, 3])
        k = split_heads("k", [0, 2, 3, 1])
        v = split_heads("v", [0, 2, 1, 3])
        scores = op("Add", [op("Div", [op("MatMul", [q, k]), root]), mask])
        ctx = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), merged_shape])
        x = layer_norm(op("Add", [linear(ctx, hidden, hidden, f"l{i}_o"), x]), f"l{i}_ln1")
        f = linear(x, hidden, inner, f"l{i}_ff1")
        erf = op("Erf", [op("Div", [f, const(f"sqrt2_{i}", np.array(np.sqrt(2), np.float32))])])
        g = op("Mul", [op("Mul", [f, op("Add", [erf, const(f"one_{i}", np.array(1, np.float32))])]),
                       const(f"half_{i}", np.array(0.5, np.float32))])
        x = layer_norm(op("Add", [linear(g, inner, hidden, f"l{i}_ff2"), x]), f"l{i}_ln2")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes, "bert",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "token_type_ids", "attention_mask")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "sequence", hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_VOCAB_BERT, _HIDDEN_BERT, _HEADS_BERT = 30, 16, 2


@pytest.fixture(scope="module")
def bert_models(tmp_path_factory):
    """(source, fused): the encoder, and onnxruntime's transformers optimizer's output for it."""
    optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
    from onnxruntime.transformers.fusion_options import FusionOptions

    source = _bert(np.random.default_rng(7), layers=2, vocab=_VOCAB_BERT, hidden=_HIDDEN_BERT,
                   heads=_HEADS_BERT, inner=32)
    onnx.checker.check_model(source)
    folder = tmp_path_factory.mktemp("bert")
    src_path, opt_path = str(folder / "bert.onnx"), str(folder / "bert_opt.onnx")
    onnx.save(source, src_path)
    options = FusionOptions("bert")
    options.enable_shape_inference = False  # symbolic shape inference needs sympy
    fused = optimizer.optimize_model(src_path, model_type="bert", num_heads=_HEADS_BERT,
                                     hidden_size=_HIDDEN_BERT, opt_level=0,
                                     optimization_options=options)
    fused.save_model_to_file(opt_path)  # (which adds the com.microsoft opset import)
    return source, onnx.load(opt_path)


def _bert_feeds(rng):
    return {"input_ids": rng.integers(0, _VOCAB_BERT, (3, 7)),
            "token_type_ids": rng.integers(0, 2, (3, 7)),
            "attention_mask": np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 6 + [0]], np.int64)}


def test_bert_encoder_optimized_by_onnxruntime(rng, bert_models):
    source, model = bert_models
    contrib = {n.op_type for n in model.graph.node if n.domain == MS}
    assert {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization",
            "BiasGelu"} <= contrib, contrib
    feeds = _bert_feeds(rng)
    ref = _check(model, feeds)
    # and the fused model still computes what the source model does
    np.testing.assert_allclose(ref[0], _ort(source, feeds)[0], rtol=1e-4, atol=1e-4)


def test_bert_encoder_lowered_exports_to_standard_onnx(rng, bert_models):
    """The lowered graph, written back as ONNX, is standard ONNX that onnxruntime runs alike."""
    from edgert.importer import export_onnx

    _, model = bert_models
    exported = export_onnx(import_onnx(model))
    assert {imp.domain for imp in exported.opset_import} == {""}
    feeds = _bert_feeds(rng)
    _compare(_ort(exported, feeds), _ort(model, feeds))


def test_contrib_operators_inside_a_branch(rng):
    """Contrib nodes in an If body are lowered in the body (reading outer-scope values)."""
    feeds = {"x": _f(rng, 2, 3, 8), "cond": np.array(True)}
    then = helper.make_graph(
        [_ms("FastGelu", ["x", "bias"], ["t"]), _ms("SkipLayerNormalization", ["t", "x", "g"],
                                                   ["then_y"])],
        "then", [], [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["else_y"])], "else", [],
                              [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)])
    model = _model([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
                   feeds, ["y"], {"bias": _f(rng, 8), "g": _f(rng, 8)})
    for cond in (True, False):
        _check(model, {**feeds, "cond": np.array(cond)})


# ----- declined and malformed forms ---------------------------------------------------------------
def test_unknown_contrib_operator_is_reported(rng):
    feeds = {"x": _f(rng, 2, 3)}
    model = _model([_ms("NoSuchFusion", ["x"], ["y"]), _ms("Gelu", ["x"], ["z"])], feeds,
                   ["y", "z"])
    with pytest.raises(UnsupportedOpError) as info:
        edgert.convert(model)
    assert [op for op, _, _ in info.value.ops] == ["NoSuchFusion"]
    assert "com.microsoft.NoSuchFusion" in info.value.ops[0][2]
    assert "NoSuchFusion" in str(info.value)


def _attention_model(rng, feeds_extra=None, ins=("x", "w", "bias"), shapes=True, **attrs):
    feeds, inits = _attention_feeds(rng)
    feeds.update(feeds_extra or {})
    attrs.setdefault("num_heads", _N)
    return _model([_ms("Attention", list(ins), ["y"], **attrs)], feeds, ["y"], inits,
                  shapes=shapes)


def test_declined_forms(rng):
    mask4 = np.ones((_B, 1, 6, 6), np.int32)
    _declined(_attention_model(rng, {"mask": mask4}, ("x", "w", "bias", "mask")), "Attention",
              "4-D mask")
    _declined(_attention_model(rng, do_rotary=1), "Attention", "do_rotary")
    _declined(_attention_model(rng, {"mask": _MASKS["2d"]}, ("x", "w", "bias", "mask"),
                               shapes={"mask": False}), "Attention", "rank of the mask")
    _declined(_attention_model(rng, qkv_hidden_sizes=[8, 8, 10]), "Attention",
              "qkv_hidden_sizes")
    _declined(_attention_model(rng, num_heads=3), "Attention", "num_heads=3")
    _declined(_attention_model(rng, num_heads="two"), "Attention", "num_heads")
    feeds = _mha_feeds(rng)
    _declined(_model([_ms("MultiHeadAttention", ["q", "k", "v"], ["y"], num_heads=_N)], feeds,
                     ["y"], shapes={"k": False}), "MultiHeadAttention", "ranks of key and value")
    _declined(_model([_ms("MultiHeadAttention", ["q", "k", "v", "", "", "", "", "", "len"],
                          ["y"], num_heads=_N)], {**feeds, "len": np.array([0], np.int32)},
                     ["y"]), "MultiHeadAttention", "past_sequence_length")
    x = {"x": _f(rng, 2, 3)}
    _declined(_model([_ms("FusedGemm", ["x", "w"], ["y"], activation="Gelu")], x, ["y"],
                     {"w": _f(rng, 3, 4)}), "FusedGemm", "'Gelu'")
    _declined(_model([_ms("FusedGemm", ["x", "w"], ["y"], activation="LeakyRelu")], x, ["y"],
                     {"w": _f(rng, 3, 4)}), "FusedGemm", "activation_alpha")
    img = {"x": _f(rng, 1, 2, 5, 5)}
    _declined(_model([_ms("FusedConv", ["x", "w"], ["y"], activation="LeakyRelu")], img, ["y"],
                     {"w": _f(rng, 3, 2, 3, 3)}), "FusedConv", "activation_params")
    _declined(_model([_ms("GroupNorm", ["x", "g", "b"], ["y"], groups=2, activation=2)], img,
                     ["y"], {"g": _f(rng, 5), "b": _f(rng, 5)}), "GroupNorm", "activation 2")
    _declined(_model([_ms("GroupNorm", ["x", "g", "b"], ["y"], groups=2, activation=0)], img,
                     ["y"], {"g": _f(rng, 5), "b": _f(rng, 5)}), "GroupNorm", "5 channels")
    rot = {"x": _f(rng, 1, 3, 8), "pos": np.zeros((1, 3), np.int64)}
    _declined(_model([_ms("RotaryEmbedding", ["x", "pos", "c", "c"], ["y"], num_heads=2,
                          is_packed_batching=1)], rot, ["y"], {"c": _f(rng, 4, 2)}),
              "RotaryEmbedding", "is_packed_batching")


def test_malformed_nodes_are_reported_not_crashing(rng):
    x = {"x": _f(rng, 2, 3, 8), "skip": _f(rng, 2, 3, 8)}
    _declined(_model([_ms("SkipLayerNormalization", ["x", "skip"], ["y"])], x, ["y"]),
              "SkipLayerNormalization", "'gamma'")
    _declined(_model([_ms("SkipLayerNormalization", ["x", "skip", "g"], ["y"])], x, ["y"],
                     {"g": _f(rng, 2, 8)}), "SkipLayerNormalization", "gamma", "1-D")
    _declined(_model([_ms("SkipLayerNormalization", ["x", "skip", "g"], ["y"], epsilon="tiny")],
                     x, ["y"], {"g": _f(rng, 8)}), "SkipLayerNormalization", "epsilon")
    _declined(_model([_ms("BiasGelu", ["x", "skip", "x"], ["y"])], x, ["y"]), "BiasGelu",
              "3 inputs")
    _declined(_attention_model(rng, num_heads=None), "Attention", "num_heads")
    w_bad = {"x": _f(rng, 2, 4, 8)}
    _declined(_model([_ms("Attention", ["x", "w", "bias"], ["y"], num_heads=2)], w_bad, ["y"],
                     {"w": _f(rng, 8, 24), "bias": _f(rng, 20)}), "Attention", "bias", "[24]")
    _declined(_model([_ms("EmbedLayerNormalization", ["x", "", "w", "w", "s", "g", "g"],
                          ["y", "mask_index"])],
                     {"x": np.zeros((2, 3), np.int32)}, ["y"],
                     {"w": _f(rng, 5, 4), "s": _f(rng, 2, 4), "g": _f(rng, 4)}),
              "EmbedLayerNormalization", "segment")
