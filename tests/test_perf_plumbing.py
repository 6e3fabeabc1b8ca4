"""The machinery behind edgert's speed, tested for correctness (no timing assertions).

Covers the invoke/run fast paths, thread settings, the threaded GEMM split, the batched and
per-image im2col paths, the shared scratch buffer, zero-copy weights, serial kernel twins, and
the ``bench --profile`` / ``warmup`` commands. Every numeric check compares with onnxruntime or
NumPy.
"""

from __future__ import annotations

import json
import pathlib

import numba
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ATOL, RTOL
from onnx import TensorProto, helper, numpy_helper

from edgert.cli import main
from edgert.converter import convert
from edgert.errors import DTypeError, InputError
from edgert.runtime import Interpreter, KernelOptions
from edgert.runtime.kernels.cpu import blas
from edgert.runtime.kernels.cpu.conv import ConvKernel, ConvPath, ConvTuning

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models" / "digits_cnn.onnx"


def _ort(model: onnx.ModelProto | str, feeds: dict) -> list[np.ndarray]:
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _two_conv_model(batch: str | int = "N", group: int = 1) -> onnx.ModelProto:
    """Conv 3x3 (pad 1) -> Relu -> Conv 3x3 stride 2 (group) -> Softmax over channels."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    w2 = rng.standard_normal((6, 8 // group, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], group=group),
        helper.make_node("Softmax", ["c2"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "two_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _mlp_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((10, 32)).astype(np.float32) * 0.2
    b2 = rng.standard_normal(10).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# ----- invoke / run ------------------------------------------------------------------------------
def test_repeated_invoke_keeps_inputs():
    """invoke() again on the same inputs gives the same answer: intermediates never reuse the
    inputs' memory (this once returned garbage from the second call on)."""
    interp = Interpreter(convert(str(DIGITS)), num_threads=1)
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    interp.resize_tensor_input("input", x.shape)
    interp.allocate_tensors()
    interp.set_tensor("input", x)
    want = _ort(str(DIGITS), {"input": x})[0]
    out = interp.get_output_details()[0]["index"]
    for _ in range(3):
        interp.invoke()
        np.testing.assert_allclose(interp.get_tensor(out), want, rtol=RTOL, atol=ATOL)


def test_run_fast_path_and_replanning():
    model = _mlp_model()
    interp = Interpreter(convert(model), num_threads=1)
    rng = np.random.default_rng(2)
    for batch in (1, 1, 4, 4, 1):  # same shape twice takes the fast path; a new one re-plans
        x = rng.standard_normal((batch, 16)).astype(np.float32)
        got = interp.run({"x": x})["y"]
        np.testing.assert_allclose(got, _ort(model, {"x": x})[0], rtol=RTOL, atol=ATOL)


def test_run_outputs_are_copies():
    interp = Interpreter(convert(_mlp_model()), num_threads=1)
    x = np.ones((1, 16), np.float32)
    first = interp.run({"x": x})["y"]
    keep = first.copy()
    interp.run({"x": -x})
    np.testing.assert_array_equal(first, keep)


def test_run_fast_path_still_checks_feeds():
    interp = Interpreter(convert(_mlp_model()), num_threads=1)
    x = np.ones((2, 16), np.float32)
    interp.run({"x": x})
    with pytest.raises(DTypeError, match="x"):
        interp.run({"x": x.astype(np.float64)})
    with pytest.raises(InputError, match="unknown input"):
        interp.run({"x": x, "extra": x})
    with pytest.raises(InputError, match="missing input"):
        interp.run({})
    # A non-contiguous feed of the planned shape is accepted and copied in.
    xt = np.ones((16, 2), np.float32).T
    np.testing.assert_allclose(interp.run({"x": xt})["y"], interp.run({"x": x})["y"])


# ----- threads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
def test_num_threads_is_applied(threads):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("fewer Numba threads available")
    interp = Interpreter(convert(_mlp_model()), num_threads=threads)
    interp.run({"x": np.ones((1, 16), np.float32)})
    assert numba.get_num_threads() == threads
    assert all(s.kernel.op.num_threads == threads for s in interp._steps)


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [((64, 96), (96, 700)), ((3, 40, 50), (50, 1200)), ((2, 30, 60), (2, 60, 1300)),
     ((96,), (96, 2500)), ((1, 512), (512, 4100))],
)
def test_threaded_matmul_matches_numpy(a_shape, b_shape, monkeypatch):
    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 1)  # split even these small products
    rng = np.random.default_rng(3)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    want = np.matmul(a, b)
    for n in (2, 3):
        out = np.full(want.shape, np.nan, np.float32)
        blas.matmul(a, b, out=out, threads=n)
        np.testing.assert_allclose(out, want, rtol=RTOL, atol=1e-4)


