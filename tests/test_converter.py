"""The converter: lowering IR graphs to ModelDef, the kernel check, metadata, and round trips.

Kernel checks use a registry built here, so these tests do not depend on which CPU kernels exist.
The round-trip tests need ``edgert.format.write_model`` / ``read_model`` and are skipped until the
format package provides them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, parser

import edgert
import edgert.format
import edgert.optimizer
from edgert import dtypes
from edgert.converter import check_supported, convert, lower
from edgert.errors import EdgeRTError, ModelImportError, UnsupportedOpError
from edgert.format.model import ModelDef, QuantParams, SubGraphDef
from edgert.importer import import_onnx
from edgert.ir import Graph
from edgert.runtime.registry import Kernel, KernelRegistry


# ----- helpers ------------------------------------------------------------------------------------
class _Dummy(Kernel):
    pass


def _registry(*ops: str, **ranges: tuple[int, int]) -> KernelRegistry:
    reg = KernelRegistry("cpu")
    for op in ops:
        reg.add(op, _Dummy)
    for op, (lo, hi) in ranges.items():
        reg.add(op, _Dummy, since=lo, until=hi)
    return reg


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    unused = numpy_helper.from_array(np.zeros(5, np.float32), "unused")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["h1"], name="add"),
        helper.make_node("Softmax", ["h1"], ["y"], name="sm", axis=-1),
    ]
    g = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w, b, unused],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="maker", producer_version="2.0", doc_string="an MLP")
    m.ir_version = 8
    helper.set_model_props(m, {"author": "me"})
    return m


def _if_model() -> onnx.ModelProto:
    return parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (bool c, float[2] x) => (float[2] y) <float[2] w = {1.0, 2.0}, float[2] v = {3.0, 4.0}> {
            h = Relu(x)
            y = If(c) <
                then_branch = t () => (float[2] a) { a = Add(h, w) },
                else_branch = e () => (float[2] b) <float[2] k = {5.0, 6.0}> { b = Mul(h, k) }
            >
        }""")


def _names(sub: SubGraphDef, indices) -> list[str]:
    return [sub.tensors[i].name if i >= 0 else "" for i in indices]


@pytest.fixture
def captured(monkeypatch):
    """Replace write_model with a recorder: convert() then returns b"written"."""
    calls: list[tuple[ModelDef, str | None]] = []

    def fake_write_model(model, path=None):
        calls.append((model, path))
        return b"written"

    monkeypatch.setattr(edgert.format, "write_model", fake_write_model, raising=False)
    return calls


# ----- lower() ------------------------------------------------------------------------------------
def test_lower_numbers_inputs_then_constants_then_activations():
    md = lower(import_onnx(_mlp()))
    assert isinstance(md, ModelDef) and len(md.subgraphs) == 1
    sub = md.main
    names = [t.name for t in sub.tensors]
    assert names == ["x", "w", "b", "h", "h1", "y"]  # the unused initializer is left out
    assert sub.inputs == [0] and sub.outputs == [5]
    w = sub.tensors[1]
    assert w.dtype == dtypes.FLOAT and w.shape == (4, 3) and w.data is not None
    np.testing.assert_array_equal(w.data, numpy_helper.to_array(_mlp().graph.initializer[0]))
    assert all(t.data is None for t in sub.tensors if t.name in ("x", "h", "h1", "y"))
    ops = sub.operators
    assert [(o.op_type, o.name, o.version, o.domain) for o in ops] == [
        ("MatMul", "mm", 17, ""), ("Add", "add", 17, ""), ("Softmax", "sm", 17, "")]
    assert _names(sub, ops[0].inputs) == ["x", "w"] and _names(sub, ops[0].outputs) == ["h"]
    assert ops[2].attrs == {"axis": -1}


