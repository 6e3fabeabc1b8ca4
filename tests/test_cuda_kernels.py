"""Every CUDA kernel against the CPU kernel of the same op (which is tested against onnxruntime).

Runs in Numba's CUDA simulator where there is no GPU (small shapes: the simulator runs each
thread in Python), on the GPU where there is one. Skipped when numba.cuda is unusable.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import check_same, require_cuda_or_skip, run_cuda_kernel

require_cuda_or_skip()

# The simulator evaluates 1/0 in NumPy, which warns; on a GPU it is IEEE inf, as the CPU kernels.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")

RNG = np.random.default_rng(1234)


def rnd(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# ----- conv ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((2, 3, 6, 5), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),  # dense, padded (implicit GEMM)
        ((1, 4, 7, 7), (18, 2, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 0, 0, 1]}),
        ((1, 4, 6, 6), (4, 1, 3, 3), {"group": 4, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
        ((2, 3, 9), (17, 3, 2), {"strides": [2]}),  # 1-D, 17 channels: two row tiles
        ((1, 2, 4, 4, 3), (3, 2, 2, 2, 2), {"pads": [1, 0, 1, 0, 1, 0]}),  # 3-D, direct path
        ((1, 3, 3, 3), (9, 3, 1, 1), {}),  # pointwise
    ],
)
def test_conv_matches_cpu(x_shape, w_shape, attrs):
    x, w, b = rnd(*x_shape), rnd(*w_shape), rnd(w_shape[0])
    check_same("Conv", [x, w, b], attrs, const_inputs=(1, 2))


def test_conv_without_bias():
    check_same("Conv", [rnd(1, 2, 4, 4), rnd(9, 2, 3, 3)], {"strides": [2, 2]}, const_inputs=(1,))


@pytest.mark.parametrize(
    "act, params",
    [("Relu", None), ("Clip", [-0.5, 0.7]), ("LeakyRelu", [0.2]), ("Sigmoid", None),
     ("HardSigmoid", [0.3, 0.4]), ("HardSwish", None), ("Tanh", None), ("Gelu", None),
     ("Swish", [1.0])],
)
def test_conv_fused_activation(act, params):
    x, w, b = rnd(1, 3, 5, 5), rnd(5, 3, 3, 3), rnd(5)
    attrs = {"activation": act, "pads": [1, 1, 1, 1]}
    if params:
        attrs["activation_params"] = params
    check_same("Conv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")


@pytest.mark.parametrize("w_shape, attrs", [
    ((5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),  # implicit GEMM
    ((3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),  # direct
])
def test_conv_fused_residual(w_shape, attrs):
    """edgert.Conv's fourth input Z: ``act(conv + B + Z)`` in the device pass."""
    x, w, b = rnd(1, 3, 5, 5), rnd(*w_shape), rnd(w_shape[0])
    z = rnd(1, w_shape[0], 5, 5)
    got = check_same("Conv", [x, w, b, z], dict(attrs, activation="Relu"), const_inputs=(1, 2),
                     domain="edgert")
    assert (got[0] == 0).any()


def test_conv_with_a_fused_channel_shuffle_runs_on_the_host():
    x, w = rnd(1, 4, 3, 3), rnd(6, 2, 1, 1)
    run_cuda_kernel("Conv", [x, w], {"group": 2, "channel_shuffle": 2}, const_inputs=(1,),
                    domain="edgert", expect_device=False)


def test_conv_depthwise_fused_relu_keeps_nan():
    x = rnd(1, 3, 4, 4)
    x[0, 1, 2, 2] = np.nan
    w, b = rnd(3, 1, 3, 3), rnd(3)
    got = check_same("Conv", [x, w, b], {"group": 3, "pads": [1, 1, 1, 1], "activation": "Relu"},
                     const_inputs=(1, 2), domain="edgert")
    assert np.isnan(got[0][0, 1]).any()


def test_conv_falls_back_without_constant_weights_or_float32():
    x, w = rnd(1, 2, 4, 4), rnd(3, 2, 3, 3)
    run_cuda_kernel("Conv", [x, w], {}, const_inputs=(), expect_device=False)
    run_cuda_kernel("Conv", [x.astype(np.float64), w.astype(np.float64)], {}, const_inputs=(1,),
                    expect_device=False)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 2, 3, 3), (2, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                  "output_padding": [1, 1]}),
    ((2, 4, 2, 3), (4, 1, 2, 2), {"group": 2, "dilations": [2, 1]}),
    ((1, 2, 4), (2, 3, 3), {"strides": [3], "output_shape": [14]}),  # past the full output
])
def test_conv_transpose_matches_cpu(x_shape, w_shape, attrs):
    x, w, b = rnd(*x_shape), rnd(*w_shape), rnd(w_shape[1] * attrs.get("group", 1))
    check_same("ConvTranspose", [x, w, b], attrs, const_inputs=(1, 2))


