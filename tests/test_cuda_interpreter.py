"""The CUDA executor end to end: whole models against the CPU interpreter and onnxruntime.

Simulator on machines without a GPU (tiny shapes), the GPU where there is one.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_helpers import require_cuda_or_skip
from onnx import TensorProto, helper, numpy_helper

from edgert.converter import convert
from edgert.errors import DTypeError, EdgeRTError, InputError, ShapeError
from edgert.runtime import Interpreter

require_cuda_or_skip()

RTOL, ATOL = 1e-4, 1e-5
RNG = np.random.default_rng(7)


def _f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _small_cnn(with_lrn: bool = False, batch="N"):
    """Conv-BN-Relu-MaxPool, two branches concatenated, GlobalAveragePool, Gemm, Softmax."""
    inits = {
        "w1": _f(4, 3, 3, 3) * 0.5, "b1": _f(4),
        "g": RNG.uniform(0.5, 1.5, 4).astype(np.float32), "beta": _f(4), "mean": _f(4),
        "var": RNG.uniform(0.5, 1.5, 4).astype(np.float32),
        "w2": _f(3, 4, 1, 1), "w3": _f(2, 1, 3, 3), "fc": _f(5, 5), "fcb": _f(5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"]),
        helper.make_node("Slice", ["p1", "s0", "s1", "s_ax"], ["p1s"]),
        helper.make_node("Conv", ["p1s", "w3"], ["c3"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c2", "c3"], ["cat"], axis=1),
    ]
    inits.update({"s0": np.array([1], np.int64), "s1": np.array([3], np.int64),
                  "s_ax": np.array([1], np.int64)})
    last = "cat"
    if with_lrn:
        nodes.append(helper.make_node("InstanceNormalization", ["cat", "in_s", "in_b"], ["lrn"]))
        inits.update({"in_s": _f(5), "in_b": _f(5)})
        last = "lrn"
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.fixture(scope="module")
def cnn():
    model = _small_cnn()
    return model, convert(model)


def test_small_cnn_matches_cpu_and_onnxruntime_entirely_on_device(cnn):
    model, data = cnn
    x = _f(2, 3, 6, 6)
    gpu = Interpreter(data, device="cuda")
    assert type(gpu).__name__ == "CudaInterpreter"
    got = gpu.run({"x": x})["y"]
    assert gpu.host_ops == []  # every op ran on the device
    np.testing.assert_allclose(got, Interpreter(data).run({"x": x})["y"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, _ort(model, {"x": x}), rtol=RTOL, atol=ATOL)


def test_resize_replans_and_keeps_weights_on_device(cnn):
    model, data = cnn
    gpu = Interpreter(data, device="cuda")
    x1 = _f(1, 3, 6, 6)
    np.testing.assert_allclose(gpu.run({"x": x1})["y"], _ort(model, {"x": x1}), rtol=RTOL,
                               atol=ATOL)
    conv = next(s.kernel for s in gpu._steps if s.kernel.op.op_type == "Conv")
    w_before = conv._d_w
    x3 = _f(3, 3, 6, 6)
    np.testing.assert_allclose(gpu.run({"x": x3})["y"], _ort(model, {"x": x3}), rtol=RTOL,
                               atol=ATOL)
    assert conv._d_w is w_before  # uploaded once, at load
    assert gpu.stats.arena_bytes > 0


def test_device_arrays_in_and_out(cnn):
    from numba import cuda

    model, data = cnn
    gpu = Interpreter(data, device="cuda")
    x = _f(2, 3, 6, 6)
    out = gpu.run({"x": cuda.to_device(x)})["y"]
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    np.testing.assert_allclose(out.copy_to_host(), _ort(model, {"x": x}), rtol=RTOL, atol=ATOL)
    host = gpu.run({"x": cuda.to_device(x)}, device_outputs=False)["y"]
    assert isinstance(host, np.ndarray)
    # The TFLite-style API with a device array.
    gpu.set_tensor("x", cuda.to_device(x))
    gpu.invoke()
    np.testing.assert_allclose(gpu.get_tensor("y"), host, rtol=0, atol=0)


def test_ops_without_cuda_kernel_run_on_host_and_are_reported():
    model = _small_cnn(with_lrn=True)
    data = convert(model)
    gpu = Interpreter(data, device="cuda")
    x = _f(1, 3, 6, 6)
    got = gpu.run({"x": x})["y"]
    assert [w.split()[0] for w in gpu.host_ops] == ["InstanceNormalization"]
    np.testing.assert_allclose(got, _ort(model, {"x": x}), rtol=RTOL, atol=ATOL)


def test_uint8_max_pool_runs_on_host_beside_device_ops():
    """A uint8 MaxPool (as QOperator models keep them) before float ops: the MaxPool runs the
    CPU kernel (reported in ``host_ops``, as the Cast from uint8 after it), the result equals
    onnxruntime's."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["p"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "u8maxpool", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = RNG.integers(0, 256, (1, 2, 7, 6)).astype(np.uint8)
    gpu = Interpreter(convert(model), device="cuda")
    got = gpu.run({"x": x})["y"]
    assert [w.split()[0] for w in gpu.host_ops][:1] == ["MaxPool"], gpu.host_ops
    np.testing.assert_allclose(got, _ort(model, {"x": x}), rtol=1e-6)


