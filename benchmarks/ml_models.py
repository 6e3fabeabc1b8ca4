"""scikit-learn / LightGBM models (ai.onnx.ml) through edgert against onnxruntime.

Trains each model on synthetic data, exports it with skl2onnx (LightGBM with onnxmltools when
installed), checks that edgert's outputs match onnxruntime's, then times both at batch 1 and
batch 1000. Each runtime runs in its own process per thread count (``--threads``), so that
onnxruntime's spinning workers and edgert's never share the cores; times are medians of
``--rounds`` runs after a warm-up, and the table gives the ratio edgert / onnxruntime (below 1:
edgert is faster).

    pip install scikit-learn skl2onnx [lightgbm onnxmltools]
    python benchmarks/ml_models.py [--threads 1 2] [--rounds 200] [names...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BATCHES = (1, 1000)


def build(folder: str, names: list[str] | None) -> dict[str, str]:
    """name -> path of the exported ONNX model; the data sets are saved beside them."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    warnings.filterwarnings("ignore")
    xc, yc = make_classification(4000, 20, n_informative=12, n_classes=3, random_state=0)
    xr, yr = make_regression(4000, 20, noise=0.5, random_state=0)
    xc, xr = xc.astype(np.float32), xr.astype(np.float32)
    models = {
        "random_forest_500": (lambda: RandomForestClassifier(500, max_depth=10, random_state=0,
                                                             n_jobs=1), xc, yc),
        "random_forest_regressor_100": (lambda: RandomForestRegressor(100, random_state=0,
                                                                      n_jobs=1), xr, yr),
        "gradient_boosting_200": (lambda: GradientBoostingClassifier(n_estimators=200,
                                                                     max_depth=4), xc, yc),
        "logistic_regression": (lambda: make_pipeline(StandardScaler(),
                                                      LogisticRegression(max_iter=500)), xc, yc),
        "svc_rbf_proba": (lambda: SVC(probability=True, random_state=0), xc[:1500], yc[:1500]),
    }
    try:
        import lightgbm  # noqa: F401
        import onnxmltools  # noqa: F401

        models["lightgbm_300"] = ("lightgbm", xc, yc)
    except ImportError:
        pass
    paths = {}
    for name, (make, x, y) in models.items():
        if names and name not in names:
            continue
        if make == "lightgbm":
            from lightgbm import LGBMClassifier
            from onnxmltools import convert_lightgbm
            from onnxmltools.convert.common.data_types import FloatTensorType

            model = LGBMClassifier(n_estimators=300, verbose=-1).fit(x, y)
            onx = convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, 20]))],
                                   target_opset=15, zipmap=False)
        else:
            model = make().fit(x, y)
            onx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3},
                          options={"zipmap": False} if hasattr(model, "predict_proba") else None)
        path = os.path.join(folder, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
        np.save(os.path.join(folder, f"{name}.npy"), x[:1000])
        paths[name] = path
    return paths


def worker(runtime: str, path: str, threads: int, rounds: int) -> None:
    """Time one model in this process; print JSON {batch: median seconds, "outputs": ...}."""
    x_all = np.load(path[:-5] + ".npy")
    if runtime == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run(x):
            return sess.run(None, {name: x})
    else:
        import edgert
        from edgert.runtime import Interpreter

        it = Interpreter(edgert.convert(path), num_threads=threads)
        name = it.get_input_details()[0]["name"]

        def run(x):
            return list(it.run({name: x}).values())
    result: dict = {}
    for batch in BATCHES:
        x = np.ascontiguousarray(x_all[:batch])
        for _ in range(10):
            outs = run(x)
        times = []
        for _ in range(rounds if batch == 1 else max(10, rounds // 10)):
            t = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t)
        result[str(batch)] = float(np.median(times))
        if batch == BATCHES[-1]:
            result["outputs"] = [np.asarray(o).tolist() for o in outs]
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args.rounds)
        return
    folder = tempfile.mkdtemp(prefix="edgert_ml_")
    paths = build(folder, args.names)
    print(f"{'model':30s} {'thr':>3s} {'batch':>5s} {'onnxruntime':>12s} {'edgert':>12s} "
          f"{'ratio':>6s}  match")
    for name, path in paths.items():
        for threads in args.threads:
            res = {}
            for runtime in ("ort", "edgert"):
                out = subprocess.run(
                    [sys.executable, __file__, "--rounds", str(args.rounds), "--worker", runtime,
                     path, str(threads)], capture_output=True, text=True, check=False)
                if out.returncode:
                    raise SystemExit(f"{runtime} on {name} failed:\n{out.stderr[-3000:]}")
                res[runtime] = json.loads(out.stdout.strip().splitlines()[-1])
            match = _match(res["ort"]["outputs"], res["edgert"]["outputs"])
            for batch in BATCHES:
                o, e = res["ort"][str(batch)], res["edgert"][str(batch)]
                print(f"{name:30s} {threads:3d} {batch:5d} {o * 1e3:10.3f}ms {e * 1e3:10.3f}ms "
                      f"{e / o:6.2f}  {match}")


def _match(ref: list, got: list) -> str:
    """'labels equal, max |diff| ...' over the outputs."""
    worst = 0.0
    for r, g in zip(ref, got):
        r, g = np.asarray(r), np.asarray(g)
        if r.dtype.kind in "iuUO":
            if not np.array_equal(r, g):
                return f"LABELS DIFFER ({int((r != g).sum())} rows)"
        else:
            worst = max(worst, float(np.abs(r - g).max()))
    return f"labels equal, max|diff| {worst:.1e}"


if __name__ == "__main__":
    main()
