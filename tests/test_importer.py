"""The ONNX importer: loading, constants, types, subgraphs, errors, and opset normalization.

Normalizations are checked twice: the rewritten node's inputs/attributes, and numerically — the
imported graph is written back to ONNX at opset 21 (``_export`` below, a test-only writer) and
run in onnxruntime against the original model (where onnxruntime runs the original opset) or
against the expected outputs shipped with the onnx backend test data (PyTorch-made, opset 6).
"""

from __future__ import annotations

import glob
import hashlib
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ATOL, RTOL
from onnx import TensorProto, helper, numpy_helper, parser

from edgert import dtypes
from edgert.errors import ModelImportError, UnsupportedOpError
from edgert.importer import import_onnx
from edgert.ir import Graph

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


# ----- helpers ------------------------------------------------------------------------------------
def _parse(text: str) -> onnx.ModelProto:
    return parser.parse_model(text)


def _model(nodes, inputs, outputs, inits=(), opset=13, ir_version=8, **kw) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits), **kw)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def _vi(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _export_attr(v):
    if isinstance(v, Graph):
        return _export_graph(v)
    if isinstance(v, list) and v and all(isinstance(g, Graph) for g in v):
        return [_export_graph(g) for g in v]
    if isinstance(v, np.ndarray):
        return numpy_helper.from_array(v)
    return v


def _export_graph(g: Graph) -> onnx.GraphProto:
    nodes = []
    for n in g.nodes:
        ins = [x.name if x is not None else "" for x in n.inputs]
        # the outer values bodies read are trailing inputs in the IR, read by name in ONNX
        n_outer = len(n.attrs.get("edgert_outer_inputs") or ())
        ins = ins[: len(ins) - n_outer]
        outs = ["" if o.meta.get("omitted") else o.name for o in n.outputs]
        attrs = {k: _export_attr(v) for k, v in n.attrs.items() if k != "edgert_outer_inputs"}
        if n.op_type in ("Softmax", "LogSoftmax", "Hardmax") and n.version < 13:
            # The opset < 13 meaning: flatten to 2-D at `axis`, normalize rows, restore the shape.
            p = n.name
            nodes += [
                helper.make_node("Flatten", [ins[0]], [p + "_2d"], axis=attrs.pop("axis", 1)),
                helper.make_node(n.op_type, [p + "_2d"], [p + "_r"], axis=-1),
                helper.make_node("Shape", [ins[0]], [p + "_shape"]),
                helper.make_node("Reshape", [p + "_r", p + "_shape"], outs),
            ]
            continue
        nodes.append(helper.make_node(n.op_type, ins, outs, name=n.name, domain=n.domain, **attrs))
    inits = [numpy_helper.from_array(v.const, v.name) for v in g.constants.values()]

    def vi(v):
        return _vi(v.name, v.dtype, v.shape)

    return helper.make_graph(nodes, g.name, [vi(v) for v in g.inputs],
                             [vi(v) for v in g.outputs], inits)


def _export(g: Graph, opset: int = 21) -> onnx.ModelProto:
    """A test-only IR -> ONNX writer: the normalized graph as an opset-21 model."""
    m = helper.make_model(_export_graph(g), opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _same_results(model: onnx.ModelProto, feeds: dict) -> Graph:
    """Import ``model``, rebuild it at opset 21 and check onnxruntime agrees on both."""
    g = import_onnx(model)
    want = _ort(model, feeds)
    got = _ort(_export(g), feeds)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    return g


def _node(g: Graph, op_type: str):
    (n,) = [n for n in g.nodes if n.op_type == op_type]
    return n


def _const(v) -> np.ndarray:
    assert v is not None and v.const is not None, f"{v} is not a constant"
    return v.const


RNG = np.random.default_rng(0)


def _randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ----- loading ------------------------------------------------------------------------------------
def _tiny() -> onnx.ModelProto:
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 17], producer_name: "tester", producer_version: "1.2">
        tiny (float[N, 3] x) => (float[N, 3] y) {
            y = Relu(x)
        }""")
    helper.set_model_props(m, {"author": "me", "license": "MIT"})
    return m


def test_import_from_proto_bytes_and_path_agree(tmp_path):
    m = _tiny()
    data = m.SerializeToString()
    path = tmp_path / "tiny.onnx"
    path.write_bytes(data)
    for src in (m, data, str(path), path):
        g = import_onnx(src)
        assert [v.name for v in g.inputs] == ["x"] and [v.name for v in g.outputs] == ["y"]
        assert g.opset == {"": 17}
        assert g.metadata["onnx.sha256"] == hashlib.sha256(data).hexdigest()
        assert g.metadata["author"] == "me" and g.metadata["license"] == "MIT"
        assert g.metadata["onnx.producer_name"] == "tester"
        assert g.metadata["onnx.producer_version"] == "1.2"
        (n,) = g.nodes
        assert n.op_type == "Relu" and n.version == 17 and n.domain == ""


def test_malformed_bytes_and_missing_files_raise_import_errors(tmp_path):
    with pytest.raises(ModelImportError, match="cannot be parsed"):
        import_onnx(b"\xff\xff\xff\xff not protobuf")
    with pytest.raises(ModelImportError, match="no graph"):
        import_onnx(b"")
    with pytest.raises(ModelImportError, match="no such file"):
        import_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ModelImportError, match="is a folder"):
        import_onnx(str(tmp_path))
    truncated = _tiny().SerializeToString()[:-7]
    with pytest.raises(ModelImportError):
        import_onnx(truncated)
    with pytest.raises(ModelImportError, match="got int"):
        import_onnx(42)


def test_corrupted_models_raise_only_edgert_errors():
    # A few hundred seeded byte flips of an old-opset model: every outcome is an import, a
    # ModelImportError or an UnsupportedOpError; never another exception.
    base = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[4, 6, 5] x) => (float y) {
            t = Slice<starts = [1, -4], ends = [3, 1000], axes = [0, 1]>(x)
            u = Pad<pads = [0, 0, 1, 2, 0, 0, 2, 1], value = 1.0>(t)
            y = Unsqueeze<axes = [0]>(u)
        }""").SerializeToString()
    rng = np.random.default_rng(7)
    outcomes = set()
    for _ in range(300):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        try:
            import_onnx(bytes(data))
            outcomes.add("ok")
        except (ModelImportError, UnsupportedOpError) as exc:
            outcomes.add(type(exc).__name__)
    assert outcomes == {"ok", "ModelImportError", "UnsupportedOpError"}


