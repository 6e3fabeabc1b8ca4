"""Start-up mechanisms: lazily imported kernel families, the light format import, and the Numba
cache that loads compiled kernels without Numba's compiler set-up (edgert/runtime/_jit.py)."""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from edgert.runtime.kernels.cpu import FAMILY_OPS
from edgert.runtime.registry import Kernel, KernelRegistry

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ----- lazy kernel families -----------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILY_OPS))
def test_family_table_names_exactly_what_the_module_registers(family):
    reg = KernelRegistry("cpu")
    importlib.import_module(f"edgert.runtime.kernels.cpu.{family}").register(reg)
    registered = set(reg.op_types())
    declared = set(FAMILY_OPS[family])
    assert registered == declared, (
        f"update FAMILY_OPS[{family!r}] in edgert/runtime/kernels/cpu/__init__.py: "
        f"missing {sorted(registered - declared)}, not registered {sorted(declared - registered)}"
    )


def test_lazy_registry_has_every_op_and_no_overlap():
    # Registering every family into one registry raises on any overlapping registration.
    eager = KernelRegistry("cpu")
    for family in FAMILY_OPS:
        importlib.import_module(f"edgert.runtime.kernels.cpu.{family}").register(eager)
    from edgert.runtime.kernels.cpu import registry

    lazy = registry()
    assert lazy.op_types() == eager.op_types()
    for op in eager.op_types():
        domain, _, op_type = op.rpartition(".")
        for version in (1, 13, 22):
            # (some families build wrapper classes in register(): compare by name)
            got, want = (r.lookup(op_type, domain, version) for r in (lazy, eager))
            assert (got is None) == (want is None), (op, version)
            if want is not None:
                assert (got.__module__, got.__qualname__) == (want.__module__, want.__qualname__)


def test_loading_a_model_imports_only_its_kernel_families():
    out = _run("""
        import sys
        from edgert.runtime.kernels.cpu import registry
        reg = registry()
        assert reg.lookup("Relu") is not None and reg.lookup("Softmax") is not None
        print(" ".join(m.rsplit(".", 1)[1] for m in sys.modules
                       if m.startswith("edgert.runtime.kernels.cpu.")))
    """)
    loaded = set(out.split())
    assert {"elementwise", "normalization"} <= loaded
    assert not loaded & {"sequence", "spectral", "recurrent", "sampling", "control_flow", "conv"}


class _K1(Kernel):
    pass


class _K2(Kernel):
    pass


def test_undeclared_op_is_still_found():
    calls = []

    def register_a(reg):
        calls.append("a")
        reg.add("A", _K1)

    def register_b(reg):
        calls.append("b")
        reg.add("B", _K2)
        reg.add("Hidden", _K2, domain="x.y")  # left out of the declaration below

    reg = KernelRegistry("cpu")
    reg.add_family("a", ["A"], register_a)
    reg.add_family("b", ["B"], register_b)
    assert reg.lookup("A") is _K1 and calls == ["a"]
    assert reg.lookup("Hidden", "x.y") is _K2 and calls == ["a", "b"]
    assert reg.lookup("Nothing") is None and calls == ["a", "b"]
    assert reg.op_types() == ["A", "B", "x.y.Hidden"]


def test_versions_outside_a_loaded_family_fall_back_to_every_family():
    reg = KernelRegistry("cpu")
    reg.add_family("old", ["Op"], lambda r: r.add("Op", _K1, since=1, until=10))
    reg.add_family("new", [], lambda r: r.add("Op", _K2, since=11))
    assert reg.lookup("Op", "", 5) is _K1
    assert reg.lookup("Op", "", 13) is _K2
    assert reg.supports("Op", "", 20) and not reg.supports("Other")


def test_family_declared_twice_and_overlaps_are_errors():
    reg = KernelRegistry("cpu")
    reg.add_family("a", ["A"], lambda r: r.add("A", _K1))
    with pytest.raises(ValueError, match="declared twice"):
        reg.add_family("a", ["A"], lambda r: r.add("A", _K1))
    reg.add_family("b", ["A"], lambda r: r.add("A", _K2))
    with pytest.raises(ValueError, match="overlap"):
        reg.lookup("A")
    with pytest.raises(ValueError, match="declared twice"):  # also once registered
        reg.add_family("a", ["A"], lambda r: r.add("A", _K1))


