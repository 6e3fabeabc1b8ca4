"""QDQ models from onnxruntime's ``quantize_static`` converted by edgert (qdq_import.py).

For each model: calibrate on random N(0, 1) inputs, quantize with onnxruntime (QDQ, per-channel
int8 weights, uint8 or int8 activations), ``edgert.convert`` the QDQ model, and report

* float Conv/ConvTranspose/Gemm/MatMul left in the converted model (and every float op left);
* file size: the converted `.edgert` vs the fp32 ONNX and vs edgert's native int8
  (``edgert.quantize`` on the same calibration data);
* single-thread latency, medians of alternating runs in this process: the converted model,
  edgert's native int8, onnxruntime on the QDQ model, edgert fp32 and the QDQ model converted as
  fake-quantized float (what ``edgert convert`` made of it before: float ops between
  QuantizeLinear/DequantizeLinear);
* agreement with onnxruntime on the QDQ model: the fraction of output elements within one
  quantization step of the output (the output's DequantizeLinear scale), against onnxruntime
  as it runs it (fused into its integer kernels) and unoptimized (the graph as written), with
  onnxruntime's two against each other for scale: where a model rounds many values near a
  tie (a 2x2 average pool feeding a large BatchNormalization gain), any two implementations
  differ there.

The float model goes through onnxruntime's ``quant_pre_process`` first (its recommended flow:
BatchNormalization folded into Conv...), unless ``--no-preprocess``; models below opset 13 are
converted to opset 13 (per-channel DequantizeLinear).

Models: the light models of the onnx wheel (``light_models.materialize``: seeded random
weights), ``models/digits_cnn.onnx``, ``tests/data/torch_*.onnx`` and any ``.onnx`` path.

    python benchmarks/qdq_models.py [--samples 8] [--runs 10] [--act u8|s8] [--no-preprocess]
                                    [models...]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

MODELS = ["digits_cnn", "torch_cnn", "torch_mobilenet", "squeezenet", "resnet50", "inception_v1",
          "shufflenet", "densenet121"]
LOCAL = {"digits_cnn": ROOT / "models" / "digits_cnn.onnx",
         "torch_cnn": ROOT / "tests" / "data" / "torch_cnn.onnx",
         "torch_mobilenet": ROOT / "tests" / "data" / "torch_mobilenet.onnx"}
LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def model_path(name: str) -> str:
    if name in LOCAL:
        return str(LOCAL[name])
    if name.endswith(".onnx"):
        return name
    from light_models import materialize

    return str(materialize(name))


def feeds_for(path: str, n: int, batch: int = 1, seed: int = 0) -> list[dict]:
    import onnx

    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inp = [v for v in m.graph.input if v.name not in inits][0]
    dims = [d.dim_value if d.dim_value > 0 else batch for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [{inp.name: rng.normal(size=dims).astype(np.float32)} for _ in range(n)]


def ort_qdq(src: str, dst: str, feeds: list[dict], act: str) -> None:
    """onnxruntime's QDQ quantization (per-channel int8 weights) of ``src`` (opset >= 13)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8)


def opset13(src: str, tmp: str) -> str:
    """``src`` at opset 13 or newer (per-channel DequantizeLinear), initializers not inputs."""
    import onnx
    from onnx import version_converter

    model = onnx.load(src)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= 13:
        return src
    m13 = version_converter.convert_version(model, 13)
    inits = {t.name for t in m13.graph.initializer}  # IR < 4 lists initializers as inputs
    keep = [v for v in m13.graph.input if v.name not in inits]
    del m13.graph.input[:]
    m13.graph.input.extend(keep)
    used = {i for n in m13.graph.node for i in n.input}  # and unused ones upset onnxruntime
    kept = [t for t in m13.graph.initializer if t.name in used]
    del m13.graph.initializer[:]
    m13.graph.initializer.extend(kept)
    path = os.path.join(tmp, "src13.onnx")
    onnx.save(m13, path)
    return path