def test_dangling_reference_duplicate_definition_and_cycle():
    relu = helper.make_node("Relu", ["nowhere"], ["y"], name="r")
    with pytest.raises(ModelImportError, match="Relu 'r' reads 'nowhere'"):
        import_onnx(_model([relu], [_vi("x", shape=[2])], [_vi("y")]))
    out = helper.make_node("Relu", ["x"], ["z"])
    with pytest.raises(ModelImportError, match="output 'y' is not produced"):
        import_onnx(_model([out], [_vi("x", shape=[2])], [_vi("y")]))
    twice = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])]
    with pytest.raises(ModelImportError, match="'y' is defined twice"):
        import_onnx(_model(twice, [_vi("x", shape=[2])], [_vi("y")]))
    cycle = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    with pytest.raises(ModelImportError, match="cycle"):
        import_onnx(_model(cycle, [_vi("x", shape=[2])], [_vi("b")]))


def test_nodes_out_of_order_are_sorted_and_names_generated():
    nodes = [
        helper.make_node("Neg", ["a"], ["y"]),  # reads a value produced below
        helper.make_node("Relu", ["x"], ["a"], name="dup"),
        helper.make_node("Abs", ["y"], ["z"], name="dup"),
        helper.make_node("Relu", ["z"], ["w"], name="Relu_3"),
    ]
    g = import_onnx(_model(nodes, [_vi("x", shape=[2])], [_vi("w")]))
    assert [n.op_type for n in g.nodes] == ["Relu", "Neg", "Abs", "Relu"]
    names = [n.name for n in g.nodes]
    assert names == ["dup", "Neg_0", "dup_1", "Relu_3"]


def test_shape_annotations_keep_symbols_and_unknowns():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["r"], ["z"])]
    m = _model(nodes, [_vi("x", shape=["batch", 3, None]), _vi("r", shape=None),
                       _vi("s", TensorProto.INT64, shape=[])],
               [_vi("y", shape=["batch", 3, None]), _vi("z")], opset=17)
    g = import_onnx(m)
    x, r, s = g.inputs
    assert x.shape == ["batch", 3, None] and x.dtype == dtypes.FLOAT
    assert r.shape is None and r.rank is None  # unknown rank
    assert s.shape == [] and s.dtype == dtypes.INT64  # a scalar
    assert g.outputs[0].shape == ["batch", 3, None]


