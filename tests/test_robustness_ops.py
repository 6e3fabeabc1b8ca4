"""Hostile inputs and attributes for the newer operators and value kinds.

Every case feeds one op something a malicious or broken model could hold: out-of-range indices
and positions, NaN/Inf/huge coordinates, empty tensors, wrong shapes and dtypes, attributes
outside their legal range. The expected outcome is a clear :class:`~edgert.errors.EdgeRTError`
naming the op (at prepare or at invoke), or a result that matches onnxruntime / NumPy — never a
segfault, a Python ``IndexError``/``ValueError``/``ZeroDivisionError`` from inside a kernel, or
garbage.

A kernel that read out of bounds could crash the interpreter, so the cases all run in *one* child
process (one Numba compile / cache load) that reports each case's outcome as it finishes; each
parametrized test then looks up its own line. If the child dies, the tests of the cases it did
not report fail and name the case that was running. Run ``python tests/test_robustness_ops.py``
to see the raw outcomes. Besides single kernels, the cases cover hand-made `.edgert` files
(unknown value kinds, a sequence with constant data, sub-byte constants out of range), sub-byte
feeds, truncated packed initializers, Gradient expansion and sequence models end to end.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import traceback
from collections.abc import Callable

import numpy as np
import pytest

from edgert.errors import EdgeRTError

F32 = np.float32
I64 = np.int64


# ----- helpers the cases use ----------------------------------------------------------------------
def _run(op, inputs, attrs=None, const=(), version=None):
    from helpers import run_kernel

    kw = {} if version is None else {"version": version}
    return run_kernel(op, inputs, attrs, const_inputs=const, **kw)


def _raises(op, inputs, attrs=None, const=(), version=None, match=None):
    """The case passes when the kernel raises an edgert error naming the op (and ``match``)."""
    try:
        out = _run(op, inputs, attrs, const, version)
    except EdgeRTError as e:
        msg = str(e)
        assert op in msg, f"error does not name the op: {msg}"
        if match is not None:
            assert match.lower() in msg.lower(), f"expected {match!r} in: {msg}"
        return
    raise AssertionError(f"no error; got {[None if o is None else o.shape for o in out]}")


def _both(op, inputs, attrs=None, const=(), version=None, match=None):
    """Same hostile case with the data inputs known at prepare and only known at invoke."""
    _raises(op, inputs, attrs, const, version, match)
    _raises(op, inputs, attrs, "all", version, match)


def _vs_ort(op, inputs, attrs=None, const=(), version=None, opset=None, rtol=1e-4, atol=1e-5):
    from helpers import ort_node

    got = _run(op, inputs, attrs, const, version)
    want = ort_node(op, inputs, attrs, num_outputs=len(got), opset=opset or version or 21)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _x(*shape, seed=0):
    return _rng(seed).standard_normal(shape).astype(F32)


# ----- the cases ----------------------------------------------------------------------------------
CASES: dict[str, Callable[[], None]] = {}


def case(name: str):
    """Register a case: a function that raises AssertionError (or leaks) when it fails."""
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


# GridSample
_HOSTILE_GRID = np.array([[[[np.nan, 0.2], [np.inf, 0.1], [-np.inf, 0.3], [1e30, -1e30],
                             [0.3, 3e38], [-2.5, 7.0]]]], F32)


for _mode in ("nearest", "linear", "cubic"):
    for _pad in ("zeros", "border", "reflection"):
        def _gs(mode=_mode, pad=_pad):
            x = _x(1, 2, 3, 4)
            y = _run("GridSample", [x, _HOSTILE_GRID], {"mode": mode, "padding_mode": pad},
                     version=20)[0]
            assert y.shape == (1, 2, 1, 6)
            # a NaN coordinate gives NaN; every other output is a finite mix of pixels or 0
            assert np.isnan(y[..., 0]).all() and np.isfinite(y[..., 1:]).all(), y
            # the finite-but-far rows against onnxruntime
            from helpers import ort_node
            g = _HOSTILE_GRID[:, :, 5:6]
            want = ort_node("GridSample", [x, g], {"mode": mode, "padding_mode": pad},
                            opset=20)[0]
            got = _run("GridSample", [x, g], {"mode": mode, "padding_mode": pad}, version=20)[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        CASES[f"gridsample_nan_inf_huge_{_mode}_{_pad}"] = _gs


@case("gridsample_bad_shapes")
def _():
    x = _x(1, 2, 3, 4)
    _raises("GridSample", [x, np.zeros((1, 2, 2, 3), F32)], version=20)  # k=3 for 2-D
    _raises("GridSample", [x, np.zeros((2, 2, 2, 2), F32)], version=20)  # batch mismatch
    _raises("GridSample", [x, np.zeros((1, 2, 2), F32)], version=20)  # rank
    _raises("GridSample", [np.zeros((1, 2, 0, 4), F32), np.zeros((1, 2, 2, 2), F32)],
            version=20)
    _raises("GridSample", [x.astype(np.int32), np.zeros((1, 2, 2, 2), F32)], version=20)
    _raises("GridSample", [x, np.zeros((1, 2, 2, 2), F32)], {"mode": "area"}, version=20)
    _raises("GridSample", [x, np.zeros((1, 2, 2, 2), F32)], {"padding_mode": "wrap"},
            version=20)


# AffineGrid
@case("affinegrid_bad_size")
def _():
    theta = _x(2, 2, 3)
    _both("AffineGrid", [theta, np.array([2, 1, -3, 4], I64)], const=(1,))
    _both("AffineGrid", [theta, np.array([3, 1, 3, 4], I64)], const=(1,))
    _raises("AffineGrid", [theta, np.array([2, 1, 3, 4], np.int32)])
    _raises("AffineGrid", [theta, np.array([2, 1, 3], I64)])
    _raises("AffineGrid", [_x(2, 3, 3), np.array([2, 1, 3, 4], I64)])


# RoiAlign
@case("roialign_batch_index_out_of_range")
def _():
    x = _x(2, 3, 5, 5)
    rois = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], F32)
    for bad in ([0, 2], [-1, 0], [0, 2**40]):
        _both("RoiAlign", [x, rois, np.array(bad, I64)], const=(), version=16,
              match="batch_indices")


@case("roialign_nan_inf_rois_vs_ort")
def _():
    x = _x(1, 2, 6, 6)
    a = {"output_height": 2, "output_width": 2}
    rois = np.array([[np.nan, 0, 2, 2], [4, 4, 1, 1]], F32)
    y = _run("RoiAlign", [x, rois, np.zeros(2, I64)], a, version=16)[0]
    assert y.shape == (2, 2, 2, 2) and np.isfinite(y).all(), y
    # a reversed box is still well defined; a large one (a 4000-point grid, once capped
    # at 1024 and so averaged over the wrong count) is exact
    ok = np.array([[4, 4, 1, 1], [-4000, 0, 4000, 5]], F32)
    _vs_ort("RoiAlign", [x, ok, np.zeros(2, I64)], a, version=16)
    # infinite or astronomically large boxes would loop for ever: a clear error instead
    for bad in ([0, 0, np.inf, 3], [-1e30, -1e30, 1e30, 1e30], [0, -np.inf, 1, 1]):
        _raises("RoiAlign", [x, np.array([bad], F32), np.zeros(1, I64)], a, version=16,
                match="sampling grid")
    _raises("RoiAlign", [x, rois, np.zeros(2, I64)], {"sampling_ratio": 2**31}, version=16)


@case("roialign_bad_attrs")
def _():
    x, rois, b = _x(1, 2, 4, 4), np.zeros((1, 4), F32), np.zeros(1, I64)
    _raises("RoiAlign", [x, rois, b], {"output_height": 0}, version=16)
    _raises("RoiAlign", [x, rois, b], {"sampling_ratio": -1}, version=16)
    _raises("RoiAlign", [x, rois, b], {"mode": "min"}, version=16)
    _raises("RoiAlign", [x, np.zeros((1, 5), F32), b], version=16)
    _raises("RoiAlign", [x, rois, np.zeros(2, I64)], version=16)
    _raises("RoiAlign", [x, rois, np.zeros(1, F32)], version=16)
    _raises("RoiAlign", [_x(1, 2, 0, 4), rois, b], version=16)


# CenterCropPad
@case("centercroppad_hostile")
def _():
    x = _x(2, 3, 4)
    _both("CenterCropPad", [x, np.array([2, -1, 4], I64)], const=(1,))
    _raises("CenterCropPad", [x, np.array([2, 2], I64)], {"axes": [0, 3]}, const=(1,))
    _raises("CenterCropPad", [x, np.array([2, 2], I64)], {"axes": [1, -2]}, const=(1,))
    _raises("CenterCropPad", [x, np.array([2, 2], I64)], const=(1,))
    _raises("CenterCropPad", [x, np.array([2.0, 2.0, 2.0], F32)], const=(1,))
    # empty target dims are legal: a zero-size result
    y = _run("CenterCropPad", [x, np.array([0, 5], I64)], {"axes": [0, 1]}, const=(1,))[0]
    assert y.shape == (0, 5, 4)


# Col2Im
@case("col2im_hostile")
def _():
    x = _x(1, 4, 9)
    img, blk = np.array([4, 4], I64), np.array([2, 2], I64)
    _both("Col2Im", [x, img, np.array([0, 2], I64)], const=(1, 2))
    _both("Col2Im", [x, img, np.array([-2, 2], I64)], const=(1, 2))
    _both("Col2Im", [x, np.array([4, -4], I64), blk], const=(1, 2))
    _both("Col2Im", [x, np.array([3, 3], I64), blk], const=(1, 2))  # wrong block count
    _raises("Col2Im", [_x(1, 5, 9), img, blk], const=(1, 2))  # C*K not divisible
    _raises("Col2Im", [x, img, blk], {"strides": [0, 1]}, const=(1, 2))
    _raises("Col2Im", [x, img, blk], {"dilations": [1, -1]}, const=(1, 2))
    _raises("Col2Im", [x, img, blk], {"pads": [0, 0, -1, 0]}, const=(1, 2))
    _raises("Col2Im", [x, img, blk], {"strides": [1, 1, 1]}, const=(1, 2))
    _raises("Col2Im", [x, img, np.array([2, 2, 1], I64)], const=(1, 2))
    _vs_ort("Col2Im", [x, img, blk], const=(1, 2), version=18)


# DeformConv
@case("deformconv_hostile_attrs")
def _():
    x, w = _x(1, 4, 5, 5), _x(2, 2, 3, 3)
    off = np.zeros((1, 18, 3, 3), F32)
    _raises("DeformConv", [x, w, off], {"group": 3}, version=19)  # 4 % 3
    _raises("DeformConv", [x, w, off], {"group": 0}, version=19)
    _raises("DeformConv", [x, w, off], {"group": 2, "offset_group": 3}, version=19)
    _raises("DeformConv", [x, w, off], {"group": 2, "strides": [0, 1]}, version=19)
    _raises("DeformConv", [x, w, off], {"group": 2, "dilations": [-1, 1]}, version=19)
    _raises("DeformConv", [x, w, off], {"group": 2, "pads": [-1, 0, 0, 0]}, version=19)
    _raises("DeformConv", [x, w, off], {"group": 2, "kernel_shape": [2, 2]}, version=19)
    _raises("DeformConv", [x, w, np.zeros((1, 18, 2, 3), F32)], {"group": 2}, version=19)
    _raises("DeformConv", [x, w, off, np.zeros(3, F32)], {"group": 2}, version=19)
    _raises("DeformConv", [x, w, off, None, np.zeros((1, 9, 3, 2), F32)], {"group": 2},
            version=19)
    _raises("DeformConv", [_x(1, 4, 2, 2), w, off], {"group": 2}, version=19)
    _raises("DeformConv", [_x(1, 4, 5), _x(2, 2, 3), np.zeros((1, 6, 3), F32)], {"group": 2},
            version=19)


@case("deformconv_nan_inf_offsets")
def _():
    x, w = _x(1, 2, 5, 5), _x(2, 2, 3, 3, seed=1)
    off = _rng(2).uniform(-2, 2, (1, 18, 3, 3)).astype(F32)
    _vs_ort("DeformConv", [x, w, off], version=19, opset=19)
    off[0, 0, 0, 0] = np.nan
    off[0, 1, 1, 1] = np.inf
    off[0, 2, 2, 2] = -1e30
    off[0, 3, 0, 1] = 3e38
    y = _run("DeformConv", [x, w, off], version=19)[0]
    assert y.shape == (1, 2, 3, 3)
    # only the output pixel that reads a NaN offset may be NaN
    bad = ~np.isfinite(y)
    assert not bad[..., 1:, :].any() and not bad[..., 0, 1:].any(), y


# NonMaxSuppression
def _nms_inputs():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11],
                       [0, 10.1, 1, 11.1], [0, 100, 1, 101]]], F32)
    scores = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], F32)
    return boxes, scores


@case("nms_huge_and_negative_max_output")
def _():
    boxes, scores = _nms_inputs()
    for m in (2**62, 2**31 - 1, 0, -5):
        _vs_ort("NonMaxSuppression", [boxes, scores, np.array([m], I64),
                                      np.array([0.5], F32), np.array([0.0], F32)],
                version=11, opset=11)


@case("nms_nan_boxes_scores_thresholds")
def _():
    boxes, scores = _nms_inputs()
    boxes[0, 1, 2] = np.nan
    boxes[0, 4] = [np.inf, -np.inf, np.inf, np.inf]
    scores[0, 0, 2] = np.nan
    for iou, th in ((0.5, 0.0), (np.nan, 0.0), (0.5, np.nan), (-1.0, -np.inf)):
        out = _run("NonMaxSuppression", [boxes, scores, np.array([10], I64),
                                         np.array([iou], F32), np.array([th], F32)],
                   version=11)[0]
        assert out.dtype == np.int64 and out.ndim == 2 and out.shape[1] == 3
        assert ((out[:, 0] == 0) & (out[:, 1] == 0) & (out[:, 2] >= 0) & (out[:, 2] < 6)).all()


@case("nms_bad_shapes")
def _():
    boxes, scores = _nms_inputs()
    _raises("NonMaxSuppression", [boxes[..., :3], scores], version=11)
    _raises("NonMaxSuppression", [boxes, scores[..., :5]], version=11)
    _raises("NonMaxSuppression", [boxes, np.concatenate([scores, scores])], version=11)
    _raises("NonMaxSuppression", [boxes, scores, np.array([2.0], F32)], version=11)
    _raises("NonMaxSuppression", [boxes, scores, np.array([2, 3], I64)], version=11)
    _raises("NonMaxSuppression", [boxes, scores], {"center_point_box": 2}, version=11)
    empty = _run("NonMaxSuppression", [np.zeros((1, 0, 4), F32), np.zeros((1, 3, 0), F32),
                                       np.array([5], I64)], version=11)[0]
    assert empty.shape == (0, 3)


# DFT / STFT
@case("dft_hostile")
def _():
    x = _x(2, 8, 1)
    for n in (0, -3):
        _both("DFT", [x, np.array(n, I64)], version=20, match="dft_length")
    for a in (2, -1, 3, -4):  # the complex axis and beyond
        _both("DFT", [x, None, np.array(a, I64)], version=20, match="axis")
    _raises("DFT", [_x(2, 8, 3)], version=20)
    _raises("DFT", [_x(8)], version=20)
    _raises("DFT", [x, np.array([4, 4], I64)], version=20)
    _raises("DFT", [x, np.array(4.0, F32)], version=20)
    _both("DFT", [_x(2, 1, 2)], {"inverse": 1, "onesided": 1}, version=20)
    _vs_ort("DFT", [x, np.array(5, I64), np.array(-2, I64)], const=(1, 2), version=20)
    empty = _run("DFT", [np.zeros((0, 8, 1), F32)], version=20)[0]
    assert empty.shape == (0, 8, 2)


@case("stft_hostile")
def _():
    x = _x(1, 16, 1)
    for step in (0, -2):
        _both("STFT", [x, np.array(step, I64), None, np.array(4, I64)], version=17)
    for n in (0, -1, 17):
        _both("STFT", [x, np.array(2, I64), None, np.array(n, I64)], version=17)
    _both("STFT", [x, np.array(2, I64), np.ones(5, F32), np.array(4, I64)], version=17)
    _raises("STFT", [x, np.array(2, I64), np.ones((2, 2), F32)], version=17)
    _raises("STFT", [_x(16, 1), np.array(2, I64)], version=17)
    _vs_ort("STFT", [x, np.array(3, I64), np.hanning(5).astype(F32), np.array(5, I64)],
            const=(1, 3), version=17, opset=17)


# RotaryEmbedding
@case("rotary_positions_out_of_range")
def _():
    x = _x(1, 2, 3, 4)
    cos, sin = _x(5, 2), _x(5, 2, seed=1)
    for bad in ([[0, 1, 5]], [[0, -1, 2]], [[0, 1, 2**40]]):
        _both("RotaryEmbedding", [x, cos, sin, np.array(bad, I64)], version=23,
              match="position_ids")


@case("rotary_bad_attrs")
def _():
    x, pos = _x(1, 2, 3, 4), np.zeros((1, 3), I64)
    cos = _x(5, 2)
    for rot in (3, 6, -2):
        _raises("RotaryEmbedding", [x, cos, cos, pos], {"rotary_embedding_dim": rot},
                version=23, match="rotary_embedding_dim")
    _raises("RotaryEmbedding", [_x(1, 3, 9), cos, cos, pos], {"num_heads": 2}, version=23)
    _raises("RotaryEmbedding", [_x(1, 3, 8), cos, cos, pos], version=23)
    _raises("RotaryEmbedding", [x, cos, _x(4, 2), pos], version=23)
    _raises("RotaryEmbedding", [x, cos, cos, pos.astype(F32)], version=23)
    _raises("RotaryEmbedding", [x, cos, cos, np.zeros((3,), I64)], version=23)
    _raises("RotaryEmbedding", [x, _x(1, 3, 3), _x(1, 3, 3)], version=23)


# TensorScatter
@case("tensorscatter_hostile_indices")
def _():
    past, upd = _x(2, 5, 3), _x(2, 2, 3, seed=1)
    for bad in ([0, 4], [-1, 0], [0, 2**62], [0, 2**63 - 1], [2**63 - 2, 0]):
        _both("TensorScatter", [past, upd, np.array(bad, I64)], version=24,
              match="write")
    _raises("TensorScatter", [past, upd, np.array([-1, 0], I64)], {"mode": "circular"},
            version=24)
    # circular wraps: compare with a NumPy reference
    idx = np.array([4, 2**40], I64)
    got = _run("TensorScatter", [past, upd, idx], {"mode": "circular"}, version=24)[0]
    want = past.copy()
    for b in range(2):
        for s in range(2):
            want[b, (idx[b] + s) % 5] = upd[b, s]
    np.testing.assert_array_equal(got, want)


@case("tensorscatter_bad_shapes")
def _():
    past = _x(2, 5, 3)
    _raises("TensorScatter", [past, _x(2, 6, 3)], version=24)
    _raises("TensorScatter", [past, _x(2, 2, 4)], version=24)
    _raises("TensorScatter", [past, _x(2, 2, 3).astype(np.float64)], version=24)
    _raises("TensorScatter", [past, _x(2, 2, 3), np.zeros(3, I64)], version=24)
    _raises("TensorScatter", [past, _x(2, 2, 3), np.zeros(2, F32)], version=24)
    _raises("TensorScatter", [past, _x(2, 5, 3)], {"axis": 0}, version=24)
    _raises("TensorScatter", [past, _x(2, 5, 3)], {"axis": 3}, version=24)
    _raises("TensorScatter", [past, _x(2, 5, 3)], {"mode": "ring"}, version=24)
    _raises("TensorScatter", [_x(2), _x(2)], version=24)


# MaxUnpool
@case("maxunpool_hostile")
def _():
    x = _x(1, 1, 2, 2)
    ok = np.array([[[[0, 3], [8, 15]]]], I64)
    _vs_ort("MaxUnpool", [x, ok], {"kernel_shape": [2, 2], "strides": [2, 2]}, version=11,
            opset=11)
    for bad in (16, -1, 2**62):
        ind = ok.copy()
        ind[0, 0, 1, 1] = bad
        _both("MaxUnpool", [x, ind], {"kernel_shape": [2, 2], "strides": [2, 2]}, version=11,
              match="indices")
    a = {"kernel_shape": [2, 2], "strides": [2, 2]}
    _raises("MaxUnpool", [x, ok], {"kernel_shape": [0, 2]}, version=11)
    _raises("MaxUnpool", [x, ok], {"kernel_shape": [2, 2], "strides": [-2, 2]}, version=11)
    _raises("MaxUnpool", [x, ok], {"kernel_shape": [2, 2], "pads": [0, 0, -1, 0]}, version=11)
    _raises("MaxUnpool", [x, ok], {"kernel_shape": [2]}, version=11)
    _raises("MaxUnpool", [x, ok.astype(np.int32)], a, version=11)
    _raises("MaxUnpool", [x, ok[..., :1]], a, version=11)
    _both("MaxUnpool", [x, ok, np.array([1, 1, 3, 3], I64)], a, const=(2,), version=11)
    _both("MaxUnpool", [x, ok, np.array([1, 1, 5], I64)], a, const=(2,), version=11)
    _raises("MaxUnpool", [x, ok], {"kernel_shape": [1, 1], "pads": [1, 1, 1, 1]}, version=11)


# ConvInteger
@case("convinteger_hostile")
def _():
    x = _rng(0).integers(0, 255, (1, 4, 5, 5)).astype(np.uint8)
    w = _rng(1).integers(0, 255, (2, 2, 3, 3)).astype(np.uint8)
    _vs_ort("ConvInteger", [x, w, np.array(3, np.uint8), np.array(5, np.uint8)],
            {"group": 2}, version=10, opset=10, rtol=0, atol=0)
    _raises("ConvInteger", [x, w], {"group": 3}, version=10)
    _raises("ConvInteger", [x, w], {"group": 0}, version=10)
    _raises("ConvInteger", [x, w], {"group": 2, "strides": [0, 1]}, version=10)
    _raises("ConvInteger", [x, w], {"group": 2, "dilations": [1, -1]}, version=10)
    _raises("ConvInteger", [x, w], {"group": 2, "pads": [-1, 0, 0, 0]}, version=10)
    _raises("ConvInteger", [x, w], {"group": 2, "kernel_shape": [2, 2]}, version=10)
    _raises("ConvInteger", [x[..., :2, :2], w], {"group": 2}, version=10)
    _raises("ConvInteger", [x.astype(np.int16), w], {"group": 2}, version=10)
    _raises("ConvInteger", [x, w, np.array([1, 2], np.uint8)], {"group": 2}, version=10)
    _raises("ConvInteger", [x, w, np.array(1, np.int8)], {"group": 2}, version=10)
    _raises("ConvInteger", [x, w, None, np.array([1, 2, 3], np.uint8)], {"group": 2},
            version=10)
    _raises("ConvInteger", [x, w[:, :, 0]], {"group": 2}, version=10)


# Det
@case("det_hostile")
def _():
    _raises("Det", [_x(2, 3, 4)])
    _raises("Det", [_x(3)])
    _raises("Det", [np.eye(3, dtype=np.int32)])
    a = _x(4, 3, 3).astype(np.float64)
    a[0, 1, 1] = np.nan
    a[1, 0, 0] = np.inf
    a[2] = 1e300
    a[3] = np.diag([1e200, 1e200, 1e-300])
    got = _run("Det", [a])[0]
    want = np.linalg.det(a)
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert _run("Det", [np.zeros((0, 2, 2), F32)])[0].shape == (0,)
    np.testing.assert_allclose(_run("Det", [np.zeros((2, 0, 0), F32)])[0], np.ones(2, F32))


# QuantizeLinear / DequantizeLinear sub-byte and blocked
@case("quantize_blocked_hostile")
def _():
    from edgert import dtypes

    x, s = _x(2, 6), np.ones((2, 3), F32)
    _raises("QuantizeLinear", [x, s], {"axis": 1, "block_size": -2})
    _raises("QuantizeLinear", [x, s], {"axis": 1, "block_size": 4})  # wrong blocked shape
    _raises("QuantizeLinear", [x, s], {"axis": 5, "block_size": 2})
    _raises("QuantizeLinear", [x, np.ones(5, F32)], {"axis": 1})
    _raises("QuantizeLinear", [x, np.ones(6, F32), np.zeros(5, np.int8)], {"axis": 1})
    _raises("QuantizeLinear", [x, np.ones(6, F32)], {"axis": -3})
    _raises("QuantizeLinear", [x, np.float32(1)], {"output_dtype": 1})
    _raises("DequantizeLinear", [np.zeros((2, 6), np.int8), np.ones((2, 3), F32)],
            {"axis": 1, "block_size": 0})
    _raises("DequantizeLinear", [np.zeros((2, 6), np.int8), np.ones(6, F32),
                                 np.zeros(4, np.int8)], {"axis": 1})
    _raises("DequantizeLinear", [np.zeros((2, 6), np.int8), np.ones(6, np.int32)])
    # int4: saturates to [-8, 7]
    y = _run("QuantizeLinear", [np.array([-100, -8.4, 0.5, 7.6, 1e30, -np.inf], F32),
                                np.float32(1)], {"edgert_to_type": dtypes.INT4,
                                                 "output_dtype": dtypes.INT4})[0]
    np.testing.assert_array_equal(y, np.array([-8, -8, 0, 7, 7, -8], np.int8))


# Sequences
@case("sequence_positions")
def _():
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext
    from edgert.runtime.values import value_info

    seq = [np.zeros(2, F32), np.ones(3, F32)]

    def run(op, values, attrs=None):
        k = registry().lookup(op, "", 18)(OpContext(op, "n", attrs or {}, "", 18))
        infos = [None if v is None else value_info(v) for v in values]
        k.prepare(infos)
        return k.invoke(values, [None] * 1)

    def bad(op, values, attrs=None):
        try:
            run(op, values, attrs)
        except EdgeRTError as e:
            assert op in str(e), str(e)
            return
        raise AssertionError(f"{op}: no error")

    for p in (2, -3, 2**40, -(2**62)):
        bad("SequenceAt", [seq, np.array(p, I64)])
        bad("SequenceErase", [seq, np.array(p, I64)])
    bad("SequenceInsert", [seq, np.zeros(1, F32), np.array(3, I64)])
    bad("SequenceInsert", [seq, np.zeros(1, F32), np.array(-3, I64)])
    bad("SequenceInsert", [seq, np.zeros(1, np.float64)])
    bad("SequenceAt", [seq, np.array(0.0, F32)])
    bad("SequenceAt", [seq, np.array([0, 1], I64)])
    bad("SequenceAt", [np.zeros(2, F32), np.array(0, I64)])
    bad("SequenceAt", [[], np.array(0, I64)])
    bad("SequenceErase", [[]])
    bad("ConcatFromSequence", [[]], {"axis": 0})
    bad("ConcatFromSequence", [seq], {"axis": 1})
    bad("ConcatFromSequence", [seq], {"axis": 0, "new_axis": 1})
    bad("ConcatFromSequence", [seq], {"axis": 0, "new_axis": 2})
    bad("ConcatFromSequence", [[np.zeros(2, F32), np.zeros(2, I64)]], {"axis": 0})
    bad("ConcatFromSequence", [seq])
    bad("SplitToSequence", [np.zeros((2, 5), F32), np.array([2, 2], I64)], {"axis": 1})
    bad("SplitToSequence", [np.zeros((2, 5), F32), np.array([6, -1], I64)], {"axis": 1})
    bad("SplitToSequence", [np.zeros((2, 5), F32), np.array(0, I64)], {"axis": 1})
    bad("SplitToSequence", [np.zeros((2, 5), F32), np.array(-2, I64)], {"axis": 1})
    bad("SplitToSequence", [np.zeros((2, 5), F32)], {"axis": 2})
    bad("SplitToSequence", [np.zeros((), F32)])
    bad("SplitToSequence", [np.zeros((2, 5), F32), np.array([[5]], I64)], {"axis": 1})
    bad("OptionalGetElement", [None])
    bad("SequenceEmpty", [], {"dtype": 12345})
    out = run("SplitToSequence", [np.arange(5, dtype=F32), np.array(2, I64)])[0]
    assert [o.tolist() for o in out] == [[0, 1], [2, 3], [4]]


# Zero-size dims: every op returns an empty result of the right shape (or a clear error)
@case("empty_tensors")
def _():
    cases = [
        ("GridSample", [_x(0, 2, 3, 4), _x(0, 2, 2, 2)], {}, (0, 2, 2, 2), 20),
        ("GridSample", [_x(1, 0, 3, 4), _x(1, 2, 2, 2)], {}, (1, 0, 2, 2), 20),
        ("GridSample", [_x(1, 2, 3, 4), _x(1, 0, 2, 2)], {}, (1, 2, 0, 2), 20),
        ("GridSample", [_x(1, 2, 3), _x(1, 4, 1)], {}, (1, 2, 4), 20),
        ("RoiAlign", [_x(1, 2, 4, 4), _x(0, 4), np.zeros(0, I64)], {}, (0, 2, 1, 1), 16),
        ("RoiAlign", [_x(0, 2, 4, 4), _x(0, 4), np.zeros(0, I64)], {}, (0, 2, 1, 1), 16),
        ("DeformConv", [_x(0, 2, 4, 4), _x(3, 2, 2, 2), _x(0, 8, 3, 3)], {}, (0, 3, 3, 3), 19),
        ("Col2Im", [_x(0, 4, 9), np.array([4, 4], I64), np.array([2, 2], I64)], {},
         (0, 1, 4, 4), 18),
        ("MaxUnpool", [_x(0, 1, 2, 2), np.zeros((0, 1, 2, 2), I64)],
         {"kernel_shape": [2, 2], "strides": [2, 2]}, (0, 1, 4, 4), 11),
        ("RotaryEmbedding", [_x(1, 2, 0, 4), _x(5, 2), _x(5, 2), np.zeros((1, 0), I64)], {},
         (1, 2, 0, 4), 23),
        ("RotaryEmbedding", [_x(0, 3, 8), _x(5, 2), _x(5, 2), np.zeros((0, 3), I64)],
         {"num_heads": 2}, (0, 3, 8), 23),
        ("TensorScatter", [_x(2, 5, 3), _x(2, 0, 3), np.array([5, 1], I64)], {}, (2, 5, 3), 24),
        ("STFT", [_x(0, 16, 1), np.array(4, I64), None, np.array(4, I64)], {}, (0, 4, 3, 2),
         17),
        ("Det", [_x(0, 3, 3)], {}, (0,), 22),
        ("ConvInteger", [np.zeros((0, 2, 4, 4), np.uint8), np.zeros((3, 2, 2, 2), np.uint8)],
         {}, (0, 3, 3, 3), 10),
        ("CenterCropPad", [_x(0, 3), np.array([2, 4], I64)], {}, (2, 4), 18),
        ("AffineGrid", [_x(0, 2, 3), np.array([0, 1, 3, 4], I64)], {}, (0, 3, 4, 2), 20),
    ]
    for op, inputs, attrs, want, version in cases:
        ys = _run(op, inputs, attrs, const=tuple(range(1, len(inputs))), version=version)
        assert ys[0].shape == want, (op, ys[0].shape, want)
        if op == "CenterCropPad":
            assert not ys[0].any()
    # an empty image with points to sample is an error, not a read of nothing
    _raises("GridSample", [_x(1, 2, 0, 4), _x(1, 2, 2, 2)], version=20)
    # TensorScatter's write index past the end is fine when nothing is written
    np.testing.assert_array_equal(
        _run("TensorScatter", [np.ones((1, 2), F32), np.ones((1, 0), F32),
                               np.array([2], I64)], {"axis": 1}, version=24)[0],
        np.ones((1, 2), F32))


# ----- whole models: importer, `.edgert` files, interpreter feeds ---------------------------------
def _onnx_model(nodes, inputs, outputs, inits=(), opset=21, extra_opsets=()):
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    m.ir_version = 10
    return m


def _interp(model):
    from edgert.converter import convert
    from edgert.runtime.interpreter import Interpreter

    return Interpreter(convert(model))


def _expect(cls, fn, match=None):
    try:
        fn()
    except cls as e:
        if match is not None:
            assert match.lower() in str(e).lower(), f"expected {match!r} in: {e}"
        return
    raise AssertionError(f"no {cls.__name__} raised")


def _write_unchecked(model) -> bytes:
    """Bytes of ``model`` written without the writer's soundness checks (a hand-made file)."""
    import edgert.format.writer as writer

    orig = writer.check_model
    writer.check_model = lambda *a, **k: None
    try:
        return writer.write_model(model)
    finally:
        writer.check_model = orig