def test_conv_transpose_fused_relu_and_fallback():
    x, w = rnd(1, 2, 3, 3), rnd(2, 2, 2, 2)
    check_same("ConvTranspose", [x, w], {"activation": "Relu", "strides": [2, 2]},
               const_inputs=(1,), domain="edgert")
    run_cuda_kernel("ConvTranspose", [x, w], {}, const_inputs=(), expect_device=False)


# ----- gemm / matmul ------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_transposes_alpha_beta(trans_a, trans_b):
    m, k, n = 5, 19, 3  # K not a multiple of the 16x16 tile: two K steps
    a = rnd(k, m) if trans_a else rnd(m, k)
    b = rnd(n, k) if trans_b else rnd(k, n)
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": 0.5, "beta": 2.0}
    check_same("Gemm", [a, b, rnd(n)], attrs, const_inputs=(1, 2))  # C per column
    check_same("Gemm", [a, b, rnd(m, 1)], attrs, const_inputs=(2,))  # C per row, B computed


def test_gemm_full_c_no_c_and_several_tiles():
    a, b = rnd(3, 5), rnd(5, 18)  # N = 18: two column tiles
    check_same("Gemm", [a, b, rnd(3, 18)], {"beta": 0.5}, const_inputs=(1, 2))  # full C
    check_same("Gemm", [a, b], {"alpha": 2.0}, const_inputs=(1,))  # no C


def test_gemm_fused_activation_and_fallback():
    a, b, c = rnd(3, 7), rnd(7, 4), rnd(4)
    check_same("Gemm", [a, b, c], {"activation": "Clip", "activation_params": [-0.2, 0.3]},
               const_inputs=(1, 2), domain="edgert")
    run_cuda_kernel("Gemm", [a, b, c], {}, const_inputs=(1,), expect_device=False)  # C computed


@pytest.mark.parametrize(
    "a_shape, b_shape, const_b",
    [
        ((4, 17), (17, 3), True),
        ((2, 3, 5), (5, 6), True),  # Linear over a batch: folded into one GEMM
        ((3, 4, 5), (3, 5, 2), False),  # batched
        ((1, 4, 5), (3, 5, 2), False),  # A broadcast over the batch
        ((3, 4, 5), (5, 2), False),
        ((5,), (5, 3), True),  # 1-D operands promoted
        ((2, 4, 5), (5,), False),
    ],
)
def test_matmul_matches_cpu(a_shape, b_shape, const_b):
    check_same("MatMul", [rnd(*a_shape), rnd(*b_shape)], {}, const_inputs=(1,) if const_b else ())


def test_matmul_multi_axis_broadcast_runs_on_cpu():
    run_cuda_kernel("MatMul", [rnd(2, 1, 3, 4), rnd(1, 2, 4, 2)], {}, expect_device=False)


# ----- pooling ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 0, 1, 0]},
    ],
)
def test_max_pool_with_indices_and_nan(attrs):
    x = rnd(2, 3, 7, 6)
    x[1, 2, 3, 3] = np.nan
    check_same("MaxPool", [x], attrs)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_int8_uint8_runs_on_the_host(dtype):
    """The device kernel covers float32: an int8 / uint8 MaxPool (QOperator models) clears
    ``on_device``, so the interpreter runs the CPU kernel and lists it in ``host_ops``."""
    from helpers import run_kernel

    from edgert.runtime.kernels.cuda import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max + 1, (2, 3, 7, 6)).astype(dtype)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    run_cuda_kernel("MaxPool", [x], attrs, expect_device=False)
    kernel = registry().device_lookup("MaxPool", "", 21)(OpContext("MaxPool", "p", attrs))
    y_info, i_info = kernel.prepare([TensorInfo(x.shape, x.dtype)])
    y, ind = np.empty(y_info.shape, y_info.dtype), np.empty(i_info.shape, i_info.dtype)
    kernel.host_invoke([x], [y, ind])
    want = run_kernel("MaxPool", [x], attrs)
    np.testing.assert_array_equal(y, want[0])
    np.testing.assert_array_equal(ind, want[1])


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("ceil", [0, 1])
def test_average_pool(include, ceil):
    attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 1, 0],
             "count_include_pad": include, "ceil_mode": ceil}
    check_same("AveragePool", [rnd(1, 2, 7, 6)], attrs)
    check_same("AveragePool", [rnd(1, 2, 9)], {"kernel_shape": [3], "count_include_pad": include})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    x = rnd(2, 3, 4, 5)
    x[0, 1, 2, 2] = np.nan
    check_same(op, [x])


