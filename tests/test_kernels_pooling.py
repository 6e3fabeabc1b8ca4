"""Pooling CPU kernels against onnxruntime, and against a NumPy reference where ORT deviates
from the ONNX spec (NaN propagation in MaxPool, SAME padding with dilation)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry


def rand(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def check(op: str, x: np.ndarray, attrs: dict, num_outputs: int = 1) -> list[np.ndarray]:
    got = run_kernel(op, [x], attrs)[:num_outputs]
    want = ort_node(op, [x], attrs, num_outputs=num_outputs)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert g.dtype == w.dtype
        if g.dtype.kind == "i":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    return got


def numpy_pool(x, kind, kernel, strides, dilations, pads_begin, out_shape):
    """Reference pooling by explicit window gathering (max: NumPy's NaN-propagating max)."""
    nsp = len(kernel)
    fill = -np.inf if kind == "max" else np.nan
    ends = [
        (o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_shape, strides, kernel, dilations)
    ]
    pad_width = [(0, 0), (0, 0)] + [
        (pb, max(0, e - pb - n)) for pb, e, n in zip(pads_begin, ends, x.shape[2:])
    ]
    xp = np.pad(x.astype(np.float64), pad_width, constant_values=fill)
    taps = []
    for tap in itertools.product(*[range(k) for k in kernel]):
        sl = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilations, out_shape, strides)
        )
        taps.append(xp[(slice(None), slice(None)) + sl])
    stack = np.stack(taps)
    assert stack.shape[3:] == tuple(out_shape) and nsp == len(out_shape)
    if kind == "max":
        return np.max(stack, axis=0)
    return np.nanmean(stack, axis=0)  # average over the input elements only


