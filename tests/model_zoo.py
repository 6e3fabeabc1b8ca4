"""Where the tests find real models: committed PyTorch exports, the digits classifier, and the
onnx wheel's light topologies with materialized random weights.

``light_model`` materializes on first use into the model cache (``$EDGERT_MODEL_CACHE`` or
``~/.cache/edgert/models``) and reuses the file afterwards; see benchmarks/light_models.py.
The benchmarks folder is not a package, so its module is loaded from its path: the tests work
from a plain checkout, without installing anything beyond the test extras.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
from types import ModuleType

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "data"
MODELS_DIR = ROOT / "models"

TORCH_MODELS: list[str] = ["torch_cnn", "torch_mobilenet", "torch_transformer", "torch_decoder"]


def light_models_module() -> ModuleType:
    """benchmarks/light_models.py, imported by path (once; shared with ``import light_models``)."""
    mod = sys.modules.get("light_models")
    if mod is None:
        spec = importlib.util.spec_from_file_location(
            "light_models", ROOT / "benchmarks" / "light_models.py"
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["light_models"] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules["light_models"]
            raise
    return mod


LIGHT_MODELS: list[str] = list(light_models_module().LIGHT_MODELS)


def light_model(name: str, seed: int = 0) -> pathlib.Path:
    """Path of light model ``name`` with seeded random weights (materialized and cached).

    A model not in the cache yet is made in a child process: VGG-19's weights are 574 MB, and
    the test process should not keep the high-water mark of making them. That child is the one
    process of the suite above 2 GB (about 2.9 GB, once per machine: the materializer's
    calibration runs onnxruntime over the whole model, see benchmarks/light_models.py)."""
    mod = light_models_module()
    path = mod.materialize_path(name, cache_dir=None, seed=seed)
    if path is None:
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import light_models; light_models.materialize(sys.argv[2], "
                        "seed=int(sys.argv[3]))", str(ROOT / "benchmarks"), name, str(seed)],
                       check=True)
    return mod.materialize(name, cache_dir=None, seed=seed)


def torch_model(name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(ONNX file, npz reference) of a committed PyTorch export.

    The npz holds keys ``b<k>_in_<input>`` and ``b<k>_out_<output>`` for two batch sizes.
    """
    if name not in TORCH_MODELS:
        raise KeyError(f"unknown torch model {name!r}; choose one of {TORCH_MODELS}")
    return DATA_DIR / f"{name}.onnx", DATA_DIR / f"{name}.npz"


def digits_model() -> pathlib.Path:
    """The bundled digits classifier (input ``input`` [N,1,8,8], output ``probabilities``)."""
    return MODELS_DIR / "digits_cnn.onnx"


def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split: x float32 [360, 1, 8, 8] (scaled to [0, 1]), y int64 [360]."""
    with np.load(MODELS_DIR / "digits_test.npz") as data:
        return data["x"], data["y"]


def digits_documented_accuracy() -> tuple[int, int]:
    """(correct, total) as stated in models/README.md."""
    text = (MODELS_DIR / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Test accuracy \(onnxruntime, digits_test\.npz\):.*\((\d+) of (\d+)\)", text)
    if match is None:
        raise ValueError("models/README.md does not state the digits test accuracy")
    return int(match.group(1)), int(match.group(2))