def test_bad_inputs_give_clear_errors(cnn):
    from numba import cuda

    _, data = cnn
    gpu = Interpreter(data, device="cuda")
    with pytest.raises(DTypeError, match="'x'"):
        gpu.run({"x": cuda.to_device(np.zeros((1, 3, 6, 6), np.float64))})
    with pytest.raises(ShapeError, match="'x'"):
        gpu.run({"x": np.zeros((1, 4, 6, 6), np.float32)})
    with pytest.raises(InputError, match="missing"):
        gpu.run({})


def test_no_cuda_gives_a_clear_error(monkeypatch, cnn):
    from edgert.runtime.kernels.cuda import _common

    monkeypatch.setattr(_common.cuda, "is_available", lambda: False)
    with pytest.raises(EdgeRTError, match="no usable CUDA GPU"):
        Interpreter(cnn[1], device="cuda")
    monkeypatch.setattr(_common, "cuda", None)
    with pytest.raises(EdgeRTError, match="pip install edgert\\[cuda\\]"):
        Interpreter(cnn[1], device="cuda")


def _exported(name: str):
    """A PyTorch export from tests/data with its saved batch-1 and batch-3 inputs."""
    import pathlib

    import onnx

    path = pathlib.Path(__file__).parent / "data" / f"{name}.onnx"
    saved = np.load(path.with_suffix(".npz"))
    feeds = {k[len("b1_in_"):]: saved[k] for k in saved.files if k.startswith("b1_in_")}
    calib = {k[len("b3_in_"):]: saved[k] for k in saved.files if k.startswith("b3_in_")}
    return onnx.load(str(path)), feeds, calib


@pytest.mark.parametrize("name", ["torch_transformer", "torch_decoder"])
def test_exported_int8_model_runs_entirely_on_device(name):
    """edgert.quantize's int8 model (Quantize, QGemm/QConv, QAdd, QMul, QConcat, QLut, QSoftmax,
    Dequantize, int8 Pad/Resize, Gather, LayerNormalization, ConvTranspose...) on the device
    gives the CPU interpreter's answer."""
    from edgert.quantization import quantize

    model, feeds, calib = _exported(name)
    data, _ = quantize(model, calibration=calib, mode="int8", batch_size=1)
    gpu = Interpreter(data, device="cuda")
    got = gpu.run(feeds)
    assert gpu.host_ops == []
    want = Interpreter(data).run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL)


def test_runtime_gather_index_out_of_range_raises():
    from edgert.errors import KernelError

    emb = _f(6, 3)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["g"]), helper.make_node("Relu", ["g"], ["y"])],
        "embed", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(emb, "emb")])
    data = convert(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    gpu = Interpreter(data, device="cuda")
    with pytest.raises(KernelError, match="Gather.*out of range"):
        gpu.run({"ids": np.array([1, 6], np.int64)})  # no row 6
    ids = np.array([-1, 2], np.int64)
    np.testing.assert_array_equal(gpu.run({"ids": ids})["y"], np.maximum(emb[[5, 2]], 0))
    assert gpu.host_ops == []
