"""GPU check: edgert's CUDA path on real models, against onnxruntime and edgert's CPU path.

For each model (default SqueezeNet and ResNet-50 from :mod:`light_models`, seeded random
weights) and batch size (default 1 and 32):

* **correctness**: the CUDA interpreter's output against onnxruntime (CPU provider) on the same
  seeded input: max absolute difference and an ``allclose`` verdict;
* **latency** (medians, ms): edgert CUDA ``invoke`` with the input already on the device, edgert
  CUDA ``run`` with host input and output (copies included), edgert CPU, onnxruntime CPU, and
  onnxruntime CUDA when the ``CUDAExecutionProvider`` is installed (``onnxruntime-gpu``);
  ratios against onnxruntime of the same run;
* **int8** (``--int8``, on by default): the model quantized by :mod:`edgert.quantize` run on the
  CUDA path (int8 ops without a CUDA kernel run on the host and are listed).

Every edgert CUDA timing is synchronized (``CudaInterpreter.invoke`` waits for the stream).
The light models declare batch 1; ``--batches`` above 1 rewrite the input's batch dim to a
symbol and each Reshape's constant leading 1 to 0 ("copy the input dim").

Writes ``<out>/gpu_results.json`` and ``<out>/gpu_results.md``. Stops starting new measurements
when ``--budget`` seconds have passed, so the whole command stays inside its time slot.

Usage:
    python benchmarks/gpu_check.py --out gpu_results
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def dynamic_batch(model, free_spatial: bool = False):
    """A copy of ``model`` whose first input/outputs have a symbolic batch dim ``N``.

    ``free_spatial`` also makes the input's height and width symbolic (for ``--image-size``).
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in inits]
    for vi in list(real_inputs[:1]) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
        if free_spatial and vi.name == real_inputs[0].name:
            for k, sym in ((2, "H"), (3, "W")):
                dims[k].ClearField("dim_value")
                dims[k].dim_param = sym
    del g.value_info[:]
    for node in g.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            t = inits[node.input[1]]
            shape = numpy_helper.to_array(t).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0  # copy the batch dim from the input
                t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), t.name))
    return m


def _median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _ort_session(model_bytes: bytes, provider: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=[provider])