def _model_with_w(w_def):
    from edgert import dtypes
    from edgert.format import ModelDef, OperatorDef, SubGraphDef, TensorDef

    ts = [TensorDef("x", dtypes.FLOAT, (2,)), w_def, TensorDef("y", dtypes.FLOAT, (2,))]
    return ModelDef([SubGraphDef("main", ts, [0], [2],
                                 [OperatorDef("Add", [0, 1], [2], name="add", version=14)])])


@case("edgert_file_bad_kinds_and_narrow_constants")
def _():
    from edgert import dtypes
    from edgert.errors import ModelFormatError
    from edgert.format import TensorDef, read_model
    from edgert.runtime.interpreter import Interpreter

    ones = np.ones(2, F32)
    bad = [
        (TensorDef("w", dtypes.FLOAT, (2,), data=ones, kind=1), "sequence value cannot hold"),
        (TensorDef("w", dtypes.FLOAT, (2,), data=ones, kind=3), "cannot hold constant"),
        (TensorDef("w", dtypes.FLOAT, (2,), data=ones, kind=7), "unknown value kind 7"),
        (TensorDef("w", dtypes.FLOAT, (2,), kind=6), "unknown value kind 6"),
        (TensorDef("w", dtypes.FLOAT, (2,), kind=4), "map value needs an int64 or string key"),
        (TensorDef("w", dtypes.FLOAT, (2,), kind=5, key_dtype=dtypes.FLOAT), "key dtype"),
        (TensorDef("w", dtypes.FLOAT, (2,), key_dtype=dtypes.INT64), "has no key dtype"),
        (TensorDef("w", dtypes.FLOAT, (2,), kind=-1), "unknown value kind"),
        (TensorDef("w", dtypes.INT4, (2,), data=np.array([3, 9], np.int8)), "range of int4"),
        (TensorDef("w", dtypes.INT4, (2,), data=np.array([-9, 0], np.int8)), "range of int4"),
        (TensorDef("w", dtypes.UINT4, (2,), data=np.array([15, 16], np.uint8)), "uint4"),
        (TensorDef("w", dtypes.INT2, (2,), data=np.array([-3, 1], np.int8)), "int2"),
        (TensorDef("w", dtypes.UINT2, (2,), data=np.array([3, 4], np.uint8)), "uint2"),
        (TensorDef("w", dtypes.FLOAT4E2M1, (2,), data=np.array([3, 16], np.uint8)), "float4"),
    ]
    for t, match in bad:
        data = _write_unchecked(_model_with_w(t))
        _expect(ModelFormatError, lambda: read_model(data), match)
        _expect(ModelFormatError, lambda: Interpreter(data), match)
    # a sequence value consumed as a tensor, never produced
    data = _write_unchecked(_model_with_w(TensorDef("w", dtypes.FLOAT, (2,), kind=1)))
    _expect(ModelFormatError, lambda: Interpreter(data))


