"""If / Loop / Scan through edgert.backend (bodies as `.edgert` subgraphs) against onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort

import edgert.backend as backend


def _ort(model, feeds):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(text, feeds):
    model = onnx.parser.parse_model(text)
    got = backend.prepare(model).run(feeds)
    ref = _ort(model, feeds)
    assert len(got) == len(ref)
    for g, e in zip(got, ref):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_if_reads_outer_values():
    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[2, 3] x) => (float[2, 3] y) {
            h = Relu(x)
            y = If(c) <
                then_branch = t () => (float[2, 3] a) { a = Add(h, x) },
                else_branch = e () => (float[2, 3] b) { b = Neg(h) }
            >
        }"""
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    for c in (True, False):
        _check(text, {"c": np.array(c), "x": x})


def test_loop_with_carried_value_scan_output_and_outer_value():
    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64 n, float[3] x) => (float[3] out, float[N, 3] scan) {
            keep = Constant<value = bool {1}>()
            z = Relu(x)
            out, scan = Loop(n, keep, x) <body = body (int64 i, bool cond, float[3] acc)
                    => (bool cond_out, float[3] acc_out, float[3] s) {
                cond_out = Identity(cond)
                acc_out = Add(acc, z)
                s = Mul(acc_out, acc_out)
            }>
        }"""
    x = np.array([1.0, -2.0, 0.5], np.float32)
    _check(text, {"n": np.array(4, np.int64), "x": x})


def test_scan_reverse_direction():
    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] s0, float[4, 2] xs) => (float[2] s, float[4, 2] ys) {
            s, ys = Scan<num_scan_inputs = 1, scan_input_directions = [1], body =
                body (float[2] acc, float[2] x) => (float[2] acc_out, float[2] y) {
                    acc_out = Add(acc, x)
                    y = Identity(acc_out)
                }>(s0, xs)
        }"""
    xs = np.arange(8, dtype=np.float32).reshape(4, 2)
    _check(text, {"s0": np.zeros(2, np.float32), "xs": xs})


def test_bodies_are_built_once_and_follow_new_shapes_and_branches():
    """A control-flow op is prepared again at every run (its outputs are known only after it
    ran); its bodies' nested interpreters are built once and re-plan when shapes change. Runs
    alternate branches and input shapes, each checked against onnxruntime."""
    from edgert.converter import convert
    from edgert.runtime import Interpreter

    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[N, 3] x) => (float[N, 3] y) {
            h = Relu(x)
            y = If(c) <
                then_branch = t () => (float[N, 3] a) { s = Add(h, x)  a = Tanh(s) },
                else_branch = e () => (float[N, 3] b) { b = Neg(h) }
            >
        }"""
    model = onnx.parser.parse_model(text)
    interp = Interpreter(convert(model))
    rng = np.random.default_rng(3)
    seen = set()
    for k, (c, n) in enumerate([(True, 2), (False, 2), (True, 5), (True, 2), (False, 7)]):
        feeds = {"c": np.array(c), "x": rng.standard_normal((n, 3)).astype(np.float32)}
        np.testing.assert_allclose(interp.run(feeds)["y"], _ort(model, feeds)[0],
                                   rtol=1e-5, atol=1e-6)
        kernel = next(s.kernel for s in interp._steps if type(s.kernel).__name__ == "If")
        seen.add((id(kernel._then), id(kernel._else), id(kernel._then.interp)))
    assert len(seen) == 1  # the same bodies and nested interpreters throughout
