"""Gemm and MatMul CPU kernels against onnxruntime, and the fused epilogue against NumPy
formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.kernels.cpu.epilogue import (
    ACT_NONE,
    Activation,
    apply_bias_activation,
    apply_col_bias_activation,
    parse_activation,
)


def rand(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def check(op: str, inputs: list, attrs: dict, const=(), domain: str = "") -> np.ndarray:
    got = run_kernel(op, inputs, attrs, const_inputs=const, domain=domain)[0]
    want = ort_node(op, inputs, attrs)[0]
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return got


# ----- Gemm -------------------------------------------------------------------------------------
C_SHAPES = {
    "none": None,
    "col_vec": (5,),
    "row_1n": (1, 5),
    "col_m1": (4, 1),
    "full": (4, 5),
    "scalar": (),
    "one_one": (1, 1),
}


@pytest.mark.parametrize("const", [(1, 2), ()], ids=["const_bc", "dynamic_bc"])
@pytest.mark.parametrize("c_shape", C_SHAPES)
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm(trans_a, trans_b, c_shape, const):
    rng = np.random.default_rng(1)
    a = rand(rng, 3, 4) if trans_a else rand(rng, 4, 3)
    b = rand(rng, 5, 3) if trans_b else rand(rng, 3, 5)
    inputs = [a, b]
    if C_SHAPES[c_shape] is not None:
        inputs.append(rand(rng, *C_SHAPES[c_shape]))
    check("Gemm", inputs, {"transA": trans_a, "transB": trans_b, "alpha": 0.7, "beta": 1.3}, const)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.5, 0.0), (1.0, -0.5)])
def test_gemm_alpha_beta(alpha, beta):
    rng = np.random.default_rng(2)
    a, b, c = rand(rng, 6, 7), rand(rng, 7, 3), rand(rng, 6, 3)
    check("Gemm", [a, b, c], {"alpha": alpha, "beta": beta}, (1, 2))
    check("Gemm", [a, b, c], {"alpha": alpha, "beta": beta}, ())


def test_gemm_float64():
    rng = np.random.default_rng(3)
    a, b, c = (
        rand(rng, 4, 6, dtype=np.float64),
        rand(rng, 5, 6, dtype=np.float64),
        rand(rng, 5, dtype=np.float64),
    )
    got = check("Gemm", [a, b, c], {"transB": 1, "alpha": 0.5}, (1, 2))
    assert got.dtype == np.float64


def test_gemm_fully_connected_batch_one():
    rng = np.random.default_rng(4)
    a, b, c = rand(rng, 1, 64), rand(rng, 10, 64), rand(rng, 10)
    check("Gemm", [a, b, c], {"transB": 1}, (1, 2))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, 1003])
def test_gemm_batch_one_head_takes_the_gemv_kernel(n, threads, monkeypatch):
    """One row times a constant transposed B: blas.gemv over B's rows, split over threads
    (row counts not a multiple of its four-row step), bias and activation after."""
    from edgert.runtime.kernels.cpu import blas
    from edgert.runtime.registry import OpContext, TensorInfo

    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 1)
    rng = np.random.default_rng(n)
    a, b, c = rand(rng, 1, 300), rand(rng, n, 300), rand(rng, n)
    attrs = {"transB": 1, "activation": "Relu"}
    k = registry().lookup("Gemm", "edgert", 1)(OpContext("Gemm", "g", attrs, "edgert", 1, 1))
    k.prepare([TensorInfo(a.shape, a.dtype), TensorInfo(b.shape, b.dtype, b),
               TensorInfo(c.shape, c.dtype, c)])
    assert k.gemv_wt is not None
    got = run_kernel("Gemm", [a, b, c], attrs, const_inputs=(1, 2), domain="edgert",
                     num_threads=threads)[0]
    want = np.maximum(ort_node("Gemm", [a, b, c], {"transB": 1})[0], 0)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ----- MatMul -----------------------------------------------------------------------------------
MATMUL_SHAPES = {
    "2d": ((3, 4), (4, 5)),
    "vec_mat": ((4,), (4, 5)),
    "mat_vec": ((3, 4), (4,)),
    "vec_vec": ((4,), (4,)),
    "batched_a_2d_b": ((2, 3, 4), (4, 5)),
    "batched_a_vec_b": ((2, 3, 4), (4,)),
    "broadcast_batch": ((2, 1, 3, 4), (5, 4, 2)),
    "vec_batched_b": ((4,), (2, 4, 5)),
    "same_batch": ((2, 3, 4), (2, 4, 5)),
    "2d_a_batched_b": ((3, 4), (2, 4, 5)),
    "4d_both": ((2, 3, 2, 4), (1, 3, 4, 3)),
}


@pytest.mark.parametrize("const", [(1,), ()], ids=["const_b", "dynamic_b"])
@pytest.mark.parametrize("case", MATMUL_SHAPES)
def test_matmul(case, const):
    rng = np.random.default_rng(5)
    sa, sb = MATMUL_SHAPES[case]
    check("MatMul", [rand(rng, *sa), rand(rng, *sb)], {}, const)


def test_matmul_float64():
    rng = np.random.default_rng(6)
    a, b = rand(rng, 2, 3, 4, dtype=np.float64), rand(rng, 4, 5, dtype=np.float64)
    assert check("MatMul", [a, b], {}, (1,)).dtype == np.float64


def test_matmul_long_reduction():
    """K = 4096 with positive inputs: the sum is large, so rtol 1e-4 is a meaningful check."""
    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 1.5, (3, 4096)).astype(np.float32)
    b = rng.uniform(0.5, 1.5, (4096, 2)).astype(np.float32)
    check("MatMul", [a, b], {}, (1,))


# ----- fused activations (edgert.Gemm / edgert.MatMul) -------------------------------------------
def activation_ref(y: np.ndarray, name: str, params: list[float]) -> np.ndarray:
    """Each activation from its NumPy formula, in float64 (independent of the epilogue)."""
    y = y.astype(np.float64)
    if name == "Relu":
        return np.maximum(y, 0)
    if name == "Clip":
        lo, hi = (params + [-np.inf, np.inf][len(params) :])[:2]
        return np.minimum(np.maximum(y, lo), hi)
    if name == "LeakyRelu":
        alpha = params[0] if params else 0.01
        return np.where(y < 0, alpha * y, y)
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-y))
    if name == "HardSigmoid":
        alpha, beta = (params + [0.2, 0.5][len(params) :])[:2]
        return np.clip(alpha * y + beta, 0, 1)
    if name == "HardSwish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if name == "Tanh":
        return np.tanh(y)
    if name == "Gelu":
        return 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    raise AssertionError(name)


FUSED = [
    ("Relu", []),
    ("Clip", [-0.5, 0.7]),
    ("Clip", [0.0]),
    ("LeakyRelu", [0.2]),
    ("LeakyRelu", []),
    ("Sigmoid", []),
    ("HardSigmoid", [0.3, 0.4]),
    ("HardSigmoid", []),
    ("HardSwish", []),
    ("Tanh", []),
    ("Gelu", []),
]
FUSED_IDS = [f"{n}{p}" for n, p in FUSED]


@pytest.mark.parametrize("c_shape", [None, (5,), (4, 1), (4, 5)], ids=["noC", "col", "row", "full"])
@pytest.mark.parametrize("name,params", FUSED, ids=FUSED_IDS)
def test_gemm_fused_activation(name, params, c_shape):
    rng = np.random.default_rng(10)
    inputs = [rand(rng, 4, 6) * 2, rand(rng, 5, 6)]
    if c_shape is not None:
        inputs.append(rand(rng, *c_shape))
    attrs = {"transB": 1, "alpha": 0.8, "beta": 1.2}
    fused = dict(attrs, activation=name, activation_params=params)
    got = run_kernel("Gemm", inputs, fused, const_inputs=(1, 2), domain="edgert")[0]
    want = activation_ref(ort_node("Gemm", inputs, attrs)[0], name, params)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "shapes",
    [((2, 3, 6), (6, 5)), ((6,), (6, 5)), ((2, 3, 6), (6,))],
    ids=["batched", "vec_mat", "mat_vec"],
)
@pytest.mark.parametrize("name,params", FUSED[:6], ids=FUSED_IDS[:6])
def test_matmul_fused_activation(name, params, shapes):
    rng = np.random.default_rng(11)
    inputs = [rand(rng, *shapes[0]), rand(rng, *shapes[1])]
    fused = {"activation": name, "activation_params": params}
    got = run_kernel("MatMul", inputs, fused, const_inputs=(1,), domain="edgert")[0]
    want = activation_ref(ort_node("MatMul", inputs, {})[0], name, params)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ----- the epilogue itself ------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", FUSED, ids=FUSED_IDS)
def test_epilogue_row_bias_against_numpy(name, params):
    rng = np.random.default_rng(12)
    y = (rand(rng, 6, 37) * 4).astype(np.float32)
    bias = rand(rng, 3)  # length divides the rows: row r takes bias[r % 3]
    act = parse_activation("t", {"activation": name, "activation_params": params})
    out = y.copy()
    apply_bias_activation(out, bias, act.code, *act.params(np.float32))
    want = activation_ref(y + np.tile(bias, 2)[:, None], name, params)
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name,params", FUSED, ids=FUSED_IDS)
def test_epilogue_col_bias_against_numpy(name, params):
    rng = np.random.default_rng(13)
    y = (rand(rng, 5, 9) * 4).astype(np.float32)
    bias = rand(rng, 9)
    act = parse_activation("t", {"activation": name, "activation_params": params})
    out = y.copy()
    apply_col_bias_activation(out, bias, act.code, *act.params(np.float32))
    np.testing.assert_allclose(out, activation_ref(y + bias, name, params), rtol=RTOL, atol=ATOL)


def test_epilogue_extremes_and_nan():
    """Sigmoid must not overflow; NaN must come out of every activation as NaN."""
    y = np.array([[-1000.0, -88.0, -20.0, 0.0, 20.0, 88.0, 1000.0, np.nan]], np.float32)
    empty = np.zeros(0, np.float32)
    for name, params in FUSED:
        act = parse_activation("t", {"activation": name, "activation_params": params})
        out = y.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            want = activation_ref(y, name, params)
        apply_bias_activation(out, empty, act.code, *act.params(np.float32))
        assert np.isnan(out[0, -1]), name
        np.testing.assert_allclose(out[0, :-1], want[0, :-1], rtol=RTOL, atol=ATOL, err_msg=name)


def test_epilogue_float64_and_bias_only():
    rng = np.random.default_rng(14)
    y = rand(rng, 4, 7, dtype=np.float64)
    bias = rand(rng, 4, dtype=np.float64)
    out = y.copy()
    act = Activation()
    apply_bias_activation(out, bias, ACT_NONE, *act.params(np.float64))
    np.testing.assert_allclose(out, y + bias[:, None], rtol=1e-15)


def test_parse_activation():
    assert parse_activation("op", {}) == Activation()
    assert not parse_activation("op", {"activation": ""}).active
    relu6 = parse_activation("op", {"activation": "Clip", "activation_params": [0.0, 6.0]})
    assert (relu6.p0, relu6.p1) == (0.0, 6.0)
    assert parse_activation("op", {"activation": "LeakyRelu"}).p0 == 0.01
    hs = parse_activation("op", {"activation": "HardSigmoid"})
    assert (hs.p0, hs.p1) == (0.2, 0.5)
    with pytest.raises(KernelError, match="op: unsupported fused activation 'Mish'"):
        parse_activation("op", {"activation": "Mish"})
    with pytest.raises(KernelError, match="op: activation Relu takes at most 0 parameter"):
        parse_activation("op", {"activation": "Relu", "activation_params": [1.0]})
    with pytest.raises(KernelError, match="activation_params given without an activation"):
        parse_activation("op", {"activation_params": [1.0]})


# ----- errors ------------------------------------------------------------------------------------
ERRORS = [
    ("gemm_rank", "Gemm", [(2, 3, 4), (4, 5)], {}, ShapeError, "input A must be 2-D"),
    (
        "gemm_inner",
        "Gemm",
        [(3, 4), (5, 6)],
        {},
        ShapeError,
        "inner dimensions differ: A is 3x4, B is 5x6",
    ),
    (
        "gemm_inner_trans",
        "Gemm",
        [(3, 4), (5, 6)],
        {"transB": 1},
        ShapeError,
        "B (transposed) is 6x5",
    ),
    (
        "gemm_c_shape",
        "Gemm",
        [(3, 4), (4, 5), (3, 4)],
        {},
        ShapeError,
        "C of shape (3, 4) does not broadcast to the output shape (3, 5)",
    ),
    (
        "gemm_c_rank3",
        "Gemm",
        [(3, 4), (4, 5), (1, 3, 5)],
        {},
        ShapeError,
        "C of shape (1, 3, 5) does not broadcast",
    ),
    (
        "gemm_activation",
        "Gemm",
        [(3, 4), (4, 5)],
        {"activation": "Softplus"},
        KernelError,
        "unsupported fused activation 'Softplus'",
    ),
    (
        "matmul_inner",
        "MatMul",
        [(3, 4), (5, 6)],
        {},
        ShapeError,
        "inner dimensions differ: A (3, 4) has 4 columns, B (5, 6) has 5 rows",
    ),
    ("matmul_batch", "MatMul", [(2, 3, 4), (3, 4, 5)], {}, ShapeError, "cannot be broadcast"),
    ("matmul_scalar", "MatMul", [(), (4, 5)], {}, ShapeError, "inputs must have rank >= 1"),
]


@pytest.mark.parametrize("name,op,shapes,attrs,exc,msg", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, op, shapes, attrs, exc, msg):
    rng = np.random.default_rng(20)
    inputs = [np.asarray(rand(rng, *s)) for s in shapes]
    with pytest.raises(exc) as info:
        run_kernel(op, inputs, attrs, const_inputs=(1,))
    assert msg in str(info.value)
    assert f"{op} 'test_node'" in str(info.value)


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_wrong_dtype(op):
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(DTypeError, match="input A has dtype int64; this kernel supports float32"):
        run_kernel(op, [a.astype(np.int64), b])
    with pytest.raises(DTypeError, match="input B has dtype float16"):
        run_kernel(op, [a, b.astype(np.float16)])
    with pytest.raises(DTypeError, match="input B has dtype float64 but input A has float32"):
        run_kernel(op, [a, b.astype(np.float64)])


def test_registered_for_onnx_and_edgert_domains():
    reg = registry()
    for op in ("Gemm", "MatMul"):
        assert reg.lookup(op, "", 1) is reg.lookup(op, "", 22) is not None
        assert reg.lookup(op, "edgert") is reg.lookup(op, "")


def test_set_blas_threads():
    """NumPy's bundled OpenBLAS can be aligned with the interpreter's thread count."""
    from edgert.runtime.kernels.cpu._native import openblas as gemm

    found = gemm.find_openblas()
    if found is None:
        pytest.skip("no OpenBLAS with a known set_num_threads entry point in this process")
    lib, setter_name = found
    getter = getattr(lib, setter_name.replace("set_num_threads", "get_num_threads"), None)
    before = getter() if getter is not None else None
    try:
        assert gemm.set_blas_threads(1)
        if getter is not None:
            assert getter() == 1
        a = np.ones((64, 64), np.float32)
        np.testing.assert_array_equal(a @ a, np.full((64, 64), 64, np.float32))
    finally:
        if before is not None:
            gemm.set_blas_threads(before)
    assert not gemm.set_blas_threads(0)