@case("narrow_int_feeds_checked")
def _():
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    from edgert.errors import InputError

    x = helper.make_tensor_value_info("x", TP.INT4, [3])
    y = helper.make_tensor_value_info("y", TP.FLOAT, None)
    for node, inits in ((helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT), []),
                        (helper.make_node("DequantizeLinear", ["x", "s"], ["y"]),
                         [numpy_helper.from_array(np.float32(0.5), "s")])):
        it = _interp(_onnx_model([node], [x], [y], inits))
        good = np.array([-8, 0, 7], np.int8)
        scale = 1.0 if node.op_type == "Cast" else 0.5
        np.testing.assert_array_equal(it.run({"x": good})["y"], good.astype(F32) * scale)
        # the same shape and dtype again (the fast feed path) with values outside int4
        for bad in ([100, 0, 0], [0, -9, 0], [8, 0, 0]):
            _expect(InputError, lambda: it.run({"x": np.array(bad, np.int8)}), "int4")
    # the elements of a sequence input are checked the same way
    seq = helper.make_tensor_sequence_value_info("s", TP.UINT4, None)
    n = helper.make_tensor_value_info("n", TP.INT64, None)
    it = _interp(_onnx_model([helper.make_node("SequenceLength", ["s"], ["n"])], [seq], [n],
                             opset=21))
    assert int(it.run({"s": [np.array([0, 15], np.uint8)]})["n"]) == 1
    _expect(InputError, lambda: it.run({"s": [np.array([0, 16], np.uint8)]}), "uint4")


