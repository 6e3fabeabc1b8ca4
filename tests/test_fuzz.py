"""Fuzzing, the short in-suite run: structure-aware hypothesis mutations of the bundled models.

Two targets (see :mod:`fuzz.targets`): byte mutations of real `.edgert` files through
``read_model`` + ``Interpreter`` + one run, and structural mutations of real ONNX models through
``edgert.convert`` + ``Interpreter`` + one run. Each case must work or raise ``EdgeRTError``.

Deterministic (``derandomize=True``, no example database): CI runs the same cases every time.
The long run, in subprocesses, is ``python -m fuzz --minutes 30`` (usage in fuzz/__init__.py);
each finding it saves under fuzz/crashes/ becomes a regression test at the end of this file.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("onnx")

from hypothesis import HealthCheck, Phase, event, given, settings  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz import strategies  # noqa: E402
from fuzz.targets import (  # noqa: E402
    ONNX_SEEDS,
    check_edgert,
    check_onnx,
    edgert_seed,
    run_edgert_bytes,
    signature,
)

# The short run's size: the whole file takes about a minute on CI's 2 cores.
EDGERT_EXAMPLES = 2500
ONNX_EXAMPLES = 1000
# The smaller seeds for the in-suite run (the long run uses every bundled model).
SMALL_SEEDS = ["torch_cnn", "torch_transformer", "torch_decoder", "digits_edgert_mlp",
               "digits_edgert_mobilenet"]

# Mutated models warn (opset mismatches, overflows in folded constants): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

FUZZ = dict(database=None, derandomize=True, deadline=None, print_blob=True,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", list(ONNX_SEEDS))
def test_seed_corpus_runs(name):
    """Every seed converts, loads and runs unmutated (else the fuzzer explores nothing)."""
    assert check_onnx(name, []) == "ran"
    assert run_edgert_bytes(edgert_seed(name)) == "ran"


def _check(target, case) -> None:
    """Run one case; a known finding (pinned by its xfail regression test below) passes here, so
    that the fuzz tests keep looking for new ones."""
    try:
        event(target(*case))  # how far it got: see --hypothesis-show-statistics
    except Exception as e:
        if signature(e) not in KNOWN_FINDINGS:
            raise
        event("known finding")


@settings(max_examples=EDGERT_EXAMPLES, **FUZZ)
@given(strategies.edgert_cases(SMALL_SEEDS))
def test_fuzz_edgert_reader_and_runtime(case):
    _check(check_edgert, case)


@settings(max_examples=ONNX_EXAMPLES, **FUZZ)
@given(strategies.onnx_cases(SMALL_SEEDS))
def test_fuzz_onnx_importer(case):
    _check(check_onnx, case)


# ----- regressions: every finding of the fuzzer, replayed -----------------------------------
# (target, seed model, mutations) as saved in fuzz/crashes/*.json (`python -m fuzz --replay`).
# A finding not fixed yet is marked xfail(strict=True, raises=<what it raises>): once edgert is
# fixed it passes (XPASS fails the suite), and then the mark comes off and its signature leaves
# KNOWN_FINDINGS.
def _open(exc, why):
    return pytest.mark.xfail(strict=True, raises=exc, reason=why)


REGRESSIONS = [
    # torch_cnn with its node 1 (a Constant, no inputs) turned into a Reshape: the importer
    # accepts a Reshape with no inputs, and the optimizer's merge_reshapes reads node.inputs[0].
    # (fuzz/crashes/onnx-7e4dbb7c5ed2.json)
    pytest.param("onnx", "torch_cnn", [[12, 1, 0, 155]],
                 id="onnx-reshape-without-inputs"),
    # torch_decoder with the only input of a Transpose dropped: merge_transposes reads
    # node.inputs[0] (IndexError). Same root cause: node arity is not checked on import.
    # (fuzz/crashes/onnx-2f8ba26d972a.json)
    pytest.param("onnx", "torch_decoder", [[1, 149132, 0, 0]],
                 id="onnx-transpose-without-inputs"),
    # digits_edgert_mobilenet with a BatchNormalization's `epsilon` attribute retyped FLOAT ->
    # STRING: the importer keeps the attribute as the string '', and the optimizer's
    # fold_batchnorm does float('') (ValueError). (fuzz/crashes/onnx-3a75cb9d86b9.json)
    pytest.param("onnx", "digits_edgert_mobilenet", [[5, 1, 0, 2]],
                 id="onnx-batchnorm-string-epsilon"),
    # the same with `epsilon` retyped FLOAT -> GRAPH: float(<Graph>) in fold_batchnorm
    # (TypeError). Found by the in-suite run. (fuzz/crashes/onnx-a872dc825c07.json)
    pytest.param("onnx", "digits_edgert_mobilenet", [[5, 1, 0, 4]],
                 id="onnx-batchnorm-graph-epsilon"),
    # torch_transformer with a Gather's `axis` retyped INT -> STRING: the optimizer's constant
    # folding (_pick) does int('') (ValueError). Same root cause: attribute types are not
    # checked on import. (fuzz/crashes/onnx-9753b59e2e77.json)
    pytest.param("onnx", "torch_transformer", [[5, 536, 0, 2]],
                 id="onnx-gather-string-axis"),
]
# The signatures (fuzz.targets.signature) of the open findings above (all fixed: the importer
# checks every default-domain node's input count and attribute types against its schema).
KNOWN_FINDINGS: set[str] = set()


@pytest.mark.parametrize("target,name,mutations", REGRESSIONS)
def test_fuzz_regression(target, name, mutations):
    {"edgert": check_edgert, "onnx": check_onnx}[target](name, mutations)
