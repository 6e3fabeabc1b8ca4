"""Pattern passes on hand-made graphs: decomposed LayerNorm / HardSigmoid / HardSwish / Gelu,
Pad folded into pools, channel shuffle, and control-flow bodies. Each case compares with
onnxruntime on the *original* model (see ``test_optimizer.check``); the negative cases show
that a pattern the constants do not prove is left alone."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from helpers import ATOL, RTOL, run_kernel
from onnx import TensorProto, helper, numpy_helper
from test_optimizer import check, make_model, ops, ort_run, rnd

from edgert.errors import ShapeError
from edgert.importer import import_onnx
from edgert.optimizer import optimize

H13 = '<ir_version: 8, opset_import: ["" : 13]>\n'
H18 = '<ir_version: 8, opset_import: ["" : 18]>\n'
H20 = '<ir_version: 9, opset_import: ["" : 20]>\n'


def f32(v) -> np.ndarray:
    return np.array(v, np.float32)


def unchanged(model: onnx.ModelProto, allow_fused: bool = False) -> None:
    """The optimizer leaves the model's op list as it was (up to dead/no-op clean-up)."""
    graph, _ = check(model, allow_fused=allow_fused)
    assert ops(graph) == [n.op_type for n in model.graph.node]


# ----- LayerNormalization -------------------------------------------------------------------------
LN13 = H13 + """
g (float[2,3,8] x) => (float[2,3,8] y) {
    m = ReduceMean<axes=[-1]>(x)
    d = Sub(x, m)
    q = Pow(d, two)
    v = ReduceMean<axes=[-1]>(q)
    ve = Add(v, eps)
    s = Sqrt(ve)
    n = Div(d, s)
    gn = Mul(n, gamma)
    y = Add(gn, beta)
}"""


def ln_weights(shape=(8,), eps=1e-5):
    return dict(two=f32(2.0), eps=f32(eps), gamma=rnd(*shape), beta=rnd(*shape))


def test_layernorm_pytorch_form():
    graph, report = check(make_model(LN13, **ln_weights()))
    assert ops(graph) == ["LayerNormalization"]
    node = graph.nodes[0]
    assert node.attrs["axis"] == 2 and abs(node.attrs["epsilon"] - 1e-5) < 1e-12
    assert report.passes["fuse_layernorm"].removed == 8


@pytest.mark.parametrize("inv", ["""s = Sqrt(ve)
    r = Reciprocal(s)
    n = Mul(d, r)""", """r = Pow(ve, mhalf)
    n = Mul(r, d)"""])
def test_layernorm_reciprocal_forms(inv):
    text = LN13.replace("""s = Sqrt(ve)
    n = Div(d, s)""", inv)
    assert text != LN13
    graph, _ = check(make_model(text, mhalf=f32(-0.5), **ln_weights()))
    assert ops(graph) == ["LayerNormalization"]


def test_layernorm_opset18_axes_input_mul_form_two_axes_no_affine():
    text = H18 + """
    g (float[2,3,4] x) => (float[2,3,4] y) {
        m = ReduceMean(x, ax)
        d = Sub(x, m)
        q = Mul(d, d)
        v = ReduceMean(q, ax)
        ve = Add(eps, v)
        s = Sqrt(ve)
        y = Div(d, s)
    }"""
    graph, _ = check(make_model(text, ax=np.array([-2, -1], np.int64), eps=f32(1e-3)))
    assert ops(graph) == ["LayerNormalization"]
    assert graph.nodes[0].attrs["axis"] == 1


def test_layernorm_gamma_broadcast_from_rank3():
    w = ln_weights()
    w["gamma"] = rnd(1, 1, 8)
    graph, _ = check(make_model(LN13, **w))
    assert ops(graph) == ["LayerNormalization"]


def test_layernorm_gamma_over_rows_stays_a_mul():
    w = ln_weights()
    w["gamma"] = rnd(3, 1)  # varies over a non-normalized axis: not LayerNormalization's Scale
    graph, _ = check(make_model(LN13, **w))
    assert ops(graph) == ["LayerNormalization", "Mul", "Add"]