@case("truncated_packed_initializers")
def _():
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper

    from edgert.errors import ModelImportError

    for code, n, raw in ((TP.INT4, 5, b"\x12\x34"), (TP.UINT4, 3, b"\x12"),
                         (TP.FLOAT4E2M1, 3, b"\x12"), (TP.UINT2, 9, b"\x12\x34"),
                         (TP.INT2, 5, b"\x12")):
        t = onnx.TensorProto()
        t.name, t.data_type, t.raw_data = "w", code, raw
        t.dims.extend([n])
        y = helper.make_tensor_value_info("y", TP.FLOAT, None)
        m = _onnx_model([helper.make_node("Cast", ["w"], ["y"], to=TP.FLOAT)], [], [y], [t])
        _expect(ModelImportError, lambda: _interp(m), "too small")


@case("arena_too_large")
def _():
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("x", TP.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TP.FLOAT, None)
    for size in (2**22, 2**40):  # 64 TiB (no allocator gives it); overflows 64-bit sizes
        s = numpy_helper.from_array(np.array([size, size], I64), "s")
        m = _onnx_model([helper.make_node("CenterCropPad", ["x", "s"], ["y"])], [x], [y], [s])
        _expect(EdgeRTError, lambda: _interp(m).run({"x": np.ones((2, 2), F32)}))


