"""edgert.quantize on the shapes of real models: an attention mask of -inf, a scalar input next to a
state whose batch is not on axis 0, work inside If/Loop bodies, a static batch-1 model given
stacked samples; plus the report's warnings and ``strict``.

The models are tiny onnx.helper graphs; int8 outputs are compared with onnxruntime's float run,
within a few quantization steps of the output's calibrated range."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

from edgert.errors import EdgeRTError, InputError
from edgert.quantization import QuantizationReport, StrictQuantizationError, load_graph, quantize
from edgert.quantization.calibrate import BatchAxisError, calibrate
from edgert.quantization.observers import EntropyObserver, MinMaxObserver, PercentileObserver
from edgert.runtime import Interpreter


def _init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def _model(nodes, name, inputs, outputs, inits, opset=17) -> bytes:
    m = h.make_model(h.make_graph(nodes, name, inputs, outputs, inits),
                     opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def _ref(model: bytes, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model).run(None, feed)


def _step(ref: np.ndarray) -> float:
    """One int8 step of a tensor's range (0 included, as the quantizer does)."""
    return (max(float(ref.max()), 0.0) - min(float(ref.min()), 0.0)) / 255


def _widest_step(model: bytes, cal, names=None, **kw) -> float:
    """One int8 step of the widest calibrated activation (of ``names``, else all but the model
    inputs): rounding there bounds what a chain of int8 ops with slopes <= 1 adds to an
    output."""
    graph = load_graph(model)
    ranges = calibrate(graph, cal, progress=False, **kw)
    every = dict(ranges)
    for body in ranges.bodies.values():
        every.update(body)
    names = names or set(every) - {v.name for v in graph.inputs}
    return max(max(every[k][1], 0) - min(every[k][0], 0) for k in names) / 255


def _cli(args) -> int:
    from edgert.cli import main

    return main([str(a) for a in args])


# ----- 1. attention masks of -inf -----------------------------------------------------------------
SEQ, D = 8, 16