# ----- MaxPool ----------------------------------------------------------------------------------
MAXPOOL_CASES = {
    "plain": {"kernel_shape": [3, 3]},
    "strided_padded": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "pads_asym": {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0]},
    "dilations": {
        "kernel_shape": [2, 2],
        "strides": [1, 2],
        "dilations": [2, 3],
        "pads": [1, 1, 0, 1],
    },
    "ceil_mode": {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
    "ceil_mode_drops_window": {
        "kernel_shape": [2, 2],
        "strides": [3, 3],
        "pads": [1, 1, 1, 1],
        "ceil_mode": 1,
    },
    "ceil_dilated": {
        "kernel_shape": [2, 3],
        "strides": [2, 2],
        "dilations": [2, 2],
        "pads": [1, 0, 1, 1],
        "ceil_mode": 1,
    },
    "same_upper": {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    "same_lower": {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    "valid": {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "VALID"},
    "valid_ceil": {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "VALID", "ceil_mode": 1},
    "column_major": {
        "kernel_shape": [3, 2],
        "strides": [2, 1],
        "pads": [1, 0, 1, 1],
        "storage_order": 1,
    },
}


@pytest.mark.parametrize("case", MAXPOOL_CASES)
def test_maxpool2d_with_indices(case):
    rng = np.random.default_rng(1)
    check("MaxPool", rand(rng, 2, 3, 7, 8), MAXPOOL_CASES[case], num_outputs=2)


@pytest.mark.parametrize("case", ["plain", "strided_padded", "dilations", "ceil_mode"])
def test_maxpool_without_indices_output(case):
    """The interpreter passes no Indices buffer when the model does not use it."""
    rng = np.random.default_rng(2)
    x = rand(rng, 2, 3, 9, 10)
    attrs = MAXPOOL_CASES[case]
    cls = registry().lookup("MaxPool")
    from edgert.runtime.registry import OpContext, TensorInfo

    kernel = cls(OpContext("MaxPool", "m", dict(attrs)))
    (y_info, _) = kernel.prepare([TensorInfo(x.shape, x.dtype)])
    y = np.full(y_info.shape, np.nan, np.float32)
    kernel.invoke([x], [y, None])
    np.testing.assert_allclose(y, ort_node("MaxPool", [x], attrs)[0], rtol=RTOL, atol=ATOL)


def test_maxpool1d_and_3d():
    rng = np.random.default_rng(3)
    attrs1 = {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "dilations": [2]}
    check("MaxPool", rand(rng, 2, 3, 11), attrs1, num_outputs=2)
    x3 = rand(rng, 1, 2, 4, 5, 6)
    for order in (0, 1):
        attrs3 = {
            "kernel_shape": [2, 2, 3],
            "strides": [2, 1, 2],
            "pads": [1, 0, 1, 0, 1, 1],
            "storage_order": order,
        }
        check("MaxPool", x3, attrs3, num_outputs=2)
    check("MaxPool", x3, {"kernel_shape": [2, 3, 2], "strides": [2, 2, 2], "ceil_mode": 1}, 2)


def _qrand(rng: np.random.Generator, *shape: int, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("case", MAXPOOL_CASES)
def test_maxpool_int8_uint8_with_indices(case, dtype):
    """MaxPool-12 on quantized tensors (QOperator models): Y and Indices as onnxruntime's."""
    rng = np.random.default_rng(11)
    check("MaxPool", _qrand(rng, 2, 3, 7, 8, dtype=dtype), MAXPOOL_CASES[case], num_outputs=2)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_maxpool_int8_uint8_1d_3d_and_padding(dtype):
    """1-D and 3-D windows; pads hold the type's minimum: an all-minimum input with padding
    stays at the minimum (a pad of 0 would win for int8), and all-maximum stays at the max."""
    rng = np.random.default_rng(12)
    attrs1 = {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "dilations": [2]}
    check("MaxPool", _qrand(rng, 2, 3, 11, dtype=dtype), attrs1, num_outputs=2)
    attrs3 = {"kernel_shape": [2, 2, 3], "strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1],
              "storage_order": 1}
    check("MaxPool", _qrand(rng, 1, 2, 4, 5, 6, dtype=dtype), attrs3, num_outputs=2)
    info = np.iinfo(dtype)
    padded = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    for fill in (info.min, info.min + 1, info.max):
        x = np.full((1, 2, 5, 5), fill, dtype)
        y, ind = check("MaxPool", x, padded, num_outputs=2)
        assert (y == fill).all() and (ind >= 0).all()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},  # the row-wise kernel
    {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 1], "strides": [3, 1], "pads": [2, 0, 2, 0]},  # all-padding rows
    {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 0, 1, 0]},  # the general kernel
    {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
])
@pytest.mark.parametrize("shape", [(1, 2, 9, 10), (2, 16, 40, 41)])  # serial / parallel
def test_maxpool_int8_uint8_without_indices(dtype, attrs, shape):
    """Without the Indices output (what the interpreter passes when the model does not use it):
    the row-wise kernel for 2-D undilated windows, the general one elsewhere; small inputs run
    serially, larger ones in parallel."""
    from edgert.runtime.registry import OpContext, TensorInfo

    rng = np.random.default_rng(13)
    x = _qrand(rng, *shape[: len(attrs["kernel_shape"]) + 2], dtype=dtype)
    k = registry().lookup("MaxPool", "", 21)(OpContext("MaxPool", "p", attrs, "", 21, 1))
    info = k.prepare([TensorInfo(x.shape, x.dtype)])[0]
    assert info.dtype == np.dtype(dtype)
    y = np.empty(info.shape, info.dtype)
    k.invoke([x], [y])
    np.testing.assert_array_equal(y, ort_node("MaxPool", [x], attrs)[0])


