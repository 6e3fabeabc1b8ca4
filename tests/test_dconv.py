"""The direct float32 convolution of ``dconv.py`` against onnxruntime.

Shapes are small but cover every branch: strides, dilations and asymmetric pads (with and without
a padded copy), output channels that do not fill a 16-channel block, position counts that do not
fill a 6-position tile or a block, batches, every fused activation branch, and 1 and 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.runtime.kernels.cpu import dconv
from edgert.runtime.kernels.cpu.conv import ConvPath, ConvTuning
from edgert.runtime.ops.window import Geo

CASES = [
    # (x shape, w shape, attrs)
    ((1, 8, 11, 13), (20, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 5, 9, 10), (16, 5, 3, 3), {"pads": [0, 1, 2, 0], "strides": [2, 1]}),
    ((1, 6, 15, 15), (7, 6, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((1, 3, 20, 20), (33, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((1, 4, 7, 7), (40, 4, 3, 3), {}),  # no padding: reads the input in place
    ((1, 9, 4, 5), (18, 9, 2, 3), {"strides": [1, 2]}),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_dconv_matches_onnxruntime(case, threads, monkeypatch):
    monkeypatch.setattr(dconv, "BLOCK_BYTES", 512)  # several position blocks
    monkeypatch.setattr(dconv, "SUB", 2)  # several epilogue passes per block
    x_shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    want = ort_node("Conv", [x, w, b], attrs)[0]
    got = run_kernel("Conv", [x, w, b], attrs, const_inputs=(1, 2), num_threads=threads,
                     path=ConvPath.DIRECT, tuning=ConvTuning(split_min_macs=1))[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("act,params", [("Relu", None), ("Clip", [-0.5, 0.7]), ("Sigmoid", None),
                                        (None, None)])
@pytest.mark.parametrize("bias", [True, False])
def test_dconv_activations(act, params, bias):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, 8, 9)).astype(np.float32)
    x[0, 0, 3, 3] = np.nan  # NaN must reach the outputs that read it
    w = rng.standard_normal((18, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(18).astype(np.float32)
    ins = [x, w, b] if bias else [x, w]
    attrs = {"pads": [1, 1, 1, 1]}
    want = ort_node("Conv", ins, attrs)[0]
    if act is not None:
        with np.errstate(invalid="ignore"):  # NaN passes through every activation
            want = {"Relu": lambda v: np.where(v < 0, 0, v),
                    "Clip": lambda v: np.clip(v, *params),
                    "Sigmoid": lambda v: 1 / (1 + np.exp(-v))}[act](want)
        attrs = dict(attrs, activation=act)
        if params:
            attrs["activation_params"] = params
    got = run_kernel("Conv", ins, attrs, const_inputs=(1, 2), domain="edgert",
                     path=ConvPath.DIRECT)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.isnan(got).sum() == np.isnan(want).sum() > 0


def test_dconv_selected():
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    k = registry().lookup("Conv", "", 21)(OpContext("Conv", "c", {"pads": [1, 1, 1, 1]}, "", 21, 1))
    w = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32)
    k.prepare([TensorInfo((1, 64, 14, 14), np.float32), TensorInfo(w.shape, w.dtype, w)])
    assert k.path is ConvPath.DIRECT


def test_dconv_rejects_a_geometry_that_does_not_fit():
    """A plan reaching past the input raises instead of reading out of bounds."""
    geo = Geo(1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 8, 8, 1, 8, 8, 0, 1, 1)
    g = dconv.Geometry(geo, 4)
    w = dconv.pack_weights(np.ones((16, 4, 3, 3), np.float32))
    y = np.empty((16, 64), np.float32)
    small = np.zeros(g.pad_elems - 1, np.float32)
    with pytest.raises(ValueError, match="does not fit"):
        dconv.dconv_serial(w, small, g.offs, 4, g.plane, g.wp, g.sh, g.sw, g.oh, g.ow,
                           g.block_tiles, dconv.SUB, np.zeros(0, np.float32), 0, np.float32(0),
                           np.float32(0), y, np.zeros((0, 0), np.float32), 1)
    with pytest.raises(ValueError, match="does not fit"):
        dconv.dconv_serial(w[:-1], np.zeros(g.pad_elems, np.float32), g.offs, 4, g.plane, g.wp,
                           g.sh, g.sw, g.oh, g.ow, g.block_tiles, dconv.SUB,
                           np.zeros(0, np.float32), 0, np.float32(0), np.float32(0), y,
                           np.zeros((0, 0), np.float32), 1)