def test_shape_inference_fills_intermediates_and_failure_is_not_fatal(monkeypatch):
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float y) {
            t = Transpose<perm = [1, 0]>(x)
            y = Relu(t)
        }""")
    g = import_onnx(m)
    t = g.nodes[0].outputs[0]
    assert t.shape == [4, "N"] and t.dtype == dtypes.FLOAT

    def broken(*args, **kwargs):
        raise RuntimeError("inference exploded")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    g = import_onnx(m)
    assert g.nodes[0].outputs[0].shape is None and len(g.nodes) == 2


# ----- constants ----------------------------------------------------------------------------------
def test_initializers_listed_as_inputs_are_constants():
    w = _randn(3, 3)
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [_vi("x", shape=[2, 3]), _vi("w", shape=[3, 3])],
        [_vi("y")],
        [numpy_helper.from_array(w, "w")],
        opset=7, ir_version=3,
    )
    g = import_onnx(m)
    assert [v.name for v in g.inputs] == ["x"]
    np.testing.assert_array_equal(g.constants["w"].const, w)
    assert g.nodes[0].inputs[1] is g.constants["w"]


def test_constant_nodes_of_every_kind():
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 7.0], np.float32), "sv"),
        numpy_helper.from_array(np.array([1, 4], np.int64), "si"),
        [2, 3],
    )
    kinds = {
        "c_value": {"value": numpy_helper.from_array(np.arange(6, dtype=np.int32).reshape(2, 3))},
        "c_float": {"value_float": 1.5},
        "c_floats": {"value_floats": [1.0, -2.5]},
        "c_int": {"value_int": -3},
        "c_ints": {"value_ints": [4, 5, 6]},
        "c_string": {"value_string": "héllo"},
        "c_strings": {"value_strings": ["a", "bc"]},
        "c_sparse": {"sparse_value": sparse},
    }
    nodes = [helper.make_node("Constant", [], [name], **kw) for name, kw in kinds.items()]
    nodes += [helper.make_node("Identity", [name], [name + "_out"]) for name in kinds]
    outs = [_vi(name + "_out", TensorProto.UNDEFINED) for name in kinds]
    g = import_onnx(_model(nodes, [], outs, opset=17))
    c = g.constants
    assert set(kinds) <= set(c)
    assert all(n.op_type == "Identity" for n in g.nodes)  # no Constant node survives
    np.testing.assert_array_equal(c["c_value"].const, np.arange(6, dtype=np.int32).reshape(2, 3))
    assert c["c_value"].dtype == dtypes.INT32
    assert c["c_float"].const.shape == () and c["c_float"].const.dtype == np.float32
    assert c["c_float"].const == np.float32(1.5)
    np.testing.assert_array_equal(c["c_floats"].const, np.array([1.0, -2.5], np.float32))
    assert c["c_int"].const.shape == () and c["c_int"].const == -3
    assert c["c_int"].const.dtype == np.int64
    np.testing.assert_array_equal(c["c_ints"].const, np.array([4, 5, 6], np.int64))
    assert c["c_string"].const.shape == () and c["c_string"].const.item() == "héllo"
    assert c["c_string"].dtype == dtypes.STRING
    assert list(c["c_strings"].const) == ["a", "bc"]
    dense = np.zeros((2, 3), np.float32)
    dense.reshape(-1)[[1, 4]] = [5.0, 7.0]
    np.testing.assert_array_equal(c["c_sparse"].const, dense)


def test_scalar_initializers_stay_scalars():
    m = _model(
        [helper.make_node("Add", ["x", "s"], ["y"])],
        [_vi("x", shape=[2])], [_vi("y")],
        [numpy_helper.from_array(np.array(2.0, np.float32), "s")],
    )
    g = import_onnx(m)
    assert g.constants["s"].const.shape == () and g.constants["s"].shape == []


def test_sparse_initializer_is_densified():
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "w"),
        numpy_helper.from_array(np.array([[0, 1], [1, 0], [2, 2]], np.int64), "w_idx"),
        [3, 3],
    )
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", shape=[1, 3])],
               [_vi("y")], sparse_initializer=[sparse])
    g = import_onnx(m)
    want = np.zeros((3, 3), np.float32)
    want[0, 1], want[1, 0], want[2, 2] = 1.0, 2.0, 3.0
    np.testing.assert_array_equal(g.constants["w"].const, want)


def test_bfloat16_constants_keep_their_bits():
    t = helper.make_tensor("b", TensorProto.BFLOAT16, [2], [1.0, -2.0])
    m = _model([helper.make_node("Identity", ["b"], ["y"])], [], [_vi("y", TensorProto.BFLOAT16)],
               [t])
    g = import_onnx(m)
    c = g.constants["b"]
    assert c.dtype == dtypes.BFLOAT16 and c.const.dtype == np.uint16
    # bfloat16 is the top half of float32.
    want = (np.array([1.0, -2.0], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(c.const, want)


def test_unsupported_constant_type_is_reported():
    t = helper.make_tensor("q", TensorProto.FLOAT6E2M3, [2], [1.0, -2.0])
    m = _model([helper.make_node("Identity", ["q"], ["y"])], [], [_vi("y", TensorProto.FLOAT6E2M3)],
               [t], opset=21)
    with pytest.raises(ModelImportError, match="initializer 'q': element type float6e2m3"):
        import_onnx(m)


# ----- external data ------------------------------------------------------------------------------
def _external_model(tmp_path):
    w = _randn(64, 32)
    b = _randn(32)
    m = _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        [_vi("x", shape=["N", 64])], [_vi("y", shape=["N", 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.bin", size_threshold=64)
    return path, w, b


def test_external_data_is_read_relative_to_the_model(tmp_path):
    path, w, b = _external_model(tmp_path)
    proto = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)
    for g in (import_onnx(path), import_onnx(proto, base_dir=tmp_path)):
        np.testing.assert_array_equal(g.constants["w"].const, w)
        np.testing.assert_array_equal(g.constants["b"].const, b)
    with pytest.raises(ModelImportError, match="without its folder"):
        import_onnx(proto)


def test_missing_truncated_or_escaping_external_data(tmp_path):
    path, _, _ = _external_model(tmp_path)
    bin_path = tmp_path / "ext.bin"
    data = bin_path.read_bytes()
    bin_path.write_bytes(data[:100])
    with pytest.raises(ModelImportError, match="needs bytes"):
        import_onnx(path)
    bin_path.unlink()
    with pytest.raises(ModelImportError, match="external data file 'ext.bin' not found"):
        import_onnx(path)
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.bin"
    with pytest.raises(ModelImportError, match="outside the model's folder"):
        import_onnx(proto, base_dir=tmp_path)


# ----- attributes, outputs, functions -------------------------------------------------------------
def test_attribute_values_are_plain_python():
    node = helper.make_node(
        "Custom", ["x"], ["y"], domain="",
        f=0.5, i=3, s="text", floats=[1.0, 2.0], ints=[1, 2], strings=["a", "b"],
        t=numpy_helper.from_array(np.array([1, 2], np.int64)),
    )
    m = _model([node], [_vi("x", shape=[1])], [_vi("y")])
    with pytest.raises(UnsupportedOpError):  # not an ONNX op, but attributes still convert
        import_onnx(m)
    from edgert.importer.onnx_import import _Importer

    imp = _Importer(m, None, "")
    g = imp._graph(m.graph, None, "g")
    attrs = g.nodes[0].attrs
    assert attrs["f"] == 0.5 and attrs["i"] == 3 and attrs["s"] == "text"
    assert attrs["floats"] == [1.0, 2.0] and attrs["ints"] == [1, 2]
    assert attrs["strings"] == ["a", "b"]
    np.testing.assert_array_equal(attrs["t"], [1, 2])


def test_omitted_optional_outputs():
    # LSTM with Y omitted but Y_h present, Y_c not requested (trailing).
    hidden, inp = 4, 3
    w = numpy_helper.from_array(_randn(1, 4 * hidden, inp), "W")
    r = numpy_helper.from_array(_randn(1, 4 * hidden, hidden), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["", "y_h"], hidden_size=hidden)
    m = _model([node], [_vi("x", shape=[5, 2, inp])], [_vi("y_h", shape=[1, 2, hidden])], [w, r])
    g = import_onnx(m)
    n = g.nodes[0]
    assert len(n.outputs) == 2 and n.outputs[0].meta.get("omitted") and n.outputs[1].name == "y_h"


def test_local_functions_are_inlined():
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[2] x) => (float[2] y) {
            y = local.Twice(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        Twice (a) => (b) {
            b = Add(a, a)
        }""")
    g = import_onnx(m)
    assert [n.op_type for n in g.nodes] == ["Add"]
    x = _randn(2)
    np.testing.assert_allclose(_ort(_export(g), {"x": x})[0], 2 * x, rtol=RTOL, atol=ATOL)


