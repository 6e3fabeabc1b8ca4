"""Sampling, detection, spectral and remaining ONNX operators, against onnxruntime or NumPy.

GridSample, AffineGrid, RoiAlign, DeformConv, Col2Im, CenterCropPad (sampling.py),
NonMaxSuppression (detection.py), DFT / STFT (spectral.py), RotaryEmbedding / TensorScatter
(attention.py), MaxUnpool (pooling.py), ConvInteger (quantize_linear.py) and the import-time
expansion of the training-domain Gradient operator (importer/gradient.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel
from onnx import TensorProto, helper

from edgert.errors import EdgeRTError, InputError, UnsupportedOpError

RNG = np.random.default_rng(1234)


def _f32(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


# ----- GridSample ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d(mode, padding, align):
    x = _f32(2, 3, 4, 5)
    # beyond [-1, 1] so every padding mode matters; far outside to reflect several times
    grid = _f32(2, 3, 6, 2, lo=-1.6, hi=1.6)
    grid[0, 0, 0] = [-3.7, 4.2]
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    (y,) = run_kernel("GridSample", [x, grid], attrs, version=22)
    (ref,) = ort_node("GridSample", [x, grid], attrs, opset=20)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_grid_sample_3d(mode):
    x = _f32(1, 2, 3, 4, 5)
    grid = _f32(1, 2, 3, 4, 3, lo=-1.2, hi=1.2)
    attrs = {"mode": mode, "padding_mode": "border", "align_corners": 0}
    (y,) = run_kernel("GridSample", [x, grid], attrs, version=22)
    (ref,) = ort_node("GridSample", [x, grid], attrs, opset=20)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


def test_grid_sample_non_finite_grid_is_safe():
    """NaN, Inf and huge coordinates never index out of bounds: NaN -> NaN, far -> padding."""
    x = _f32(1, 1, 3, 3)
    grid = np.array([[[[np.nan, 0.0], [np.inf, 0.0], [1e30, -1e30], [-np.inf, np.inf]]]],
                    np.float32)
    for padding in ("zeros", "border", "reflection"):
        (y,) = run_kernel("GridSample", [x, grid], {"padding_mode": padding}, version=22)
        assert np.isnan(y[0, 0, 0, 0])
        assert np.all(np.isfinite(y[0, 0, 0, 1:]) | (padding == "zeros"))
    (y,) = run_kernel("GridSample", [x, grid], {"padding_mode": "zeros"}, version=22)
    np.testing.assert_array_equal(y[0, 0, 0, 1:], 0.0)


def test_grid_sample_rejects_bad_grid():
    with pytest.raises(EdgeRTError, match="grid"):
        run_kernel("GridSample", [_f32(1, 1, 3, 3), _f32(1, 2, 2, 3)], {}, version=22)


# ----- AffineGrid ---------------------------------------------------------------------------------
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[2, 1, 3, 4], [2, 1, 2, 3, 4]])
def test_affine_grid(align, size):
    k = len(size) - 2
    theta = _f32(2, k, k + 1)
    size = np.array(size, np.int64)
    (y,) = run_kernel("AffineGrid", [theta, size], {"align_corners": align}, version=20)
    (ref,) = ort_node("AffineGrid", [theta, size], {"align_corners": align}, opset=20)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


# ----- RoiAlign -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio", [0, 2])
def test_roi_align(mode, ctm, ratio):
    x = _f32(2, 3, 8, 9)
    rois = np.array([[0.5, 1.0, 6.2, 7.0], [2.0, 0.0, 3.0, 1.5], [-1.0, -2.0, 10.0, 9.0]],
                    np.float32)
    batch = np.array([1, 0, 1], np.int64)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "output_height": 3,
             "output_width": 2, "sampling_ratio": ratio, "spatial_scale": 0.9}
    (y,) = run_kernel("RoiAlign", [x, rois, batch], attrs, version=22)
    (ref,) = ort_node("RoiAlign", [x, rois, batch], attrs, opset=16)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


def test_roi_align_rejects_batch_index_out_of_range():
    x, rois = _f32(1, 1, 4, 4), np.array([[0, 0, 2, 2]], np.float32)
    with pytest.raises(InputError, match="batch_indices"):
        run_kernel("RoiAlign", [x, rois, np.array([1], np.int64)], {}, version=22)
    with pytest.raises(InputError, match="batch_indices"):  # a constant: caught at prepare
        run_kernel("RoiAlign", [x, rois, np.array([-1], np.int64)], {}, const_inputs=(2,),
                   version=22)


# ----- DeformConv ---------------------------------------------------------------------------------
@pytest.mark.parametrize("group,offset_group", [(1, 1), (2, 2)])
def test_deform_conv(group, offset_group):
    x = _f32(2, 4, 5, 6)
    w = _f32(4, 4 // group, 2, 3)
    attrs = {"pads": [1, 0, 1, 1], "strides": [1, 2], "group": group,
             "offset_group": offset_group}
    oh, ow = (5 + 2 - 2) // 1 + 1, (6 + 1 - 3) // 2 + 1
    offset = _f32(2, offset_group * 6 * 2, oh, ow, lo=-1.5, hi=1.5)
    mask = _f32(2, offset_group * 6, oh, ow, lo=0.0, hi=1.0)
    b = _f32(4)
    (y,) = run_kernel("DeformConv", [x, w, offset, b, mask], attrs, version=22)
    (ref,) = ort_node("DeformConv", [x, w, offset, b, mask], attrs, opset=19)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


# ----- Col2Im / CenterCropPad ---------------------------------------------------------------------
def test_col2im():
    attrs = {"strides": [2, 1], "pads": [1, 0, 0, 2], "dilations": [1, 2]}
    image, block = np.array([5, 6], np.int64), np.array([2, 3], np.int64)
    nb = ((5 + 1 - 2) // 2 + 1) * ((6 + 2 - 5) // 1 + 1)
    x = _f32(2, 3 * 6, nb)
    (y,) = run_kernel("Col2Im", [x, image, block], attrs, version=18)
    (ref,) = ort_node("Col2Im", [x, image, block], attrs, opset=18)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


def test_col2im_rejects_wrong_block_count():
    with pytest.raises(EdgeRTError, match="blocks"):
        run_kernel("Col2Im", [_f32(1, 4, 5), np.array([4, 4], np.int64),
                              np.array([2, 2], np.int64)], {}, version=18)


def test_center_crop_pad():
    x = _f32(5, 4, 3)
    (y,) = run_kernel("CenterCropPad", [x, np.array([2, 7], np.int64)], {"axes": [0, -2]},
                      version=18)
    ref = np.zeros((2, 7, 3), np.float32)
    ref[:, 1:5] = x[1:3]  # crop 5 -> 2 starts at 1; pad 4 -> 7 starts at 1
    np.testing.assert_array_equal(y, ref)


# ----- NonMaxSuppression --------------------------------------------------------------------------
@pytest.mark.parametrize("center", [0, 1])
def test_non_max_suppression(center):
    boxes = RNG.uniform(0, 10, (2, 12, 4)).astype(np.float32)
    if center == 0:
        boxes[..., 2:] = boxes[..., :2] + RNG.uniform(1, 5, (2, 12, 2))
        boxes[0, 3] = boxes[0, 3][[2, 3, 0, 1]]  # flipped corners
    scores = RNG.uniform(0, 1, (2, 3, 12)).astype(np.float32)
    scores[0, 0, 5] = scores[0, 0, 6]  # a tie: lower index first
    inputs = [boxes, scores, np.array([4], np.int64), np.array([0.3], np.float32),
              np.array([0.2], np.float32)]
    (y,) = run_kernel("NonMaxSuppression", inputs, {"center_point_box": center}, version=11)
    (ref,) = ort_node("NonMaxSuppression", inputs, {"center_point_box": center}, opset=11)
    np.testing.assert_array_equal(y, ref)
    (y,) = run_kernel("NonMaxSuppression", inputs[:2], {}, version=11)
    assert y.shape == (0, 3)


# ----- DFT / STFT ---------------------------------------------------------------------------------
def _complex(x):
    return x[..., 0] + 1j * x[..., 1] if x.shape[-1] == 2 else x[..., 0].astype(complex)


@pytest.mark.parametrize("inverse,onesided,length,parts", [
    (0, 0, None, 1), (0, 0, 12, 2), (0, 1, None, 1), (1, 0, 6, 2), (1, 1, None, 2),
])
def test_dft(inverse, onesided, length, parts):
    x = _f32(2, 8, 3, parts)
    axis = np.array(1, np.int64)
    n = None if length is None else np.array(length, np.int64)
    attrs = {"inverse": inverse, "onesided": onesided}
    (y,) = run_kernel("DFT", [x, n, axis], attrs, version=20)
    z = _complex(x.astype(np.float64))
    if inverse and onesided:
        ref = np.fft.irfft(z, n=length, axis=1)[..., None]
    else:
        ref = (np.fft.ifft if inverse else np.fft.fft)(z, n=length, axis=1)
        if onesided:
            ref = ref[:, : ref.shape[1] // 2 + 1]
        ref = np.stack((ref.real, ref.imag), -1)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


def test_dft_rejects_complex_axis():
    with pytest.raises(EdgeRTError, match="axis"):
        run_kernel("DFT", [_f32(1, 8, 2), None, np.array(2, np.int64)], {}, const_inputs=(2,),
                   version=20)


def test_stft():
    x = _f32(2, 40, 1)
    window = np.hanning(10).astype(np.float32)
    inputs = [x, np.array(3, np.int64), window, np.array(10, np.int64)]
    (y,) = run_kernel("STFT", inputs, {}, version=17)
    (ref,) = ort_node("STFT", inputs, {}, opset=17)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


# ----- RotaryEmbedding / TensorScatter ------------------------------------------------------------
@pytest.mark.parametrize("n_mel,dft,rate,lo,hi,dtype", [
    (8, 16, 8192, 0.0, 4096.0, TensorProto.FLOAT),  # the conformance case's shape, full band
    (40, 512, 16000, 20.0, 7600.0, TensorProto.FLOAT),  # a speech front end
    (10, 64, 16000, 300.0, 300.0, TensorProto.DOUBLE),  # all edges on one bin
    (3, 9, 100, 10.0, 45.0, TensorProto.FLOAT16),  # odd dft_length
])
def test_mel_weight_matrix(n_mel, dft, rate, lo, hi, dtype):
    from onnx.reference import ReferenceEvaluator

    inputs = [np.array(n_mel, np.int64), np.array(dft, np.int64), np.array(rate, np.int64),
              np.array(lo, np.float32), np.array(hi, np.float32)]
    attrs = {"output_datatype": dtype}
    (got,) = run_kernel("MelWeightMatrix", inputs, attrs, const_inputs="all", version=17)
    node = helper.make_node("MelWeightMatrix", ["n", "d", "r", "lo", "hi"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [
        helper.make_tensor_value_info(k, TensorProto.INT64, []) for k in "ndr"] + [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, []) for k in ("lo", "hi")],
        [helper.make_tensor_value_info("y", dtype, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (want,) = ReferenceEvaluator(model).run(None, dict(zip(["n", "d", "r", "lo", "hi"], inputs)))
    assert got.shape == (dft // 2 + 1, n_mel) and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    if dtype == TensorProto.FLOAT:  # onnxruntime agrees
        np.testing.assert_allclose(got, ort_node("MelWeightMatrix", inputs, attrs, opset=17)[0],
                                   rtol=1e-6, atol=1e-7)


def test_mel_weight_matrix_rejects_bands_past_nyquist_and_empty_sizes():
    ok = [np.array(8, np.int64), np.array(16, np.int64), np.array(8000, np.int64),
          np.array(0.0, np.float32), np.array(4000.0, np.float32)]
    run_kernel("MelWeightMatrix", ok, {}, const_inputs="all", version=17)
    for k, bad, msg in ((4, np.array(7000.0, np.float32), "sample_rate / 2"),
                        (0, np.array(0, np.int64), "num_mel_bins must be at least 1"),
                        (3, np.array(-5.0, np.float32), "lower_edge_hertz")):
        inputs = list(ok)
        inputs[k] = bad
        with pytest.raises(InputError, match=msg):
            run_kernel("MelWeightMatrix", inputs, {}, const_inputs="all", version=17)


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot_dim", [0, 4])
def test_rotary_embedding(interleaved, rot_dim):
    x = _f32(2, 3, 5, 8)
    half = (rot_dim or 8) // 2
    cos, sin = _f32(10, half), _f32(10, half)
    pos = RNG.integers(0, 10, (2, 5)).astype(np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot_dim}
    (y,) = run_kernel("RotaryEmbedding", [x, cos, sin, pos], attrs, version=23)
    (ref,) = ort_node("RotaryEmbedding", [x, cos, sin, pos], attrs, opset=23)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)
    x3 = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(2, 5, 24)
    attrs3 = dict(attrs, num_heads=3)
    (y3,) = run_kernel("RotaryEmbedding", [x3, cos[pos], sin[pos]], attrs3, version=23)
    (ref3,) = ort_node("RotaryEmbedding", [x3, cos[pos], sin[pos]], attrs3, opset=23)
    np.testing.assert_allclose(y3, ref3, rtol=RTOL, atol=ATOL)


def test_rotary_embedding_rejects_position_past_cache():
    x, cos = _f32(1, 1, 2, 4), _f32(3, 2)
    with pytest.raises(InputError, match="position_ids"):
        run_kernel("RotaryEmbedding", [x, cos, cos, np.array([[0, 3]], np.int64)], {},
                   version=23)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    past, upd = _f32(3, 2, 6, 4), _f32(3, 2, 3, 4)
    idx = np.array([0, 3, 5 if mode == "circular" else 2], np.int64)
    (y,) = run_kernel("TensorScatter", [past, upd, idx], {"mode": mode}, version=24)
    ref = past.copy()
    for b in range(3):
        for s in range(3):
            ref[b, :, (idx[b] + s) % 6] = upd[b, :, s]
    np.testing.assert_array_equal(y, ref)


def test_tensor_scatter_rejects_linear_overflow():
    with pytest.raises(InputError, match="cache length"):
        run_kernel("TensorScatter", [_f32(1, 4, 2), _f32(1, 2, 2), np.array([3], np.int64)], {},
                   version=24)


# ----- MaxUnpool / ConvInteger --------------------------------------------------------------------
def test_max_unpool_inverts_max_pool():
    x = _f32(1, 2, 4, 6)
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    vals, idx = ort_node("MaxPool", [x], pool, num_outputs=2, opset=12)
    (y,) = run_kernel("MaxUnpool", [vals, idx], pool, version=22)
    (ref,) = ort_node("MaxUnpool", [vals, idx], pool, opset=11)
    np.testing.assert_array_equal(y, ref)
    # with output_shape, the ONNX definition (and its conformance case) places the unpooled
    # [1, 2, 4, 6] tensor at the origin of the larger zero tensor (onnxruntime differs here)
    (y2,) = run_kernel("MaxUnpool", [vals, idx, np.array([1, 2, 5, 7], np.int64)], pool,
                       version=22)
    np.testing.assert_array_equal(y2, np.pad(ref, [(0, 0), (0, 0), (0, 1), (0, 1)]))
    bad = idx.copy()
    bad[0, 0, 0, 0] = 4 * 6 * 2  # one past the unpooled [1, 2, 4, 6] tensor
    with pytest.raises(InputError, match="indices"):
        run_kernel("MaxUnpool", [vals, bad], pool, version=22)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_conv_integer(dtype):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (2, 4, 6, 5)).astype(dtype)
    w = RNG.integers(info.min, info.max, (6, 2, 3, 2)).astype(dtype)
    xzp = np.array(5, dtype)
    wzp = RNG.integers(info.min, info.max, (6,)).astype(dtype)
    attrs = {"group": 2, "pads": [1, 0, 1, 1], "strides": [2, 1], "dilations": [1, 2]}
    (y,) = run_kernel("ConvInteger", [x, w, xzp, wzp], attrs, version=10)
    # independent reference: a float32 Conv of the shifted values, exact here since every
    # partial sum is an integer below 12 * 255^2 < 2^24
    xs = x.astype(np.float32) - np.float32(xzp)
    ws = w.astype(np.float32) - wzp.astype(np.float32).reshape(-1, 1, 1, 1)
    (ref,) = ort_node("Conv", [xs, ws], attrs, opset=11)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, np.rint(ref).astype(np.int32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("wdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("shape,wshape,attrs", [
    ((2, 3, 9, 8), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 4, 7, 9), (6, 4, 3, 2), {"pads": [1, 0, 1, 1], "strides": [2, 1], "dilations": [1, 2]}),
    ((1, 16, 5, 5), (8, 16, 1, 1), {}),
    ((2, 3, 11), (4, 3, 5), {"pads": [2, 2], "strides": [3]}),
    ((1, 2, 4, 5, 3), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),
])
def test_conv_integer_constant_filters(dtype, wdtype, shape, wshape, attrs):
    # constant filters and zero points take the integer GEMM on im2col rows
    info, winfo = np.iinfo(dtype), np.iinfo(wdtype)
    x = RNG.integers(info.min, info.max, shape).astype(dtype)
    w = RNG.integers(winfo.min, winfo.max, wshape).astype(wdtype)
    xzp = np.array(RNG.integers(info.min, info.max), dtype)
    wzp = RNG.integers(winfo.min, winfo.max, (wshape[0],)).astype(wdtype)
    (y,) = run_kernel("ConvInteger", [x, w, xzp, wzp], attrs, version=10, const_inputs=(1, 3))
    # a float32 Conv of the shifted values: exact, every partial sum is an integer below
    # 27 * 255^2 < 2^24
    xs = x.astype(np.float32) - np.float32(xzp)
    ws = w.astype(np.float32) - wzp.astype(np.float32).reshape((-1,) + (1,) * (w.ndim - 1))
    (ref,) = ort_node("Conv", [xs, ws], attrs, opset=11)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, np.rint(ref).astype(np.int32))


# ----- Gradient (import-time expansion) -----------------------------------------------------------
def _gradient_model(nodes, inputs, y, xs, opset=13):
    grads = [f"d_{x}" for x in xs]
    node_protos = [helper.make_node(op, ins, [out]) for op, ins, out in nodes]
    node_protos.append(helper.make_node("Gradient", xs, grads, domain="ai.onnx.preview.training",
                                        xs=xs, y=y))
    graph = helper.make_graph(
        node_protos, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in [y, *grads]])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("ai.onnx.preview.training",
                                                                       1)])


@pytest.mark.parametrize("opset", [12, 13])
def test_gradient_of_broadcast_arithmetic(opset):
    import edgert.backend as backend

    # y = ((a + b) * a - b) / c with b broadcast [3] -> [2, 3] and c [2, 1]
    nodes = [("Add", ["a", "b"], "s"), ("Mul", ["s", "a"], "m"), ("Sub", ["m", "b"], "t"),
             ("Div", ["t", "c"], "y")]
    model = _gradient_model(nodes, [("a", [2, 3]), ("b", [3]), ("c", [2, 1])], "y",
                            ["a", "b", "c"], opset)
    a, b = _f32(2, 3), _f32(3)
    c = _f32(2, 1, lo=0.5, hi=2.0)
    y, da, db, dc = backend.prepare(model, "CPU").run([a, b, c])
    a64, b64, c64 = a.astype(np.float64), b.astype(np.float64), c.astype(np.float64)
    t = (a64 + b64) * a64 - b64
    np.testing.assert_allclose(y, t / c64, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(da, (2 * a64 + b64) / c64, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(db, ((a64 - 1) / c64).sum(axis=0), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dc, (-t / c64**2).sum(axis=1, keepdims=True), rtol=RTOL,
                               atol=ATOL)


def test_gradient_rejects_undifferentiable_op():
    from edgert.importer import import_onnx

    nodes = [("Relu", ["a"], "r"), ("Mul", ["r", "a"], "y")]
    model = _gradient_model(nodes, [("a", [3])], "y", ["a"])
    with pytest.raises(UnsupportedOpError, match="Relu"):
        import_onnx(model)


def test_gradient_of_independent_input_is_zero():
    import edgert.backend as backend

    model = _gradient_model([("Mul", ["b", "b"], "y")], [("a", [2]), ("b", [2])], "y", ["a", "b"])
    a, b = _f32(2), _f32(2)
    y, da, db = backend.prepare(model, "CPU").run([a, b])
    np.testing.assert_array_equal(da, np.zeros(2, np.float32))
    np.testing.assert_allclose(db, 2 * b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("action,case_sensitive", [("UPPER", 0), ("LOWER", 1), ("NONE", 0)])
def test_string_normalizer_case_changes_that_change_length(action, case_sensitive):
    # "ß".upper() is "SS" and "İ".lower() two code points: fixed-width NumPy strings truncated
    words = np.array(["Grüße", "straße", "İstanbul", "the", "The", "ok"], dtype=object)
    attrs = {"case_change_action": action, "stopwords": ["the"],
             "is_case_sensitive": case_sensitive}
    got = run_kernel("StringNormalizer", [words], attrs)[0]
    kept = [w for w in words if (w != "the" if case_sensitive else w.lower() != "the")]
    change = {"UPPER": str.upper, "LOWER": str.lower, "NONE": str}[action]
    assert list(got) == [change(w) for w in kept]