@pytest.mark.parametrize("change", ["not_trailing", "pow3", "neg_eps", "other_axes",
                                    "d_is_output"])
def test_layernorm_declines(change):
    text, w = LN13, ln_weights()
    if change == "not_trailing":  # normalizing axis 1 of 3 is not a LayerNormalization
        text = text.replace("axes=[-1]", "axes=[1]").replace("float[2,3,8] x", "float[2,8,8] x")
        text = text.replace("float[2,3,8] y", "float[2,8,8] y")
    elif change == "pow3":
        w["two"] = f32(3.0)
    elif change == "neg_eps":
        w["eps"] = f32(-1e-6)
    elif change == "other_axes":
        text = text.replace("v = ReduceMean<axes=[-1]>(q)", "v = ReduceMean<axes=[-1, -2]>(q)")
    elif change == "d_is_output":
        text = text.replace("=> (float[2,3,8] y)", "=> (float[2,3,8] y, float[2,3,8] d)")
    model = make_model(text, **w)
    graph = import_onnx(model)
    optimize(graph, 2)
    assert "LayerNormalization" not in ops(graph)
    if change != "neg_eps":  # the negative-eps model takes sqrt of negatives: NaN both sides
        check(model)


# ----- HardSigmoid / HardSwish --------------------------------------------------------------------
def test_hardsigmoid_from_relu6_over_six():
    text = H13 + """
    g (float[2,6] x) => (float[2,6] y) {
        a = Add(x, three)
        c = Clip(a, zero, six)
        y = Div(c, six)
    }"""
    graph, _ = check(make_model(text, three=f32(3), zero=f32(0), six=f32(6)))
    assert ops(graph) == ["HardSigmoid"]
    assert math.isclose(graph.nodes[0].attrs["alpha"], 1 / 6, rel_tol=1e-6)


def test_hardsigmoid_paddle_form():
    text = H13 + """
    g (float[2,6] x) => (float[2,6] y) {
        a = Mul(x, slope)
        b = Add(a, offset)
        y = Clip(b, zero, one)
    }"""
    w = dict(slope=f32(0.2), offset=f32(0.5), zero=f32(0), one=f32(1))
    feeds = {"x": (np.linspace(-4, 4, 12).reshape(2, 6)).astype(np.float32)}
    graph, _ = check(make_model(text, **w), feeds=feeds)
    assert ops(graph) == ["HardSigmoid"]


@pytest.mark.parametrize("lo, div", [(-1.0, 6.0), (0.0, 5.0)])
def test_hardsigmoid_declines(lo, div):
    text = H13 + """
    g (float[2,6] x) => (float[2,6] y) {
        a = Add(x, three)
        c = Clip(a, lo, six)
        y = Div(c, k)
    }"""
    unchanged(make_model(text, three=f32(3), lo=f32(lo), six=f32(6), k=f32(div)))


HSWISH = {
    "hardsigmoid": """
        h = HardSigmoid<alpha=0.16666667, beta=0.5>(x)
        y = Mul(x, h)""",
    "div_after": """
        a = Add(x, three)
        c = Clip(a, zero, six)
        m = Mul(x, c)
        y = Div(m, six)""",
    "mul_sixth_after": """
        a = Add(three, x)
        c = Clip(a, zero, six)
        m = Mul(c, x)
        y = Mul(m, sixth)""",
    "div_inside": """
        a = Add(x, three)
        c = Clip(a, zero, six)
        h = Div(c, six)
        y = Mul(x, h)""",
}


@pytest.mark.parametrize("form", sorted(HSWISH))
def test_hardswish_forms(form):
    text = H13 + "g (float[2,3,5] x) => (float[2,3,5] y) {" + HSWISH[form] + "\n}"
    w = dict(three=f32(3), zero=f32(0), six=f32(6), sixth=f32(1 / 6))
    used = {k: v for k, v in w.items() if k in HSWISH[form]}
    feeds = {"x": np.linspace(-5, 5, 30).reshape(2, 3, 5).astype(np.float32)}
    graph, _ = check(make_model(text, **used), feeds=feeds)
    assert ops(graph) == ["HardSwish"]