# ----- elementwise --------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_broadcasting(op):
    check_same(op, [rnd(2, 3, 4), rnd(3, 1)])
    check_same(op, [rnd(1, 4), rnd(3, 1)])
    check_same(op, [rnd(5), rnd(5)])


def test_binary_integer_runs_on_cpu():
    a = np.arange(6, dtype=np.int64)
    run_cuda_kernel("Div", [a, a + 1], {}, expect_device=False)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic(op):
    a, b, c = rnd(2, 3), rnd(3), rnd(4, 2, 1)
    a[0, 1] = np.nan
    check_same(op, [a, b, c])
    check_same(op, [a])


@pytest.mark.parametrize(
    "op, attrs",
    [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.3}),
     ("HardSigmoid", {"alpha": 0.4, "beta": 0.3}), ("HardSwish", {}), ("Exp", {}), ("Log", {}),
     ("Sqrt", {}), ("Abs", {}), ("Neg", {}), ("Reciprocal", {}), ("Floor", {}), ("Ceil", {}),
     ("Erf", {}), ("Elu", {"alpha": 0.7}), ("Softplus", {}), ("Gelu", {}),
     ("Gelu", {"approximate": "tanh"})],
)
def test_unary(op, attrs):
    x = rnd(3, 7) * 3
    x[0, :3] = [0.0, -0.0, np.nan]
    check_same(op, [x], attrs)


def test_clip_constant_bounds_and_computed_fallback():
    x = rnd(4, 5)
    lo, hi = np.array(-0.3, np.float32), np.array(0.4, np.float32)
    check_same("Clip", [x, lo, hi], {}, const_inputs=(1, 2))
    check_same("Clip", [x, None, hi], {}, const_inputs=(2,))
    check_same("Clip", [x], {})
    run_cuda_kernel("Clip", [x, lo], {}, const_inputs=(), expect_device=False)


# ----- fused elementwise chains (edgert.FusedElementwise) ---------------------------------------
def _program(*instrs, modes):
    prog, params = [], []
    for ins in instrs:
        prog += list(ins[:5])
        params += list(ins[5:]) + [0.0] * (2 - len(ins[5:]))
    return {"program": prog, "params": params, "modes": modes}


def test_fused_elementwise_modes_and_every_opcode():
    from edgert.runtime.ops import fusion as F

    x, r, c = rnd(2, 3, 2, 3), rnd(2, 3, 2, 3), rnd(3, 1, 1)
    s = np.array([0.5], np.float32)
    x[0, 0, 0, :3] = [np.nan, 0.0, -0.0]
    attrs = _program((F.OP_ADD, 4, 0, 1, 0), (F.OP_MUL, 5, 4, 2, 0), (F.OP_SUB, 6, 5, 3, 0),
                     (F.OP_RELU, 7, 6, 0, 0), modes=[0, 0, 2, 1])
    check_same("FusedElementwise", [x, r, c, s], attrs, const_inputs=(2, 3), domain="edgert")
    unary = [F.OP_SIGMOID, F.OP_TANH, F.OP_EXP, F.OP_NEG, F.OP_ABS, F.OP_SQRT, F.OP_ERF,
             F.OP_RECIPROCAL, F.OP_HARD_SWISH, F.OP_LOG]
    for op in unary:  # each opcode alone: NaN, zeros and negatives included
        attrs = _program((op, 1, 0, 0, 0), modes=[0])
        check_same("FusedElementwise", [x], attrs, domain="edgert")
    lo, hi = np.array(-0.5, np.float32), np.array(0.25, np.float32)
    attrs = _program((F.OP_LEAKY_RELU, 3, 0, 0, 0, 0.1), (F.OP_HARD_SIGMOID, 4, 3, 0, 0, 0.3, 0.4),
                     (F.OP_DIV, 5, 0, 4, 0), (F.OP_MAX, 6, 5, 1, 0), (F.OP_MIN, 7, 6, 2, 0),
                     (F.OP_CLIP, 8, 0, 1, 2), (F.OP_ADD, 9, 7, 8, 0), modes=[0, 1, 1])
    check_same("FusedElementwise", [x, lo, hi], attrs, const_inputs=(1, 2), domain="edgert")
    run_cuda_kernel("FusedElementwise", [x.astype(np.float64)], _program((F.OP_RELU, 1, 0, 0, 0),
                    modes=[0]), domain="edgert", expect_device=False)