def _encoder(mask_form: str) -> bytes:
    """One self-attention layer (no heads) whose padding mask reaches the Softmax as -inf:
    ``where_add``: scores + Where(mask, 0, -inf); ``where``: Where(mask, scores, -inf);
    ``finfo_min``: scores + (1 - mask) * float32.min (the Hugging Face form)."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "wq"], ["q"]),
        h.make_node("MatMul", ["x", "wk"], ["k"]),
        h.make_node("MatMul", ["x", "wv"], ["v"]),
        h.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        h.make_node("MatMul", ["q", "kt"], ["s0"]),
        h.make_node("Mul", ["s0", "scale"], ["s1"]),
        h.make_node("Unsqueeze", ["mask", "ax1"], ["mask3"]),
    ]
    if mask_form == "where_add":
        nodes += [h.make_node("Cast", ["mask3"], ["mb"], to=TP.BOOL),
                  h.make_node("Where", ["mb", "zero", "ninf"], ["madd"]),
                  h.make_node("Add", ["s1", "madd"], ["s2"])]
    elif mask_form == "where":
        nodes += [h.make_node("Cast", ["mask3"], ["mb"], to=TP.BOOL),
                  h.make_node("Where", ["mb", "s1", "ninf"], ["s2"])]
    else:
        nodes += [h.make_node("Cast", ["mask3"], ["mf"], to=TP.FLOAT),
                  h.make_node("Sub", ["one", "mf"], ["inv"]),
                  h.make_node("Mul", ["inv", "fmin"], ["madd"]),
                  h.make_node("Add", ["s1", "madd"], ["s2"])]
    nodes += [
        h.make_node("Softmax", ["s2"], ["p"], axis=-1),
        h.make_node("MatMul", ["p", "v"], ["a"]),
        h.make_node("MatMul", ["a", "wo"], ["o"]),
        h.make_node("Add", ["o", "x"], ["y"]),
    ]
    inits = [_init(n, rng.normal(0, 0.2, (D, D)).astype(np.float32))
             for n in ("wq", "wk", "wv", "wo")]
    inits += [_init("scale", np.float32(1 / np.sqrt(D))), _init("zero", np.float32(0)),
              _init("ninf", np.float32(-np.inf)), _init("one", np.float32(1)),
              _init("fmin", np.finfo(np.float32).min), _init("ax1", np.array([1], np.int64))]
    return _model(nodes, "encoder",
                  [h.make_tensor_value_info("x", TP.FLOAT, ["batch", SEQ, D]),
                   h.make_tensor_value_info("mask", TP.INT64, ["batch", SEQ])],
                  [h.make_tensor_value_info("y", TP.FLOAT, ["batch", SEQ, D])], inits)


def _encoder_data(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((n, SEQ), np.int64)
    for i in range(n):
        mask[i, SEQ - 1 - i % 4:] = 0  # 1 to 4 padding positions
    return {"x": rng.normal(size=(n, SEQ, D)).astype(np.float32), "mask": mask}


@pytest.mark.parametrize("mask_form", ["where_add", "where", "finfo_min"])
def test_attention_mask_of_minus_inf(mask_form, tmp_path):
    model = _encoder(mask_form)
    cal = _encoder_data(16, 1)
    np.savez(tmp_path / "cal.npz", **cal)
    data, rep = quantize(model, calibration=tmp_path / "cal.npz")
    # the masked scores stay float (int8 would turn -inf into an ordinary score) ...
    kept = dict(rep.nonfinite)
    assert "s2" in kept and ("-inf" in kept["s2"] or "-1e+30" in kept["s2"]), rep.summary()
    assert "NaN/Inf" in rep.summary()
    if mask_form != "where":
        (add,) = [f for f in rep.float_ops if f[0] == "Add"]
        assert "held NaN/Inf" in add[2] and "'madd'" in add[2]
    # ... and every projection runs int8
    assert rep.int8_ops["MatMul"] == 4, rep.summary()
    x = _encoder_data(6, 2)
    want = _ref(model, x)[0]
    got = Interpreter(data).run(x)["y"]
    step = _step(_ref(model, cal)[0])
    assert np.max(np.abs(got - want)) <= 4 * step
    # the mask holds exactly: what sits at a padded position cannot reach the others
    x2 = {"x": x["x"].copy(), "mask": x["mask"]}
    x2["x"][x["mask"] == 0] += 5.0
    got2 = Interpreter(data).run(x2)["y"]
    keep = x["mask"] == 1
    np.testing.assert_array_equal(got2[keep], got[keep])


def test_observers_leave_non_finite_values_out():
    x = np.array([1.0, -np.inf, np.nan, 2.0, np.inf, -3.4e38], np.float32)
    for obs in (MinMaxObserver(), PercentileObserver(99.0), EntropyObserver()):
        obs.update(x)
        lo, hi = obs.range()
        assert np.isfinite(lo) and np.isfinite(hi) and hi <= 2.0, type(obs)
        assert obs.nonfinite == {"nan": 1, "-inf": 1, "+inf": 1, "<=-1e+30": 1}
    only_inf = MinMaxObserver()
    only_inf.update(np.full(4, -np.inf, np.float32))
    assert not only_inf.seen and only_inf.describe_nonfinite() == "-inf x4"


def test_tensor_without_any_finite_value_stays_float():
    """A Conv whose input is -inf everywhere (a fully masked row): no finite range at all, so
    the Conv stays float and the report names the tensor."""
    w = np.ones((2, 1, 1, 1), np.float32)
    model = _model([h.make_node("Mul", ["x", "ninf"], ["m"]),
                    h.make_node("Conv", ["m", "w"], ["c"]),
                    h.make_node("Relu", ["x"], ["r"]),
                    h.make_node("Conv", ["r", "w"], ["y2"])],
                   "allinf", [h.make_tensor_value_info("x", TP.FLOAT, [1, 1, 2, 2])],
                   [h.make_tensor_value_info("c", TP.FLOAT, [1, 2, 2, 2]),
                    h.make_tensor_value_info("y2", TP.FLOAT, [1, 2, 2, 2])],
                   [_init("w", w), _init("ninf", np.float32(-np.inf))])
    cal = {"x": np.random.default_rng(0).uniform(1, 2, (4, 1, 2, 2)).astype(np.float32)}
    data, rep = quantize(model, calibration=cal)
    kept = dict(rep.nonfinite)
    assert kept["m"] == "-inf x16 (no finite value at all)"
    (conv,) = [f for f in rep.float_ops if f[0] == "Conv"]
    assert "'m' held NaN/Inf" in conv[2]
    out = Interpreter(data).run({"x": cal["x"][:1]})
    assert np.all(out["c"] == -np.inf)
    with pytest.raises(StrictQuantizationError, match="Conv 'Conv_1' left in float"):
        quantize(model, calibration=cal, strict=True)


# ----- 2. a scalar input and a state whose batch is on axis 1 -------------------------------------
S, H = 64, 16


def _vad(state_batch: str | None = "batch") -> bytes:
    """Voice-activity-like: audio [batch, samples], state [2, batch, H], sr a scalar int64."""
    rng = np.random.default_rng(3)
    nodes = [
        h.make_node("Cast", ["sr"], ["srf"], to=TP.FLOAT),
        h.make_node("Div", ["srf", "k16000"], ["srs"]),
        h.make_node("MatMul", ["input", "w_in"], ["f0"]),
        h.make_node("Mul", ["f0", "srs"], ["f1"]),
        h.make_node("Gather", ["state", "i0"], ["s0"], axis=0),
        h.make_node("MatMul", ["s0", "w_h"], ["hs"]),
        h.make_node("Add", ["f1", "hs"], ["pre"]),
        h.make_node("Tanh", ["pre"], ["hid"]),
        h.make_node("Unsqueeze", ["hid", "ax0"], ["hid3"]),
        h.make_node("Gather", ["state", "i1"], ["s1"], axis=0),
        h.make_node("Unsqueeze", ["s1", "ax0"], ["s13"]),
        h.make_node("Concat", ["hid3", "s13"], ["stateN"], axis=0),
        h.make_node("MatMul", ["hid", "w_o"], ["logit"]),
        h.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    inits = [_init("w_in", rng.normal(0, 0.2, (S, H)).astype(np.float32)),
             _init("w_h", rng.normal(0, 0.3, (H, H)).astype(np.float32)),
             _init("w_o", rng.normal(0, 0.5, (H, 1)).astype(np.float32)),
             _init("k16000", np.float32(16000)), _init("i0", np.int64(0)),
             _init("i1", np.int64(1)), _init("ax0", np.array([0], np.int64))]
    return _model(nodes, "vad",
                  [h.make_tensor_value_info("input", TP.FLOAT, ["batch", S]),
                   h.make_tensor_value_info("state", TP.FLOAT, [2, state_batch, H]),
                   h.make_tensor_value_info("sr", TP.INT64, [])],
                  [h.make_tensor_value_info("prob", TP.FLOAT, ["batch", 1]),
                   h.make_tensor_value_info("stateN", TP.FLOAT, [2, state_batch, H])], inits)


def _vad_data(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(n, S)).astype(np.float32),
            "state": rng.uniform(-1, 1, (2, n, H)).astype(np.float32),
            "sr": np.array(16000, np.int64)}


def _check_vad(model: bytes, data: bytes, cal: dict) -> None:
    """Within 3 steps of the widest int8 tensor on the way (the input projection; Tanh and
    Sigmoid have slopes <= 1)."""
    tol = 3 * _widest_step(model, cal, ("f0", "f1", "hs", "pre", "hid", "logit", "stateN"),
                           batch_axis={"state": 1})
    x = _vad_data(5, 9)
    got = Interpreter(data).run(x)
    want = dict(zip(("prob", "stateN"), _ref(model, x)))
    for k in want:
        assert np.max(np.abs(got[k] - want[k])) <= tol, k


def test_scalar_input_and_named_state_batch_from_npz(tmp_path):
    """The model names the state's batch dim: axis 1 is found, the scalar is fed whole."""
    model = _vad("batch")
    cal = _vad_data(20, 1)
    np.savez(tmp_path / "cal.npz", **cal)
    data, rep = quantize(model, calibration=tmp_path / "cal.npz", batch_size=8)
    assert rep.samples == 20
    assert rep.int8_ops["MatMul"] == 3 and not rep.warnings(), rep.summary()
    _check_vad(model, data, cal)