def test_hardswish_declines_other_operand_and_offset():
    text = H13 + """
    g (float[2,5] x, float[2,5] z) => (float[2,5] y, float[2,5] y2) {
        a = Add(z, three)
        c = Clip(a, zero, six)
        m = Mul(x, c)
        y = Div(m, six)
        a2 = Add(x, two5)
        c2 = Clip(a2, zero, six)
        m2 = Mul(x, c2)
        y2 = Div(m2, six)
    }"""
    unchanged(make_model(text, three=f32(3), zero=f32(0), six=f32(6), two5=f32(2.5)))


# ----- Gelu ---------------------------------------------------------------------------------------
GELU_ERF = """
g (float[2,8] x) => (float[2,8] y) {
    d = Div(x, k)
    e = Erf(d)
    a = Add(e, one)
    h = Mul(x, half)
    y = Mul(h, a)
}"""

GELU_TANH = """
g (float[2,8] x) => (float[2,8] y) {
    x2 = Mul(x, x)
    x3 = Mul(x2, x)
    c = Mul(x3, coef)
    s = Add(x, c)
    t0 = Mul(s, k)
    t = Tanh(t0)
    a = Add(one, t)
    m = Mul(a, half)
    y = Mul(x, m)
}"""


def test_gelu_erf_opset20_standard_and_fused():
    w = dict(k=f32(math.sqrt(2)), one=f32(1), half=f32(0.5))
    graph, _ = check(make_model(H20 + GELU_ERF, **w))
    assert ops(graph) == ["Gelu"]
    graph, _ = check(make_model(H13 + GELU_ERF, **w), allow_fused=True)
    assert ops(graph) == ["Gelu"]


def test_gelu_tanh_fused():
    w = dict(coef=f32(0.044715), k=f32(math.sqrt(2 / math.pi)), one=f32(1), half=f32(0.5))
    graph, _ = check(make_model(H20 + GELU_TANH, **w))
    assert ops(graph) == ["Gelu"] and graph.nodes[0].attrs["approximate"] == "tanh"


def test_gelu_declines_before_opset20_or_wrong_constant():
    w = dict(k=f32(math.sqrt(2)), one=f32(1), half=f32(0.5))
    unchanged(make_model(H13 + GELU_ERF, **w))  # Gelu would need opset 20
    w["half"] = f32(0.4)
    unchanged(make_model(H20 + GELU_ERF, **w))


# ----- Pad into pools -----------------------------------------------------------------------------
def pad_pool(pool: str, pads: list[int], value: float, pre: str = "", pool_attrs: str = ""):
    src = "r" if pre else "x"
    body = f"r = {pre}(x)\n" if pre else ""
    attrs = "kernel_shape=[3,3]" + (", " + pool_attrs if pool_attrs else "")
    text = H13 + f"""
    g (float[1,2,6,6] x) => (float[1,2,?,?] y) {{
        {body}
        p = Pad({src}, pads, v)
        y = {pool}<{attrs}>(p)
    }}"""
    return make_model(text, pads=np.array(pads, np.int64), v=f32(value))


P1 = [0, 0, 1, 1, 0, 0, 1, 1]


@pytest.mark.parametrize("pool, value, pre, attrs", [
    ("AveragePool", 0.0, "", ""),
    ("AveragePool", 0.0, "", "pads=[1,0,0,1], count_include_pad=1"),
    ("AveragePool", 0.0, "", "strides=[2,2], ceil_mode=1"),
    ("MaxPool", -math.inf, "", "strides=[2,2]"),
    ("MaxPool", 0.0, "Relu", ""),
    ("MaxPool", -1.0, "Sigmoid", ""),
])
def test_pad_folded_into_pool(pool, value, pre, attrs):
    pads = [0, 0, 1, 1, 0, 0, 0, 0] if "ceil_mode" in attrs else P1
    graph, report = check(pad_pool(pool, pads, value, pre, attrs))
    assert "Pad" not in ops(graph)
    assert report.passes["fold_pad_into_pool"].removed == 1


