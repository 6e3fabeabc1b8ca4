"""Plans kept by input shapes: going back to shapes seen before re-plans nothing, and every
result equals a fresh interpreter's on the same input (kernels keep their prepared state in
their attributes; a plan set aside must come back exactly as it was)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_zoo import MODELS_DIR, torch_model
from onnx import TensorProto, helper

from edgert.converter import convert
from edgert.errors import EdgeRTError, ShapeError
from edgert.quantization import quantize
from edgert.runtime import Interpreter
from edgert.runtime import interpreter as interp_mod


def _dynamic(model: onnx.ModelProto, dims: dict[int, str]) -> onnx.ModelProto:
    """The model with the first input's dims ``dims`` (position -> name) made symbolic."""
    shape = model.graph.input[0].type.tensor_type.shape.dim
    for k, name in dims.items():
        shape[k].dim_param = name
    del model.graph.value_info[:]
    return model


def _check_alternating(data: bytes, feeds_list: list[dict[str, np.ndarray]], order: list[int]):
    """Run ``feeds_list[k]`` for k in ``order`` on one interpreter; every result must equal a
    fresh interpreter's (no plan cache), and second visits must reuse their plan."""
    expected = []
    for feeds in feeds_list:
        fresh = Interpreter(data, num_threads=1, plan_cache_size=0)
        expected.append(fresh.run(feeds))
    interp = Interpreter(data, num_threads=1)
    seen = set()
    for k in order:
        got = interp.run(feeds_list[k])
        assert interp.stats.reused == (k in seen), (k, order)
        seen.add(k)
        for name, want in expected[k].items():
            np.testing.assert_array_equal(got[name], want, err_msg=f"{name} at feeds {k}")
    return interp


ORDER = [0, 1, 0, 2, 1, 2, 0]


def test_cnn_batch_and_spatial_sizes():
    # depthwise / pointwise / direct conv paths are chosen by the spatial size and batch
    path, _ = torch_model("torch_mobilenet")
    model = _dynamic(onnx.load(str(path)), {2: "h", 3: "w"})
    data = convert(model)
    rng = np.random.default_rng(0)
    shapes = [(1, 3, 32, 32), (3, 3, 48, 40), (2, 3, 16, 24)]
    feeds = [{"input": rng.standard_normal(s, dtype=np.float32)} for s in shapes]
    _check_alternating(data, feeds, ORDER)


def test_decoder_with_shape_arithmetic_and_resize():
    path, _ = torch_model("torch_decoder")
    data = convert(str(path))
    rng = np.random.default_rng(1)
    feeds = [{"input": rng.standard_normal((b, 4, 8, 8), dtype=np.float32)} for b in (1, 4, 2)]
    _check_alternating(data, feeds, ORDER)


def test_transformer_sequence_lengths():
    path, _ = torch_model("torch_transformer")
    data = convert(str(path))
    interp = Interpreter(data)
    vocab_in = interp.get_input_details()[0]
    rng = np.random.default_rng(2)
    dt = vocab_in["dtype"]
    feeds = [{"ids": rng.integers(0, 10, size=s).astype(dt)} for s in ((1, 7), (2, 12), (1, 3))]
    _check_alternating(data, feeds, ORDER)


def test_int8_model_batches():
    rng = np.random.default_rng(3)
    calib = {"input": rng.random((32, 1, 8, 8), dtype=np.float32) * 16}
    data, _ = quantize(str(MODELS_DIR / "digits_edgert_mobilenet.onnx"), calibration=[calib])
    feeds = [{"input": rng.random((b, 1, 8, 8), dtype=np.float32) * 16} for b in (1, 5, 2)]
    _check_alternating(data, feeds, ORDER)


