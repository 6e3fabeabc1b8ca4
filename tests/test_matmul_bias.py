"""``Add(MatMul(x, W), b)`` on a batched x fused into edgert.MatMul's epilogue (with a following
activation), checked against onnxruntime on the unfused model, and the cases it must decline."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.converter import convert
from edgert.quantization import quantize
from edgert.runtime import Interpreter

RNG = np.random.default_rng(5)


def _model(x_shape, bias_shape, act: str | None = "Gelu", extra_reader: bool = False,
           opset: int = 20):
    k, n = x_shape[-1], 6
    inits = [numpy_helper.from_array(RNG.standard_normal((k, n)).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.standard_normal(bias_shape).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"])]
    outputs = ["hb"]
    if act:
        nodes.append(helper.make_node(act, ["hb"], ["y"]))
        outputs = ["y"]
    if extra_reader:
        outputs.append("h")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _ops(interp):
    return [(op.domain, op.op_type) for op in interp._graph.operators]


@pytest.mark.parametrize("bias_shape", [(6,), (1, 6), (1, 1, 6)])
@pytest.mark.parametrize("act", [None, "Gelu", "Relu"])
def test_bias_and_activation_fused_and_exact(bias_shape, act):
    model = _model((2, 5, 8), bias_shape, act)
    interp = Interpreter(convert(model), num_threads=1)
    assert _ops(interp) == [("edgert", "MatMul")]
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    got = next(iter(interp.run({"x": x}).values()))
    want = _ort(model, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["rank2", "bias_per_row", "read_twice"])
def test_declines(case):
    if case == "rank2":  # a 2-D x becomes a Gemm instead
        model, x_shape, want_ops = _model((5, 8), (6,), None), (5, 8), [("", "Gemm")]
    elif case == "bias_per_row":  # not one value per output column
        model, x_shape = _model((2, 5, 8), (5, 6), None), (2, 5, 8)
        want_ops = [("", "MatMul"), ("", "Add")]
    else:  # the product is read by something else too
        model, x_shape = _model((2, 5, 8), (6,), None, extra_reader=True), (2, 5, 8)
        want_ops = [("", "MatMul"), ("", "Add")]
    interp = Interpreter(convert(model), num_threads=1)
    assert _ops(interp) == want_ops
    x = RNG.standard_normal(x_shape).astype(np.float32)
    for got, want in zip(interp.run({"x": x}).values(), _ort(model, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_keeps_the_fused_bias():
    model = _model((1, 16, 8), (6,), "Relu")
    calib = [{"x": RNG.standard_normal((1, 16, 8)).astype(np.float32)} for _ in range(8)]
    data, _ = quantize(model.SerializeToString(), calibration=calib)
    feeds = calib[0]
    interp = Interpreter(data, num_threads=1)
    assert ("edgert", "QGemm") in _ops(interp)
    got = next(iter(interp.run(feeds).values()))
    want = _ort(model, feeds)[0]
    step = float(want.max()) / 255  # one int8 step of the output's range (Relu: >= 0)
    assert np.abs(got - want).max() <= 3 * step
