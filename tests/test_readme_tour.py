"""The README's command-line tour, run as written: every line of a README code block that starts
with ``edgert `` runs in a fresh process on the bundled digits models (the README's placeholder
files mapped onto them below), and must exit 0 without a traceback or an ``edgert: error:``.

A new example whose files are not in ``FILES`` fails here until it is mapped (or, for a model
that is not bundled, listed in ``SKIP``). The failure cases a new user met are in
``tests/test_cli.py`` (one ``edgert: error:`` line, exit status 1 or 2, no traceback); the few it
does not cover are at the end of this file, in fresh processes too.
"""

import concurrent.futures
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DIGITS = ROOT / "models" / "digits_cnn.onnx"  # input 'input' [batch, 1, 8, 8]
SAMPLE = ROOT / "models" / "digits_sample.npy"  # (8, 1, 8, 8) float32

# README lines that need a model that is not bundled (matched as substrings).
SKIP = ("vad.onnx",)
# Commands that do not end by themselves (a server); their own tests start and stop them.
LONG_RUNNING = ("serve",)


def readme_commands() -> list[str]:
    """Each ``edgert ...`` line of the README's code blocks, comments stripped."""
    lines, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.startswith("edgert "):
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The README's placeholder names -> bundled models and data (one converted model shared
    by every example)."""
    from edgert.cli import main

    d = tmp_path_factory.mktemp("tour")
    model = d / "model.edgert"
    assert main(["convert", str(DIGITS), "-o", str(model)]) == 0
    x = np.load(SAMPLE)
    np.savez(d / "data.npz", input=x[:2], x=x[2:4])
    np.savez(d / "calib.npz", input=np.load(ROOT / "models" / "digits_test.npz")["x"][:32])
    return {
        "model.onnx": DIGITS, "in.onnx": DIGITS, "model.edgert": model, "x.npy": SAMPLE,
        "data.npz": d / "data.npz", "calib.npz": d / "calib.npz",
        # outputs: written into the temporary folder
        "out.onnx": d / "out.onnx", "out.npz": d / "out.npz",
        "model_int8.edgert": d / "model_int8.edgert", "model_qdq.onnx": d / "model_qdq.onnx",
        "model_fp16.edgert": d / "model_fp16.edgert",
        # the README's ImageNet-sized shapes, at the digits model's size
        "1x3x224x224": "1x1x8x8", "4x3x224x224": "4x1x8x8",
    }


_FILE_LIKE = re.compile(r"[\w.-]+\.(onnx|edgert|npz|npy)\b|\d+x\d+x\d+x\d+")


def _substitute(args: list[str], files: dict) -> list[str]:
    out = []
    for a in args:
        left = [m.group(0) for m in _FILE_LIKE.finditer(a) if m.group(0) not in files]
        assert not left, f"map {left} onto a bundled file in FILES (tests/test_readme_tour.py)"
        for name in sorted(files, key=len, reverse=True):  # (longest first: model_int8.edgert)
            a = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w.])", str(files[name]), a)
        out.append(a)
    return out


def _edgert(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgert", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_readme_has_a_command_line_tour():
    commands = readme_commands()
    assert len(commands) >= 15, commands
    assert {shlex.split(c)[1] for c in commands} >= {"convert", "optimize", "inspect", "run",
                                                     "bench", "quantize"}


def test_every_readme_command_runs(files, tmp_path):
    commands = [c for c in readme_commands() if not any(s in c for s in SKIP)
                and shlex.split(c)[1] not in LONG_RUNNING]
    argvs = [_substitute(shlex.split(c, comments=True)[1:], files) for c in commands]
    # two at a time (the suite's machines have two cores; each process pays its own start-up);
    # no example reads what another writes
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: _edgert(a, tmp_path), argvs))
    failed = []
    for command, r in zip(commands, results):
        if r.returncode != 0 or "Traceback" in r.stderr or "edgert: error:" in r.stderr:
            failed.append(f"{command}\n  -> exit {r.returncode}: {r.stderr.strip()[-800:]}")
    assert not failed, "\n".join(failed)
    assert (pathlib.Path(files["out.onnx"]).exists()
            and pathlib.Path(files["model_int8.edgert"]).exists())


def _one_error_line(r, code: int, message: str) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgert: error: "), r.stderr
    assert message in lines[0], lines[0]


# The failure cases of the issue that tests/test_cli.py does not already run in a process of
# its own (convert -o to a missing/existing folder, run -o to a missing folder, optimize -o to
# a missing folder, quantize -o to a folder, a text file as --input, an .edgert file given to
# convert/optimize/quantize, --calibration with --mode fp16, the runtime-only install, and
# `edgert run ... | head` are there).
@pytest.mark.parametrize("args, code, message", [
    (["optimize", "{onnx}", "-o", "{folder}"], 1, "is a folder"),
    (["quantize", "{onnx}", "-o", "/nonexistent/dir/q.edgert", "--mode", "fp16"], 1,
     "does not exist"),
    (["run", "{model}", "--input", "input={sample}", "-o", "{folder}"], 1, "is a folder"),
    (["run", "{model}", "--random", "--shape", "input=2xq"], 2, "bad shape '2xq'"),
    (["bench", "{model}", "--shape", "input=-1x1x8x8"], 2, "bad shape"),
    (["convert", "{folder}"], 1, "folder"),
])
def test_more_failures_are_one_error_line(args, code, message, files, tmp_path):
    args = [a.format(onnx=DIGITS, model=files["model.edgert"], sample=SAMPLE, folder=tmp_path)
            for a in args]
    _one_error_line(_edgert(args, tmp_path), code, message)
