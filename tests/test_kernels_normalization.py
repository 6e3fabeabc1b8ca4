"""Normalization CPU kernels against onnxruntime, and NumPy float64 formulas for stability.

Floats within rtol 1e-4 / atol 1e-5. Shapes stay small; float32 throughout except a few
float16/float64 cases, so that each Numba kernel compiles once or twice.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgert.converter import convert
from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime import Interpreter

F16_RTOL = 2e-3  # about two float16 ulps: float16 in/out, float32 maths


def rand(shape, seed=0, dtype=np.float32, low=-3.0, high=3.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)


def assert_same(got, want, rtol=RTOL, atol=ATOL):
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def check(op, inputs, attrs=None, opset=21, const=(), n_out=1, rtol=RTOL, atol=ATOL):
    got = run_kernel(op, inputs, attrs, const_inputs=const, version=opset)
    want = ort_node(op, inputs, attrs, num_outputs=n_out, opset=opset)
    for g, w in zip(got[:n_out], want, strict=True):
        assert_same(g, w, rtol, atol)
    return got


# ----- Softmax family --------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [None, -1, 0, 1, 2, -3])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_axes_and_opsets(op, axis, opset):
    # opset 11 flattens to 2-D at axis (default 1); opset 13 works along axis (default -1).
    x = rand((2, 3, 4, 5), 1)
    check(op, [x], None if axis is None else {"axis": axis}, opset=opset)


def test_softmax_old_and_new_semantics_differ():
    x = rand((2, 3, 4), 2)
    old = run_kernel("Softmax", [x], {"axis": 1}, version=11)[0]
    new = run_kernel("Softmax", [x], {"axis": 1}, version=13)[0]
    np.testing.assert_allclose(old.reshape(2, -1).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(new.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(old, new)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_wide_inner_axis_uses_several_blocks(op):
    # 300 columns after the axis: more than one block of columns per task.
    x = rand((2, 3, 300), 3)
    check(op, [x], {"axis": 1})


def test_softmax_large_values_do_not_overflow():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1002.0]], np.float32)
    got = check("Softmax", [x])[0]
    assert np.isfinite(got).all()
    check("LogSoftmax", [x])


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_attention_sized_rows(op):
    # float32 rows along the last axis, enough of them for the parallel vectorized path
    x = rand((2, 4, 64, 200), 4, low=-20.0, high=20.0)
    x[0, 0, 0, :] = -np.inf
    x[1, 2, 3, 7] = np.nan
    x[1, 1, 1, :] = 80.0
    check(op, [x], {"axis": -1})


SPECIAL_ROWS = np.array([[np.nan, 1, 2], [1, np.nan, 3], [-np.inf, -np.inf, -np.inf],
                         [np.inf, 1, 2], [-np.inf, 0, 1], [3, 3, 1]], np.float32)


def reference(op, x, attrs, opset=13):
    """onnx.reference.ReferenceEvaluator on a one-node model."""
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, x.shape)],
                              [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_nan_and_inf(op, axis):
    # A NaN poisons its slice; an all -inf slice is NaN; +inf gives inf - inf = NaN.
    x = SPECIAL_ROWS if axis == -1 else np.ascontiguousarray(SPECIAL_ROWS.T)
    check(op, [x], {"axis": axis})


@pytest.mark.parametrize("axis", [-1, 0])
def test_hardmax_nan_is_one_hot_argmax(axis):
    # NaN counts as the maximum, as ArgMax (NumPy / onnx.reference); onnxruntime differs.
    x = SPECIAL_ROWS if axis == -1 else np.ascontiguousarray(SPECIAL_ROWS.T)
    got = run_kernel("Hardmax", [x], {"axis": axis})[0]
    assert_same(got, reference("Hardmax", x, {"axis": axis}))
    assert (got.sum(axis=axis) == 1).all()


def test_softmax_float64_and_float16():
    x = rand((3, 7), 4, np.float64)
    check("Softmax", [x])
    check("LogSoftmax", [x])
    h = rand((3, 7), 5, np.float16)
    check("Softmax", [h], rtol=F16_RTOL, atol=1e-3)
    check("Hardmax", [h])


def test_softmax_empty_and_rank1():
    check("Softmax", [np.zeros((0, 3), np.float32)])
    check("Softmax", [np.zeros((2, 0), np.float32)])
    check("LogSoftmax", [rand((6,), 6)])


# ----- BatchNormalization ----------------------------------------------------------------------
def bn_inputs(shape, seed=0, dtype=np.float32):
    c = shape[1]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    scale = rng.standard_normal(c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    mean = rng.standard_normal(c).astype(dtype)
    var = rng.uniform(0.1, 2.0, c).astype(dtype)
    return [x, scale, bias, mean, var]


@pytest.mark.parametrize("const", [(), (1, 2, 3, 4)], ids=["computed", "constant"])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 2, 2, 3, 2)], ids=str)
def test_batchnorm(shape, const):
    check("BatchNormalization", bn_inputs(shape, 1), {"epsilon": 1e-3}, const=const)


def test_batchnorm_float16_and_float64():
    check("BatchNormalization", bn_inputs((2, 3, 4), 2, np.float64))
    check("BatchNormalization", bn_inputs((2, 3, 4), 3, np.float16), rtol=F16_RTOL, atol=2e-3)


def test_batchnorm_mixed_parameter_dtypes():
    # Opset 15 lets scale/B and mean/var have their own float types (onnxruntime does not
    # implement the mix): NumPy in float64 is the reference.
    x, scale, bias, mean, var = bn_inputs((2, 3, 4), 4)
    mean, var = mean.astype(np.float64), var.astype(np.float64)
    got = run_kernel("BatchNormalization", [x, scale, bias, mean, var])[0]
    col = (slice(None), None)  # per channel, broadcast over the last dim
    want = (x - mean[col]) / np.sqrt(var[col] + 1e-5) * scale[col] + bias[col]
    assert_same(got, want.astype(np.float32))


def test_batchnorm_errors():
    inputs = bn_inputs((2, 3, 4), 5)
    with pytest.raises(KernelError, match=r"BatchNormalization.*training_mode"):
        run_kernel("BatchNormalization", inputs, {"training_mode": 1})
    bad = list(inputs)
    bad[3] = np.zeros(4, np.float32)
    with pytest.raises(ShapeError, match="input_mean"):
        run_kernel("BatchNormalization", bad)
    with pytest.raises(DTypeError):
        run_kernel("BatchNormalization", [inputs[0].astype(np.int32)] + inputs[1:])


# ----- Instance / Layer / Group normalization --------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 4, 2, 2, 3)], ids=str)
def test_instancenorm(shape):
    x = rand(shape, 7)
    c = shape[1]
    check("InstanceNormalization", [x, rand((c,), 8), rand((c,), 9)], {"epsilon": 1e-4})


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm(axis, with_bias):
    x = rand((2, 3, 4, 5), 10)
    norm_shape = x.shape[axis:]
    inputs = [x, rand(norm_shape, 11), rand(norm_shape, 12) if with_bias else None]
    got = check("LayerNormalization", inputs, {"axis": axis}, opset=17, n_out=3)
    assert got[1].dtype == np.float32 and got[2].dtype == np.float32


def test_layernorm_broadcast_scale_and_constants():
    x = rand((2, 3, 4), 13)
    scale, bias = rand((4,), 14), rand((1, 4), 15)
    check("LayerNormalization", [x, scale, bias], {"axis": 1}, opset=17, n_out=3)
    check("LayerNormalization", [x, scale, bias], {"axis": 1, "epsilon": 1e-2}, opset=17,
          n_out=3, const=(1, 2))


def test_layernorm_float16_and_float64():
    h = rand((3, 8), 16, np.float16)
    check("LayerNormalization", [h, rand((8,), 17, np.float16)], opset=17, rtol=F16_RTOL,
          atol=3e-3)
    d = rand((3, 8), 18, np.float64)
    check("LayerNormalization", [d, rand((8,), 19, np.float64)], opset=17, n_out=3)


def _normalize64(x, axes, eps):
    x = x.astype(np.float64)
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def test_row_statistics_are_stable_with_a_large_offset():
    # |mean| >> std: one-pass E[x^2] - E[x]^2 in float32 loses every digit of the variance.
    rng = np.random.default_rng(20)
    x = (1e4 + rng.standard_normal((4, 256))).astype(np.float32)
    want = _normalize64(x, -1, 1e-5).astype(np.float32)
    got = run_kernel("LayerNormalization", [x, np.ones(256, np.float32)])[0]
    assert_same(got, want)
    x3 = x.reshape(2, 2, 256)
    got = run_kernel("InstanceNormalization", [x3, np.ones(2, np.float32), np.zeros(2, np.float32)])
    assert_same(got[0], _normalize64(x3, -1, 1e-5).astype(np.float32))


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_groupnorm(groups):
    x = rand((2, 6, 4, 3), 21)
    check("GroupNormalization", [x, rand((6,), 22), rand((6,), 23)],
          {"num_groups": groups, "epsilon": 1e-4})


def test_groupnorm_opset18_per_group_parameters():
    x = rand((2, 6, 5), 24)
    inputs = [x, rand((3,), 25), rand((3,), 26)]
    check("GroupNormalization", inputs, {"num_groups": 3}, opset=18)
    check("GroupNormalization", inputs, {"num_groups": 3}, opset=18, const=(1, 2))


def test_groupnorm_errors():
    x = rand((2, 6, 4), 27)
    with pytest.raises(KernelError, match=r"GroupNormalization.*num_groups 4"):
        run_kernel("GroupNormalization", [x, rand((6,)), rand((6,))], {"num_groups": 4})
    with pytest.raises(KernelError, match="num_groups is required"):
        run_kernel("GroupNormalization", [x, rand((6,)), rand((6,))])
    with pytest.raises(ShapeError, match="scale"):
        run_kernel("GroupNormalization", [x, rand((3,)), rand((6,))], {"num_groups": 3})


def test_layernorm_errors():
    x = rand((2, 3, 4), 28)
    with pytest.raises(KernelError, match=r"LayerNormalization.*axis 3"):
        run_kernel("LayerNormalization", [x, rand((4,))], {"axis": 3})
    with pytest.raises(ShapeError, match="Scale"):
        run_kernel("LayerNormalization", [x, rand((3,))])
    with pytest.raises(DTypeError):
        run_kernel("LayerNormalization", [x.astype(np.int64), rand((4,))])


# ----- LRN, LpNormalization, MVN ---------------------------------------------------------------
def lrn64(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """The ONNX formula in float64: the window is c - floor((size-1)/2) .. c + ceil((size-1)/2)."""
    x = x.astype(np.float64)
    channels = x.shape[1]
    sq = np.zeros_like(x)
    for c in range(channels):
        lo = max(0, c - (size - 1) // 2)
        hi = min(channels - 1, c + -(-(size - 1) // 2))
        sq[:, c] = (x[:, lo : hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * sq) ** beta


LRN_ATTRS = [{"size": 1}, {"size": 3}, {"size": 5, "alpha": 0.01, "beta": 0.5, "bias": 2.0},
             {"size": 5, "alpha": 0.2, "beta": 1.0}, {"size": 3, "alpha": 0.5, "beta": 0.6}]


@pytest.mark.parametrize("attrs", LRN_ATTRS, ids=str)
def test_lrn(attrs):
    check("LRN", [rand((2, 6, 3, 4), 29)], attrs)


@pytest.mark.parametrize("attrs", LRN_ATTRS[1:] + [{"size": 2, "alpha": 0.3}, {"size": 4}], ids=str)
@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 3), (1, 5, 2, 3), (1, 4, 2, 1, 2)], ids=str)
def test_lrn_any_rank_and_even_sizes(shape, attrs):
    # onnxruntime takes only 4-D input and odd sizes (and onnx.reference's LRN loops over the
    # batch instead of the channels): the float64 formula is the reference.
    x = rand(shape, 30)
    want = lrn64(x, **attrs).astype(np.float32)
    assert_same(run_kernel("LRN", [x], attrs)[0], want)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_lp_normalization(axis, p):
    check("LpNormalization", [rand((3, 4, 5), 32)], {"axis": axis, "p": p})


def test_lp_normalization_zero_vector_gives_zero():
    x = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    got = check("LpNormalization", [x], {"p": 2})[0]
    np.testing.assert_array_equal(got[0], [0.0, 0.0])


@pytest.mark.parametrize("axes", [None, [2, 3], [1], [0, 1, 2, 3], [-1, 0]], ids=str)
def test_mean_variance_normalization(axes):
    x = rand((2, 3, 4, 5), 33)
    check("MeanVarianceNormalization", [x], None if axes is None else {"axes": axes}, opset=13)


def test_lrn_lp_mvn_errors():
    x = rand((2, 3, 4), 34)
    with pytest.raises(KernelError, match=r"LRN.*size"):
        run_kernel("LRN", [x])
    with pytest.raises(KernelError, match=r"LpNormalization.*p must be 1 or 2"):
        run_kernel("LpNormalization", [x], {"p": 3})
    with pytest.raises(KernelError, match=r"MeanVarianceNormalization.*axis 3"):
        run_kernel("MeanVarianceNormalization", [x], {"axes": [0, 3]})
    with pytest.raises(KernelError, match=r"Softmax.*axis -4"):
        run_kernel("Softmax", [x], {"axis": -4})
    with pytest.raises(DTypeError, match="Softmax"):
        run_kernel("Softmax", [x.astype(np.int32)])


def test_empty_tensors():
    check("LayerNormalization", [np.zeros((0, 4), np.float32), rand((4,))], opset=17)
    check("InstanceNormalization", [np.zeros((0, 2, 3), np.float32), rand((2,)), rand((2,))])
    check("BatchNormalization", bn_inputs((0, 3, 2), 35))
    check("LRN", [np.zeros((0, 3, 2, 2), np.float32)], {"size": 3})


def test_old_opset_softmax_through_the_interpreter():
    # An opset-11 model keeps its coerce-to-2-D semantics after import and conversion.
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=1),
             helper.make_node("LogSoftmax", ["x"], ["ls"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [2, 3, 4])],
                              [helper.make_empty_tensor_value_info(n) for n in ("s", "ls")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    x = rand((2, 3, 4), 36)
    got = Interpreter(convert(model)).run({"x": x})
    assert_same(got["s"], ort_node("Softmax", [x], {"axis": 1}, opset=11)[0])
    assert_same(got["ls"], ort_node("LogSoftmax", [x], opset=11)[0])