# ----- subgraphs ----------------------------------------------------------------------------------
def test_if_branches_read_outer_values():
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (bool c, float[2, 3] x) => (float[2, 3] y) <float[2, 3] w = {1,2,3,4,5,6}> {
            h = Relu(x)
            y = If(c) <
                then_branch = t () => (float[2, 3] a) { a = Add(h, w) },
                else_branch = e () => (float[2, 3] b) { b = Neg(h) }
            >
        }""")
    g = import_onnx(m)
    (if_node,) = [n for n in g.nodes if n.op_type == "If"]
    then_g, else_g = if_node.attrs["then_branch"], if_node.attrs["else_branch"]
    assert isinstance(then_g, Graph) and isinstance(else_g, Graph)
    # the outer constant w becomes the branch's own constant (planned as known), h stays an
    # outer value
    assert then_g.outer_inputs == ["h"] and else_g.outer_inputs == ["h"]
    assert then_g.inputs == [] and [v.name for v in then_g.outputs] == ["a"]
    add = then_g.nodes[0]
    assert [v.name for v in add.inputs] == ["h", "w"]
    np.testing.assert_array_equal(add.inputs[1].const, np.arange(1, 7, dtype=np.float32)
                                  .reshape(2, 3))
    assert then_g.constants["w"] is add.inputs[1]
    x = _randn(2, 3)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        np.testing.assert_allclose(_ort(_export(g), feeds)[0], _ort(m, feeds)[0],
                                   rtol=RTOL, atol=ATOL)


def test_nested_bodies_propagate_outer_inputs_and_are_normalized():
    # Loop (opset 11) whose body holds an If whose branch reads a main-graph value and uses the
    # opset-11 Unsqueeze form (axes attribute), which must be rewritten inside the body.
    m = _parse("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (int64 n, float[3] x) => (float[3] out, float[K, 1, 3] scan) {
            keep = Constant<value = bool {1}>()
            z = Relu(x)
            out, scan = Loop(n, keep, x) <body = body (int64 i, bool cond, float[3] acc)
                    => (bool cond_out, float[3] acc_out, float[1, 3] s) {
                cond_out = Identity(cond)
                acc_out = Add(acc, z)
                pos = Greater(i, i)
                s = If(pos) <
                    then_branch = t () => (float[1, 3] a) { a = Unsqueeze<axes = [0]>(z) },
                    else_branch = e () => (float[1, 3] b) { b = Unsqueeze<axes = [0]>(acc_out) }
                >
            }>
        }""")
    g = import_onnx(m)
    loop = _node(g, "Loop")
    body = loop.attrs["body"]
    assert [v.name for v in body.inputs] == ["i", "cond", "acc"]
    assert body.outer_inputs == ["z"]
    inner_if = _node(body, "If")
    then_g = inner_if.attrs["then_branch"]
    assert then_g.outer_inputs == ["z"]
    assert inner_if.attrs["else_branch"].outer_inputs == ["acc_out"]
    unsq = then_g.nodes[0]
    assert unsq.version == 13 and "axes" not in unsq.attrs
    np.testing.assert_array_equal(_const(unsq.inputs[1]), [0])
    feeds = {"n": np.array(3, np.int64), "x": _randn(3)}
    for a, b in zip(_ort(_export(g), feeds), _ort(m, feeds)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# ----- unsupported operators ----------------------------------------------------------------------
def test_unsupported_ops_are_reported_all_at_once():
    nodes = [
        helper.make_node("FancyOp", ["x"], ["a"], name="fancy1"),
        helper.make_node("FancyOp", ["a"], ["b"], name="fancy2"),
        helper.make_node("LabelDecoder", ["b"], ["c"], name="ml", domain="ai.onnx.ml"),
        helper.make_node("Relu", ["c"], ["d"], domain="com.example"),
        helper.make_node("BatchNormalization", ["d", "s", "s", "s", "s"], ["e"], name="bn",
                         spatial=0),
        helper.make_node("Gelu", ["e"], ["y"], name="gelu"),
    ]
    s = numpy_helper.from_array(np.ones(3, np.float32), "s")
    g = helper.make_graph(nodes, "g", [_vi("x", shape=[1, 3])], [_vi("y")], [s])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 8),
                                            helper.make_opsetid("ai.onnx.ml", 2)])
    m.ir_version = 7
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(m)
    ops = info.value.ops
    assert [(op, name) for op, name, _ in ops] == [
        ("FancyOp", "fancy1"), ("FancyOp", "fancy2"), ("LabelDecoder", "ml"),
        ("Relu", "Relu_3"), ("BatchNormalization", "bn"), ("Gelu", "gelu"),
    ]
    msg = str(info.value)
    assert "6 node(s)" in msg and "FancyOp ×2" in msg and "LabelDecoder ×1" in msg
    assert "not an ONNX operator" in msg
    assert "'LabelDecoder' is not an ai.onnx.ml operator at opset 2" in msg
    assert "ai.onnx.ml opsets 1 to 5" in msg  # the advice fits each domain
    assert "added in opset 20" in msg
    assert "domain 'com.example' is not declared" in msg
    assert "spatial=0" in msg
    assert "edgert imports operators of the ONNX default domain" in msg


# ----- opset normalization: numerics against onnxruntime on the original opset --------------------
def test_slice_1_attributes_become_inputs():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[4, 6, 5] x) => (float y) {
            y = Slice<starts = [1, -4], ends = [3, 1000], axes = [0, 1]>(x)
        }""")
    g = _same_results(m, {"x": _randn(4, 6, 5)})
    n = g.nodes[0]
    assert n.version == 10 and n.attrs == {}
    np.testing.assert_array_equal(_const(n.inputs[1]), [1, -4])
    np.testing.assert_array_equal(_const(n.inputs[2]), [3, 1000])
    np.testing.assert_array_equal(_const(n.inputs[3]), [0, 1])
    assert all(_const(v).dtype == np.int64 for v in n.inputs[1:])


@pytest.mark.parametrize("opset", [9, 11])
def test_squeeze_unsqueeze_axes_become_inputs(opset):
    m = _parse(f"""
        <ir_version: 6, opset_import: ["" : {opset}]>
        g (float[3, 1, 4] x) => (float y, float z) {{
            y = Squeeze<axes = [1]>(x)
            z = Unsqueeze<axes = [0, 3]>(x)
        }}""")
    g = _same_results(m, {"x": _randn(3, 1, 4)})
    sq, unsq = _node(g, "Squeeze"), _node(g, "Unsqueeze")
    assert sq.version == unsq.version == 13 and sq.attrs == {} and unsq.attrs == {}
    np.testing.assert_array_equal(_const(sq.inputs[1]), [1])
    np.testing.assert_array_equal(_const(unsq.inputs[1]), [0, 3])


def test_squeeze_without_axes_gets_no_input():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[3, 1, 4, 1] x) => (float y) { y = Squeeze(x) }""")
    g = _same_results(m, {"x": _randn(3, 1, 4, 1)})
    assert len(g.nodes[0].inputs) == 1 and g.nodes[0].version == 13


