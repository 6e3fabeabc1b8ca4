"""Integer matmuls on the byte-dot-product GEMM (edgert/runtime/kernels/cpu/qmatmul.py):
MatMulInteger, the fused edgert.MatMulIntegerToFloat and DynamicQuantizeLinear, against an
int64 NumPy reference and onnxruntime (ORT_DISABLE_ALL: its own fusions round differently)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.converter import convert
from edgert.runtime import Interpreter
from edgert.runtime.kernels.cpu._native import isa
from edgert.runtime.kernels.cpu.qmatmul import PackedB

RNG = np.random.default_rng(11)
VNNI = [pytest.param(True, marks=pytest.mark.skipif(
    not isa.has_avx512_vnni(), reason="this CPU has no AVX-512 VNNI")), False]
I8, U8 = np.int8, np.uint8


def ints(dtype, shape) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def reference(a, a_zp, b, b_zp) -> np.ndarray:
    a64 = a.astype(np.int64) - (a_zp.astype(np.int64).reshape(-1, 1) if a_zp.size > 1
                                else a_zp.astype(np.int64).reshape(()))
    b64 = b.astype(np.int64) - b_zp.astype(np.int64).reshape(-1)
    return (a64 @ b64).astype(np.int32)


@pytest.mark.parametrize("vnni", VNNI)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 5, 3), (9, 4, 33), (33, 100, 70),
                                   (64, 384, 96), (2, 1030, 17)])
@pytest.mark.parametrize("a_dt,b_dt", [(U8, I8), (I8, I8), (U8, U8), (I8, U8)])
def test_packed_product_is_exact(vnni, m, k, n, a_dt, b_dt):
    a, b = ints(a_dt, (m, k)), ints(b_dt, (k, n))
    for a_zp, b_zp in ((ints(a_dt, (1,)), np.zeros(1, b_dt)),  # the fast epilogue
                       (ints(a_dt, (m,)), ints(b_dt, (n,))),   # per row, per column
                       (ints(a_dt, (1,)), ints(b_dt, (1,)))):
        pb = PackedB(b, b_zp, vnni=vnni)
        buffers = (pb.a_buffer(m), np.empty(m, np.int32), np.empty(m, np.int32))
        out = np.full((m, n), 7, np.int32)
        pb.matmul(a, a_zp, out, *buffers)
        want = reference(a, a_zp, b, b_zp)
        np.testing.assert_array_equal(out, want)
        scale = RNG.random(n).astype(np.float32)
        bias = RNG.standard_normal(n).astype(np.float32)
        outf = np.empty((m, n), np.float32)
        pb.matmul(a, a_zp, outf, *buffers, scale, bias)
        np.testing.assert_array_equal(outf, want.astype(np.float32) * scale + bias)
        pb.matmul(a, a_zp, outf, *buffers, scale)
        np.testing.assert_array_equal(outf, want.astype(np.float32) * scale)


def test_packed_product_refuses_mismatched_buffers():
    pb = PackedB(ints(I8, (8, 4)), None, vnni=False)
    a = ints(U8, (3, 8))
    with pytest.raises(ValueError, match="do not match"):
        pb.matmul(a, np.zeros(1, U8), np.empty((3, 5), np.int32), pb.a_buffer(3),
                  np.empty(3, np.int32), np.empty(3, np.int32))
    a = ints(U8, (20, 8))
    with pytest.raises(ValueError, match="do not match"):  # a packing buffer for fewer rows
        pb.matmul(a, np.zeros(1, U8), np.empty((20, 4), np.int32), pb.a_buffer(3),
                  np.empty(20, np.int32), np.empty(20, np.int32))


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("a_dt,b_dt", [(U8, I8), (I8, I8), (U8, U8), (I8, U8)])
@pytest.mark.parametrize("b_zp_shape", [None, (), (24,)])
def test_matmul_integer_model_matches_onnxruntime(a_dt, b_dt, b_zp_shape):
    code = {I8: TensorProto.INT8, U8: TensorProto.UINT8}
    b = ints(b_dt, (40, 24))
    inits = [numpy_helper.from_array(b, "B")]
    inputs = ["A", "B", "a_zp"]
    if b_zp_shape is not None:
        inits.append(numpy_helper.from_array(ints(b_dt, b_zp_shape), "b_zp"))
        inputs.append("b_zp")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["Y"])], "g",
        [helper.make_tensor_value_info("A", code[a_dt], ["n", 5, 40]),
         helper.make_tensor_value_info("a_zp", code[a_dt], [])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    interp = Interpreter(convert(model), num_threads=2)
    for batch in (3, 1):
        feeds = {"A": ints(a_dt, (batch, 5, 40)), "a_zp": ints(a_dt, ())}
        np.testing.assert_array_equal(interp.run(feeds)["Y"], _ort(model, feeds)[0])


def _dynamic_quantized(tmp_path, per_channel: bool, weight_type, act: str = "Relu"
                       ) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_dynamic

    h, f = 48, 96
    nodes, inits, cur = [], [], "x"
    for i in range(2):
        inits += [numpy_helper.from_array(RNG.standard_normal((h, f)).astype(np.float32) * 0.1,
                                          f"w1_{i}"),
                  numpy_helper.from_array(RNG.standard_normal(f).astype(np.float32), f"b1_{i}"),
                  numpy_helper.from_array(RNG.standard_normal((f, h)).astype(np.float32) * 0.1,
                                          f"w2_{i}")]
        nodes += [helper.make_node("MatMul", [cur, f"w1_{i}"], [f"h{i}"]),
                  helper.make_node("Add", [f"h{i}", f"b1_{i}"], [f"hb{i}"]),
                  helper.make_node(act, [f"hb{i}"], [f"r{i}"]),
                  helper.make_node("MatMul", [f"r{i}", f"w2_{i}"], [f"o{i}"]),
                  helper.make_node("Add", [f"o{i}", cur], [f"y{i}"])]
        cur = f"y{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, "s", h])], [helper.make_tensor_value_info(
            cur, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, src)
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=weight_type)
    return onnx.load(str(dst))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("weight", ["QInt8", "QUInt8"])
def test_quantize_dynamic_model_fused_and_exact(tmp_path, per_channel, weight):
    from onnxruntime.quantization import QuantType

    model = _dynamic_quantized(tmp_path, per_channel, getattr(QuantType, weight))
    fused = Interpreter(convert(model), num_threads=1)
    ops = [op.op_type for op in fused._graph.operators]
    assert ops.count("MatMulIntegerToFloat") == 4 and "MatMulInteger" not in ops, ops
    assert "Relu" not in ops  # fused into the GEMM's epilogue too
    plain = Interpreter(convert(model, level=0), num_threads=1)  # op by op, no fusion
    for s in (1, 7, 64):
        x = {"x": RNG.standard_normal((1, s, 48)).astype(np.float32)}
        got = fused.run(x)
        (name, y), = got.items()
        np.testing.assert_array_equal(y, plain.run(x)[name])  # the fusion rounds as the ops
        np.testing.assert_array_equal(y, _ort(model, x)[0])


def test_fusion_declines_when_the_int32_result_is_also_read(tmp_path):
    from onnxruntime.quantization import QuantType

    model = _dynamic_quantized(tmp_path, False, QuantType.QInt8)
    mmi = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    model.graph.output.append(helper.make_tensor_value_info(mmi.output[0], TensorProto.INT32,
                                                            None))
    interp = Interpreter(convert(model), num_threads=1)
    ops = [op.op_type for op in interp._graph.operators]
    assert ops.count("MatMulIntegerToFloat") == 3 and ops.count("MatMulInteger") == 1
    x = {"x": RNG.standard_normal((1, 5, 48)).astype(np.float32)}
    for got, want in zip(interp.run(x).values(), _ort(model, x)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ["normal", "positive", "negative", "zeros", "nan", "small"])
def test_dynamic_quantize_linear_matches_onnxruntime(case):
    n = 10 if case == "small" else 20000
    x = RNG.standard_normal(n).astype(np.float32) * 3
    if case == "positive":
        x = np.abs(x) + 0.5
    elif case == "negative":
        x = -np.abs(x) - 0.5
    elif case == "zeros":
        x[:] = 0
    elif case == "nan":
        x[123] = np.nan
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    got = Interpreter(convert(model), num_threads=2).run({"x": x})
    if case == "nan":  # NumPy's min/max propagate the NaN: a zero range, as all zeros give
        assert float(got["s"]) == 1.0 and not got["y"].any()
        return
    want = _ort(model, {"x": x})
    for name, w in zip(("y", "s", "z"), want):
        np.testing.assert_array_equal(got[name], w, err_msg=name)


def test_quantize_dynamic_gelu_fused(tmp_path):
    from onnxruntime.quantization import QuantType

    model = _dynamic_quantized(tmp_path, True, QuantType.QInt8, act="Gelu")
    fused = Interpreter(convert(model), num_threads=1)
    ops = [op.op_type for op in fused._graph.operators]
    assert ops.count("MatMulIntegerToFloat") == 4 and "Gelu" not in ops, ops
    plain = Interpreter(convert(model, level=0), num_threads=1)
    for s in (3, 40):
        x = {"x": RNG.standard_normal((1, s, 48)).astype(np.float32)}
        (name, y), = fused.run(x).items()
        np.testing.assert_array_equal(y, plain.run(x)[name])  # the same vectorized erf
        want = _ort(model, x)[0]
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
