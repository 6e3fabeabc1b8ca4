"""Resize CPU kernel against onnxruntime (single-node models), and against the ONNX reference
implementation for what onnxruntime does not implement (cubic on 3-D/5-D, every axis resized).

Nearest results are exact; linear / cubic within rtol 1e-4 / atol 1e-5 for float32. Scales are
chosen so that every resized axis really changes size: onnxruntime copies the input unchanged
when the output shape equals the input shape, and skips the roi of scale-1 axes, whatever the
coordinate mode says; edgert follows the ONNX specification there (tested against the ONNX
reference implementation below).

Numba compiles little here: one nearest kernel per element width and one separable kernel per
float32 / float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import DTypeError, KernelError, ShapeError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.registry import OpContext, TensorInfo

CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
        "asymmetric", "tf_crop_and_resize"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]

X_SHAPE = (1, 2, 5, 7)
# (scales, sizes) for the last two axes of X_SHAPE; every axis changes size.
RESIZES = {
    "up": ([2.4, 1.6], [11, 12]),
    "down": ([0.6, 0.45], [3, 4]),
    "mixed": ([0.5, 2.5], [2, 15]),
}
ROI = [0.1, 0.25, 0.9, 1.1]  # H and W starts, then ends: crops one side, extrapolates the other


def rand(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -100), min(info.max, 200), size=shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def resize_inputs(x, how, use_sizes, ctm="half_pixel", axes=None):
    scales, sizes = RESIZES[how]
    full = axes is None
    roi = None
    if ctm == "tf_crop_and_resize":
        roi = np.array(([0, 0] + ROI[:2] + [1, 1] + ROI[2:]) if full else ROI, np.float32)
    if use_sizes:
        s = np.array(([1, 2] if full else []) + sizes, np.int64)
        return [x, roi, None, s]
    s = np.array(([1, 1] if full else []) + scales, np.float32)
    return [x, roi, s]


def assert_close(got, want, exact):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def check(inputs, attrs, exact=False, known="all", opset=19):
    (got,) = run_kernel("Resize", inputs, attrs, const_inputs=known, version=opset)
    if _fractional_align_corners(inputs, attrs):
        want = ref_node(inputs, attrs, opset)
    else:
        (want,) = ort_node("Resize", inputs, attrs, opset=opset)
    assert_close(got, want, exact)
    return got


def _fractional_align_corners(inputs, attrs) -> bool:
    """align_corners by scales whose resized length ``scale * n`` is not an integer.

    The ONNX specification (and its reference implementation and conformance cases
    test_resize_downsample_scales_*_align_corners) map the corners of that fractional length;
    onnxruntime maps those of the rounded output length. edgert follows the specification, so
    these cases are checked against the ONNX reference instead.
    """
    if attrs.get("coordinate_transformation_mode") != "align_corners" or len(inputs) != 3:
        return False
    x, scales = inputs[0], inputs[2]
    if scales is None or scales.size == 0:
        return False
    dims = x.shape[-scales.size:]
    lengths = scales.astype(np.float64) * np.array(dims, np.float64)  # exact products
    return bool(np.any(lengths != np.floor(lengths)))


def ref_node(inputs, attrs, opset=19):
    """The ONNX reference implementation (onnx.reference) of one Resize node."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names, vis, feeds = [], [], {}
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        names.append(f"in{i}")
        vis.append(helper.make_tensor_value_info(f"in{i}", helper.np_dtype_to_tensor_dtype(
            x.dtype), x.shape))
        feeds[f"in{i}"] = x
    node = helper.make_node("Resize", names, ["out"], **attrs)
    graph = helper.make_graph([node], "g", vis, [helper.make_empty_tensor_value_info("out")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, feeds)[0]


def make(attrs, version=19):
    cls = registry().lookup("Resize", "", version)
    return cls(OpContext("Resize", "rs", dict(attrs), "", version, 1))


def infos(*arrays, known=()):
    return [None if a is None else TensorInfo(a.shape, a.dtype, a if i in known else None)
            for i, a in enumerate(arrays)]


# ----- the attribute grid against onnxruntime -----------------------------------------------------
@pytest.mark.parametrize("use_sizes", [False, True], ids=["scales", "sizes"])
@pytest.mark.parametrize("how", list(RESIZES))
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
@pytest.mark.parametrize("ctm", CTMS)
def test_nearest(ctm, nearest_mode, how, use_sizes):
    x = rand(X_SHAPE)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": ctm,
             "nearest_mode": nearest_mode, "extrapolation_value": -3.0}
    check(resize_inputs(x, how, use_sizes, ctm), attrs, exact=True)


@pytest.mark.parametrize("use_sizes", [False, True], ids=["scales", "sizes"])
@pytest.mark.parametrize("how", list(RESIZES))
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ctm", CTMS)
def test_linear_cubic(ctm, mode, how, use_sizes):
    x = rand(X_SHAPE)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "extrapolation_value": 2.5}
    check(resize_inputs(x, how, use_sizes, ctm), attrs)


