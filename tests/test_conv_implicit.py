"""The float32 implicit-GEMM conv path (runtime/kernels/cpu/fgemm.py) against onnxruntime.

Each case is shaped so that ConvKernel selects the path (group 1, at most IMPLICIT_MAX_M output
channels or IMPLICIT_MAX_P output positions, row tiles that use enough lanes); the test asserts
that, then compares with onnxruntime's Conv followed by the activation in NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node

from edgert.runtime.kernels.cpu import fgemm, registry
from edgert.runtime.kernels.cpu.conv import ConvPath
from edgert.runtime.registry import OpContext, TensorInfo

RNG = np.random.default_rng(21)


def _run(x, w, b, attrs, path=None):
    cls = registry().lookup("Conv", "edgert", 21)
    kernel = cls(OpContext("Conv", "implicit_conv", dict(attrs), "edgert", 21, 1, path=path))
    infos = [TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w)]
    ins = [x, w]
    if b is not None:
        infos.append(TensorInfo(b.shape, b.dtype, b))
        ins.append(b)
    (info,) = kernel.prepare(infos)
    y = np.full(info.shape, np.nan, np.float32)
    kernel.invoke(ins, [y])
    return kernel, y


def _activate(v, act, params):
    if act is None:
        return v
    if act == "Relu":
        return np.maximum(v, 0)
    if act == "Clip":
        return np.clip(v, params[0], params[1])
    if act == "LeakyRelu":
        return np.where(v < 0, v * np.float32(params[0]), v)
    raise AssertionError(act)


# (x shape, M, kernel, conv attributes, bias, activation, activation params)
CASES = {
    "3x3_relu_batch": ((2, 8, 16, 14), 24, (3, 3), {"pads": [1, 1, 1, 1]}, True, "Relu", []),
    "5x5_s2_clip": ((1, 5, 31, 30), 8, (5, 5),
                    {"strides": [2, 2], "pads": [2, 1, 1, 2]}, False, "Clip", [-0.5, 0.7]),
    "dilated_leaky": ((1, 6, 20, 28), 16, (3, 3),
                      {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, True, "LeakyRelu", [0.1]),
    "1d": ((2, 4, 60), 12, (7,), {"pads": [3, 3]}, True, None, []),
    "3d": ((1, 3, 4, 6, 26), 10, (2, 3, 3), {"pads": [0, 1, 1, 1, 1, 1]}, True, "Relu", []),
    "many_channels_few_positions": ((1, 32, 12, 14), 96, (3, 3), {"pads": [1, 1, 1, 1]}, True,
                                    None, []),
    "odd_channels_no_pad": ((1, 3, 17, 30), 7, (3, 3), {}, True, None, []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_implicit_conv_matches_onnxruntime(name):
    # 2-D layers with 16+ output channels default to dconv.py: forced here
    shape, m_out, k, attrs, with_bias, act, params = CASES[name]
    x = RNG.standard_normal(shape).astype(np.float32)
    w = (RNG.standard_normal((m_out, shape[1]) + k) * 0.3).astype(np.float32)
    b = RNG.standard_normal(m_out).astype(np.float32) if with_bias else None
    want = ort_node("Conv", [x, w] + ([b] if b is not None else []), attrs)[0]
    want = _activate(want, act, params)
    full = dict(attrs)
    if act is not None:
        full["activation"] = act
        if params:
            full["activation_params"] = params
    kernel, got = _run(x, w, b, full, path=ConvPath.IMPLICIT_GEMM)
    assert kernel.path is ConvPath.IMPLICIT_GEMM
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_nan_propagates_and_plan_checks():
    x = RNG.standard_normal((1, 4, 10, 16)).astype(np.float32)
    x[0, 2, 5, 7] = np.nan
    w = RNG.standard_normal((8, 4, 3, 3)).astype(np.float32)
    kernel, got = _run(x, w, None, {"pads": [1, 1, 1, 1], "activation": "Relu"})
    assert kernel.path is ConvPath.IMPLICIT_GEMM
    assert np.isnan(got[0, :, 4:7, 6:9]).all() and not np.isnan(got[0, :, 0, 0]).any()
    # a buffer that does not fit the plan is refused before any tile runs
    plan = kernel.plan.fplan
    y = np.empty((8, 160), np.float32)
    with pytest.raises(ValueError):
        fgemm.fconv_tiles(kernel.w_run, plan.buf[:-1], plan.offs, plan.cp_n, plan.cstride,
                          plan.tile_b, plan.tile_y, plan.tile_cols, 8, np.zeros(0, np.float32),
                          0, np.float32(0), np.float32(0), y, 1)
    with pytest.raises(ValueError):
        fgemm.fconv(kernel.w_run, plan, 8, np.zeros(0, np.float32), 0, np.float32(0),
                    np.float32(0), np.empty((8, 100), np.float32))


def test_shared_scratch_mode_in_an_interpreter(monkeypatch):
    """Plans over SHARE_BYTES pack into the interpreter's shared scratch, zeroed per use: two
    implicit convs of different geometry in a row (the second sees the first one's data in the
    scratch unless the padding is zeroed again) match onnxruntime, in fp32 and int8."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgert.converter import convert
    from edgert.quantization import quantize
    from edgert.runtime import Interpreter
    from edgert.runtime.kernels.cpu import qgemm

    monkeypatch.setattr(qgemm, "SHARE_BYTES", 0)  # every plan buffer shared
    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array((rng.normal(size=s) * 0.2).astype(np.float32), n)
             for n, s in (("w1", (16, 6, 3, 3)), ("w2", (8, 16, 5, 5)))]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[2, 2, 2, 2], strides=[2, 2])],
        "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 20, 60])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 10, 30])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    x = rng.normal(size=(1, 6, 20, 60)).astype(np.float32)
    want = ort.InferenceSession(model).run(None, {"x": x})[0]
    interp = Interpreter(convert(model))
    steps = [st.kernel for st in interp._steps]
    assert any(getattr(k, "path", None) is ConvPath.IMPLICIT_GEMM for k in steps)
    for _ in range(2):  # the second run reuses the dirty scratch
        np.testing.assert_allclose(interp.run({"x": x})["y"], want, rtol=RTOL, atol=ATOL)
    cal = [{"x": rng.normal(size=(1, 6, 20, 60)).astype(np.float32)} for _ in range(4)]
    data, _ = quantize(model, calibration=cal)
    got = [Interpreter(data).run({"x": x})["y"] for _ in range(1)]
    monkeypatch.setattr(qgemm, "SHARE_BYTES", 1 << 40)  # every plan buffer owned
    own = Interpreter(data)
    np.testing.assert_array_equal(got[0], own.run({"x": x})["y"])
    np.testing.assert_array_equal(got[0], own.run({"x": x})["y"])