@pytest.mark.parametrize("pool, value, pre, attrs, pads", [
    ("AveragePool", 1.0, "", "", P1),                                    # non-zero pad value
    ("AveragePool", 0.0, "", "pads=[1,1,1,1]", P1),                       # its pads not counted
    ("AveragePool", 0.0, "", "strides=[2,2], ceil_mode=1", P1),           # end pad + ceil_mode
    ("MaxPool", 0.0, "", "", P1),                                         # x may be negative
    ("MaxPool", 0.5, "Relu", "", P1),                                     # pad above Relu's 0
    ("MaxPool", -math.inf, "", "", [0, 0, 3, 0, 0, 0, 0, 0]),             # pad >= kernel
    ("MaxPool", -math.inf, "", "dilations=[2,2]", P1),                    # dilated windows
])
def test_pad_not_folded_into_pool(pool, value, pre, attrs, pads):
    graph, _ = check(pad_pool(pool, pads, value, pre, attrs))
    assert "Pad" in ops(graph)


# ----- channel shuffle ----------------------------------------------------------------------------
SHUFFLE = H13 + """
g (float[2,12,3,3] x) => (float[2,12,3,3] y) {
    t = Reshape(x, s1)
    u = Transpose<perm=[0,2,1,3,4]>(t)
    y = Reshape(u, s2)
}"""


def shuffle_model(perm="0,2,1,3,4", g=3):
    return make_model(SHUFFLE.replace("0,2,1,3,4", perm),
                      s1=np.array([2, g, 12 // g, 3, 3], np.int64),
                      s2=np.array([2, 12, 3, 3], np.int64))


@pytest.mark.parametrize("fused, gather, op", [(False, True, "Gather"),
                                               (True, False, "edgert.ChannelShuffle")])
def test_channel_shuffle(fused, gather, op, monkeypatch):
    from edgert.optimizer import shuffle

    monkeypatch.setattr(shuffle, "STANDARD_GATHER", gather)
    graph, report = check(shuffle_model(), allow_fused=fused)
    assert ops(graph) == [op]
    assert report.passes["fuse_channel_shuffle"].removed == 2


def test_channel_shuffle_left_standard_by_default():
    graph, _ = check(shuffle_model())
    assert ops(graph) == ["Reshape", "Transpose", "Reshape"]


def test_channel_shuffle_declines_other_perm():
    graph, _ = check(shuffle_model(perm="0,1,2,4,3"), allow_fused=True)
    assert "edgert.ChannelShuffle" not in ops(graph) and "Gather" not in ops(graph)


def test_channel_shuffle_kernel_matches_numpy_and_rejects_bad_group():
    x = rnd(2, 6, 4, 5)
    (y,) = run_kernel("ChannelShuffle", [x], {"group": 3}, domain="edgert", version=1)
    want = x.reshape(2, 3, 2, 4, 5).transpose(0, 2, 1, 3, 4).reshape(x.shape)
    np.testing.assert_array_equal(y, want)
    with pytest.raises(ShapeError, match="ChannelShuffle.*divide"):
        run_kernel("ChannelShuffle", [x], {"group": 4}, domain="edgert", version=1)


# ----- control-flow bodies ------------------------------------------------------------------------
def _branch(name: str, scale: float) -> onnx.GraphProto:
    """A body that reads ``x`` from the enclosing scope: Identity + decomposed HardSwish."""
    c = helper.make_tensor
    nodes = [
        helper.make_node("Identity", ["x"], [f"{name}_i"]),
        helper.make_node("Add", [f"{name}_i", f"{name}_three"], [f"{name}_a"]),
        helper.make_node("Clip", [f"{name}_a", f"{name}_zero", f"{name}_six"], [f"{name}_c"]),
        helper.make_node("Mul", [f"{name}_i", f"{name}_c"], [f"{name}_m"]),
        helper.make_node("Div", [f"{name}_m", f"{name}_six"], [f"{name}_h"]),
        helper.make_node("Mul", [f"{name}_h", f"{name}_k"], [f"{name}_out"]),
    ]
    inits = [c(f"{name}_{k}", TensorProto.FLOAT, [], [v])
             for k, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("k", scale))]
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2, 5])
    return helper.make_graph(nodes, name, [], [out], inits)


