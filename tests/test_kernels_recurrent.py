"""RNN / GRU / LSTM kernels, end to end through edgert.backend, against onnxruntime."""

import numpy as np
import pytest
from helpers import ort_node
from onnx import helper

import edgert.backend as backend
from edgert.errors import EdgeRTError

RTOL, ATOL = 1e-4, 1e-5


def _run(op, inputs, attrs, n_out):
    names = ["" if x is None else f"in{i}" for i, x in enumerate(inputs)]
    node = helper.make_node(op, names, [f"out{i}" for i in range(n_out)], **attrs)
    return backend.run_node(node, [x for x in inputs if x is not None])


@pytest.mark.parametrize("op, gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_matches_onnxruntime(op, gates, direction):
    rng = np.random.default_rng(1)
    seq, batch, inp, hid = 4, 3, 5, 6
    dirs = 2 if direction == "bidirectional" else 1
    x = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    w = (rng.standard_normal((dirs, gates * hid, inp)) * 0.5).astype(np.float32)
    r = (rng.standard_normal((dirs, gates * hid, hid)) * 0.5).astype(np.float32)
    b = (rng.standard_normal((dirs, 2 * gates * hid)) * 0.1).astype(np.float32)
    lens = np.array([4, 2, 3], np.int32)
    h0 = rng.standard_normal((dirs, batch, hid)).astype(np.float32)
    inputs = [x, w, r, b, lens, h0]
    n_out = 2
    if op == "LSTM":
        inputs.append(rng.standard_normal((dirs, batch, hid)).astype(np.float32))
        n_out = 3
    attrs = {"hidden_size": hid, "direction": direction}
    got = _run(op, inputs, attrs, n_out)
    ref = ort_node(op, inputs, attrs, num_outputs=n_out)
    for g, e in zip(got, ref):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_gru_linear_before_reset_and_clip():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    w = rng.standard_normal((1, 9, 4)).astype(np.float32)
    r = rng.standard_normal((1, 9, 3)).astype(np.float32)
    attrs = {"hidden_size": 3, "linear_before_reset": 1, "clip": 0.7}
    got = _run("GRU", [x, w, r], attrs, 2)
    ref = ort_node("GRU", [x, w, r], attrs, num_outputs=2)
    for g, e in zip(got, ref):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_bad_weights_are_rejected():
    x = np.zeros((3, 2, 4), np.float32)
    w = np.zeros((1, 8, 4), np.float32)  # LSTM needs 4 * hidden rows
    r = np.zeros((1, 9, 3), np.float32)
    with pytest.raises(EdgeRTError, match="LSTM"):
        _run("LSTM", [x, w, r], {"hidden_size": 3}, 1)