@pytest.mark.parametrize("how", list(RESIZES))
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("a", [-0.75, -0.5])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric"])
def test_cubic_coeff_and_exclude_outside(how, exclude_outside, a, ctm):
    x = rand(X_SHAPE, seed=3)
    attrs = {"mode": "cubic", "cubic_coeff_a": a, "exclude_outside": exclude_outside,
             "coordinate_transformation_mode": ctm}
    check(resize_inputs(x, how, False), attrs)


@pytest.mark.parametrize("how", list(RESIZES))
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ctm", ["half_pixel", "pytorch_half_pixel", "align_corners",
                                 "tf_crop_and_resize"])
def test_antialias(how, exclude_outside, mode, ctm):
    x = rand((1, 2, 9, 11), seed=4)
    scales = {"up": [1.8, 1.5], "down": [0.45, 0.3], "mixed": [0.5, 2.2]}[how]
    roi = np.array([0, 0, 0.1, 0.05, 1, 1, 0.95, 1.1], np.float32)
    inputs = [x, roi if ctm == "tf_crop_and_resize" else None,
              np.array([1, 1] + scales, np.float32)]
    attrs = {"mode": mode, "antialias": 1, "exclude_outside": exclude_outside,
             "coordinate_transformation_mode": ctm}
    check(inputs, attrs)


@pytest.mark.parametrize("how", list(RESIZES))
def test_tf_half_pixel_for_nn_opset11(how):
    x = rand(X_SHAPE)
    scales, _ = RESIZES[how]
    inputs = [x, np.zeros(0, np.float32), np.array([1, 1] + scales, np.float32)]
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}
    check(inputs, attrs, exact=True, opset=11)


# ----- dtypes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
@pytest.mark.parametrize("how", ["up", "down"])
def test_nearest_integer_dtypes_match_onnxruntime(dtype, how):
    x = rand(X_SHAPE, dtype)
    check(resize_inputs(x, how, False), {"mode": "nearest"}, exact=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64, np.int16, np.bool_,
                                   np.uint16, np.uint64])
def test_nearest_other_dtypes_pick_the_same_elements(dtype):
    """onnxruntime has no nearest kernel for these types; nearest copies source elements, so
    the reference is onnxruntime's float32 result on an index tensor, used to gather."""
    x = rand(X_SHAPE, dtype)
    inputs = resize_inputs(x, "mixed", False)
    attrs = {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}
    (got,) = run_kernel("Resize", inputs, attrs, const_inputs="all")
    positions = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    (picked,) = ort_node("Resize", [positions] + inputs[1:], attrs, opset=19)
    want = x.reshape(-1)[picked.astype(np.int64)]
    assert_close(got, want, exact=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.int64])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_interpolated_integers_round_half_to_even_and_saturate(dtype, mode):
    """Integer outputs of linear/cubic: the float result rounded half to even and clipped to the
    type (as the ONNX reference does). 2x / 0.5x scales keep every weight a power of two, so the
    float32 reference is exact and the rounding is tested on real ties."""
    x = rand((1, 2, 4, 6), dtype)
    if dtype in (np.uint8, np.int8):  # extremes, so cubic overshoot must saturate
        info = np.iinfo(dtype)
        x[..., ::3] = info.max
        x[..., 1::3] = info.min
    inputs = [x, None, np.array([1, 1, 2, 0.5], np.float32)]
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric"
             if mode == "linear" else "half_pixel"}
    (got,) = run_kernel("Resize", inputs, attrs, const_inputs="all")
    (ref,) = ort_node("Resize", [x.astype(np.float32)] + inputs[1:], attrs, opset=19)
    info = np.iinfo(dtype)
    want = np.clip(np.rint(ref.astype(np.float64)), info.min, info.max).astype(dtype)
    assert_close(got, want, exact=True)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_float16_and_float64(mode):
    x = rand(X_SHAPE, np.float32)
    inputs = resize_inputs(x, "mixed", False)
    (ref,) = ort_node("Resize", inputs, {"mode": mode}, opset=19)
    (got64,) = run_kernel("Resize", [x.astype(np.float64)] + inputs[1:], {"mode": mode},
                          const_inputs="all")
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, ref, rtol=RTOL, atol=ATOL)
    (got16,) = run_kernel("Resize", [x.astype(np.float16)] + inputs[1:], {"mode": mode},
                          const_inputs="all")
    (ref16,) = ort_node("Resize", [x.astype(np.float16).astype(np.float32)] + inputs[1:],
                        {"mode": mode}, opset=19)
    assert got16.dtype == np.float16
    # computed in float32 and rounded once to float16: one float16 ulp
    np.testing.assert_allclose(got16, ref16.astype(np.float16), rtol=1e-3, atol=1e-3)