def test_maxpool_float64():
    rng = np.random.default_rng(4)
    x = rand(rng, 1, 2, 6, 6, dtype=np.float64)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    got = run_kernel("MaxPool", [x], attrs)[0]
    want = numpy_pool(x, "max", [3, 3], [2, 2], [1, 1], [1, 1], [3, 3])
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_maxpool_propagates_nan_like_numpy():
    """A NaN anywhere in a window makes that output NaN (onnxruntime drops some of them)."""
    rng = np.random.default_rng(5)
    x = rand(rng, 1, 2, 6, 7)
    x[0, 0, 0, 0] = np.nan  # first element of a window
    x[0, 0, 2, 4] = np.nan  # middle of windows
    x[0, 1, 5, 6] = np.nan  # last element of a window
    for attrs, out in [
        ({"kernel_shape": [3, 3]}, [4, 5]),
        ({"kernel_shape": [2, 2], "strides": [2, 2]}, [3, 3]),
    ]:
        got, idx = run_kernel("MaxPool", [x], attrs)
        want = numpy_pool(
            x, "max", attrs["kernel_shape"], attrs.get("strides", [1, 1]), [1, 1], [0, 0], out
        )
        np.testing.assert_array_equal(got, want.astype(np.float32))  # NaN == NaN here
        # The index of a NaN result points at a NaN element.
        assert np.isnan(x.reshape(-1)[idx[np.isnan(got)]]).all()
    got = run_kernel("GlobalMaxPool", [x], {})[0]
    np.testing.assert_array_equal(got, np.max(x, axis=(2, 3), keepdims=True))


