"""``edgert.Conv`` with a fused residual ``Z`` (fourth input): ``Y = act(conv(X, W) + B + Z)``.

The reference is onnxruntime's plain Conv, with ``Z`` and the activation applied in NumPy. Every
conv path is covered: the pointwise BLAS path and the direct kernel (dconv.py) add ``Z`` in their
epilogues (group 1 and grouped, column and output-channel splits, 1 and 2 threads); the others
run without their activation and are followed by one ``act(y + z)`` pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.kernels.cpu.conv import ConvPath, ConvTuning, kernel
from edgert.runtime.registry import OpContext, TensorInfo

CASES = [
    # (x shape, w shape, attrs, the path the kernel must take; None: one that runs a separate
    # act(y + z) pass)
    ((1, 24, 20, 20), (32, 24, 1, 1), {}, ConvPath.POINTWISE_BLAS),
    ((2, 40, 5, 5), (48, 40, 1, 1), {}, ConvPath.POINTWISE_BLAS),  # output-channel split
    ((1, 16, 12, 12), (16, 4, 1, 1), {"group": 4}, ConvPath.POINTWISE_BLAS),  # ShuffleNet's
    ((1, 16, 3, 3), (32, 4, 1, 1), {"group": 4}, ConvPath.POINTWISE_BLAS),
    ((1, 16, 11, 13), (24, 16, 3, 3), {"pads": [1, 1, 1, 1]}, ConvPath.DIRECT),
    ((2, 8, 9, 9), (20, 8, 3, 3), {"pads": [1, 0, 1, 2], "strides": [2, 1]}, ConvPath.DIRECT),
    ((1, 4, 9, 9), (8, 4, 3, 3), {"pads": [1, 1, 1, 1]}, None),  # im2col / implicit
    ((1, 12, 14, 14), (12, 1, 3, 3), {"group": 12, "pads": [1, 1, 1, 1]}, None),
    ((2, 6, 17), (8, 6, 3), {"pads": [1, 1]}, None),  # 1-D
    ((1, 3, 2, 2), (4, 3, 1, 1), {}, ConvPath.POINTWISE_SMALL),  # a few MACs
    ((1, 4, 2, 3), (4, 2, 1, 1), {"group": 2}, ConvPath.POINTWISE_BLAS),  # grouped, few MACs
]
# every split tried; the BLAS path for small pointwise layers too
SPLIT = ConvTuning(split_min_macs=1)
BLAS_PW = ConvTuning(split_min_macs=1, pointwise_small_macs=0)


def _reference(x, w, b, z, attrs, act):
    y = ort_node("Conv", [x, w] + ([b] if b is not None else []), attrs)[0] + z
    if act == "Relu":
        return np.maximum(y, 0)
    if act == "Clip":
        return np.clip(y, -0.5, 0.5)
    return y


def _kernel(x, w, b, z, attrs, const=(1, 2), tuning=None):
    cls = registry().lookup("Conv", "edgert", 1)
    k = cls(OpContext("Conv", "c", attrs, "edgert", 1, 1, tuning=tuning))
    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w if 1 in const else None),
             None if b is None else TensorInfo(b.shape, b.dtype, b if 2 in const else None)]
    if z is not None:
        infos.append(TensorInfo(z.shape, z.dtype))
    k.prepare(infos)
    return k


def _check_twice(inputs, attrs, threads, want, tuning):
    """Run edgert.Conv twice on ``threads`` threads (the second call takes the remembered
    fast path) and compare with ``want``."""
    for _ in range(2):
        got = run_kernel("Conv", inputs, attrs, const_inputs=(1, 2), domain="edgert",
                         num_threads=threads, tuning=tuning)[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act", [None, "Relu", "Clip"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_residual_matches_onnxruntime(case, act, threads):
    x_shape, w_shape, attrs, path = CASES[case]
    tuning = BLAS_PW if path is ConvPath.POINTWISE_BLAS else SPLIT
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if case != 2 else None
    want_no_z = ort_node("Conv", [x, w] + ([b] if b is not None else []), attrs)[0]
    z = rng.standard_normal(want_no_z.shape).astype(np.float32)
    want = _reference(x, w, b, z, attrs, act)
    kattrs = dict(attrs)
    if act is not None:
        kattrs["activation"] = act
        if act == "Clip":
            kattrs["activation_params"] = [-0.5, 0.5]
    k = _kernel(x, w, b, z, kattrs, tuning=tuning)
    if path is None:
        assert k.sum_after, k.path
    else:
        assert k.path is path and not k.sum_after
    _check_twice([x, w, b, z], kattrs, threads, want, tuning)


def test_residual_with_weights_known_only_at_run_time_and_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 6, 6))
    w = rng.standard_normal((8, 8, 1, 1))
    b = rng.standard_normal(8)
    z = rng.standard_normal((1, 8, 6, 6))
    want = np.maximum(np.einsum("mc,nchw->nmhw", w[:, :, 0, 0], x) + b[None, :, None, None] + z,
                      0)
    got = run_kernel("Conv", [x, w, b, z], {"activation": "Relu"}, domain="edgert")[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_residual_remembered_call_sees_a_new_residual_array():
    """The remembered call of a constant-weight conv is keyed on Z's identity too."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 16, 1, 1)).astype(np.float32)
    b = np.zeros(16, np.float32)
    k = _kernel(x, w, b, np.zeros((1, 16, 9, 9), np.float32), {})
    y = np.empty((1, 16, 9, 9), np.float32)
    for seed in (5, 6):
        z = np.random.default_rng(seed).standard_normal((1, 16, 9, 9)).astype(np.float32)
        k.invoke([x, w, b, z], [y])
        want = np.einsum("mc,nchw->nmhw", w[:, :, 0, 0], x) + z
        np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def test_residual_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((4, 4, 1, 1), np.float32)
    b = np.zeros(4, np.float32)
    with pytest.raises(ShapeError, match="residual Z"):
        _kernel(x, w, b, np.zeros((1, 4, 5, 4), np.float32), {})
    with pytest.raises(DTypeError):
        _kernel(x, w, b, np.zeros((1, 4, 5, 5), np.float64), {})
    cls = registry().lookup("Conv", "", 21)
    k = cls(OpContext("Conv", "c", {}, "", 21, 1))
    with pytest.raises(KernelError, match="edgert.Conv"):
        k.prepare([TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w),
                   TensorInfo(b.shape, b.dtype, b), TensorInfo(x.shape, x.dtype)])


