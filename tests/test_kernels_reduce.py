"""Reduce CPU kernels against onnxruntime, and onnx.reference / NumPy where ORT differs or lacks.

Axes are given in the newest form (an int64 input, constant at prepare time). Floats within
rtol 1e-4 / atol 1e-5, integers exact.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgert.converter import convert
from edgert.errors import DTypeError, KernelError
from edgert.runtime import Interpreter
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.registry import OpContext, TensorInfo

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
INT_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceSumSquare"]
AXES = [None, [1], [-1], [0, 2], [2, 0, 1], []]


def rand(shape, dtype, seed=0, low=-3.0, high=3.0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(0 if dt.kind == "u" else int(low), int(high), size=shape).astype(dt)
    return rng.uniform(low, high, size=shape).astype(dt)


def assert_same(got, want, rtol=RTOL, atol=ATOL):
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def inputs_for(x, axes):
    return [x] if axes is None else [x, np.array(axes, np.int64)]


def edgert(op, x, axes=None, attrs=None):
    return run_kernel(op, inputs_for(x, axes), attrs, const_inputs=(1,))[0]


def ort(op, x, axes=None, attrs=None):
    # ReduceSum moved axes to an input in opset 13, the others in 18.
    return ort_node(op, inputs_for(x, axes), attrs, opset=18)[0]


def reference(op, x, axes=None, attrs=None):
    """onnx.reference.ReferenceEvaluator on a one-node model (opset 18 forms)."""
    names = ["x"] if axes is None else ["x", "axes"]
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    ins = [helper.make_tensor_value_info("x", elem, x.shape)]
    if axes is not None:
        ins.append(helper.make_tensor_value_info("axes", 7, [len(axes)]))
    graph = helper.make_graph([node], "g", ins, [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": x} if axes is None else {"x": x, "axes": np.array(axes, np.int64)}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice"
        return ReferenceEvaluator(model).run(None, feeds)[0]


def positive_if_log(op, x):
    return np.abs(x) + 0.1 if op == "ReduceLogSum" else x


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_float32(op, axes, keepdims):
    x = positive_if_log(op, rand((2, 3, 4), np.float32, 1))
    attrs = {"keepdims": keepdims}
    assert_same(edgert(op, x, axes, attrs), ort(op, x, axes, attrs))


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_noop_with_empty_axes(op):
    # The reduction runs over no axis; the non-reduction steps (square, log, ...) still apply.
    x = positive_if_log(op, rand((2, 3), np.float32, 2))
    for axes in (None, []):
        attrs = {"noop_with_empty_axes": 1}
        assert_same(edgert(op, x, axes, attrs), ort(op, x, [] if axes is None else axes, attrs))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("op", INT_OPS)
def test_reduce_integers(op, dtype):
    x = rand((3, 4, 2), dtype, 3, -5, 6)
    for axes in ([1], [0, 2], None):
        assert_same(edgert(op, x, axes), ort(op, x, axes))


def test_integer_mean_truncates_toward_zero():
    x = np.array([[-3, -4], [3, 4], [-7, 0]], np.int32)
    got = edgert("ReduceMean", x, [1])
    np.testing.assert_array_equal(got, [[-3], [3], [-3]])
    assert_same(got, ort("ReduceMean", x, [1]))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "bool"])
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_max_min_small_types(op, dtype):
    x = rand((3, 5), dtype, 4, -100, 100)
    assert_same(edgert(op, x, [1], {"keepdims": 0}),
                ort_node(op, [x, np.array([1], np.int64)], {"keepdims": 0}, opset=20)[0])


@pytest.mark.parametrize("op", INT_OPS)
def test_reduce_uint32(op):
    # onnxruntime has no uint32 reductions: onnx.reference is the reference.
    # (Its np.sum widens some results to uint64; the values are compared as uint32.)
    x = rand((3, 5), np.uint32, 5, 0, 50)
    assert_same(edgert(op, x, [0]), reference(op, x, [0]).astype(np.uint32))


def test_reduce_float64():
    x = rand((3, 4), np.float64, 6)
    for op in ("ReduceSum", "ReduceLogSumExp", "ReduceL2"):
        assert_same(edgert(op, x, [1]), ort(op, x, [1]))


def test_float16_sum_accumulates_in_float32():
    # A float16 running sum stops at 2048 (2048 + 1 rounds back to 2048).
    x = np.ones((2, 4096), np.float16)
    got = edgert("ReduceSum", x, [1])
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, [[4096], [4096]])
    got = edgert("ReduceMean", np.full((1, 4096), 30.0, np.float16), [1])
    np.testing.assert_array_equal(got, [[30.0]])  # the sum itself overflows float16


def test_float16_matches_ort():
    x = rand((3, 6), np.float16, 7)
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2"):
        assert_same(edgert(op, x, [1]), ort(op, x, [1]), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_empty_set_reductions_follow_onnx_reference(op):
    x = np.zeros((2, 0, 3), np.float32)
    for axes, keepdims in (([1], 1), ([1], 0), ([0, 1], 1)):
        attrs = {"keepdims": keepdims}
        assert_same(edgert(op, x, axes, attrs), reference(op, x, axes, attrs))


def test_empty_set_integer_max_min():
    x = np.zeros((2, 0), np.int32)
    assert_same(edgert("ReduceMax", x, [1]), np.full((2, 1), np.iinfo(np.int32).min, np.int32))
    assert_same(edgert("ReduceMin", x, [1]), np.full((2, 1), np.iinfo(np.int32).max, np.int32))


def test_reduce_over_non_empty_axes_of_empty_tensor():
    x = np.zeros((0, 3), np.float32)
    for op in ("ReduceSum", "ReduceMax", "ReduceLogSumExp"):
        assert_same(edgert(op, x, [1]), ort(op, x, [1]))


def test_max_min_propagate_nan():
    # NumPy and onnx.reference propagate NaN; onnxruntime skips a NaN after the first element.
    x = np.array([[1.0, np.nan, 3.0], [np.nan, 1.0, 2.0], [1.0, 2.0, 3.0]], np.float32)
    for op in ("ReduceMax", "ReduceMin"):
        assert_same(edgert(op, x, [1]), reference(op, x, [1]))
    got = edgert("ReduceMax", x, [1])
    assert np.isnan(got[:2]).all() and got[2, 0] == 3.0


def test_logsumexp_is_stable():
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0],
                  [-np.inf, 0.0, 1.0], [-1000.0, -1001.0, -1002.0]], np.float32)
    got = edgert("ReduceLogSumExp", x, [1])
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        m = np.max(x64, axis=1, keepdims=True)
        shift = np.where(np.isfinite(m), m, 0.0)
        want = (np.log(np.sum(np.exp(x64 - shift), axis=1, keepdims=True)) + shift)
    assert_same(got, want.astype(np.float32))
    assert_same(got, ort("ReduceLogSumExp", x, [1]))


def test_rank0_input():
    x = np.array(2.5, np.float32)
    for op in ("ReduceSum", "ReduceMax", "ReduceSumSquare"):
        for keepdims in (0, 1):
            assert_same(edgert(op, x, None, {"keepdims": keepdims}),
                        ort(op, x, None, {"keepdims": keepdims}))


def test_legacy_axes_attribute():
    x = rand((2, 3, 4), np.float32, 8)
    got = run_kernel("ReduceMean", [x], {"axes": [1]}, version=13)[0]
    assert_same(got, ort_node("ReduceMean", [x], {"axes": [1]}, opset=13)[0])


def test_axes_known_only_at_run_time():
    # prepare cannot know the output shape: it says so, and the interpreter prepares again
    # with the value at run time.
    cls = registry().lookup("ReduceSum")
    kernel = cls(OpContext("ReduceSum", "r", {}, "", 18, 1))
    x = rand((2, 3), np.float32, 9)
    (info,) = kernel.prepare([TensorInfo(x.shape, x.dtype), TensorInfo((1,), np.dtype(np.int64))])
    assert info.shape is None
    axes = np.array([0], np.int64)
    (info,) = kernel.prepare([TensorInfo(x.shape, x.dtype, x),
                              TensorInfo((1,), np.dtype(np.int64), axes)])
    out = np.empty(info.shape, info.dtype)
    kernel.invoke([x, axes], [out])
    assert_same(out, ort("ReduceSum", x, [0]))


# ----- ArgMax / ArgMin -------------------------------------------------------------------------
@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_argmax_argmin(op, axis, keepdims, select_last_index):
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": select_last_index}
    x = rand((3, 4, 5), np.float32, 10)
    assert_same(run_kernel(op, [x], attrs)[0], ort_node(op, [x], attrs, opset=13)[0])
    ties = rand((3, 4, 5), np.int32, 11, 0, 3)  # many ties: first vs last index matters
    assert_same(run_kernel(op, [ties], attrs)[0], ort_node(op, [ties], attrs, opset=13)[0])


@pytest.mark.parametrize("dtype", ["uint8", "int64", "float64", "float16"])
def test_argmax_dtypes(dtype):
    x = rand((4, 6), dtype, 12, -50, 50)
    for op in ("ArgMax", "ArgMin"):
        assert_same(run_kernel(op, [x], {"axis": 1})[0],
                    ort_node(op, [x], {"axis": 1}, opset=13)[0])


def test_argmax_nan_counts_as_extreme():
    x = np.array([[1.0, np.nan, 3.0, np.nan], [4.0, 1.0, 2.0, 0.0]], np.float32)
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            attrs = {"axis": 1, "select_last_index": last}
            want = reference(op, x, None, attrs)
            assert_same(run_kernel(op, [x], attrs)[0], want)


# ----- errors ----------------------------------------------------------------------------------
def test_bad_axes():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(KernelError, match=r"ReduceSum.*axis 2"):
        edgert("ReduceSum", x, [2])
    with pytest.raises(KernelError, match=r"ReduceMax.*twice"):
        edgert("ReduceMax", x, [1, -1])
    with pytest.raises(KernelError, match=r"ArgMax.*axis -3"):
        run_kernel("ArgMax", [x], {"axis": -3})
    with pytest.raises(KernelError, match="rank-0"):
        edgert("ReduceSum", np.array(1.0, np.float32), [0])


def test_bad_dtypes():
    with pytest.raises(DTypeError, match="ReduceLogSumExp"):
        edgert("ReduceLogSumExp", np.ones((2, 3), np.int32), [1])
    with pytest.raises(DTypeError, match="ReduceSum"):
        edgert("ReduceSum", np.ones((2, 3), bool), [1])
    with pytest.raises(DTypeError, match="axes"):
        run_kernel("ReduceSum", [np.ones((2, 3), np.float32), np.array([1.0])], const_inputs=(1,))


def test_argmax_needs_a_non_empty_axis():
    with pytest.raises(KernelError, match=r"ArgMax.*empty"):
        run_kernel("ArgMax", [np.zeros((2, 0), np.float32)], {"axis": 1})
    with pytest.raises(KernelError, match=r"ArgMin.*rank"):
        run_kernel("ArgMin", [np.array(1.0, np.float32)])


def test_run_time_axes_and_folded_shape_arithmetic_in_the_interpreter():
    # End to end: axes fed at run time make ReduceSum a dynamic step; Shape -> Div folds.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Div", ["s", "two"], ["half"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["r"], keepdims=0),
        helper.make_node("ArgMax", ["x"], ["am"], axis=2),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 4]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_empty_tensor_value_info(n) for n in ("half", "r", "am")],
        initializer=[numpy_helper.from_array(np.array(2, np.int64), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    interp = Interpreter(convert(model))
    for batch, axis in ((2, 1), (5, 0), (5, -1)):
        x = rand((batch, 3, 4), np.float32, batch)
        feeds = {"x": x, "axes": np.array([axis], np.int64)}
        got = interp.run(feeds)
        want = ort_node("Shape", [x])[0] // 2, ort("ReduceSum", x, [axis], {"keepdims": 0})
        assert_same(got["half"], want[0])
        assert_same(got["r"], want[1])
        assert_same(got["am"], ort_node("ArgMax", [x], {"axis": 2}, opset=13)[0])
