"""RNN / GRU / LSTM kernels (compiled time loops), end to end through edgert.backend.

References: onnxruntime where it implements the case (float32, layout 0; every activation),
and an independent NumPy reference written here from the ONNX operator formulas, in float64,
one batch entry at a time (float64, layout 1, and a check of the reference itself against
onnxruntime).

Tolerances: float32 results are compared with rtol=1e-5, atol=1e-6. Both runtimes compute in
float32 with different summation orders (BLAS blocking vs MLAS) and different sigmoid/tanh
approximations (each within a few ulp), so each step's pre-activation differs by a few ulp of
the sum of |terms|; the squashing functions have slope <= 1 and these weights (scaled by
1/sqrt(fan-in)) keep the recurrence contractive, so differences do not grow over the 4-7 steps:
the largest measured against onnxruntime is 5.1e-7 (RNN, hidden 96, clip), about 4 ulp of
values near 1, and the float64 reference sits as far from both.
float64 against the float64 reference: rtol=1e-10, atol=1e-12.
"""

import numpy as np
import pytest
from helpers import ort_node
from onnx import TensorProto, helper, numpy_helper

import edgert.backend as backend
from edgert.errors import EdgeRTError
from edgert.runtime.kernels.cpu import recurrent

F32_TOL = dict(rtol=1e-5, atol=1e-6)
F64_TOL = dict(rtol=1e-10, atol=1e-12)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


# ----- the NumPy reference (ONNX formulas, float64) -----------------------------------------------
def _acts(op, attrs, dirs):
    """[(f, alpha, beta)...] per direction; alpha/beta consumed in order by the activations
    that take them, ONNX's defaults otherwise."""
    params = {"relu": (0, 0, 0), "tanh": (0, 0, 0), "sigmoid": (0, 0, 0), "affine": (2, 1.0, 0.0),
              "leakyrelu": (1, 0.01, 0), "thresholdedrelu": (1, 1.0, 0),
              "scaledtanh": (2, 1.0, 1.0), "hardsigmoid": (2, 0.2, 0.5), "elu": (1, 1.0, 0),
              "softsign": (0, 0, 0), "softplus": (0, 0, 0)}
    fns = {
        "relu": lambda x, a, b: np.maximum(x, 0),
        "tanh": lambda x, a, b: np.tanh(x),
        "sigmoid": lambda x, a, b: 1 / (1 + np.exp(-x)),
        "affine": lambda x, a, b: a * x + b,
        "leakyrelu": lambda x, a, b: np.where(x >= 0, x, a * x),
        "thresholdedrelu": lambda x, a, b: np.where(x > a, x, 0),
        "scaledtanh": lambda x, a, b: a * np.tanh(b * x),
        "hardsigmoid": lambda x, a, b: np.clip(a * x + b, 0, 1),
        "elu": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)),
        "softsign": lambda x, a, b: x / (1 + np.abs(x)),
        "softplus": lambda x, a, b: np.log1p(np.exp(x)),
    }
    names = [n.lower() for n in attrs.get("activations", DEFAULT_ACTS[op] * dirs)]
    # ONNX float attributes are float32
    alphas = [float(np.float32(a)) for a in attrs.get("activation_alpha", [])]
    betas = [float(np.float32(b)) for b in attrs.get("activation_beta", [])]
    out = []
    for name in names:
        k, a, b = params[name]
        a = alphas.pop(0) if k >= 1 and alphas else a
        b = betas.pop(0) if k >= 2 and betas else b
        out.append((fns[name], a, b))
    per = len(DEFAULT_ACTS[op])
    return [out[d * per:(d + 1) * per] for d in range(dirs)]


