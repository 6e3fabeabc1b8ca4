"""Narrow element types (int4/uint4/int2/uint2, float4e2m1, float8e8m0), float16 MatMul/Gemm/Conv,
Det, Resize align_corners by scales and SpaceToDepth CRD.

References: ml_dtypes (the types' own NumPy implementation, installed with onnx), onnx's
``numpy_helper`` and ``ReferenceEvaluator``, onnxruntime, and NumPy formulas.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from helpers import run_kernel
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgert import dtypes
from edgert.converter import convert
from edgert.errors import DTypeError, ModelFormatError, ShapeError, UnsupportedOpError
from edgert.format import read_model
from edgert.importer import import_onnx
from edgert.importer.onnx_export import export_onnx
from edgert.runtime import Interpreter

ML = {dtypes.INT4: ml_dtypes.int4, dtypes.UINT4: ml_dtypes.uint4, dtypes.INT2: ml_dtypes.int2,
      dtypes.UINT2: ml_dtypes.uint2}


def _model(nodes, inputs, outputs, inits=(), opset=25):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 11
    return m


def _run(model, feeds):
    interp = Interpreter(convert(model, level=0))
    out = interp.run(feeds)
    return [out[n] for n in interp.output_names]


# ----- Cast -------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(ML))
def test_cast_float_to_subbyte_ints_truncates_and_saturates(code):
    # In range, ONNX defines the cast: truncation toward zero. Out of range it is undefined, and
    # edgert's documented choice is saturation (NaN -> 0). NumPy formulas, not ml_dtypes, whose
    # out-of-range results changed between releases.
    lo, hi = dtypes.value_range(code)
    f = np.array([-9, -8.5, -7.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.9, 6.5, 7.9, 8, 15.5, 16, 17,
                  1e6, -1e6, 3e9, np.inf, -np.inf, np.nan], np.float32)
    for src in (f, f.astype(np.float16), f.astype(np.float64)):
        got = run_kernel("Cast", [src], {"to": code}, version=25)[0]
        assert got.dtype == dtypes.to_numpy(code)
        t = np.trunc(f.astype(np.float64))
        defined = np.isfinite(t) & (t >= lo) & (t <= hi)
        np.testing.assert_array_equal(got[defined], t[defined])
        np.testing.assert_array_equal(got[~defined & (t > hi)], hi)
        np.testing.assert_array_equal(got[~defined & (t < lo)], lo)
        np.testing.assert_array_equal(got[np.isnan(f)], 0)
    # the in-range values also agree with ml_dtypes (the types' own implementation)
    inside = f[np.isfinite(f) & (np.trunc(f) >= lo) & (np.trunc(f) <= hi)]
    got = run_kernel("Cast", [inside], {"to": code}, version=25)[0]
    np.testing.assert_array_equal(got, inside.astype(ML[code]).astype(np.int16))


@pytest.mark.parametrize("code", sorted(ML))
def test_cast_int_to_subbyte_ints_discards_higher_bits(code):
    # ONNX: a fixed -> fixed narrowing keeps the low bits, read in two's complement.
    lo, hi = dtypes.value_range(code)
    span = hi - lo + 1
    i = np.array([-200, -17, -9, -1, 0, 1, 3, 4, 7, 8, 15, 16, 255, 2**40 + 3], np.int64)
    want = (i - lo) % span + lo
    for src in (i, i.astype(np.int32), i.astype(np.int16)):
        got = run_kernel("Cast", [src], {"to": code}, version=25)[0]
        np.testing.assert_array_equal(got, (src.astype(np.int64) - lo) % span + lo)
    np.testing.assert_array_equal(run_kernel("Cast", [i], {"to": code}, version=25)[0], want)


def test_cast_float4e2m1_round_trip_matches_ml_dtypes():
    x = np.array([0.24, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, 1e9, np.inf,
                  -np.inf, -0.25, -0.3, -2.5, -5.0, 0.0, -0.0, 1e-9], np.float32)
    codes = run_kernel("Cast", [x], {"to": dtypes.FLOAT4E2M1}, version=25)[0]
    np.testing.assert_array_equal(codes, x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8))
    all_codes = np.arange(16, dtype=np.uint8)
    back = run_kernel("Cast", [all_codes], {"to": TensorProto.FLOAT,
                                            "edgert_from_type": dtypes.FLOAT4E2M1}, version=25)[0]
    want = all_codes.view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    np.testing.assert_array_equal(back, want)
    assert np.array_equal(np.signbit(back), np.signbit(want))


def test_cast_float8e8m0_decode_all_codes_and_encode_like_onnx():
    codes = np.arange(256, dtype=np.uint8)
    got = run_kernel("Cast", [codes], {"to": TensorProto.FLOAT,
                                       "edgert_from_type": dtypes.FLOAT8E8M0}, version=25)[0]
    np.testing.assert_array_equal(got, codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float32))
    rng = np.random.default_rng(0)
    x = np.concatenate([2.0 ** rng.uniform(-126, 126, 200), [0.124, 0.25, 1.1, 1.5, 1.75, 3.0,
                                                             2.0**-130, 3e38]]).astype(np.float32)
    for mode in ("up", "down", "nearest"):
        got = run_kernel("Cast", [x], {"to": dtypes.FLOAT8E8M0, "round_mode": mode,
                                       "saturate": 1}, version=25)[0]
        want = numpy_helper.to_float8e8m0(x, True, mode).view(np.uint8)
        np.testing.assert_array_equal(got, want, err_msg=mode)
    inf = run_kernel("Cast", [np.array([np.inf, np.nan], np.float32)],
                     {"to": dtypes.FLOAT8E8M0}, version=25)[0]
    np.testing.assert_array_equal(inf, [254, 255])  # ONNX's table: Inf saturates, NaN is NaN


# ----- QuantizeLinear / DequantizeLinear ---------------------------------------------------------
@pytest.mark.parametrize("code", sorted(ML))
def test_quantize_subbyte_per_axis_saturates_to_the_type_range(code):
    rng = np.random.default_rng(1)
    x = rng.uniform(-20, 20, (3, 8)).astype(np.float32)
    scale = np.array([0.5, 2.0, 7.0], np.float32)
    lo, hi = dtypes.value_range(code)
    zp = np.array([lo, 0, hi], dtypes.to_numpy(code))
    got = run_kernel("QuantizeLinear", [x, scale, zp],
                     {"axis": 0, "edgert_to_type": code}, version=25)[0]
    want = np.clip(np.rint(x / scale[:, None]) + zp[:, None], lo, hi)
    np.testing.assert_array_equal(got, want)
    # DequantizeLinear back: (q - zp) * scale
    back = run_kernel("DequantizeLinear", [got, scale, zp],
                      {"axis": 0, "edgert_from_type": code}, version=25)[0]
    np.testing.assert_allclose(back, (want - zp[:, None]) * scale[:, None], rtol=1e-6)


def test_quantize_int4_blocked():
    rng = np.random.default_rng(2)
    x = rng.uniform(-4, 4, (2, 6)).astype(np.float32)
    scale = rng.uniform(0.3, 1.0, (2, 3)).astype(np.float32)
    zp = np.array([[0, 1, -1], [2, -3, 0]], np.int8)
    attrs = {"axis": 1, "block_size": 2, "edgert_to_type": dtypes.INT4}
    got = run_kernel("QuantizeLinear", [x, scale, zp], attrs, version=25)[0]
    want = np.clip(np.rint(x / np.repeat(scale, 2, 1)) + np.repeat(zp, 2, 1), -8, 7)
    np.testing.assert_array_equal(got, want)


def test_quantize_float4_and_float8_encode_like_ml_dtypes():
    x = np.array([-13.0, -5.1, -1.3, -0.1, 0.0, 0.7, 2.4, 3.1, 9.5, 100.0], np.float32)
    s = np.float32(0.5)
    got = run_kernel("QuantizeLinear", [x, np.array(s), np.zeros((), np.uint8)],
                     {"edgert_to_type": dtypes.FLOAT4E2M1}, version=25)[0]
    np.testing.assert_array_equal(got, (x / s).astype(ml_dtypes.float4_e2m1fn).view(np.uint8))
    got8 = run_kernel("QuantizeLinear", [x, np.array(s), np.zeros((), np.uint8)],
                      {"edgert_to_type": dtypes.FLOAT8E4M3FN}, version=25)[0]
    np.testing.assert_array_equal(got8, (x / s).astype(ml_dtypes.float8_e4m3fn).view(np.uint8))
    deq = run_kernel("DequantizeLinear", [got8, np.array(s)],
                     {"edgert_from_type": dtypes.FLOAT8E4M3FN}, version=25)[0]
    np.testing.assert_array_equal(deq, got8.view(ml_dtypes.float8_e4m3fn).astype(np.float32) * s)


def test_int4_weights_through_the_pipeline_match_onnxruntime():
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    w = rng.integers(-8, 8, (4, 5)).astype(ml_dtypes.int4)
    wt = numpy_helper.from_array(w, "w")  # packed two per byte by onnx
    nodes = [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    s = numpy_helper.from_array(np.array([0.5, 0.25, 1.0, 2.0], np.float32), "s")
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])], [wt, s], opset=21)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    (got,) = _run(m, {"x": x})
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # exported back to ONNX (int4 packed again, no edgert-only attributes): still runs in ORT
    back = export_onnx(import_onnx(m))
    onnx.checker.check_model(back)
    sess = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


# ----- import / export / file ------------------------------------------------------------------
@pytest.mark.parametrize("code,values", [
    (TensorProto.INT4, [-8, 7, 3, 0, -1]),
    (TensorProto.UINT4, [0, 15, 9]),
    (TensorProto.INT2, [-2, -1, 0, 1, 1, -2, 0]),
    (TensorProto.UINT2, [3, 2, 1, 0, 3]),
    (TensorProto.FLOAT4E2M1, [0.5, -6.0, 1.5, 0.0, 3.0]),
])
def test_packed_constants_unpack_on_import_and_pack_on_export(code, values):
    t = helper.make_tensor("c", code, [len(values)], values)
    m = _model([helper.make_node("Identity", ["c"], ["y"])], [],
               [helper.make_tensor_value_info("y", code, [len(values)])], [t])
    g = import_onnx(m)
    c = g.constants["c"].const
    assert c.dtype == dtypes.to_numpy(code) and c.shape == (len(values),)
    if code == TensorProto.FLOAT4E2M1:
        np.testing.assert_array_equal(c, np.array(values, np.float32).astype(
            ml_dtypes.float4_e2m1fn).view(np.uint8))
    else:
        np.testing.assert_array_equal(c, values)
    back = export_onnx(g)
    init = {i.name: i for i in back.graph.initializer}["c"]
    assert init.data_type == code
    np.testing.assert_array_equal(numpy_helper.to_array(init).astype(np.float32),
                                  numpy_helper.to_array(t).astype(np.float32))
    # and the model runs: Identity moves the unpacked values
    (y,) = _run(m, {})
    np.testing.assert_array_equal(y, c)


def test_out_of_range_int4_in_a_file_is_a_format_error():
    vals = np.array([1, -2, 3, -4, 5, -6, 7, -8, 2, 6, -3, 4], np.int8)
    t = numpy_helper.from_array(vals.astype(ml_dtypes.int4), "c")
    m = _model([helper.make_node("Identity", ["c"], ["y"])], [],
               [helper.make_tensor_value_info("y", TensorProto.INT4, [12])], [t])
    data = bytearray(convert(m, level=0))
    at = bytes(data).find(vals.tobytes())
    assert at > 0
    data[at + 2] = 9  # int4 holds -8..7
    with pytest.raises(ModelFormatError, match="outside the range of int4"):
        read_model(bytes(data))


def test_computing_on_int4_is_refused_at_conversion():
    nodes = [helper.make_node("Add", ["a", "a"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.INT4, [3])],
               [helper.make_tensor_value_info("y", TensorProto.INT4, [3])], opset=21)
    with pytest.raises(UnsupportedOpError, match="int4 tensors are only moved or cast"):
        convert(m, level=0)


# ----- float16 MatMul / Gemm / Conv ----------------------------------------------------------
def _f16(rng, *shape):
    return rng.uniform(-1, 1, shape).astype(np.float16)


def _float32_reference(op, inputs, attrs):
    """onnxruntime in float32 on the (exactly widened) float16 inputs, rounded once to float16."""
    from helpers import ort_node

    wide = [x.astype(np.float32) for x in inputs]
    return ort_node(op, wide, attrs)[0].astype(np.float16)


@pytest.mark.parametrize("op,shapes,attrs", [
    ("MatMul", [(2, 3, 40), (40, 7)], {}),
    ("Gemm", [(5, 40), (6, 40), (6,)], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
    ("Conv", [(1, 3, 9, 9), (4, 3, 3, 3), (4,)], {"pads": [1, 1, 1, 1]}),
])
def test_float16_compute_kernels_round_once(op, shapes, attrs):
    rng = np.random.default_rng(4)
    inputs = [_f16(rng, *s) for s in shapes]
    for const in ((), "all"):
        got = run_kernel(op, inputs, attrs, const_inputs=const)[0]
        assert got.dtype == np.float16
        # one rounding of a float32 result: equal to the float32 reference rounded, within the
        # float32 rounding of the reference itself (at most one float16 ulp at a tie)
        np.testing.assert_allclose(got.astype(np.float32),
                                   _float32_reference(op, inputs, attrs).astype(np.float32),
                                   rtol=1e-3, atol=1e-4)


def test_float16_with_float32_operand_is_a_dtype_error():
    with pytest.raises(DTypeError, match="float16"):
        run_kernel("MatMul", [np.ones((2, 2), np.float16), np.ones((2, 2), np.float32)])


# ----- Det ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_det_matches_numpy(dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3, 5, 5))
    a[0, 1, 2] = a[0, 1, 4]  # singular: two equal rows
    a[1, 0, :, 0] = 0.0  # singular: a zero column (no pivot)
    a[1, 2] = np.eye(5)[[1, 0, 2, 3, 4]] * 3.0  # one row swap: det = -3**5
    x = a.astype(dtype)
    got = run_kernel("Det", [x])[0]
    assert got.dtype == dtype and got.shape == (2, 3)
    want = np.linalg.det(x.astype(np.float64)).astype(dtype)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert got[1, 0] == 0.0 and got[1, 2] == -(3.0**5)


def test_det_edge_cases():
    one = run_kernel("Det", [np.array([[-2.5]], np.float32)])[0]
    assert one.shape == () and one == -2.5
    nan = np.eye(3, dtype=np.float32)
    nan[2, 0] = np.nan
    assert np.isnan(run_kernel("Det", [nan])[0])
    big = np.random.default_rng(6).standard_normal((64, 8, 8)).astype(np.float32)  # parallel
    np.testing.assert_allclose(run_kernel("Det", [big], num_threads=2)[0],
                               np.linalg.det(big.astype(np.float64)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ShapeError, match="square"):
        run_kernel("Det", [np.ones((2, 3), np.float32)])
    with pytest.raises(DTypeError):
        run_kernel("Det", [np.ones((2, 2), np.int32)])


# ----- Resize / SpaceToDepth fixes -------------------------------------------------------------
def _reference(op, inputs, attrs, opset):
    names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype),
                                                  x.shape) for n, x in zip(names, inputs) if n]
    m = _model([node], graph_inputs, [helper.make_empty_tensor_value_info("y")], opset=opset)
    feeds = {n: x for n, x in zip(names, inputs) if n}
    return ReferenceEvaluator(m).run(None, feeds)[0]


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_align_corners_by_scales_uses_the_unrounded_length(mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
    scales = np.array([1, 1, 0.6, 0.7], np.float32)  # 5 -> 3 (3.0), 7 -> 4 (4.9)
    attrs = {"mode": mode, "coordinate_transformation_mode": "align_corners"}
    got = run_kernel("Resize", [x, None, scales], attrs, const_inputs=(2,), version=19)[0]
    want = _reference("Resize", [x, None, scales], attrs, 19)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_modes(mode):
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    got = run_kernel("SpaceToDepth", [x], {"blocksize": 2, "mode": mode}, version=25)[0]
    # the inverse of DepthToSpace in the same mode (ONNX reference for DepthToSpace)
    back = _reference("DepthToSpace", [got], {"blocksize": 2, "mode": mode}, 13)
    np.testing.assert_array_equal(back, x)
