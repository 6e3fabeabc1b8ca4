"""Sequence and optional values end to end: ONNX import → `.edgert` → Interpreter.

Each model is small ONNX text run through the real pipeline (``convert`` then ``Interpreter``
over the written bytes) and compared with onnxruntime on the same model; optional values, which
onnxruntime's Python API cannot feed, are checked against their definition. Bad positions and
mismatched elements must raise a clear edgert error naming the op.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx.parser
import pytest

from edgert.converter import convert
from edgert.errors import DTypeError, EdgeRTError, InputError, ModelFormatError, ShapeError
from edgert.format import ModelDef, SubGraphDef, TensorDef, read_model, write_model
from edgert.format.model import KIND_OPTIONAL_SEQUENCE, KIND_SEQUENCE, KIND_TENSOR, OperatorDef
from edgert.runtime import Interpreter
from tests.helpers import ATOL, RTOL

HEADER = '<ir_version: 10, opset_import: ["" : 21]>\n'


def _model(text: str) -> onnx.ModelProto:
    """Parse ONNX text. The text format reads ``seq(float)`` as a sequence of scalars: clear the
    element shapes of sequences (and the shapes of graph outputs) to mean "any shape"."""
    model = onnx.parser.parse_model(HEADER + text)
    onnx.checker.check_model(model)
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for vi in (*g.input, *g.output):
            _relax(vi.type)
        for vi in g.output:
            if vi.type.HasField("tensor_type"):
                vi.type.tensor_type.ClearField("shape")
        graphs.extend(a.g for n in g.node for a in n.attribute if a.HasField("g"))
    return model


def _relax(tp: onnx.TypeProto) -> None:
    if tp.HasField("sequence_type"):
        inner = tp.sequence_type.elem_type
        if inner.HasField("tensor_type"):
            inner.tensor_type.ClearField("shape")
        _relax(inner)
    elif tp.HasField("optional_type"):
        _relax(tp.optional_type.elem_type)


def _edgert(model: onnx.ModelProto) -> Interpreter:
    return Interpreter(convert(model, level=0))


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _same(got, ref, where="output") -> None:
    """Sequences element by element; arrays with exact dtype/shape and the float tolerance."""
    if isinstance(ref, list):
        assert isinstance(got, list), f"{where}: expected a sequence, got {type(got).__name__}"
        assert len(got) == len(ref), f"{where}: length {len(got)} != {len(ref)}"
        for k, (g, r) in enumerate(zip(got, ref)):
            _same(g, r, f"{where}[{k}]")
        return
    ref = np.asarray(ref)
    assert isinstance(got, np.ndarray), f"{where}: expected an array, got {type(got).__name__}"
    assert got.dtype == ref.dtype and got.shape == ref.shape, (where, got.dtype, got.shape,
                                                               ref.dtype, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL, err_msg=where)


def _check_against_ort(model: onnx.ModelProto, feeds: dict) -> dict:
    interp = _edgert(model)
    got = interp.run(feeds)
    ref = _ort(model, feeds)
    for name, r in zip(interp.output_names, ref):
        _same(got[name], r, name)
    return got


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----- the operators against onnxruntime ----------------------------------------------------------
def test_construct_insert_erase_at_length():
    model = _model("""
    g (float[2,3] a, float[2,3] b, float[4,3] c) => (seq(float) s, float[4,3] at, int64 n) {
        s0 = SequenceConstruct(a, b)
        front = Constant<value = int64 {-2}>()
        s1 = SequenceInsert(s0, c, front)
        s2 = SequenceInsert(s1, a)
        last = Constant<value = int64 {-1}>()
        s = SequenceErase(s2, last)
        one = Constant<value = int32 {-3}>()
        at = SequenceAt(s, one)
        n = SequenceLength(s)
    }""")
    feeds = {"a": _rand(2, 3), "b": _rand(2, 3, seed=1), "c": _rand(4, 3, seed=2)}
    got = _check_against_ort(model, feeds)
    assert [x.shape for x in got["s"]] == [(4, 3), (2, 3), (2, 3)]


def test_sequence_inputs_and_outputs_round_trip():
    model = _model("""
    g (seq(float) xs, float[3] y) => (seq(float) out, float[3] first) {
        zero = Constant<value = int64 {0}>()
        out = SequenceInsert(xs, y, zero)
        first = SequenceAt(out, zero)
    }""")
    interp = _edgert(model)
    for n in (0, 1, 3):  # another list length needs no re-plan
        feeds = {"xs": [_rand(3, seed=k) for k in range(n)], "y": _rand(3, seed=9)}
        got = interp.run(feeds)
        ref = _ort(model, feeds)
        _same(got["out"], ref[0])
        _same(got["first"], ref[1])
    # outputs are copies: changing them does not change the next run
    got["out"][0][:] = 0
    again = interp.run(feeds)
    _same(again["out"], ref[0])


@pytest.mark.parametrize("split, attrs, concat", [
    (None, "axis = 1", "axis = 1, new_axis = 1"),
    (None, "axis = -1, keepdims = 0", "axis = 0, new_axis = 1"),
    ("int64 {2}", "axis = 1", "axis = -1"),  # 5 = 2 + 2 + 1: the last piece is shorter
    ("int64[3] {1, 3, 1}", "axis = 1", "axis = 1"),
    ("int64[2] {1, 2}", "axis = 0", "axis = 0"),
])
def test_split_to_sequence_and_concat(split, attrs, concat):
    split_in = ", sp" if split else ""
    const = f"sp = Constant<value = {split}>()" if split else ""
    model = _model(f"""
    g (float[3,5] x) => (seq(float) s, float cat, int64 n) {{
        {const}
        s = SplitToSequence<{attrs}>(x{split_in})
        cat = ConcatFromSequence<{concat}>(s)
        n = SequenceLength(s)
    }}""")
    _check_against_ort(model, {"x": _rand(3, 5)})


def test_sequence_map_with_a_tensor_and_an_outer_value():
    model = _model("""
    g (seq(float) xs, float[3] bias) => (seq(float) ys, seq(int64) shapes) {
        scale = Constant<value = float {2.0}>()
        ys, shapes = SequenceMap<body = body(float[N] x, float[3] b) => (float[N] y, int64[1] s) {
            m = Mul(x, scale)
            y = Add(m, b)
            s = Shape(x)
        }>(xs, bias)
    }""")
    feeds = {"xs": [_rand(3, seed=k) for k in range(4)], "bias": _rand(3, seed=7)}
    _check_against_ort(model, feeds)


def test_loop_carries_a_sequence():
    model = _model("""
    g (int64 trips, seq(float) init) => (seq(float) out) {
        cond = Constant<value = bool {1}>()
        out = Loop(trips, cond, init) <body = body(int64 i, bool c, seq(float) s) => (bool co,
                                                                           seq(float) so) {
            co = Identity(c)
            f = Cast<to = 1>(i)
            axes = Constant<value = int64[1] {0}>()
            v = Unsqueeze(f, axes)
            so = SequenceInsert(s, v)
        }>
    }""")
    feeds = {"trips": np.array(4, np.int64), "init": [np.array([9.0], np.float32)]}
    _check_against_ort(model, feeds)


def test_if_returns_a_sequence_and_identity_passes_it_on():
    model = _model("""
    g (bool cond, float[2] a) => (seq(float) out) {
        r = If(cond) <then_branch = t() => (seq(float) s) { s = SequenceConstruct(a, a) },
                      else_branch = e() => (seq(float) s2) { s2 = SequenceConstruct(a) }>
        out = Identity(r)
    }""")
    for cond in (True, False):
        _check_against_ort(model, {"cond": np.array(cond), "a": _rand(2)})


# ----- optional values (checked against their definition) -----------------------------------------
OPTIONAL_MODEL = """
g (optional(seq(float)) maybe) => (bool has, optional(seq(float)) same) {
    has = OptionalHasElement(maybe)
    same = Identity(maybe)
}"""


def test_optional_inputs_empty_and_full():
    interp = _edgert(_model(OPTIONAL_MODEL))
    out = interp.run({"maybe": None})
    assert out["has"].dtype == np.bool_ and out["has"].shape == () and not out["has"]
    assert out["same"] is None
    seq = [_rand(2), _rand(3, seed=1)]
    out = interp.run({"maybe": seq})
    assert bool(out["has"])
    _same(out["same"], seq)


def test_optional_construct_get_and_empty():
    model = _model("""
    g (float[3] x) => (float[3] y, bool full, bool empty) {
        o = Optional(x)
        y = OptionalGetElement(o)
        full = OptionalHasElement(o)
        e = Optional<type = seq(float)>()
        empty = OptionalHasElement(e)
    }""")
    x = _rand(3)
    out = _edgert(model).run({"x": x})
    _same(out["y"], x)
    assert bool(out["full"]) and not bool(out["empty"])


def test_get_element_of_an_empty_optional_names_the_op():
    model = _model("""
    g (optional(float[3]) o) => (float[3] y) {
        y = OptionalGetElement(o)
    }""")
    interp = _edgert(model)
    np.testing.assert_array_equal(interp.run({"o": _rand(3)})["y"], _rand(3))
    with pytest.raises(InputError, match="OptionalGetElement.*empty"):
        interp.run({"o": None})


# ----- errors -------------------------------------------------------------------------------------
POSITION_MODEL = """
g (seq(float) xs, int64 pos, float[2] v) => (float[2] at, seq(float) ins, seq(float) era) {
    at = SequenceAt(xs, pos)
    ins = SequenceInsert(xs, v, pos)
    era = SequenceErase(xs, pos)
}"""


@pytest.mark.parametrize("pos", [-3, -1, 0, 1])
def test_positions_in_range_match_ort(pos):
    feeds = {"xs": [_rand(2, seed=k) for k in range(2)], "pos": np.array(pos, np.int64),
             "v": _rand(2, seed=5)}
    if pos == -3:  # out of range for every op here
        with pytest.raises(InputError, match=r"Sequence(At|Insert|Erase) .*position -3 is out "
                                             r"of range for a sequence of length 2"):
            _edgert(_model(POSITION_MODEL)).run(feeds)
        return
    _check_against_ort(_model(POSITION_MODEL), feeds)


@pytest.mark.parametrize("op, pos, ok", [
    ("SequenceAt", 2, False), ("SequenceAt", -2, True),
    ("SequenceInsert", 2, True), ("SequenceInsert", 3, False), ("SequenceInsert", -2, True),
    ("SequenceErase", 2, False), ("SequenceErase", -3, False),
])
def test_position_limits(op, pos, ok):
    out_type = "float[2] y" if op == "SequenceAt" else "seq(float) y"
    args = "xs, v, pos" if op == "SequenceInsert" else "xs, pos"
    model = _model(f"""
    g (seq(float) xs, int64 pos, float[2] v) => ({out_type}) {{
        y = {op}({args})
    }}""")
    feeds = {"xs": [_rand(2, seed=k) for k in range(2)], "pos": np.array(pos, np.int64),
             "v": _rand(2, seed=5)}
    if ok:
        _check_against_ort(model, feeds)
    else:
        with pytest.raises(InputError, match=f"{op} .*position {pos} is out of range"):
            _edgert(model).run(feeds)


def test_erase_from_an_empty_sequence():
    model = _model("""
    g (float[2] a) => (seq(float) y) {
        e = SequenceEmpty()
        y = SequenceErase(e)
    }""")
    with pytest.raises(InputError, match="SequenceErase.*empty sequence"):
        _edgert(model).run({"a": _rand(2)})


def test_bad_elements_raise_clear_errors():
    concat = _model("""
    g (seq(float) xs) => (float[N] y) { y = ConcatFromSequence<axis = 0>(xs) }""")
    with pytest.raises(ShapeError, match="ConcatFromSequence.*cannot be concatenated"):
        _edgert(concat).run({"xs": [_rand(2, 3), _rand(2, 4)]})
    with pytest.raises(InputError, match="ConcatFromSequence.*empty sequence"):
        _edgert(concat).run({"xs": []})
    insert = _model("""
    g (seq(float) xs, double[2] v) => (seq(float) y) { y = SequenceInsert(xs, v) }""")
    with pytest.raises(DTypeError, match="SequenceInsert.*float64, the sequence holds float32"):
        _edgert(insert).run({"xs": [_rand(2)], "v": np.zeros(2)})
    construct = _model("""
    g (float[2] v, double[2] w) => (seq(float) y) { y = SequenceConstruct(v, w) }""")
    with pytest.raises(DTypeError, match="SequenceConstruct.*input 1 has dtype float64"):
        _edgert(construct).run({"v": _rand(2), "w": np.zeros(2)})
    split = _model("""
    g (float[2,5] x) => (seq(float) y) {
        sp = Constant<value = int64[2] {2, 2}>()
        y = SplitToSequence<axis = 1>(x, sp)
    }""")
    with pytest.raises(InputError, match="SplitToSequence.*does not add up to the length 5"):
        _edgert(split).run({"x": _rand(2, 5)})


def test_feeding_the_wrong_kind_of_value():
    interp = _edgert(_model("""
    g (seq(float) xs) => (int64 n) { n = SequenceLength(xs) }"""))
    with pytest.raises(InputError, match="'xs' is a sequence value: pass a list of arrays"):
        interp.run({"xs": _rand(2)})
    with pytest.raises(DTypeError, match="'xs', element 1: expected dtype float32"):
        interp.run({"xs": [_rand(2), np.zeros(2)]})
    with pytest.raises(InputError, match="'xs' is a sequence value; got None"):
        interp.run({"xs": None})
    assert int(interp.run({"xs": [_rand(2)] * 3})["n"]) == 3


def test_tflite_style_api_with_a_sequence():
    interp = _edgert(_model("""
    g (seq(float) xs) => (float[N] y) { y = ConcatFromSequence<axis = 0>(xs) }"""))
    xs = [_rand(2), _rand(3, seed=1)]
    interp.set_tensor("xs", xs)
    interp.invoke()
    _same(interp.get_tensor("y"), np.concatenate(xs))
    interp.allocate_tensors()  # a re-plan keeps the fed sequence
    interp.invoke()
    _same(interp.get_tensor("y"), np.concatenate(xs))


# ----- the `.edgert` format -----------------------------------------------------------------------
def test_value_kind_round_trips_through_the_file(tmp_path):
    data = convert(_model(OPTIONAL_MODEL), level=0)
    g = read_model(data).main
    kinds = {t.name: t.kind for t in g.tensors}
    assert kinds["maybe"] == KIND_OPTIONAL_SEQUENCE and kinds["same"] == KIND_OPTIONAL_SEQUENCE
    assert kinds["has"] == KIND_TENSOR
    model = ModelDef([SubGraphDef(
        "g",
        [TensorDef("xs", 1, (), unknown_rank=True, kind=KIND_SEQUENCE),
         TensorDef("n", 7, ())],
        inputs=[0], outputs=[1], operators=[OperatorDef("SequenceLength", [0], [1], version=21)],
    )])
    path = tmp_path / "seq.edgert"
    write_model(model, str(path))
    back = read_model(str(path)).main
    assert [t.kind for t in back.tensors] == [KIND_SEQUENCE, KIND_TENSOR]
    assert int(Interpreter(str(path)).run({"xs": [_rand(1)] * 5})["n"]) == 5


def test_format_rejects_bad_value_kinds():
    def model(t: TensorDef) -> ModelDef:
        return ModelDef([SubGraphDef("g", [t], inputs=[0], outputs=[0], operators=[])])

    with pytest.raises(ModelFormatError, match="unknown value kind 9"):
        write_model(model(TensorDef("x", 1, (), unknown_rank=True, kind=9)))
    with pytest.raises(ModelFormatError, match="sequence value cannot hold constant data"):
        write_model(ModelDef([SubGraphDef(
            "g", [TensorDef("x", 1, (2,), data=np.zeros(2, np.float32), kind=KIND_SEQUENCE)],
            inputs=[], outputs=[0], operators=[])]))


def test_inspect_shows_value_kinds(tmp_path, capsys):
    import json

    from edgert.cli import main

    path = tmp_path / "opt.edgert"
    path.write_bytes(convert(_model(OPTIONAL_MODEL), level=0))
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"] == [{"name": "maybe", "dtype": "float32", "shape": None,
                               "kind": "optional_sequence"}]
    assert "kind" not in info["outputs"][0]  # `has` is a plain bool tensor
    assert main(["inspect", str(path)]) == 0
    assert "maybe: optional_sequence of float32" in capsys.readouterr().out


def test_onnx_export_keeps_sequence_types():
    from edgert.importer import import_onnx
    from edgert.importer.onnx_export import export_onnx

    model = _model("""
    g (seq(float) xs, float[3] y) => (seq(float) out, int64 n) {
        out = SequenceInsert(xs, y)
        n = SequenceLength(out)
    }""")
    exported = export_onnx(import_onnx(model))
    assert exported.graph.input[0].type.HasField("sequence_type")
    assert exported.graph.output[0].type.HasField("sequence_type")
    feeds = {"xs": [_rand(3), _rand(3, seed=1)], "y": _rand(3, seed=2)}
    for got, ref in zip(_ort(exported, feeds), _ort(model, feeds)):
        _same(got, ref)


def test_details_of_sequence_inputs_and_outputs():
    interp = _edgert(_model("""
    g (seq(float) xs) => (seq(float) ys) { ys = Identity(xs) }"""))
    interp.run({"xs": [_rand(2)]})
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert inp["name"] == "xs" and inp["dtype"] is np.float32
    assert out["name"] == "ys" and out["dtype"] is np.float32


def test_optimizer_does_not_fold_sequences_into_constants():
    model = _model("""
    g (bool cond) => (seq(float) out, int64 n) {
        r = If(cond) <then_branch = t() => (seq(float) s) {
                          c = Constant<value = float[2] {1.0, 2.0}>()
                          s = SequenceConstruct(c, c)
                      },
                      else_branch = e() => (seq(float) s2) {
                          c2 = Constant<value = float[3] {3.0, 4.0, 5.0}>()
                          s2 = SequenceConstruct(c2)
                      }>
        out = Identity(r)
        n = SequenceLength(out)
    }""")
    interp = Interpreter(convert(model))  # the default optimization level
    for cond in (True, False):
        feeds = {"cond": np.array(cond)}
        got = interp.run(feeds)
        for name, ref in zip(interp.output_names, _ort(model, feeds)):
            _same(got[name], ref, name)


@pytest.mark.parametrize("onnx_type, shown", [
    ("seq(seq(float))", "sequence(sequence)"),
    ("map(int32, float)", "map(int32, ...)"),
])
def test_value_types_the_runtime_cannot_hold_are_refused_at_conversion(onnx_type, shown):
    from edgert.errors import UnsupportedOpError

    model = onnx.parser.parse_model(
        HEADER + f"g ({onnx_type} x) => ({onnx_type} y) {{ y = Identity(x) }}")
    with pytest.raises(UnsupportedOpError, match=f"'x' has ONNX type {re.escape(shown)}"):
        convert(model, level=0)


def test_maps_pass_through_the_runtime():
    """map(int64, float) (the ai.onnx.ml operators' map values) is held as a dict."""
    model = onnx.parser.parse_model(
        HEADER + "g (map(int64, float) x) => (map(int64, float) y) { y = Identity(x) }")
    it = Interpreter(convert(model, level=0))
    out = it.run({"x": {1: 2.0, 3: 4.5}})["y"]
    assert out == {1: np.float32(2.0), 3: np.float32(4.5)}
    with pytest.raises(EdgeRTError, match="key 'a' is not an int"):
        it.run({"x": {"a": 1.0}})


def test_tensor_op_on_a_sequence_is_refused_at_conversion():
    """A tensor-only op wired to a sequence is named at conversion, not a crash at prepare."""
    from onnx import TensorProto, helper

    from edgert.errors import UnsupportedOpError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1])
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]),
             helper.make_node("Shape", ["s"], ["y"], name="shape_of_seq")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    graph.value_info.append(helper.make_value_info(
        "s", helper.make_sequence_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(UnsupportedOpError, match=r"shape_of_seq|Shape.*tensors only"):
        convert(model, level=0)
