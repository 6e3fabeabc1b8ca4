"""Which ops of the reference models run on the host under ``device="cuda"`` (no GPU needed).

For each model (the nine light models of :mod:`light_models` and the PyTorch exports in
``tests/data/torch_*.onnx``), in fp32 (``edgert.convert``) and int8 (``edgert.quantize`` with
random calibration data), the CUDA interpreter is built and prepared for the model's input shape
(without a GPU, in Numba's CUDA simulator: preparing runs no kernel, so this is quick), and every
step that does not run on the device is counted by op type and reason:

* ``no-kernel``: the CUDA registry has no kernel for the op (it runs its CPU kernel);
* ``declined``: a CUDA kernel exists but its ``prepare`` cleared ``on_device`` (a dtype or a
  case the device code does not cover);
* ``dynamic``: the op's output shape depends on data, so it runs on the host at every call.

Ops folded at prepare time (shape arithmetic) are not steps and are not counted.

Usage::

    python benchmarks/gpu_check_ops.py                      # all models, fp32 and int8
    python benchmarks/gpu_check_ops.py squeezenet torch_cnn --no-int8
    python benchmarks/gpu_check_ops.py --markdown ops.md

Prints a table ``op  reason  count  models``; exits 0 (it reports, it does not judge).
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

TORCH_MODELS = ["torch_cnn", "torch_mobilenet", "torch_decoder", "torch_transformer"]


def _use_simulator_without_gpu() -> None:
    """Turn on Numba's CUDA simulator unless a GPU is usable (must run before numba.cuda loads)."""
    from cuda_helpers import enable_simulator_if_no_gpu

    enable_simulator_if_no_gpu()


def model_and_feeds(name: str, seed: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
    """The ONNX model and one input feed (batch 1) for a light model or a ``torch_*`` export."""
    import onnx

    if name.startswith("torch_"):
        path = ROOT / "tests" / "data" / f"{name}.onnx"
        saved = np.load(path.with_suffix(".npz"))
        feeds = {k[len("b1_in_"):]: saved[k] for k in saved.files if k.startswith("b1_in_")}
        return onnx.load(str(path)), feeds
    import light_models

    model = onnx.load(str(light_models.materialize(name)))
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return model, feeds


def quantized(model, feeds: dict[str, np.ndarray]) -> bytes:
    """``model`` quantized to int8 by edgert.quantize, calibrated on two random-ish samples."""
    from edgert.quantization import quantize

    rng = np.random.default_rng(1)
    calib = {}
    for k, v in feeds.items():
        if v.dtype.kind == "f":
            more = rng.standard_normal(v.shape).astype(v.dtype)
        else:
            more = v.copy()
        calib[k] = np.concatenate([v, more], axis=0)
    data, _ = quantize(model, calibration=calib, mode="int8", batch_size=1)
    return data


def host_steps(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[list[tuple[str, str]], int]:
    """``[(op type, reason)]`` for each step of the prepared CUDA interpreter not on the device,
    and the number of steps."""
    from edgert.runtime import Interpreter

    interp = Interpreter(data, device="cuda")
    for k, v in feeds.items():
        interp.resize_tensor_input(k, v.shape)
    interp.allocate_tensors()
    out = []
    for step in interp._steps:
        if step.on_device:
            continue
        kernel = step.kernel
        op = kernel.op.op_type
        if kernel.op.domain:
            op = f"{kernel.op.domain}.{op}"
        if step.dynamic:
            reason = "dynamic"
        elif getattr(kernel, "device", "cpu") == "cuda":
            reason = "declined"
        else:
            reason = "no-kernel"
        out.append((op, reason))
    return out, len(interp._steps)


def survey(names: list[str], int8: bool, log) -> dict[str, Any]:
    """Host steps per ``(model, variant)``; failures are recorded, not raised."""
    from edgert.converter import convert

    results: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        model, feeds = model_and_feeds(name)
        variants = [("fp32", lambda m=model: convert(m))]
        if int8:
            variants.append(("int8", lambda m=model, f=feeds: quantized(m, f)))
        for variant, make in variants:
            key = f"{name}/{variant}"
            try:
                steps, total = host_steps(make(), feeds)
                results[key] = {"host": steps, "steps": total}
            except Exception as exc:  # noqa: BLE001 (report the model, keep surveying)
                results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            r = results[key]
            msg = r.get("error") or f"{len(r['host'])} of {r['steps']} steps on the host"
            log(f"{key}: {msg} ({time.perf_counter() - t0:.1f} s)")
    return results


def table(results: dict[str, Any]) -> str:
    """Markdown table: op, reason, count over all models, which models."""
    count: collections.Counter = collections.Counter()
    where: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for key, r in results.items():
        for op, reason in r.get("host", []):
            count[(op, reason)] += 1
            where[(op, reason)].add(key)
    lines = ["| op | reason | host steps | models |", "|---|---|---|---|"]
    for (op, reason), n in count.most_common():
        lines.append(f"| {op} | {reason} | {n} | {', '.join(sorted(where[(op, reason)]))} |")
    lines.append("")
    lines.append("| model | host steps / steps |")
    lines.append("|---|---|")
    for key, r in results.items():
        lines.append(f"| {key} | " + (r["error"] if "error" in r else
                                      f"{len(r['host'])} / {r['steps']}") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import light_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*",
                        help=f"models (default all): {' '.join(light_models.LIGHT_MODELS)} "
                        f"{' '.join(TORCH_MODELS)}")
    parser.add_argument("--no-int8", dest="int8", action="store_false")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    _use_simulator_without_gpu()
    names = args.names or light_models.LIGHT_MODELS + TORCH_MODELS
    results = survey(names, args.int8, lambda m: print(m, flush=True))
    text = table(results)
    print(text)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
