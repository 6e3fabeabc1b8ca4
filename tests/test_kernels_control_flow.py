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


def test_if_on_a_shape_condition_is_planned_and_so_is_what_follows():
    """TorchScript exports test sizes (``if x.shape[0] == 1``): a condition that shapes decide
    picks its branch when planning, the branch is planned for the outer shapes, and the If and
    everything after it are ordinary (not dynamic) steps. Both branches, several batch sizes,
    against onnxruntime; an outer constant (the Pad widths) is known inside the branch."""
    from edgert.converter import convert
    from edgert.runtime import Interpreter

    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[M, 5] y) <int64[4] pads = {0, 1, 0, 1}, int64 one = {1},
                                               int64[1] zero = {0}> {
            shp = Shape(x)
            n = Gather(shp, zero)
            single = Equal(n, one)
            cs = Squeeze(single)
            h = If(cs) <
                then_branch = t () => (float[1, 5] a) { a = Pad(x, pads) },
                else_branch = e () => (float[K, 5] b) { r = Relu(x)  b = Pad(r, pads) }
            >
            y = Tanh(h)
        }"""
    model = onnx.parser.parse_model(text)
    interp = Interpreter(convert(model), num_threads=1)
    rng = np.random.default_rng(4)
    for n in (1, 3, 1, 2):
        feeds = {"x": rng.standard_normal((n, 3)).astype(np.float32)}
        np.testing.assert_allclose(interp.run(feeds)["y"], _ort(model, feeds)[0],
                                   rtol=1e-5, atol=1e-6)
        assert not any(s.dynamic for s in interp._steps), [
            type(s.kernel).__name__ for s in interp._steps if s.dynamic]
        kernel = next(k for k in interp._kernels if type(k).__name__ == "If")
        body = kernel._then if n == 1 else kernel._else
        assert not any(s.dynamic for s in body.interp._steps)
