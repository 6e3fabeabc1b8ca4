"""edgert vs onnxruntime on the same models, same inputs, same process, alternating runs.

For every model and thread count the two runtimes are timed in alternation (one edgert run, one
onnxruntime run, ...), so that noise from other processes on the machine hits both alike; the
table shows medians and the edgert/onnxruntime ratio (below 1: edgert is faster).

Start-up and peak RSS are measured in fresh subprocesses (one per runtime and model, warm Numba
cache): *start-up* is import + load + allocate + first result (onnxruntime: import + session
creation + first run); *RSS* is the child's peak resident set size (``VmHWM``). The edgert
child loads a ``.edgert`` file converted beforehand, as a device would.

Models: the materialized light models (see ``light_models.py``),
``tests/data/torch_mobilenet.onnx``, a real-size MobileNetV2 exported from PyTorch when torch is
installed (cached, not committed), and a 64→128→10 MLP with Softmax (per-call latency through
``run()``).

    python benchmarks/compare_ort.py [--threads 1 2] [--runs 20] [--gap-ms 0] [--no-startup]
        [models...]
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
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

LIGHT = ["squeezenet", "shufflenet", "resnet50", "inception_v1", "densenet121"]
ALL_MODELS = LIGHT + ["torch_mobilenet", "mobilenet_v2", "mlp"]


def model_cache() -> pathlib.Path:
    folder = os.environ.get("EDGERT_MODEL_CACHE")
    base = pathlib.Path(folder) if folder else pathlib.Path.home() / ".cache" / "edgert" / "models"
    base.mkdir(parents=True, exist_ok=True)
    return base


# ----- models -------------------------------------------------------------------------------------
def mlp_onnx(path: pathlib.Path) -> pathlib.Path:
    """64 -> 128 (ReLU) -> 10 -> Softmax, batch 1, seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((64, 128)) * 0.1).astype(np.float32)
    b1 = (rng.standard_normal(128) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((128, 10)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(a, n)
         for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def mobilenet_v2_onnx(path: pathlib.Path) -> pathlib.Path | None:
    """A real-size MobileNetV2 (width 1.0, 224x224) defined here and exported with torch."""
    if path.exists():
        return path
    try:
        import torch
        from torch import nn
    except ModuleNotFoundError:
        return None

    def conv_bn(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        return layers

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else conv_bn(cin, hidden, 1, 1)
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, 1, act=False)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[nn.Module] = list(conv_bn(3, 32, 3, 2))
    cin = 32
    for t, c, n, s in cfg:
        for i in range(n):
            layers.append(Inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += conv_bn(cin, 1280, 1, 1)
    torch.manual_seed(0)
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000))
    for m in net.modules():  # non-trivial BN statistics so that folding them is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, torch.randn(1, 3, 224, 224), str(tmp), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    os.replace(tmp, path)
    return path


def model_path(name: str) -> pathlib.Path | None:
    if name in LIGHT:
        from light_models import materialize

        return materialize(name)
    if name == "torch_mobilenet":
        return ROOT / "tests" / "data" / "torch_mobilenet.onnx"
    if name == "mobilenet_v2":
        return mobilenet_v2_onnx(model_cache() / "torch_mobilenet_v2_224.onnx")
    if name == "mlp":
        return mlp_onnx(model_cache() / "mlp_64_128_10.onnx")
    raise SystemExit(f"unknown model {name!r}; choose from {ALL_MODELS}")


def _converter_mtime() -> float:
    """The newest modification time of the code that converts (importer, optimizer, format)."""
    import edgert

    root = pathlib.Path(edgert.__file__).parent
    files = [root / "converter.py"]
    for sub in ("importer", "optimizer", "format"):
        files += (root / sub).rglob("*.py")
    return max(f.stat().st_mtime for f in files if f.exists())


def edgert_file(onnx_path: pathlib.Path) -> pathlib.Path:
    """The `.edgert` conversion (default options) of a model, cached until the ONNX file or the
    converting code changes (a new optimizer pass must not be measured on an old file)."""
    from edgert.converter import convert

    out = model_cache() / (onnx_path.stem + ".edgert")
    newest = max(onnx_path.stat().st_mtime, _converter_mtime())
    if not out.exists() or out.stat().st_mtime < newest:
        convert(str(onnx_path), str(out))
    return out


def feeds_for(sess: Any, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        out[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return out


# ----- timing -----------------------------------------------------------------------------------
def alternate(fns: list[Callable[[], Any]], runs: int, budget_s: float,
              gap_s: float = 0.0, block: int = 1,
              switch_gap_s: float = 0.0) -> list[list[float]]:
    """Time the callables in alternation; stop after ``runs`` rounds or ``budget_s`` seconds.

    onnxruntime's worker threads spin-wait for a while after a run; back to back, they are
    still spinning on the cores when edgert's next run starts (measured: SqueezeNet at 2 threads
    took 50 ms alternating call by call against 15 ms alone), which charges one runtime's idle
    spinning to the other. Two remedies, both off by default so that the 1-call alternation of
    earlier reports can be reproduced:

    ``block``: each turn makes one untimed call (it absorbs the other runtime's spin tail), then
    ``block`` timed calls in a row; a round is one turn per runtime, so slow drifts in machine
    load still hit both alike.
    ``gap_s``: an untimed pause before each call (lets the cores idle down, which slows small
    models).
    ``switch_gap_s``: an untimed pause at each change of runtime, before its untimed call. With
    ``block``, each runtime then runs its calls back to back as an app's loop would (its own
    threads may spin between them) on cores the other runtime's threads have left: measured
    after an onnxruntime run at 2 threads, its workers spin for about 60 ms (one core's CPU
    time), edgert's for about 3 ms.
    """
    times: list[list[float]] = [[] for _ in fns]
    deadline = time.perf_counter() + budget_s
    for r in range(runs):
        for k, fn in enumerate(fns):
            if switch_gap_s:
                time.sleep(switch_gap_s)
            if block > 1:
                fn()
            for _ in range(block):
                if gap_s:
                    time.sleep(gap_s)
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        if r >= 4 and time.perf_counter() > deadline:
            break
    return times


def bench_latency(path: pathlib.Path, edgert_path: pathlib.Path, threads: int, runs: int,
                  budget_s: float, inner: int = 1, gap_s: float = 0.0,
                  block: int = 1, ort_spin: bool = True,
                  switch_gap_s: float = 0.0) -> dict[str, float]:
    import onnxruntime as ort

    from edgert.runtime import Interpreter

    so = ort.SessionOptions()
    if not ort_spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = feeds_for(sess)
    interp = Interpreter(str(edgert_path), num_threads=threads)
    ours = interp.run(feeds)
    theirs = sess.run(None, feeds)
    err = max(float(np.max(np.abs(ours[o.name] - t))) for o, t in zip(sess.get_outputs(), theirs))

    def e():
        for _ in range(inner):
            interp.run(feeds)

    def o():
        for _ in range(inner):
            sess.run(None, feeds)

    for _ in range(2):  # warm-up
        e()
        o()
    te, to = alternate([e, o], runs, budget_s, gap_s, block, switch_gap_s)
    med_e = float(np.median(te)) / inner
    med_o = float(np.median(to)) / inner
    return {"edgert_ms": med_e * 1e3, "ort_ms": med_o * 1e3, "ratio": med_e / med_o,
            "max_abs_diff": err}


CHILD_EDGERT = r"""
import sys, time
t0 = time.perf_counter()
def peak_rss():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec,
    # so a child of a big benchmark process would report the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
import numpy as np
from edgert.runtime import Interpreter
it = Interpreter(sys.argv[1], num_threads=int(sys.argv[2]))
feeds = {}
for d in it.get_input_details():
    feeds[d["name"]] = (np.random.default_rng(0).standard_normal(tuple(d["shape"]))
                        .astype(d["dtype"]))
it.run(feeds)
t1 = time.perf_counter()
for _ in range(3):
    it.run(feeds)
print(t1 - t0, peak_rss())
"""

CHILD_ORT = r"""
import sys, time
t0 = time.perf_counter()
def peak_rss():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec,
    # so a child of a big benchmark process would report the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = int(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
feeds = {}
for i in s.get_inputs():
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
    feeds[i.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
s.run(None, feeds)
t1 = time.perf_counter()
for _ in range(3):
    s.run(None, feeds)
print(t1 - t0, peak_rss())
"""


def bytecode_env(folder: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an installed package: Python modules load from cached bytecode.

    ``PYTHONDONTWRITEBYTECODE=1`` (set on some development machines) would compile edgert's
    modules from source in every child (~0.3 s) while onnxruntime's and NumPy's installed
    ``.pyc`` files load, so the children get a private ``PYTHONPYCACHEPREFIX`` instead, warmed
    by one untimed run (:func:`startup`), for both runtimes alike.
    """
    env = dict(base if base is not None else os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = folder
    return env


def startup(code: str, path: pathlib.Path, threads: int, env: dict[str, str] | None = None,
            repeats: int = 3) -> tuple[float, int]:
    """Median start-up seconds and max peak RSS bytes over ``repeats`` fresh processes (after
    one untimed process that writes the bytecode cache)."""
    subprocess.run([sys.executable, "-c", code, str(path), str(threads)], capture_output=True,
                   text=True, env=env, check=True)
    secs, rss = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code, str(path), str(threads)],
                             capture_output=True, text=True, env=env, check=True)
        a, b = out.stdout.split()[-2:]
        secs.append(float(a))
        rss.append(int(b))
    return float(np.median(secs)), max(rss)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="*", default=ALL_MODELS)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=20, help="alternating rounds per model (max)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per model and thread count")
    ap.add_argument("--no-startup", action="store_true", help="skip start-up / RSS subprocesses")
    ap.add_argument("--cold", action="store_true",
                    help="also measure edgert start-up with an empty Numba cache")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--block", type=int, default=1,
                    help="timed calls per turn after one untimed call (see alternate())")
    ap.add_argument("--ort-no-spin", action="store_true",
                    help="onnxruntime's worker threads block instead of spin-waiting between "
                         "runs (session.intra_op.allow_spinning=0): no spinning is charged to "
                         "edgert's runs, at some cost to onnxruntime's own latency")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="untimed pause before each timed call, so that one runtime's spinning "
                         "worker threads are idle when the other runs (default 0: back to back; "
                         "a pause also lets cores idle down, which slows small models)")
    ap.add_argument("--switch-gap-ms", type=float, default=0.0,
                    help="untimed pause whenever the runtime changes (before its untimed call "
                         "with --block), so that each runtime's turn starts on cores the other "
                         "runtime's spinning threads have left (onnxruntime's spin ~60 ms)")
    args = ap.parse_args(argv)

    rows: list[dict[str, Any]] = []
    for name in args.models:
        path = model_path(name)
        if path is None:
            print(f"{name}: skipped (torch not installed)", file=sys.stderr)
            continue
        epath = edgert_file(path)
        row: dict[str, Any] = {"model": name}
        for thr in args.threads:
            inner = 200 if name == "mlp" else 1
            r = bench_latency(path, epath, thr, args.runs if inner == 1 else 15, args.budget, inner,
                              args.gap_ms / 1e3, args.block, not args.ort_no_spin,
                              args.switch_gap_ms / 1e3)
            row[f"t{thr}"] = r
            print(f"{name:<16} {thr}T  edgert {r['edgert_ms']:9.3f} ms  ort {r['ort_ms']:9.3f} ms"
                  f"  ratio {r['ratio']:5.2f}  (max|diff| {r['max_abs_diff']:.1e})",
                  file=sys.stderr, flush=True)
        if not args.no_startup:
            with tempfile.TemporaryDirectory() as pyc:
                env = bytecode_env(pyc)
                row["startup_edgert_s"], row["rss_edgert"] = startup(CHILD_EDGERT, epath, 1, env)
                row["startup_ort_s"], row["rss_ort"] = startup(CHILD_ORT, path, 1, env)
                if args.cold:
                    with tempfile.TemporaryDirectory() as tmp:
                        cold = dict(env, EDGERT_CACHE_DIR=tmp)
                        code = CHILD_EDGERT
                        # the untimed first run would warm the empty Numba cache: time one run
                        out = subprocess.run([sys.executable, "-c", code, str(epath), "1"],
                                             capture_output=True, text=True, env=cold,
                                             check=True)
                        row["startup_edgert_cold_s"] = float(out.stdout.split()[-2])
        rows.append(row)

    print()
    head = f"{'model':<16}"
    for thr in args.threads:
        head += f" | {thr}T edgert ms  ort ms  ratio"
    if not args.no_startup:
        head += " | start-up s edgert/ort | peak RSS MB edgert/ort"
    print(head)
    print("-" * len(head))
    for row in rows:
        line = f"{row['model']:<16}"
        for thr in args.threads:
            r = row[f"t{thr}"]
            line += f" | {r['edgert_ms']:9.3f} {r['ort_ms']:9.3f} {r['ratio']:5.2f}"
        if "startup_edgert_s" in row:
            line += (f" | {row['startup_edgert_s']:6.2f} / {row['startup_ort_s']:5.2f}"
                     f" | {row['rss_edgert'] / 2**20:6.0f} / {row['rss_ort'] / 2**20:5.0f}")
            if "startup_edgert_cold_s" in row:
                line += f" | cold {row['startup_edgert_cold_s']:.1f} s"
        print(line)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
