"""The ONNX backend conformance suite, run through :mod:`edgert.backend`.

Cases:

* every node case of ``onnx.backend.test.case.node.collect_testcases()`` (generated in memory:
  the wheel does not ship the node data folders);
* the model cases shipped in the onnx wheel under ``onnx/backend/test/data/`` —
  ``pytorch-converted``, ``pytorch-operator``, ``simple`` (``model.onnx`` plus
  ``test_data_set_*/{input,output}_*.pb``) and ``light`` (``light_*.onnx`` plus
  ``light_*_output_0.pb``, fed with the runner's dummy input ``arange(n) / n``).

Outputs are compared as the ONNX runner does: same shape and dtype, floats with the case's
rtol/atol (1e-3 / 1e-7 by default) and NaN equal to NaN; integers, bools and strings exactly.

``tests/conformance_expected_failures.txt`` lists the cases expected to fail, each with a
one-line reason. A case fails the test when it fails and is not listed, and also when it is
listed but passes (so the list only shrinks: delete the line). The totals are printed at the end
of the session. ``python tests/test_conformance.py [substring]`` runs the cases outside pytest and
prints every failure with its message, grouped by the first line of the error.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pathlib
import re
import sys
import time
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgert.backend as backend

HERE = pathlib.Path(__file__).resolve().parent
EXPECTED_FAILURES_FILE = HERE / "conformance_expected_failures.txt"
DATA_DIR = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data"
MODEL_SUITES = ("pytorch-converted", "pytorch-operator", "simple", "light")


# ----- cases --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def node_cases() -> dict[str, object]:
    """name -> onnx TestCase (model and data sets in memory)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        return {c.name: c for c in collect_testcases()}


@functools.lru_cache(maxsize=1)
def model_cases() -> dict[str, tuple[str, str]]:
    """name -> (suite, path) for the model cases shipped in the wheel."""
    cases: dict[str, tuple[str, str]] = {}
    for suite in MODEL_SUITES:
        folder = DATA_DIR / suite
        if suite == "light":
            for path in sorted(folder.glob("light_*.onnx")):
                cases[f"{suite}/{path.stem}"] = (suite, str(path))
        else:
            for path in sorted(folder.iterdir()):
                if (path / "model.onnx").exists():
                    cases[f"{suite}/{path.name}"] = (suite, str(path))
    return cases


def _load_pb(path: str) -> np.ndarray:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def _model_data(suite: str, path: str):
    """(model, [(inputs, outputs), ...]) of a model case."""
    if suite == "light":
        model = onnx.load(path)
        inits = {i.name for i in model.graph.initializer}
        inputs = []
        for x in model.graph.input:
            if x.name in inits:
                continue
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                          for d in x.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))
        prefix = os.path.splitext(path)[0]
        outputs = [_load_pb(f"{prefix}_output_{i}.pb") for i in range(len(model.graph.output))]
        return model, [(inputs, outputs)]
    model = onnx.load(os.path.join(path, "model.onnx"))
    sets = []
    for d in sorted(glob.glob(os.path.join(path, "test_data_set_*"))):
        n_in = len(glob.glob(os.path.join(d, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(d, "output_*.pb")))
        ins = [_load_pb(os.path.join(d, f"input_{i}.pb")) for i in range(n_in)]
        outs = [_load_pb(os.path.join(d, f"output_{i}.pb")) for i in range(n_out)]
        sets.append((ins, outs))
    return model, sets


def expected_failures() -> dict[str, str]:
    """name -> reason, from ``conformance_expected_failures.txt`` (``name  # reason``)."""
    listed: dict[str, str] = {}
    if not EXPECTED_FAILURES_FILE.exists():
        return listed
    for line in EXPECTED_FAILURES_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        listed[name.strip()] = reason.strip()
    return listed


# ----- comparison ---------------------------------------------------------------------------------
def assert_similar(ref, out, rtol: float, atol: float, where: str = "output") -> None:
    """The ONNX runner's comparison; ints, bools and strings compared exactly."""
    if isinstance(ref, (list, tuple)):
        if not isinstance(out, (list, tuple)):
            raise AssertionError(f"{where}: expected a sequence, got {type(out).__name__}")
        if len(out) != len(ref):
            raise AssertionError(f"{where}: sequence length {len(out)} != {len(ref)}")
        for k, (r, o) in enumerate(zip(ref, out)):
            assert_similar(r, o, rtol, atol, f"{where}[{k}]")
        return
    if ref is None or out is None:
        if ref is not out:
            raise AssertionError(f"{where}: expected {ref!r}, got {out!r}")
        return
    ref = np.asarray(ref)
    if not isinstance(out, np.ndarray):
        raise AssertionError(f"{where}: expected an array, got {type(out).__name__}")
    if out.shape != ref.shape:
        raise AssertionError(f"{where}: shape {out.shape} != expected {ref.shape}")
    if ref.dtype == object:
        np.testing.assert_array_equal(out, ref, err_msg=where)
        return
    if out.dtype != ref.dtype:
        raise AssertionError(f"{where}: dtype {out.dtype} != expected {ref.dtype}")
    if ref.dtype.kind in "biu":
        np.testing.assert_array_equal(out, ref, err_msg=where)
    elif ref.dtype.kind in "fc":
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
    else:  # ml_dtypes (bfloat16, float8...): compare in float32
        np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), rtol=rtol,
                                   atol=atol, equal_nan=True, err_msg=where)