# ----- int8 (bit-exact: tolerance 0) -----------------------------------------------------------
def _i8(*shape):
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


@pytest.mark.parametrize("group, cin, cout, stride, pad", [
    (1, 3, 4, 1, 1), (2, 4, 6, 2, 1), (5, 5, 10, 1, 1), (1, 4, 3, 1, 0)])
def test_qconv_bit_exact(group, cin, cout, stride, pad):
    x = _i8(2, cin, 4, 4)
    w = RNG.integers(-127, 128, size=(cout, cin // group, 3, 3)).astype(np.int8)
    b = RNG.integers(-2000, 2000, size=cout).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, cout)
    attrs = {"strides": [stride] * 2, "pads": [pad] * 4, "group": group, "x_scale": 0.05,
             "x_zero_point": -3, "w_scale": [float(s) for s in ws], "y_scale": 0.11,
             "y_zero_point": 7, "act_min": -100, "act_max": 120}
    check_same("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert", rtol=0, atol=0)


@pytest.mark.parametrize("group, cin, cout, stride, pad, out_pad, dil", [
    (1, 3, 4, 2, 1, 1, 1), (2, 4, 6, 1, 0, 0, 2), (1, 2, 3, 3, 2, 1, 1)])
def test_qconv_transpose_bit_exact(group, cin, cout, stride, pad, out_pad, dil):
    x = _i8(2, cin, 3, 4)
    w = RNG.integers(-127, 128, size=(cin, cout // group, 3, 2)).astype(np.int8)
    b = RNG.integers(-2000, 2000, size=cout).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, cout)
    attrs = {"strides": [stride] * 2, "pads": [pad] * 4, "output_padding": [out_pad] * 2,
             "dilations": [dil] * 2, "group": group, "x_scale": 0.05, "x_zero_point": 5,
             "w_scale": [float(s) for s in ws], "y_scale": 0.08, "y_zero_point": -6,
             "act_min": -128, "act_max": 110}
    check_same("QConvTranspose", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert",
               rtol=0, atol=0)


def test_qgemm_bit_exact():
    x = _i8(3, 2, 7)
    w = RNG.integers(-127, 128, size=(4, 7)).astype(np.int8)
    b = RNG.integers(-900, 900, size=4).astype(np.int32)
    attrs = {"x_scale": 0.04, "x_zero_point": -20, "w_scale": [0.01, 0.02, 0.005, 0.013],
             "y_scale": 0.07, "y_zero_point": 3}
    check_same("QGemm", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert", rtol=0, atol=0)


def test_quantize_dequantize_bit_exact():
    x = rnd(2, 3, 4) * 3
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 0.25]  # NaN -> zero point, +-inf saturate
    x[1, 0, :4] = [0.5, 1.5, -0.5, -2.5]  # ties: to the even neighbour
    check_same("Quantize", [x], {"scale": 1.0, "zero_point": 0}, domain="edgert", rtol=0, atol=0)
    check_same("Quantize", [x], {"scale": 0.02, "zero_point": -5}, domain="edgert", rtol=0,
               atol=0)
    q = _i8(2, 3, 4)
    check_same("Dequantize", [q], {"scale": [0.05], "zero_point": [3]}, domain="edgert",
               rtol=0, atol=0)
    check_same("Dequantize", [q], {"scale": [0.1, 0.2, 0.3], "zero_point": [1, -2, 0],
                                   "axis": 1}, domain="edgert", rtol=0, atol=0)
    b32 = RNG.integers(-5000, 5000, size=(3,)).astype(np.int32)
    check_same("Dequantize", [b32], {"scale": [0.001]}, domain="edgert", rtol=0, atol=0)


@pytest.mark.parametrize("op", ["QAdd", "QMul"])
def test_qadd_qmul_broadcast_bit_exact(op):
    attrs = {"a_scale": 0.05, "a_zero_point": -7, "b_scale": 0.03, "b_zero_point": 4,
             "y_scale": 0.06, "y_zero_point": 2, "act_min": -120, "act_max": 127}
    check_same(op, [_i8(2, 3, 4), _i8(3, 1)], attrs, domain="edgert", rtol=0, atol=0)


def test_qconcat_rescales_and_copies_bit_exact():
    attrs = {"axis": 1, "scales": [0.05, 0.1, 0.07], "zero_points": [0, 3, -1],
             "y_scale": 0.1, "y_zero_point": 3}  # the middle input is copied as is
    check_same("QConcat", [_i8(2, 2, 3), _i8(2, 1, 3), _i8(2, 3, 3)], attrs, domain="edgert",
               rtol=0, atol=0)


@pytest.mark.parametrize("op, attrs", [
    ("QMaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("QMaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("QAveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("QAveragePool", {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1],
                      "count_include_pad": 1}),
])
def test_qpool_bit_exact(op, attrs):
    check_same(op, [_i8(1, 2, 5, 5)], attrs, domain="edgert", rtol=0, atol=0)


def test_qglobal_average_pool_and_qlut_bit_exact():
    x = _i8(2, 3, 3, 3)
    x[0, 0] = -128  # a row summing to an exact negative value
    check_same("QGlobalAveragePool", [x], {}, domain="edgert", rtol=0, atol=0)
    table = [int(v) for v in RNG.integers(-128, 128, size=256)]
    q = np.arange(-128, 128, dtype=np.int8).reshape(4, 64)  # every table entry
    check_same("QLut", [q], {"table": table}, domain="edgert", rtol=0, atol=0)


@pytest.mark.parametrize("axis", [1, 2])
def test_qsoftmax(axis):
    x = _i8(2, 5, 3)
    attrs = {"axis": axis, "x_scale": 0.08, "x_zero_point": 1, "y_scale": 1 / 256,
             "y_zero_point": -128}
    # exp is float32 on both sides; a GPU's expf may be an ulp off the host's, which can move an
    # output across a rounding tie: one int8 step (the simulator matches exactly).
    from numba.core import config

    step = 0 if config.ENABLE_CUDASIM else 1
    check_same("QSoftmax", [x], attrs, domain="edgert", rtol=0, atol=step)


# ----- normalization ------------------------------------------------------------------------------
def test_batch_norm():
    c = 3
    params = [RNG.uniform(0.5, 1.5, c).astype(np.float32), rnd(c), rnd(c),
              RNG.uniform(0.5, 1.5, c).astype(np.float32)]
    check_same("BatchNormalization", [rnd(2, c, 3, 2), *params], {"epsilon": 1e-3},
               const_inputs=(1, 2, 3, 4))
    check_same("BatchNormalization", [rnd(2, c), *params], {}, const_inputs=(1, 2, 3, 4))


def test_lrn():
    check_same("LRN", [rnd(2, 5, 3, 2)], {"size": 3, "alpha": 0.01, "beta": 0.6, "bias": 1.5})
    check_same("LRN", [rnd(1, 4, 3)], {"size": 4})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis, version", [(-1, 13), (1, 13), (0, 13), (1, 11)])
def test_softmax(op, axis, version):
    x = rnd(2, 3, 4) * 4
    check_same(op, [x], {"axis": axis}, version=version)


# ----- data movement ------------------------------------------------------------------------------
def test_flat_copies():
    x = rnd(2, 3, 4)
    check_same("Reshape", [x, np.array([4, -1], np.int64)], {}, const_inputs=(1,))
    check_same("Flatten", [x], {"axis": 2})
    check_same("Squeeze", [rnd(2, 1, 3), np.array([1], np.int64)], {}, const_inputs=(1,))
    check_same("Unsqueeze", [x, np.array([0], np.int64)], {}, const_inputs=(1,))
    check_same("Identity", [x])
    check_same("Dropout", [x], {}, version=13)  # output and mask (all True)


def test_transpose_slice_concat():
    x = rnd(2, 3, 4, 5)
    check_same("Transpose", [x], {"perm": [0, 3, 1, 2]})
    check_same("Transpose", [x], {})
    starts, ends = np.array([1, -1], np.int64), np.array([4, -5], np.int64)
    axes, steps = np.array([3, 2], np.int64), np.array([2, -2], np.int64)
    check_same("Slice", [x, starts, ends, axes, steps], {}, const_inputs=(1, 2, 3, 4))
    check_same("Concat", [rnd(2, 1, 3), rnd(2, 4, 3), rnd(2, 2, 3)], {"axis": 1})
    check_same("Concat", [rnd(2, 3), rnd(1, 3)], {"axis": 0})
    ints = np.arange(12, dtype=np.int64).reshape(3, 4)
    check_same("Transpose", [ints], {})


def test_channel_shuffle():
    check_same("ChannelShuffle", [rnd(2, 6, 2, 1)], {"group": 3}, domain="edgert")
    check_same("ChannelShuffle", [_i8(1, 4, 3)], {"group": 2}, domain="edgert")


def test_gather_constant_and_runtime_indices():
    data = rnd(3, 5, 2)
    idx = np.array([[4, -1], [0, 2]], np.int64)
    check_same("Gather", [data, idx], {"axis": 1}, const_inputs=(1,))
    check_same("Gather", [data, idx.astype(np.int32)], {"axis": 1})  # computed indices
    check_same("Gather", [_i8(4, 3), np.array([3, -4, 1], np.int64)], {"axis": 0})


def test_gather_runtime_index_out_of_range_raises_after_invoke():
    from numba import cuda

    from edgert.errors import KernelError
    from edgert.runtime.kernels.cuda import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    kernel = registry().device_lookup("Gather")(OpContext("Gather", "emb", {"axis": 0}))
    data, idx = rnd(4, 2), np.array([1, 4], np.int64)  # 4 is out of range for 4 rows
    kernel.prepare([TensorInfo(data.shape, data.dtype), TensorInfo(idx.shape, idx.dtype)])
    out = cuda.device_array((2, 2), np.float32)
    kernel.invoke([cuda.to_device(data), cuda.to_device(idx)], [out])
    cuda.synchronize()
    with pytest.raises(KernelError, match="Gather 'emb'.*out of range"):
        kernel.after_invoke()
    kernel.after_invoke()  # the flag was reset: a later good run does not raise


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
def test_pad_modes_with_crop(mode):
    x = rnd(1, 2, 3, 4)
    pads = np.array([0, 0, 2, -1, 0, 1, 1, 2], np.int64)  # begin..., end...: crops axis 3
    ins = [x, pads] + ([np.array(1.5, np.float32)] if mode == "constant" else [])
    check_same("Pad", ins, {"mode": mode}, const_inputs=(1, 2))


def test_pad_int8_constant_and_axes():
    x = _i8(2, 3)
    check_same("Pad", [x, np.array([1, 2], np.int64), np.array(-7, np.int8),
                       np.array([1], np.int64)], {}, const_inputs=(1, 2, 3))
    check_same("Pad", [x, np.array([1, 0, 0, 2], np.int64)], {}, const_inputs=(1,))


@pytest.mark.parametrize("mode, ctm", [
    ("nearest", "asymmetric"), ("nearest", "half_pixel"), ("linear", "half_pixel"),
    ("linear", "align_corners"), ("linear", "asymmetric"), ("linear", "pytorch_half_pixel"),
    ("cubic", "half_pixel"),
])
def test_resize_modes(mode, ctm):
    x = rnd(1, 2, 3, 4)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    scales = np.array([1, 1, 2, 1.5], np.float32)
    check_same("Resize", [x, None, scales], attrs, const_inputs=(2,))
    sizes = np.array([1, 2, 2, 3], np.int64)  # downscale
    check_same("Resize", [x, None, None, sizes], attrs, const_inputs=(3,))


def test_resize_int8_nearest_tf_crop_and_fallbacks():
    check_same("Resize", [_i8(1, 1, 3, 3), None, np.array([1, 1, 2, 2], np.float32)],
               {"mode": "nearest"}, const_inputs=(2,))
    roi = np.array([0, 0, 0.2, 0.1, 1, 1, 1.3, 0.8], np.float32)
    check_same("Resize", [rnd(1, 1, 3, 4), roi, None, np.array([1, 1, 4, 3], np.int64)],
               {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                "extrapolation_value": -2.0}, const_inputs=(1, 3))
    check_same("Resize", [rnd(1, 2, 3, 4), None, np.array([1, 1, 1, 1], np.float32)], {},
               const_inputs=(2,))  # identity: a copy
    # Resizing the channel axis, or integer linear: the CPU kernel serves them.
    run_cuda_kernel("Resize", [rnd(1, 2, 2, 2), None, np.array([1, 2, 1, 1], np.float32)], {},
                    const_inputs=(2,), expect_device=False)
    run_cuda_kernel("Resize", [_i8(1, 1, 2, 2), None, np.array([1, 1, 2, 2], np.float32)],
                    {"mode": "linear"}, const_inputs=(2,), expect_device=False)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceProd", "ReduceMax",
                                "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                                "ReduceLogSum", "ReduceLogSumExp"])
def test_reductions_over_axes(op):
    x = rnd(2, 3, 4)
    if op == "ReduceLogSum":
        x = np.abs(x)
    x[1, 2, 3] = np.nan
    check_same(op, [x, np.array([0, 2], np.int64)], {"keepdims": 1}, const_inputs=(1,))
    check_same(op, [x, np.array([-2], np.int64)], {"keepdims": 0}, const_inputs=(1,))
    check_same(op, [x], {"keepdims": 0})  # every axis


def test_reduction_edge_cases():
    x = rnd(2, 0, 3)  # empty reduction: identities, NaN for the mean
    for op in ("ReduceSum", "ReduceMean", "ReduceProd", "ReduceMax", "ReduceMin",
               "ReduceLogSumExp"):
        check_same(op, [x, np.array([1], np.int64)], {}, const_inputs=(1,))
    y = np.array([[-np.inf, -np.inf], [np.inf, 1.0]], np.float32)
    check_same("ReduceLogSumExp", [y, np.array([1], np.int64)], {}, const_inputs=(1,))
    check_same("ReduceMean", [rnd(3, 2), np.array([], np.int64)], {"noop_with_empty_axes": 1},
               const_inputs=(1,))
    run_cuda_kernel("ReduceSum", [np.arange(6).reshape(2, 3)], {}, expect_device=False)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_argmin(op, last):
    x = np.round(rnd(3, 4, 2))  # ties
    x[0, 2, 1] = np.nan
    x[0, 3, 1] = np.nan
    for axis, keep in ((1, 1), (0, 0), (-1, 1)):
        check_same(op, [x], {"axis": axis, "keepdims": keep, "select_last_index": last})
    check_same(op, [_i8(3, 5)], {"axis": 1, "select_last_index": last})


def test_layer_norm():
    x = rnd(2, 3, 4) + 5.0  # |mean| >> std: the two-pass variance matters
    check_same("LayerNormalization", [x, rnd(4), rnd(4)], {"epsilon": 1e-3},
               const_inputs=(1, 2), version=17)  # Mean and InvStdDev too
    check_same("LayerNormalization", [x, rnd(3, 4)], {"axis": 1}, const_inputs=(1,),
               version=17)
    run_cuda_kernel("LayerNormalization", [x, rnd(4)], {}, const_inputs=(), version=17,
                    expect_device=False)


def test_every_cuda_kernel_has_a_test():
    """The registry's CUDA ops all appear in this file (a new kernel needs a test here)."""
    import pathlib

    from edgert.runtime.kernels.cuda import registry

    text = pathlib.Path(__file__).read_text()
    ops = {o.split(".")[-1] for o in registry().op_types()}
    untested = sorted(o for o in ops if f'"{o}"' not in text)
    assert untested == []


def test_cuda_kernels_hold_their_cpu_kernel_instead_of_subclassing_it():
    """Composition, not inheritance: each CUDA kernel class has its CPU kernel class as
    ``CPU`` (the shared checks, the host fallback) and the same op traits, and is no subclass
    of it."""
    from edgert.runtime.kernels.cpu import registry as cpu_registry
    from edgert.runtime.kernels.cuda import registry
    from edgert.runtime.kernels.cuda._common import CudaKernel
    from edgert.runtime.registry import OpContext

    reg, cpu = registry(), cpu_registry()
    seen = 0
    for name in reg.op_types():
        domain, _, op = name.rpartition(".")
        cls = reg.device_lookup(op, domain)
        if cls is None or not issubclass(cls, CudaKernel):
            continue
        seen += 1
        assert not issubclass(cls, cls.CPU), cls.__name__
        assert cls.traits == cls.CPU.traits == cpu.traits(op, domain), cls.__name__
        assert isinstance(cls(OpContext(op, "n", {}, domain)).host, cls.CPU)
    assert seen >= 25