@pytest.mark.parametrize(
    "op, opset, version",
    [("ReduceSum", 11, 13), ("ReduceMean", 13, 18), ("ReduceMax", 9, 18), ("ReduceL2", 13, 18),
     ("ReduceLogSumExp", 11, 18), ("ReduceProd", 13, 18)],
)
def test_reduce_axes_become_inputs(op, opset, version):
    m = _parse(f"""
        <ir_version: 7, opset_import: ["" : {opset}]>
        g (float[2, 3, 4] x) => (float y, float z) {{
            y = {op}<axes = [0, -1], keepdims = 0>(x)
            z = {op}(x)
        }}""")
    g = _same_results(m, {"x": _randn(2, 3, 4)})
    with_axes, without = g.nodes
    assert with_axes.version == without.version == version
    assert with_axes.attrs == {"keepdims": 0}
    np.testing.assert_array_equal(_const(with_axes.inputs[1]), [0, -1])
    assert len(without.inputs) == 1  # reduce over every axis, as before


def test_split_attribute_and_equal_split():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[6, 4] x) => (float a, float b, float c, float d, float e) {
            a, b = Split<axis = 0, split = [2, 4]>(x)
            c, d, e = Split<axis = 0>(x)
        }""")
    g = _same_results(m, {"x": _randn(6, 4)})
    sized, equal = g.nodes
    assert sized.version == 13 and "split" not in sized.attrs
    np.testing.assert_array_equal(_const(sized.inputs[1]), [2, 4])
    assert equal.version == 18 and equal.attrs == {"axis": 0, "num_outputs": 3}
    assert len(equal.inputs) == 1


def test_split_13_equal_split_gets_num_outputs():
    m = _parse("""
        <ir_version: 7, opset_import: ["" : 13]>
        g (float[4, 6] x) => (float a, float b) { a, b = Split<axis = 1>(x) }""")
    g = _same_results(m, {"x": _randn(4, 6)})
    assert g.nodes[0].attrs["num_outputs"] == 2 and g.nodes[0].version == 18


@pytest.mark.parametrize("mode, value", [("constant", 1.5), ("constant", 0.0), ("reflect", 0.0),
                                         ("edge", 0.0)])
def test_pad_2_attributes_become_inputs(mode, value):
    m = _parse(f"""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[1, 2, 4, 5] x) => (float y) {{
            y = Pad<mode = "{mode}", pads = [0, 0, 1, 2, 0, 0, 2, 1], value = {value}>(x)
        }}""")
    g = _same_results(m, {"x": _randn(1, 2, 4, 5)})
    n = g.nodes[0]
    assert n.version == 11 and n.attrs == {"mode": mode}
    np.testing.assert_array_equal(_const(n.inputs[1]), [0, 0, 1, 2, 0, 0, 2, 1])
    if value:
        assert _const(n.inputs[2]).dtype == np.float32 and _const(n.inputs[2]) == value
    else:
        assert len(n.inputs) == 2


@pytest.mark.parametrize("attrs, present", [("min = -0.5, max = 0.25", 3), ("max = 0.5", 3),
                                            ("min = 0.1", 2)])
def test_clip_6_bounds_become_inputs(attrs, present):
    m = _parse(f"""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[3, 4] x) => (float y) {{ y = Clip<{attrs}>(x) }}""")
    g = _same_results(m, {"x": _randn(3, 4)})
    n = g.nodes[0]
    assert n.version == 11 and n.attrs == {} and len(n.inputs) == present
    assert all(_const(v).shape == () and _const(v).dtype == np.float32 for v in n.inputs[1:])


def test_dropout_ratio_becomes_input_and_unused_mask_is_dropped():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[3, 4] x) => (float y) {
            y, mask = Dropout<ratio = 0.3>(x)
        }""")
    g = _same_results(m, {"x": _randn(3, 4)})
    n = g.nodes[0]
    assert n.version == 12 and n.attrs == {} and len(n.outputs) == 1
    assert _const(n.inputs[1]).dtype == np.float32
    np.testing.assert_allclose(_const(n.inputs[1]), 0.3)


def test_dropout_6_used_mask_is_cast_back_to_the_input_type():
    m = _parse("""
        <ir_version: 3, opset_import: ["" : 6]>
        g (float[3, 4] x) => (float y, float m) {
            y, m = Dropout<is_test = 1>(x)
        }""")
    g = import_onnx(m)
    drop, cast = g.nodes
    assert drop.op_type == "Dropout" and drop.version == 12 and "is_test" not in drop.attrs
    assert cast.op_type == "Cast" and cast.attrs == {"to": TensorProto.FLOAT}
    assert cast.inputs[0] is drop.outputs[1] and cast.outputs[0] is g.outputs[1]
    # In inference Dropout-12 passes X through with an all-true mask: the Cast gives ones.
    x = _randn(3, 4)
    y, mask = _ort(_export(g), {"x": x})
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(mask, np.ones((3, 4), np.float32))


