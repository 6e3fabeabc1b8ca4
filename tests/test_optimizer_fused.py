"""Elementwise fusion: the ``edgert.FusedElementwise`` kernel and the pass that emits it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ATOL, RTOL, run_kernel
from test_optimizer import check, make_model, ops, rnd

from edgert.errors import EdgeRTError
from edgert.importer import import_onnx
from edgert.optimizer import optimize
from edgert.runtime.kernels.cpu.fused import FusedElementwiseKernel
from edgert.runtime.ops import fusion as F

HEADER = '<ir_version: 8, opset_import: ["" : 13]>\n'


def program(*instrs):
    prog, params = [], []
    for ins in instrs:
        prog += list(ins[:5])
        params += list(ins[5:]) + [0.0] * (2 - len(ins[5:]))
    return {"program": prog, "params": params}


# ----- kernel -------------------------------------------------------------------------------------
def test_kernel_add_relu_with_channel_and_scalar_inputs():
    x = rnd(2, 3, 5, 7)
    r = rnd(2, 3, 5, 7)
    c = rnd(3, 1, 1)
    s = np.array([0.5], np.float32)
    attrs = program((F.OP_ADD, 4, 0, 1, 0), (F.OP_MUL, 5, 4, 2, 0), (F.OP_SUB, 6, 5, 3, 0),
                    (F.OP_RELU, 7, 6, 0, 0))
    attrs["modes"] = [0, 0, 2, 1]
    (got,) = run_kernel("FusedElementwise", [x, r, c, s], attrs, const_inputs=(2, 3),
                        domain="edgert")
    np.testing.assert_allclose(got, np.maximum((x + r) * c - s, 0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tail", [None, "relu", "clip"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 300)])
def test_kernel_affine_form_of_batchnorm(tail, swap, shape):
    """``act(x * s + t)`` (BatchNormalization as the optimizer writes it, then Relu or Clip)
    takes the one-pass kernel, operands in either order; NaN stays NaN through Relu and Clip."""
    x = rnd(*shape) * 3
    x.reshape(-1)[::17] = np.nan
    nch = shape[1]
    sc, t = rnd(nch), rnd(nch)
    lo, hi = np.array([-0.5], np.float32), np.array([0.8], np.float32)
    mul = (F.OP_MUL, 5, 1, 0, 0) if swap else (F.OP_MUL, 5, 0, 1, 0)
    add = (F.OP_ADD, 6, 2, 5, 0) if swap else (F.OP_ADD, 6, 5, 2, 0)
    instrs = [mul, add]
    want = x * sc.reshape((1, nch) + (1,) * (len(shape) - 2)) \
        + t.reshape((1, nch) + (1,) * (len(shape) - 2))
    if tail == "relu":
        instrs.append((F.OP_RELU, 7, 6, 0, 0))
        want = np.where(want < 0, 0, want)
    elif tail == "clip":
        instrs.append((F.OP_CLIP, 7, 6, 3, 4))
        want = np.where(want < lo, lo, np.where(want > hi, hi, want))
    attrs = program(*instrs)
    attrs["modes"] = [0, 2, 2, 1, 1]
    cls = FusedElementwiseKernel
    from edgert.runtime.registry import OpContext, TensorInfo

    k = cls(OpContext("FusedElementwise", "f", attrs, "edgert", 1, 1))
    ins = [x, sc, t, lo, hi]
    k.prepare([TensorInfo(v.shape, v.dtype, None if i == 0 else v) for i, v in enumerate(ins)])
    assert k.affine is not None
    (got,) = run_kernel("FusedElementwise", ins, attrs, const_inputs=(1, 2, 3, 4),
                        domain="edgert")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)  # NaN == NaN here


def test_kernel_affine_form_declines_other_programs():
    from edgert.runtime.registry import OpContext, TensorInfo

    x, c = rnd(1, 3, 4, 4), rnd(3)
    for instrs, const in [
        ([(F.OP_MUL, 3, 0, 1, 0), (F.OP_SUB, 4, 3, 2, 0)], (1, 2)),  # a subtraction
        ([(F.OP_MUL, 3, 0, 1, 0), (F.OP_ADD, 4, 3, 2, 0)], (1,)),  # t known only at run time
        ([(F.OP_MUL, 3, 0, 1, 0), (F.OP_ADD, 4, 3, 2, 0), (F.OP_SIGMOID, 5, 4, 0, 0)], (1, 2)),
    ]:
        attrs = program(*instrs)
        attrs["modes"] = [0, 2, 2]
        k = FusedElementwiseKernel(OpContext("FusedElementwise", "f", attrs, "edgert", 1, 1))
        k.prepare([TensorInfo(x.shape, x.dtype)] + [
            TensorInfo(c.shape, c.dtype, c if i in const else None) for i in (1, 2)])
        assert k.affine is None


def test_kernel_unary_ops_nan_and_zero_division():
    x = np.array([-3.0, -0.5, 0.0, 0.7, 4.0, np.nan], np.float32)
    z = np.zeros_like(x)
    cases = [
        (F.OP_SIGMOID, lambda v: 1 / (1 + np.exp(-v))),
        (F.OP_TANH, np.tanh),
        (F.OP_ERF, lambda v: np.vectorize(math.erf, otypes=[np.float32])(v)),
        (F.OP_HARD_SWISH, lambda v: v * np.clip(v / 6 + 0.5, 0, 1)),
        (F.OP_RELU, lambda v: np.where(v < 0, 0, v)),
        (F.OP_ABS, np.abs),
        (F.OP_NEG, np.negative),
    ]
    for code, ref in cases:
        attrs = program((code, 1, 0, 0, 0))
        attrs["modes"] = [0]
        (got,) = run_kernel("FusedElementwise", [x], attrs, domain="edgert")
        np.testing.assert_allclose(got, ref(x), rtol=RTOL, atol=ATOL, err_msg=str(code))
    attrs = program((F.OP_DIV, 2, 0, 1, 0))
    attrs["modes"] = [0, 0]
    (got,) = run_kernel("FusedElementwise", [x, z], attrs, domain="edgert")
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(got, x / z)


def test_kernel_clip_and_leaky_relu_params():
    x = rnd(3, 4)
    lo, hi = np.array(-0.5, np.float32), np.array(0.25, np.float32)
    attrs = program((F.OP_LEAKY_RELU, 3, 0, 0, 0, 0.1), (F.OP_CLIP, 4, 3, 1, 2))
    attrs["modes"] = [0, 1, 1]
    (got,) = run_kernel("FusedElementwise", [x, lo, hi], attrs, const_inputs=(1, 2),
                        domain="edgert")
    np.testing.assert_allclose(got, np.clip(np.where(x < 0, 0.1 * x, x), lo, hi), rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize("bad", [
    {"program": [99, 1, 0, 0, 0], "params": [0.0, 0.0], "modes": [0]},
    {"program": [F.OP_RELU, 0, 0, 0, 0], "params": [0.0, 0.0], "modes": [0]},
    {"program": [F.OP_RELU, 1, 0, 0], "params": [0.0, 0.0], "modes": [0]},
    {"program": [F.OP_ADD, 2, 0, 1, 0], "params": [0.0, 0.0], "modes": [0, 2]},
])
def test_kernel_rejects_bad_programs(bad):
    x = rnd(2, 3)
    ins = [x] * len(bad["modes"])
    if len(ins) == 2:
        ins = [x, rnd(5)]
    with pytest.raises(EdgeRTError, match="FusedElementwise"):
        run_kernel("FusedElementwise", ins, bad, domain="edgert")


# ----- pass ---------------------------------------------------------------------------------------
def test_residual_add_relu_and_bn_relu_fused():
    text = HEADER + """
    g (float[1,3,5,5] x, float[1,4,5,5] r) => (float[1,4,5,5] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        a = Add(c, r)
        t = Relu(a)
        n = BatchNormalization(t, s, b, mu, var)
        y = Relu(n)
    }"""
    m = make_model(text, W=rnd(4, 3, 3, 3), B=rnd(4), s=rnd(4), b=rnd(4), mu=rnd(4),
                   var=rnd(4, lo=0.5))
    graph, report = check(m, allow_fused=True)
    # Add + Relu go into the conv (its residual input and activation); BN + Relu are one group.
    assert ops(graph) == ["edgert.Conv", "edgert.FusedElementwise"]
    assert graph.nodes[0].inputs[3].name == "r" and graph.nodes[0].attrs["activation"] == "Relu"
    assert report.passes["fuse_residual_add"].fused == 1
    assert report.passes["fuse_elementwise"].removed == 1


def test_residual_add_relu_fused_into_elementwise_when_the_conv_output_is_read_twice():
    text = HEADER + """
    g (float[1,3,5,5] x, float[1,4,5,5] r) => (float[1,4,5,5] y, float[1,4,5,5] c) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        a = Add(c, r)
        y = Relu(a)
    }"""
    graph, report = check(make_model(text, W=rnd(4, 3, 3, 3), B=rnd(4)), allow_fused=True)
    assert ops(graph) == ["Conv", "edgert.FusedElementwise"]
    assert report.passes["fuse_elementwise"].removed == 1


@pytest.mark.parametrize("divisor, expect", [(math.sqrt(2), "Gelu"),
                                             (1.5, "edgert.FusedElementwise")])
def test_decomposed_gelu_with_unknown_dims_fused(divisor, expect):
    # The exact Gelu becomes one Gelu node (patterns.fuse_gelu); with another divisor it is no
    # Gelu, and the chain becomes one fused elementwise node instead.
    text = HEADER + """
    g (float[2,N,8] x) => (float[2,N,8] y) {
        d = Div(x, k)
        e = Erf(d)
        a = Add(e, one)
        m = Mul(x, a)
        y = Mul(m, half)
    }"""
    m = make_model(text, k=np.array(divisor, np.float32), one=np.array(1, np.float32),
                   half=np.array(0.5, np.float32))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3  # feeds_for needs ints
    graph, _ = check(m, allow_fused=True)
    assert ops(graph) == [expect]


def test_not_fused_without_permission_or_with_two_readers():
    text = HEADER + """
    g (float[2,4] x, float[2,4] r) => (float[2,4] y, float[2,4] z) {
        a = Add(x, r)
        y = Relu(a)
        z = Sigmoid(a)
    }"""
    graph, _ = check(make_model(text), allow_fused=True)
    assert sorted(ops(graph)) == ["Add", "Relu", "Sigmoid"]
    text2 = HEADER + """
    g (float[2,4] x, float[2,4] r) => (float[2,4] y) { a = Add(x, r)  y = Relu(a) }"""
    graph, _ = check(make_model(text2), allow_fused=False)
    assert ops(graph) == ["Add", "Relu"]


def test_two_full_inputs_of_unknown_shape_not_fused():
    # a and b could broadcast against each other at run time: not provably the same shape.
    text = HEADER + """
    g (float[N,4] a, float[M,4] b) => (float[K,4] y) { s = Add(a, b)  y = Relu(s) }"""
    graph = import_onnx(make_model(text))
    optimize(graph, 2, allow_fused=True)
    assert ops(graph) == ["Add", "Relu"]


def test_vectorized_float32_exp_and_sigmoid_are_accurate():
    """FusedElementwise's float32 exp and sigmoid (a vectorizable polynomial, not libm) against
    float64 NumPy: within 6 ulp over the whole finite range, exact at the specials (NaN, +-inf,
    0), inf from the overflow bound on, 0 for an underflow, no read outside the 2^n table
    whatever the input."""
    from edgert.runtime.kernels.cpu import vmath

    x = np.concatenate([np.linspace(-110, 95, 400001, dtype=np.float32),
                        np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 88.72, 88.7228, 88.73,
                                  -87.3, -103.9, -104.5, 1e30, -1e30, 1e-30], np.float32)])
    got = np.empty_like(x)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.float64))
    vmath.exp_row(got, x, x.size)
    normal = np.isfinite(ref) & (ref >= np.finfo(np.float32).tiny) & (ref <= 3.4e38)
    ulp = np.abs(got[normal] - ref[normal]) / (ref[normal] * 2.0**-24)
    assert ulp.max() < 6, ulp.max()
    assert np.isnan(got[np.isnan(x)]).all()
    assert (got[x > 88.7229] == np.inf).all() and (got[x == -np.inf] == 0).all()
    assert (got[x < -104] == 0).all() and (np.abs(got[(x < -87.4) & (x > -104)]) < 1.2e-38).all()
    with np.errstate(over="ignore"):
        ref = 1 / (1 + np.exp(-x.astype(np.float64)))
    vmath.sigmoid_row(got, x, x.size)
    ok = ~np.isnan(x)
    assert np.isnan(got[~ok]).all()
    assert np.max(np.abs(got[ok] - ref[ok])) < 1e-7
    big = ok & (ref > 1e-30)
    assert np.max(np.abs(got[big] - ref[big]) / ref[big]) < 6 * 2.0**-24


def test_vectorized_float32_tanh_is_accurate():
    from edgert.runtime.kernels.cpu import vmath

    x = np.concatenate([np.linspace(-20, 20, 400001, dtype=np.float32),
                        np.array([1e-30, -1e-30, 1e-5, 0.2499, 0.25, 0.2501, np.nan, np.inf,
                                  -np.inf, 0.0, -0.0, 3e38, -3e38], np.float32)])
    got = np.empty_like(x)
    vmath.tanh_row(got, x, x.size)
    ref = np.tanh(x.astype(np.float64))
    ok = ~np.isnan(x) & (ref != 0)
    ulp = np.abs(got[ok] - ref[ok]) / (np.abs(ref[ok]) * 2.0**-24)
    assert ulp.max() < 4, ulp.max()
    assert np.isnan(got[np.isnan(x)]).all()
    assert got[x == np.inf] == 1 and got[x == -np.inf] == -1
    assert np.array_equal(np.signbit(got[x == 0]), np.signbit(x[x == 0]))  # -0 stays -0


def test_vectorized_float32_erf_is_accurate():
    import math

    from edgert.runtime.kernels.cpu import vmath

    x = np.concatenate([np.linspace(-6, 6, 300001, dtype=np.float32),
                        np.array([1e-30, -1e-30, 1e-5, 0.9999, 1.0, 1.0001, 3.999, 4.0, 4.001,
                                  np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)])
    got = np.empty_like(x)
    vmath.erf_row(got, x, x.size)
    ref = np.array([math.erf(float(v)) if v == v else math.nan for v in x])
    ok = ~np.isnan(x) & (ref != 0)
    ulp = np.abs(got[ok] - ref[ok]) / (np.abs(ref[ok]) * 2.0**-24)
    assert ulp.max() < 4, ulp.max()
    assert np.isnan(got[np.isnan(x)]).all()
    assert got[x == np.inf] == 1 and got[x == -np.inf] == -1
    assert np.array_equal(np.signbit(got[x == 0]), np.signbit(x[x == 0]))