@case("gradient_hostile")
def _():
    from onnx import TensorProto as TP
    from onnx import helper

    from edgert.errors import UnsupportedOpError

    td = "ai.onnx.preview.training"

    def model(fwd, xs, y, outs):
        a = helper.make_tensor_value_info("a", TP.FLOAT, [2, 3])
        b = helper.make_tensor_value_info("b", TP.FLOAT, [3])
        grad = helper.make_node("Gradient", ["a", "b"], list(outs), domain=td, xs=xs, y=y)
        return _onnx_model(fwd + [grad], [a, b],
                           [helper.make_tensor_value_info(o, TP.FLOAT, None) for o in outs],
                           opset=18, extra_opsets=[helper.make_opsetid(td, 1)])

    mul = [helper.make_node("Mul", ["a", "b"], ["c"])]
    relu = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Mul", ["r", "b"], ["c"])]
    for fwd, xs, y, outs, match in ((relu, ["a", "b"], "c", ("da", "db"), "Relu"),
                                    (mul, ["a"], "nosuch", ("da",), "nosuch"),
                                    (mul, ["zz"], "c", ("da",), "zz"),
                                    (mul, ["a"], "", ("da",), "required"),
                                    (mul, ["a"], "c", ("da", "db"), "outputs")):
        _expect(UnsupportedOpError, lambda: _interp(model(fwd, xs, y, outs)), match)
    a, b = _x(2, 3), np.zeros(3, F32)  # d(a / 0): inf and nan, as the formulas give
    div = [helper.make_node("Div", ["a", "b"], ["c"])]
    got = _interp(model(div, ["a", "b"], "c", ("da", "db"))).run({"a": a, "b": b})
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got["da"], np.ones_like(a) / b)
        np.testing.assert_array_equal(got["db"], (-(a / b) / b).sum(axis=0))