def test_batchnorm_7_spatial_is_dropped():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 7]>
        g (float[2, 3, 4] x, float[3] s, float[3] b, float[3] mu, float[3] var) => (float y) {
            y = BatchNormalization<spatial = 1, epsilon = 0.001>(x, s, b, mu, var)
        }""")
    var = np.abs(_randn(3)) + 0.5
    g = _same_results(m, {"x": _randn(2, 3, 4), "s": _randn(3), "b": _randn(3),
                          "mu": _randn(3), "var": var})
    n = g.nodes[0]
    assert n.version == 9 and set(n.attrs) == {"epsilon"}


@pytest.mark.parametrize("outputs", ["y, mean", "y, m, v, sm, sv"])
def test_batchnorm_training_outputs_are_reported(outputs):
    # Declaring the statistics outputs selects training mode before opset 14, used or not.
    m = _parse(f"""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[2, 3] x, float[3] s) => (float y) {{
            {outputs} = BatchNormalization(x, s, s, s, s)
        }}""")
    with pytest.raises(UnsupportedOpError, match="training-mode BatchNormalization"):
        import_onnx(m)


def test_batchnorm_6_in_test_mode_drops_unused_outputs():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"],
                              ["y", "m", "v"], is_test=1, epsilon=1e-3)]
    s = numpy_helper.from_array(np.array([0.5, 2.0, 1.5], np.float32), "s")
    m = _model(nodes, [_vi("x", shape=[2, 3])], [_vi("y")], [s], opset=6, ir_version=3)
    g = import_onnx(m)
    (n,) = g.nodes
    assert len(n.outputs) == 1 and n.version == 9
    assert n.attrs == {"epsilon": float(np.float32(1e-3))}  # ONNX float attributes are float32
    x = _randn(2, 3)
    sv = np.array([0.5, 2.0, 1.5], np.float32)
    want = sv * (x - sv) / np.sqrt(sv + np.float32(1e-3)) + sv
    np.testing.assert_allclose(_ort(_export(g), {"x": x})[0], want, rtol=RTOL, atol=ATOL)
    next(a for a in m.graph.node[0].attribute if a.name == "is_test").i = 0  # training mode
    with pytest.raises(UnsupportedOpError, match="training-mode"):
        import_onnx(m)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 1.5, 2.5]])
def test_upsample_7_and_9_become_resize(mode, scales):
    x = _randn(1, 2, 5, 7)
    s = ", ".join(str(float(v)) for v in scales)
    m7 = _parse(f"""
        <ir_version: 4, opset_import: ["" : 7]>
        g (float[1, 2, 5, 7] x) => (float y) {{ y = Upsample<mode = "{mode}", scales = [{s}]>(x) }}
        """)
    m9 = _parse(f"""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[1, 2, 5, 7] x) => (float y) <float[4] sc = {{{s}}}> {{
            y = Upsample<mode = "{mode}">(x, sc)
        }}""")
    for m in (m7, m9):
        g = _same_results(m, {"x": x})
        n = g.nodes[0]
        assert n.op_type == "Resize" and n.version == 13
        assert n.inputs[1] is None
        np.testing.assert_array_equal(_const(n.inputs[2]), np.array(scales, np.float32))
        assert n.attrs["coordinate_transformation_mode"] == "asymmetric"
        assert n.attrs["mode"] == mode
        if mode == "nearest":
            assert n.attrs["nearest_mode"] == "floor"


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales, rounding", [([1, 1, 1.7, 2.5], "floor"),
                                              ([1, 1, 0.6, 0.5], "ceil")])
def test_resize_10_becomes_resize_13(mode, scales, rounding):
    s = ", ".join(str(float(v)) for v in scales)
    m = _parse(f"""
        <ir_version: 5, opset_import: ["" : 10]>
        g (float[1, 2, 5, 7] x) => (float y) <float[4] sc = {{{s}}}> {{
            y = Resize<mode = "{mode}">(x, sc)
        }}""")
    g = _same_results(m, {"x": _randn(1, 2, 5, 7)})
    n = g.nodes[0]
    assert n.version == 13 and n.inputs[1] is None and n.inputs[2].name == "sc"
    if mode == "nearest":
        assert n.attrs["nearest_mode"] == rounding


def test_resize_11_empty_roi_and_scales_are_omitted():
    m = _parse("""
        <ir_version: 6, opset_import: ["" : 11]>
        g (float[1, 1, 3, 4] x) => (float y) <float[0] roi = {}, float[0] sc = {},
                                             int64[4] sz = {1, 1, 5, 7}> {
            y = Resize<mode = "linear">(x, roi, sc, sz)
        }""")
    g = _same_results(m, {"x": _randn(1, 1, 3, 4)})
    n = g.nodes[0]
    assert n.version == 13 and n.inputs[1] is None and n.inputs[2] is None
    assert n.inputs[3].name == "sz"


def test_topk_1_k_becomes_input():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[3, 6] x) => (float v, int64 i) { v, i = TopK<k = 2>(x) }""")
    g = _same_results(m, {"x": _randn(3, 6)})
    n = g.nodes[0]
    assert n.version == 10 and n.attrs == {}
    np.testing.assert_array_equal(_const(n.inputs[1]), [2])


def test_scatter_becomes_scatter_elements():
    m = _parse("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[3, 3] x, int64[1, 2] i, float[1, 2] u) => (float y) {
            y = Scatter<axis = 1>(x, i, u)
        }""")
    g = _same_results(m, {"x": _randn(3, 3), "i": np.array([[1, 2]], np.int64),
                          "u": _randn(1, 2)})
    assert g.nodes[0].op_type == "ScatterElements" and g.nodes[0].version == 11


def test_grid_sample_16_modes_are_renamed():
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 16]>
        g (float[1, 1, 4, 5] x, float[1, 3, 2, 2] grid) => (float y) {
            y = GridSample<mode = "bilinear", align_corners = 1>(x, grid)
        }""")
    grid = RNG.uniform(-1, 1, (1, 3, 2, 2)).astype(np.float32)
    g = _same_results(m, {"x": _randn(1, 1, 4, 5), "grid": grid})
    assert g.nodes[0].attrs["mode"] == "linear" and g.nodes[0].version == 20