def _normalize(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


# Cast / CastLike from a float type to int4/uint4/int2/uint2: ONNX defines the result only where
# the truncated value is in the type's range. The cases' expected outputs are made at collection
# time by the onnx reference implementation, which delegates to whatever ml_dtypes is installed
# (it wrapped out-of-range values until 0.6 and gives 0 since 0.7). So these cases are checked as
# the spec reads plus edgert's documented choice (saturation, NaN -> 0): the reference must agree
# where the spec defines the result, and edgert must saturate where it does not.
_SUBBYTE_CAST = re.compile(
    r"^test_cast(?:like)?_(?:FLOAT|FLOAT16|DOUBLE|BFLOAT16)_to_(U?INT[24])(?:_expanded)?$")
_SUBBYTE_RANGE = {"INT4": (-8, 7), "UINT4": (0, 15), "INT2": (-2, 1), "UINT2": (0, 3)}


def _spec_subbyte_cast(name: str, inputs, refs):
    """The expected outputs of a float -> sub-byte Cast case, from the spec (truncate toward
    zero) and edgert's choice outside it (saturate; NaN -> 0), checked against the reference where
    the spec defines the result. None for other cases."""
    m = _SUBBYTE_CAST.match(name)
    if m is None:
        return None
    lo, hi = _SUBBYTE_RANGE[m.group(1)]
    x = np.asarray(inputs[0]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        t = np.trunc(x)
        defined = np.isfinite(t) & (t >= lo) & (t <= hi)
        want = np.where(np.isnan(t), 0.0, np.clip(t, lo, hi))
    ref = np.asarray(refs[0])
    np.testing.assert_array_equal(ref.astype(np.float64)[defined], want[defined],
                                  err_msg="the reference disagrees with the spec in range")
    return [want.astype(ref.dtype)]


def run_case(name: str) -> None:
    """Run one case; raises on any failure."""
    if name in node_cases():
        case = node_cases()[name]
        model, data_sets = case.model, case.data_sets
        rtol, atol = case.rtol, case.atol
    else:
        suite, path = model_cases()[name]
        model, data_sets = _model_data(suite, path)
        rtol, atol = 1e-3, 1e-7
    rep = backend.prepare(model, "CPU")
    for inputs, refs in data_sets:
        # TestCase data may hold TensorProto objects (casts of bfloat16/float8...)
        inputs = [_normalize(x) for x in inputs]
        refs = [_normalize(x) for x in refs]
        refs = _spec_subbyte_cast(name, inputs, refs) or refs
        outputs = rep.run(inputs)
        if len(outputs) != len(refs):
            raise AssertionError(f"{len(outputs)} outputs, expected {len(refs)}")
        for k, (ref, out) in enumerate(zip(refs, outputs)):
            assert_similar(ref, out, rtol, atol, f"output {k}")


def all_case_names() -> list[str]:
    return list(node_cases()) + list(model_cases())


# ----- pytest -------------------------------------------------------------------------------------
_RESULTS: dict[str, bool] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_totals(request):
    yield
    if not _RESULTS:
        return
    node = [ok for n, ok in _RESULTS.items() if n in node_cases()]
    models = [ok for n, ok in _RESULTS.items() if n not in node_cases()]
    lines = [
        f"ONNX conformance, node cases: {sum(node)} passed, {len(node) - sum(node)} failed",
        f"ONNX conformance, model cases: {sum(models)} passed, {len(models) - sum(models)} failed",
    ]
    # teardown output is captured: step around the capture manager to show the totals
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line)


@pytest.mark.parametrize("name", all_case_names())
def test_case(name: str) -> None:
    listed = expected_failures()
    try:
        run_case(name)
    except Exception as exc:  # noqa: BLE001  (any failure of the case is a result to record)
        _RESULTS[name] = False
        if name in listed:
            return
        raise AssertionError(
            f"{name} fails and is not in {EXPECTED_FAILURES_FILE.name}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    _RESULTS[name] = True
    if name in listed:
        pytest.fail(f"{name} passes now: delete its line from {EXPECTED_FAILURES_FILE.name}")


def test_expected_failure_list_names_real_cases() -> None:
    names = set(all_case_names())
    unknown = [n for n in expected_failures() if n not in names]
    assert not unknown, f"{EXPECTED_FAILURES_FILE.name} lists unknown cases: {unknown[:10]}"


def test_backend_run_node_and_device() -> None:
    """The Backend API beyond prepare: run_node and supports_device."""
    from onnx import helper

    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")
    node = helper.make_node("Add", ["a", "b"], ["c"])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.float32(1.5) * np.ones((1, 3), np.float32)
    (c,) = backend.run_node(node, [a, b])
    np.testing.assert_array_equal(c, a + b)


# ----- command line -------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    pattern = argv[1] if len(argv) > 1 else ""
    names = [n for n in all_case_names() if pattern in n]
    listed = expected_failures()
    groups: dict[str, list[str]] = {}
    passed = 0
    t0 = time.perf_counter()
    for name in names:
        try:
            run_case(name)
            passed += 1
            if name in listed:
                print(f"UNEXPECTED PASS {name}")
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:160]
            groups.setdefault(msg, []).append(name)
    for msg, cases in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"[{len(cases)}] {msg}\n    {' '.join(cases)}")
    n_node = sum(n in node_cases() for n in names)
    failed_node = sum(n in node_cases() for c in groups.values() for n in c)
    print(f"{passed} passed, {len(names) - passed} failed "
          f"(node cases: {n_node - failed_node} of {n_node} pass) in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