def test_concurrent_lookups_see_a_fully_registered_family():
    def slow_register(reg):
        reg.add("First", _K1)
        time.sleep(0.05)  # a second thread looks up meanwhile
        reg.add("Second", _K2)

    reg = KernelRegistry("cpu")
    reg.add_family("slow", ["First", "Second"], slow_register)
    found = {}

    def look(op):
        found[op] = reg.lookup(op)

    threads = [threading.Thread(target=look, args=(op,)) for op in ("First", "Second") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == {"First": _K1, "Second": _K2}


# ----- light imports ------------------------------------------------------------------------------
def test_runtime_import_leaves_out_the_writer_and_flatbuffers():
    out = _run("""
        import sys
        import edgert.runtime
        print(" ".join(sorted(sys.modules)))
    """)
    mods = set(out.split())
    assert "edgert.format.writer" not in mods and "flatbuffers" not in mods
    from edgert.format import write_model
    from edgert.format.writer import write_model as direct

    assert write_model is direct
    import edgert.format

    with pytest.raises(AttributeError, match="no_such_name"):
        edgert.format.no_such_name  # noqa: B018


# ----- the quick-loading Numba cache --------------------------------------------------------------
_KERNELS = '''
import numpy as np
from edgert.runtime._jit import njit, prange, serial_twin


@njit
def scaled_exp(x, s):
    out = np.empty_like(x)  # NRT allocation inside the kernel
    for i in range(x.size):
        out[i] = np.exp(x[i]) * s
    return out


@njit(parallel=True)
def row_sums(a, out):
    for i in prange(a.shape[0]):
        out[i] = a[i].sum()


row_sums_serial = serial_twin(row_sums)
'''

_CHILD = """
import sys, json
import numpy as np
sys.path.insert(0, sys.argv[1])
import startup_kernels as k
x = np.linspace(-2, 2, 7)
a = np.arange(12.0).reshape(3, 4)
out, out2 = np.empty(3), np.empty(3)
k.row_sums(a, out)
k.row_sums_serial(a, out2)
r = {"exp": k.scaled_exp(x, 2.0).tolist(), "rows": out.tolist(), "rows2": out2.tolist(),
     "hits": sum(d.stats.cache_hits[s] for d in (k.scaled_exp, k.row_sums, k.row_sums_serial)
                 for s in d.stats.cache_hits)}
if len(sys.argv) > 2:  # a new signature after the cache loads: Numba's compiler must still work
    r["exp32"] = k.scaled_exp(x.astype(np.float32), np.float32(2.0)).tolist()
    r["scipy_linalg"] = "scipy.linalg" in sys.modules
print(json.dumps(r))
"""


def test_cached_kernels_load_and_new_signatures_still_compile(tmp_path):
    import json

    import numpy as np

    (tmp_path / "startup_kernels.py").write_text(_KERNELS)
    env = dict(os.environ, EDGERT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_CACHE_DIR", None)
    first = json.loads(_run_child(tmp_path, env))
    assert first["hits"] == 0  # compiled and saved
    second = json.loads(_run_child(tmp_path, env, "new-signature"))
    assert second["hits"] == 3  # all three loaded from the cache...
    x = np.linspace(-2, 2, 7)
    a = np.arange(12.0).reshape(3, 4)
    for r in (first, second):
        np.testing.assert_allclose(r["exp"], np.exp(x) * 2.0, rtol=1e-12)
        np.testing.assert_allclose(r["rows"], a.sum(axis=1), rtol=1e-12)
        np.testing.assert_allclose(r["rows2"], a.sum(axis=1), rtol=1e-12)
    # ...then float32 compiled in the same process, after the light cache loads
    np.testing.assert_allclose(second["exp32"], np.exp(x.astype(np.float32)) * 2, rtol=1e-6)
    assert not second["scipy_linalg"]  # the BLAS probe is still kept from importing SciPy


def test_runtime_helper_library_is_cached_and_a_broken_copy_is_replaced(tmp_path):
    """Numba's runtime helpers (reference counts, allocation) are stored once in the cache
    folder and loaded by later processes; an unreadable copy is compiled and written again."""
    import json

    import numpy as np

    (tmp_path / "startup_kernels.py").write_text(_KERNELS)
    env = dict(os.environ, EDGERT_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_CACHE_DIR", None)
    _run_child(tmp_path, env)
    (stored,) = (tmp_path / "cache" / "numba").glob("edgert_nrt_*.bin")
    x = np.linspace(-2, 2, 7)
    for damage in (None, b"not a pickle", stored.read_bytes()[:100]):
        if damage is not None:
            stored.write_bytes(damage)
        r = json.loads(_run_child(tmp_path, env))
        assert r["hits"] == 3
        np.testing.assert_allclose(r["exp"], np.exp(x) * 2.0, rtol=1e-12)  # allocates via NRT
        assert stored.stat().st_size > 1000  # (re)written whole


def _run_child(tmp_path, env, *extra: str) -> str:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), *extra],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


# ----- first-run compile progress, Ctrl-C while compiling, edgert warmup ------------------------
COMPILING = "compiling kernels for this CPU, once"


def _softmax_edgert(path) -> str:
    """A one-op model whose kernel compiles in a few seconds (a Relu or Add compiles nothing)."""
    from onnx import TensorProto, helper

    import edgert

    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    edgert.convert(m, str(path))
    return str(path)


def _edgert(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgert", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_first_run_prints_one_compile_line_off_a_terminal_then_warmup_leaves_nothing(tmp_path):
    model = _softmax_edgert(tmp_path / "softmax.edgert")
    env = dict(os.environ, EDGERT_CACHE_DIR=str(tmp_path / "cache"))
    first = _edgert("run", model, "--random", env=env)
    assert first.returncode == 0, first.stderr
    # not a terminal: exactly one line, no carriage returns (nothing that garbles a log)
    assert first.stderr.count(COMPILING) == 1 and first.stderr.count("\n") == 1, first.stderr
    assert "\r" not in first.stderr and str(tmp_path / "cache") in first.stderr
    again = _edgert("run", model, "--random", env=env)
    assert again.returncode == 0 and again.stderr == ""
    # edgert warmup MODEL compiles exactly what its first run needs
    env2 = dict(os.environ, EDGERT_CACHE_DIR=str(tmp_path / "cache2"))
    warm = _edgert("warmup", model, env=env2)
    assert warm.returncode == 0 and " compiled)" in warm.stdout, warm.stderr
    after = _edgert("run", model, "--random", "--json", env=env2)
    assert after.returncode == 0 and after.stderr == ""


def test_compile_progress_on_a_terminal_is_one_redrawn_line(tmp_path):
    import pty

    model = _softmax_edgert(tmp_path / "softmax.edgert")
    env = dict(os.environ, EDGERT_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="120")
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "edgert", "run", model, "--random"], env=env,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=120) == 0
    text = b"".join(chunks).decode()
    assert f"\r{COMPILING}: op 1/1: " in text  # redrawn in place, naming the op being compiled
    assert "\r\x1b[K" in text  # erased at the end, then one summary line
    assert re.match(r"edgert: compiled \d+ kernels? in \d", text.rsplit("\x1b[K", 1)[-1])