def make_qdq(src: str, tmp: str, feeds: list[dict], act: str,
             preprocess: bool = True) -> tuple[str, str]:
    """onnxruntime's QDQ model of ``src`` (in ``tmp``) and a note on how it was made:
    ``quant_pre_process`` first (onnxruntime's advice: BatchNormalization folded...), or as is
    where that fails."""
    src13 = opset13(src, tmp)
    qdq = os.path.join(tmp, "qdq.onnx")
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = os.path.join(tmp, "pre.onnx")
        try:
            quant_pre_process(src13, pre, skip_symbolic_shape=True)
            ort_qdq(pre, qdq, feeds, act)
            return qdq, "quant_pre_process, then quantize_static"
        except Exception as exc:  # noqa: BLE001  (fall back to the model as it is)
            note = (f"quant_pre_process failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:80]}); quantize_static on the model as is")
    else:
        note = "quantize_static on the model as is"
    ort_qdq(src13, qdq, feeds, act)
    return qdq, note


def fake_quant(qdq: str) -> bytes:
    """The QDQ model converted the way ``edgert convert`` did before qdq_import.py: the float
    graph with its QuantizeLinear/DequantizeLinear, optimized with fused ops."""
    from edgert.converter import convert
    from edgert.importer import import_onnx
    from edgert.optimizer import optimize

    graph = import_onnx(qdq)
    optimize(graph, 2, allow_fused=True)
    return convert(graph, level=0)


def output_step(qdq_path: str, name: str) -> float | None:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(qdq_path)
    inits = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if name in node.output and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            return float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
    return None


def ops_of(data: bytes) -> list[tuple[str, bool]]:
    """``(op type, computes on float32)`` per operator (an int8 Reshape keeps its type)."""
    from edgert import dtypes
    from edgert.format import read_model

    sg = read_model(data).main
    return [(op.op_type, op.op_type not in ("Quantize", "Dequantize") and any(
        i >= 0 and sg.tensors[i].dtype == dtypes.FLOAT and sg.tensors[i].data is None
        for i in op.inputs)) for op in sg.operators]