def test_scalar_input_and_unnamed_state_batch_cli(tmp_path, capsys):
    model = _vad(None)  # the state's batch dim has no name: axis 0 is assumed, and it is wrong
    (tmp_path / "vad.onnx").write_bytes(model)
    cal = _vad_data(20, 1)
    np.savez(tmp_path / "cal.npz", **cal)
    out = tmp_path / "vad.edgert"
    base = ["quantize", tmp_path / "vad.onnx", "-o", out, "--calibration", tmp_path / "cal.npz"]
    assert _cli(base) == 1
    err = capsys.readouterr().err
    assert "'state': 2 along axis 0" in err and "--batch-axis" in err
    assert _cli(base + ["--batch-axis", "state=1", "--batch-axis", "sr=none"]) == 0
    assert "calibration minmax on 20 samples" in capsys.readouterr().out
    _check_vad(model, out.read_bytes(), cal)
    for bad, match in ((["state"], "NAME=AXIS"), (["state=x"], "integer"),
                       (["nosuch=1"], "'nosuch', which is not a model input"),
                       (["state=3"], "out of range"), (["sr=0"], "scalar"),
                       (["state=1", "state=1"], "twice")):
        args = base + [a for b in bad for a in ("--batch-axis", b)]
        assert _cli(args) == 2, bad
        assert match in capsys.readouterr().err, bad
    assert _cli(["quantize", tmp_path / "vad.onnx", "-o", out, "--mode", "fp16",
                 "--batch-axis", "state=1"]) == 2
    capsys.readouterr()


