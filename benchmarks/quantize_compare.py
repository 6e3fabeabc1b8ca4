"""edgert int8 quantization vs fp32 and vs onnxruntime's ``quantize_static``.

Part 1 — accuracy on ``models/digits_cnn.onnx`` / ``models/digits_test.npz`` (calibrated on the
first ``--digits-cal`` test images): fp32 (onnxruntime), edgert int8 (minmax, percentile,
entropy), onnxruntime QDQ per-channel S8S8 (MinMax, Entropy).

Part 2 — the light models (``light_models.materialize``), random N(0, 1) calibration images:

* file size: int8 ``.edgert`` / fp32 ``.onnx``;
* agreement: edgert int8 outputs vs onnxruntime running edgert's own QDQ export (fraction of
  output elements within one output quantization step);
* quantization time and peak RSS of edgert vs onnxruntime (MinMax), each in a fresh subprocess;
* single-thread latency, medians of alternating runs: edgert fp32, edgert int8, onnxruntime
  fp32 and int8 (QDQ S8S8 and QOperator-free U8S8 QDQ).

    python benchmarks/quantize_compare.py [--samples 8] [--runs 10] [models...]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

MODELS = ["squeezenet", "resnet50", "inception_v1"]


def _ort_reader(name: str, feeds: list[dict]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def ort_quantize(src: str, dst: str, feeds: list[dict], method: str = "minmax",
                 activation: str = "s8") -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        src, dst, _ort_reader("x", feeds), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8 if activation == "s8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax if method == "minmax"
        else CalibrationMethod.Entropy)


# ----- part 1 -------------------------------------------------------------------------------------
def digits(n_cal: int) -> None:
    import onnxruntime as ort

    from edgert.quantization import quantize
    from edgert.runtime import Interpreter

    model = str(ROOT / "models" / "digits_cnn.onnx")
    d = np.load(ROOT / "models" / "digits_test.npz")
    x, y = d["x"], d["y"]
    cal = {"input": x[:n_cal]}

    def acc(p):
        return 100.0 * float(np.mean(p.argmax(1) == y))

    rows = [("fp32 (onnxruntime)", acc(ort.InferenceSession(model).run(None, {"input": x})[0]))]
    for method in ("minmax", "percentile", "entropy"):
        data, _ = quantize(model, calibration=cal, method=method)
        rows.append((f"edgert int8 {method}", acc(Interpreter(data).run({"input": x})
                                                  ["probabilities"])))
    with tempfile.TemporaryDirectory() as tmp:
        feeds = [{"input": x[i:i + 1]} for i in range(n_cal)]
        for method in ("minmax", "entropy"):
            dst = os.path.join(tmp, f"ort_{method}.onnx")
            try:
                ort_quantize(model, dst, feeds, method)
                p = ort.InferenceSession(dst).run(None, {"input": x})[0]
                rows.append((f"onnxruntime QDQ s8s8 per-channel {method}", acc(p)))
            except Exception as exc:  # noqa: BLE001  (report what onnxruntime did)
                rows.append((f"onnxruntime {method}: failed ({type(exc).__name__})", float("nan")))
    print(f"\ndigits_cnn test accuracy ({len(y)} images, calibration: first {n_cal}):")
    for name, a in rows:
        print(f"  {name:<44} {a:6.2f} %")


# ----- part 2 -------------------------------------------------------------------------------------
def _feeds(path: str, n: int, seed: int = 0) -> tuple[str, list[dict]]:
    import onnxruntime as ort

    inp = ort.InferenceSession(path).get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    rng = np.random.default_rng(seed)
    return inp.name, [{inp.name: rng.normal(size=shape).astype(np.float32)} for _ in range(n)]


def child(kind: str, src: str, dst: str, n: int) -> None:
    """Quantize in this (fresh) process and print seconds and peak RSS as JSON.

    ``kind``: ``edgert`` or ``ort``, optionally ``:minmax`` / ``:entropy`` (default minmax).
    """
    kind, _, method = kind.partition(":")
    method = method or "minmax"
    _, feeds = _feeds(src, n)
    t0 = time.perf_counter()
    if kind == "edgert":
        from edgert.quantization import quantize

        quantize(src, dst, calibration=feeds, method=method)
    else:
        ort_quantize(src, dst, feeds, method=method)
    secs = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into ru_maxrss across
    # fork + exec, which made both quantizers report the benchmark process's own peak.
    rss = float("nan")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024.0
    print(json.dumps({"seconds": secs, "peak_rss_mb": rss}))


def _run_child(kind: str, src: str, dst: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, src, dst, str(n)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def light(name: str, n: int, runs: int) -> None:
    import onnxruntime as ort
    from light_models import materialize

    from edgert.converter import convert
    from edgert.format import read_model
    from edgert.quantization import quantize
    from edgert.runtime import Interpreter

    src = str(materialize(name))
    iname, feeds = _feeds(src, n)
    with tempfile.TemporaryDirectory() as tmp:
        e_out, o_out = os.path.join(tmp, "e.edgert"), os.path.join(tmp, "o.onnx")
        ce, co = _run_child("edgert", src, e_out, n), _run_child("ort", src, o_out, n)
        data8 = pathlib.Path(e_out).read_bytes() if os.path.exists(e_out) else quantize(
            src, calibration=feeds)[0]
        qdq, rep = quantize(src, calibration=feeds, format="onnx")
        # onnxruntime's per-channel output for an opset < 13 source does not load; for its
        # latency it quantizes an opset-13 copy (onnx.version_converter) instead.
        import onnx
        from onnx import version_converter

        src13 = os.path.join(tmp, "src13.onnx")
        onnx.save(version_converter.convert_version(onnx.load(src), 13), src13)
        s8, u8 = os.path.join(tmp, "s8.onnx"), os.path.join(tmp, "u8.onnx")
        for path, act in ((s8, "s8"), (u8, "u8")):
            try:
                ort_quantize(src13, path, feeds, activation=act)
            except Exception:  # noqa: BLE001
                pass
        fp32 = convert(src)
        x = _feeds(src, 1, seed=123)[1][0]
        # agreement with onnxruntime running edgert's QDQ export
        m = read_model(data8)
        out_index = m.main.outputs[0]
        step = None
        for op in m.main.operators:
            if out_index in op.outputs and op.op_type == "Dequantize":
                step = float(op.attrs["scale"][0])
        ie8 = Interpreter(data8, num_threads=1)
        e8 = ie8.run(x)[ie8.output_names[0]]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        oq = ort.InferenceSession(qdq, so).run(None, x)[0]
        agree = float(np.mean(np.abs(e8 - oq) <= (step or 0) * 1.0001))
        # latency
        sessions = {
            "edgert fp32": Interpreter(fp32, num_threads=1),
            "edgert int8": ie8,
            "ort fp32": ort.InferenceSession(src, so),
        }
        ort_notes = []
        try:
            ort.InferenceSession(o_out, so)
        except Exception as exc:  # noqa: BLE001  (onnxruntime's own output does not load)
            ort_notes.append(f"onnxruntime quantize_static on the original opset: model does not "
                             f"load ({str(exc).splitlines()[0][-80:]})")
        for key, path in (("ort int8 s8s8 (opset-13 copy)", s8),
                          ("ort int8 u8s8 (opset-13 copy)", u8)):
            if not path or not os.path.exists(path):
                ort_notes.append(f"{key}: quantize_static failed")
                continue
            try:
                sessions[key] = ort.InferenceSession(path, so)
            except Exception as exc:  # noqa: BLE001  (onnxruntime's own output does not load)
                ort_notes.append(f"{key}: model does not load ({str(exc).splitlines()[0][-90:]})")
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():  # warm up
            s.run(x) if isinstance(s, Interpreter) else s.run(None, x)
        for _ in range(runs):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run(x) if isinstance(s, Interpreter) else s.run(None, x)
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) * 1000 for k, v in times.items()}
    size = len(data8) / os.path.getsize(src)
    print(f"\n{name}: int8 .edgert {len(data8) / 1e6:.2f} MB = {100 * size:.1f} % of the fp32 "
          f"ONNX ({os.path.getsize(src) / 1e6:.2f} MB); ops left in float: "
          f"{[f[0] for f in rep.float_ops] or 'none'}")
    print(f"  edgert int8 vs onnxruntime on edgert's QDQ export: {100 * agree:.2f} % of outputs "
          f"within one step ({step})")
    for kind, c in (("edgert", ce), ("onnxruntime", co)):
        if "error" in c:
            print(f"  quantize {kind:<12} failed: {c['error']}")
        else:
            print(f"  quantize {kind:<12} {c['seconds']:7.1f} s, peak RSS "
                  f"{c['peak_rss_mb']:7.0f} MB ({n} samples)")
    for note in ort_notes:
        print(f"  {note}")
    base = med["edgert fp32"]
    for k, v in med.items():
        print(f"  latency {k:<30} {v:8.1f} ms  ({v / base:.2f}x edgert fp32)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--samples", type=int, default=8, help="calibration images per light model")
    ap.add_argument("--digits-cal", type=int, default=200)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-digits", action="store_true")
    args = ap.parse_args()
    if not args.no_digits:
        digits(args.digits_cal)
    for name in args.models:
        light(name, args.samples, args.runs)


if __name__ == "__main__":
    main()