def bench(name: str, n: int, runs: int, act: str, preprocess: bool = True) -> dict:
    import onnx
    import onnxruntime as ort

    import edgert
    from edgert.quantization import quantize
    from edgert.runtime import Interpreter

    src = model_path(name)
    feeds = feeds_for(src, n)
    res: dict = {"name": name}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        qdq, res["note"] = make_qdq(src, tmp, feeds, act, preprocess)
        res["ort_quantize_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = edgert.convert(qdq)
        res["convert_s"] = time.perf_counter() - t0
        res["warnings"] = [str(w.message) for w in caught]
        native, _ = quantize(src, calibration=feeds)
        fp32 = edgert.convert(src)
        fake = fake_quant(qdq)
        ops = ops_of(data)
        qdq_proto = onnx.load(qdq)
        res["linear_in_qdq"] = sum(nd.op_type in LINEAR for nd in qdq_proto.graph.node)
        res["float_linear_left"] = sum(op in LINEAR for op, _ in ops)
        res["int8_linear"] = sum(op in ("QConv", "QConvTranspose", "QGemm") for op, _ in ops)
        res["float_ops_left"] = sorted({op for op, fl in ops if fl})
        res["quant_dequant"] = sum(op in ("Quantize", "Dequantize") for op, _ in ops)
        res["sizes"] = {"fp32 onnx": os.path.getsize(src), "qdq onnx": os.path.getsize(qdq),
                        "edgert from qdq": len(data), "edgert native int8": len(native),
                        "edgert fp32": len(fp32)}
        # agreement with onnxruntime on the QDQ model
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so_sess = ort.InferenceSession(qdq, so, providers=["CPUExecutionProvider"])
        out_name = so_sess.get_outputs()[0].name
        xs = feeds_for(src, 4, seed=123)
        ie = Interpreter(data, num_threads=1)
        # onnxruntime as written: no fusion into its integer kernels (the QDQ graph's reference)
        so0 = ort.SessionOptions()
        so0.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ref_sess = ort.InferenceSession(qdq, so0, providers=["CPUExecutionProvider"])
        outs: dict[str, list[np.ndarray]] = {"edgert": [], "ort": [], "ort_ref": []}
        for x in xs:
            outs["edgert"].append(ie.run(x)[out_name].astype(np.float64).reshape(-1))
            outs["ort"].append(so_sess.run(None, x)[0].astype(np.float64).reshape(-1))
            outs["ort_ref"].append(ref_sess.run(None, x)[0].astype(np.float64).reshape(-1))
        flat = {k: np.concatenate(v) for k, v in outs.items()}
        step = output_step(qdq, out_name)
        res["step"] = step
        res["max_abs"] = float(np.abs(flat["edgert"] - flat["ort"]).max())
        res["agree"] = {}
        for a, b in (("edgert", "ort"), ("edgert", "ort_ref"), ("ort", "ort_ref")):
            d = np.abs(flat[a] - flat[b])
            res["agree"][(a, b)] = (None if step is None else float(np.mean(d <= step * 1.001)),
                                    float(d.max()))
        # latency, one thread, alternating
        x = xs[0]
        sessions = {
            "edgert from QDQ": ie,
            "edgert native int8": Interpreter(native, num_threads=1),
            "onnxruntime QDQ": so_sess,
            "edgert fp32": Interpreter(fp32, num_threads=1),
            "edgert QDQ as float (before)": Interpreter(fake, num_threads=1),
        }

        def run(s):
            return s.run(x) if isinstance(s, Interpreter) else s.run(None, x)

        for s in sessions.values():
            run(s)
            run(s)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(runs):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                run(s)
                times[k].append(time.perf_counter() - t0)
        res["ms"] = {k: float(np.median(v)) * 1000 for k, v in times.items()}
    return res


def report(r: dict) -> None:
    s = r["sizes"]
    print(f"\n{r['name']}: {r['note']}: {r['ort_quantize_s']:.1f} s; edgert convert "
          f"{r['convert_s']:.1f} s")
    print(f"  Conv/Gemm/MatMul: {r['linear_in_qdq']} in the QDQ model; after conversion "
          f"{r['float_linear_left']} float, {r['int8_linear']} QConv/QGemm (averaging pools "
          f"into other parameters are QConvs too); ops computing on float: "
          f"{', '.join(r['float_ops_left']) or 'none'}; {r['quant_dequant']} "
          "Quantize/Dequantize")
    for w in r["warnings"]:
        print(f"  warning: {w[:300]}")
    ratio = s["edgert from qdq"] / s["fp32 onnx"]
    print(f"  size: {s['edgert from qdq'] / 1e6:.2f} MB = {ratio:.1%} of the fp32 ONNX "
          f"({s['fp32 onnx'] / 1e6:.2f} MB), "
          f"{s['edgert from qdq'] / s['edgert native int8']:.3f}x edgert native int8 "
          f"({s['edgert native int8'] / 1e6:.2f} MB); QDQ ONNX {s['qdq onnx'] / 1e6:.2f} MB")
    names = {"edgert": "edgert", "ort": "onnxruntime",
             "ort_ref": "onnxruntime unoptimized (the QDQ graph as written)"}
    for (a, b), (frac, worst) in r["agree"].items():
        if frac is None:
            print(f"  {names[a]} vs {names[b]}: output not quantized, max |diff| {worst:.3g}")
        else:
            print(f"  {names[a]} vs {names[b]}: {frac:.2%} of outputs within one step "
                  f"({r['step']:.4g}), max {worst / r['step']:.1f} steps")
    base = r["ms"]["edgert from QDQ"]
    for k, v in r["ms"].items():
        print(f"  latency {k:<30} {v:9.2f} ms  ({v / base:.2f}x edgert from QDQ)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--samples", type=int, default=8, help="calibration inputs")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--act", choices=("u8", "s8"), default="u8",
                    help="activation type (onnxruntime's default: u8)")
    ap.add_argument("--no-preprocess", action="store_true",
                    help="quantize without onnxruntime's quant_pre_process (BatchNormalization "
                         "then stays a float op between Q/DQ pairs)")
    args = ap.parse_args()
    import logging

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice on pre-processing
    print(f"activations {args.act}, weights s8 per channel, {args.samples} calibration inputs, "
          f"{args.runs} runs, 1 thread, "
          f"{'no pre-processing' if args.no_preprocess else 'quant_pre_process first'}")
    for name in args.models:
        try:
            report(bench(name, args.samples, args.runs, args.act, not args.no_preprocess))
        except Exception as exc:  # noqa: BLE001  (report and go on with the next model)
            print(f"\n{name}: failed: {type(exc).__name__}: {str(exc)[:300]}")


if __name__ == "__main__":
    main()