@case("float16_wrappers_hostile")
def _():
    h = lambda *s: np.ones(s, np.float16)  # noqa: E731
    _raises("MatMul", [h(2, 3), np.ones((3, 2), F32)], match="float16")
    _raises("MatMul", [h(2, 3), h(4, 2)])
    _raises("MatMul", [h(2, 3), np.ones((3, 2), np.int32)])
    _raises("Gemm", [h(2, 3), h(4, 2), h(2)])
    _raises("Gemm", [h(2, 3), h(3, 2), np.ones(2, F32)], match="float16")
    _raises("Conv", [h(1, 4, 5, 5), h(2, 3, 3, 3)], {"group": 2})
    _raises("Conv", [h(1, 4, 5, 5), h(2, 2, 3, 3)], {"group": 2, "strides": [0, 1]})
    _raises("Conv", [h(1, 4, 5, 5), h(2, 2, 3, 3), np.ones(2, np.float64)], {"group": 2})
    _raises("ConvTranspose", [h(1, 4, 5, 5), h(4, 2, 3, 3)], {"group": 2, "strides": [0, 1]})
    assert _run("MatMul", [h(0, 3), h(3, 2)])[0].shape == (0, 2)
    assert _run("Conv", [h(0, 4, 5, 5), h(2, 2, 3, 3)], {"group": 2})[0].shape == (0, 2, 3, 3)


