"""The test models themselves are right: checked in onnxruntime, independently of edgert.

- the committed PyTorch exports reproduce their PyTorch reference outputs at two batch sizes;
- the digits classifier reaches the accuracy documented in models/README.md;
- materialized light models are valid ONNX, keep their topology, and give finite,
  non-degenerate outputs (only the small ones here; the big ones are for benchmarks).
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_zoo import (
    TORCH_MODELS,
    digits_documented_accuracy,
    digits_model,
    digits_test_set,
    light_model,
    light_models_module,
    torch_model,
)

RTOL, ATOL = 1e-4, 1e-5
SMALL_LIGHT_MODELS = ["squeezenet", "shufflenet"]


def _session(model: str | bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# PyTorch exports


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_torch_export_matches_pytorch_reference(name):
    onnx_path, npz_path = torch_model(name)
    assert onnx_path.stat().st_size < 1_000_000
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    for inp in model.graph.input:
        batch = inp.type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.dim_value, f"{name}: {inp.name} batch is static"

    sess = _session(str(onnx_path))
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    ref = np.load(npz_path)
    keys = sorted({k.split("_", 1)[0] for k in ref.files})
    assert len(keys) == 2
    batch_sizes = set()
    for key in keys:
        feeds = {n: ref[f"{key}_in_{n}"] for n in in_names}
        batch_sizes.add(feeds[in_names[0]].shape[0])
        got = sess.run(out_names, feeds)
        for n, g in zip(out_names, got, strict=True):
            want = ref[f"{key}_out_{n}"]
            assert g.shape == want.shape
            np.testing.assert_allclose(g, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} {key} {n}")
            assert np.std(want) > 1e-2, f"{name} {n}: reference output is nearly constant"
    assert len(batch_sizes) == 2


def test_torch_transformer_sequence_is_dynamic_too():
    onnx_path, npz_path = torch_model("torch_transformer")
    ref = np.load(npz_path)
    seq_lengths = {ref[k].shape[1] for k in ref.files if k.endswith("_in_ids")}
    assert len(seq_lengths) == 2
    dims = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "seq"]


# ----------------------------------------------------------------------------------------------
# Digits classifier


def test_digits_cnn_reaches_documented_accuracy():
    x, y = digits_test_set()
    assert x.dtype == np.float32 and x.shape == (360, 1, 8, 8)
    assert y.dtype == np.int64 and y.shape == (360,)
    assert 0.0 <= x.min() and x.max() <= 1.0  # scaled by 1/16 as the model expects
    correct_doc, total_doc = digits_documented_accuracy()
    assert total_doc == len(y) and correct_doc / total_doc >= 0.97

    sess = _session(str(digits_model()))
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities"]
    probs = sess.run(["probabilities"], {"input": x})[0]
    assert probs.shape == (360, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    correct = int((probs.argmax(axis=1) == y).sum())
    assert correct >= correct_doc, f"{correct}/{len(y)} < documented {correct_doc}/{total_doc}"

    sample = np.load(digits_model().parent / "digits_sample.npy")
    np.testing.assert_array_equal(sample, x[:8])  # the README's sample batch is from the split


# ----------------------------------------------------------------------------------------------
# Light models


def _real_inputs(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


@pytest.mark.parametrize("name", SMALL_LIGHT_MODELS)
def test_light_model_is_valid_and_keeps_topology(name):
    lm = light_models_module()
    path = light_model(name)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    source = onnx.load(str(lm.source_path(name)))

    assert model.ir_version == source.ir_version
    assert [(o.domain, o.version) for o in model.opset_import] == [
        (o.domain, o.version) for o in source.opset_import
    ]
    assert _real_inputs(model) == _real_inputs(source)
    assert [o.name for o in model.graph.output] == [o.name for o in source.graph.output]
    ops = collections.Counter(n.op_type for n in model.graph.node)
    want = collections.Counter(
        n.op_type for n in source.graph.node if n.op_type != "ConstantOfShape"
    )
    assert ops == want
    # Every ConstantOfShape output is now an initializer of the same shape; shape inputs gone.
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    src_consts = {t.name: onnx.numpy_helper.to_array(t) for t in source.graph.initializer}
    for node in source.graph.node:
        if node.op_type == "ConstantOfShape":
            assert inits[node.output[0]] == tuple(src_consts[node.input[0]].tolist())
            assert node.input[0] not in inits
    # Stored weights are kept bit for bit.
    kept = {t.name: t for t in model.graph.initializer}
    for t in source.graph.initializer:
        if t.name in kept:
            np.testing.assert_array_equal(
                onnx.numpy_helper.to_array(kept[t.name]), onnx.numpy_helper.to_array(t)
            )
    # BatchNormalization variances are positive.
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            var = onnx.numpy_helper.to_array(kept[node.input[4]])
            assert (var > 0).all(), node.input[4]


@pytest.mark.parametrize("name", SMALL_LIGHT_MODELS)
def test_light_model_output_is_finite_and_not_degenerate(name):
    sess = _session(str(light_model(name)))
    rng = np.random.default_rng(123)
    (inp,) = sess.get_inputs()
    x = rng.standard_normal((2, *inp.shape[1:])).astype(np.float32)
    # The topologies are fixed at batch 1: run the two inputs one at a time.
    probs = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(2)])
    probs = probs.reshape(2, -1)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-4)  # a softmax
    assert np.unique(probs[0]).size > probs.shape[1] // 2  # not all-equal classes
    assert probs.max() < 0.9  # not saturated to one-hot
    assert np.abs(probs[0] - probs[1]).max() > 1e-4  # depends on the input


def test_materialize_caches_and_is_deterministic(tmp_path):
    lm = light_models_module()
    path = lm.materialize("squeezenet", tmp_path, seed=0)
    assert path.parent == tmp_path
    data = path.read_bytes()
    mtime = os.stat(path).st_mtime_ns
    assert lm.materialize("squeezenet", tmp_path, seed=0) == path
    assert os.stat(path).st_mtime_ns == mtime  # reused, not rewritten

    # Same seed elsewhere: the same bytes as the default cache's copy; another seed differs.
    assert light_model("squeezenet").read_bytes() == data
    other = lm.materialize("squeezenet", tmp_path, seed=1)
    assert other != path and other.read_bytes() != data

    # A stale sidecar (another materializer version) or a truncated file is remade.
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "materializer_version": -1}))
    assert lm.materialize("squeezenet", tmp_path, seed=0).read_bytes() == data
    path.write_bytes(data[: len(data) // 2])
    assert lm.materialize("squeezenet", tmp_path, seed=0).read_bytes() == data


def test_materialize_cache_dir_from_environment(tmp_path, monkeypatch):
    lm = light_models_module()
    monkeypatch.setenv("EDGERT_MODEL_CACHE", str(tmp_path / "cache"))
    assert lm.default_cache_dir() == tmp_path / "cache"


def test_materialize_rejects_unknown_model(tmp_path):
    lm = light_models_module()
    with pytest.raises(lm.MaterializeError, match="unknown light model 'resnet18'"):
        lm.materialize("resnet18", tmp_path)
