"""IR -> ONNX export and the ``edgert optimize`` / ``edgert convert --level`` commands."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import ATOL, RTOL
from test_optimizer import conv_bn_weights, feeds_for, make_model, ort_run, rnd

from edgert.cli import main
from edgert.importer import export_onnx, import_onnx


def roundtrip(model: onnx.ModelProto, **kw) -> onnx.ModelProto:
    out = export_onnx(import_onnx(model), **kw)
    onnx.checker.check_model(out, full_check=True)
    feeds = feeds_for(model)
    for a, b in zip(ort_run(out, feeds), ort_run(model, feeds)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    return out


def test_roundtrip_keeps_names_symbolic_dims_and_metadata():
    text = """<ir_version: 8, opset_import: ["" : 13]>
    g (float[N,4] x) => (float[N,4] y, float[2] c) {
        a = Mul(x, w)
        y = Relu(a)
        c = Identity(k)
    }"""
    m = make_model(text, w=rnd(4), k=rnd(2))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.helper.set_model_props(m, {"author": "test"})
    # feeds_for needs static dims: run the reference on the exported model at N=3
    g = import_onnx(m)
    out = export_onnx(g)
    onnx.checker.check_model(out, full_check=True)
    assert [i.name for i in out.graph.input] == ["x"]
    assert [o.name for o in out.graph.output] == ["y", "c"]
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert {p.key: p.value for p in out.metadata_props}["author"] == "test"
    x = rnd(3, 4)
    got = ort_run(out, {"x": x})
    np.testing.assert_allclose(got[0], np.maximum(x * m_init(m, "w"), 0), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(got[1], m_init(m, "k"))


def m_init(m, name):
    return next(onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.name == name)


def test_old_softmax_rewritten_when_opset_is_raised():
    # Softmax-11 flattens around axis 1: [2,3,4] is normalized over the last 12 elements.
    text = """<ir_version: 7, opset_import: ["" : 11]>
    g (float[2,3,4] x) => (float[2,3,4] y) { y = Softmax<axis=1>(x) }"""
    out = roundtrip(make_model(text), opset=13)
    assert out.opset_import[0].version == 13
    assert [n.op_type for n in out.graph.node] == ["Flatten", "Softmax", "Shape", "Reshape"]


def test_old_opset_model_exports_valid():
    text = """<ir_version: 4, opset_import: ["" : 9]>
    g (float[1,3,6,6] x) => (float[1,4,6,6] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        n = BatchNormalization(c, s, b, mu, var)
        u = Unsqueeze<axes=[0]>(n)
        y = Squeeze<axes=[0]>(u)
    }"""
    out = roundtrip(make_model(text, **conv_bn_weights()))
    assert out.opset_import[0].version >= 13  # Squeeze/Unsqueeze were upgraded to inputs


@pytest.fixture
def conv_bn_file(tmp_path):
    text = """<ir_version: 8, opset_import: ["" : 13]>
    g (float[1,3,6,6] x) => (float[1,4,6,6] y) {
        c = Conv<pads=[1,1,1,1]>(x, W, B)
        n = BatchNormalization(c, s, b, mu, var)
        y = Relu(n)
    }"""
    m = make_model(text, **conv_bn_weights())
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    return m, path


def test_cli_optimize(conv_bn_file, tmp_path, capsys):
    m, path = conv_bn_file
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(path), "-o", str(out), "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "fold_batchnorm" in text and "3 -> 2 nodes" in text
    opt = onnx.load(out)
    onnx.checker.check_model(opt, full_check=True)
    assert [n.op_type for n in opt.graph.node] == ["Conv", "Relu"]
    feeds = feeds_for(m)
    np.testing.assert_allclose(ort_run(opt, feeds)[0], ort_run(m, feeds)[0], rtol=RTOL,
                               atol=ATOL)
    assert main(["optimize", str(path), "-o", str(out), "--allow-fused"]) == 0
    fused = onnx.load(out)
    assert [(n.domain, n.op_type) for n in fused.graph.node] == [("edgert", "Conv")]
    assert main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 1


def test_cli_convert_levels(conv_bn_file, tmp_path, capsys):
    from edgert.runtime import Interpreter

    m, path = conv_bn_file
    for level, n_ops in ((0, 3), (2, 1)):
        out = tmp_path / f"m{level}.edgert"
        args = ["convert", str(path), "-o", str(out), "--level", str(level), "--verbose"]
        assert main(args) == 0
        interp = Interpreter(str(out))
        assert len(interp._graph.operators) == n_ops
        feeds = feeds_for(m)
        np.testing.assert_allclose(interp.run(feeds)["y"], ort_run(m, feeds)[0], rtol=RTOL,
                                   atol=ATOL)
    assert "optimize level 2" in capsys.readouterr().out
