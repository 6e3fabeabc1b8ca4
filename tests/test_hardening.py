"""Hardening: what a model file (or its feeds) must not be able to do to the process running it.

One test (or group) per defect: allocations and loops bounded by limits the host application
sets (``max_alloc_bytes``, ``max_loop_iterations``, ``timeout_s``), RegexFullMatch patterns that
would backtrack for hours, int8 kernels on an empty batch, negative dims on constants,
FusedElementwise programs that read uninitialized registers, and the mode of written files.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgert
from edgert import dtypes
from edgert.errors import (
    EdgeRTError,
    KernelError,
    ModelFormatError,
    ModelImportError,
    ResourceLimitError,
)
from edgert.format import ModelDef, OperatorDef, SubGraphDef, TensorDef, read_model, write_model
from edgert.format import _generated as fb
from edgert.runtime import Interpreter
from edgert.runtime import limits as run_limits
from edgert.runtime.kernels.cpu import regex
from edgert.runtime.ops import fusion as opc
from tests.helpers import run_kernel

GIB = 1 << 30


def _model(nodes, inputs, outputs, inits=(), opset=19) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return edgert.convert(m.SerializeToString(), None)


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


# ----- 1. resource limits: allocations ------------------------------------------------------------
F, I64 = TensorProto.FLOAT, TensorProto.INT64
X4 = np.ones((1, 1), np.float32)
# 4 GiB of float32 each: (32768, 32768) elements
BIG = [1 << 15, 1 << 15]


def _alloc_cases():
    """op -> (nodes, graph inputs, feeds, initializers) whose output is 4 GiB of float32."""
    x = _vi("x", F, [1, 1])
    return {
        "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["s"], ["y"])],
                            [_vi("s", I64, [2])], {"s": np.array(BIG, np.int64)}),
        "Expand": ([helper.make_node("Expand", ["x", "s"], ["y"])],
                   [x, _vi("s", I64, [2])], {"x": X4, "s": np.array(BIG, np.int64)}),
        "Tile": ([helper.make_node("Tile", ["x", "s"], ["y"])],
                 [x, _vi("s", I64, [2])], {"x": X4, "s": np.array(BIG, np.int64)}),
        "Range": ([helper.make_node("Range", ["a", "b", "d"], ["y"])],
                  [_vi("a", F, []), _vi("b", F, []), _vi("d", F, [])],
                  {"a": np.float32(0), "b": np.float32(2.0**30), "d": np.float32(1)}),
        "Resize": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")],
                   [x, _vi("sc", F, [2])], {"x": X4, "sc": np.array(BIG, np.float32)}),
    }


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range", "Resize"])
def test_max_alloc_bytes_refuses_a_4gib_output_sized_by_a_feed(op):
    nodes, inputs, feeds = _alloc_cases()[op]
    data = _model(nodes, inputs, [_vi("y", F, None)])
    interp = Interpreter(data, max_alloc_bytes=GIB)
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError) as err:
            interp.run({k: np.asarray(v) for k, v in feeds.items()})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.limit == "max_alloc_bytes" and err.value.value == GIB
    assert op in str(err.value) and "max_alloc_bytes=1073741824" in str(err.value)
    assert peak < 64 << 20, f"{peak} bytes were allocated before the refusal"


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range", "Resize"])
def test_max_alloc_bytes_refuses_a_4gib_output_sized_by_constants(op):
    # the same ops with the size parameters stored in the file: refused when the plan is made
    nodes, inputs, feeds = _alloc_cases()[op]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in feeds.items() if n != "x"]
    graph_inputs = [i for i in inputs if i.name == "x"] or [_vi("x", F, [1, 1])]
    nodes = nodes + [helper.make_node("Identity", ["x"], ["x_out"])]
    data = _model(nodes, graph_inputs, [_vi("y", F, None), _vi("x_out", F, [1, 1])], inits)
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match=op):
            Interpreter(data, max_alloc_bytes=GIB).run({"x": X4})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_max_alloc_bytes_arena_and_defaults():
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", F, ["n", 4])],
                  [_vi("y", F, ["n", 4])])
    interp = Interpreter(data, max_alloc_bytes=4096)
    assert interp.run({"x": np.ones((8, 4), np.float32)})["y"].shape == (8, 4)
    with pytest.raises(ResourceLimitError, match="max_alloc_bytes=4096"):
        interp.run({"x": np.ones((1000, 4), np.float32)})  # 16 KB tensors, 32 KB arena
    assert interp.run({"x": np.ones((2, 4), np.float32)})["y"].shape == (2, 4)  # still usable
    # defaults: half the physical memory, a million loop iterations, no timeout
    d = Interpreter(data).limits
    assert d.max_alloc_bytes == run_limits.default_max_alloc_bytes()
    if hasattr(os, "sysconf"):
        half = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        assert d.max_alloc_bytes == half
    assert d.max_loop_iterations == run_limits.DEFAULT_MAX_LOOP_ITERATIONS == 1_000_000
    assert d.timeout_s is None
    none = Interpreter(data, max_alloc_bytes=None, max_loop_iterations=None).limits
    assert none.max_alloc_bytes is None and none.max_loop_iterations is None
    for bad in (dict(max_alloc_bytes=-1), dict(max_loop_iterations=1.5),
                dict(timeout_s=0), dict(timeout_s=float("nan")), dict(max_alloc_bytes=True)):
        with pytest.raises(EdgeRTError):
            Interpreter(data, **bad)


# ----- 1. resource limits: loops and time ---------------------------------------------------------
def _loop_body() -> onnx.GraphProto:
    """v = v + 1, the condition passed on unchanged (true forever)."""
    return helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [_vi("i", I64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("v_in", F, [1])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("v_out", F, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])


def _loop_model(with_m: bool) -> bytes:
    """A Loop whose condition is always true (trip count M an input if with_m)."""
    cond = numpy_helper.from_array(np.array(True), "cond")
    loop = helper.make_node("Loop", ["M" if with_m else "", "cond", "v0"], ["v"],
                            body=_loop_body())
    inputs = ([_vi("M", I64, [])] if with_m else []) + [_vi("v0", F, [1])]
    return _model([loop], inputs, [_vi("v", F, [1])], [cond])


def test_loop_that_never_stops_hits_max_loop_iterations():
    interp = Interpreter(_loop_model(False), max_loop_iterations=1000)
    with pytest.raises(ResourceLimitError) as err:
        interp.run({"v0": np.zeros(1, np.float32)})
    assert err.value.limit == "max_loop_iterations" and "Loop" in str(err.value)
    assert "max_loop_iterations=1000" in str(err.value)
    # a trip count of INT64_MAX with a condition that stays true: the same
    interp = Interpreter(_loop_model(True), max_loop_iterations=1000)
    with pytest.raises(ResourceLimitError, match="max_loop_iterations"):
        interp.run({"M": np.array(2**63 - 1, np.int64), "v0": np.zeros(1, np.float32)})
    # up to the cap it runs
    out = interp.run({"M": np.array(1000, np.int64), "v0": np.zeros(1, np.float32)})
    assert out["v"][0] == 1000.0


def test_loop_inside_a_body_shares_the_limits():
    """An If whose branch holds the endless Loop: the nested interpreters get the limits."""
    endless = helper.make_node("Loop", ["", "cond", "v0"], ["v"], body=_loop_body())
    then = helper.make_graph([endless], "then", [], [_vi("v", F, [1])],
                             [numpy_helper.from_array(np.array(True), "cond")])
    other = helper.make_graph([helper.make_node("Identity", ["v0"], ["w"])], "else", [],
                              [_vi("w", F, [1])])
    data = _model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                  [_vi("c", TensorProto.BOOL, []), _vi("v0", F, [1])], [_vi("y", F, [1])])
    interp = Interpreter(data, max_loop_iterations=50)
    with pytest.raises(ResourceLimitError, match="max_loop_iterations=50"):
        interp.run({"c": np.array(True), "v0": np.zeros(1, np.float32)})
    t0 = time.monotonic()
    interp = Interpreter(data, max_loop_iterations=None, timeout_s=0.3)
    with pytest.raises(ResourceLimitError, match="timeout_s=0.3") as err:
        interp.run({"c": np.array(True), "v0": np.zeros(1, np.float32)})
    assert err.value.limit == "timeout_s"
    assert time.monotonic() - t0 < 10


def test_timeout_s_stops_an_endless_loop_and_the_next_run_works():
    interp = Interpreter(_loop_model(True), max_loop_iterations=None, timeout_s=0.25)
    t0 = time.monotonic()
    with pytest.raises(ResourceLimitError) as err:
        interp.run({"M": np.array(2**62, np.int64), "v0": np.zeros(1, np.float32)})
    elapsed = time.monotonic() - t0
    assert err.value.limit == "timeout_s" and "Loop" in str(err.value)
    assert 0.25 <= elapsed < 10
    # the deadline belongs to one run: the next (short) run is not charged for the last one
    out = interp.run({"M": np.array(3, np.int64), "v0": np.zeros(1, np.float32)})
    assert out["v"][0] == 3.0
    # invoke() has the same budget
    interp.set_tensor("M", np.array(2**62, np.int64))
    interp.set_tensor("v0", np.zeros(1, np.float32))
    with pytest.raises(ResourceLimitError, match="timeout_s"):
        interp.invoke()


def test_scan_longer_than_max_loop_iterations_is_refused():
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x_t"], ["s_out"])], "body",
                             [_vi("s_in", F, [1]), _vi("x_t", F, [1])],
                             [_vi("s_out", F, [1])])
    data = _model([helper.make_node("Scan", ["s0", "xs"], ["s"], body=body, num_scan_inputs=1)],
                  [_vi("s0", F, [1]), _vi("xs", F, ["t", 1])], [_vi("s", F, [1])])
    interp = Interpreter(data, max_loop_iterations=100)
    feeds = {"s0": np.zeros(1, np.float32), "xs": np.ones((100, 1), np.float32)}
    assert interp.run(feeds)["s"][0] == 100.0
    feeds["xs"] = np.ones((101, 1), np.float32)
    with pytest.raises(ResourceLimitError, match="Scan.*max_loop_iterations=100"):
        interp.run(feeds)


# ----- 2. RegexFullMatch --------------------------------------------------------------------------
def _regex_model(pattern: str) -> bytes:
    node = helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=pattern)
    return _model([node], [_vi("x", TensorProto.STRING, [None])],
                  [_vi("y", TensorProto.BOOL, [None])], opset=20)


NORMAL_PATTERNS = [
    (r"www\.[\w.-]+\.\bcom\b", ["www.google.com", "www.facebook.com", "www.bbc.co.uk", "www.com"]),
    (r"(\W|^)[\w.\-]{0,25}@(yahoo|gmail)\.com(\W|$)",
     ["account@gmail.com", "account@hotmail.com", "not email", "x@yahoo.com"]),
    (r"(\d+\.){3}\d+", ["10.0.0.1", "1.2.3", "255.255.255.255", "1..2.3"]),
    (r"[A-Z][a-z]*( [A-Z][a-z]*)*", ["Hello World", "hello World", "A B C", ""]),
    (r".*@gmail\.com", ["me@gmail.com", "me@gmail.co", "@gmail.com", "x"]),
    (r"(foo|bar)+", ["foobar", "foo", "fob", ""]),
    (r"", ["", "a"]),
]


def _reference(pattern: str, strings: list[str]) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=pattern)
    graph = helper.make_graph([node], "g", [_vi("x", TensorProto.STRING, [None])],
                              [_vi("y", TensorProto.BOOL, [None])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return ReferenceEvaluator(m).run(None, {"x": np.array(strings, dtype=object)})[0]


@pytest.fixture
def without_re2(monkeypatch):
    monkeypatch.setattr(regex, "_re2", False)


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a*)*", r"(a|a)*", r"(a|aa)+b", r"(\w+\s?)*$",
                                     r"(x+x+)+y", r"a?a?a?a?aaaa", r".*a.*b.*c.*", r"(a)\1",
                                     r"(?=a)a"])
def test_regex_without_re2_refuses_catastrophic_patterns(without_re2, pattern):
    t0 = time.monotonic()
    with pytest.raises(KernelError, match=r"RegexFullMatch.*refused.*edgert\[re2\]"):
        Interpreter(_regex_model(pattern)).run({"x": np.array(["a" * 41 + "!"], dtype=object)})
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("pattern,strings", NORMAL_PATTERNS)
def test_regex_without_re2_matches_like_the_onnx_reference(without_re2, pattern, strings):
    assert regex.backtracking_risk(pattern) is None
    got = Interpreter(_regex_model(pattern)).run({"x": np.array(strings, dtype=object)})["y"]
    np.testing.assert_array_equal(got, _reference(pattern, strings))


def test_regex_guard_decisions():
    refused = [r"(a+)+", r"((ab)*)*", r"(\d*)+", r"(a{0,30}){0,30}", r"(?i)(A+a)+",
               r"(?:[a-z]+|[0-9]+)+\d", r"^(([a-z])+.)+[A-Z]([a-z])+$", r"a++", r"(?>a)"]
    accepted = [r"(\d+,)*\d+", r"(a+b)+", r"(\w+\s)+", r"(ab|cd)*", r".*", r"\d{3}-\d{4}",
                r"(?i)hello", r"[^@]+@[^@]+\.[a-z]+", r"(\w|\d)+"]  # the last parses to [\w\d]
    assert [p for p in refused if regex.backtracking_risk(p) is None] == []
    assert {p: regex.backtracking_risk(p) for p in accepted} == dict.fromkeys(accepted)


def test_regex_with_re2_runs_any_pattern_in_linear_time():
    pytest.importorskip("re2")
    regex._re2 = None  # re-detect (another test may have patched it away)
    data = _regex_model(r"(a+)+$")
    t0 = time.monotonic()
    out = Interpreter(data).run({"x": np.array(["a" * 41 + "!", "a" * 5000], dtype=object)})
    assert time.monotonic() - t0 < 5
    assert out["y"].tolist() == [False, True]
    for pattern, strings in NORMAL_PATTERNS:
        got = Interpreter(_regex_model(pattern)).run({"x": np.array(strings, dtype=object)})["y"]
        np.testing.assert_array_equal(got, _reference(pattern, strings), err_msg=pattern)
    with pytest.raises(KernelError, match="invalid RE2 pattern"):  # no backreferences in RE2
        Interpreter(_regex_model(r"(a)\1")).run({"x": np.array(["aa"], dtype=object)})


# ----- 3. int8 kernels on an empty batch ----------------------------------------------------------
def _int8_float_model() -> onnx.ModelProto:
    """Every op edgert.quantize turns into an int8 kernel, batch dim dynamic."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Add", ["c2", "r1"], ["a1"]),
        helper.make_node("Mul", ["a1", "c1"], ["m1"]),
        helper.make_node("Sigmoid", ["m1"], ["s1"]),
        helper.make_node("Concat", ["s1", "r1"], ["cat"], axis=1),
        helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("ConvTranspose", ["ap", "wt"], ["ct"], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ct"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wg", "bg"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "wm"], ["mm"]),
        helper.make_node("Softmax", ["mm"], ["y"], axis=-1),
    ]
    inits = [w("w1", (4, 3, 3, 3)), w("b1", (4,)), w("wd", (4, 1, 3, 3)), w("bd", (4,)),
             w("wt", (8, 5, 2, 2)), w("wg", (6, 5)), w("bg", (6,)), w("wm", (6, 3))]
    graph = helper.make_graph(nodes, "g", [_vi("x", F, ["N", 3, 8, 8])],
                              [_vi("y", F, ["N", 3])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_int8_model_runs_an_empty_batch():
    from edgert.runtime.kernels.cpu import quantized
    from edgert.runtime.registry import KernelRegistry

    rng = np.random.default_rng(1)
    calib = {"x": rng.normal(size=(8, 3, 8, 8)).astype(np.float32)}
    data, _ = edgert.quantize(_int8_float_model().SerializeToString(), None, calibration=calib)
    interp = Interpreter(data)
    # the model holds every int8 kernel of edgert's domain
    reg = KernelRegistry("cpu")
    quantized.register(reg)
    int8_ops = {name.split(".", 1)[1] for name in reg.op_types()}
    used = {op.op_type for op in interp._graph.operators if op.domain == "edgert"}
    assert used == int8_ops
    x = rng.normal(size=(3, 3, 8, 8)).astype(np.float32)
    full = interp.run({"x": x})["y"]
    assert full.shape == (3, 3)
    empty = interp.run({"x": x[:0]})["y"]
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    np.testing.assert_array_equal(interp.run({"x": x})["y"], full)  # and back


def test_int8_model_runs_an_empty_batch_on_cuda():
    """The CUDA interpreter too (Numba's simulator without a GPU): an empty feed is not copied."""
    from cuda_helpers import require_cuda_or_skip

    require_cuda_or_skip()
    rng = np.random.default_rng(1)
    calib = {"x": rng.normal(size=(8, 3, 8, 8)).astype(np.float32)}
    data, _ = edgert.quantize(_int8_float_model().SerializeToString(), None, calibration=calib)
    interp = Interpreter(data, device="cuda")
    assert interp.host_ops == []
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(interp.run({"x": x})["y"], Interpreter(data).run({"x": x})["y"])
    assert interp.run({"x": x[:0]})["y"].shape == (0, 3)


def _i8(rng, shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def _int8_kernel_cases():
    rng = np.random.default_rng(2)
    q = dict(x_scale=0.05, x_zero_point=3, y_scale=0.1, y_zero_point=-2)

    def conv(cin, cout, k, group=1, **attrs):
        w = rng.integers(-127, 128, size=(cout, cin // group, k, k)).astype(np.int8)
        b = rng.integers(-500, 500, size=cout).astype(np.int32)
        a = dict(q, w_scale=[0.02] * cout, group=group, **attrs)
        return ("QConv", lambda n: [_i8(rng, (n, cin, 6, 6)), w, b], a, (1, 2))

    gw = rng.integers(-127, 128, size=(5, 7)).astype(np.int8)
    gb = rng.integers(-500, 500, size=5).astype(np.int32)
    tw = rng.integers(-127, 128, size=(4, 3, 2, 2)).astype(np.int8)
    binary = dict(a_scale=0.1, a_zero_point=1, b_scale=0.05, b_zero_point=-3, y_scale=0.2,
                  y_zero_point=0)
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    return {
        "QConv-3x3": conv(3, 4, 3, pads=[1] * 4),
        "QConv-direct": conv(8, 16, 3, pads=[1] * 4),  # qdconv (16+ output channels)
        "QConv-pointwise": conv(8, 8, 1),
        "QConv-strided-1x1": conv(8, 8, 1, strides=[2, 2]),
        "QConv-depthwise": conv(4, 4, 3, group=4, pads=[1] * 4),
        "QConv-implicit": conv(16, 8, 3),
        "QConvTranspose": ("QConvTranspose", lambda n: [_i8(rng, (n, 4, 3, 3)), tw],
                           dict(q, w_scale=[0.02] * 3, strides=[2, 2]), (1,)),
        "QGemm": ("QGemm", lambda n: [_i8(rng, (n, 7)), gw, gb],
                  dict(q, w_scale=[0.02] * 5), (1, 2)),
        "QGemm-3d": ("QGemm", lambda n: [_i8(rng, (2, n, 7)), gw, gb],
                     dict(q, w_scale=[0.02] * 5), (1, 2)),
        "QAdd": ("QAdd", lambda n: [_i8(rng, (n, 4, 3)), _i8(rng, (1, 4, 1))], binary, ()),
        "QMul": ("QMul", lambda n: [_i8(rng, (n, 4, 3)), _i8(rng, (n, 4, 3))], binary, ()),
        "QConcat": ("QConcat", lambda n: [_i8(rng, (n, 2, 3)), _i8(rng, (n, 3, 3))],
                    dict(axis=1, scales=[0.1, 0.05], zero_points=[0, 5], y_scale=0.1,
                         y_zero_point=0), ()),
        "QMaxPool": ("QMaxPool", lambda n: [_i8(rng, (n, 3, 6, 6))], pool, ()),
        "QMaxPool-3d": ("QMaxPool", lambda n: [_i8(rng, (n, 3, 4, 4, 4))],
                        dict(kernel_shape=[2, 2, 2]), ()),
        "QAveragePool": ("QAveragePool", lambda n: [_i8(rng, (n, 3, 6, 6))],
                         dict(pool, pads=[1] * 4), ()),
        "QAveragePool-whole": ("QAveragePool", lambda n: [_i8(rng, (n, 3, 5, 5))],
                               dict(kernel_shape=[5, 5]), ()),
        "QGlobalAveragePool": ("QGlobalAveragePool", lambda n: [_i8(rng, (n, 3, 4, 4))], {}, ()),
        "QLut": ("QLut", lambda n: [_i8(rng, (n, 5))],
                 dict(table=list(np.arange(-128, 128) // 2)), ()),
        "QSoftmax": ("QSoftmax", lambda n: [_i8(rng, (n, 5))],
                     dict(axis=-1, x_scale=0.1, x_zero_point=0, y_scale=1 / 256,
                          y_zero_point=-128), ()),
        "QSoftmax-axis1": ("QSoftmax", lambda n: [_i8(rng, (n, 5, 3))],
                           dict(axis=1, x_scale=0.1, x_zero_point=0, y_scale=1 / 256,
                                y_zero_point=-128), ()),
        "Quantize": ("Quantize", lambda n: [rng.normal(size=(n, 4)).astype(np.float32)],
                     dict(scale=0.02, zero_point=-4), ()),
        "Dequantize": ("Dequantize", lambda n: [_i8(rng, (n, 4))],
                       dict(scale=[0.02], zero_point=[-4]), ()),
    }


@pytest.mark.parametrize("case", list(_int8_kernel_cases()))
def test_int8_kernel_with_an_empty_batch(case):
    op, make, attrs, consts = _int8_kernel_cases()[case]
    full = run_kernel(op, make(2), attrs, const_inputs=consts, domain="edgert")[0]
    got = run_kernel(op, make(0), attrs, const_inputs=consts, domain="edgert")[0]
    batch_axis = 1 if case == "QGemm-3d" else 0
    want = list(full.shape)
    want[batch_axis] = 0
    assert got.shape == tuple(want) and got.dtype == full.dtype


# ----- 4. negative dims ---------------------------------------------------------------------------
def test_onnx_initializer_with_a_negative_dim_is_rejected():
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-4],
                    raw_data=np.arange(4, dtype=np.float32).tobytes())
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [_vi("x", F, [4])], [_vi("y", F, [4])], [t])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelImportError, match="-4"):
        edgert.convert(m.SerializeToString(), None)


def _const_model(shape, data=None) -> ModelDef:
    """x + w, with w a constant of ``shape`` (a second input when ``data`` is None)."""
    tensors = [TensorDef("x", dtypes.FLOAT, (4,)),
               TensorDef("w", dtypes.FLOAT, shape, data=data),
               TensorDef("y", dtypes.FLOAT, (4,))]
    inputs = [0] if data is not None else [0, 1]
    return ModelDef([SubGraphDef("main", tensors, inputs, [2],
                                 [OperatorDef("Add", [0, 1], [2], version=14)])])


def test_verifier_rejects_negative_dims_on_constants():
    four = np.arange(4, dtype=np.float32)
    for shape in ((-4,), (-1,), (-2, -2)):
        with pytest.raises(ModelFormatError, match=r"bad dimension|static shape"):
            write_model(_const_model(shape, four.reshape(2, 2) if len(shape) == 2 else four))
    with pytest.raises(ModelFormatError, match="bad dimension -4"):  # not a constant either
        write_model(_const_model((-4,)))
    write_model(_const_model((-1,)))  # -1: a dynamic dim of a computed tensor is fine
    # a file whose constant declares dims [-4] (bytes patched after writing a valid one)
    good = bytearray(write_model(_const_model((4,), four)))
    tensor = fb.Model.GetRootAs(good, 0).Subgraphs(0).Tensors(1)
    assert tensor.Shape(0) == 4
    pos = tensor._tab.Vector(tensor._tab.Offset(4 + 2 * 2))  # Tensor.shape: slot 2, int64s
    struct.pack_into("<q", good, pos, -4)
    assert fb.Model.GetRootAs(good, 0).Subgraphs(0).Tensors(1).Shape(0) == -4
    with pytest.raises(ModelFormatError, match=r"static shape|bad dimension"):
        read_model(bytes(good))


# ----- 5. FusedElementwise programs ---------------------------------------------------------------
def _fused(program, n_inputs=1) -> bytes:
    tensors = [TensorDef(f"x{i}", dtypes.FLOAT, (2, 3)) for i in range(n_inputs)]
    tensors.append(TensorDef("y", dtypes.FLOAT, (2, 3)))
    rows = len(program) // 5
    op = OperatorDef("FusedElementwise", list(range(n_inputs)), [n_inputs], domain="edgert",
                     version=1, name="fused",
                     attrs={"program": list(program), "params": [0.0] * (2 * rows),
                            "modes": [0] * n_inputs})
    return write_model(ModelDef([SubGraphDef("main", tensors, list(range(n_inputs)),
                                             [n_inputs], [op])]))


@pytest.mark.parametrize("program,message", [
    # reads register 2 before any instruction writes it (it held another block's values)
    ([opc.OP_RELU, 1, 0, 0, 0, opc.OP_ADD, 2, 1, 2, 0], "reads register 2 before"),
    ([opc.OP_ADD, 1, 0, 1, 0], "reads register 1 before"),
    ([opc.OP_CLIP, 1, 0, 0, 1], "reads register 1 before"),
    ([opc.OP_RELU, 1, 0, 0, 10**9], "register 1000000000 is out of range"),
    ([opc.OP_RELU, 5, 0, 0, 0], "register 5 is out of range"),
    ([opc.OP_RELU, 1, -1, 0, 0], "register -1 is out of range"),
    ([99, 1, 0, 0, 0], "unknown opcode 99"),
    ([opc.OP_RELU, 0, 0, 0, 0], "writes input register 0"),
])
def test_fused_program_reading_unwritten_or_bad_registers_is_rejected(program, message):
    with pytest.raises(KernelError, match=f"FusedElementwise 'fused'.*{message}"):
        Interpreter(_fused(program))


def test_fused_program_that_is_valid_runs():
    data = _fused([opc.OP_ADD, 2, 0, 1, 0, opc.OP_RELU, 3, 2, 0, 0], n_inputs=2)
    a = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.5, np.float32)
    y = Interpreter(data).run({"x0": a, "x1": b})["y"]
    np.testing.assert_array_equal(y, np.maximum(a + b, 0))


# ----- 6. file modes ------------------------------------------------------------------------------
@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode_not_0600(tmp_path, umask, mask):
    umask(mask)
    want = 0o666 & ~mask
    path = tmp_path / "m.edgert"
    write_model(_const_model((4,), np.arange(4, dtype=np.float32)), str(path))
    assert os.stat(path).st_mode & 0o777 == want
    onnx_model = _int8_float_model().SerializeToString()
    out = tmp_path / "c.edgert"
    edgert.convert(onnx_model, out)
    assert os.stat(out).st_mode & 0o777 == want
    # a file that is replaced keeps its mode, as when it is written in place
    os.chmod(out, 0o640)
    edgert.convert(onnx_model, out)
    assert os.stat(out).st_mode & 0o777 == 0o640
    # the benchmark model cache writes the same way
    from model_zoo import light_models_module

    cached = tmp_path / "cached.onnx"
    light_models_module()._atomic_write(cached, b"data")
    assert os.stat(cached).st_mode & 0o777 == want
