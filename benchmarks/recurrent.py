"""Recurrent models (LSTM, GRU): edgert vs onnxruntime, latency per run.

Models are built here with ``onnx.helper`` (seeded weights, float32), converted with
``edgert.converter.convert`` and checked against onnxruntime before timing:

* ``bilstm_T{50,200}_b{1,8}``: a 2-layer bidirectional LSTM classifier, input 64, hidden 128,
  the last layer's final states (both directions) into a 10-way Gemm;
* ``gru256_T100_b1``: one GRU layer, input 128, hidden 256 (``linear_before_reset=1``, as
  PyTorch exports it), output Y;
* ``lstm512_T100_b1``: one unidirectional LSTM layer, input 256, hidden 512, output Y.

At 1 thread the two runtimes run in one process, alternating call by call (noise from other
work on the machine hits both alike); at 2 threads each runtime is timed in its own
subprocess (spinning worker threads of one would slow the other). Medians are printed with the
edgert/onnxruntime ratio (below 1: edgert is faster).

    python benchmarks/recurrent.py [--threads 1 2] [--runs 30] [--budget 10] [models...]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent

# name -> (kind, seq, batch, input, hidden)
MODELS = {
    "bilstm_T50_b1": ("bilstm", 50, 1, 64, 128),
    "bilstm_T50_b8": ("bilstm", 50, 8, 64, 128),
    "bilstm_T200_b1": ("bilstm", 200, 1, 64, 128),
    "bilstm_T200_b8": ("bilstm", 200, 8, 64, 128),
    "gru256_T100_b1": ("gru", 100, 1, 128, 256),
    "lstm512_T100_b1": ("lstm", 100, 1, 256, 512),
}


def build(name: str):
    """The ONNX model of ``name`` (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    kind, seq, batch, inp, hid = MODELS[name]
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(arr, nm):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), nm))
        return nm

    def rnn_weights(op, gates, dirs, fan_in, tag):
        s = 1 / np.sqrt(hid)
        w = const(rng.uniform(-s, s, (dirs, gates * hid, fan_in)), f"W{tag}")
        r = const(rng.uniform(-s, s, (dirs, gates * hid, hid)), f"R{tag}")
        b = const(rng.uniform(-s, s, (dirs, 2 * gates * hid)), f"B{tag}")
        return [w, r, b]

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inp])
    if kind == "bilstm":
        nodes.append(helper.make_node("LSTM", ["x", *rnn_weights("LSTM", 4, 2, inp, 1)],
                                      ["y1"], hidden_size=hid, direction="bidirectional"))
        # [seq, 2, batch, hid] -> [seq, batch, 2*hid]
        nodes.append(helper.make_node("Transpose", ["y1"], ["y1t"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([seq, batch, 2 * hid], np.int64), "shape1"))
        nodes.append(helper.make_node("Reshape", ["y1t", "shape1"], ["x2"]))
        nodes.append(helper.make_node("LSTM", ["x2", *rnn_weights("LSTM", 4, 2, 2 * hid, 2)],
                                      ["", "h2"], hidden_size=hid, direction="bidirectional"))
        # [2, batch, hid] -> [batch, 2*hid] -> Gemm -> [batch, 10]
        nodes.append(helper.make_node("Transpose", ["h2"], ["h2t"], perm=[1, 0, 2]))
        inits.append(numpy_helper.from_array(np.array([batch, 2 * hid], np.int64), "shape2"))
        nodes.append(helper.make_node("Reshape", ["h2t", "shape2"], ["feat"]))
        wc = const(rng.standard_normal((2 * hid, 10)) * 0.1, "Wc")
        bc = const(rng.standard_normal(10) * 0.1, "Bc")
        nodes.append(helper.make_node("Gemm", ["feat", wc, bc], ["logits"]))
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])
    elif kind == "gru":
        nodes.append(helper.make_node("GRU", ["x", *rnn_weights("GRU", 3, 1, inp, 1)], ["y"],
                                      hidden_size=hid, linear_before_reset=1))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, 1, batch, hid])
    else:
        nodes.append(helper.make_node("LSTM", ["x", *rnn_weights("LSTM", 4, 1, inp, 1)], ["y"],
                                      hidden_size=hid))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, 1, batch, hid])
    graph = helper.make_graph(nodes, name, [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def paths(name: str, folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """``name``'s ``.onnx`` and converted ``.edgert`` files in ``folder``."""
    import onnx

    from edgert.converter import convert

    onnx_path = folder / f"{name}.onnx"
    edgert_path = folder / f"{name}.edgert"
    if not onnx_path.exists():
        onnx.save(build(name), str(onnx_path))
    if not edgert_path.exists():
        convert(str(onnx_path), str(edgert_path))
    return onnx_path, edgert_path


def feeds(name: str) -> dict[str, np.ndarray]:
    _, seq, batch, inp, _ = MODELS[name]
    return {"x": np.random.default_rng(1).standard_normal((seq, batch, inp)).astype(np.float32)}


def ort_session(path: pathlib.Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def runner(which: str, name: str, folder: pathlib.Path, threads: int):
    """A no-argument callable running one inference, and its outputs."""
    onnx_path, edgert_path = paths(name, folder)
    f = feeds(name)
    if which == "ort":
        sess = ort_session(onnx_path, threads)
        return (lambda: sess.run(None, f)), sess.run(None, f)
    from edgert.runtime import Interpreter

    interp = Interpreter(str(edgert_path), num_threads=threads)
    return (lambda: interp.run(f)), list(interp.run(f).values())


def timed(fns, runs: int, budget_s: float) -> list[list[float]]:
    """Time the callables in alternation (two untimed warm-up rounds first)."""
    for _ in range(2):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    deadline = time.perf_counter() + budget_s
    for r in range(runs):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
        if r >= 4 and time.perf_counter() > deadline:
            break
    return times


def child(which: str, name: str, folder: str, threads: int, runs: int, budget: float) -> None:
    fn, _ = runner(which, name, pathlib.Path(folder), threads)
    (t,) = timed([fn], runs, budget)
    print(json.dumps({"ms": float(np.median(t)) * 1e3}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="*", default=list(MODELS))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per runtime (max)")
    ap.add_argument("--budget", type=float, default=10.0, help="seconds per model and setting")
    ap.add_argument("--folder", help="where the models are written (default: a temporary one)")
    ap.add_argument("--child", nargs=3, metavar=("RUNTIME", "MODEL", "THREADS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.folder, int(args.child[2]), args.runs,
              args.budget)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(args.folder or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in args.models:
            row = {"model": name}
            e_fn, e_out = runner("edgert", name, folder, 1)
            o_fn, o_out = runner("ort", name, folder, 1)
            row["max_abs_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(e_out, o_out))
            for thr in args.threads:
                if thr == 1:
                    te, to = timed([e_fn, o_fn], args.runs, args.budget)
                    me, mo = float(np.median(te)) * 1e3, float(np.median(to)) * 1e3
                else:
                    res = []
                    for which in ("edgert", "ort"):
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", which, name, str(thr),
                             "--folder", str(folder), "--runs", str(args.runs),
                             "--budget", str(args.budget)],
                            capture_output=True, text=True, check=True)
                        res.append(json.loads(out.stdout.strip().splitlines()[-1])["ms"])
                    me, mo = res
                row[thr] = (me, mo)
                print(f"{name:<18} {thr}T  edgert {me:8.3f} ms  ort {mo:8.3f} ms  "
                      f"ratio {me / mo:5.2f}  (max|diff| {row['max_abs_diff']:.1e})",
                      file=sys.stderr, flush=True)
            rows.append(row)
    head = f"{'model':<18}" + "".join(f" | {t}T edgert ms   ort ms  ratio" for t in args.threads)
    print(head)
    print("-" * len(head))
    for row in rows:
        line = f"{row['model']:<18}"
        for t in args.threads:
            me, mo = row[t]
            line += f" | {me:12.3f} {mo:8.3f} {me / mo:6.2f}"
        print(line + f"   max|diff| {row['max_abs_diff']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
