"""Graph optimizer comparison: node counts and runtime latency, optimizer off vs on.

For each model prints the node count of the original; after onnxsim and onnxslim (when
installed: ``pip install onnxsim onnxslim``); after onnxruntime's offline
``ORT_ENABLE_EXTENDED`` (``SessionOptions.optimized_model_filepath``, which may use ORT's own
contrib ops); after ``edgert optimize`` with standard ONNX ops only, and with edgert's fused ops
allowed. Every edgert result is checked against onnxruntime on the original model (rtol 1e-4,
atol 1e-5): the standard-op model in onnxruntime after ``onnx.checker`` (full check), the fused
one in the edgert runtime.

Then the edgert runtime's median latency with the optimizer off (level 0) and on (level 2),
and onnxruntime's in the same process for scale, and the time ``optimize`` takes on resnet50.

    python benchmarks/optimizer_compare.py [--runs 20] [resnet50 shufflenet ...]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

LIGHT = ["resnet50", "densenet121", "inception_v2", "shufflenet", "squeezenet"]
TORCH = {"torch_mobilenet": ROOT / "tests/data/torch_mobilenet.onnx",
         "torch_transformer": ROOT / "tests/data/torch_transformer.onnx"}


def model_path(name: str) -> pathlib.Path:
    if name in TORCH:
        return TORCH[name]
    from light_models import materialize

    return materialize(name)


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 8 for d in tt.shape.dim]
        if tt.elem_type == onnx.TensorProto.INT64:
            feeds[i.name] = rng.integers(0, 10, shape).astype(np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def ort_session(model: onnx.ModelProto | str, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                save_to: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = level
    if save_to:
        so.optimized_model_filepath = save_to
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)  # the simplifiers may edit their argument in place
    return out


def count_onnxsim(model: onnx.ModelProto) -> str:
    model = _copy(model)
    try:
        import onnxsim
    except ImportError:
        return "n/a"
    try:
        simplified, ok = onnxsim.simplify(model)
        return str(len(simplified.graph.node)) if ok else "fail"
    except Exception:  # noqa: BLE001 (a third-party tool's failure is a table entry)
        return "fail"


def count_onnxslim(model: onnx.ModelProto) -> str:
    model = _copy(model)
    try:
        import onnxslim
    except ImportError:
        return "n/a"
    try:
        return str(len(onnxslim.slim(model).graph.node))
    except Exception:  # noqa: BLE001
        return "fail"


def count_ort_extended(path: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ort.onnx")
        ort_session(path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, out)
        return len(onnx.load(out, load_external_data=False).graph.node)


def max_err(got, ref) -> float:
    """Largest |got - ref| / (atol + rtol |ref|): <= 1 means within rtol 1e-4 / atol 1e-5."""
    return max(float(np.max(np.abs(a - b) / (1e-5 + 1e-4 * np.abs(b)))) for a, b in zip(got, ref))


def median_ms(fns: list, runs: int) -> list[float]:
    """Median time of each function, calls interleaved so machine noise hits all alike."""
    for fn in fns:
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=LIGHT + list(TORCH))
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    from edgert.converter import convert
    from edgert.importer import export_onnx, import_onnx
    from edgert.optimizer import optimize
    from edgert.runtime import Interpreter

    rows, lat = [], []
    for name in args.models:
        path = str(model_path(name))
        model = onnx.load(path)
        feeds = feeds_for(model)
        ref_sess = ort_session(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        ref = ref_sess.run(None, feeds)

        g = import_onnx(model)
        optimize(g, 2, allow_fused=False)
        std = export_onnx(g)
        onnx.checker.check_model(std, full_check=True)
        err_std = max_err(ort_session(std).run(None, feeds), ref)

        g = import_onnx(model)
        optimize(g, 2, allow_fused=True)
        fused_nodes = len(g.nodes)
        on = Interpreter(convert(g, level=0))
        out_names = [o.name for o in model.graph.output]
        err_fused = max_err([on.run(feeds)[n] for n in out_names], ref)
        off = Interpreter(convert(path, level=0))

        rows.append((name, len(model.graph.node), count_onnxsim(model), count_onnxslim(model),
                     count_ort_extended(path), len(std.graph.node), fused_nodes,
                     err_std, err_fused))
        ort_fast = ort_session(model)
        lat.append((name, *median_ms([lambda: off.run(feeds), lambda: on.run(feeds),
                                      lambda: ort_fast.run(None, feeds)], args.runs)))
        print(f"done {name}", file=sys.stderr, flush=True)

    print("\nnode counts (err = max |diff| / (1e-5 + 1e-4 |ref|) vs onnxruntime on the original;"
          " <= 1 passes)")
    head = ("model", "original", "onnxsim", "onnxslim", "ort-ext", "edgert", "edgert+fused",
            "err std", "err fused")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join([*map(str, r[:7]), f"{r[7]:.2f}", f"{r[8]:.2f}"]) + " |")

    print(f"\nlatency, median of {args.runs} runs (ms)")
    print("| model | edgert opt off | edgert opt on | on/off | onnxruntime (ORT_ENABLE_ALL) |")
    print("|---|---|---|---|---|")
    for name, t_off, t_on, t_ort in lat:
        print(f"| {name} | {t_off:.2f} | {t_on:.2f} | {t_on / t_off:.2f} | {t_ort:.2f} |")

    if "resnet50" in args.models:
        model = onnx.load(str(model_path("resnet50")))
        times = []
        for _ in range(5):
            g = import_onnx(model)
            t0 = time.perf_counter()
            optimize(g, 2, allow_fused=True)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times) * 1e3
        print(f"\noptimize(resnet50, level 2, fused): median {med:.0f} ms"
              f" over 5 runs (first {times[0] * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