def test_ctrl_c_while_compiling_stops_promptly_with_one_line(tmp_path):
    import signal

    from edgert.cli import main

    model = tmp_path / "digits.edgert"
    assert main(["convert", str(ROOT / "models" / "digits_cnn.onnx"), "-o", str(model)]) == 0
    env = dict(os.environ, EDGERT_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.Popen([sys.executable, "-m", "edgert", "run", str(model), "--random", "--shape",
                          "input=1x1x8x8"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()  # printed when the first kernel starts compiling
    assert COMPILING in line
    time.sleep(0.3)  # inside the compiler (LLVM calls back into Python there)
    sent = time.perf_counter()
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=30) == 130
    assert time.perf_counter() - sent < 5  # the whole compile takes 10-40 s
    assert rest == "edgert: interrupted\n", rest  # no "Exception ignored ... ctypes callback"


def test_warmup_all_builtin_models_convert_and_all_with_models_is_a_usage_error(capsys):
    """`edgert warmup --all` runs these (float32; int8 through the quantizer): each must stay
    convertible as the optimizer changes (running them all compiles for minutes)."""
    from edgert.cli import main
    from edgert.converter import convert
    from edgert.format import read_model
    from edgert.warmup import _builtin_models

    models = _builtin_models(all_kinds=True)
    assert len(models) == 7 and len(_builtin_models()) == 2
    ops = set()
    for _, data in models:
        ops.update(op.op_type for op in read_model(convert(data)).main.operators)
    assert {"Conv", "Gemm", "MatMul", "Softmax", "LayerNormalization", "Resize"} <= ops
    assert main(["warmup", "--all", str(ROOT / "models" / "digits_cnn.onnx")]) == 2
    assert "give models or --all, not both" in capsys.readouterr().err