def test_scalar_input_feed_dicts_and_one_sample_per_file(tmp_path):
    model = _vad(None)
    cal = _vad_data(20, 1)
    # Python: a list of feed dicts, one sample each (sr a 0-d array)
    feeds = [{"input": cal["input"][i:i + 1], "state": cal["state"][:, i:i + 1], "sr": cal["sr"]}
             for i in range(20)]
    data, rep = quantize(model, calibration=feeds)
    assert rep.samples == 20
    _check_vad(model, data, cal)
    # one sample per file, stored without its batch axis; a folder, and a list of paths
    (tmp_path / "samples").mkdir()
    for i in range(20):
        np.savez(tmp_path / "samples" / f"{i:02d}.npz", input=cal["input"][i],
                 state=cal["state"][:, i], sr=cal["sr"])
    files = sorted((tmp_path / "samples").iterdir())
    for source in (tmp_path / "samples", files):
        data2, rep2 = quantize(model, calibration=source, batch_axis={"state": 1})
        assert rep2.samples == 20 and data2 == data
    out = tmp_path / "q.edgert"
    assert _cli(["quantize", tmp_path / "m.onnx", "-o", out, "--batch-axis", "state=1",
                 *(a for f in files[:3] for a in ("--calibration", f))]) == 1  # no model file
    (tmp_path / "m.onnx").write_bytes(model)
    assert _cli(["quantize", tmp_path / "m.onnx", "-o", out, "--batch-axis", "state=1",
                 *(a for f in files[:3] for a in ("--calibration", f))]) == 0
    with pytest.raises(BatchAxisError, match="not a model input"):
        quantize(model, calibration=feeds, batch_axis={"nosuch": 1})
    with pytest.raises(BatchAxisError, match="dict"):
        quantize(model, calibration=feeds, batch_axis=["state"])
    with pytest.raises(BatchAxisError, match="integer"):
        quantize(model, calibration=feeds, batch_axis={"state": 1.5})
    with pytest.raises(EdgeRTError, match="no calibration|there is none"):
        quantize(model, mode="fp16", batch_axis={"state": 1})


