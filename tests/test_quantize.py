"""edgert.quantize end to end: observers, calibration errors, int8 digits accuracy, modes, CLI."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import edgert
from edgert.errors import DTypeError, EdgeRTError, InputError, ShapeError
from edgert.quantization import quantize
from edgert.quantization.observers import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PercentileObserver,
)
from edgert.runtime import Interpreter

MODELS = pathlib.Path(__file__).resolve().parents[1] / "models"
DIGITS = MODELS / "digits_cnn.onnx"
FP32_ACCURACY = 0.9972  # models/README.md, measured with onnxruntime


@pytest.fixture(scope="module")
def digits():
    d = np.load(MODELS / "digits_test.npz")
    return d["x"], d["y"]


# ----- observers ----------------------------------------------------------------------------------
def test_observers_ranges():
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=1000).astype(np.float32) for _ in range(5)]
    batches[0][0] = 50.0  # one outlier, in the first batch: the histogram range is then fixed
    mm, ma, pc, en = (MinMaxObserver(), MovingAverageMinMaxObserver(), PercentileObserver(99.9),
                      EntropyObserver())
    for b in batches:
        for o in (mm, ma, pc, en):
            o.update(b)
    allx = np.concatenate(batches)
    assert mm.range() == (float(allx.min()), 50.0)
    lo, hi = ma.range()
    assert hi < 50.0 and lo < 0
    lo, hi = pc.range()
    # the outlier is clipped: the 99.9th percentile of 5000 values lies between the 6th and the
    # 5th largest; the histogram answers a bin edge, so allow one bin width either side
    bw = (pc.hist.hi - pc.hist.lo) / pc.hist.bins
    s = np.sort(allx)
    assert s[-6] - bw <= hi <= s[-5] + bw
    assert s[4] - bw <= lo <= s[5] + bw
    lo, hi = en.range()
    assert 2.0 < hi < 50.0 and lo == -hi


def test_histogram_memory_is_bounded():
    o = EntropyObserver()
    for k in range(1, 6):
        o.update(np.linspace(-k * 10, k * 10, 1000, dtype=np.float32))
    assert o.hist.counts.shape == (2048,)
    assert o.hist.counts.sum() == 5000


# ----- int8 end to end ----------------------------------------------------------------------------
def test_digits_int8_accuracy(digits, tmp_path):
    x, y = digits
    out = tmp_path / "digits_int8.edgert"
    data, rep = edgert.quantize(str(DIGITS), out, calibration={"input": x[:200]}, report=True)
    assert out.read_bytes() == data
    assert not rep.float_ops, rep.float_ops  # every op of this model has an int8 kernel
    assert rep.int8_ops["Conv"] == 3 and rep.int8_ops["Gemm"] == 2
    assert rep.sqnr and rep.sqnr[0][1] <= rep.sqnr[-1][1]  # worst first
    assert len(data) < 0.4 * DIGITS.stat().st_size
    probs = Interpreter(out).run({"input": x})["probabilities"]
    acc = float((probs.argmax(1) == y).mean())
    assert acc >= FP32_ACCURACY - 0.005, acc
    # the int8 probabilities follow the float model's
    import onnxruntime as ort

    ref = ort.InferenceSession(str(DIGITS)).run(None, {"input": x})[0]
    assert np.mean(np.abs(probs - ref)) < 0.02


@pytest.mark.parametrize("mode,ratio", [("fp16", 0.6), ("dynamic", 0.4)])
def test_weight_only_modes(digits, mode, ratio):
    x, y = digits
    data, _ = quantize(str(DIGITS), mode=mode)
    assert len(data) < ratio * DIGITS.stat().st_size
    probs = Interpreter(data).run({"input": x[:100]})["probabilities"]
    import onnxruntime as ort

    ref = ort.InferenceSession(str(DIGITS)).run(None, {"input": x[:100]})[0]
    assert np.mean(probs.argmax(1) == ref.argmax(1)) >= 0.99


def test_calibration_sources(digits, tmp_path):
    x, _ = digits
    np.savez(tmp_path / "a.npz", input=x[:20])
    np.save(tmp_path / "b.npy", x[20:30])
    data_dir, _ = quantize(str(DIGITS), calibration=tmp_path, method="percentile")
    data_gen, _ = quantize(str(DIGITS), calibration=({"input": x[i:i + 10]} for i in (0, 10, 20)),
                           method="percentile")
    for data in (data_dir, data_gen):
        assert Interpreter(data).run({"input": x[:4]})["probabilities"].shape == (4, 10)


# ----- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("feed,err,match", [
    ({"images": np.zeros((2, 1, 8, 8), np.float32)}, InputError, "unknown: images"),
    ({"input": np.zeros((2, 1, 9, 8), np.float32)}, ShapeError, "shape"),
    ({"input": np.zeros((2, 1, 8, 8), np.int32)}, DTypeError, "dtype"),
    ({"input": np.full((2, 1, 8, 8), np.nan, np.float32)}, InputError, "NaN"),
    ({"input": np.zeros((0, 1, 8, 8), np.float32)}, InputError, "empty"),
])
def test_bad_calibration_data(feed, err, match):
    with pytest.raises(err, match=match):
        quantize(str(DIGITS), calibration=[feed])


def test_no_data_and_bad_options():
    with pytest.raises(InputError, match="empty"):
        quantize(str(DIGITS), calibration=[])
    with pytest.raises(EdgeRTError, match="needs calibration"):
        quantize(str(DIGITS))
    with pytest.raises(EdgeRTError, match="method"):
        quantize(str(DIGITS), calibration=[], method="magic")
    with pytest.raises(EdgeRTError, match="mode"):
        quantize(str(DIGITS), mode="int4")


def test_model_without_float_tensors():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Add", ["a", "a"], ["b"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("b", TensorProto.INT64, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgeRTError, match="no float tensors"):
        quantize(model.SerializeToString(), calibration=[{"a": np.zeros(2, np.int64)}])


# ----- CLI ----------------------------------------------------------------------------------------
def test_cli_quantize(digits, tmp_path, capsys):
    from edgert.cli import main

    x, _ = digits
    np.savez(tmp_path / "cal.npz", input=x[:32])
    out = tmp_path / "d.edgert"
    rc = main(["quantize", str(DIGITS), "-o", str(out), "--calibration",
               str(tmp_path / "cal.npz"), "--method", "entropy", "--report"])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists()
    assert "SQNR" in text and "quantized ops" in text
    rc = main(["quantize", str(DIGITS), "-o", str(out), "--calibration",
               str(tmp_path / "nothing.npz")])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err


def test_int8_inputs_and_outputs(digits, tmp_path, capsys):
    """io='int8': the file's input and output are the int8 tensors; quantizing the input and
    dequantizing the output by the parameters the interpreter reports gives exactly what the
    float-io model computes inside."""
    x, _ = digits
    cal = {"input": x[:64]}
    data_f, _ = quantize(str(DIGITS), calibration=cal)
    data_q, rep = quantize(str(DIGITS), calibration=cal, io="int8")
    assert not rep.float_io
    interp = Interpreter(data_q)
    (din,), (dout,) = interp.get_input_details(), interp.get_output_details()
    assert din["name"] == "input" and din["dtype"] == np.int8
    assert dout["name"] == "probabilities" and dout["dtype"] == np.int8
    s_in, z_in = din["quantization"]
    s_out, z_out = dout["quantization"]
    assert s_in > 0 and s_out > 0
    xs = x[:50]
    xq = np.clip(np.rint(xs / np.float32(s_in)) + z_in, -128, 127).astype(np.int8)
    yq = interp.run({"input": xq})["probabilities"]
    assert yq.dtype == np.int8
    got = (yq.astype(np.float32) - np.float32(z_out)) * np.float32(s_out)
    want = Interpreter(data_f).run({"input": xs})["probabilities"]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(EdgeRTError, match="io"):
        quantize(str(DIGITS), calibration=cal, io="int8", format="onnx")
    with pytest.raises(EdgeRTError, match="io"):
        quantize(str(DIGITS), calibration=cal, io="uint8")
    from edgert.cli import main

    out = tmp_path / "dq.edgert"
    np.savez(tmp_path / "cal.npz", input=x[:32])
    assert main(["quantize", str(DIGITS), "-o", str(out), "--calibration",
                 str(tmp_path / "cal.npz"), "--io", "int8"]) == 0
    assert Interpreter(out).get_input_details()[0]["dtype"] == np.int8
    capsys.readouterr()


def test_int8_input_also_read_by_a_float_op():
    """A float op (LRN, no int8 kernel) reading the model input gets a Dequantize of the int8
    input; the result stays within a few output steps of the float-io model."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    w = numpy_helper.from_array((rng.normal(size=(3, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("LRN", ["x"], ["l"], size=3),
         helper.make_node("Add", ["c", "l"], ["y"])],
        "io", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 6, 6])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    cal = [{"x": rng.normal(size=(1, 3, 6, 6)).astype(np.float32)} for _ in range(8)]
    data_q, rep = quantize(model, calibration=cal, io="int8")
    assert [op for op, _, _ in rep.float_ops] == ["LRN"]
    interp = Interpreter(data_q)
    (din,), (dout,) = interp.get_input_details(), interp.get_output_details()
    (s_in, z_in), (s_out, z_out) = din["quantization"], dout["quantization"]
    x = cal[0]["x"]
    xq = np.clip(np.rint(x / np.float32(s_in)) + z_in, -128, 127).astype(np.int8)
    got = (interp.run({"x": xq})["y"].astype(np.float32) - z_out) * s_out
    want = Interpreter(quantize(model, calibration=cal)[0]).run({"x": x})["y"]
    assert np.max(np.abs(got - want)) <= 3 * s_out


