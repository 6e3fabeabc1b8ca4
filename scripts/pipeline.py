"""The whole edgert pipeline on the bundled digits data, in one summary table.

Train a small CNN with ``edgert.train`` → export ONNX → optimize and convert to ``.edgert``
(fp32) → quantize to int8 with calibration data → run both on the held-out test split, and
print accuracy, file size and latency side by side.

    python scripts/pipeline.py [--epochs 6] [--out build]

Data: ``models/digits_train.npz`` (1,437 images, raw 0..16 pixels as uint8) and
``models/digits_test.npz`` (360 images, pixels / 16) — scikit-learn's bundled 8×8 digits split
80/20 with ``random_state=0`` (see models/README.md). No download, no PyTorch.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

# The small matrix products of training are fastest single-threaded (BLAS start-up cost
# dominates); set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))


def _latency_ms(interp, x: np.ndarray, runs: int = 200) -> float:
    interp.run({"input": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interp.run({"input": x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    ap.add_argument("--out", default=str(ROOT / "build"), help="output folder (default build/)")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from train_digits_edgert import digits_cnn

    import edgert
    from edgert.runtime import Interpreter
    from edgert.train import Tensor, export_onnx, manual_seed
    from edgert.train import functional as F
    from edgert.train.data import DataLoader, RandomCrop, TensorDataset
    from edgert.train.fit import evaluate, fit
    from edgert.train.optim import Adam, OneCycleLR

    train = np.load(ROOT / "models" / "digits_train.npz")
    test = np.load(ROOT / "models" / "digits_test.npz")
    x_train = train["x"].astype(np.float32) / 16.0
    y_train = train["y"].astype(np.int64)
    x_test, y_test = test["x"], test["y"]

    # 1. train
    t0 = time.perf_counter()
    manual_seed(0)
    model = digits_cnn()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True, seed=0,
                        transform=RandomCrop(8, padding=1))
    opt = Adam(model.parameters(), lr=3e-3)
    sched = OneCycleLR(opt, max_lr=1e-2, total_steps=args.epochs * len(loader))
    fit(model, loader, opt, lambda o, t: F.cross_entropy(o, t, label_smoothing=0.05),
        epochs=args.epochs, scheduler=sched, scheduler_per_batch=True, progress=False)
    train_s = time.perf_counter() - t0
    engine_acc = evaluate(model, DataLoader(TensorDataset(x_test, y_test), batch_size=256))
    print(f"trained {args.epochs} epochs in {train_s:.1f} s; engine test accuracy "
          f"{engine_acc['accuracy']:.2%}")

    # 2. export
    model.with_softmax = True
    onnx_path = out / "digits_pipeline.onnx"
    export_onnx(model, Tensor(x_test[:1]), onnx_path, output_names=["probabilities"])

    # 3. optimize + convert (fp32) and 4. quantize (int8, calibrated on 256 training images)
    fp32_path = out / "digits_pipeline_fp32.edgert"
    int8_path = out / "digits_pipeline_int8.edgert"
    edgert.convert(str(onnx_path), str(fp32_path))
    calib = [{"input": x_train[i : i + 32]} for i in range(0, 256, 32)]
    edgert.quantize(str(onnx_path), str(int8_path), calibration=calib, method="entropy")

    # 5. run both on the test split
    rows = []
    for label, path in (("ONNX (export)", onnx_path), ("edgert fp32", fp32_path),
                        ("edgert int8", int8_path)):
        size = path.stat().st_size
        if path.suffix == ".onnx":
            rows.append((label, size, None, None))
            continue
        interp = Interpreter(str(path), num_threads=1)
        probs = interp.run({"input": x_test})["probabilities"]
        acc = float((probs.argmax(1) == y_test).mean())
        rows.append((label, size, acc, _latency_ms(interp, x_test[:1])))
    print()
    print(f"{'model':<16}{'size KiB':>10}{'test acc':>10}{'batch-1 latency (1 thread)':>28}")
    for label, size, acc, lat in rows:
        acc_s = f"{acc:.2%}" if acc is not None else "-"
        lat_s = f"{lat:.3f} ms" if lat is not None else "-"
        print(f"{label:<16}{size / 1024:>10.1f}{acc_s:>10}{lat_s:>28}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
