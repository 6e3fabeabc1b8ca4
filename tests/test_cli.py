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