def _concat_if_loop_model() -> onnx.ModelProto:
    """Two conv branches concatenated (the planner writes them in place), an If on the input's
    mean and a Loop whose trip count is the input's height."""
    f = TensorProto.FLOAT
    rng = np.random.default_rng(4)
    w1 = helper.make_tensor("w1", f, [4, 2, 3, 3], rng.standard_normal(72).astype(np.float32))
    w2 = helper.make_tensor("w2", f, [3, 2, 1, 1], rng.standard_normal(6).astype(np.float32))
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["cat"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", f, None)])
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["cat"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", f, None)])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["acc_in", "half"], ["scaled"]),
         helper.make_node("Add", ["scaled", "branch"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", f, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", f, None)])
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["pos"]),
        helper.make_node("If", ["pos"], ["branch"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "two"], ["trips"], axis=0),
        helper.make_node("Loop", ["trips", "true", "branch"], ["acc"], body=body),
    ]
    inits = [w1, w2, helper.make_tensor("zero", f, [], [0.0]),
             helper.make_tensor("half", f, [], [0.5]),
             helper.make_tensor("two", TensorProto.INT64, [], [2]),
             helper.make_tensor("true", TensorProto.BOOL, [], [True])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", f, ["n", 2, "h", "w"])],
        [helper.make_tensor_value_info("acc", f, None),
         helper.make_tensor_value_info("cat", f, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_concat_in_place_if_and_loop():
    data = convert(_concat_if_loop_model())
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((1, 2, 5, 6), dtype=np.float32) + 0.5},
             {"x": rng.standard_normal((2, 2, 3, 9), dtype=np.float32) - 0.5},
             {"x": rng.standard_normal((1, 2, 7, 4), dtype=np.float32) + 0.5}]
    _check_alternating(data, feeds, ORDER)


def test_tflite_api_resize_back_reuses_the_plan():
    data = convert(str(MODELS_DIR / "digits_cnn.onnx"))
    interp = Interpreter(data, num_threads=1)
    idx = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    rng = np.random.default_rng(6)
    x1 = rng.random((1, 1, 8, 8), dtype=np.float32)
    x4 = rng.random((4, 1, 8, 8), dtype=np.float32)
    results = {}
    for x in (x1, x4, x1, x4):
        interp.resize_tensor_input(idx, x.shape)
        interp.allocate_tensors()
        interp.set_tensor(idx, x)
        interp.invoke()
        results.setdefault(x.shape[0], []).append(interp.get_tensor(out))
    assert interp.stats.reused
    for runs in results.values():
        np.testing.assert_array_equal(runs[0], runs[1])
    name = interp.get_output_details()[0]["name"]
    fresh = Interpreter(data, num_threads=1, plan_cache_size=0).run({"input": x4})[name]
    np.testing.assert_array_equal(results[4][1], fresh)


def test_least_recently_used_plans_go_first(monkeypatch):
    data = convert(str(MODELS_DIR / "digits_cnn.onnx"))
    interp = Interpreter(data, num_threads=1, plan_cache_size=2)
    x = np.zeros((8, 1, 8, 8), np.float32)
    for b in (1, 2, 3):  # plans for 1 and 2 set aside; 3 current
        interp.run({"input": x[:b]})
    assert len(interp._plan_cache) == 2
    interp.run({"input": x[:4]})  # sets 3 aside: 1 (least recently used) is dropped
    interp.run({"input": x[:1]})  # sets 4 aside, drops 2
    assert not interp.stats.reused
    interp.run({"input": x[:4]})
    assert interp.stats.reused
    interp.run({"input": x[:2]})
    assert not interp.stats.reused
    # the plans not in use hold at most PLAN_CACHE_BYTES of arenas
    monkeypatch.setattr(interp._plan_cache, "max_bytes", 0)
    interp.run({"input": x[:3]})
    assert len(interp._plan_cache) == 0


def test_no_plan_cache_re_plans_every_change():
    data = convert(str(MODELS_DIR / "digits_cnn.onnx"))
    interp = Interpreter(data, num_threads=1, plan_cache_size=0)
    x = np.zeros((2, 1, 8, 8), np.float32)
    for b in (1, 2, 1):
        interp.run({"input": x[:b]})
        assert not interp.stats.reused
    assert len(interp._plan_cache) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_plan_cache_size_is_checked(bad):
    data = convert(str(MODELS_DIR / "digits_cnn.onnx"))
    with pytest.raises(EdgeRTError, match="plan_cache_size"):
        Interpreter(data, plan_cache_size=bad)


def test_a_failed_plan_leaves_the_cached_ones_usable():
    # Reshape to a constant (2, -1) fails for an odd batch: the plans before stay usable
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["r"]),
         helper.make_node("Relu", ["r"], ["y"])], "g",
        [helper.make_tensor_value_info("x", f, ["n", 3])],
        [helper.make_tensor_value_info("y", f, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [2, -1])])
    data = convert(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    interp = Interpreter(data, num_threads=1)
    x2 = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    x4 = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    interp.run({"x": x2})
    interp.run({"x": x4})
    with pytest.raises(ShapeError):
        interp.run({"x": np.ones((3, 5), np.float32)[:, :3].copy()[:1]})
    for x in (x2, x4):
        got = interp.run({"x": x})["y"]
        assert interp.stats.reused
        np.testing.assert_array_equal(got, np.maximum(x.reshape(2, -1), 0))


def test_reused_plan_costs_no_prepare():
    """A seen shape skips every kernel's prepare (counted, not timed)."""
    path, _ = torch_model("torch_mobilenet")
    data = convert(str(path))
    interp = Interpreter(data, num_threads=1)
    x = np.zeros((3, 3, 32, 32), np.float32)
    interp.run({"input": x[:1]})
    interp.run({"input": x})
    calls = []
    original = interp_mod.Interpreter._prepare_kernel

    def counting(self, kernel, ins, outputs):
        calls.append(kernel)
        return original(self, kernel, ins, outputs)

    interp._prepare_kernel = counting.__get__(interp)
    interp.run({"input": x[:1]})
    interp.run({"input": x})
    assert calls == []