# ----- 3. work inside control-flow bodies ---------------------------------------------------------
def _if_model() -> bytes:
    """ReduceMean(x) > 0 chooses a Conv+Relu branch or a 1x1-Conv branch; both end in a MatMul
    whose weight is a main-graph initializer (read from the enclosing scope)."""
    rng = np.random.default_rng(5)
    then_g = h.make_graph(
        [h.make_node("Conv", ["x", "w1", "b1"], ["t0"], pads=[1, 1, 1, 1]),
         h.make_node("Relu", ["t0"], ["t1"]),
         h.make_node("GlobalAveragePool", ["t1"], ["t2"]),
         h.make_node("Flatten", ["t2"], ["t3"]),
         h.make_node("MatMul", ["t3", "wm"], ["ty"])],
        "then", [], [h.make_tensor_value_info("ty", TP.FLOAT, None)],
        [_init("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
         _init("b1", rng.normal(0, 0.1, 8).astype(np.float32))])
    else_g = h.make_graph(
        [h.make_node("Conv", ["x", "w2"], ["e0"]),
         h.make_node("GlobalAveragePool", ["e0"], ["e1"]),
         h.make_node("Flatten", ["e1"], ["e2"]),
         h.make_node("MatMul", ["e2", "wm"], ["ey"])],
        "else", [], [h.make_tensor_value_info("ey", TP.FLOAT, None)],
        [_init("w2", rng.normal(0, 0.3, (8, 3, 1, 1)).astype(np.float32))])
    return _model([h.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
                   h.make_node("Greater", ["m", "zero"], ["c"]),
                   h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                  "ifmodel", [h.make_tensor_value_info("x", TP.FLOAT, [1, 3, 8, 8])],
                  [h.make_tensor_value_info("y", TP.FLOAT, [1, 4])],
                  [_init("zero", np.float32(0)),
                   _init("wm", rng.normal(0, 0.5, (8, 4)).astype(np.float32))])


def _if_data(n: int, seed: int, branches=(True, False)) -> np.ndarray:
    """``n`` samples whose mean's sign takes the given branches in turn."""
    x = np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)
    shift = np.array([0.5 if branches[i % len(branches)] else -0.5 for i in range(n)])
    return x + shift.astype(np.float32).reshape(-1, 1, 1, 1)


def test_if_bodies_are_calibrated_and_quantized():
    model = _if_model()
    cal = _if_data(8, 1)
    ranges = calibrate(load_graph(model), {"x": cal}, progress=False)
    then_r = ranges.bodies[(("If_2", "then_branch"),)]
    else_r = ranges.bodies[(("If_2", "else_branch"),)]
    assert {"t0", "t1", "ty"} <= set(then_r) and {"e0", "ey"} <= set(else_r)
    assert then_r["t1"][0] >= 0.0  # after the Relu
    data, rep = quantize(model, calibration={"x": cal})  # stacked: split to batch-1 feeds
    assert rep.body_int8_ops["If_2.then_branch"]["Conv"] == 1
    assert rep.body_int8_ops["If_2.else_branch"]["MatMul"] == 1  # wm: an outer initializer
    assert not any(f[0] == "If" or "/" in f[1] for f in rep.float_ops), rep.summary()
    assert "inside If_2.then_branch" in rep.summary()
    # strict: only the float ops outside the bodies (the branch condition) are refused
    with pytest.raises(StrictQuantizationError) as exc:
        quantize(model, calibration={"x": cal}, strict=True)
    assert [f[0] for f in exc.value.report.float_ops] == ["ReduceMean", "Greater"]
    x = _if_data(6, 7)
    interp = Interpreter(data)
    sess = ort.InferenceSession(model)
    step = _step(np.concatenate([sess.run(None, {"x": c[None]})[0] for c in cal]))
    for xi in x:
        want = sess.run(None, {"x": xi[None]})[0]
        got = interp.run({"x": xi[None]})["y"]
        assert np.max(np.abs(got - want)) <= 4 * step


def test_if_branch_never_taken_is_reported_and_strict_fails(tmp_path, capsys):
    model = _if_model()
    cal = {"x": _if_data(4, 1, branches=(True,))}  # the else branch never runs
    data, rep = quantize(model, calibration=cal)
    (entry,) = [f for f in rep.float_ops if f[0] == "If"]
    assert "else_branch stays float: it never ran during calibration" in entry[2]
    assert ("Conv", "If_2.else_branch/Conv_0") in [f[:2] for f in rep.float_ops]
    with pytest.raises(StrictQuantizationError, match="never ran") as exc:
        quantize(model, calibration=cal, strict=True)
    assert isinstance(exc.value.report, QuantizationReport)
    # the float else branch still runs
    x = _if_data(1, 3, branches=(False,))
    want = _ref(model, {"x": x})[0]
    np.testing.assert_allclose(Interpreter(data).run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)
    # the QDQ export leaves bodies float, and says so
    _, rep_q = quantize(model, calibration=cal, format="onnx")
    (entry,) = [f for f in rep_q.float_ops if f[0] == "If"]
    assert "QDQ export" in entry[2]


def _loop_model() -> bytes:
    """Three iterations of h = Relu(h @ W + b) on a carried state, b an outer value."""
    rng = np.random.default_rng(8)
    scale = 0.2
    body = h.make_graph(
        [h.make_node("MatMul", ["h_in", "w"], ["hw"]),
         h.make_node("Add", ["hw", "b"], ["hb"]),
         h.make_node("Relu", ["hb"], ["h_out"]),
         h.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [h.make_tensor_value_info("i", TP.INT64, []),
                 h.make_tensor_value_info("cond_in", TP.BOOL, []),
                 h.make_tensor_value_info("h_in", TP.FLOAT, None)],
        [h.make_tensor_value_info("cond_out", TP.BOOL, []),
         h.make_tensor_value_info("h_out", TP.FLOAT, None)],
        [_init("w", rng.normal(0, scale, (D, D)).astype(np.float32))])
    return _model([h.make_node("MatMul", ["x", "w0"], ["b"]),
                   h.make_node("Loop", ["trip", "", "x"], ["hN"], body=body),
                   h.make_node("MatMul", ["hN", "w0"], ["y"])],
                  "loop", [h.make_tensor_value_info("x", TP.FLOAT, ["batch", D])],
                  [h.make_tensor_value_info("y", TP.FLOAT, ["batch", D])],
                  [_init("trip", np.int64(3)),
                   _init("w0", rng.normal(0, scale, (D, D)).astype(np.float32))])


def test_loop_body_is_calibrated_and_quantized():
    model = _loop_model()
    cal = {"x": np.random.default_rng(1).normal(size=(32, D)).astype(np.float32)}
    data, rep = quantize(model, calibration=cal, strict=True)
    assert rep.body_int8_ops["Loop_1.body"] == {"MatMul": 1, "Add": 1}, rep.summary()
    x = np.random.default_rng(2).normal(size=(5, D)).astype(np.float32)
    want = _ref(model, {"x": x})[0]
    got = Interpreter(data).run({"x": x})["y"]
    # each iteration rounds the carried state again (edgert equals a NumPy fake-quantized run
    # of the same ranges bit for bit here; the tolerance is what int8 costs)
    assert np.max(np.abs(got - want)) <= 4 * _widest_step(model, cal)


def test_nothing_quantized_warns_and_strict_fails(tmp_path, capsys):
    model = _model([h.make_node("LRN", ["x"], ["y"], size=3)], "lrn",
                   [h.make_tensor_value_info("x", TP.FLOAT, [1, 3, 4, 4])],
                   [h.make_tensor_value_info("y", TP.FLOAT, [1, 3, 4, 4])], [])
    cal = {"x": np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)}
    _, rep = quantize(model, calibration=cal)
    assert "WARNING: nothing was quantized" in rep.summary()
    with pytest.raises(StrictQuantizationError, match="nothing was quantized"):
        quantize(model, calibration=cal, strict=True)
    (tmp_path / "lrn.onnx").write_bytes(model)
    np.savez(tmp_path / "cal.npz", **cal)
    out = tmp_path / "lrn.edgert"
    args = ["quantize", tmp_path / "lrn.onnx", "-o", out, "--calibration", tmp_path / "cal.npz"]
    assert _cli(args) == 0 and "WARNING: nothing was quantized" in capsys.readouterr().out
    out.unlink()
    assert _cli(args + ["--strict"]) == 1 and not out.exists()
    assert "strict quantization failed" in capsys.readouterr().err
    with pytest.raises(StrictQuantizationError, match="nothing was quantized"):
        quantize(model, mode="fp16", strict=True)  # no weight to store smaller


# ----- 4. a static batch-1 model given stacked samples -------------------------------------------
def _static_conv(batch: int = 1) -> bytes:
    rng = np.random.default_rng(4)
    return _model([h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                   h.make_node("Relu", ["c"], ["r"]),
                   h.make_node("GlobalAveragePool", ["r"], ["y"])],
                  "static", [h.make_tensor_value_info("x", TP.FLOAT, [batch, 3, 8, 8])],
                  [h.make_tensor_value_info("y", TP.FLOAT, [batch, 4, 1, 1])],
                  [_init("w", rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)),
                   _init("b", rng.normal(0, 0.1, 4).astype(np.float32))])