def test_maxpool_ties_take_first_index():
    x = np.zeros((1, 1, 4, 4), np.float32)
    check("MaxPool", x, {"kernel_shape": [2, 2], "strides": [2, 2]}, num_outputs=2)
    check("MaxPool", x, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "storage_order": 1}, 2)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_same_padding_with_dilation_follows_spec(auto_pad, kind):
    """ONNX: SAME pads (out - 1) * s + (k - 1) * d + 1 - in; onnxruntime leaves d out of it."""
    rng = np.random.default_rng(6)
    x = rand(rng, 2, 2, 7, 8)
    kernel, strides, dilations = [2, 3], [2, 3], [2, 2]
    out = [-(-n // s) for n, s in zip(x.shape[2:], strides)]
    pads_begin = []
    for n, k, s, d, o in zip(x.shape[2:], kernel, strides, dilations, out):
        total = max(0, (o - 1) * s + (k - 1) * d + 1 - n)
        pads_begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    attrs = {
        "kernel_shape": kernel,
        "strides": strides,
        "dilations": dilations,
        "auto_pad": auto_pad,
    }
    op = "MaxPool" if kind == "max" else "AveragePool"
    got = run_kernel(op, [x], attrs)[0]
    want = numpy_pool(x, kind, kernel, strides, dilations, pads_begin, out)
    assert got.shape == want.shape == (2, 2, 4, 3)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ----- AveragePool ------------------------------------------------------------------------------
AVGPOOL_CASES = {
    "plain": {"kernel_shape": [3, 3]},
    "strided_padded": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "pads_asym": {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [2, 0, 0, 1]},
    "dilations": {
        "kernel_shape": [2, 2],
        "strides": [1, 2],
        "dilations": [2, 3],
        "pads": [1, 1, 0, 1],
    },
    "ceil_mode": {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    "ceil_mode_drops_window": {
        "kernel_shape": [2, 2],
        "strides": [3, 3],
        "pads": [1, 1, 1, 1],
        "ceil_mode": 1,
    },
    "ceil_dilated": {
        "kernel_shape": [3, 3],
        "strides": [2, 2],
        "dilations": [2, 2],
        "pads": [1, 1, 1, 1],
        "ceil_mode": 1,
    },
    "same_upper": {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    "same_lower": {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    "valid": {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "VALID"},
    "five_rows": {"kernel_shape": [5, 4], "strides": [1, 2], "pads": [2, 1, 2, 2]},
    "halves": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "one_row": {"kernel_shape": [1, 3], "strides": [1, 2], "pads": [0, 1, 0, 1]},
}


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", AVGPOOL_CASES)
def test_averagepool2d(case, count_include_pad):
    rng = np.random.default_rng(7)
    attrs = dict(AVGPOOL_CASES[case], count_include_pad=count_include_pad)
    check("AveragePool", rand(rng, 2, 3, 7, 8), attrs)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_averagepool1d_and_3d(count_include_pad):
    rng = np.random.default_rng(8)
    check(
        "AveragePool",
        rand(rng, 2, 3, 11),
        {
            "kernel_shape": [4],
            "strides": [3],
            "pads": [2, 1],
            "count_include_pad": count_include_pad,
        },
    )
    check(
        "AveragePool",
        rand(rng, 1, 2, 5, 4, 6),
        {
            "kernel_shape": [2, 2, 3],
            "strides": [2, 1, 2],
            "pads": [1, 0, 1, 0, 1, 1],
            "ceil_mode": 1,
            "count_include_pad": count_include_pad,
        },
    )


def test_averagepool_float64():
    rng = np.random.default_rng(9)
    x = rand(rng, 1, 2, 6, 7, dtype=np.float64)
    attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}
    got = run_kernel("AveragePool", [x], attrs)[0]
    want = numpy_pool(x, "avg", [3, 2], [2, 2], [1, 1], [1, 0], [3, 4])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ----- LpPool and the Global pools ----------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool(p):
    rng = np.random.default_rng(10)
    x = rand(rng, 2, 3, 7, 8)
    check("LpPool", x, {"kernel_shape": [3, 3], "p": p, "pads": [1, 0, 1, 1], "strides": [2, 1]})
    check(
        "LpPool",
        x,
        {"kernel_shape": [3, 2], "p": p, "ceil_mode": 1, "strides": [2, 2], "dilations": [1, 2]},
    )
    check("GlobalLpPool", x, {"p": p})


def test_lppool_1d_same():
    rng = np.random.default_rng(11)
    check(
        "LpPool",
        rand(rng, 2, 2, 9),
        {"kernel_shape": [3], "strides": [2], "auto_pad": "SAME_UPPER"},
    )


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize(
    "shape", [(2, 3, 7), (2, 3, 5, 6), (1, 2, 3, 4, 5)], ids=["1d", "2d", "3d"]
)
def test_global_pools(op, shape):
    rng = np.random.default_rng(12)
    check(op, rand(rng, *shape), {})


def test_global_average_pool_large_plane():
    """A 128x128 mean of values near 1.5: rtol 1e-4 then checks the accumulation for real."""
    rng = np.random.default_rng(13)
    x = rng.uniform(1.0, 2.0, (1, 4, 128, 128)).astype(np.float32)
    got = check("GlobalAveragePool", x, {})[0]
    np.testing.assert_allclose(
        got, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), rtol=1e-6
    )


def test_global_pool_float64():
    rng = np.random.default_rng(14)
    x = rand(rng, 2, 3, 4, 5, dtype=np.float64)
    got = run_kernel("GlobalAveragePool", [x], {})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)


# ----- errors ------------------------------------------------------------------------------------
ERRORS = [
    (
        "no_kernel_shape",
        "MaxPool",
        (1, 2, 5, 5),
        {},
        KernelError,
        "attribute 'kernel_shape' is required",
    ),
    (
        "kernel_rank",
        "AveragePool",
        (1, 2, 5, 5),
        {"kernel_shape": [2]},
        ShapeError,
        "kernel_shape [2] has 1 axes but X of shape (1, 2, 5, 5) has 2 spatial axes",
    ),
    (
        "pad_not_smaller",
        "MaxPool",
        (1, 2, 5, 5),
        {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]},
        KernelError,
        "pads [2, 0, 0, 0] must be smaller than kernel_shape [2, 2]",
    ),
    (
        "kernel_too_big",
        "MaxPool",
        (1, 2, 3, 5),
        {"kernel_shape": [4, 2]},
        ShapeError,
        "spatial axis 0: the kernel extent 4 (kernel 4, dilation 1) is larger than the padded"
        " input 3",
    ),
    (
        "rank_2",
        "AveragePool",
        (2, 5),
        {"kernel_shape": [2]},
        ShapeError,
        "input X must have rank 3, 4 or 5",
    ),
    (
        "storage_order",
        "MaxPool",
        (1, 2, 5, 5),
        {"kernel_shape": [2, 2], "storage_order": 2},
        KernelError,
        "attribute 'storage_order' = 2 must be 0 or 1",
    ),
    (
        "ceil_mode",
        "AveragePool",
        (1, 2, 5, 5),
        {"kernel_shape": [2, 2], "ceil_mode": 3},
        KernelError,
        "attribute 'ceil_mode' = 3 must be 0 or 1",
    ),
    (
        "lp_p",
        "LpPool",
        (1, 2, 5, 5),
        {"kernel_shape": [2, 2], "p": 0},
        KernelError,
        "attribute 'p' = 0 must be >= 1",
    ),
    ("global_rank", "GlobalAveragePool", (2, 5), {}, ShapeError, "input X must have rank >= 3"),
    ("global_empty", "GlobalMaxPool", (1, 2, 0, 3), {}, ShapeError, "empty spatial axis"),
]


@pytest.mark.parametrize("name,op,shape,attrs,exc,msg", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, op, shape, attrs, exc, msg):
    x = np.ones(shape, np.float32)
    with pytest.raises(exc) as info:
        run_kernel(op, [x], attrs)
    assert msg in str(info.value)
    assert f"{op} 'test_node'" in str(info.value)


@pytest.mark.parametrize(
    "op", ["MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"]
)
def test_wrong_dtype(op):
    attrs = {} if op.startswith("Global") else {"kernel_shape": [2, 2]}
    for dt in ((np.int16, np.float16) if op == "MaxPool" else (np.int8, np.float16)):
        with pytest.raises(DTypeError, match=f"input X has dtype {np.dtype(dt)}"):
            run_kernel(op, [np.ones((1, 2, 4, 4), dt)], attrs)


def test_registered():
    reg = registry()
    for op in (
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
    ):
        assert reg.lookup(op, "", 1) is reg.lookup(op, "", 22) is not None


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [5, 4], "strides": [1, 2], "pads": [2, 1, 2, 2]},  # more than 3 rows
    {"kernel_shape": [1, 3], "strides": [1, 1]},
    {"kernel_shape": [3, 1], "strides": [3, 1], "pads": [2, 0, 2, 0]},  # all-padding rows
])
def test_maxpool_row_kernel_without_indices_propagates_nan(attrs):
    """The interpreter omits Indices when the model does: the row-wise kernel, whose window
    rows are merged one to three at a time, against the NaN-propagating NumPy reference."""
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    rng = np.random.default_rng(9)
    x = rand(rng, 2, 3, 11, 12)
    x.reshape(-1)[rng.choice(x.size, 12, replace=False)] = np.nan
    k = registry().lookup("MaxPool", "", 21)(OpContext("MaxPool", "p", attrs, "", 21, 1))
    info = k.prepare([TensorInfo(x.shape, x.dtype)])[0]
    y = np.empty(info.shape, np.float32)
    k.invoke([x], [y])
    assert k.rows
    pads = attrs.get("pads", [0, 0, 0, 0])
    want = numpy_pool(x, "max", attrs["kernel_shape"], attrs["strides"], [1, 1], pads[:2],
                      list(info.shape[2:]))
    np.testing.assert_array_equal(y, want.astype(np.float32))  # NaN == NaN here
    x2 = rand(rng, 2, 3, 11, 12)  # and onnxruntime, where NaN does not come in
    k.invoke([x2], [y])
    np.testing.assert_array_equal(y, ort_node("MaxPool", [x2], attrs)[0])