def reference(op, inputs, attrs):
    """Y, Y_h (, Y_c) of the ONNX op in float64, one batch entry and one step at a time."""
    inputs = list(inputs) + [None] * (8 - len(inputs))
    x, w, r, b, lens, h0, c0, p = [None if a is None else np.asarray(a, np.float64)
                                   if i != 4 else a for i, a in enumerate(inputs)]
    layout = attrs.get("layout", 0)
    if layout:
        x = x.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    direction = attrs.get("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    seq, batch = x.shape[:2]
    n = r.shape[-1]
    g = GATES[op] * n
    clip = attrs.get("clip")
    clip = None if clip is None else float(np.float32(clip))
    cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    acts = _acts(op, attrs, dirs)
    y = np.zeros((seq, dirs, batch, n))
    yh = np.zeros((dirs, batch, n))
    yc = np.zeros((dirs, batch, n))
    for d in range(dirs):
        wb = np.zeros(g) if b is None else b[d, :g]
        rb = np.zeros(g) if b is None else b[d, g:]
        for e in range(batch):
            length = seq if lens is None else int(lens[e])
            h = np.zeros(n) if h0 is None else h0[d, e].copy()
            c = np.zeros(n) if c0 is None else c0[d, e].copy()
            times = range(length)
            if direction == "reverse" or d == 1:
                times = reversed(range(length))
            for t in times:
                xt = x[t, e]
                if op == "RNN":
                    (f, fa, fb), = acts[d]
                    h = f(cl(xt @ w[d].T + h @ r[d].T + wb + rb), fa, fb)
                elif op == "GRU":
                    (f, fa, fb), (gf, ga, gb) = acts[d]
                    wz, wr, wh = np.split(w[d], 3)
                    rz, rr, rh = np.split(r[d], 3)
                    wbz, wbr, wbh = np.split(wb, 3)
                    rbz, rbr, rbh = np.split(rb, 3)
                    z = f(cl(xt @ wz.T + h @ rz.T + wbz + rbz), fa, fb)
                    rg = f(cl(xt @ wr.T + h @ rr.T + wbr + rbr), fa, fb)
                    if attrs.get("linear_before_reset", 0):
                        hh = gf(cl(xt @ wh.T + rg * (h @ rh.T + rbh) + wbh), ga, gb)
                    else:
                        hh = gf(cl(xt @ wh.T + (rg * h) @ rh.T + rbh + wbh), ga, gb)
                    h = (1 - z) * hh + z * h
                else:
                    (f, fa, fb), (gf, ga, gb), (hf, ha, hb) = acts[d]
                    pre = xt @ w[d].T + h @ r[d].T + wb + rb
                    pi, po, pf = np.split(p[d], 3) if p is not None else (0, 0, 0)
                    i = f(cl(pre[:n] + pi * c), fa, fb)
                    if attrs.get("input_forget", 0):
                        fg = 1 - i
                    else:
                        fg = f(cl(pre[2 * n:3 * n] + pf * c), fa, fb)
                    cand = gf(cl(pre[3 * n:]), ga, gb)
                    c = fg * c + i * cand
                    o = f(cl(pre[n:2 * n] + po * c), fa, fb)
                    h = o * hf(c, ha, hb)
                y[t, d, e] = h
            yh[d, e] = h
            yc[d, e] = c
    outs = [y, yh, yc][:3 if op == "LSTM" else 2]
    if layout:
        outs = [outs[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in outs[1:]]
    return outs


# ----- models ----------------------------------------------------------------------------------
def make_inputs(op, seq, batch, inp, hid, direction, dtype=np.float32, bias=True, lens=None,
                init=True, peep=False, layout=0, seed=0, scale=1.0):
    """[X, W, R, B, sequence_lens, initial_h(, initial_c, P)] (None where omitted)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op] * hid
    x = rng.standard_normal((seq, batch, inp) if layout == 0 else (batch, seq, inp))
    w = rng.standard_normal((dirs, g, inp)) * scale / np.sqrt(inp)
    r = rng.standard_normal((dirs, g, hid)) * scale / np.sqrt(hid)
    b = rng.standard_normal((dirs, 2 * g)) * 0.3 if bias else None
    s_shape = (dirs, batch, hid) if layout == 0 else (batch, dirs, hid)
    h0 = rng.standard_normal(s_shape) * 0.5 if init else None
    ins = [x, w, r, b, None if lens is None else np.asarray(lens, np.int32), h0]
    if op == "LSTM":
        ins.append(rng.standard_normal(s_shape) * 0.5 if init else None)
        ins.append(rng.standard_normal((dirs, 3 * hid)) * 0.5 if peep else None)
    return [a if a is None or a.dtype == np.int32 else a.astype(dtype) for a in ins]


_NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def run_edgert(op, inputs, attrs, n_out, threads=1, const_weights=True):
    """One-node model; W, R, B and P as initializers (``const_weights``) or fed."""
    names, graph_in, inits, feeds = [], [], [], {}
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    for i, a in enumerate(inputs):
        if a is None:
            names.append("")
            continue
        name = _NAMES[i]
        names.append(name)
        if const_weights and name in ("W", "R", "B", "P"):
            inits.append(numpy_helper.from_array(a, name))
        else:
            graph_in.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
            feeds[name] = a
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", graph_in,
                              [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    rep = backend.prepare(model, num_threads=threads)
    return list(rep.run([feeds[i.name] for i in graph.input]))


def n_outputs(op):
    return 3 if op == "LSTM" else 2


def with_initial_states(op, want, inputs, attrs):
    """onnxruntime's results with a zero-length entry's Y_h (and Y_c) replaced by its initial
    state (0 when none is given).

    edgert keeps a finished entry's state frozen, so an entry of length 0 ends where it
    started (as TensorFlow's ``dynamic_rnn`` does, and as edgert did before); onnxruntime
    writes zeros there instead. ONNX does not say which (its reference ignores sequence_lens).
    """
    lens = inputs[4]
    if lens is None or (lens > 0).all():
        return want
    layout = attrs.get("layout", 0)
    want = [w.copy() for w in want]
    for k in range(1, len(want)):
        init = inputs[4 + k] if 4 + k < len(inputs) else None
        for e in np.flatnonzero(lens == 0):
            sl = (slice(None), e) if layout == 0 else (e,)
            assert not want[k][sl].any()  # what onnxruntime gives
            want[k][sl] = 0 if init is None else init[sl]
    return want


def check(got, want, tol, what=""):
    assert len(got) == len(want)
    for k, (g, e) in enumerate(zip(got, want)):
        assert g.shape == e.shape, (what, k, g.shape, e.shape)
        err = float(np.max(np.abs(g.astype(np.float64) - e))) if g.size else 0.0
        np.testing.assert_allclose(g, e, **tol, err_msg=f"{what} output {k} max|diff| {err:.2e}")


# ----- against onnxruntime (float32, layout 0) ----------------------------------------------------
# (seq, batch, input, hidden, options): lengths unequal and zero, states, peepholes,
# input_forget, clip, linear_before_reset; hidden 1 and 3 (dot loop) and 64 / 96 (BLAS)
CASES = {
    "plain-b1-h3": (5, 1, 4, 3, {}),
    "plain-h1": (4, 2, 3, 1, {"bias": False, "init": False}),
    "lens-init-b4-h3": (6, 4, 5, 3, {"lens": [6, 0, 3, 1], "peep": True}),
    "lens-h64": (7, 3, 16, 64, {"lens": [5, 7, 0], "peep": True}),
    "clip-h96": (5, 2, 8, 96, {"lens": [2, 5], "clip": 0.6}),
    "clip-forget-h3": (5, 3, 4, 3, {"lens": [5, 4, 2], "clip": 0.9, "input_forget": 1,
                                    "peep": True}),
    "lbr-h64": (6, 2, 8, 64, {"lens": [6, 3], "linear_before_reset": 1}),
    "lbr-clip-h3": (5, 3, 4, 3, {"lens": [0, 5, 2], "linear_before_reset": 1, "clip": 0.5}),
}


def _case(op, direction, name, dtype=np.float32, layout=0):
    seq, batch, inp, hid, opts = CASES[name]
    opts = dict(opts)
    attrs = {"hidden_size": hid, "direction": direction}
    for key in ("clip", "input_forget", "linear_before_reset"):
        if key in opts:
            value = opts.pop(key)
            if key == "input_forget" and op != "LSTM" or key == "linear_before_reset" and \
                    op != "GRU":
                continue
            attrs[key] = value
    if op != "LSTM":
        opts.pop("peep", None)
    if layout:
        attrs["layout"] = 1
    return make_inputs(op, seq, batch, inp, hid, direction, dtype, layout=layout, **opts), attrs


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_matches_onnxruntime(op, direction, case):
    inputs, attrs = _case(op, direction, case)
    n_out = n_outputs(op)
    want = with_initial_states(op, ort_node(op, inputs, attrs, num_outputs=n_out), inputs, attrs)
    got = run_edgert(op, inputs, attrs, n_out)
    check(got, want, F32_TOL, f"{op} {direction} {case}")
    # the NumPy reference agrees with onnxruntime too (so it can judge what onnxruntime can't)
    check([r.astype(np.float32) for r in reference(op, inputs, attrs)], want, F32_TOL, "ref")


# Each activation with non-default alpha/beta (onnxruntime implements them all); the two
# directions use different activations, so the per-direction parameters are checked too.
ACTIVATIONS = [("Relu", [], []), ("Tanh", [], []), ("Sigmoid", [], []),
               ("Affine", [0.7], [0.2]), ("LeakyRelu", [0.3], []),
               ("ThresholdedRelu", [0.4], []), ("ScaledTanh", [1.3], [0.6]),
               ("HardSigmoid", [0.3], [0.4]), ("Elu", [0.8], []), ("Softsign", [], []),
               ("Softplus", [], [])]


def _act_attrs(op, k):
    """Activations for both directions starting at ACTIVATIONS[k]; alpha/beta lists in order."""
    per = len(DEFAULT_ACTS[op])
    names, alphas, betas = [], [], []
    for i in range(2 * per):
        name, a, b = ACTIVATIONS[(k + 3 * i) % len(ACTIVATIONS)]
        names.append(name)
        alphas += a
        betas += b
    attrs = {"activations": names}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


@pytest.mark.parametrize("k", range(len(ACTIVATIONS)), ids=[a[0] for a in ACTIVATIONS])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_activations_match_onnxruntime(op, k):
    hid = 3 if k % 2 else 40  # the dot loop and BLAS
    inputs = make_inputs(op, 4, 2, 3, hid, "bidirectional", lens=[4, 3], scale=0.8, seed=k)
    attrs = {"hidden_size": hid, "direction": "bidirectional", **_act_attrs(op, k)}
    if op == "LSTM" and k % 3 == 0:
        attrs["clip"] = 1.5
    n_out = n_outputs(op)
    want = ort_node(op, inputs, attrs, num_outputs=n_out)
    got = run_edgert(op, inputs, attrs, n_out)
    check(got, want, F32_TOL, f"{op} {attrs['activations']}")
    check([r.astype(np.float32) for r in reference(op, inputs, attrs)], want, F32_TOL, "ref")


# ----- float64 and layout 1 against the NumPy reference -------------------------------------------
@pytest.mark.parametrize("case", ["plain-b1-h3", "lens-h64", "clip-forget-h3", "lbr-clip-h3"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float64_matches_reference(op, direction, case):
    inputs, attrs = _case(op, direction, case, np.float64)
    got = run_edgert(op, inputs, attrs, n_outputs(op))
    assert all(g.dtype == np.float64 for g in got)
    check(got, reference(op, inputs, attrs), F64_TOL, f"{op} {direction} {case}")


@pytest.mark.parametrize("k", [3, 6, 7, 8, 10])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float64_activations(op, k):
    inputs = make_inputs(op, 4, 2, 3, 5, "bidirectional", np.float64, lens=[2, 4], seed=k)
    attrs = {"hidden_size": 5, "direction": "bidirectional", **_act_attrs(op, k)}
    check(run_edgert(op, inputs, attrs, n_outputs(op)), reference(op, inputs, attrs), F64_TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["lens-init-b4-h3", "lens-h64", "lbr-h64"])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_layout_1(op, case, dtype):
    """Batch-first X, Y and states: onnxruntime (float32, on the transposed layout-0 problem)
    and the reference."""
    inputs, attrs = _case(op, "bidirectional", case, dtype, layout=1)
    got = run_edgert(op, inputs, attrs, n_outputs(op))
    want = reference(op, inputs, attrs)
    tol = F32_TOL if dtype == np.float32 else F64_TOL
    check(got, want, tol, f"{op} layout 1 {case}")
    if dtype == np.float32:  # the directions on 2 threads, each projecting its own columns
        check(run_edgert(op, inputs, attrs, n_outputs(op), threads=2), want, tol, "2 threads")
    if dtype == np.float32:
        t0 = [None if a is None else a.transpose(1, 0, 2) if i in (0, 5, 6) else a
              for i, a in enumerate(inputs)]
        a0 = {k: v for k, v in attrs.items() if k != "layout"}
        ort = ort_node(op, t0, a0, num_outputs=n_outputs(op))
        ort = with_initial_states(op, ort, t0, a0)
        ort = [ort[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in ort[1:]]
        check(got, ort, F32_TOL, f"{op} layout 1 vs onnxruntime")


# ----- paths, threads, weights fed at run time ----------------------------------------------------
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_threads_fed_weights_and_both_product_paths(op, monkeypatch):
    """2 threads (directions in parallel; a unidirectional layer's batch split), weights fed at
    run time instead of constants, and H·Rᵀ through the dot loop instead of BLAS: all give the
    1-thread BLAS result (to rounding: BLAS and the loop sum in different orders)."""
    for direction in ("bidirectional", "forward"):
        inputs, attrs = _case(op, direction, "lbr-h64" if op == "GRU" else "lens-h64")
        n_out = n_outputs(op)
        base = run_edgert(op, inputs, attrs, n_out)
        check(run_edgert(op, inputs, attrs, n_out, threads=2), base, F32_TOL, "2 threads")
        check(run_edgert(op, inputs, attrs, n_out, const_weights=False), base, F32_TOL, "fed")
        with monkeypatch.context() as m:
            m.setattr(recurrent, "BLAS_MIN_HIDDEN", 1 << 30)
            check(run_edgert(op, inputs, attrs, n_out, threads=2), base, F32_TOL, "dot loop")


def test_all_lengths_zero_keeps_initial_state():
    inputs = make_inputs("LSTM", 3, 2, 4, 5, "bidirectional", lens=[0, 0], peep=True)
    y, yh, yc = run_edgert("LSTM", inputs, {"hidden_size": 5, "direction": "bidirectional"}, 3)
    assert not y.any()
    np.testing.assert_array_equal(yh, inputs[5])
    np.testing.assert_array_equal(yc, inputs[6])


def test_only_final_state_requested():
    """Y omitted (an empty output name): Y_h still right."""
    inputs, attrs = _case("GRU", "bidirectional", "lens-init-b4-h3")
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    node = helper.make_node("GRU", names, ["", "yh"], **attrs)
    got = backend.run_node(node, inputs)
    np.testing.assert_allclose(got[0], reference("GRU", inputs, attrs)[1], **F32_TOL)


def test_float16_runs_in_float32():
    inputs = make_inputs("LSTM", 4, 2, 3, 5, "bidirectional", np.float16, lens=[4, 2], peep=True)
    got = run_edgert("LSTM", inputs, {"hidden_size": 5, "direction": "bidirectional"}, 3)
    assert all(g.dtype == np.float16 for g in got)
    want = reference("LSTM", inputs, {"hidden_size": 5, "direction": "bidirectional"})
    check(got, want, dict(rtol=0, atol=4e-3))  # float16's step near 1 is 1e-3


# ----- refusals -----------------------------------------------------------------------------------
def test_bad_weights_are_rejected():
    x = np.zeros((3, 2, 4), np.float32)
    w = np.zeros((1, 8, 4), np.float32)  # LSTM needs 4 * hidden rows
    r = np.zeros((1, 9, 3), np.float32)
    with pytest.raises(EdgeRTError, match="LSTM"):
        run_edgert("LSTM", [x, w, r], {"hidden_size": 3}, 1)


@pytest.mark.parametrize("lens", [[3, 4], [-1, 2], [2, 2, 2]])
@pytest.mark.parametrize("const", [True, False])
def test_bad_sequence_lens_are_rejected(lens, const):
    """Lengths outside [0, seq] (or not one per batch entry) never reach the compiled loop."""
    inputs = make_inputs("GRU", 3, 2, 4, 3, "reverse")
    inputs[4] = np.asarray(lens, np.int32)
    names = ["X", "W", "R", "B", "sequence_lens"]
    nodes, inits = [], []
    if const:
        inits = [numpy_helper.from_array(inputs[4], "sequence_lens")]
    graph_in = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape)
                for n, a in zip(names[:4], inputs[:4])]
    if not const:
        graph_in.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32,
                                                      [len(lens)]))
    nodes.append(helper.make_node("GRU", names, ["y"], hidden_size=3, direction="reverse"))
    graph = helper.make_graph(nodes, "g", graph_in, [helper.make_empty_tensor_value_info("y")],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    with pytest.raises(EdgeRTError, match="sequence_lens"):
        rep = backend.prepare(model)
        rep.run(inputs[:4] + ([] if const else [inputs[4]]))


def test_bad_initial_state_shape_is_rejected():
    inputs = make_inputs("RNN", 3, 2, 4, 3, "forward")
    inputs[5] = np.zeros((1, 3, 3), np.float32)  # batch is 2
    with pytest.raises(EdgeRTError, match="initial_h"):
        run_edgert("RNN", inputs, {"hidden_size": 3}, 2)


def test_compiled_loop_checks_its_extents():
    """The compiled loop itself refuses lengths or arrays that would index outside (defence in
    depth: the kernel checks first)."""
    from edgert.runtime.kernels.cpu import recurrent_cells as rc

    f = np.float32
    seq, batch, n, dirs = 3, 2, 4, 1
    g = 4 * n
    r = np.zeros((dirs, g, n), f)
    args = dict(xw=np.zeros((seq * batch, dirs * g), f), bias=np.zeros((dirs, g), f), r=r,
                rt=np.ascontiguousarray(r.transpose(0, 2, 1)), p=np.zeros((dirs, 3 * n), f),
                has_p=False, hs=np.zeros((dirs, batch, n), f), cs=np.zeros((dirs, batch, n), f),
                gbuf=np.zeros((dirs, batch, g), f), abuf=np.zeros((dirs, batch, g), f),
                y=np.zeros((seq * dirs * batch, n), f), write_y=True,
                lens=np.array([3, 3], np.int64), codes=np.array([[2, 1, 1]]),
                alphas=np.zeros((dirs, 3), f), betas=np.zeros((dirs, 3), f), layout=0, seq=seq,
                reverse=True, clip=f(0), use_clip=False, input_forget=False, fn=0, wide=False,
                use_blas=False, parts=1, x2=np.zeros((1, 1), f), wcat=np.zeros((1, 1), f),
                fuse=False)
    rc.lstm_run_serial(**args)
    for key, bad in (("lens", np.array([4, 0], np.int64)), ("lens", np.array([-1, 0], np.int64)),
                     ("lens", np.array([3], np.int64)), ("y", np.zeros((seq, n), f)),
                     ("xw", np.zeros((seq * batch - 1, g), f))):
        with pytest.raises(ValueError, match="recurrent"):
            rc.lstm_run_serial(**dict(args, **{key: bad}))
