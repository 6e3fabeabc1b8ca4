"""The `edgert` command line: each command on the bundled model, and bad arguments."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from edgert.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits_cnn.onnx"
SAMPLE = ROOT / "models" / "digits_sample.npy"


@pytest.fixture(scope="module")
def digits_edgert(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits.edgert"
    assert main(["convert", str(DIGITS), "-o", str(out)]) == 0
    return out


def test_convert_and_run_match_onnxruntime(digits_edgert, tmp_path, capsys):
    out_npz = tmp_path / "out.npz"
    assert main(["run", str(digits_edgert), "--input", f"input={SAMPLE}", "-o", str(out_npz)]) == 0
    got = np.load(out_npz)["probabilities"]
    sess = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"input": np.load(SAMPLE)})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    text = capsys.readouterr().out
    assert "probabilities: float32 (8, 10)" in text
    assert f"argmax per row: {np.argmax(want, axis=1).tolist()}" in text


def test_run_accepts_onnx_and_npz(tmp_path, capsys):
    npz = tmp_path / "in.npz"
    np.savez(npz, input=np.load(SAMPLE)[:2])
    assert main(["run", str(DIGITS), "--input", str(npz)]) == 0
    assert "(2, 10)" in capsys.readouterr().out


def test_inspect_json(digits_edgert, capsys):
    assert main(["inspect", str(digits_edgert), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["name"] == "input"
    assert info["inputs"][0]["shape"][1:] == [1, 8, 8]
    assert info["file_bytes"] == digits_edgert.stat().st_size
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(DIGITS))
    # The optimizer may fold constants, so the count is at most the ONNX initializers' total.
    onnx_params = sum(numpy_helper.to_array(t).size for t in m.graph.initializer)
    assert 0 < info["parameters"] <= onnx_params
    assert sum(info["op_histogram"].values()) == info["operators"]


def test_inspect_onnx_text(capsys):
    assert main(["inspect", str(DIGITS)]) == 0
    out = capsys.readouterr().out
    assert "onnx model" in out and "op histogram:" in out


def test_bench_json(digits_edgert, capsys):
    args = ["bench", str(digits_edgert), "--runs", "5", "--warmup", "1", "--shape", "input=4x1x8x8",
            "--threads", "1", "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["runs"] == 5 and res["input_shapes"] == {"input": [4, 1, 8, 8]}
    lat = res["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["max"]
    assert res["arena_bytes"] > 0 and res["peak_rss_bytes"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "missing.edgert"], "no such file: missing.edgert"),
        (["run", "{model}"], "no data for input(s) ['input']"),
        (["run", "{model}", "--random"], "has dynamic dimensions"),
        (["run", "{model}", "--input", "nope={sample}"], "unknown input name(s) ['nope']"),
        (["run", "{model}", "--random", "--shape", "input=2x1x9x8"], "got shape (2, 1, 9, 8)"),
        (["run", "{model}", "--input", "input=missing.npy"], "no such input file"),
        (["inspect", "{garbage}"], "identifier"),
        (["bench", "{model}", "--runs", "0"], "--runs must be at least 1"),
    ],
)
def test_errors_are_one_clear_line(args, message, digits_edgert, tmp_path, capsys):
    garbage = tmp_path / "garbage.edgert"
    garbage.write_bytes(b"not a model at all, just some bytes" * 3)
    args = [a.format(model=digits_edgert, sample=SAMPLE, garbage=garbage) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgert: error: ") and message in err


def test_bad_arguments_exit_2():
    r = subprocess.run([sys.executable, "-m", "edgert", "run", "x.edgert", "--threads", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "positive integer" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edgert", "frobnicate"],
                       capture_output=True, text=True)
    assert r.returncode == 2


# ----- the failures a new user met: one `edgert: error:` line, exit 1, no traceback -----------
def _edgert(args, stdin_modules_blocked=False, **kwargs):
    """``edgert ARGS`` in a fresh process; with ``stdin_modules_blocked`` as on a runtime-only
    install (onnx cannot be imported)."""
    code = "import sys; "
    if stdin_modules_blocked:
        code += "sys.modules['onnx'] = None; "
    code += "from edgert.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, **kwargs)


def _one_error_line(r, message):
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgert: error: "), r.stderr
    assert message in lines[0], lines[0]


@pytest.mark.parametrize("args, message", [
    (["convert", DIGITS, "-o", "/nonexistent/dir/x.edgert"], "does not exist"),
    (["convert", DIGITS, "-o", "{folder}"], "is a folder"),
    (["run", DIGITS, "--input", f"input={SAMPLE}", "-o", "/nonexistent/out.npz"],
     "does not exist"),
    (["optimize", DIGITS, "-o", "/nonexistent/x.onnx"], "does not exist"),
    (["quantize", DIGITS, "-o", "{folder}", "--mode", "fp16"], "is a folder"),
    (["run", DIGITS, "--input", "input={text}"], "is not a .npy or .npz file"),
])
def test_file_problems_are_one_error_line(args, message, tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("1 2 3\n")
    args = [str(a).format(folder=tmp_path, text=text) for a in args]
    _one_error_line(_edgert(args), message)


@pytest.mark.parametrize("command", [["convert", DIGITS], ["run", DIGITS, "--random"],
                                     ["inspect", DIGITS], ["quantize", DIGITS, "-o", "q.edgert"],
                                     ["optimize", DIGITS, "-o", "o.onnx"]])
def test_runtime_only_install_names_the_convert_extra(command, tmp_path):
    r = _edgert(command, stdin_modules_blocked=True, cwd=tmp_path)
    _one_error_line(r, "needs the convert extra (onnx is not installed)")


def test_a_closed_pipe_ends_quietly(digits_edgert):
    import os

    # unbuffered: the first line arrives at once, the last one (after 3000 timed runs) after
    # the pipe is closed
    p = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(digits_edgert), "--input",
                          f"input={SAMPLE}", "--time", "3000"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    p.stdout.readline()  # `| head -1`
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 141 and "Traceback" not in err and "Exception ignored" not in err, err


def test_bench_defaults_dynamic_dims_to_one(digits_edgert, capsys):
    """The README's `edgert bench model.edgert --threads 2 --runs 100` on a model with a
    dynamic batch: batch 1, said on stderr (stdout stays the report / the JSON)."""
    assert main(["bench", str(digits_edgert), "--threads", "1", "--runs", "3", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["input_shapes"] == {"input": [1, 1, 8, 8]}
    assert "dynamic dimensions" in out.err and "using 1x1x8x8" in out.err
    assert main(["run", str(digits_edgert), "--random"]) == 1  # run still asks for a shape
    err = capsys.readouterr().err
    assert "dynamic dimensions (-1, 1, 8, 8) (batch): give its shape" in err, err


def test_malformed_arguments_exit_2(digits_edgert, capsys):
    for args, message in ((["run", str(digits_edgert), "--random", "--shape", "input=2xq"],
                           "bad shape '2xq'"),
                          (["run", str(digits_edgert), "--input", f"={SAMPLE}"],
                           "expected NAME=VALUE")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("edgert: error: ") and message in err, err


def test_an_edgert_file_where_onnx_is_read_and_calibration_that_would_be_ignored(
        digits_edgert, tmp_path):
    for command in (["convert", digits_edgert], ["optimize", digits_edgert, "-o", "x.onnx"],
                    ["quantize", digits_edgert, "-o", "x.edgert", "--mode", "fp16"]):
        _one_error_line(_edgert(command, cwd=tmp_path), "is an .edgert model already")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.zeros((2, 1, 8, 8), np.float32))
    _one_error_line(_edgert(["quantize", DIGITS, "-o", tmp_path / "q.edgert", "--mode", "fp16",
                             "--calibration", calib]), "uses no calibration data")


def test_run_prints_and_saves_sequences_of_maps(tmp_path, capsys):
    """A classifier ending in ZipMap (skl2onnx's default): each row's probabilities as a map,
    printed and saved as plain arrays (``name[i].keys`` / ``name[i].values``)."""
    from onnx import TensorProto, helper

    node = helper.make_node("LinearClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml",
                            coefficients=[1.0, -1.0, 0.5, 2.0, 0.0, -0.5],
                            intercepts=[0.0, 0.1, -0.1], classlabels_strings=["a", "b", "c"],
                            post_transform="SOFTMAX")
    zipmap = helper.make_node("ZipMap", ["scores"], ["probs"], domain="ai.onnx.ml",
                              classlabels_strings=["a", "b", "c"])
    probs_type = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        [node, zipmap], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, [None]),
         helper.make_value_info("probs", probs_type)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 1)])
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.array([[0.5, 1.0], [-1.0, 2.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(path), "--input", f"X={tmp_path / 'x.npy'}", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "probs: sequence of 2 value(s)" in text and "map of 3 key(s)" in text
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, probs = sess.run(None, {"X": x})
    saved = np.load(out)  # (no pickle needed)
    np.testing.assert_array_equal(saved["label"], labels.astype(str))
    for i, row in enumerate(probs):
        assert saved[f"probs[{i}].keys"].tolist() == list(row)
        np.testing.assert_allclose(saved[f"probs[{i}].values"], list(row.values()), rtol=1e-6)
    # --json: a string tensor's values, a sequence's items, a map's keys and values
    assert main(["run", str(path), "--input", f"X={tmp_path / 'x.npy'}", "--json"]) == 0
    label, seq = json.loads(capsys.readouterr().out)["outputs"]
    assert label == {"name": "label", "dtype": "string", "shape": [2],
                     "values": labels.tolist()}
    assert seq["kind"] == "sequence" and seq["length"] == 2
    assert seq["items"][1]["keys"] == list(probs[1])
    np.testing.assert_allclose(seq["items"][1]["values"], list(probs[1].values()), rtol=1e-6)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["outputs"] == [{"name": "label", "dtype": "string", "shape": ["?"]},
                               {"name": "probs", "kind": "sequence"}]
    assert info["op_histogram"] == {"ai.onnx.ml.LinearClassifier": 1, "ai.onnx.ml.ZipMap": 1}


# ----- --json on run, convert and quantize: one JSON object, nothing else on stdout ----------
def test_run_json(digits_edgert, capsys):
    assert main(["run", str(DIGITS), "--input", f"input={SAMPLE}", "--json", "--time", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "onnx" and res["convert_ms"] > 0 and res["first_run_ms"] > 0
    (out,) = res["outputs"]
    assert out["name"] == "probabilities" and out["dtype"] == "float32"
    assert out["shape"] == [8, 10] and len(out["values"]) == 8  # small: the values too
    assert res["steady_state"]["runs"] == 2
    assert main(["run", str(digits_edgert), "--random", "--shape", "input=20x1x8x8",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "convert_ms" not in res and res["format"] == "edgert"
    assert res["outputs"][0]["shape"] == [20, 10] and "values" not in res["outputs"][0]


def test_run_reports_conversion_time_separately(capsys):
    assert main(["run", str(DIGITS), "--input", f"input={SAMPLE}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("convert (in memory) ") and lines[-1].startswith("load ")


def test_convert_json(tmp_path, capsys):
    out = tmp_path / "d.edgert"
    assert main(["convert", str(DIGITS), "-o", str(out), "--json", "--verbose"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)  # the --verbose report went to stderr
    assert res["output"] == str(out) and res["edgert_bytes"] == out.stat().st_size
    assert res["onnx_bytes"] == DIGITS.stat().st_size and res["onnx_nodes"] > 0
    assert res["convert_ms"] > 0 and sum(res["op_histogram"].values()) == res["operators"]


def test_quantize_json(tmp_path, capsys):
    out = tmp_path / "q.edgert"
    assert main(["quantize", str(DIGITS), "-o", str(out), "--mode", "int8", "--calibration",
                 str(SAMPLE), "--report", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["output"] == str(out) and res["mode"] == "int8" and res["num_int8_ops"] > 0
    assert res["size_bytes"] > 0 and res["samples"] == 8 and res["float_ops"] == []
    assert all(isinstance(r["db"], (float, str)) for r in res["sqnr"]) and res["sqnr"]


# ----- inspect on an .onnx file: the file as written, unsupported ops listed ------------------
def _unsupported_model(path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("FooBar", ["y"], ["z"], domain="com.example"),
             helper.make_node("Frobnicate", ["z"], ["w"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, producer_name="handmade", opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path.write_bytes(model.SerializeToString())
    return path


def test_inspect_onnx_shows_the_file_as_written(capsys):
    assert main(["inspect", str(DIGITS), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "onnx" and info["nodes"] == 13 and info["opsets"] == {"ai.onnx": 17}
    assert info["op_histogram"]["Relu"] == 4  # not fused away: the ONNX graph itself
    assert info["producer"].startswith("pytorch") and info["supported"]
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert main(["inspect", str(DIGITS), "--json", "--converted"]) == 0
    converted = json.loads(capsys.readouterr().out)
    assert "Relu" not in converted["op_histogram"] and "operators" in converted


def test_inspect_onnx_with_unsupported_ops(tmp_path, capsys):
    path = _unsupported_model(tmp_path / "custom.onnx")
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["op_histogram"] == {"Relu": 1, "com.example.FooBar": 1, "Frobnicate": 1}
    assert info["opsets"] == {"ai.onnx": 17, "com.example": 1} and not info["supported"]
    assert sorted(d["op_type"] for d in info["unsupported_ops"]) == ["FooBar", "Frobnicate"]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "com.example.FooBar           1  (unsupported)" in out
    assert "unsupported by edgert (2):" in out and "from handmade" in out
    # --converted: the conversion's error, one line, exit 1
    r = _edgert(["inspect", path, "--converted"])
    assert r.returncode == 1 and r.stderr.startswith("edgert: error: ")
    assert "Traceback" not in r.stderr


def test_inspect_garbage_onnx_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe definitely not protobuf" * 4)
    _one_error_line(_edgert(["inspect", bad]), "cannot read")


# ----- --input NAME=FILE.npz:KEY: one array of an .npz file mapped to an input ----------------
def test_input_npz_key_maps_to_an_input(tmp_path, digits_edgert, capsys):
    npz = tmp_path / "data.npz"
    np.savez(npz, x=np.load(SAMPLE)[:3], other=np.zeros(2))
    for arg in (f"input={npz}:x", f"{npz}:x"):  # one input: the name may be left out
        assert main(["run", str(digits_edgert), "--input", arg, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["outputs"][0]["shape"] == [3, 10]


@pytest.mark.parametrize("arg, message", [
    ("input={npz}:nope", "has no array named 'nope' (its keys are ['x', 'other'])"),
    ("input={npz}", "has no array named 'input' (its keys are ['x', 'other']); map one"),
    ("input={npy}:x", "is a .npy file"),
    ("input={npz}:", "write FILE.npz:KEY"),
])
def test_bad_npz_key_is_a_usage_error(arg, message, tmp_path, digits_edgert):
    npz, npy = tmp_path / "data.npz", tmp_path / "x.npy"
    np.savez(npz, x=np.load(SAMPLE)[:3], other=np.zeros(2))
    np.save(npy, np.load(SAMPLE))
    r = _edgert(["run", digits_edgert, "--input", arg.format(npz=npz, npy=npy)])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgert: error: ") and message in lines[0]


# ----- bench: Numba's threading layer, a warning when it is not OpenMP ------------------------
def test_bench_reports_the_threading_layer(digits_edgert, capsys, monkeypatch):
    import numba

    args = ["bench", str(digits_edgert), "--runs", "2", "--warmup", "0", "--shape",
            "input=2x1x8x8", "--threads", "1"]
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["threading_layer"] == numba.threading_layer()
    import edgert.cli

    for layer in ("workqueue", "tbb"):
        monkeypatch.setattr(edgert.cli, "_threading_layer", lambda layer=layer: layer)
        assert main([*args, "--json"]) == 0
        out = capsys.readouterr()
        assert json.loads(out.out)["threading_layer"] == layer
        (warning,) = out.err.splitlines()
        assert warning.startswith("edgert: warning: ") and f"'{layer}'" in warning
        assert "libgomp1" in warning
    assert main(args) == 0
    out = capsys.readouterr()
    assert "threading layer: tbb" in out.out and "edgert: warning:" in out.err


@pytest.mark.parametrize("args, message, code", [
    (["run", "{model}", "--json"], "no data for input(s) ['input']", 1),
    (["run", "{model}", "--json", "--random", "--shape", "input=2xq"], "bad shape", 2),
    (["convert", "missing.onnx", "--json"], "no such file: missing.onnx", 1),
    (["quantize", DIGITS, "-o", "{tmp}/q.edgert", "--mode", "fp16", "--calibration", SAMPLE,
      "--json"], "uses no calibration data", 1),
    (["quantize", DIGITS, "-o", "{tmp}/q.edgert", "--max-samples", "0", "--json"],
     "--max-samples must be a positive integer", 2),
    (["inspect", "missing.onnx", "--json"], "no such file: missing.onnx", 1),
])
def test_json_error_paths_are_one_line_and_no_stdout(args, message, code, digits_edgert,
                                                     tmp_path):
    r = _edgert([str(a).format(model=digits_edgert, tmp=tmp_path) for a in args], cwd=tmp_path)
    assert r.returncode == code and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgert: error: ") and message in lines[0]


def test_inspect_an_edgert_file_named_onnx(digits_edgert, tmp_path, capsys):
    renamed = tmp_path / "model.onnx"
    renamed.write_bytes(digits_edgert.read_bytes())
    assert main(["inspect", str(renamed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "edgert"


def test_run_json_writes_nan_and_inf_as_strings(tmp_path, capsys):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    path = tmp_path / "log.onnx"
    path.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    np.save(tmp_path / "x.npy", np.array([-1.0, 0.0, 1.0], np.float32))
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    assert json.loads(out)["outputs"][0]["values"] == ["nan", "-inf", 0.0]


def _custom_domain_model(path):
    """Conv -> Relu -> my.ops.MyOp -> my.ops.Relu (a custom op named like a standard one) -> Mul,
    and a custom op on a constant (which constant folding must not run)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(4, np.float32), "c1"),
             numpy_helper.from_array(np.float32(2), "two")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MyOp", ["r", "c1"], ["m"], domain="my.ops", alpha=0.5, mode="fast"),
        helper.make_node("Relu", ["m"], ["m2"], domain="my.ops"),
        helper.make_node("Mul", ["m2", "two"], ["y"]),
        helper.make_node("MyConst", ["two"], ["k"], domain="my.ops"),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [])], inits,
        value_info=[helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 4, 8, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("my.ops", 3)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return m


def test_optimize_passes_custom_domain_nodes_through_and_convert_refuses_them(tmp_path, capsys):
    import onnx

    src = tmp_path / "custom.onnx"
    before = _custom_domain_model(src)
    out = tmp_path / "opt.onnx"
    for extra in ([], ["--allow-fused"]):
        assert main(["optimize", str(src), "-o", str(out), *extra]) == 0
        m = onnx.load(str(out))
        assert {(o.domain, o.version) for o in m.opset_import} >= {("my.ops", 3)}
        custom = [n for n in m.graph.node if n.domain == "my.ops"]
        want = [n for n in before.graph.node if n.domain == "my.ops"]
        assert [(n.op_type, list(n.input), list(n.output), list(n.attribute)) for n in custom] \
            == [(n.op_type, list(n.input), list(n.output), list(n.attribute)) for n in want]
        assert {t.name for t in m.graph.initializer} >= {"c1", "two"}  # their inputs stay
        assert "m" in {v.name for v in m.graph.value_info}  # the custom output's type is kept
    capsys.readouterr()
    assert main(["convert", str(src), "-o", str(tmp_path / "x.edgert")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgert: error: ") and err.count("edgert: error:") == 1
    assert "custom domain 'my.ops'" in err and "Traceback" not in err


def test_warmup_at_the_shapes_the_application_runs(digits_edgert, capsys):
    assert main(["warmup", str(digits_edgert), "--shape", "input=2x1x8x8", "--threads", "1"]) == 0
    assert f"warmed {digits_edgert}" in capsys.readouterr().out
    for args, code, message in (
            (["--shape", "nope=2x1x8x8"], 1, "no model has an input named 'nope'; their inputs: "
                                             "input"),
            (["--shape", "input=2xq"], 2, "bad shape '2xq'"),
            (["--shape", "2x1x8x8"], 2, "expected NAME=DIMS")):
        assert main(["warmup", str(digits_edgert), *args]) == code
        err = capsys.readouterr().err
        assert err.startswith("edgert: error: ") and message in err, err
    assert main(["warmup", "--shape", "input=2x1x8x8"]) == 2
    assert "--shape needs models" in capsys.readouterr().err
