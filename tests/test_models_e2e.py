"""Real model topologies through convert -> .edgert -> Interpreter, against onnxruntime.

The nine "light" models ship in the onnx wheel with ConstantOfShape-made weights;
benchmarks/light_models.py gives them seeded random weights (cached, nothing committed).
The PyTorch exports in tests/data have a dynamic batch dimension and reference outputs from
PyTorch for two batch sizes.
"""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from model_zoo import LIGHT_MODELS, TORCH_MODELS, light_model, torch_model

from edgert.converter import convert
from edgert.runtime import Interpreter

RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name, tmp_path):
    path = light_model(name)
    # The onnxruntime reference runs in a child process, and so does edgert for the models
    # whose weights are hundreds of MB (VGG-19: 574 MB): the suite's peak memory is then one
    # conversion in a fresh process, not three runtimes' added to all that the suite holds.
    feeds_path, want_path = tmp_path / "feeds.npz", tmp_path / "want.npz"
    subprocess.run([sys.executable, "-c", _ORT_REFERENCE, str(path), str(feeds_path),
                    str(want_path)], check=True)
    out = tmp_path / f"{name}.edgert"
    if path.stat().st_size > BIG_MODEL_BYTES:
        got_path = tmp_path / "got.npz"
        subprocess.run([sys.executable, "-c", _EDGERT_RUN, str(path), str(out), str(feeds_path),
                        str(got_path)], check=True)
        got = dict(np.load(got_path))
    else:
        convert(str(path), str(out))
        got = Interpreter(str(out)).run(dict(np.load(feeds_path)))
    want = dict(np.load(want_path))
    assert set(want) <= set(got)
    for meta_name, w in want.items():
        np.testing.assert_allclose(got[meta_name], w, rtol=RTOL, atol=ATOL, err_msg=name)


BIG_MODEL_BYTES = 100 << 20
_EDGERT_RUN = """
import sys, numpy as np
from edgert.converter import convert
from edgert.runtime import Interpreter
convert(sys.argv[1], sys.argv[2])
got = Interpreter(sys.argv[2]).run(dict(np.load(sys.argv[3])))
np.savez(sys.argv[4], **got)
"""


# The reference runs the model as written: onnxruntime's own graph optimizations fold
# BatchNormalization in float32 too, and on a 50-layer net with random weights two valid
# roundings of the same fold already differ by about the tolerance.
_ORT_REFERENCE = """
import sys, numpy as np, onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
         .astype(np.float32) for i in sess.get_inputs()}
np.savez(sys.argv[2], **feeds)
names = [o.name for o in sess.get_outputs()]
np.savez(sys.argv[3], **dict(zip(names, sess.run(None, feeds))))
"""


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
