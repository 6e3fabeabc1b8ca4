"""SiLU written as ``Mul(y, Sigmoid(y))`` after a Conv/Gemm/MatMul fused into the op's epilogue
(``activation = Swish``), on each conv path, against onnxruntime on the unfused model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.converter import convert
from edgert.runtime import Interpreter

RNG = np.random.default_rng(9)


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(op_nodes, x_shape, inits, extra_outputs=()):
    nodes = op_nodes + [helper.make_node("Sigmoid", ["y"], ["s"]),
                        helper.make_node("Mul", ["y", "s"], ["z"])]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
            for o in ("z", *extra_outputs)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv(cin, cout, k, group=1, **attrs):
    w = (RNG.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k)).astype(
        np.float32) * 3
    b = RNG.standard_normal(cout).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, **attrs)
    return [node], {"w": w, "b": b}


CONVS = {
    "pointwise": (_conv(32, 48, 1), (1, 32, 10, 10)),
    "3x3": (_conv(16, 32, 3, pads=[1, 1, 1, 1]), (1, 16, 20, 20)),
    "3x3 stride 2": (_conv(8, 16, 3, pads=[1, 1, 1, 1], strides=[2, 2]), (2, 8, 17, 17)),
    "depthwise": (_conv(24, 24, 3, group=24, pads=[1, 1, 1, 1]), (1, 24, 12, 12)),
    "stem": (_conv(3, 16, 3, pads=[1, 1, 1, 1], strides=[2, 2]), (1, 3, 32, 32)),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_silu_fused(name):
    (nodes, inits), shape = CONVS[name]
    model = _model(nodes, shape, inits)
    interp = Interpreter(convert(model), num_threads=1)
    ops = [(op.op_type, op.attrs.get("activation")) for op in interp._graph.operators]
    assert ops == [("Conv", "Swish")]
    x = RNG.standard_normal(shape).astype(np.float32)
    want = _ort(model, {"x": x})[0]
    np.testing.assert_allclose(interp.run({"x": x})["z"], want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("batched", [False, True])
def test_gemm_and_matmul_silu_fused(batched):
    w = RNG.standard_normal((12, 20)).astype(np.float32)
    if batched:  # MatMul + bias (edgert.MatMul's bias input) + SiLU
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
                 helper.make_node("Add", ["h", "b"], ["y"])]
        shape = (2, 7, 12)
    else:
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"])]
        shape = (7, 12)
    model = _model(nodes, shape, {"w": w, "b": RNG.standard_normal(20).astype(np.float32)})
    interp = Interpreter(convert(model), num_threads=1)
    assert [op.attrs.get("activation") for op in interp._graph.operators] == ["Swish"]
    x = RNG.standard_normal(shape).astype(np.float32) * 2
    np.testing.assert_allclose(interp.run({"x": x})["z"], _ort(model, {"x": x})[0], rtol=1e-5,
                               atol=1e-5)


def test_declines_when_the_conv_output_is_read_elsewhere():
    (nodes, inits), shape = CONVS["3x3"]
    model = _model(nodes, shape, inits, extra_outputs=("y",))
    interp = Interpreter(convert(model), num_threads=1)
    assert all(op.attrs.get("activation") != "Swish" for op in interp._graph.operators)
    x = RNG.standard_normal(shape).astype(np.float32)
    for got, want in zip(interp.run({"x": x}).values(), _ort(model, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