def test_lower_dynamic_dims_unknown_rank_and_metadata():
    md = lower(import_onnx(_mlp()))
    x = md.main.tensors[0]
    assert x.shape == (-1, 4) and x.shape_signature == ("batch", "")
    assert md.main.tensors[1].shape_signature is None  # static: no signature
    assert md.metadata["author"] == "me" and md.metadata["onnx.producer_name"] == "maker"
    assert md.description == "an MLP" and "onnx.doc_string" not in md.metadata

    g = Graph("g")
    a = g.add_input("a", dtypes.FLOAT, None)
    b = g.add_input("b", dtypes.INT64, ["n", None, 2])
    g.outputs += [g.add_node("Relu", [a]).outputs[0], g.add_node("Neg", [b]).outputs[0]]
    sub = lower(g).main
    ta, tb = sub.tensors[0], sub.tensors[1]
    assert ta.unknown_rank and ta.shape == ()
    assert not tb.unknown_rank and tb.shape == (-1, -1, 2) and tb.shape_signature == ("n", "", "")
    relu_out = sub.tensors[sub.operators[0].outputs[0]]
    assert relu_out.unknown_rank and relu_out.dtype == 0  # nothing known about it


def test_lower_quantization_and_numpy_attribute_values():
    g = Graph("q")
    x = g.add_input("x", dtypes.INT8, [1, 4])
    x.quant = (np.array([0.5]), np.array([3]), 0)
    w = g.add_constant("w", np.ones((2, 4), np.int8))
    w.quant = ([0.1, 0.2], [0, 0], 0)
    n = g.add_node("Custom", [x, w], 1, {"alpha": np.float32(0.25), "n": np.int64(3),
                                         "axes": (0, 1)}, name="c", domain="edgert", version=1)
    g.outputs.append(n.outputs[0])
    sub = lower(g).main
    qx, qw = sub.tensors[0].quant, sub.tensors[1].quant
    assert isinstance(qx, QuantParams) and qx.scale.dtype == np.float32
    assert qx.zero_point.dtype == np.int64 and qx.zero_point.tolist() == [3] and qx.axis == 0
    np.testing.assert_allclose(qw.scale, [0.1, 0.2])
    op = sub.operators[0]
    assert op.domain == "edgert" and op.version == 1
    assert op.attrs == {"alpha": 0.25, "n": 3, "axes": [0, 1]}
    assert type(op.attrs["alpha"]) is float and type(op.attrs["n"]) is int


def test_lower_omitted_inputs_and_outputs_are_minus_one():
    m = parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1, 1, 2, 2] x) => (float y) <float[4] s = {1.0, 1.0, 2.0, 2.0}> {
            y = Resize<mode = "nearest">(x, , s)
        }""")
    sub = lower(import_onnx(m)).main
    assert _names(sub, sub.operators[0].inputs) == ["x", "", "s"]
    hidden = 2
    w = numpy_helper.from_array(np.ones((1, 4 * hidden, 3), np.float32), "W")
    r = numpy_helper.from_array(np.ones((1, 4 * hidden, hidden), np.float32), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["", "y_h"], hidden_size=hidden)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [5, 1, 3])],
                          [helper.make_tensor_value_info("y_h", 1, None)], [w, r])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    sub = lower(import_onnx(m)).main
    (op,) = sub.operators
    assert op.outputs[0] == -1 and sub.tensors[op.outputs[1]].name == "y_h"
    assert not any(t.name.endswith("unused0") for t in sub.tensors)


def test_lower_subgraphs_become_nested_subgraph_defs():
    md = lower(import_onnx(_if_model()))
    assert len(md.subgraphs) == 1  # bodies travel as attributes; the writer appends them
    main = md.main
    # 'w' is read only inside the then-branch: the branch holds it as its own constant (so it
    # is planned as known), and the main graph no longer needs it
    names = [t.name for t in main.tensors]
    assert "w" not in names and "v" not in names
    (op,) = [o for o in main.operators if o.op_type == "If"]
    then_g, else_g = op.attrs["then_branch"], op.attrs["else_branch"]
    assert isinstance(then_g, SubGraphDef) and isinstance(else_g, SubGraphDef)
    assert then_g.outer_inputs == ["h"] and then_g.inputs == []
    assert sorted(t.name for t in then_g.tensors) == ["a", "h", "w"]
    by_name = {t.name: t for t in then_g.tensors}
    assert by_name["h"].data is None  # an outer value, bound by name
    np.testing.assert_array_equal(by_name["w"].data, [1.0, 2.0])
    assert _names(then_g, then_g.outputs) == ["a"]
    k = next(t for t in else_g.tensors if t.name == "k")
    np.testing.assert_array_equal(k.data, [5.0, 6.0])
    assert else_g.outer_inputs == ["h"]


def test_lower_rejects_two_tensors_with_one_name():
    g = Graph("g")
    x = g.add_input("x", dtypes.FLOAT, [1])
    n = g.add_node("Relu", [x])
    n.outputs[0].name = "x"
    g.outputs.append(n.outputs[0])
    with pytest.raises(EdgeRTError, match="two different tensors named 'x'"):
        lower(g)


# ----- check_supported() --------------------------------------------------------------------------
def test_check_supported_lists_every_missing_kernel_including_bodies():
    g = import_onnx(_if_model())
    check_supported(g, _registry("Relu", "If", "Add", "Mul"))
    with pytest.raises(UnsupportedOpError) as info:
        check_supported(g, _registry("Relu"))
    ops = info.value.ops
    assert sorted(op for op, _, _ in ops) == ["Add", "If", "Mul"]
    msg = str(info.value)
    assert "3 node(s)" in msg and "no cpu kernel for ai.onnx.If (opset 13)" in msg
    assert "check_ops=False" in msg


def test_check_supported_respects_version_ranges():
    m = parser.parse_model("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[2, 3] x) => (float y) { y = Softmax(x) }""")
    g = import_onnx(m)
    check_supported(g, _registry(Softmax=(1, 12)))
    with pytest.raises(UnsupportedOpError, match="opset 11"):
        check_supported(g, _registry(Softmax=(13, 10_000)))