def test_roi_align_10_keeps_output_half_pixel():
    m = _parse("""
        <ir_version: 7, opset_import: ["" : 10]>
        g (float[1, 2, 6, 6] x, float[2, 4] rois, int64[2] bi) => (float y) {
            y = RoiAlign<output_height = 2, output_width = 3, sampling_ratio = 2,
                         spatial_scale = 0.5>(x, rois, bi)
        }""")
    rois = np.array([[0, 0, 7, 9], [1, 2, 5, 6]], np.float32)
    g = _same_results(m, {"x": _randn(1, 2, 6, 6), "rois": rois, "bi": np.zeros(2, np.int64)})
    n = g.nodes[0]
    assert n.version == 16 and n.attrs["coordinate_transformation_mode"] == "output_half_pixel"


def test_dft_17_axis_becomes_input():
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8, 3, 1] x) => (float y) { y = DFT<axis = 1, onesided = 1>(x) }""")
    g = _same_results(m, {"x": _randn(2, 8, 3, 1)})
    n = g.nodes[0]
    assert n.version == 20 and n.attrs == {"onesided": 1} and n.inputs[1] is None
    assert _const(n.inputs[2]).shape == () and _const(n.inputs[2]) == 1


def test_group_normalization_18_scale_becomes_per_channel():
    m = _parse("""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[2, 6, 3] x) => (float y) <float[3] s = {1.0, 2.0, -1.0},
                                          float[3] b = {0.5, 0, 1}> {
            y = GroupNormalization<num_groups = 3>(x, s, b)
        }""")
    g = _same_results(m, {"x": _randn(2, 6, 3)})
    n = g.nodes[0]
    assert n.version == 21
    np.testing.assert_array_equal(_const(n.inputs[1]), [1, 1, 2, 2, -1, -1])
    np.testing.assert_array_equal(_const(n.inputs[2]), [0.5, 0.5, 0, 0, 1, 1])


def test_softmax_before_13_keeps_its_form_and_version():
    m = _parse("""
        <ir_version: 6, opset_import: ["" : 11]>
        g (float[2, 3, 4] x) => (float y, float z) {
            y = Softmax<axis = 1>(x)
            z = LogSoftmax(x)
        }""")
    g = _same_results(m, {"x": _randn(2, 3, 4)})
    sm, lsm = g.nodes
    assert sm.version == 11 and sm.attrs == {"axis": 1} and len(sm.inputs) == 1
    assert lsm.version == 11 and lsm.attrs == {}


def test_untouched_nodes_carry_the_model_opset():
    m = _parse("""
        <ir_version: 7, opset_import: ["" : 12]>
        g (float[2, 3] x) => (float y) {
            c = Cast<to = 7>(x)
            y = Cast<to = 1>(c)
        }""")
    g = _same_results(m, {"x": _randn(2, 3) * 4})
    assert [n.version for n in g.nodes] == [12, 12]
    assert g.nodes[0].attrs == {"to": TensorProto.INT64}


# ----- opset normalization: forms onnxruntime no longer runs --------------------------------------
def test_legacy_broadcast_with_axis():
    b = _randn(3, 4)
    nodes = [helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1),
             helper.make_node("Mul", ["x", "x2"], ["z"], broadcast=1, axis=0)]
    m = _model(nodes, [_vi("x", shape=[2, 3, 4, 5]), _vi("x2", shape=[2])],
               [_vi("y"), _vi("z")], [numpy_helper.from_array(b, "b")], opset=6, ir_version=3)
    g = import_onnx(m)
    add, unsq, mul = g.nodes
    assert add.version == 7 and add.attrs == {}
    assert add.inputs[1].const.shape == (3, 4, 1)  # aligned at axis 1 of a rank-4 A
    assert unsq.op_type == "Unsqueeze" and mul.inputs[1] is unsq.outputs[0]
    np.testing.assert_array_equal(_const(unsq.inputs[1]), [1, 2, 3])
    x, x2 = _randn(2, 3, 4, 5), _randn(2)
    y, z = _ort(_export(g), {"x": x, "x2": x2})
    np.testing.assert_allclose(y, x + b[None, :, :, None], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(z, x * x2[:, None, None, None], rtol=RTOL, atol=ATOL)


def test_legacy_forms_before_opset_7():
    nodes = [
        helper.make_node("Reshape", ["x"], ["r"], shape=[4, 6]),
        helper.make_node("Concat", ["r", "r"], ["c"]),  # Concat-1's default axis is 1
        helper.make_node("Gemm", ["c", "w", "bias"], ["g"], broadcast=1, transB=1),
        helper.make_node("Cast", ["g"], ["y"], to="DOUBLE"),
        helper.make_node("Tile", ["x", "tiles", "axis"], ["t"]),
        helper.make_node("Relu", ["t"], ["z"], consumed_inputs=[0]),
    ]
    inits = [
        numpy_helper.from_array(_randn(5, 12), "w"),
        numpy_helper.from_array(_randn(5), "bias"),
        numpy_helper.from_array(np.array(3, np.int64), "tiles"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
    ]
    m = _model(nodes, [_vi("x", shape=[2, 3, 4])], [_vi("y", TensorProto.DOUBLE), _vi("z")], inits,
               opset=1,
               ir_version=3)
    g = import_onnx(m)
    reshape, concat, gemm, cast, tile, relu = g.nodes
    np.testing.assert_array_equal(_const(reshape.inputs[1]), [4, 6])
    assert reshape.version == 5 and reshape.attrs == {}
    assert concat.attrs == {"axis": 1} and concat.version == 4
    assert gemm.attrs == {"transB": 1} and gemm.version == 7
    assert cast.attrs == {"to": TensorProto.DOUBLE} and cast.version == 6
    np.testing.assert_array_equal(_const(tile.inputs[1]), [1, 3, 1])
    assert len(tile.inputs) == 2 and tile.version == 6
    assert relu.attrs == {} and relu.version == 1
    x = _randn(2, 3, 4)
    got_y, got_z = _ort(_export(g), {"x": x})
    r = x.reshape(4, 6)
    c = np.concatenate([r, r], axis=1)
    want_y = (c @ _const(gemm.inputs[1]).T + _const(gemm.inputs[2])).astype(np.float64)
    np.testing.assert_allclose(got_y, want_y, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_z, np.maximum(np.tile(x, (1, 3, 1)), 0), rtol=RTOL, atol=ATOL)


def test_image_scaler_becomes_mul_and_add():
    node = helper.make_node("ImageScaler", ["x"], ["y"], scale=0.5, bias=[1.0, -2.0, 3.0])
    m = _model([node], [_vi("x", shape=[1, 3, 2, 2])], [_vi("y", shape=[1, 3, 2, 2])], opset=8,
               ir_version=3)
    g = import_onnx(m)
    assert [n.op_type for n in g.nodes] == ["Mul", "Add"]
    assert g.outputs[0] is g.nodes[1].outputs[0]
    x = _randn(1, 3, 2, 2)
    want = 0.5 * x + np.array([1.0, -2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(_ort(_export(g), {"x": x})[0], want, rtol=RTOL, atol=ATOL)


def test_lp_pool_1_integer_p_and_scan_8_is_declined():
    m = _model([helper.make_node("GlobalLpPool", ["x"], ["y"], p=3.0)],
               [_vi("x", shape=[1, 2, 3, 3])], [_vi("y")], opset=1, ir_version=3)
    g = import_onnx(m)
    assert g.nodes[0].attrs == {"p": 3} and g.nodes[0].version == 2
    body = helper.make_graph([helper.make_node("Identity", ["s"], ["s2"])], "body",
                             [_vi("s", shape=[1])], [_vi("s2", shape=[1])])
    scan = helper.make_node("Scan", ["", "x"], ["y"], body=body, num_scan_inputs=0, name="scan")
    m = _model([scan], [_vi("x", shape=[1, 1])], [_vi("y")], opset=8, ir_version=3)
    with pytest.raises(UnsupportedOpError, match="Scan-8"):
        import_onnx(m)


# ----- the models shipped with the onnx wheel -----------------------------------------------------
def _backend_models(kind: str) -> list[str]:
    return sorted(glob.glob(os.path.join(DATA, kind, "*", "model.onnx")))


LIGHT = sorted(glob.glob(os.path.join(DATA, "light", "*.onnx")))
TORCH = _backend_models("pytorch-converted") + _backend_models("pytorch-operator")


def test_backend_light_models_import():
    assert len(LIGHT) >= 9
    for path in LIGHT:
        g = import_onnx(path)
        m = onnx.load(path, load_external_data=False)
        assert [v.name for v in g.outputs] == [o.name for o in m.graph.output]
        # IR 3: weights are initializers repeated as inputs; only the image stays an input.
        assert len(g.inputs) == 1
        assert all(n.version >= 9 for n in g.nodes)
        assert not any(n.op_type == "Unsqueeze" and "axes" in n.attrs for n in g.nodes)


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet"])
def test_backend_light_models_rebuilt_agree_in_onnxruntime(name):
    path = os.path.join(DATA, "light", f"{name}.onnx")
    x = _randn(1, 3, 224, 224)
    model = onnx.load(path)
    g = import_onnx(model)
    (image,) = g.inputs
    (want,) = _ort(model, {image.name: x})
    (got,) = _ort(_export(g), {image.name: x})
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("path", TORCH, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_backend_pytorch_models_match_their_expected_outputs(path):
    """Opset-6/9 PyTorch exports, rebuilt at opset 21, reproduce PyTorch's outputs."""
    g = import_onnx(path)
    data = os.path.join(os.path.dirname(path), "test_data_set_0")
    inputs = [numpy_helper.to_array(onnx.load_tensor(p))
              for p in sorted(glob.glob(os.path.join(data, "input_*.pb")))]
    expected = [numpy_helper.to_array(onnx.load_tensor(p))
                for p in sorted(glob.glob(os.path.join(data, "output_*.pb")))]
    feeds = dict(zip((v.name for v in g.inputs), inputs))
    got = _ort(_export(g), feeds)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)


