"""QDQ ONNX models -> edgert's native int8 ops with the model's own parameters (qdq_import.py).

Models quantized by onnxruntime's ``quantize_static`` (QDQ and QOperator), edgert's own QDQ
export (round trip, bit-exact), and hand-written QDQ graphs for the edge cases. Agreement with
onnxruntime is measured in steps of the output's quantization scale.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgert
from edgert.format import read_model
from edgert.quantization import quantize
from edgert.runtime import Interpreter

ort = pytest.importorskip("onnxruntime")
oq = pytest.importorskip("onnxruntime.quantization")

FLOAT_LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
AGREE = 0.995  # fraction of output elements within one output step of onnxruntime


def _init(rng, name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)


def _cnn() -> onnx.ModelProto:
    """Conv (+Relu), grouped Conv, residual Add+Relu, Sigmoid, Concat, MaxPool, 1x1 Conv+Clip,
    ConvTranspose, AveragePool (padding counted), GlobalAveragePool, Flatten, Gemm+Relu,
    MatMul+Add."""
    rng = np.random.default_rng(0)
    inits = [_init(rng, "w1", 8, 3, 3, 3), _init(rng, "b1", 8, scale=0.1),
             _init(rng, "w2", 8, 2, 3, 3), _init(rng, "b2", 8, scale=0.1),
             _init(rng, "w3", 8, 16, 1, 1, scale=0.2), _init(rng, "b3", 8, scale=0.1),
             _init(rng, "wt", 8, 4, 2, 2), _init(rng, "bt", 4, scale=0.1),
             _init(rng, "wg", 10, 4, scale=0.5), _init(rng, "bg", 10, scale=0.1),
             _init(rng, "wm", 10, 6), _init(rng, "bm", 6, scale=0.1),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Add", ["c2", "r1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r2"]),
        helper.make_node("Sigmoid", ["r1"], ["s1"]),
        helper.make_node("Concat", ["r2", "s1"], ["cat"], axis=1),
        helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["mp", "w3", "b3"], ["c3"]),
        helper.make_node("Clip", ["c3", "lo", "hi"], ["r3"]),
        helper.make_node("ConvTranspose", ["r3", "wt", "bt"], ["ct"], strides=[2, 2]),
        helper.make_node("AveragePool", ["ct"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wg", "bg"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["gr"]),
        helper.make_node("MatMul", ["gr", "wm"], ["mm"]),
        helper.make_node("Add", ["mm", "bm"], ["y"]),
    ]
    g = helper.make_graph(nodes, "cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _mlp() -> onnx.ModelProto:
    """MatMul on a 3-D input (+Add+Relu), Transpose, Reshape, Gemm, Sigmoid, Mul, Softmax."""
    rng = np.random.default_rng(1)
    inits = [_init(rng, "w1", 8, 16), _init(rng, "b1", 16, scale=0.1),
             _init(rng, "w2", 64, 12, scale=0.2), _init(rng, "b2", 12, scale=0.1),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t1", "shape"], ["f1"]),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["g2"]),
        helper.make_node("Sigmoid", ["g2"], ["s2"]),
        helper.make_node("Mul", ["g2", "s2"], ["sw"]),
        helper.make_node("Softmax", ["sw"], ["y"], axis=-1),
    ]
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(shape, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(n)]


def _ort_quantize(model: onnx.ModelProto, feeds, tmp_path, *, fmt="QDQ", act="u8",
                  weight="s8", per_channel=True, symmetric=False, extra=None) -> bytes:
    src, dst = tmp_path / "float.onnx", tmp_path / f"q_{fmt}_{act}_{weight}.onnx"
    onnx.save(model, src)

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    qtype = {"u8": oq.QuantType.QUInt8, "s8": oq.QuantType.QInt8}
    options = {"ActivationSymmetric": symmetric, **(extra or {})}
    oq.quantize_static(str(src), str(dst), Reader(), quant_format=getattr(oq.QuantFormat, fmt),
                       per_channel=per_channel, activation_type=qtype[act],
                       weight_type=qtype[weight], extra_options=options)
    return dst.read_bytes()


def _output_step(qdq: bytes, name: str) -> float:
    """The scale of the DequantizeLinear that makes model output ``name``."""
    m = onnx.load_from_string(qdq)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    (dq,) = [n for n in m.graph.node if name in n.output]
    assert dq.op_type == "DequantizeLinear"
    return float(inits[dq.input[1]])


def _agreement(qdq: bytes, data: bytes, x: np.ndarray) -> tuple[float, float]:
    """(fraction of output elements within one output step of onnxruntime, max steps)."""
    sess = ort.InferenceSession(qdq, providers=["CPUExecutionProvider"])
    name = sess.get_outputs()[0].name
    want = sess.run(None, {"x": x})[0]
    got = Interpreter(data).run({"x": x})[name]
    steps = np.abs(got.astype(np.float64) - want) / _output_step(qdq, name)
    return float(np.mean(steps <= 1.0 + 1e-3)), float(steps.max())


def _ops(data: bytes) -> list[str]:
    return [op.op_type for op in read_model(data).main.operators]


def _no_float_linear(ops: list[str]) -> None:
    assert not FLOAT_LINEAR & set(ops), ops
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops, ops


# ----- onnxruntime's QDQ models -------------------------------------------------------------------
@pytest.mark.parametrize("act,per_channel,symmetric",
                         list(itertools.product(["u8", "s8"], [True, False], [False, True])))
def test_ort_qdq_cnn(tmp_path, act, per_channel, symmetric):
    qdq = _ort_quantize(_cnn(), _feeds((2, 3, 8, 8)), tmp_path, act=act,
                        per_channel=per_channel, symmetric=symmetric)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything quantized has an int8 form: no warning
        data = edgert.convert(qdq)
    ops = _ops(data)
    _no_float_linear(ops)
    assert ops.count("QConv") >= 3 and ops.count("QGemm") == 2, ops
    for op in ("QConvTranspose", "QAdd", "QConcat", "QMaxPool", "QLut"):
        assert op in ops, (op, ops)
    x = np.random.default_rng(9).normal(size=(32, 3, 8, 8)).astype(np.float32)
    frac, worst = _agreement(qdq, data, x)
    print(f"cnn {act} per_channel={per_channel} symmetric={symmetric}: {frac:.4%} within one "
          f"step, max {worst:.1f} steps")
    assert frac >= AGREE, (frac, worst)


@pytest.mark.parametrize("act,per_channel", [("u8", True), ("s8", False)])
def test_ort_qdq_mlp(tmp_path, act, per_channel):
    qdq = _ort_quantize(_mlp(), _feeds((4, 4, 8)), tmp_path, act=act, per_channel=per_channel)
    data = edgert.convert(qdq)
    ops = _ops(data)
    _no_float_linear(ops)
    assert ops.count("QGemm") == 2 and "QSoftmax" in ops and "QMul" in ops, ops
    x = np.random.default_rng(9).normal(size=(64, 4, 8)).astype(np.float32)
    frac, worst = _agreement(qdq, data, x)
    print(f"mlp {act} per_channel={per_channel}: {frac:.4%} within one step, max {worst:.1f}")
    assert frac >= AGREE, (frac, worst)


def test_ort_qoperator_matmul(tmp_path):
    """QOperator: QLinearMatMul (and the code moves between) become QGemm."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]),
             helper.make_node("Relu", ["m1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "shape"], ["f1"]),
             helper.make_node("MatMul", ["f1", "w2"], ["y"])]
    g = helper.make_graph(nodes, "qop",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [_init(rng, "w1", 8, 16), _init(rng, "w2", 64, 5, scale=0.2),
                           numpy_helper.from_array(np.array([0, -1], np.int64), "shape")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    qop = _ort_quantize(model, _feeds((4, 4, 8)), tmp_path, fmt="QOperator")
    assert "QLinearMatMul" in [n.op_type for n in onnx.load_from_string(qop).graph.node]
    data = edgert.convert(qop)
    ops = _ops(data)
    _no_float_linear(ops)
    assert ops.count("QGemm") == 2 and "QLinearMatMul" not in ops, ops
    x = np.random.default_rng(9).normal(size=(64, 4, 8)).astype(np.float32)
    frac, worst = _agreement(qop, data, x)
    print(f"QOperator MatMul: {frac:.4%} within one step, max {worst:.1f}")
    assert frac >= AGREE, (frac, worst)


def test_uint8_weights(tmp_path):
    """uint8 weights: with zero point 128 (onnxruntime's symmetric uint8) they are int8 codes
    shifted by 128, exactly; with other zero points edgert's kernels (symmetric weights) have
    no exact form, so those ops stay float (reported) instead of being requantized."""
    x = np.random.default_rng(9).normal(size=(32, 3, 8, 8)).astype(np.float32)
    qdq = _ort_quantize(_cnn(), _feeds((2, 3, 8, 8)), tmp_path, weight="u8")
    data = edgert.convert(qdq)
    _no_float_linear(_ops(data))
    frac, worst = _agreement(qdq, data, x)
    print(f"uint8 weights, zero point 128: {frac:.4%} within one step, max {worst:.1f}")
    assert frac >= AGREE, (frac, worst)

    qdq = _ort_quantize(_cnn(), _feeds((2, 3, 8, 8)), tmp_path, weight="u8", per_channel=False,
                        extra={"WeightSymmetric": False})
    with pytest.warns(UserWarning, match="asymmetric uint8 weights"):
        data = edgert.convert(qdq)
    ops = _ops(data)
    assert ops.count("Conv") == 3 and ops.count("Gemm") + ops.count("MatMul") == 2, ops
    assert "QGemm" not in ops and "QConvTranspose" not in ops, ops
    assert "QAdd" in ops and "QConcat" in ops  # the rest is int8
    frac, worst = _agreement(qdq, data, x)
    print(f"asymmetric weights (float Conv/Gemm): {frac:.4%} within one step, max {worst:.1f}")
    assert frac >= AGREE, (frac, worst)


# ----- edgert's own QDQ export: round trip --------------------------------------------------------
def _mixed() -> onnx.ModelProto:
    """Conv+Relu, grouped Conv, residual Add+Relu, Sigmoid, Concat, MaxPool, LRN (no int8
    kernel: stays float) read by ConvTranspose (int8) and Abs (float, a second output),
    GlobalAveragePool, Flatten, Gemm (alpha, beta), MatMul, Softmax."""
    rng = np.random.default_rng(4)
    inits = [_init(rng, "w1", 8, 3, 3, 3), _init(rng, "b1", 8, scale=0.1),
             _init(rng, "w2", 8, 2, 3, 3), _init(rng, "b2", 8, scale=0.1),
             _init(rng, "wt", 16, 4, 2, 2), _init(rng, "bt", 4, scale=0.1),
             _init(rng, "wg", 4, 6, scale=0.5), _init(rng, "bg", 6, scale=0.1),
             _init(rng, "wm", 6, 5, scale=0.5)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Add", ["c2", "r1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r2"]),
        helper.make_node("Sigmoid", ["r1"], ["s1"]),
        helper.make_node("Concat", ["r2", "s1"], ["cat"], axis=1),
        helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("LRN", ["mp"], ["lrn"], size=3),
        helper.make_node("Abs", ["lrn"], ["y2"]),  # a float op reading the float lrn
        helper.make_node("ConvTranspose", ["lrn", "wt", "bt"], ["ct"], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ct"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wg", "bg"], ["g"], alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["g", "wm"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    g = helper.make_graph(nodes, "mixed",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5]),
                           helper.make_tensor_value_info("y2", TensorProto.FLOAT,
                                                         ["N", 16, 4, 4])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("per_channel", [True, False])
def test_round_trip_is_bit_exact(per_channel):
    model = _mixed().SerializeToString()
    cal = _feeds((4, 3, 8, 8), n=4, seed=2)
    native, _ = quantize(model, calibration=cal, per_channel=per_channel)
    qdq, _ = quantize(model, calibration=cal, per_channel=per_channel, format="onnx")
    data = edgert.convert(qdq)  # LRN's output has a Q/DQ pair but no int8 kernel: no warning
    assert _ops(data) == _ops(native)
    assert _ops(data).count("LRN") == 1
    x = np.random.default_rng(5).normal(size=(16, 3, 8, 8)).astype(np.float32)
    want = Interpreter(native).run({"x": x})
    got = Interpreter(data).run({"x": x})
    for name in ("y", "y2"):
        assert np.array_equal(got[name], want[name]), name


# ----- hand-written QDQ graphs --------------------------------------------------------------------
def _qdq_model(nodes, inits, out_shape, opset=13, in_shape=(2, 4, 6, 6)):
    g = helper.make_graph(nodes, "h",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _t(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _act_pair(t, scale, zp, dtype=np.uint8, out=None):
    """Q/DQ pair nodes and initializers for tensor ``t``."""
    out = out or t + "_dq"
    return ([helper.make_node("QuantizeLinear", [t, t + "_s", t + "_z"], [t + "_q"]),
             helper.make_node("DequantizeLinear", [t + "_q", t + "_s", t + "_z"], [out])],
            [_t(t + "_s", np.float32(scale)), _t(t + "_z", dtype(zp))])


def _run_both(model: onnx.ModelProto, x: np.ndarray, fuse: bool = True):
    """onnxruntime's and edgert's outputs, and the `.edgert` file. ``fuse=False``: onnxruntime
    runs the QDQ graph as written (no fusion into its integer kernels)."""
    proto = model.SerializeToString()
    so = ort.SessionOptions()
    if not fuse:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto, so, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    data = edgert.convert(proto)
    return want, Interpreter(data).run({"x": x})["y"], data


def test_weight_forms_and_raw_readers():
    """int8 weights using -128, uint8 weights with zero point 128 (symmetric: exact in int8),
    an int32 bias behind a DequantizeLinear, and a tensor that a float op reads unquantized as
    well as through its pair (the producer then stays float)."""
    rng = np.random.default_rng(6)
    w1 = rng.integers(-128, 128, (4, 4, 3, 3)).astype(np.int8)
    w1[0, 0, 0, 0] = -128
    w2 = rng.integers(0, 256, (4, 4, 1, 1)).astype(np.uint8)
    ws1 = (rng.uniform(0.5, 1.5, 4) / 300).astype(np.float32)
    xs = np.float32(0.02)
    nodes, inits = _act_pair("x", xs, 128)
    nodes += [
        helper.make_node("DequantizeLinear", ["w1q", "w1s", "w1z"], ["w1"], axis=0),
        helper.make_node("DequantizeLinear", ["b1q", "b1s"], ["b1"], axis=0),
        helper.make_node("Conv", ["x_dq", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
    ]
    inits += [_t("w1q", w1), _t("w1s", ws1), _t("w1z", np.zeros(4, np.int8)),
              _t("b1q", rng.integers(-2000, 2000, 4).astype(np.int32)), _t("b1s", xs * ws1)]
    n, i = _act_pair("c1", 0.05, 120)
    nodes += n + [
        helper.make_node("Tanh", ["c1"], ["raw"]),  # reads c1 unquantized
        helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2"]),
        helper.make_node("Conv", ["c1_dq", "w2"], ["c2"]),
    ]
    inits += i + [_t("w2q", w2), _t("w2s", np.float32(0.01)), _t("w2z", np.uint8(128))]
    n, i = _act_pair("c2", 0.05, 128)
    nodes += n + [helper.make_node("Add", ["c2_dq", "raw"], ["y0"])]
    inits += i
    n, i = _act_pair("y0", 0.04, 128, out="y")
    model = _qdq_model(nodes + n, inits + i, [2, 4, 6, 6])
    x = np.random.default_rng(7).normal(size=(2, 4, 6, 6)).astype(np.float32)
    want, got, data = _run_both(model, x)
    ops = _ops(data)
    # c1 is read unquantized: its Conv stays float; the second Conv, on the quantized c1, and
    # with uint8 weights of zero point 128, is int8; Add reads a float tensor: float
    assert ops.count("QConv") == 1 and ops.count("Conv") == 1 and "Add" in ops, ops
    assert np.mean(np.abs(got - want) <= 0.04 * 1.001) >= AGREE
    # Tanh on the quantized c1: both Convs int8
    [tanh] = [nd for nd in model.graph.node if nd.op_type == "Tanh"]
    tanh.input[0] = "c1_dq"
    want, got, data = _run_both(model, x)
    assert _ops(data).count("QConv") == 2, _ops(data)
    assert np.mean(np.abs(got - want) <= 0.04 * 1.001) >= AGREE


def test_blocked_weights_stay_float():
    """Opset-21 blocked weight scales that vary inside an output channel have no int8 form:
    the Conv stays float (with a warning); blocks with one scale per channel are per channel."""
    rng = np.random.default_rng(8)
    w = rng.integers(-127, 128, (4, 8, 1, 1)).astype(np.int8)
    ws = rng.uniform(0.002, 0.004, (4, 2, 1, 1)).astype(np.float32)  # blocks of 4 input chans
    nodes, inits = _act_pair("x", 0.02, 0, dtype=np.int8)
    nodes += [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=1,
                               block_size=4),
              helper.make_node("Conv", ["x_dq", "w"], ["c"])]
    inits += [_t("wq", w), _t("ws", ws), _t("wz", np.zeros_like(ws, dtype=np.int8))]
    n, i = _act_pair("c", 0.05, 0, dtype=np.int8, out="y")
    model = _qdq_model(nodes + n, inits + i, [2, 4, 6, 6], opset=21, in_shape=(2, 8, 6, 6))
    x = np.random.default_rng(7).normal(size=(2, 8, 6, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match="vary within an output channel"):
        want, got, data = _run_both(model, x, fuse=False)
    assert "Conv" in _ops(data) and "QConv" not in _ops(data)
    assert np.mean(np.abs(got - want) <= 0.05 * 1.001) >= AGREE
    inits = [_t("ws", np.repeat(ws[:, :1], 2, axis=1)) if t.name == "ws" else t
             for t in inits]  # one scale per output channel
    model = _qdq_model(nodes + n, inits + i, [2, 4, 6, 6], opset=21, in_shape=(2, 8, 6, 6))
    want, got, data = _run_both(model, x, fuse=False)  # (onnxruntime cannot fuse these)
    assert "QConv" in _ops(data)
    assert np.mean(np.abs(got - want) <= 0.05 * 1.001) >= AGREE


def test_detection_and_level_zero():
    from edgert.importer import import_onnx
    from edgert.quantization.qdq_import import has_qdq

    n, i = _act_pair("x", 0.02, 128, out="y")
    model = _qdq_model(n, i, [2, 4, 6, 6])
    assert has_qdq(import_onnx(model))
    # level 0 converts the graph as imported: the float QuantizeLinear/DequantizeLinear stay
    assert _ops(edgert.convert(model, level=0)) == ["QuantizeLinear", "DequantizeLinear"]
    # a lone QuantizeLinear (or weights only behind DequantizeLinear) is not a QDQ model
    lone = _qdq_model([helper.make_node("QuantizeLinear", ["x", "s"], ["y"])],
                      [_t("s", np.float32(0.1))], [2, 4, 6, 6])
    lone.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT8
    assert not has_qdq(import_onnx(lone))


def test_moves_into_other_parameters():
    """MaxPool and Reshape whose output pair has other parameters than their input's: the int8
    op, then an exact requantization (edgert.QLut); a GlobalAveragePool into parameters of its
    own averages in float (one rounding); an AveragePool with its input's parameters is int8."""
    nodes, inits = _act_pair("x", 0.03, 128)
    nodes += [helper.make_node("MaxPool", ["x_dq"], ["mp"], kernel_shape=[2, 2], strides=[1, 1])]
    n, i = _act_pair("mp", 0.021, 100)
    nodes += n + [helper.make_node("AveragePool", ["mp_dq"], ["ap"], kernel_shape=[3, 3],
                                   strides=[1, 1])]
    inits += i
    n, i = _act_pair("ap", 0.021, 100)
    nodes += n + [helper.make_node("GlobalAveragePool", ["ap_dq"], ["gap"])]
    inits += i
    n, i = _act_pair("gap", 0.004, 128)
    nodes += n + [helper.make_node("Reshape", ["gap_dq", "shape"], ["r"])]
    inits += i + [_t("shape", np.array([0, -1], np.int64))]
    n, i = _act_pair("r", 0.005, 120, out="y")
    model = _qdq_model(nodes + n, inits + i, [2, 4])
    x = np.random.default_rng(7).normal(size=(2, 4, 6, 6)).astype(np.float32)
    want, got, data = _run_both(model, x, fuse=False)
    ops = _ops(data)
    assert ops.count("QLut") == 2 and "QMaxPool" in ops and "Reshape" in ops, ops
    assert "QAveragePool" in ops and "GlobalAveragePool" in ops, ops
    # (a 3x3 mean is never half-way: the int8 average rounds as ONNX does)
    np.testing.assert_array_equal(got, want)


def test_native_average_pool_counts_real_zero_padding():
    """edgert.quantize (native): an AveragePool that counts its padding, on a zero point other
    than 0, pads with real zeros (a depthwise QConv), as the QDQ export run by onnxruntime
    does."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], count_include_pad=1)]
    model = _qdq_model(nodes, [_init(rng, "w", 4, 4, 3, 3), _init(rng, "b", 4, scale=0.5)],
                       [2, 4, 6, 6]).SerializeToString()
    cal = _feeds((2, 4, 6, 6), n=2)
    data, _ = quantize(model, calibration=cal)
    assert "QConv" in _ops(data) and "QAveragePool" not in _ops(data)
    qdq, _ = quantize(model, calibration=cal, format="onnx")
    x = cal[0]["x"]
    frac, worst = _agreement(qdq, data, x)
    assert frac >= AGREE and worst <= 1.0 + 1e-3, (frac, worst)


def test_int4_weights():
    """Opset-21 int4 weights (zero point 0) are int8 codes as they are."""
    rng = np.random.default_rng(1)
    w = rng.integers(-8, 8, (4, 4, 3, 3))
    nodes, inits = _act_pair("x", 0.02, 0, dtype=np.int8)
    nodes += [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
              helper.make_node("Conv", ["x_dq", "w"], ["c"], pads=[1, 1, 1, 1])]
    inits += [helper.make_tensor("wq", TensorProto.INT4, w.shape, w.ravel().tolist()),
              _t("ws", rng.uniform(0.02, 0.04, 4).astype(np.float32)),
              helper.make_tensor("wz", TensorProto.INT4, [4], [0, 0, 0, 0])]
    n, i = _act_pair("c", 0.05, 0, dtype=np.int8, out="y")
    model = _qdq_model(nodes + n, inits + i, [2, 4, 6, 6], opset=21)
    x = np.random.default_rng(7).normal(size=(2, 4, 6, 6)).astype(np.float32)
    want, got, data = _run_both(model, x)
    assert _ops(data) == ["Quantize", "QConv", "Dequantize"]
    assert np.mean(np.abs(got - want) <= 0.05 * 1.001) >= AGREE