@pytest.mark.parametrize("attrs", [
    dict(mode="linear"),
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="cubic", coordinate_transformation_mode="align_corners"),
])
def test_resize_stays_int8(attrs):
    """Conv -> Resize -> Conv: the Resize runs on the int8 codes (no float island), within a
    few output steps of onnxruntime's float model, and the QDQ export runs in onnxruntime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array((rng.normal(size=s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (4, 3, 3, 3)), ("w2", (2, 4, 3, 3)))]
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Resize", ["c1", "", "scales"], ["r"], **attrs),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])],
        "rs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 10, 12])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    cal = [{"x": rng.normal(size=(1, 3, 5, 6)).astype(np.float32)} for _ in range(8)]
    data, rep = quantize(model, calibration=cal)
    assert not rep.float_ops and rep.int8_ops.get("Resize") == 1
    x = cal[0]["x"]
    got = Interpreter(data).run({"x": x})["y"]
    want = ort.InferenceSession(model).run(None, {"x": x})[0]
    step = (want.max() - want.min()) / 255
    assert np.max(np.abs(got - want)) <= 4 * step
    # The QDQ export, as ONNX defines it. (onnxruntime's graph optimizer fuses DQ -> Resize -> Q
    # into its own int8 Resize, which for linear mode lands ~30 steps away from both the float
    # model and its own unfused run of the same file, so the check runs the file unfused.)
    qdq, _ = quantize(model, calibration=cal, format="onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    q = ort.InferenceSession(qdq, so).run(None, {"x": x})[0]
    assert np.max(np.abs(q - want)) <= 4 * step


@pytest.mark.parametrize("group,per_channel", [(1, True), (2, True), (1, False)])
def test_conv_transpose_stays_int8(group, per_channel):
    """Conv -> ConvTranspose(+Relu) -> Conv: the ConvTranspose runs int8 (weights per output
    channel along axis 1, per tensor for groups), close to onnxruntime's float model; the QDQ
    export is a valid model that onnxruntime runs just as close."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.normal(size=s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (4, 3, 3, 3)), ("wt", (4, 6 // group, 3, 3)), ("bt", (6,)),
                          ("w2", (2, 6, 3, 3)))]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("ConvTranspose", ["c1", "wt", "bt"], ["t"], strides=[2, 2],
                          pads=[1, 1, 1, 1], output_padding=[1, 1], group=group),
         helper.make_node("Relu", ["t"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])],
        "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 10, 12])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    cal = [{"x": rng.normal(size=(1, 3, 5, 6)).astype(np.float32)} for _ in range(8)]
    data, rep = quantize(model, calibration=cal, per_channel=per_channel)
    assert not rep.float_ops and rep.int8_ops.get("ConvTranspose") == 1
    x = cal[0]["x"]
    want = ort.InferenceSession(model).run(None, {"x": x})[0]
    step = (want.max() - want.min()) / 255
    got = Interpreter(data).run({"x": x})["y"]
    assert np.max(np.abs(got - want)) <= 6 * step
    qdq, _ = quantize(model, calibration=cal, per_channel=per_channel, format="onnx")
    onnx.checker.check_model(onnx.load_from_string(qdq), full_check=True)
    q = ort.InferenceSession(qdq).run(None, {"x": x})[0]
    assert np.max(np.abs(q - want)) <= 6 * step