def test_static_batch_model_splits_stacked_samples(tmp_path, capsys):
    model = _static_conv(1)
    (tmp_path / "m.onnx").write_bytes(model)
    x = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    out = tmp_path / "m.edgert"
    assert _cli(["quantize", tmp_path / "m.onnx", "-o", out, "--calibration",
                 tmp_path / "cal.npz", "--strict"]) == 0
    assert "on 8 samples" in capsys.readouterr().out
    sess = ort.InferenceSession(model)
    refs = np.concatenate([sess.run(None, {"x": xi[None]})[0] for xi in x])
    got = np.concatenate([Interpreter(out).run({"x": xi[None]})["y"] for xi in x])
    assert np.max(np.abs(got - refs)) <= 2 * _widest_step(model, {"x": x})
    # one sample without its batch axis; and ranges equal to the batch-1 feeds'
    _, rep = quantize(model, calibration={"x": x[0]})
    assert rep.samples == 1
    assert calibrate(load_graph(model), {"x": x}, progress=False) == \
        calibrate(load_graph(model), [{"x": xi[None]} for xi in x], progress=False)


def test_static_batch_of_two_drops_the_leftover():
    model = _static_conv(2)
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    _, rep = quantize(model, calibration={"x": x})
    assert rep.samples == 4 and rep.dropped == 1
    assert "1 calibration sample(s) left over" in rep.summary()
    with pytest.raises(InputError, match="exactly 2 samples"):
        quantize(model, calibration={"x": x[:1]})


def test_dynamic_batch_model_is_fed_in_batches():
    model = _vad("batch")
    graph = load_graph(model)
    seen = []
    from edgert.quantization.calibrate import iter_feeds

    for feed, n in iter_feeds(graph, _vad_data(10, 0), batch_size=4):
        seen.append((n, feed["input"].shape, feed["state"].shape, feed["sr"].shape))
    assert seen == [(4, (4, S), (2, 4, H), ()), (4, (4, S), (2, 4, H), ()),
                    (2, (2, S), (2, 2, H), ())]
