"""The Interpreter end to end on small hand-made ONNX graphs, against onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ATOL, RTOL
from onnx import TensorProto, helper, numpy_helper

from edgert.converter import convert
from edgert.errors import DTypeError, InputError, ShapeError, UnsupportedOpError
from edgert.runtime import Interpreter


def _ort(model: onnx.ModelProto, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _mlp():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        [w1, b1, w2],
    )


def test_mlp_matches_onnxruntime_at_several_batch_sizes():
    model = _mlp()
    interp = Interpreter(convert(model))
    rng = np.random.default_rng(1)
    for batch in (1, 7, 3, 7):
        x = rng.standard_normal((batch, 6)).astype(np.float32)
        got = interp.run({"x": x})["probs"]
        (want,) = _ort(model, {"x": x})
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_run_without_copies_returns_read_only_views():
    model = _mlp()
    interp = Interpreter(convert(model))
    rng = np.random.default_rng(3)
    x1, x2 = (rng.standard_normal((4, 6)).astype(np.float32) for _ in range(2))
    for first_shape in (True, False):  # a re-planning call and a fast-path call
        if first_shape:
            interp.run({"x": rng.standard_normal((2, 6)).astype(np.float32)})
        view = interp.run({"x": x1}, copy=False)["probs"]
        np.testing.assert_allclose(view, _ort(model, {"x": x1})[0], rtol=RTOL, atol=ATOL)
        assert not view.flags.writeable
        kept = interp.run({"x": x1})["probs"]  # copies survive the next run
        interp.run({"x": x2})
        np.testing.assert_allclose(kept, _ort(model, {"x": x1})[0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(view, _ort(model, {"x": x2})[0], rtol=RTOL, atol=ATOL)


def test_tflite_style_api():
    interp = Interpreter(convert(_mlp()))
    (inp,) = interp.get_input_details()
    assert inp["name"] == "x" and inp["dtype"] is np.float32
    assert list(inp["shape_signature"]) == [-1, 6] and inp["dim_names"][0] == "batch"
    interp.resize_tensor_input(inp["index"], [5, 6])
    interp.allocate_tensors()
    x = np.random.default_rng(2).standard_normal((5, 6)).astype(np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    (out,) = interp.get_output_details()
    assert list(out["shape"]) == [5, 3]
    got = interp.get_tensor(out["index"])
    (want,) = _ort(_mlp(), {"x": x})
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # get_tensor returns a copy: the arena is reused by the next invoke.
    got[:] = 0
    np.testing.assert_allclose(interp.get_tensor(out["index"]), want, rtol=RTOL, atol=ATOL)


def test_dynamic_shape_arithmetic_is_folded():
    # Flatten written the way dynamic-batch exporters write it: Shape->Gather->Concat->Reshape.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero_1d"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 24])],
        inits,
    )
    interp = Interpreter(convert(model))
    rng = np.random.default_rng(3)
    for n in (2, 5):
        x = rng.standard_normal((n, 2, 3, 4)).astype(np.float32)
        np.testing.assert_array_equal(interp.run({"x": x})["y"], _ort(model, {"x": x})[0])
        assert interp.stats.folded_ops >= 4  # only Reshape and Relu remain to run
        assert interp.stats.dynamic_ops == 0


def test_data_dependent_shapes_run_dynamically():
    # NonZero's output shape depends on the data; everything after it is prepared at run time.
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
        helper.make_node("Cast", ["idx"], ["y"], to=TensorProto.FLOAT),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
    )
    interp = Interpreter(convert(model))
    for seed in (0, 1):
        x = (np.random.default_rng(seed).random((3, 4)) > 0.5).astype(np.float32)
        np.testing.assert_array_equal(interp.run({"x": x})["y"], _ort(model, {"x": x})[0])


def test_bad_inputs_give_clear_errors():
    interp = Interpreter(convert(_mlp()))
    x = np.zeros((2, 6), np.float32)
    with pytest.raises(InputError, match=r"unknown input name\(s\) \['y'\].*inputs are \['x'\]"):
        interp.run({"y": x})
    with pytest.raises(InputError, match=r"missing input\(s\) \['x'\]"):
        interp.run({})
    with pytest.raises(DTypeError, match="input 'x': expected dtype float32, got float64"):
        interp.run({"x": x.astype(np.float64)})
    with pytest.raises(ShapeError,
                       match=r"input 'x': got shape \(2, 5\), the model expects \('batch', 6\)"):
        interp.run({"x": np.zeros((2, 5), np.float32)})
    with pytest.raises(ShapeError, match="got shape"):
        interp.run({"x": np.zeros((2, 6, 1), np.float32)})
    with pytest.raises(InputError, match="no input named 'nope'"):
        interp.set_tensor("nope", x)


def test_dynamic_input_needs_a_shape_before_allocate():
    interp = Interpreter(convert(_mlp()))
    with pytest.raises(InputError, match="dynamic dimensions.*resize_tensor_input"):
        interp.allocate_tensors()


def test_unsupported_ops_are_reported_together():
    # A made-up operator in a custom domain: nothing will ever implement it.
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Frobnicate", ["a"], ["b"], name="frob_1", domain="com.example"),
        helper.make_node("Frobnicate", ["a"], ["c"], name="frob_2", domain="com.example"),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    with pytest.raises(UnsupportedOpError) as info:
        convert(model)
    msg = str(info.value)
    assert "frob_1" in msg and "frob_2" in msg and "Frobnicate" in msg
    assert len(info.value.ops) == 2


def test_bad_num_threads_and_device():
    data = convert(_mlp())
    with pytest.raises(Exception, match="num_threads"):
        Interpreter(data, num_threads=0)
    with pytest.raises(Exception, match="unknown device"):
        Interpreter(data, device="tpu")
    from edgert.runtime.cuda_interpreter import cuda_available

    if not cuda_available():  # without numba-cuda and a GPU (or the simulator): a clear error
        with pytest.raises(Exception, match="device='cuda'"):
            Interpreter(data, device="cuda")


def test_bfloat16_arithmetic_is_refused_not_computed_on_raw_bits():
    # bfloat16 is held as raw uint16 bits; an Add on them would be silently wrong.
    model = _model(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add_bf16")],
        [helper.make_tensor_value_info("a", TensorProto.BFLOAT16, [2]),
         helper.make_tensor_value_info("b", TensorProto.BFLOAT16, [2])],
        [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [2])],
    )
    with pytest.raises(UnsupportedOpError,
                       match="add_bf16.*bfloat16 tensors are only moved or cast"):
        convert(model)


def test_bad_model_paths_are_edgert_errors(tmp_path):
    """A missing file, a folder and a FIFO (open() on it would block forever) give a
    ModelFormatError naming the path, before anything is opened."""
    import os

    from edgert.errors import ModelFormatError

    fifo = tmp_path / "pipe.edgert"
    os.mkfifo(fifo)
    for path, message in ((tmp_path / "missing.edgert", "no such file"),
                          (tmp_path, "is a folder"), (fifo, "not a regular file")):
        with pytest.raises(ModelFormatError, match=message):
            Interpreter(str(path))
    with pytest.raises(ModelFormatError, match="path, bytes"):
        Interpreter(12)


def test_one_interpreter_used_from_two_threads_gives_each_run_its_own_results():
    """Runs from several threads take turns: with different batch sizes (a re-plan between
    runs) every result is the one its own feed asks for (it used to corrupt the heap)."""
    import threading

    from edgert.converter import convert

    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { s = Mul(x, x)  y = Add(s, x) }""")
    interp = Interpreter(convert(model), num_threads=1)
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            x = rng.standard_normal((int(rng.integers(1, 6)), 4)).astype(np.float32)
            y = interp.run({"x": x})["y"]
            if y.shape != x.shape or not np.allclose(y, x * x + x, rtol=1e-6, atol=1e-6):
                errors.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
