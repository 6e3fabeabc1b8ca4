"""NumPy's BLAS called from compiled kernels (``_native/openblas.py``) and the fused Conv paths
built on it.

References: ``np.matmul`` for the GEMM splits (same BLAS, so only the blocking differs) and
onnxruntime for the fused convs, at one and two threads (the split and the serial builds).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.runtime.kernels.cpu import blas
from edgert.runtime.kernels.cpu._native import openblas
from edgert.runtime.kernels.cpu.conv import ConvPath, ConvTuning

pytestmark = pytest.mark.skipif(openblas.routines() is None,
                                reason="NumPy's BLAS is not an OpenBLAS reachable here")


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize(
    "a_shape,b_shape",
    [
        ((64, 144), (144, 1815)),  # column split
        ((1000, 512), (512, 13)),  # too few columns: row split
        ((8, 40), (3, 40, 700)),  # a batch of products sharing A
        ((4, 6, 30), (2, 4, 30, 90)),  # grouped: A[g] pairs with B[n, g]
        ((3, 9, 17), (3, 17, 500)),
    ],
)
def test_gemm_split_matches_numpy(dt, a_shape, b_shape, monkeypatch):
    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 1)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape).astype(dt)
    b = rng.standard_normal(b_shape).astype(dt)
    out = np.full(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (a_shape[-2], b_shape[-1]),
                  np.nan, dt)
    assert blas._threaded_openblas(a, b, out, 2)
    tol = 1e-5 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=tol, atol=tol * 10)


def test_matmul_on_column_views(monkeypatch):
    """Strided 2-D views (a column block of a wider matrix) are read and written in place."""
    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 1)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 33)).astype(np.float32)
    b = rng.standard_normal((33, 300)).astype(np.float32)[:, 7:250]
    big = np.full((20, 300), -1.0, np.float32)
    out = big[:, 5:248]
    blas.matmul(a, b, out, threads=2)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    assert (big[:, :5] == -1).all() and (big[:, 248:] == -1).all()  # nothing outside written


def test_matmul_falls_back_where_openblas_does_not_apply(monkeypatch):
    """Overlapping operands, other dtypes and a batched A with a 2-D B go to np.matmul."""
    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 1)
    rng = np.random.default_rng(2)
    buf = rng.standard_normal((40, 40)).astype(np.float32)
    assert not blas._threaded_openblas(buf[:, :20], buf[:20, :], buf[:, :], 2)
    ai = rng.integers(-5, 5, (4, 6)).astype(np.int32)
    assert not blas._threaded_openblas(ai, ai.T.copy(), np.empty((4, 4), np.int32), 2)
    a3 = rng.standard_normal((2, 5, 6)).astype(np.float32)
    b2 = rng.standard_normal((6, 7)).astype(np.float32)
    assert not blas._threaded_openblas(a3, b2, np.empty((2, 5, 7), np.float32), 2)
    out = np.empty((2, 5, 7), np.float32)
    blas.matmul(a3, b2, out, threads=2)
    np.testing.assert_allclose(out, a3 @ b2, rtol=1e-5, atol=1e-5)


CONV_CASES = [
    # (x shape, w shape, attrs): 3x3 convs take _conv_rows_blas, 1x1 ones _pointwise_blas
    ((1, 16, 23, 21), (40, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 8, 17, 19), (36, 8, 3, 3), {"pads": [0, 1, 2, 1], "strides": [2, 1]}),
    ((1, 6, 30, 30), (40, 6, 5, 5), {"pads": [2, 2, 2, 2], "dilations": [2, 1]}),
    ((1, 24, 40, 40), (64, 24, 1, 1), {}),  # pointwise, column blocks
    ((2, 40, 5, 5), (80, 40, 1, 1), {}),  # pointwise on a small plane: output-channel split
    ((1, 16, 9, 9), (136, 16, 1, 1), {}),  # more channels than positions: output-channel split
]


# Several row blocks per thread; every split tried; these shapes kept off fgemm and the fused
# small pointwise call.
FUSED = ConvTuning(col_block_bytes=4096, split_min_macs=1, implicit_max_m=0, implicit_max_p=0,
                   pointwise_small_macs=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("act", [None, "Relu"])
def test_fused_blas_conv_matches_onnxruntime(case, act, threads):
    x_shape, w_shape, attrs = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    want = ort_node("Conv", [x, w, b], attrs)[0]
    if act == "Relu":
        want = np.maximum(want, 0)
        attrs = dict(attrs, activation="Relu")
    path = ConvPath.POINTWISE_BLAS if w_shape[2] == 1 else ConvPath.IM2COL_BLAS_ROWS
    got = run_kernel("Conv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert",
                     num_threads=threads, path=path, tuning=FUSED)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_fused_paths_are_selected():
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    cls = registry().lookup("Conv", "", 21)
    for w_shape, want in (((8, 4, 3, 3), ConvPath.IM2COL_BLAS_ROWS),
                          ((8, 4, 1, 1), ConvPath.POINTWISE_BLAS)):
        k = cls(OpContext("Conv", "c", {"pads": [1, 1, 1, 1]} if w_shape[2] == 3 else {},
                          "", 21, 1, tuning=FUSED))
        w = np.random.default_rng(0).standard_normal(w_shape).astype(np.float32)  # distinct rows
        k.prepare([TensorInfo((1, 4, 9, 9), np.float32), TensorInfo(w_shape, np.float32, w)])
        assert k.path is want