@case("sequence_model_runtime_positions")
def _():
    from onnx import TensorProto as TP
    from onnx import helper

    from edgert.errors import InputError

    x = helper.make_tensor_value_info("x", TP.FLOAT, [2, 5])
    p = helper.make_tensor_value_info("p", TP.INT64, [])
    s = helper.make_tensor_value_info("s", TP.INT64, [2])
    y = helper.make_tensor_value_info("y", TP.FLOAT, None)
    feed = np.arange(10, dtype=F32).reshape(2, 5)
    it = _interp(_onnx_model([helper.make_node("SplitToSequence", ["x"], ["q"], axis=1),
                              helper.make_node("SequenceAt", ["q", "p"], ["y"])],
                             [x, p], [y], opset=18))
    np.testing.assert_array_equal(it.run({"x": feed, "p": np.array(-5, I64)})["y"], feed[:, :1])
    for bad in (5, -6, 2**62):
        _expect(InputError, lambda: it.run({"x": feed, "p": np.array(bad, I64)}), "position")
    it = _interp(_onnx_model([helper.make_node("SplitToSequence", ["x", "s"], ["q"], axis=1),
                              helper.make_node("ConcatFromSequence", ["q"], ["y"], axis=1)],
                             [x, s], [y], opset=18))
    np.testing.assert_array_equal(it.run({"x": feed, "s": np.array([2, 3], I64)})["y"], feed)
    for bad in ([7, -2], [2, 2]):
        _expect(InputError, lambda: it.run({"x": feed, "s": np.array(bad, I64)}), "split")