# ----- a small model with every kind of rewrite -------------------------------------------------
def _mixed_model():
    """Conv+Relu, residual Add+Relu, Concat, MaxPool, Sigmoid (LUT), LRN (stays float),
    GlobalAveragePool, Flatten, Gemm, Softmax — opset 13."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

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
        helper.make_node("GlobalAveragePool", ["lrn"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wg", "bg"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 2, 3, 3),
             init("b2", 8, scale=0.1), init("wg", 5, 16, scale=1.0), init("bg", 5, scale=0.1)]
    g = helper.make_graph(nodes, "mixed",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_mixed_model_int8_and_qdq_export():
    import onnxruntime as ort

    model = _mixed_model().SerializeToString()
    rng = np.random.default_rng(2)
    cal = [{"x": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    data, rep = quantize(model, calibration=cal)
    assert [op for op, _, _ in rep.float_ops] == ["LRN"]  # the one op without an int8 kernel
    for op in ("Add", "Concat", "MaxPool", "GlobalAveragePool", "Sigmoid", "Softmax"):
        assert rep.int8_ops.get(op), op
    x = rng.normal(size=(6, 3, 8, 8)).astype(np.float32)
    got = Interpreter(data).run({"x": x})["y"]
    ref = ort.InferenceSession(model).run(None, {"x": x})[0]
    assert np.max(np.abs(got - ref)) < 0.05  # a few int8 steps (1/256) of probability
    # The Concat's inputs feed nothing else, so they share its output parameters (TFLite's
    # rule) and the int8 Concat copies instead of rescaling.
    from edgert.format import read_model

    (cat,) = [op for op in read_model(data).main.operators if op.op_type == "QConcat"]
    assert cat.attrs["scales"] == [cat.attrs["y_scale"]] * 2
    assert cat.attrs["zero_points"] == [cat.attrs["y_zero_point"]] * 2
    # The QDQ export is a valid model that onnxruntime runs, with int8 weights and one Q/DQ
    # pair per int8 activation; it lands as close to the float model as edgert's int8 does.
    # (Element-wise agreement with edgert is not asserted here: with these random weights the
    # final Softmax turns one-step logit rounding differences into several output steps. The
    # benchmark checks the one-step agreement on the light models.)
    import onnx

    qdq, _ = quantize(model, calibration=cal, format="onnx")
    proto = onnx.load_from_string(qdq)
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8
                    and len(t.dims) > 1]
    assert len(int8_weights) == 3 and "LRN" in ops
    assert ops.count("QuantizeLinear") >= 8
    q = ort.InferenceSession(qdq).run(None, {"x": x})[0]
    assert np.max(np.abs(q - ref)) < 0.05


def test_mask_product_seen_only_at_zero_stays_float(tmp_path):
    """(1 - mask) * float32.min with an all-ones mask in calibration (unpadded BERT inputs): the
    product's int8 multiplier would be ~1e36; the Mul stays float and the model loads and runs."""
    from onnx import TensorProto, helper

    g = helper.make_graph([
        helper.make_node("Sub", ["one", "mask"], ["inv"]),
        helper.make_node("Mul", ["inv", "big"], ["bias"]),
        helper.make_node("Add", ["s", "bias"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1)], "g",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
         helper.make_tensor("big", TensorProto.FLOAT, [], [float(np.finfo(np.float32).min)])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    cal = [{"s": rng.normal(size=(1, 8)).astype(np.float32), "mask": np.ones((1, 8), np.float32)}
           for _ in range(8)]
    data, rep = quantize(m.SerializeToString(), calibration=cal, report=True)
    assert "output scale too small" in rep.summary()
    y = Interpreter(data).run(cal[0])["y"]
    s = cal[0]["s"].astype(np.float64)
    want = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    assert np.abs(y - want).max() <= 2 / 255  # within two steps of the int8 softmax


def test_concat_of_very_different_ranges_stays_float():
    """YOLOv8's head: box coordinates (0..320) joined with class scores (0..1). One int8 scale
    for both rounds every score to 0; the Concat stays float and the scores keep their own."""
    from onnx import TensorProto, helper

    g = helper.make_graph([
        helper.make_node("Mul", ["x", "k"], ["boxes"]),
        helper.make_node("Sigmoid", ["x"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [100.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(1)
    cal = [{"x": rng.uniform(-3, 3, (1, 16)).astype(np.float32)} for _ in range(8)]
    data, rep = quantize(m.SerializeToString(), calibration=cal, report=True)
    assert "ranges differ" in rep.summary()
    x = cal[0]["x"]
    y = Interpreter(data).run({"x": x})["y"]
    scores = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.abs(y[:, 16:] - scores).max() <= 1 / 255  # one step of the scores' own scale