def check_model(name: str, batches: list[int], runs: int, cpu_runs: int, int8: bool,
                deadline: float, log, size: int = 224) -> dict[str, Any]:
    import light_models
    import onnx
    import onnxruntime as ort
    from numba import cuda

    from edgert.converter import convert
    from edgert.runtime import Interpreter

    path = name if name.endswith(".onnx") else light_models.materialize(name)
    model = dynamic_batch(onnx.load(str(path)), free_spatial=size != 224)
    model_bytes = model.SerializeToString()
    t0 = time.perf_counter()
    data = convert(model)
    result: dict[str, Any] = {"model": name, "convert_s": time.perf_counter() - t0, "batches": {}}
    input_name = next(i.name for i in model.graph.input
                      if i.name not in {t.name for t in model.graph.initializer})
    ort_cpu = _ort_session(model_bytes, "CPUExecutionProvider")
    has_ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    ort_gpu = _ort_session(model_bytes, "CUDAExecutionProvider") if has_ort_cuda else None
    t0 = time.perf_counter()
    gpu = Interpreter(data, device="cuda")
    result["cuda_load_s"] = time.perf_counter() - t0
    cpu = Interpreter(data)
    for batch in batches:
        if time.perf_counter() > deadline:
            log(f"{name} batch {batch}: skipped (time budget spent)")
            continue
        rng = np.random.default_rng(batch)
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        feeds = {input_name: x}
        r: dict[str, Any] = {}
        t0 = time.perf_counter()
        got = gpu.run(feeds)
        r["cuda_first_run_s"] = time.perf_counter() - t0  # includes JIT compilation
        out_name = next(iter(got))
        want = ort_cpu.run(None, feeds)[0]
        diff = float(np.max(np.abs(got[out_name] - want)))
        r["max_abs_diff_vs_ort"] = diff
        r["allclose_vs_ort"] = bool(np.allclose(got[out_name], want, rtol=1e-3, atol=1e-5))
        r["host_ops"] = list(gpu.host_ops)
        d_x = cuda.to_device(x)
        gpu.set_tensor(input_name, d_x)
        r["edgert_cuda_invoke_ms"] = _median_ms(gpu.invoke, runs)
        r["edgert_cuda_run_ms"] = _median_ms(lambda feeds=feeds: gpu.run(feeds), runs)
        r["ort_cpu_ms"] = _median_ms(lambda feeds=feeds: ort_cpu.run(None, feeds), cpu_runs,
                                     warmup=1)
        r["edgert_cpu_ms"] = _median_ms(lambda feeds=feeds: cpu.run(feeds), cpu_runs, warmup=1)
        if ort_gpu is not None:
            want_gpu = ort_gpu.run(None, feeds)[0]
            r["ort_cuda_max_abs_diff_vs_ort_cpu"] = float(np.max(np.abs(want_gpu - want)))
            r["ort_cuda_ms"] = _median_ms(lambda feeds=feeds: ort_gpu.run(None, feeds), runs)
            r["edgert_cuda_run_vs_ort_cuda"] = r["edgert_cuda_run_ms"] / r["ort_cuda_ms"]
        r["edgert_cuda_run_vs_ort_cpu"] = r["edgert_cuda_run_ms"] / r["ort_cpu_ms"]
        r["edgert_cuda_run_vs_edgert_cpu"] = r["edgert_cuda_run_ms"] / r["edgert_cpu_ms"]
        result["batches"][str(batch)] = r
        log(f"{name} batch {batch}: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if int8 and time.perf_counter() < deadline:
        result["int8"] = _int8(model, input_name, batches, runs, deadline, log, size)
    return result


def _int8(model, input_name, batches, runs, deadline, log, size) -> dict[str, Any]:
    """The int8 model from edgert.quantize on the CUDA path (host fallbacks listed)."""
    from edgert.runtime import Interpreter

    try:
        from edgert.quantization import quantize

        rng = np.random.default_rng(99)
        calib = {input_name: rng.standard_normal((2, 3, size, size)).astype(np.float32)}
        q_data, _ = quantize(model, calibration=calib, mode="int8", batch_size=1)
    except Exception as exc:  # noqa: BLE001 (the quantizer is another issue's: report it)
        log(f"int8: quantization failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {}
    gpu = Interpreter(q_data, device="cuda")
    cpu = Interpreter(q_data)
    for batch in batches:
        if time.perf_counter() > deadline:
            continue
        x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
        feeds = {input_name: x}
        got = gpu.run(feeds)
        want = cpu.run(feeds)
        key = next(iter(got))
        r = {
            "max_abs_diff_vs_edgert_cpu_int8": float(np.max(np.abs(got[key] - want[key]))),
            "host_ops": len(gpu.host_ops),
            "host_op_types": sorted({w.split()[0] for w in gpu.host_ops}),
            "edgert_cuda_run_ms": _median_ms(lambda feeds=feeds: gpu.run(feeds), runs),
            "edgert_cpu_ms": _median_ms(lambda feeds=feeds: cpu.run(feeds), 3, warmup=1),
        }
        out[str(batch)] = r
        log(f"int8 batch {batch}: {r}")
    return out


def _markdown(results: dict[str, Any]) -> str:
    header = ("| model | batch | allclose vs ORT | max abs diff | edgert CUDA invoke ms | "
              "edgert CUDA run ms | ORT CUDA ms | edgert CPU ms | ORT CPU ms | host ops |")
    lines = [f"# edgert GPU check ({results['device']})", "", header,
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in results["models"]:
        for batch, r in m.get("batches", {}).items():
            lines.append(
                f"| {m['model']} | {batch} | {r['allclose_vs_ort']} | "
                f"{r['max_abs_diff_vs_ort']:.2e} | {r['edgert_cuda_invoke_ms']:.2f} | "
                f"{r['edgert_cuda_run_ms']:.2f} | {r.get('ort_cuda_ms', float('nan')):.2f} | "
                f"{r['edgert_cpu_ms']:.2f} | {r['ort_cpu_ms']:.2f} | {len(r['host_ops'])} |")
        for batch, r in (m.get("int8") or {}).items():
            if isinstance(r, dict):
                lines.append(f"| {m['model']} int8 | {batch} | | "
                             f"{r['max_abs_diff_vs_edgert_cpu_int8']:.2e} (vs CPU int8) | | "
                             f"{r['edgert_cuda_run_ms']:.2f} | | {r['edgert_cpu_ms']:.2f} | | "
                             f"{r['host_ops']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_results", help="folder for the results files")
    parser.add_argument("--models", nargs="*", default=["squeezenet", "resnet50"],
                        help="light model names, or .onnx files with one NCHW image input")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    parser.add_argument("--runs", type=int, default=20, help="timed GPU runs per measurement")
    parser.add_argument("--cpu-runs", type=int, default=3, help="timed CPU runs per measurement")
    parser.add_argument("--no-int8", dest="int8", action="store_false")
    parser.add_argument("--image-size", type=int, default=224,
                        help="input height/width (small sizes smoke-test the script in Numba's "
                        "CUDA simulator; SqueezeNet only, ResNet-50 needs 224)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which no new measurement starts")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.budget
    from numba import cuda

    from edgert.runtime.cuda_interpreter import cuda_available

    if not cuda_available():
        print("no usable CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    dev = cuda.get_current_device()
    name = getattr(dev, "name", "Numba CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"device": name, "python": platform.python_version(),
                               "models": []}
    try:
        import numba_cuda

        results["numba_cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        results["numba_cuda"] = "built-in numba.cuda"

    def log(msg: str) -> None:
        print(msg, flush=True)

    status = 0
    for model in args.models:
        if time.perf_counter() > deadline:
            log(f"{model}: skipped (time budget spent)")
            continue
        try:
            res = check_model(model, args.batches, args.runs, args.cpu_runs, args.int8, deadline,
                              log, args.image_size)
        except Exception as exc:  # noqa: BLE001 (one model failing must not lose the others)
            import traceback

            traceback.print_exc()
            res = {"model": model, "error": f"{type(exc).__name__}: {exc}"}
            status = 1
        if any(not r["allclose_vs_ort"] for r in res.get("batches", {}).values()):
            status = 1
        results["models"].append(res)
        (out / "gpu_results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu_results.md").write_text(_markdown(results))
    print(_markdown(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
