"""Optimizer passes on hand-made graphs: rewrite counts, declines, numerics against onnxruntime.

Each model is written in ONNX text syntax; weights are added as initializers. The reference is
onnxruntime on the *original* model; the optimized graph is exported back to ONNX (checked with
``onnx.checker`` full check) and run in onnxruntime too, or run in the edgert interpreter when it
holds ``edgert``-domain fused ops.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from helpers import ATOL, RTOL
from onnx import numpy_helper

from edgert.importer import export_onnx, import_onnx
from edgert.optimizer import optimize

RNG = np.random.default_rng(7)


def make_model(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, arr in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def feeds_for(model: onnx.ModelProto) -> dict:
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = RNG.standard_normal(shape).astype(np.float32)
    return feeds


def check(model: onnx.ModelProto, level: int = 2, allow_fused: bool = False,
          feeds: dict | None = None):
    """Optimize ``model``; compare with onnxruntime on the original; return (graph, report)."""
    feeds = feeds_for(model) if feeds is None else feeds
    ref = ort_run(model, feeds)
    graph = import_onnx(model)
    report = optimize(graph, level, allow_fused=allow_fused)
    if allow_fused and any(n.domain == "edgert" for n in graph.nodes):
        from edgert.converter import convert
        from edgert.runtime import Interpreter

        got_map = Interpreter(convert(graph, level=0)).run(feeds)
        got = [got_map[o.name] for o in model.graph.output]
    else:
        out = export_onnx(graph)
        onnx.checker.check_model(out, full_check=True)
        assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
        assert [i.name for i in out.graph.input] == list(feeds)
        got = ort_run(out, feeds)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    return graph, report


def ops(graph) -> list[str]:
    return [f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in graph.nodes]


def rnd(*shape, lo=None):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + lo if lo is not None else a


HEADER = '<ir_version: 8, opset_import: ["" : 13]>\n'


# ----- level 1 ------------------------------------------------------------------------------------
def test_shape_arithmetic_folds_to_one_reshape():
    m = make_model(HEADER + """
    g (float[2,3,4] x) => (float[2,12] y) {
        s = Shape(x)
        d0 = Gather<axis=0>(s, i0)
        u0 = Unsqueeze(d0, ax)
        c = Concat<axis=0>(u0, m1)
        y = Reshape(x, c)
    }""", i0=np.array(0, np.int64), ax=np.array([0], np.int64), m1=np.array([-1], np.int64))
    graph, report = check(m, level=1)
    assert ops(graph) == ["Reshape"]
    assert report.passes["fold_constants"].removed == 4


def test_static_dims_of_partly_symbolic_shapes_fold():
    m = make_model(HEADER + """
    g (float[N,3,4] x) => (float[N,2,6] y) {
        s = Shape(x)
        last = Gather<axis=0>(s, im1)
        mid = Slice(s, one, two)
        h = Div(last, two)
        p = Mul(mid, h)
        c = Concat<axis=0>(m1, h, p)
        y = Reshape(x, c)
    }""", im1=np.array([-1], np.int64), one=np.array([1], np.int64),
        two=np.array([2], np.int64), m1=np.array([-1], np.int64))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph = import_onnx(m)
    optimize(graph, 1)
    assert ops(graph) == ["Reshape"]
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 5
    check(m, level=1)


def test_noop_nodes_removed_and_output_name_kept():
    m = make_model(HEADER + """
    g (float[2,3] x) => (float[2,3] y, float[2,3] z) {
        a = Identity(x)
        b = Relu(a)
        c = Cast<to=1>(b)
        d, mask = Dropout(c)
        y = Identity(d)
        z = Sigmoid(x)
    }""")
    graph, _ = check(m, level=1)
    assert ops(graph) == ["Relu", "Sigmoid"]
    assert graph.nodes[0].outputs[0].name == "y"


def test_identity_of_graph_input_to_output_is_kept():
    m = make_model(HEADER + "g (float[2] x) => (float[2] y) { y = Identity(x) }")
    graph, _ = check(m, level=1)
    assert ops(graph) == ["Identity"]


def test_cse_and_dead_nodes():
    m = make_model(HEADER + """
    g (float[4] x) => (float[4] y) {
        a = Relu(x)
        b = Relu(x)
        dead = Exp(x)
        y = Add(a, b)
    }""")
    graph, report = check(m, level=1)
    assert sorted(ops(graph)) == ["Add", "Relu"]
    assert report.passes["eliminate_common_subexpressions"].removed == 1
    assert report.passes["eliminate_dead_nodes"].removed == 1


def test_duplicate_constants_shared():
    w = rnd(4)
    m = make_model(HEADER + """
    g (float[4] x) => (float[4] y) {
        a = Mul(x, w1)
        b = Mul(x, w2)
        y = Add(a, b)
    }""", w1=w, w2=w.copy())
    graph, _ = check(m, level=1)
    # Sharing the constant makes the two Muls identical, so CSE merges them.
    assert sorted(ops(graph)) == ["Add", "Mul"]


def test_folding_does_not_grow_the_model():
    m = make_model(HEADER + """
    g (float[64,128] x) => (float[64,128] y) {
        e = Expand(c, s)
        y = Add(x, e)
    }""", c=np.array([1.5], np.float32), s=np.array([64, 128], np.int64))
    graph, _ = check(m, level=1)
    assert ops(graph) == ["Expand", "Add"]


@pytest.mark.parametrize("kind", ["int8", "uint4"])
def test_folding_keeps_quantized_weights(kind):
    """Folding compares bytes: the DequantizeLinear of a large int8 (per-channel) or uint4
    (blocked, as MatMulNBits' lowering writes) constant weight would become a float32 constant
    4x its size, so it stays; the shape arithmetic of the same graph and the DequantizeLinear of
    a small weight (under FOLD_MAX_BYTES) still fold."""
    from edgert.optimizer.folding import FOLD_MAX_BYTES

    k, n = 256, 64
    if kind == "int8":
        wq = RNG.integers(-128, 128, (k, n)).astype(np.int8)
        params = {"wq": wq, "ws": RNG.uniform(0.01, 0.02, n).astype(np.float32),
                  "wz": np.zeros(n, np.int8)}
        dq = "DequantizeLinear<axis=1>(wq, ws, wz)"
        opset = 13
    else:
        params = {"ws": RNG.uniform(0.01, 0.02, (k // 32, n)).astype(np.float32)}
        dq = "DequantizeLinear<axis=0, block_size=32>(wq, ws)"
        opset = 21
    small = RNG.integers(-128, 128, (8, 8)).astype(np.int8)
    m = onnx.parser.parse_model(f"""<ir_version: 10, opset_import: ["" : {opset}]>
    g (float[2,4,{k // 4}] x) => (float[8,8] y, float[2,{n}] z) {{
        s = Shape(x)
        d0 = Gather<axis=0>(s, i0)
        u0 = Unsqueeze(d0, ax)
        c = Concat<axis=0>(u0, m1)
        flat = Reshape(x, c)
        w = {dq}
        z = MatMul(flat, w)
        y = DequantizeLinear(sq, ss)
    }}""")
    inits = {**params, "sq": small, "ss": np.array(0.5, np.float32),
             "i0": np.array(0, np.int64), "ax": np.array([0], np.int64),
             "m1": np.array([-1], np.int64)}
    for name, arr in inits.items():
        m.graph.initializer.append(numpy_helper.from_array(arr, name))
    if kind == "uint4":
        vals = RNG.integers(0, 16, k * n)
        m.graph.initializer.append(onnx.helper.make_tensor("wq", onnx.TensorProto.UINT4, [k, n],
                                                           vals.tolist()))
    onnx.checker.check_model(m, full_check=True)
    feeds = {"x": rnd(2, 4, k // 4)}
    graph, report = check(m, level=1, feeds=feeds)
    assert ops(graph) == ["Reshape", "DequantizeLinear", "MatMul"]
    w = graph.nodes[1].inputs[0]
    assert w.const is not None and w.dtype == (onnx.TensorProto.INT8 if kind == "int8"
                                               else onnx.TensorProto.UINT4)
    assert k * n * 4 > FOLD_MAX_BYTES > small.size * 4  # the big one exceeds, the small not
    # the runtime dequantizes the weight once, when it loads the model (DequantizeLinear is
    # foldable), not at every run
    from edgert.converter import convert
    from edgert.runtime import Interpreter

    interp = Interpreter(convert(m, level=1))
    np.testing.assert_allclose(interp.run(feeds)["z"], ort_run(m, feeds)[1], rtol=RTOL, atol=ATOL)
    assert interp.stats.folded_ops == 1


def test_batchnorm_not_folded_into_computed_weights():
    text = HEADER + """
    g (float[1,3,6,6] x, float[4,3,3,3] W) => (float[1,4,6,6] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        y = BatchNormalization(c, s, b, mu, var)
    }"""
    w = conv_bn_weights()
    del w["W"]
    graph = import_onnx(make_model(text, **w))
    optimize(graph, 2)
    assert ops(graph) == ["Conv", "BatchNormalization"]


# ----- level 2: folding into weights --------------------------------------------------------------
CONV_BN = HEADER + """
g (float[1,3,6,6] x) => (float[1,4,6,6] y) {
    c = Conv<pads=[1,1,1,1]>(x, W, B)
    y = BatchNormalization<epsilon=0.001>(c, s, b, mu, var)
}"""


def conv_bn_weights():
    return dict(W=rnd(4, 3, 3, 3), B=rnd(4), s=rnd(4), b=rnd(4), mu=rnd(4), var=rnd(4, lo=0.5))


def test_batchnorm_folded_into_conv():
    graph, report = check(make_model(CONV_BN, **conv_bn_weights()))
    assert ops(graph) == ["Conv"]
    assert report.passes["fold_batchnorm"].fused == 1


def test_batchnorm_not_folded_when_scale_is_computed():
    text = HEADER + """
    g (float[1,3,6,6] x, float[4] s) => (float[1,4,6,6] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        y = BatchNormalization(c, s, b, mu, var)
    }"""
    w = conv_bn_weights()
    del w["s"]
    feeds_model = make_model(text, **w)
    graph = import_onnx(feeds_model)
    optimize(graph, 2)
    assert ops(graph) == ["Conv", "BatchNormalization"]


def test_batchnorm_not_folded_when_conv_output_is_read_twice():
    text = HEADER + """
    g (float[1,3,6,6] x) => (float[1,4,6,6] y, float[1,4,6,6] c) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        y = BatchNormalization(c, s, b, mu, var)
    }"""
    graph, _ = check(make_model(text, **conv_bn_weights()))
    assert ops(graph) == ["Conv", "BatchNormalization"]


def test_batchnorm_folded_into_grouped_conv_transpose():
    text = HEADER + """
    g (float[1,4,3,3] x) => (float[1,6,5,5] y) {
        c = ConvTranspose<group=2>(x, W)
        y = BatchNormalization(c, s, b, mu, var)
    }"""
    graph, _ = check(make_model(text, W=rnd(4, 3, 3, 3), s=rnd(6), b=rnd(6), mu=rnd(6),
                                var=rnd(6, lo=0.5)))
    assert ops(graph) == ["ConvTranspose"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_folded_into_gemm_with_alpha_beta(trans_b):
    text = HEADER + f"""
    g (float[3,5] x) => (float[3,4] y) {{
        c = Gemm<alpha=0.5, beta=2.0, transB={trans_b}>(x, W, C)
        y = BatchNormalization(c, s, b, mu, var)
    }}"""
    w = rnd(4, 5) if trans_b else rnd(5, 4)
    graph, _ = check(make_model(text, W=w, C=rnd(4), s=rnd(4), b=rnd(4), mu=rnd(4),
                                var=rnd(4, lo=0.5)))
    assert ops(graph) == ["Gemm"]


def test_per_channel_mul_add_folded_into_conv():
    text = HEADER + """
    g (float[1,3,6,6] x) => (float[1,4,6,6] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        m = Mul(k, c)
        y = Add(m, a)
    }"""
    graph, _ = check(make_model(text, W=rnd(4, 3, 3, 3), B=rnd(4), k=rnd(4, 1, 1),
                                a=rnd(1, 4, 1, 1)))
    assert ops(graph) == ["Conv"]


def test_spatial_mul_not_folded_into_conv():
    text = HEADER + """
    g (float[1,3,6,6] x) => (float[1,4,6,6] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        y = Mul(c, k)
    }"""
    graph, _ = check(make_model(text, W=rnd(4, 3, 3, 3), B=rnd(4), k=rnd(6, 6)))
    assert ops(graph) == ["Conv", "Mul"]


def test_mul_add_merged_into_standalone_batchnorm():
    text = HEADER + """
    g (float[2,3,4,4] x) => (float[2,3,4,4] y) {
        n = BatchNormalization(x, s, b, mu, var)
        m = Mul(n, k)
        a = Add(m, t)
        y = Relu(a)
    }"""
    graph, _ = check(make_model(text, s=rnd(3), b=rnd(3), mu=rnd(3), var=rnd(3, lo=0.5),
                                k=rnd(3, 1, 1), t=rnd(3, 1, 1)))
    assert ops(graph) == ["BatchNormalization", "Relu"]


def test_matmul_add_to_gemm_2d_only():
    text2 = HEADER + """
    g (float[3,5] x) => (float[3,4] y) { m = MatMul(x, W)  y = Add(m, c) }"""
    graph, _ = check(make_model(text2, W=rnd(5, 4), c=rnd(4)))
    assert ops(graph) == ["Gemm"]
    text3 = HEADER + """
    g (float[2,3,5] x) => (float[2,3,4] y) { m = MatMul(x, W)  y = Add(m, c) }"""
    graph, _ = check(make_model(text3, W=rnd(5, 4), c=rnd(4)))
    assert ops(graph) == ["MatMul", "Add"]


def test_pad_folded_into_conv_only_for_zero_padding():
    text = HEADER + """
    g (float[1,2,5,5] x) => (float[1,3,7,5] y) {
        p = Pad(x, pads, v)
        y = Conv<pads=[0,1,0,1]>(p, W)
    }"""
    pads = np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64)
    graph, _ = check(make_model(text, pads=pads, v=np.array(0.0, np.float32), W=rnd(3, 2, 1, 3)))
    assert ops(graph) == ["Conv"]
    assert graph.nodes[0].attrs["pads"] == [1, 1, 1, 1]
    graph, _ = check(make_model(text, pads=pads, v=np.array(1.5, np.float32), W=rnd(3, 2, 1, 3)))
    assert ops(graph) == ["Pad", "Conv"]


def test_transposes_compose_and_cancel():
    text = HEADER + """
    g (float[2,3,4] x) => (float[4,2,3] y, float[2,3,4] z) {
        a = Transpose<perm=[1,0,2]>(x)
        y = Transpose<perm=[2,1,0]>(a)
        b = Transpose<perm=[0,2,1]>(x)
        z = Transpose<perm=[0,2,1]>(b)
    }"""
    graph, _ = check(make_model(text))
    # y: one composed Transpose. z: the composition is the identity, but z is a graph output
    # computed straight from the graph input x, so one (identity) node must stay to name it.
    assert ops(graph) == ["Transpose", "Transpose"]
    perms = sorted(n.attrs["perm"] for n in graph.nodes)
    assert perms == [[0, 1, 2], [2, 0, 1]]


def test_reshape_chain_merged():
    text = HEADER + """
    g (float[2,3,4] x) => (float[6,4] y) {
        f = Flatten<axis=2>(x)
        u = Unsqueeze(f, ax)
        y = Reshape(u, s)
    }"""
    graph, _ = check(make_model(text, ax=np.array([0], np.int64), s=np.array([6, 4], np.int64)))
    assert ops(graph) == ["Reshape"]


# ----- activation fusion (edgert domain) ----------------------------------------------------------
FUSE = HEADER + """
g (float[1,3,6,6] x) => (float[1,2] y) {
    c = Conv<pads=[1,1,1,1]>(x, W, B)
    n = BatchNormalization(c, s, b, mu, var)
    r = Clip(n, lo, hi)
    p = GlobalAveragePool(r)
    f = Flatten(p)
    g = Gemm<transB=1>(f, W2, B2)
    y = LeakyRelu<alpha=0.2>(g)
}"""


def fuse_weights():
    w = conv_bn_weights()
    return dict(w, lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32), W2=rnd(2, 4),
                B2=rnd(2))


def test_activation_fused_only_when_allowed():
    graph, _ = check(make_model(FUSE, **fuse_weights()), allow_fused=False)
    assert "edgert.Conv" not in ops(graph) and "Clip" in ops(graph)
    graph, report = check(make_model(FUSE, **fuse_weights()), allow_fused=True)
    assert ops(graph) == ["edgert.Conv", "GlobalAveragePool", "Flatten", "edgert.Gemm"]
    assert graph.nodes[0].attrs["activation"] == "Clip"
    assert graph.nodes[0].attrs["activation_params"] == [0.0, 6.0]
    assert graph.nodes[-1].attrs["activation_params"] == pytest.approx([0.2])
    assert report.passes["fuse_activation"].fused == 2


def test_activation_not_fused_with_two_readers_or_computed_bounds():
    text = HEADER + """
    g (float[1,3,6,6] x, float hi) => (float[1,4,6,6] y, float[1,4,6,6] z) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        y = Clip(c, lo, hi)
        z = Conv<pads=[1,1,1,1]>(x, W2, B)
        t = Relu(c)
    }"""
    m = make_model(text, W=rnd(4, 3, 3, 3), W2=rnd(4, 3, 3, 3), B=rnd(4),
                   lo=np.array(0.0, np.float32))
    graph = import_onnx(m)
    optimize(graph, 2, allow_fused=True)
    assert "Clip" in ops(graph)
    assert all(n.domain == "" for n in graph.nodes)


# ----- residual sum fusion (edgert domain) --------------------------------------------------------
RESIDUAL = HEADER + """
g (float[1,8,5,5] x) => (float[1,8,5,5] y) {
    a = Conv(x, W1, B1)
    n = BatchNormalization(a, s, b, mu, var)
    r = Relu(n)
    c = Conv<pads=[1,1,1,1]>(r, W2, B2)
    t = Add(x, c)
    y = Relu(t)
}"""


def residual_weights(m=8):
    return dict(W1=rnd(m, 8, 1, 1), B1=rnd(m), s=rnd(m, lo=0.5), b=rnd(m), mu=rnd(m),
                var=rnd(m, lo=0.5), W2=rnd(8, m, 3, 3), B2=rnd(8))


def test_residual_add_and_relu_fuse_into_the_conv():
    graph, _ = check(make_model(RESIDUAL, **residual_weights()), allow_fused=False)
    assert "Add" in ops(graph)
    graph, report = check(make_model(RESIDUAL, **residual_weights()), allow_fused=True)
    assert ops(graph) == ["edgert.Conv", "edgert.Conv"]
    last = graph.nodes[-1]
    assert last.inputs[3].name == "x" and last.attrs["activation"] == "Relu"
    assert last.outputs[0].name == "y"
    assert report.passes["fuse_residual_add"].fused == 1


def test_residual_fusion_with_grouped_pointwise_and_no_bias():
    text = HEADER + """
    g (float[1,8,6,6] x, float[1,8,6,6] z) => (float[1,8,6,6] y) {
        c = Conv<group=4>(x, W)
        y = Add(c, z)
    }"""
    graph, _ = check(make_model(text, W=rnd(8, 2, 1, 1)), allow_fused=True)
    assert ops(graph) == ["edgert.Conv"]
    assert graph.nodes[0].inputs[2] is None and graph.nodes[0].inputs[3].name == "z"


@pytest.mark.parametrize("body", [
    # the activation comes before the sum: act(conv) + z is not act(conv + z)
    "c = Conv(x, W, B)\n r = Relu(c)\n y = Add(r, z)",
    # broadcasting residual
    "c = Conv(x, W, B)\n y = Add(c, zb)",
    # the conv's output is read twice
    "c = Conv(x, W, B)\n s = Add(c, z)\n y = Add(s, c)",
])
def test_residual_fusion_declines(body):
    text = HEADER + f"""
    g (float[1,4,5,5] x, float[1,4,5,5] z, float[1,4,1,5] zb) => (float[1,4,5,5] y) {{
        {body}
    }}"""
    m = make_model(text, W=rnd(4, 4, 1, 1), B=rnd(4))
    graph, report = check(m, allow_fused=True)
    assert report.passes["fuse_residual_add"].fused == 0
    assert all(n.input(3) is None for n in graph.nodes)


# ----- report -------------------------------------------------------------------------------------
def test_level_zero_is_a_no_op_and_report_prints():
    graph = import_onnx(make_model(CONV_BN, **conv_bn_weights()))
    report = optimize(graph, 0)
    assert ops(graph) == ["Conv", "BatchNormalization"] and report.nodes_after == 2
    report = optimize(graph, 2)
    text = str(report)
    assert "fold_batchnorm" in text and "2 -> 1 nodes" in text