def test_bool_and_strings_only_for_nearest():
    with pytest.raises(DTypeError, match="linear resize of bool tensors is not supported"):
        make({"mode": "linear"}).prepare(
            infos(rand((1, 1, 2, 2), np.bool_), None, np.ones(4, np.float32), known=(2,)))


# ----- ranks, layouts, axes, keep_aspect_ratio_policy ---------------------------------------------
@pytest.mark.parametrize("shape, scales", [
    ((6,), [2.5]),
    ((3, 4), [0.7, 2.5]),
    ((2, 3, 4), [2.0, 0.7, 1.5]),
    ((1, 3, 4, 2), [1, 2.5, 0.5, 1]),  # NHWC: the general (NumPy) path
    ((2, 3, 4, 5), [1.5, 0.5, 2.0, 0.6]),  # every axis
    ((1, 2, 2, 3, 4), [1, 1, 2, 1.5, 0.5]),
])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_ranks_and_layouts(shape, scales, mode):
    x = rand(shape)
    inputs = [x, None, np.array(scales, np.float32)]
    attrs = {"mode": mode}
    if mode == "linear" and (len(shape) == 1 or len(shape) == 4 and scales[0] != 1):
        # onnxruntime implements linear only for 2-D, 3-D and 4-D/5-D images with outer scales
        # 1: use the ONNX reference.
        (got,) = run_kernel("Resize", inputs, attrs, const_inputs="all")
        assert_close(got, ref_node(inputs, attrs).astype(np.float32), exact=False)
        return
    check(inputs, attrs, exact=mode == "nearest")


@pytest.mark.parametrize("shape, scales", [
    ((3, 4), [0.7, 2.5]),
    ((2, 3, 4), [2.0, 0.7, 1.5]),
    ((1, 3, 4, 2), [1, 2.5, 0.5, 1]),
    ((1, 2, 2, 3, 4), [1, 1, 2, 1.5, 0.5]),
])
# Not align_corners / tf_crop_and_resize: there the reference divides by (scale * length - 1)
# instead of (output length - 1), unlike the specification's text and onnxruntime.
@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric"])
def test_cubic_any_rank_against_onnx_reference(shape, scales, ctm):
    x = rand(shape, seed=7)
    inputs = [x, None, np.array(scales, np.float32)]
    attrs = {"mode": "cubic", "coordinate_transformation_mode": ctm}
    (got,) = run_kernel("Resize", inputs, attrs, const_inputs="all")
    want = ref_node(inputs, attrs).astype(np.float32)
    assert_close(got, want, exact=False)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [3, 2]])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_axes_and_keep_aspect_ratio(policy, axes, mode):
    x = rand(X_SHAPE)
    attrs = {"mode": mode, "axes": axes, "keep_aspect_ratio_policy": policy}
    check([x, None, None, np.array([9, 4], np.int64)], attrs, exact=mode == "nearest")


@pytest.mark.parametrize("use_sizes", [False, True])
def test_negative_axes_and_roi_with_axes(use_sizes):
    x = rand(X_SHAPE)
    inputs = resize_inputs(x, "mixed", use_sizes, "tf_crop_and_resize", axes=[2, 3])
    attrs = {"mode": "linear", "axes": [-2, -1], "coordinate_transformation_mode":
             "tf_crop_and_resize"}
    check(inputs, attrs)


def test_single_axis():
    x = rand(X_SHAPE)
    check([x, None, np.array([2.5], np.float32)], {"mode": "linear", "axes": [3]})
    check([x, None, None, np.array([2], np.int64)], {"mode": "cubic", "axes": [2]})


# ----- where edgert follows the specification rather than onnxruntime -----------------------------
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_scale_applies_even_when_the_size_does_not_change(mode):
    """floor(4 * 1.15) = 4: the size is unchanged but the coordinates still scale by 1.15 (the
    ONNX reference agrees; onnxruntime copies the input)."""
    x = rand((1, 1, 4, 6))
    inputs = [x, None, np.array([1, 1, 1.15, 2], np.float32)]
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric",
             "nearest_mode": "floor"}
    (got,) = run_kernel("Resize", inputs, attrs, const_inputs="all")
    want = ref_node(inputs, attrs).astype(np.float32)
    assert_close(got, want, exact=mode == "nearest")


def test_roi_applies_on_axes_of_scale_one():
    x = rand((1, 1, 4, 6))
    roi = np.array([0, 0, 0.2, 0.1, 1, 1, 0.8, 0.9], np.float32)
    inputs = [x, roi, None, np.array([1, 1, 4, 9], np.int64)]
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}
    (got,) = run_kernel("Resize", inputs, attrs, const_inputs="all")
    assert_close(got, ref_node(inputs, attrs).astype(np.float32), exact=False)