def test_threaded_model_matches_onnxruntime(monkeypatch):
    monkeypatch.setattr(blas, "SPLIT_MIN_MACS", 1)
    model = _two_conv_model()
    x = np.random.default_rng(4).standard_normal((2, 4, 9, 9)).astype(np.float32)
    interp = Interpreter(convert(model), num_threads=2, kernel_options={
        "Conv": KernelOptions(tuning=ConvTuning(split_min_macs=1))})
    np.testing.assert_allclose(interp.run({"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=RTOL, atol=ATOL)


# ----- conv paths, scratch, weights ---------------------------------------------------------------
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("batched", [True, False])
def test_im2col_batched_and_per_image(group, batched):
    tuning = ConvTuning() if batched else ConvTuning(col_batch_bytes=0)
    model = _two_conv_model(group=group)
    x = np.random.default_rng(5).standard_normal((3, 4, 9, 9)).astype(np.float32)
    interp = Interpreter(convert(model), num_threads=1, kernel_options={
        "Conv": KernelOptions(path=ConvPath.IM2COL_GEMM, tuning=tuning)})
    np.testing.assert_allclose(interp.run({"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=RTOL, atol=ATOL)
    convs = [s.kernel for s in interp._steps if isinstance(s.kernel, ConvKernel)]
    assert [k.plan.col_batch for k in convs] == [batched, batched]


@pytest.mark.parametrize("block_bytes", [1000, 3000])
def test_im2col_row_blocks(block_bytes):
    """Large single-image convs build the column matrix in blocks of output rows."""
    model = _two_conv_model(batch=1)
    x = np.random.default_rng(8).standard_normal((1, 4, 9, 9)).astype(np.float32)
    interp = Interpreter(convert(model), num_threads=1, kernel_options={
        "Conv": KernelOptions(path=ConvPath.IM2COL_GEMM,
                              tuning=ConvTuning(col_block_bytes=block_bytes))})
    first = next(s.kernel for s in interp._steps if isinstance(s.kernel, ConvKernel))
    assert 0 < first.plan.block_rows < 9
    np.testing.assert_allclose(interp.run({"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("pads,mult,k,act", [([1, 1, 1, 1], 1, 3, "Relu"),
                                             ([0, 1, 2, 0], 2, 3, None),
                                             ([2, 2, 2, 2], 1, 5, "Relu"),
                                             ([0, 0, 0, 0], 2, 3, None)])
def test_depthwise_stride1_plane_kernel(pads, mult, k, act):
    """The padded-plane depthwise kernel (stride 1) against onnxruntime."""
    rng = np.random.default_rng(9)
    c, hw = 6, 7
    w = rng.standard_normal((c * mult, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=pads, group=c)]
    nodes.append(helper.make_node(act or "Identity", ["c"], ["y"]))
    graph = helper.make_graph(
        nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    interp = Interpreter(convert(model), num_threads=1, kernel_options={
        "Conv": KernelOptions(path=ConvPath.DEPTHWISE_PADDED)})
    assert interp._steps[0].kernel.path is ConvPath.DEPTHWISE_PADDED
    np.testing.assert_allclose(interp.run({"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=RTOL, atol=ATOL)


def test_convs_share_one_scratch_buffer():
    model = _two_conv_model(batch=1)
    interp = Interpreter(convert(model), num_threads=1,
                         kernel_options={"Conv": KernelOptions(path=ConvPath.IM2COL_GEMM)})
    convs = [s.kernel for s in interp._steps if isinstance(s.kernel, ConvKernel)]
    assert len(convs) == 2 and all(k.scratch is not None for k in convs)
    assert convs[0].scratch.ctypes.data == convs[1].scratch.ctypes.data
    x = np.random.default_rng(6).standard_normal((1, 4, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(interp.run({"x": x})["y"], _ort(model, {"x": x})[0],
                               rtol=RTOL, atol=ATOL)


def test_gemm_path_weights_are_not_copied(tmp_path):
    """Conv (GEMM paths) and Gemm keep views of the file's weights: no second copy in memory."""
    path_ = tmp_path / "m.edgert"
    convert(_two_conv_model(batch=1), str(path_))
    for path in (ConvPath.IM2COL_GEMM, ConvPath.IM2COL_BLAS_ROWS):
        interp = Interpreter(str(path_), num_threads=1,
                             kernel_options={"Conv": KernelOptions(path=path)})
        weights = [t.data for t in interp._graph.tensors if t.data is not None
                   and t.data.ndim == 4]
        convs = [s.kernel for s in interp._steps if isinstance(s.kernel, ConvKernel)]
        assert convs and all(k.path is path for k in convs)
        for k in convs:
            assert any(np.shares_memory(k.w_run, w) for w in weights)


def test_serial_twin_matches_parallel_kernel():
    from edgert.runtime._jit import serial_twin
    from edgert.runtime.kernels.cpu.epilogue import apply_bias_activation

    twin = serial_twin(apply_bias_activation)
    assert twin.py_func.__qualname__ != apply_bias_activation.py_func.__qualname__
    rng = np.random.default_rng(7)
    y = rng.standard_normal((6, 50)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    a, b = y.copy(), y.copy()
    apply_bias_activation(a, bias, 1, np.float32(0), np.float32(0))  # ACT_RELU
    twin(b, bias, 1, np.float32(0), np.float32(0))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, np.maximum(y + bias[:, None], 0), rtol=RTOL, atol=ATOL)


# ----- CLI ----------------------------------------------------------------------------------------
def test_bench_profile_json(capsys):
    assert main(["bench", str(DIGITS), "--shape", "input=2x1x8x8", "--threads", "1", "--runs",
                 "3", "--warmup", "0", "--profile", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    prof = result["profile"]
    assert prof and {"op_type", "name", "total_ms", "mean_ms", "calls"} <= set(prof[0])
    assert "Conv" in {r["op_type"] for r in prof}
    totals = [r["total_ms"] for r in prof]
    assert totals == sorted(totals, reverse=True)


def test_bench_profile_text(capsys):
    assert main(["bench", str(DIGITS), "--shape", "input=1x1x8x8", "--threads", "1", "--runs",
                 "2", "--warmup", "0", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "per-op profile" in out and "share" in out and "by op type" in out


def test_warmup_command(capsys, tmp_path):
    assert main(["warmup", str(DIGITS), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "warmed" in out and "Numba cache" in out
    assert main(["warmup", str(tmp_path / "missing.onnx")]) == 1


def test_default_threads_are_the_physical_cores():
    from edgert.runtime.kernels.cpu._native import threads

    smt = "\n".join(f"processor : {i}\nphysical id : 0\ncore id : {i % 4}\n" for i in range(8))
    two_sockets = "\n".join(f"processor : {i}\nphysical id : {i // 2}\ncore id : {i % 2}\n"
                            for i in range(4))
    import os

    allowed = os.sched_getaffinity(0)
    assert threads.physical_cores(smt) == len({i % 4 for i in range(8) if i in allowed})
    assert threads.physical_cores(two_sockets) == len(
        {(i // 2, i % 2) for i in range(4) if i in allowed})
    assert threads.physical_cores("no cpu lines here") is None
    assert 1 <= threads.resolve(None) <= threads.pool_size()
    assert threads.resolve(1) == 1


def test_workers_spin_only_on_a_machine_that_is_not_already_busy():
    from edgert.runtime import _jit

    assert _jit.default_spincount(0.3, 2) == _jit.SPIN_POLLS
    assert _jit.default_spincount(1.9, 2) == _jit.SPIN_POLLS
    assert _jit.default_spincount(2.0, 2) == 0
    assert _jit.default_spincount(5.5, 4) == 0
    assert _jit.default_spincount(None, 2) == _jit.SPIN_POLLS  # unknown load: the short spin


def test_the_spin_setting_follows_the_load_at_import(tmp_path):
    # a child process decides from its own load average; a user's setting is never overridden
    import os
    import subprocess
    import sys

    code = ("import os, edgert.runtime._jit as j; "
            "print(os.environ['GOMP_SPINCOUNT'], j.default_spincount(*j._load_and_cpus()))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == out[1]  # (the 1-minute load average does not move between the two)
    env["GOMP_SPINCOUNT"] = "123"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "123"