def test_backend_simple_models():
    # The training-domain Gradient op is expanded into backward nodes (importer/gradient.py).
    for path in _backend_models("simple"):
        name = os.path.basename(os.path.dirname(path))
        g = import_onnx(path)
        if name.startswith("test_gradient"):
            assert "Gradient" not in g.op_histogram()


def test_layer_normalization_before_opset_17_imports_with_a_warning():
    """onnxruntime's transformers optimizer writes LayerNormalization under opset 14."""
    s = numpy_helper.from_array(np.ones(3, np.float32), "s")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    g = helper.make_graph([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"],
                                            name="ln", epsilon=1e-5)],
                          "g", [_vi("x", shape=[2, 3])], [_vi("y", shape=[2, 3])], [s, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    with pytest.warns(UserWarning, match="LayerNormalization 'ln' is used under ai.onnx opset 14"):
        graph = import_onnx(m)
    assert graph.nodes[0].version == 17
    x = _randn(2, 3)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    import edgert
    from edgert.runtime import Interpreter

    with pytest.warns(UserWarning):
        got = Interpreter(edgert.convert(m)).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_duplicated_opset_imports_merge_and_conflicting_ones_are_refused():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [_vi("x", shape=[2])], [_vi("y", shape=[2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("", 17)])
    assert import_onnx(m).opset[""] == 17  # (skl2onnx 1.20 writes the default domain twice)
    m2 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("", 13)])
    with pytest.raises(ModelImportError, match="twice, at opsets 17 and 13"):
        import_onnx(m2)


def test_com_microsoft_nodes_need_no_opset_declaration():
    """onnxruntime runs its operators without a com.microsoft opset_import entry (its
    transformers optimizer's in-memory models have none)."""
    import onnxruntime

    import edgert
    from edgert.runtime import Interpreter

    node = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    g = helper.make_graph([node], "g", [_vi("x", shape=[2, 4])], [_vi("y", shape=[2, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = _randn(2, 4)
    sess = onnxruntime.InferenceSession(m.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = Interpreter(edgert.convert(m)).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
