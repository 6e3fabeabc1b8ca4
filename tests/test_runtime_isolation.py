"""`import edgert.runtime` must stay light: no onnx, protobuf, training code or compilation."""

import subprocess
import sys


def _modules_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_runtime_import_pulls_no_onnx_protobuf_or_training():
    mods = _modules_after("import edgert.runtime")
    banned = [m for m in mods if m.split(".")[0] in {"onnx", "google", "onnxruntime", "torch"}
              or m.startswith(("edgert.train", "edgert.importer", "edgert.converter"))]
    assert banned == []
    # Numba is imported lazily, when the first Interpreter is created.
    assert "numba" not in mods


def test_edgert_package_import_is_light():
    mods = _modules_after("import edgert")
    assert not any(m.split(".")[0] in {"onnx", "numba", "google"} for m in mods)
