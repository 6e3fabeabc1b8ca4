"""Shape / data-movement / indexing CPU kernels against onnxruntime (single-node models).

Data movement is compared exactly (values, shape and dtype). Every op with parameter inputs
(Reshape's shape, Slice's starts...) runs twice: with the parameters known at prepare (the static
path) and with them known only at invoke (prepare returns an unknown shape and invoke allocates
the outputs). None of these kernels compiles Numba code, so the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ort_node, run_kernel

from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.registry import OpContext, TensorInfo

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min

# dtypes onnxruntime implements for its generic data-movement kernels.
MOVE_DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int32, np.int64,
               np.bool_]


def rand(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if dt.kind in "iu":
        lo = 0 if dt.kind == "u" else -50
        return np.asarray(rng.integers(lo, 50, size=shape).astype(dt))
    if dt.kind == "O":
        return np.array([f"s{v}" for v in rng.integers(0, 100, size=int(np.prod(shape)))],
                        dtype=object).reshape(shape)
    return np.asarray(rng.standard_normal(shape).astype(dt))


def i64(*v):
    return np.array(v, dtype=np.int64)


def check(op, inputs, attrs=None, known="all", n_out=1, opset=21):
    """Run ``op`` in edgert and onnxruntime; outputs must be identical (shape, dtype, values)."""
    got = run_kernel(op, inputs, attrs, const_inputs=known, version=opset)
    want = ort_node(op, inputs, attrs, num_outputs=n_out, opset=opset)
    assert len(got) >= n_out
    for g, w in zip(got[:n_out], want):
        w = np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w)
    return got


def params_known(flag: bool, n_inputs: int):
    """``const_inputs`` for run_kernel: every input known, or only the data (input 0)."""
    return "all" if flag else ()


def make(op, attrs=None, version=21):
    cls = registry().lookup(op, "", version)
    return cls(OpContext(op, "node_x", dict(attrs or {}), "", version, 1))


def infos(*arrays, known=()):
    return [None if a is None else TensorInfo(a.shape, a.dtype, a if i in known else None)
            for i, a in enumerate(arrays)]


# ----- registration / contract --------------------------------------------------------------------
SHAPE_OPS = [
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Shape", "Size",
    "ConstantOfShape", "Cast", "CastLike", "Identity", "Dropout", "Expand", "Tile", "Range",
    "Pad", "NonZero", "Trilu", "OneHot", "DepthToSpace", "SpaceToDepth", "EyeLike", "TopK",
    "CumSum",
]


@pytest.mark.parametrize("op", SHAPE_OPS)
def test_registered_for_every_opset_and_foldable(op):
    for version in (1, 11, 13, 21):
        cls = registry().lookup(op, "", version)
        assert cls is not None, (op, version)
        assert cls.foldable


# ----- Reshape family -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", MOVE_DTYPES)
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("shape", [(0, -1), (-1,), (4, 0, 1, -1), (2, 3, 4), (6, -1, 2)])
def test_reshape(dtype, known, shape):
    x = rand((2, 3, 4), dtype)
    check("Reshape", [x, i64(*shape)], known=params_known(known, 2))


def test_reshape_allowzero_keeps_literal_zero():
    x = rand((0, 3), np.float32)
    check("Reshape", [x, i64(3, 0)], {"allowzero": 1})
    x = rand((2, 3), np.float32)
    check("Reshape", [x, i64(0, 3)], {"allowzero": 0})


def test_reshape_value_known_at_prepare_is_a_view_of_the_constant():
    x = rand((2, 6))
    k = make("Reshape")
    (out,) = k.prepare(infos(x, i64(3, 4), known=(0, 1)))
    assert out.shape == (3, 4) and np.array_equal(out.value, x.reshape(3, 4))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((5, -1), "cannot reshape input of shape (2, 3, 4) (24 elements)"),
        ((7, 4), "(28 elements"),
        ((-1, -1), "more than one -1"),
        ((2, -2, 3), "invalid entry -2"),
        ((1, 1, 1, 0), "entry 3 is 0"),
    ],
)
def test_reshape_errors_name_both_shapes(shape, message):
    x = rand((2, 3, 4))
    with pytest.raises(ShapeError, match="Reshape 'node_x'") as err:
        make("Reshape").prepare(infos(x, i64(*shape), known=(1,)))
    assert message in str(err.value)


def test_reshape_allowzero_with_minus_one_is_rejected():
    with pytest.raises(ShapeError, match="allowzero=1 forbids"):
        make("Reshape", {"allowzero": 1}).prepare(infos(rand((2, 3)), i64(0, -1), known=(1,)))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    check("Flatten", [rand((2, 3, 4), np.int32)], {"axis": axis})


def test_flatten_axis_out_of_range():
    with pytest.raises(KernelError, match="axis 4 is out of range"):
        make("Flatten", {"axis": 4}).prepare(infos(rand((2, 3, 4))))


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("axes", [None, (0,), (-1, 2), (2, 0)])
def test_squeeze(known, axes):
    x = rand((1, 3, 1, 1), np.float16)
    ins = [x] if axes is None else [x, i64(*axes)]
    check("Squeeze", ins, known=params_known(known, len(ins)))


def test_squeeze_errors():
    x = rand((1, 3, 1))
    with pytest.raises(ShapeError, match="cannot squeeze axis 1 of shape \\(1, 3, 1\\)"):
        make("Squeeze").prepare(infos(x, i64(1), known=(1,)))
    with pytest.raises(KernelError, match="axes value 3 is out of range for rank 3"):
        make("Squeeze").prepare(infos(x, i64(3), known=(1,)))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("axes", [(0,), (-1,), (1, 3), (3, 0), (-4, -1)])
def test_unsqueeze(dtype, known, axes):
    check("Unsqueeze", [rand((2, 3), dtype), i64(*axes)], known=params_known(known, 2))


def test_unsqueeze_scalar_and_errors():
    check("Unsqueeze", [np.array(3.5, np.float32), i64(0)])
    with pytest.raises(KernelError, match="repeated axes"):
        make("Unsqueeze").prepare(infos(rand((2, 3)), i64(1, 1), known=(1,)))
    with pytest.raises(KernelError, match="out of range for rank 4"):
        make("Unsqueeze").prepare(infos(rand((2, 3)), i64(0, 4), known=(1,)))


@pytest.mark.parametrize("dtype", MOVE_DTYPES)
@pytest.mark.parametrize("perm", [None, (0, 2, 1), (2, 0, 1), (1, 0, 2)])
def test_transpose(dtype, perm):
    attrs = {} if perm is None else {"perm": list(perm)}
    check("Transpose", [rand((2, 3, 4), dtype)], attrs)


@pytest.mark.parametrize("perm", [(0, 1), (0, 0, 1), (0, 1, 3), (2, 1, 0, 3)])
def test_transpose_bad_perm(perm):
    with pytest.raises(KernelError, match="Transpose 'node_x': perm .* is not a permutation"):
        make("Transpose", {"perm": list(perm)}).prepare(infos(rand((2, 3, 4))))


def test_transpose_strings():
    x = rand((2, 3), object)
    (got,) = run_kernel("Transpose", [x], {}, const_inputs=())
    assert np.array_equal(got, x.T)


@pytest.mark.parametrize("dtype", MOVE_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_concat(dtype, axis):
    shapes = [(2, 3), (2, 3), (2, 3)]
    if axis in (0, -2):
        shapes = [(1, 3), (2, 3), (0, 3)]
    else:
        shapes = [(2, 1), (2, 4), (2, 0)]
    xs = [rand(s, dtype, seed=k) for k, s in enumerate(shapes)]
    check("Concat", xs, {"axis": axis})


def test_concat_errors():
    a, b = rand((2, 3)), rand((3, 3))
    with pytest.raises(ShapeError, match="must match except on axis 1"):
        make("Concat", {"axis": 1}).prepare(infos(a, b))
    with pytest.raises(KernelError, match="axis 2 is out of range for rank 2"):
        make("Concat", {"axis": 2}).prepare(infos(a, a))
    with pytest.raises(DTypeError, match="share one dtype"):
        make("Concat", {"axis": 0}).prepare(infos(a, a.astype(np.float64)))


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize(
    "axis, split", [(0, (1, 2, 3)), (1, (4, 0)), (-1, (2, 3, 1)), (2, (6,))])
def test_split_by_sizes(known, axis, split):
    x = rand((6, 4, 6), np.int32)
    check("Split", [x, i64(*split)], {"axis": axis}, known=params_known(known, 2),
          n_out=len(split))


@pytest.mark.parametrize("dim, n", [(6, 3), (7, 3), (5, 2), (4, 4)])
def test_split_num_outputs(dim, n):
    x = rand((2, dim), np.float32)
    check("Split", [x], {"axis": 1, "num_outputs": n}, n_out=n, opset=18)


def test_split_errors():
    x = rand((2, 6))
    with pytest.raises(ShapeError, match="sum to dim 6 of axis 1"):
        make("Split", {"axis": 1}).prepare(infos(x, i64(2, 2), known=(1,)))
    with pytest.raises(KernelError, match="'split' input or the 'num_outputs'"):
        make("Split", {"axis": 1}).prepare(infos(x))
    with pytest.raises(ShapeError, match="cannot split dim 5"):
        make("Split", {"axis": 0, "num_outputs": 4}).prepare(infos(rand((5,))))


SLICES = [
    # starts, ends, axes, steps
    ((1,), (3,), None, None),
    ((0, 1), (I64_MAX, -1), (0, 2), None),
    ((-1,), (I64_MIN,), (1,), (-1,)),
    ((I64_MAX,), (0,), (2,), (-2,)),
    ((-100,), (100,), (0,), (2,)),
    ((3, 4), (-10, -10), (1, 2), (-1, -3)),
    ((2,), (2,), (2,), (1,)),
    ((5,), (1,), (2,), (1,)),
    ((0,), (-1,), (-1,), (-1,)),
    ((1, 0), (3, 10), (-1, 0), (1, 3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, np.bool_])
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("starts, ends, axes, steps", SLICES)
def test_slice(dtype, known, starts, ends, axes, steps):
    x = rand((3, 4, 5), dtype)
    ins = [x, i64(*starts), i64(*ends)]
    if axes is not None or steps is not None:
        ins.append(i64(*axes) if axes is not None else i64(*range(len(starts))))
    if steps is not None:
        ins.append(i64(*steps))
    check("Slice", ins, known=params_known(known, len(ins)))


def test_slice_int32_params_and_errors():
    x = rand((3, 4))
    check("Slice", [x, np.array([1], np.int32), np.array([4], np.int32),
                    np.array([1], np.int32)])
    with pytest.raises(KernelError, match="step for axis 0 is 0"):
        make("Slice").prepare(infos(x, i64(0), i64(2), i64(0), i64(0), known=(1, 2, 3, 4)))
    with pytest.raises(KernelError, match="repeated axes"):
        make("Slice").prepare(infos(x, i64(0, 0), i64(2, 2), i64(0, -2), known=(1, 2, 3)))
    with pytest.raises(DTypeError, match="starts must be an integer tensor"):
        make("Slice").prepare(infos(x, np.array([0.0]), i64(2), known=(1, 2)))


# ----- shapes as values ---------------------------------------------------------------------------
@pytest.mark.parametrize("start, end", [(None, None), (1, None), (-2, None), (0, -1),
                                        (-10, 10), (3, 1)])
def test_shape(start, end):
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    check("Shape", [rand((2, 3, 4, 5))], attrs, known=())


def test_shape_and_size_values_are_known_at_prepare_without_data():
    x = rand((2, 3, 4))
    (out,) = make("Shape", {"start": 1}).prepare(infos(x))
    assert out.value is not None and out.value.dtype == np.int64
    assert out.value.tolist() == [3, 4]
    (out,) = make("Size").prepare(infos(x))
    assert out.shape == () and int(out.value) == 24


@pytest.mark.parametrize("shape", [(2, 3, 4), (0, 3), ()])
def test_size(shape):
    check("Size", [rand(shape)], known=())


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("value", [None, np.array([7], np.int32), np.array([2.5], np.float64),
                                   np.array([True])])
@pytest.mark.parametrize("shape", [(2, 3), (0,), ()])
def test_constant_of_shape(known, value, shape):
    from onnx import numpy_helper

    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    mine = {} if value is None else {"value": value}
    got = run_kernel("ConstantOfShape", [i64(*shape)], mine, const_inputs="all" if known else ())
    (want,) = ort_node("ConstantOfShape", [i64(*shape)], attrs)
    assert got[0].dtype == want.dtype and got[0].shape == want.shape
    np.testing.assert_array_equal(got[0], want)


def test_constant_of_shape_negative_dim():
    with pytest.raises(ShapeError, match="negative dimension"):
        make("ConstantOfShape").prepare(infos(i64(2, -1), known=(0,)))


# ----- Cast ---------------------------------------------------------------------------------------
CAST_TYPES = {
    np.float32: 1, np.uint8: 2, np.int8: 3, np.uint16: 4, np.int16: 5, np.int32: 6,
    np.int64: 7, np.bool_: 9, np.float16: 10, np.float64: 11, np.uint32: 12, np.uint64: 13,
}


@pytest.mark.parametrize("src", list(CAST_TYPES))
@pytest.mark.parametrize("dst", list(CAST_TYPES))
def test_cast_numeric(src, dst):
    rng = np.random.default_rng(0)
    # Values that every type holds exactly or converts in a defined way (float -> int
    # truncation within range; no NaN or out-of-range, which ONNX leaves undefined).
    x = rng.integers(0, 100, size=(3, 4)).astype(np.float64)
    if np.dtype(src).kind == "f":
        x = x + rng.choice([0.0, 0.25, 0.5, 0.75], size=x.shape)
    if np.dtype(src).kind == "i" and np.dtype(dst).kind != "u":
        x = x - 50
    if np.dtype(src).kind == "f" and np.dtype(dst).kind in "if":
        x = x - 50
    check("Cast", [x.astype(src)], {"to": CAST_TYPES[dst]})


def test_cast_float_special_values():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30], np.float32)
    for to in (1, 10, 11, 9):  # float, float16, double, bool
        check("Cast", [x], {"to": to})


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_])
def test_cast_numbers_to_strings(dtype):
    x = np.array([0, 1, 12345678, 100000, 0.1, -2.5, 1e20, 1e-7, 3], np.float64)
    if np.dtype(dtype).kind in "iub":
        x = np.abs(np.round(x)).clip(0, 200)
    check("Cast", [x.astype(dtype)], {"to": 8})


def test_cast_float_specials_to_strings():
    check("Cast", [np.array([np.nan, np.inf, -np.inf, -0.0], np.float32)], {"to": 8})


@pytest.mark.parametrize("to", [1, 11, 6, 7])
def test_cast_strings_to_numbers(to):
    x = np.array(["1", "-2", "37", "0"], dtype=object)
    if to in (1, 11):
        x = np.array(["1.5", "-2", "1e3", "inf", "-0.25"], dtype=object)
    check("Cast", [x], {"to": to})


def test_cast_errors():
    # bfloat16 / float8 / float4 / int4 / int2 are supported (tests/test_kernels_float8.py,
    # tests/test_kernels_dtypes.py); float6 (27) is not an edgert type
    with pytest.raises(DTypeError, match="'to' = 27"):
        make("Cast", {"to": 27}).prepare(infos(rand((2,))))
    with pytest.raises(DTypeError, match="'to' = 99"):
        make("Cast", {"to": 99}).prepare(infos(rand((2,))))
    with pytest.raises(DTypeError, match="cannot parse string input"):
        run_kernel("Cast", [np.array(["x1"], dtype=object)], {"to": 1})


@pytest.mark.parametrize("src, like", [(np.float32, np.int32), (np.int64, np.float16),
                                       (np.bool_, np.float32), (np.float64, np.uint8)])
def test_cast_like(src, like):
    x = (rand((2, 3), np.float32) * 3).clip(0, 10).astype(src)
    check("CastLike", [x, np.zeros(1, like)])


# ----- Identity / Dropout -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", MOVE_DTYPES)
def test_identity(dtype):
    check("Identity", [rand((2, 3), dtype)], known=())


@pytest.mark.parametrize("with_ratio", [False, True])
def test_dropout_is_identity_with_true_mask(with_ratio):
    x = rand((3, 4))
    ins = [x, np.array(0.5, np.float32)] if with_ratio else [x]
    check("Dropout", ins, known=(), n_out=2)
    check("Dropout", [x, np.array(0.3, np.float32), np.array(False)], known=(), n_out=2)


def test_dropout_training_mode_is_rejected():
    x = rand((3, 4))
    with pytest.raises(KernelError, match="training_mode=true is not supported"):
        run_kernel("Dropout", [x, np.array(0.5, np.float32), np.array(True)], const_inputs="all")
    # Known only at invoke: the same error, from invoke.
    k = make("Dropout")
    outs = k.prepare(infos(x, np.array(0.5, np.float32), np.array(True)))
    with pytest.raises(KernelError, match="training_mode=true"):
        k.invoke([x, np.array(0.5, np.float32), np.array(True)],
                 [np.empty(o.shape, o.dtype) for o in outs])


# ----- Expand / Tile / Range / EyeLike ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_, np.float16])
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("xs, shape", [((3, 1), (2, 3, 4)), ((3, 1), (1,)), ((1, 4), (3, 1)),
                                       ((), (2, 2)), ((2, 3), (2, 1, 3))])
def test_expand(dtype, known, xs, shape):
    check("Expand", [rand(xs, dtype), i64(*shape)], known=params_known(known, 2))


def test_expand_incompatible():
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        make("Expand").prepare(infos(rand((3, 2)), i64(4, 3), known=(1,)))


@pytest.mark.parametrize("dtype", MOVE_DTYPES)
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("reps", [(1, 1), (2, 3), (3, 1), (0, 2)])
def test_tile(dtype, known, reps):
    check("Tile", [rand((2, 3), dtype), i64(*reps)], known=params_known(known, 2))


def test_tile_errors():
    with pytest.raises(ShapeError, match="repeats has 1 entries"):
        make("Tile").prepare(infos(rand((2, 3)), i64(2), known=(1,)))
    with pytest.raises(ShapeError, match="negative"):
        make("Tile").prepare(infos(rand((2, 3)), i64(2, -1), known=(1,)))


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("dtype, start, limit, delta", [
    (np.float32, 1.5, 7.0, 0.7), (np.float32, 10, -3, -1.3), (np.float64, 0, 1, 0.1),
    (np.int32, 0, 10, 3), (np.int64, 10, -7, -3), (np.int16, 5, 5, 1), (np.int64, 0, 5, -1),
])
def test_range(known, dtype, start, limit, delta):
    ins = [np.array(v, dtype) for v in (start, limit, delta)]
    check("Range", ins, known=params_known(known, 3))


def test_range_zero_delta():
    with pytest.raises(KernelError, match="delta is 0"):
        make("Range").prepare(infos(*[np.array(v, np.int64) for v in (0, 3, 0)], known=(0, 1, 2)))


@pytest.mark.parametrize("k", [0, 1, -2, 5])
@pytest.mark.parametrize("dtype", [None, 1, 7, 11])
def test_eye_like(k, dtype):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    check("EyeLike", [rand((3, 4), np.int32)], attrs)


# ----- Pad ----------------------------------------------------------------------------------------
PADS = [
    (0, 1, 2, 1, 0, 3),
    (1, 0, 0, 0, 2, 0),
    (0, -1, 1, 0, 2, -2),
    (-1, 1, 0, 1, -1, 1),
    (0, 0, -1, 0, 0, -3),
    (2, 3, 3, 2, 1, 3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.uint8, np.float64])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("known", [True, False])
def test_pad(dtype, mode, pads, known):
    x = rand((3, 4, 5), dtype)
    ins = [x, i64(*pads)]
    if mode == "constant":
        ins.append(np.array(7, dtype))
    check("Pad", ins, {"mode": mode}, known=params_known(known, len(ins)))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("axes", [(1,), (-1, 0), (2, 1)])
def test_pad_axes_input(mode, axes):
    x = rand((3, 4, 5))
    pads = i64(*([1, -1, 2, 0][: len(axes)] + [2, 1, 0, 1][: len(axes)]))
    check("Pad", [x, pads, None, i64(*axes)], {"mode": mode}, opset=19)


def test_pad_default_constant_and_bool():
    check("Pad", [rand((2, 3)), i64(1, 0, 0, 2)])
    # pads known, the constant computed at run time: a static shape, the value read at invoke
    check("Pad", [rand((2, 3)), i64(1, 0, 0, 2), np.array(-4.5, np.float32)], known=(1,))
    check("Pad", [rand((2, 3), np.bool_), i64(1, 0, 0, 2), np.array(True)])


@pytest.mark.parametrize("mode, pads, message", [
    ("constant", (1, 2), "pads has 2 entries; expected 2 x 2"),
    ("constant", (0, -3, 0, -2), "crop more than its size 4"),
    ("reflect", (0, 4, 0, 0), "may pad at most 3 per side"),
    ("reflect", (0, -3, 0, 2), "empty after cropping|may pad at most 0"),
    ("edge", (0, -4, 0, 1), "empty after cropping"),
])
def test_pad_errors(mode, pads, message):
    with pytest.raises(ShapeError, match=message):
        make("Pad", {"mode": mode}).prepare(infos(rand((3, 4)), i64(*pads), known=(1,)))


def test_pad_unknown_mode():
    with pytest.raises(KernelError, match="mode 'mirror'"):
        make("Pad", {"mode": "mirror"}).prepare(infos(rand((3, 4)), i64(0, 0, 0, 0), known=(1,)))


# ----- Trilu / CumSum / DepthToSpace / SpaceToDepth -----------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
def test_trilu(dtype, upper, k):
    x = rand((2, 4, 5), dtype)
    ins = [x] if k is None else [x, i64(k).reshape(())]
    check("Trilu", ins, {"upper": upper}, known=())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum(dtype, exclusive, reverse, axis):
    x = rand((3, 4, 2), dtype)
    check("CumSum", [x, np.array(axis, np.int32)], {"exclusive": exclusive, "reverse": reverse},
          known=())


def test_cumsum_bad_axis():
    with pytest.raises(KernelError, match="axis 3 is out of range for rank 2"):
        make("CumSum").prepare(infos(rand((2, 3)), i64(3), known=(1,)))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_depth_to_space(mode, dtype):
    check("DepthToSpace", [rand((2, 8, 2, 3), dtype)], {"blocksize": 2, "mode": mode})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_space_to_depth(dtype):
    check("SpaceToDepth", [rand((2, 3, 4, 6), dtype)], {"blocksize": 2})


def test_depth_space_errors():
    with pytest.raises(ShapeError, match="not divisible by blocksize"):
        make("DepthToSpace", {"blocksize": 2}).prepare(infos(rand((1, 6, 2, 2))))
    with pytest.raises(ShapeError, match="divisible by blocksize 3"):
        make("SpaceToDepth", {"blocksize": 3}).prepare(infos(rand((1, 1, 4, 6))))


# ----- Gather family ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", MOVE_DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(dtype, idx_dtype, axis):
    x = rand((3, 4, 5), dtype)
    n = x.shape[axis]
    idx = np.array([[0, -1], [n - 1, -n], [1, 1]], idx_dtype)
    check("Gather", [x, idx], {"axis": axis}, known=())


def test_gather_scalar_index_and_empty():
    x = rand((3, 4))
    check("Gather", [x, np.array(-2, np.int64)], {"axis": 1})
    check("Gather", [x, np.zeros((0,), np.int64)], {"axis": 0})


def test_gather_out_of_range_index_fails_at_invoke():
    x = rand((3, 4))
    idx = i64(0, 5)
    k = make("Gather", {"axis": 1})
    (out,) = k.prepare(infos(x, idx))  # indices unknown at prepare: no error yet
    with pytest.raises(KernelError, match="Gather 'node_x': index 5 is out of range for a "
                                          "dimension of size 4 \\(valid: -4..3\\)"):
        k.invoke([x, idx], [np.empty(out.shape, out.dtype)])
    with pytest.raises(KernelError, match="index -5 is out of range"):
        k.invoke([x, i64(-5)], [np.empty((3, 1), np.float32)])


def test_gather_constant_bad_index_fails_at_prepare_and_bad_dtype():
    with pytest.raises(KernelError, match="index 3 is out of range"):
        make("Gather").prepare(infos(rand((3, 4)), i64(3), known=(1,)))
    with pytest.raises(DTypeError, match="indices must be int32 or int64"):
        make("Gather").prepare(infos(rand((3, 4)), np.array([0.0])))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.uint8])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(dtype, axis):
    x = rand((3, 4, 5), dtype)
    rng = np.random.default_rng(1)
    ishape = (2, 4, 3)
    n = x.shape[axis]
    idx = rng.integers(-n, n, size=ishape).astype(np.int64)
    check("GatherElements", [x, idx], {"axis": axis}, known=())


def test_gather_elements_out_of_range():
    with pytest.raises(KernelError, match="GatherElements 'test_node': index 3 is out of range"):
        run_kernel("GatherElements", [rand((3, 3)), i64(0, 3, 1).reshape(1, 3)], {"axis": 0})
    with pytest.raises(ShapeError, match="exceeds data shape"):
        make("GatherElements", {"axis": 0}).prepare(infos(rand((3, 3)), i64(0, 1, 1, 1)
                                                          .reshape(1, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
@pytest.mark.parametrize("data_shape, idx, batch_dims", [
    ((3, 4), [[0, 1], [2, -1]], 0),
    ((3, 4), [[1], [-3]], 0),
    ((2, 3, 4), [[[0], [2]], [[1], [1]]], 1),
    ((2, 3, 4), [[1, 3], [0, -2]], 1),
    ((2, 3, 4, 2), [[[0, 1]], [[2, 3]]], 1),
    ((2, 3, 4), [[[2]], [[0]]], 2),
])
def test_gather_nd(dtype, data_shape, idx, batch_dims):
    x = rand(data_shape, dtype)
    idx = np.array(idx, np.int64)
    if batch_dims == 2:
        idx = np.array([[[2], [1], [0]], [[3], [0], [1]]], np.int64)
    check("GatherND", [x, idx], {"batch_dims": batch_dims}, known=())


def test_gather_nd_out_of_range():
    with pytest.raises(KernelError, match="index \\(component 1\\) 4 is out of range"):
        run_kernel("GatherND", [rand((3, 4)), i64(0, 4).reshape(1, 2)])


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_scatter_elements(reduction, axis, dtype):
    x = rand((3, 4), dtype)
    if reduction == "none":
        idx = np.array([[0, -1, 2], [1, 0, -2]], np.int64)  # distinct targets per column/row
        idx = idx if axis == 0 else np.array([[0, -1, 2], [1, 0, -2]], np.int64)
    else:
        idx = np.array([[0, 0, 2], [-3, 1, 1]], np.int64)  # repeated targets accumulate
    upd = rand(idx.shape, dtype, seed=5)
    check("ScatterElements", [x, idx, upd], {"axis": axis, "reduction": reduction}, known=())


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_scatter_nd(reduction, dtype):
    x = rand((4, 3, 2), dtype)
    if reduction == "none":
        idx = np.array([[0], [2], [-1]], np.int64)
    else:
        idx = np.array([[0, 1], [0, 1], [-1, 2]], np.int64)
    upd_shape = idx.shape[:-1] + x.shape[idx.shape[-1]:]
    upd = rand(upd_shape, dtype, seed=3)
    check("ScatterND", [x, idx, upd], {"reduction": reduction}, known=())


def test_scatter_errors():
    with pytest.raises(KernelError, match="ScatterND 'test_node': index \\(component 0\\) 4"):
        run_kernel("ScatterND", [rand((4, 2)), i64(4).reshape(1, 1), rand((1, 2))])
    with pytest.raises(ShapeError, match="updates shape \\(2, 2\\) must be \\(1, 2\\)"):
        make("ScatterND").prepare(infos(rand((4, 2)), i64(1).reshape(1, 1), rand((2, 2))))
    with pytest.raises(KernelError, match="index -4 is out of range"):
        run_kernel("ScatterElements", [rand((3,)), i64(-4), rand((1,))])
    with pytest.raises(KernelError, match="reduction 'sum'"):
        make("ScatterElements", {"reduction": "sum"}).prepare(
            infos(rand((3,)), i64(0), rand((1,))))


# ----- NonZero / OneHot / TopK --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_, np.uint8])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2), ()])
def test_nonzero(dtype, shape):
    x = rand(shape, dtype)
    if np.dtype(dtype).kind != "b":
        x = (x * (rand(shape, np.bool_, seed=4))).astype(dtype)
    if shape == ():
        x = np.array(3, dtype)
    got = run_kernel("NonZero", [x], const_inputs=())
    (want,) = ort_node("NonZero", [x])
    assert got[0].dtype == np.int64
    np.testing.assert_array_equal(got[0], want)


def test_nonzero_output_shape_is_data_dependent():
    (out,) = make("NonZero").prepare(infos(rand((3, 4))))
    assert out.shape is None and out.dtype == np.int64
    (out,) = make("NonZero").prepare(infos(np.eye(3, dtype=np.float32), known=(0,)))
    assert out.shape == (2, 3) and out.value is not None  # constant input: computed at prepare


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -3])
@pytest.mark.parametrize("idx_dtype, val_dtype, depth_dtype", [
    (np.int64, np.float32, np.int64), (np.float32, np.int64, np.int64),
    (np.int32, np.float32, np.int32), (np.float32, np.float32, np.float32),
])
def test_one_hot(known, axis, idx_dtype, val_dtype, depth_dtype):
    # 5 / -5 are out of range for depth 4 (an all-off row); -1 counts from the end.
    idx = np.array([[0, 2, -1], [5, -5, 1]], idx_dtype)
    ins = [idx, np.array(4, depth_dtype), np.array([-1, 3], val_dtype)]
    check("OneHot", ins, {"axis": axis}, known=params_known(known, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8])
@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis, k", [(-1, 2), (0, 3), (1, 1), (-1, 5), (1, 0)])
def test_topk(dtype, largest, axis, k):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(3, 5)).astype(dtype)  # many ties: the lower index comes first
    check("TopK", [x, i64(k)], {"axis": axis, "largest": largest}, known=(), n_out=2)


def test_topk_errors():
    with pytest.raises(KernelError, match="K = 6 must be in 0..5"):
        make("TopK").prepare(infos(rand((3, 5)), i64(6), known=(1,)))


# ----- dynamic parameters through the interpreter's protocol --------------------------------------
def test_deferred_kernel_prepares_again_when_values_arrive():
    """What the interpreter does with a parameter computed at run time: prepare without the
    value (unknown output shape), then re-prepare with every value and invoke into the planned
    buffers."""
    x = rand((2, 3, 4))
    shape = i64(4, -1)
    k = make("Reshape")
    (out,) = k.prepare(infos(x, shape))
    assert out.shape is None and out.dtype == np.float32
    (out,) = k.prepare(infos(x, shape, known=(0, 1)))
    assert out.shape == (4, 6)
    buf = np.empty(out.shape, out.dtype)
    assert k.invoke([x, shape], [buf]) is None
    np.testing.assert_array_equal(buf, x.reshape(4, 6))


def test_deferred_split_reports_output_count():
    x = rand((6, 2))
    outs = make("Split").prepare(infos(x, i64(1, 2, 3)))
    assert len(outs) == 3 and all(o.shape is None for o in outs)


# ----- string tensors (data movement is dtype-agnostic) -------------------------------------------
@pytest.mark.parametrize("op, extra, attrs, n_out", [
    ("Identity", [], {}, 1),
    ("Reshape", [i64(4, -1)], {}, 1),
    ("Transpose", [], {"perm": [1, 0]}, 1),
    ("Concat", ["self"], {"axis": 1}, 1),
    ("Split", [i64(1, 3)], {"axis": 1}, 2),
    ("Slice", [i64(1), i64(-1), i64(1)], {}, 1),
    ("Gather", [i64(2, -1, 0)], {"axis": 1}, 1),
    ("Tile", [i64(2, 1)], {}, 1),
    ("Expand", [i64(2, 2, 4)], {}, 1),
    ("Unsqueeze", [i64(1)], {}, 1),
])
def test_string_tensors(op, extra, attrs, n_out):
    x = rand((2, 4), object)
    extra = [x if isinstance(e, str) else e for e in extra]
    check(op, [x] + extra, attrs, n_out=n_out)


# ----- through the interpreter --------------------------------------------------------------------
def test_dynamic_batch_shape_chain_folds_and_nonzero_runs_dynamically():
    """A dynamic-batch export's Shape->Gather->Unsqueeze->Concat->Reshape chain is computed at
    prepare (folded); NonZero and what depends on it run with shapes found at invoke."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgert.converter import convert
    from edgert.runtime import Interpreter

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"]),
        helper.make_node("Concat", ["bu", "m1"], ["shp"], axis=0),
        helper.make_node("Reshape", ["x", "shp"], ["flat"]),
        helper.make_node("NonZero", ["flat"], ["nz"]),
        helper.make_node("Transpose", ["nz"], ["nzt"]),
        helper.make_node("GatherND", ["flat", "nzt"], ["vals"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i0"),
             numpy_helper.from_array(i64(0), "ax0"), numpy_helper.from_array(i64(-1), "m1")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_empty_tensor_value_info(n) for n in ("flat", "vals")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    interp = Interpreter(convert(model))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (2, 5):
        x = rand((batch, 3, 4))
        x[x < 0] = 0
        got = interp.run({"x": x})
        for name, want in zip(("flat", "vals"), sess.run(None, {"x": x})):
            np.testing.assert_array_equal(got[name], want)
        assert interp.stats.folded_ops == 4
