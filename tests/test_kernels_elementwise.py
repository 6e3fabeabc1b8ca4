"""Elementwise CPU kernels against onnxruntime (single-node models), NumPy where ORT cannot.

Floats within rtol 1e-4 / atol 1e-5, integers and booleans exact. Inputs are seeded random and
small. Float32 is the main dtype; a few tests cover float64 and float16 so that the Numba
kernels compile only a handful of times.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import DTypeError, EdgeRTError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.registry import OpContext, TensorInfo

# (shape of A, shape of B): same, scalar, row, column, outer product, rank mismatch, 0-d.
BROADCAST = [
    ((3, 4), (3, 4)),
    ((3, 4), (1,)),
    ((3, 4), (4,)),
    ((3, 1), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((4,), (2, 3, 4)),
    ((), (2, 3)),
]

# float16 results are computed in float32 and rounded once: allow one float16 ulp.
F16_RTOL = 1e-3


def rand(shape, dtype, seed=0, low=-5, high=5, nonzero=False):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        lo = 0 if dt.kind == "u" else low
        a = rng.integers(lo, high, size=shape).astype(dt)
    else:
        a = rng.uniform(low, high, size=shape).astype(dt)
    if nonzero:
        a[a == 0] = 3
    return np.asarray(a, dt)


def assert_same(got: np.ndarray, want: np.ndarray, rtol=RTOL, atol=ATOL) -> None:
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def check(op, inputs, attrs=None, opset=21, const=(), rtol=RTOL, atol=ATOL):
    got = run_kernel(op, inputs, attrs, const_inputs=const)
    want = ort_node(op, inputs, attrs, num_outputs=len(got), opset=opset)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w, rtol, atol)
    return got


# ----- binary arithmetic -----------------------------------------------------------------------
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic_broadcast(op, dtype, shapes):
    a = rand(shapes[0], dtype, seed=1, low=-50, high=50)
    b = rand(shapes[1], dtype, seed=2, low=-9, high=9, nonzero=True)
    check(op, [a, b])


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint32", "uint64", "float64"])
def test_arithmetic_other_dtypes(dtype):
    a = rand((2, 3, 4), dtype, seed=3, low=-20, high=20)
    b = rand((3, 1), dtype, seed=4, low=-7, high=7, nonzero=True)
    for op in ("Add", "Sub", "Mul", "Div"):
        check(op, [a, b])


# Integer Div runs in NumPy up to 256 elements (prepare-time shape arithmetic) and in Numba
# above: every integer Div test runs at both sizes.
DIV_REPEATS = [1, 100]


@pytest.mark.parametrize("repeat", DIV_REPEATS)
def test_integer_div_truncates_toward_zero(repeat):
    a = np.tile(np.array([7, -7, 7, -7, 1, -1, 0, 6, -6], np.int32), repeat)
    b = np.tile(np.array([2, 2, -2, -2, 3, 3, -5, -3, 4], np.int32), repeat)
    got = run_kernel("Div", [a, b])[0]
    np.testing.assert_array_equal(got, np.tile([3, -3, -3, 3, 0, 0, 0, -2, -1], repeat))
    check("Div", [a, b])
    check("Div", [a.astype(np.int64), b.astype(np.int64)])
    check("Div", [a.astype(np.int8), b.astype(np.int8)])
    check("Div", [np.abs(a).astype(np.uint16), np.abs(b).astype(np.uint16)])


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32"])
@pytest.mark.parametrize("shapes", [((40, 30), (30,)), ((50, 1, 7), (9, 1)), ((300,), ())],
                         ids=str)
def test_integer_div_numba_path_broadcast(shapes, dtype):
    a = rand(shapes[0], dtype, seed=1, low=-1000, high=1000)
    b = rand(shapes[1], dtype, seed=2, low=-30, high=30, nonzero=True)
    check("Div", [a, b])


@pytest.mark.parametrize("repeat", DIV_REPEATS)
def test_integer_div_edge_values(repeat):
    # INT_MIN / -1 overflows (and traps in C): edgert wraps like two's complement negation.
    a = np.tile(np.array([np.iinfo(np.int32).min, 5, np.iinfo(np.int32).max], np.int32), repeat)
    b = np.full_like(a, -1)
    got = run_kernel("Div", [a, b])[0]
    np.testing.assert_array_equal(got, np.negative(a))
    # A divisor that is 0 at run time gives 0 (documented; onnxruntime raises).
    a = np.tile(np.array([5, -5, 0], np.int64), repeat)
    got = run_kernel("Div", [a, np.zeros_like(a)])[0]
    np.testing.assert_array_equal(got, np.zeros_like(a))


def test_integer_div_by_constant_zero_is_rejected():
    with pytest.raises(KernelError, match=r"Div.*divisor"):
        run_kernel("Div", [np.ones(3, np.int32), np.array([1, 0, 2], np.int32)], const_inputs=(1,))
    with pytest.raises(KernelError, match=r"Mod.*divisor"):
        run_kernel("Mod", [np.ones(3, np.int32), np.array(0, np.int32)], const_inputs=(1,))


def test_float_div_by_zero_is_ieee():
    a = np.array([1, -1, 0], np.float32)
    check("Div", [a, np.zeros(3, np.float32)])


@pytest.mark.parametrize("dtype", ["int32", "int64", "int8"])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_integers(fmod, dtype):
    a = np.array([5, -5, 5, -5, 7, -7, 0, 3], dtype)
    b = np.array([3, 3, -3, -3, 7, 2, 4, -5], dtype)
    check("Mod", [a, b], {"fmod": fmod})
    check("Mod", [rand((2, 3, 4), dtype, 5, -20, 20), rand((4,), dtype, 6, -6, 6, True)],
          {"fmod": fmod})


def test_mod_floats():
    a = rand((3, 4), np.float32, 7, -10, 10)
    b = rand((4,), np.float32, 8, -4, 4, nonzero=True)
    check("Mod", [a, b], {"fmod": 1})
    # Floor modulo of floats (opset 28; older onnxruntime opsets refuse it).
    check("Mod", [a, b], {"fmod": 0}, opset=28)


@pytest.mark.parametrize(
    "base, expo",
    [
        ("float32", "float32"),
        ("float32", "int64"),
        ("float32", "float64"),
        ("float64", "int32"),
        ("int32", "float32"),
        ("int32", "int32"),
        ("int64", "int64"),
    ],
)
def test_pow_mixed_dtypes(base, expo):
    if np.dtype(base).kind == "f":
        a = rand((3, 4), base, 9, 0.1, 3)
    else:
        a = rand((3, 4), base, 9, -4, 5)
    if np.dtype(expo).kind == "f":
        b = rand((4,), expo, 10, -2, 3)
    else:
        b = rand((4,), expo, 10, -2, 4)  # negative integer exponents included
    check("Pow", [a, b])


def test_pow_negative_base_fractional_exponent_is_nan():
    check("Pow", [np.array([-2.0, 4.0], np.float32), np.array([0.5, 0.5], np.float32)])


# ----- variadic --------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("shapes", [[(3, 4)], [(3, 4), (4,)], [(3, 1), (4,), (2, 1, 1)]], ids=str)
def test_variadic(op, shapes):
    inputs = [rand(s, np.float32, seed=i) for i, s in enumerate(shapes)]
    check(op, inputs)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_integers(op, dtype):
    check(op, [rand((2, 3), dtype, 1, -9, 9), rand((3,), dtype, 2, -9, 9), rand((), dtype, 3)])


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_propagate_nan(op):
    a = np.array([np.nan, -1, 2, np.inf, -np.inf, np.nan], np.float32)
    b = np.array([1, np.nan, 1, 0, 0, np.nan], np.float32)
    got = check(op, [a, b])[0]
    assert np.isnan(got[[0, 1, 5]]).all()


# ----- comparisons, logic, bits ----------------------------------------------------------------
@pytest.mark.parametrize("shapes", BROADCAST[:6], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons(op, dtype, shapes):
    # Few distinct values so that equality actually happens.
    check(op, [rand(shapes[0], dtype, 1, -2, 2).round(), rand(shapes[1], dtype, 2, -2, 2).round()])


def test_equal_bool_and_string():
    check("Equal", [rand((3, 4), np.bool_, 1), rand((4,), np.bool_, 2)])
    a = np.array(["a", "bc", "", "d"], dtype=object)
    b = np.array(["a", "b", "", "e"], dtype=object)
    got = run_kernel("Equal", [a, b])[0]
    np.testing.assert_array_equal(got, ort_node("Equal", [a.astype(str), b.astype(str)])[0])


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@pytest.mark.parametrize("shapes", BROADCAST[:5], ids=str)
def test_logic(op, shapes):
    check(op, [rand(shapes[0], np.bool_, 1), rand(shapes[1], np.bool_, 2)])


def test_not():
    check("Not", [rand((3, 4), np.bool_, 3)])


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64", "uint64"])
@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise(op, dtype):
    check(op, [rand((3, 4), dtype, 1, -100, 100), rand((4,), dtype, 2, -100, 100)])


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int32", "uint64"])
def test_bitwise_not(dtype):
    check("BitwiseNot", [rand((3, 4), dtype, 1, -100, 100)])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(direction, dtype):
    x = rand((3, 4), dtype, 1, 0, 200)
    y = rand((4,), dtype, 2, 0, 8)
    check("BitShift", [x, y], {"direction": direction})


def test_bitshift_past_width_gives_zero():
    x = np.array([1, 255], np.uint8)
    check("BitShift", [x, np.array([9, 8], np.uint8)], {"direction": "LEFT"})


# ----- Where, PRelu, Clip ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@pytest.mark.parametrize(
    "shapes", [((3, 4), (3, 4), (3, 4)), ((4,), (3, 1), ()), ((2, 1, 4), (3, 1), (1, 4))], ids=str
)
def test_where(shapes, dtype):
    inputs = [rand(shapes[0], np.bool_, 1), rand(shapes[1], dtype, 2), rand(shapes[2], dtype, 3)]
    if dtype == "bool":  # onnxruntime has no bool Where kernel
        assert_same(run_kernel("Where", inputs)[0], np.where(*inputs))
    else:
        check("Where", inputs)


def test_where_strings():
    c = np.array([True, False, True])
    x = np.array(["a", "b", "c"], dtype=object)
    y = np.array(["z"], dtype=object)
    got = run_kernel("Where", [c, x, y])[0]
    np.testing.assert_array_equal(got, np.where(c, x, y))


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1), (5,), (2, 3, 4, 5)], ids=str)
def test_prelu(slope_shape):
    x = rand((2, 3, 4, 5), np.float32, 1)
    slope = rand(slope_shape, np.float32, 2, 0, 1)
    check("PRelu", [x, slope])


def test_prelu_integers_and_nan():
    # onnxruntime registers integer PRelu for opset 16 only.
    check("PRelu", [np.array([-2, 3, 0, -7], np.int32), np.array([2], np.int32)], opset=16)
    x = np.array([np.nan, -1.0, 1.0, -np.inf], np.float32)
    check("PRelu", [x, np.array([0.5], np.float32)])


def test_prelu_slope_must_not_grow_input():
    with pytest.raises(ShapeError, match="PRelu"):
        run_kernel("PRelu", [np.ones((3,), np.float32), np.ones((2, 3), np.float32)])


@pytest.mark.parametrize(
    "bounds", [(None, None), (-1.0, None), (None, 2.0), (-1.0, 2.0), (2.0, -1.0)], ids=str
)
def test_clip(bounds):
    x = rand((3, 4), np.float32, 1, -4, 4)
    x[0, 0] = np.nan
    lo, hi = (None if v is None else np.array(v, np.float32) for v in bounds)
    check("Clip", [x, lo, hi])
    check("Clip", [x, lo, hi], const=(1, 2))


def test_clip_integers_and_one_element_bounds():
    x = rand((3, 4), np.int32, 1, -9, 9)
    check("Clip", [x, np.array(-2, np.int32), np.array(3, np.int32)])
    got = run_kernel("Clip", [x, np.array([-2], np.int32), None])[0]
    np.testing.assert_array_equal(got, np.maximum(x, -2))


def test_clip_bad_bounds():
    x = np.ones((2, 2), np.float32)
    with pytest.raises(ShapeError, match=r"Clip.*min"):
        run_kernel("Clip", [x, np.zeros(2, np.float32)])
    with pytest.raises(DTypeError, match=r"Clip.*max"):
        run_kernel("Clip", [x, None, np.array(1, np.float64)])


# ----- unary -----------------------------------------------------------------------------------
NUMPY_UNARY = ["Relu", "Tanh", "Softplus", "Exp", "Abs", "Neg", "Sign", "Floor", "Ceil", "Round",
               "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh", "Reciprocal"]
NUMBA_UNARY = ["Sigmoid", "Erf", "Gelu", "Mish", "HardSwish", "HardSigmoid", "Elu", "Selu",
               "Celu", "LeakyRelu", "ThresholdedRelu", "Softsign", "Shrink"]
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 88.0, -88.0,
                     1e-8, 30.0, -30.0], np.float32)


@pytest.mark.parametrize("op", NUMPY_UNARY + NUMBA_UNARY)
def test_unary_float32(op):
    x = rand((4, 5, 6), np.float32, 11, -6, 6)
    check(op, [x], opset=20 if op == "Gelu" else 21)


@pytest.mark.parametrize("op", NUMPY_UNARY + NUMBA_UNARY)
def test_unary_special_values(op):
    check(op, [SPECIALS], opset=20 if op == "Gelu" else 21)


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Asin", "Acos", "Atanh", "Acosh"])
def test_unary_domain_limited(op):
    if op == "Acosh":
        x = rand((3, 4), np.float32, 12, 1, 6)
    elif op in ("Log", "Sqrt"):
        x = rand((3, 4), np.float32, 12, 0.01, 6)
    else:
        x = rand((3, 4), np.float32, 12, -0.99, 0.99)
    check(op, [x])
    check(op, [np.array([-1.0, np.nan, 0.0, 2.0], np.float32)])  # outside the domain: NaN


def test_round_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997], np.float32)
    check("Round", [x])


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("LeakyRelu", {"alpha": 0.3}),
        ("Elu", {"alpha": 0.5}),
        ("Selu", {"alpha": 2.0, "gamma": 0.7}),
        ("Celu", {"alpha": 2.5}),
        ("ThresholdedRelu", {"alpha": 0.7}),
        ("HardSigmoid", {"alpha": 0.4, "beta": 0.2}),
        ("Gelu", {"approximate": "tanh"}),
        ("Shrink", {"bias": 0.3, "lambd": 1.2}),
    ],
)
def test_unary_attributes(op, attrs):
    x = rand((3, 7), np.float32, 13, -4, 4)
    check(op, [x], attrs, opset=20 if op == "Gelu" else 21)


def test_relu_nan_and_integers():
    check("Relu", [np.array([np.nan, -1, 2, np.inf, -np.inf], np.float32)])
    check("Relu", [rand((3, 4), np.int32, 1)])
    check("Relu", [rand((3, 4), np.int8, 2)])


def test_shrink_integers():
    x = np.array([-3, -2, -1, 0, 1, 2, 3], np.int32)
    check("Shrink", [x], {"bias": 1.0, "lambd": 1.5})


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "int8"])
def test_abs_sign_neg_integers(dtype):
    x = rand((3, 4), dtype, 1, -9, 9)
    check("Abs", [x])
    check("Sign", [x])
    if np.dtype(dtype).kind == "i":
        check("Neg", [x])


@pytest.mark.parametrize("pos, neg", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_isinf_isnan(pos, neg):
    check("IsInf", [SPECIALS], {"detect_positive": pos, "detect_negative": neg})
    check("IsNaN", [SPECIALS])


@pytest.mark.parametrize("op", ["Sigmoid", "Gelu", "Tanh", "Exp", "LeakyRelu"])
def test_unary_float16(op):
    x = rand((3, 5), np.float16, 14, -4, 4)
    check(op, [x], opset=20 if op == "Gelu" else 21, rtol=F16_RTOL, atol=1e-3)


@pytest.mark.parametrize("op", ["Sigmoid", "Sqrt"])
def test_unary_float64(op):
    x = rand((3, 5), np.float64, 15, -4, 4)
    check(op, [np.abs(x)] if op == "Sqrt" else [x])


def test_erf_float64_against_math_erf():
    # onnxruntime has no float64 Erf; the C library's erf is the reference.
    x = np.concatenate([rand((40,), np.float64, 15, -4, 4), [0.0, np.inf, -np.inf, np.nan]])
    want = np.array([math.erf(v) for v in x])
    assert_same(run_kernel("Erf", [x])[0], want, rtol=1e-12, atol=1e-15)


def test_float16_prelu_goes_through_float32():
    x = rand((2, 3, 4), np.float16, 16)
    slope = rand((3, 1), np.float16, 17, 0, 1)
    check("PRelu", [x, slope], rtol=F16_RTOL, atol=1e-3)


def test_large_tensor_many_threads():
    # Enough elements for every worker thread to get a slice, with an odd size.
    x = rand((257, 391), np.float32, 18, -8, 8)
    check("Sigmoid", [x], None)
    got = run_kernel("Gelu", [x], num_threads=2)[0]
    assert_same(got, ort_node("Gelu", [x], opset=20)[0])


# ----- empty tensors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op, inputs",
    [
        ("Add", [np.zeros((0, 3), np.float32), np.ones((3,), np.float32)]),
        ("Div", [np.zeros((0, 4), np.int32), np.ones((4,), np.int32)]),
        ("Sigmoid", [np.zeros((0,), np.float32)]),
        ("Gelu", [np.zeros((2, 0), np.float32)]),
        ("PRelu", [np.zeros((0, 3), np.float32), np.ones((3,), np.float32)]),
        ("Where", [np.zeros((0,), bool), np.ones((1,), np.float32), np.ones((1,), np.float32)]),
        ("Max", [np.zeros((0, 2), np.float32), np.ones((2,), np.float32)]),
    ],
)
def test_empty_tensors(op, inputs):
    got = run_kernel(op, inputs)[0]
    want = ort_node(op, inputs, opset=20 if op == "Gelu" else 21)[0]
    assert got.shape == want.shape and got.dtype == want.dtype


# ----- errors ----------------------------------------------------------------------------------
def test_non_broadcastable_shapes_name_op_and_shapes():
    with pytest.raises(ShapeError, match=r"Add 'test_node'.*\(3, 4\).*\(3,\)"):
        run_kernel("Add", [np.ones((3, 4), np.float32), np.ones((3,), np.float32)])
    with pytest.raises(ShapeError, match="Where"):
        run_kernel("Where", [np.ones(2, bool), np.ones(3, np.float32), np.ones(1, np.float32)])
    with pytest.raises(ShapeError, match="Max"):
        run_kernel("Max", [np.ones(2, np.float32), np.ones(1, np.float32), np.ones(3, np.float32)])


@pytest.mark.parametrize(
    "op, inputs",
    [
        ("Sigmoid", [np.ones(3, np.int32)]),
        ("Add", [np.ones(3, bool), np.ones(3, bool)]),
        ("And", [np.ones(3, np.float32), np.ones(3, np.float32)]),
        # signed ints are valid since opset 28
        ("BitShift", [np.ones(3, np.float32), np.ones(3, np.float32)]),
        ("Sum", [np.ones(3, np.int32)]),
        ("Neg", [np.ones(3, np.uint8)]),
        ("Pow", [np.ones(3, np.int8), np.ones(3, np.int8)]),
        ("Add", [np.ones(3, np.float32), np.ones(3, np.float64)]),
        ("Where", [np.ones(3, np.float32), np.ones(3, np.float32), np.ones(3, np.float32)]),
        ("Erf", [np.ones(3, np.complex64)]),
    ],
)
def test_wrong_dtype(op, inputs):
    attrs = {"direction": "LEFT"} if op == "BitShift" else None
    with pytest.raises(DTypeError, match=op):
        run_kernel(op, inputs, attrs)


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("Mod", {"fmod": 2}),
        ("Gelu", {"approximate": "fast"}),
        ("BitShift", {"direction": "UP"}),
        ("Celu", {"alpha": 0.0}),
    ],
)
def test_bad_attributes(op, attrs):
    dt = np.uint8 if op == "BitShift" else np.float32
    inputs = [np.ones(3, dt)] if op in ("Gelu", "Celu") else [np.ones(3, dt), np.ones(3, dt)]
    with pytest.raises(KernelError, match=op):
        run_kernel(op, inputs, attrs)


def test_input_count_checked():
    with pytest.raises(KernelError):
        run_kernel("Add", [np.ones(3, np.float32)])
    with pytest.raises(EdgeRTError):
        run_kernel("Max", [])


def test_kernels_registered_and_foldable():
    reg = registry()
    for op in ["Add", "Where", "Relu", "Gelu", "Clip", "BitShift", "IsInf", "Mean"]:
        cls = reg.lookup(op, "", 7)
        assert cls is not None and cls.foldable, op


def test_output_is_written_in_place():
    # The kernel must fill the planned buffer it is given, never rebind it.
    x = rand((4, 5), np.float32, 19)
    for op in ("Sigmoid", "Relu", "Add"):
        kernel = registry().lookup(op)(OpContext(op, "n", {}, "", 21, 1))
        inputs = [x] if op != "Add" else [x, x]
        (info,) = kernel.prepare([TensorInfo(a.shape, a.dtype) for a in inputs])
        out = np.full(info.shape, np.nan, info.dtype)
        assert kernel.invoke(inputs, [out]) is None
        assert_same(out, ort_node(op, inputs)[0])
