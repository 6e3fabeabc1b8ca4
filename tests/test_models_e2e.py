"""Real model topologies through convert -> .edgert -> Interpreter, against onnxruntime.

The nine "light" models ship in the onnx wheel with ConstantOfShape-made weights;
benchmarks/light_models.py gives them seeded random weights (cached, nothing committed).
The PyTorch exports in tests/data have a dynamic batch dimension and reference outputs from
PyTorch for two batch sizes.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_zoo import LIGHT_MODELS, TORCH_MODELS, light_model, torch_model

from edgert.converter import convert
from edgert.runtime import Interpreter

RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name, tmp_path):
    path = light_model(name)
    out = tmp_path / f"{name}.edgert"
    convert(str(path), str(out))
    interp = Interpreter(str(out))
    # The reference runs the model as written: onnxruntime's own graph optimizations fold
    # BatchNormalization in float32 too, and on a 50-layer net with random weights two valid
    # roundings of the same fold already differ by about the tolerance.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {}
    rng = np.random.default_rng(0)
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    want = sess.run(None, feeds)
    got = interp.run(feeds)
    for meta, w in zip(sess.get_outputs(), want):
        np.testing.assert_allclose(got[meta.name], w, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_torch_export_runs_at_two_batch_sizes(name, tmp_path):
    onnx_path, npz_path = torch_model(name)
    out = tmp_path / f"{name}.edgert"
    convert(str(onnx_path), str(out))
    interp = Interpreter(str(out))  # converted once, run at two batch sizes
    ref = np.load(npz_path)
    model = onnx.load(str(onnx_path))
    in_names = [i.name for i in model.graph.input]
    out_names = [o.name for o in model.graph.output]
    batches = sorted({k.split("_", 1)[0] for k in ref.files})
    assert len(batches) >= 2
    sizes = set()
    for b in batches:
        feeds = {n: ref[f"{b}_in_{n}"] for n in in_names}
        sizes.add(next(iter(feeds.values())).shape[0])
        got = interp.run(feeds)
        for n in out_names:
            np.testing.assert_allclose(got[n], ref[f"{b}_out_{n}"], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} {b} {n}")
    assert len(sizes) >= 2