def test_if_bodies_optimized_and_keep_their_outputs():
    node = helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", 2.0),
                            else_branch=_branch("else", -1.0))
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    x = np.linspace(-5, 5, 10).reshape(2, 5).astype(np.float32)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        g, report = check(model, feeds=feeds)
        (if_node,) = g.nodes
        for body in if_node.subgraphs():
            assert [n.op_type for n in body.nodes] == ["HardSwish", "Mul"]
            assert body.outputs[0].name.endswith("_out")
        assert report.bodies == 2
    fused = import_onnx(model)
    optimize(fused, 2, allow_fused=True)
    from edgert.converter import convert
    from edgert.runtime import Interpreter

    interp = Interpreter(convert(fused, level=0))
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        np.testing.assert_allclose(interp.run(feeds)["y"], ort_run(model, feeds)[0],
                                   rtol=RTOL, atol=ATOL)


def test_loop_body_optimized():
    # for i in range(3): acc = LayerNorm(acc) * 2 (decomposed), body keeps its 2 inputs/outputs.
    # The outer input is named like the constant the LayerNorm rewrite creates in the body: the
    # body must pick another name (ONNX forbids reassigning an enclosing scope's name).
    ln = [
        helper.make_node("ReduceMean", ["acc_in"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["acc_in", "m"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["q"]),
        helper.make_node("ReduceMean", ["q"], ["v"], axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["nrm"]),
        helper.make_node("Mul", ["nrm", "two"], ["acc_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        ln, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, 6])],
        [numpy_helper.from_array(f32(1e-5), "eps"), numpy_helper.from_array(f32(2.0), "two")])
    loop = helper.make_node("Loop", ["n", "", "ln_scale"], ["y"], body=body)
    graph = helper.make_graph(
        [loop], "g", [helper.make_tensor_value_info("ln_scale", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
        [numpy_helper.from_array(np.array(3, np.int64), "n")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    g, report = check(model, feeds={"ln_scale": rnd(2, 6)})
    (lp,) = g.nodes
    (b,) = lp.subgraphs()
    assert [n.op_type for n in b.nodes] == ["LayerNormalization", "Identity"]
    assert [v.name for v in b.inputs] == ["i", "cond_in", "acc_in"]
    assert [v.name for v in b.outputs] == ["cond_out", "acc_out"]


SHUFFLE_UNIT = H13 + """
g (float[1,12,5,5] x) => (float[1,12,5,5] y) {
    c = Conv<group=GC>(x, W, B)
    r = Relu(c)
    t = Reshape(r, s1)
    u = Transpose<perm=[0,2,1,3,4]>(t)
    v = Reshape(u, s2)
    y = Conv<group=12, pads=[1,1,1,1]>(v, Wd, Bd)
}"""


@pytest.mark.parametrize("conv_groups, fused", [(3, True), (1, False), (4, False)])
def test_channel_shuffle_goes_into_a_conv_with_the_same_groups(conv_groups, fused):
    """ShuffleNet's unit: grouped 1x1 conv, Relu, shuffle by the conv's groups, depthwise conv.
    The shuffle becomes the first conv's ``channel_shuffle`` only when the groups agree."""
    m = make_model(SHUFFLE_UNIT.replace("GC", str(conv_groups)),
                   W=rnd(12, 12 // conv_groups, 1, 1), B=rnd(12), Wd=rnd(12, 1, 3, 3),
                   Bd=rnd(12), s1=np.array([1, 3, 4, 5, 5], np.int64),
                   s2=np.array([1, 12, 5, 5], np.int64))
    graph, report = check(m, allow_fused=True)
    if fused:
        assert ops(graph) == ["edgert.Conv", "Conv"]
        first = graph.nodes[0]
        assert first.attrs["channel_shuffle"] == 3 and first.attrs["activation"] == "Relu"
        assert report.passes["fuse_shuffle_into_conv"].fused == 1
    else:
        assert "edgert.ChannelShuffle" in ops(graph)