def test_pointwise_residual_is_in_the_blas_epilogue(monkeypatch):
    """No separate pass on the pointwise BLAS path (its activation stays in the kernel)."""
    x = np.zeros((1, 8, 30, 30), np.float32)
    w = np.random.default_rng(0).standard_normal((8, 8, 1, 1)).astype(np.float32)  # distinct rows
    k = _kernel(x, w, np.zeros(8, np.float32), x, {"activation": "Relu"}, tuning=BLAS_PW)
    if k.path is not ConvPath.POINTWISE_BLAS:
        pytest.skip("no callable BLAS here")
    assert not k.sum_after and k.plan.act.active
    called = []
    monkeypatch.setattr(kernel, "sum_epilogue", lambda *a: called.append(a))
    k.invoke([x, w, np.zeros(8, np.float32), x], [np.empty_like(x)])
    assert not called


# ----- fused channel shuffle ----------------------------------------------------------------------
def _shuffled(y, g):
    n, m = y.shape[:2]
    return y.reshape((n, g, m // g) + y.shape[2:]).swapaxes(1, 2).reshape(y.shape)


SHUFFLE_CASES = [
    # (x shape, w shape, attrs incl. channel_shuffle, native path?)
    ((1, 16, 12, 12), (16, 4, 1, 1), {"group": 4}, True),  # column blocks
    ((2, 24, 4, 4), (36, 8, 1, 1), {"group": 3}, True),  # small planes: output-channel split
    ((1, 8, 7, 7), (12, 2, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}, False),
    ((1, 8, 9, 9), (12, 8, 1, 1), {}, False),  # group 1, shuffled by 3 (attr below)
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_z", [False, True])
@pytest.mark.parametrize("case", range(len(SHUFFLE_CASES)))
def test_channel_shuffle_in_the_conv(case, with_z, threads):
    x_shape, w_shape, attrs, native = SHUFFLE_CASES[case]
    g = attrs.get("group", 3)
    rng = np.random.default_rng(20 + case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    plain = ort_node("Conv", [x, w, b], attrs)[0]
    z = rng.standard_normal(plain.shape).astype(np.float32) if with_z else None
    want = _shuffled(np.maximum(plain + (z if with_z else 0), 0), g)
    kattrs = dict(attrs, activation="Relu", channel_shuffle=g)
    assert _kernel(x, w, b, z, kattrs, tuning=BLAS_PW).plan.shuffle == native
    _check_twice([x, w, b] + ([z] if with_z else []), kattrs, threads, want, BLAS_PW)


def test_channel_shuffle_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((6, 4, 1, 1), np.float32)
    with pytest.raises(ShapeError, match="channel_shuffle"):
        run_kernel("Conv", [x, w], {"channel_shuffle": 4}, const_inputs=(1,), domain="edgert")
    with pytest.raises(KernelError, match="edgert.Conv"):
        run_kernel("Conv", [x, w], {"channel_shuffle": 2}, const_inputs=(1,))