# ----- convert() ----------------------------------------------------------------------------------
def test_convert_writes_metadata_and_checks_ops(tmp_path, captured):
    m = _mlp()
    data = m.SerializeToString()
    path = tmp_path / "mlp.onnx"
    path.write_bytes(data)
    out = tmp_path / "mlp.edgert"
    reg = _registry("MatMul", "Add", "Softmax")
    extra = {"task": "demo", "author": "you"}
    assert convert(path, out, registry=reg, metadata=extra) == b"written"
    ((md, written_to),) = captured
    assert written_to == str(out)
    meta = md.metadata
    assert meta["producer"] == f"edgert {edgert.__version__}"
    assert meta["edgert_version"] == edgert.__version__
    assert meta["source_producer"] == "maker 2.0"
    assert meta["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["task"] == "demo" and meta["author"] == "you"  # user entries win
    assert md.description == "an MLP"
    assert [t.name for t in md.main.tensors][:3] == ["x", "w", "b"]

    with pytest.raises(UnsupportedOpError) as info:
        convert(m, registry=_registry("MatMul"))
    assert [name for _, name, _ in info.value.ops] == ["add", "sm"]
    assert len(captured) == 1
    convert(m, check_ops=False, registry=_registry())  # the check can be turned off
    assert len(captured) == 2 and captured[1][1] is None


def test_convert_takes_a_graph_as_is(captured):
    g = import_onnx(_mlp())
    g.metadata.pop("onnx.sha256")
    convert(g, registry=_registry("MatMul", "Add", "Softmax"))
    (md, _), = captured
    assert "source_sha256" not in md.metadata and md.metadata["producer"].startswith("edgert ")


def test_convert_passes_import_errors_through(captured):
    with pytest.raises(ModelImportError):
        convert(b"not a model")
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], name="n1")], "g",
        [helper.make_tensor_value_info("x", 1, [1])],
        [helper.make_tensor_value_info("y", 1, None)]))
    with pytest.raises(UnsupportedOpError, match="NoSuchOp"):
        convert(bad, registry=_registry())
    assert captured == []


def test_optimizer_levels(monkeypatch, captured):
    reg = _registry("MatMul", "Add", "Softmax")
    with pytest.raises(EdgeRTError, match="non-negative"):
        convert(_mlp(), level=-1, registry=reg)
    seen = []

    def fake_optimize(graph, level, **options):
        seen.append(level)
        assert options.get("allow_fused") is True  # .edgert output runs fused ops
        graph.metadata["optimized"] = "yes"
        return True

    monkeypatch.setattr(edgert.optimizer, "optimize", fake_optimize, raising=False)
    convert(_mlp(), level=2, registry=reg)
    assert seen == [2] and captured[-1][0].metadata["optimized"] == "yes"