# ----- execution paths ----------------------------------------------------------------------------
@pytest.mark.parametrize("known", ["all", (0,)], ids=["static", "dynamic"])
@pytest.mark.parametrize("use_sizes", [False, True])
def test_parameters_known_only_at_invoke(known, use_sizes):
    x = rand(X_SHAPE)
    inputs = resize_inputs(x, "up", use_sizes, "tf_crop_and_resize")
    check(inputs, {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
          known=known)


def test_dynamic_prepare_reports_unknown_shape():
    x = rand(X_SHAPE)
    (out,) = make({"mode": "linear"}).prepare(infos(x, None, np.ones(4, np.float32)))
    assert out.shape is None and out.dtype == np.float32


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_nchw_fast_path_matches_the_general_path(mode):
    x = rand((2, 3, 9, 13), seed=11)
    scales = np.array([1, 1, 1.7, 0.6], np.float32)
    k = make({"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize",
              "extrapolation_value": 1.5})
    roi = np.array([0, 0, -0.1, 0.2, 1, 1, 1.0, 1.2], np.float32)
    (info,) = k.prepare(infos(x, roi, scales, known=(1, 2)))
    assert k._fast  # only H and W change: the Numba kernel
    fast = np.empty(info.shape, info.dtype)
    k.invoke([x, roi, scales], [fast])
    k._fast = False
    slow = np.empty(info.shape, info.dtype)
    k.invoke([x, roi, scales], [slow])
    np.testing.assert_allclose(fast, slow, rtol=RTOL, atol=ATOL)
    assert (fast == 1.5).any()  # some outputs extrapolate


def test_identity_and_empty():
    x = rand(X_SHAPE)
    (got,) = run_kernel("Resize", [x, None, np.ones(4, np.float32)], {"mode": "cubic"},
                        const_inputs="all")
    np.testing.assert_array_equal(got, x)
    empty = rand((0, 2, 3, 4))
    (got,) = run_kernel("Resize", [empty, None, np.array([1, 1, 2, 2], np.float32)],
                        {"mode": "linear"}, const_inputs="all")
    assert got.shape == (0, 2, 6, 8)
    (got,) = run_kernel("Resize", [x, None, None, np.array([1, 2, 0, 3], np.int64)],
                        {"mode": "nearest"}, const_inputs="all")
    assert got.shape == (1, 2, 0, 3)


def test_not_foldable():
    assert not registry().lookup("Resize").foldable


# ----- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs, inputs, error, message", [
    ({"mode": "area"}, ([1, 1, 2, 2], None), KernelError, "mode 'area' is not one of"),
    ({"coordinate_transformation_mode": "corners"}, ([1, 1, 2, 2], None), KernelError,
     "coordinate_transformation_mode 'corners'"),
    ({"nearest_mode": "up"}, ([1, 1, 2, 2], None), KernelError, "nearest_mode 'up'"),
    ({"keep_aspect_ratio_policy": "fit"}, (None, [1, 1, 4, 4]), KernelError,
     "keep_aspect_ratio_policy 'fit'"),
    ({}, ([1, 1, 0, 2], None), KernelError, "scales must be finite and > 0"),
    ({}, ([1, 1, -2, 2], None), KernelError, "scales must be finite and > 0"),
    ({}, (None, [1, 1, -1, 2]), ShapeError, "sizes must be >= 0"),
    ({}, ([1, 1, 2, 2], [1, 1, 4, 4]), KernelError, "exactly one of the 'scales' and 'sizes'"),
    ({}, (None, None), KernelError, "exactly one of the 'scales' and 'sizes'"),
    ({}, ([2, 2], None), ShapeError, "scales has 2 values, expected 4"),
    ({"axes": [2, 2]}, ([2, 2], None), KernelError, "repeated axes"),
    ({"axes": [4]}, ([2], None), KernelError, "axes value 4 is out of range for rank 4"),
    ({"coordinate_transformation_mode": "tf_crop_and_resize"}, ([1, 1, 2, 2], None),
     KernelError, "needs the 'roi' input"),
])
def test_errors(attrs, inputs, error, message):
    x = rand((1, 1, 3, 3))
    scales = None if inputs[0] is None else np.array(inputs[0], np.float32)
    sizes = None if inputs[1] is None else np.array(inputs[1], np.int64)
    with pytest.raises(error, match=message) as err:
        make(attrs).prepare(infos(x, None, scales, sizes, known=(1, 2, 3)))
    assert "Resize 'rs'" in str(err.value)


def test_zero_input_dim_needs_zero_output():
    x = rand((1, 0, 3, 3))
    with pytest.raises(ShapeError, match="axis 1 has size 0 and cannot be resized to 2"):
        make({}).prepare(infos(x, None, None, np.array([1, 2, 3, 3], np.int64), known=(3,)))
