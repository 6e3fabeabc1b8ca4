"""Concat inputs computed in place (``Interpreter._alias_concats``), against onnxruntime.

A Concat whose inputs are contiguous blocks of its output (every dim before the axis is 1) is
dropped from the plan when each input is written straight into its block, or keeps a step that
copies only the inputs that cannot be (model inputs, tensors read elsewhere, repeated inputs).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from helpers import ATOL, RTOL
from onnx import numpy_helper

from edgert.converter import convert
from edgert.runtime import Interpreter
from edgert.runtime.profiling import profile_ops

RNG = np.random.default_rng(11)
HEADER = '<ir_version: 8, opset_import: ["" : 13]>\n'


def build(text: str, **weights) -> onnx.ModelProto:
    m = onnx.parser.parse_model(HEADER + text)
    for name, arr in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(arr, name))
    onnx.checker.check_model(m, full_check=True)
    return m


def run_both(m: onnx.ModelProto, feeds: dict, level: int = 0):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    it = Interpreter(convert(m, level=level))
    got = it.run(feeds)
    for o, want in zip(m.graph.output, ref):
        np.testing.assert_allclose(got[o.name], want, rtol=RTOL, atol=ATOL)
    # A second run on the same plan (in-place blocks must not be stale or clobbered).
    feeds2 = {k: v[::-1].copy() if v.ndim else v for k, v in feeds.items()}
    got2 = it.run(feeds2)
    for o, want in zip(m.graph.output, sess.run(None, feeds2)):
        np.testing.assert_allclose(got2[o.name], want, rtol=RTOL, atol=ATOL)
    return it


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


FIRE = """
g (float[1,4,6,6] x) => (float[1,2,6,6] y) {
    s = Conv(x, Ws)
    r = Relu(s)
    a = Conv(r, Wa)
    ra = Relu(a)
    b = Conv<pads=[1,1,1,1]>(r, Wb)
    rb = Relu(b)
    c = Concat<axis=1>(ra, rb)
    y = Conv(c, Wy)
}"""


@pytest.mark.parametrize("level", [0, 2])
def test_fire_module_concat_is_dropped(level):
    m = build(FIRE, Ws=w(3, 4, 1, 1), Wa=w(5, 3, 1, 1), Wb=w(6, 3, 3, 3), Wy=w(2, 11, 1, 1))
    it = run_both(m, {"x": w(1, 4, 6, 6)}, level)
    assert it.stats.aliased_ops == 1
    assert "Concat" not in [t.op_type for t in profile_ops(it, 1)]


def test_partly_aliased_concat_copies_the_rest_and_output_concat():
    # x is a model input and t is read twice: both are copied; u and v are computed in place.
    # The concat is also a model output, with a negative axis.
    m = build("""
    g (float[1,3,4,5] x) => (float[1,12,4,5] y, float[1,3,4,5] t) {
        t = Relu(x)
        u = Sigmoid(x)
        v = Neg(x)
        y = Concat<axis=-3>(x, u, t, v)
    }""")
    it = run_both(m, {"x": w(1, 3, 4, 5)})
    assert it.stats.aliased_ops == 0
    assert [t.op_type for t in profile_ops(it, 1)].count("Concat") == 1


@pytest.mark.parametrize("text", [
    # batch 2, channel axis: the blocks interleave
    """g (float[2,3,4] x) => (float[2,6,4] y) {
        u = Relu(x)
        v = Neg(x)
        y = Concat<axis=1>(u, v)
    }""",
    # one input twice
    """g (float[1,3,4] x) => (float[1,6,4] y) {
        u = Relu(x)
        y = Concat<axis=1>(u, u)
    }""",
])
def test_concat_kept_where_blocks_cannot_be_shared(text):
    it = run_both(build(text), {"x": w(*([2, 3, 4] if "2,3,4" in text else [1, 3, 4]))})
    assert it.stats.aliased_ops == 0


def test_nested_concats_and_a_replan():
    m = build("""
    g (float[1,2,N] x) => (float[1,8,N] y) {
        a = Relu(x)
        b = Neg(x)
        inner = Concat<axis=1>(a, b)
        c = Sigmoid(x)
        d = Abs(x)
        y = Concat<axis=1>(inner, c, d)
    }""")
    it = Interpreter(convert(m, level=0))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (5, 9):
        x = w(1, 2, n)
        np.testing.assert_allclose(it.run({"x": x})["y"], sess.run(None, {"x": x})[0],
                                   rtol=RTOL, atol=ATOL)
        # inner is dropped; the outer one copies inner's block only (inner is not re-aliased)
        assert it.stats.aliased_ops == 1


def test_int8_concat_of_equally_quantized_inputs_is_dropped(tmp_path, monkeypatch):
    """The quantizer gives a Concat's inputs its own quantization, so edgert.QConcat is a copy
    and is planned away too; the outputs equal those of the plan that copies."""
    import edgert
    from edgert.runtime import interpreter as itp

    m = build(FIRE, Ws=w(3, 4, 1, 1), Wa=w(5, 3, 1, 1), Wb=w(6, 3, 3, 3), Wy=w(2, 11, 1, 1))
    src = tmp_path / "fire.onnx"
    onnx.save(m, src)
    out = tmp_path / "fire_int8.edgert"
    cal = [{"x": w(1, 4, 6, 6)} for _ in range(4)]
    edgert.quantize(str(src), str(out), calibration=cal)
    it = Interpreter(str(out))
    assert it.stats.aliased_ops == 1
    monkeypatch.setattr(itp.Interpreter, "_alias_concats", lambda self, s, i, v: (s, {}))
    plain = Interpreter(str(out))
    assert plain.stats.aliased_ops == 0
    for _ in range(2):
        x = w(1, 4, 6, 6)
        a, b = it.run({"x": x}), plain.run({"x": x})
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