def _case_ids():
    return list(CASES)


# ----- the child process --------------------------------------------------------------------------
def _child_main() -> None:
    """Run every case, printing one JSON line per case as soon as it is done."""
    import faulthandler
    import warnings

    faulthandler.enable()
    warnings.simplefilter("ignore")
    for name, fn in CASES.items():
        print(json.dumps({"case": name, "start": True}), flush=True)
        try:
            fn()
            res = {"case": name, "ok": True}
        except BaseException as e:  # noqa: BLE001 - report anything, including leaks
            tb = traceback.format_exc(limit=6)
            res = {"case": name, "ok": False,
                   "error": f"{type(e).__name__}: {e}\n{tb}"}
        print(json.dumps(res), flush=True)


@pytest.fixture(scope="module")
def child_results():
    here = pathlib.Path(__file__).resolve().parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(here), str(here.parent),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", "import test_robustness_ops as m; m._child_main()"],
        cwd=here, env=env, capture_output=True, text=True, timeout=600,
    )
    results, running = {}, None
    for line in proc.stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("start"):
            running = rec["case"]
        else:
            results[rec["case"]] = rec
            running = None
    return results, running, proc


@pytest.mark.parametrize("name", _case_ids())
def test_hostile_case(child_results, name):
    results, running, proc = child_results
    if name not in results:
        pytest.fail(f"the child process died (exit {proc.returncode}) while running "
                    f"{running!r}; stderr tail:\n{proc.stderr[-3000:]}")
    rec = results[name]
    assert rec["ok"], rec["error"]


if __name__ == "__main__":
    _child_main()
