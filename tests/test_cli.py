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
        (["run", "{model}", "--random", "--shape", "input=2xq"], "bad shape '2xq'"),
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