# ----- round trips through the real writer and reader ---------------------------------------------
def _format_or_skip():
    if not hasattr(edgert.format, "write_model") or not hasattr(edgert.format, "read_model"):
        pytest.skip("edgert.format.write_model/read_model are not available yet")
    return edgert.format.write_model, edgert.format.read_model


def _same_attr(a, b, model_b):
    if isinstance(a, SubGraphDef):
        if isinstance(b, int):
            b = model_b.subgraphs[b]
        _same_subgraph(a, b, model_b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(np.asarray(b), a)
    elif isinstance(a, float):
        assert np.float32(b) == np.float32(a)
    elif isinstance(a, list) and a and isinstance(a[0], float):
        np.testing.assert_array_equal(np.asarray(b, np.float32), np.asarray(a, np.float32))
    elif isinstance(a, list) and a and isinstance(a[0], (SubGraphDef, np.ndarray)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_attr(x, y, model_b)
    else:
        assert (list(b) if isinstance(b, (list, tuple)) else b) == a


def _same_subgraph(a: SubGraphDef, b: SubGraphDef, model_b: ModelDef) -> None:
    assert b.name == a.name
    assert list(b.inputs) == a.inputs and list(b.outputs) == a.outputs
    assert list(b.outer_inputs) == a.outer_inputs
    assert len(b.tensors) == len(a.tensors)
    for ta, tb in zip(a.tensors, b.tensors):
        assert (tb.name, tb.dtype, tuple(tb.shape), tb.unknown_rank) == (
            ta.name, ta.dtype, ta.shape, ta.unknown_rank), ta.name
        assert tuple(tb.shape_signature or ()) == tuple(ta.shape_signature or ())
        if ta.data is None:
            assert tb.data is None
        else:
            assert tb.data is not None and tb.data.shape == ta.data.shape
            if ta.data.dtype == object:
                assert list(tb.data.reshape(-1)) == list(ta.data.reshape(-1))
            else:
                np.testing.assert_array_equal(tb.data, ta.data)
        if ta.quant is None:
            assert tb.quant is None
        else:
            np.testing.assert_array_equal(tb.quant.scale, ta.quant.scale)
            np.testing.assert_array_equal(tb.quant.zero_point, ta.quant.zero_point)
            assert tb.quant.axis == ta.quant.axis
    assert len(b.operators) == len(a.operators)
    for oa, ob in zip(a.operators, b.operators):
        assert (ob.op_type, ob.domain, ob.version, ob.name) == (
            oa.op_type, oa.domain, oa.version, oa.name)
        assert list(ob.inputs) == oa.inputs and list(ob.outputs) == oa.outputs
        assert set(ob.attrs) == set(oa.attrs), oa.name
        for key, value in oa.attrs.items():
            _same_attr(value, ob.attrs[key], model_b)


def _round_trip(graph_source, tmp_path):
    _, read_model = _format_or_skip()
    out = tmp_path / "m.edgert"
    data = convert(graph_source, out, check_ops=False, level=0)  # the graph as imported
    assert out.read_bytes() == data
    want = lower(import_onnx(graph_source))
    got = read_model(data)
    _same_subgraph(want.main, got.main, got)
    for key in ("producer", "edgert_version", "source_sha256"):
        assert key in got.metadata
    return got


def test_round_trip_mlp(tmp_path):
    got = _round_trip(_mlp(), tmp_path)
    assert got.metadata["source_producer"] == "maker 2.0" and got.description == "an MLP"


def test_round_trip_control_flow_and_attribute_kinds(tmp_path):
    _round_trip(_if_model(), tmp_path)
    m = parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 8, 8] x) => (float y, float z, string s) {
            y = MaxPool<kernel_shape = [2, 2], strides = [2, 2], auto_pad = "VALID">(x)
            z = LeakyRelu<alpha = 0.2>(x)
            s = Constant<value_strings = ["a", "héllo"]>()
        }""")
    _round_trip(m, tmp_path)


def test_round_trip_old_opset_model(tmp_path):
    import os

    base = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    _round_trip(os.path.join(base, "pytorch-converted", "test_GLU", "model.onnx"), tmp_path)
