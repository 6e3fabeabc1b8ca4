"""Train the digits CNN with edgert.train (no PyTorch) and export it to ONNX.

Same data and split as ``train_digits_cnn.py`` (scikit-learn's 8x8 digits, 80/20 with
``random_state=0``: 1,437 training and 360 test images, pixels / 16) and the same architecture
(three 3x3 Conv+BatchNorm+ReLU blocks with two max-pools, Linear 256->64, Dropout 0.2,
Linear 64->10). Training: Adam, one-cycle learning rate, label smoothing 0.05, random shifts of
up to one pixel (``RandomCrop(8, padding=1)``), 20 epochs of batch 64, seeded.

``--arch mlp`` trains a 64-128-64-10 MLP instead, ``--arch mobilenet`` a small MobileNet-style
network (depthwise separable convs, inverted residuals with Hardswish, global average pooling).

Prints the training time, the test accuracy of the engine itself, and the accuracy and agreement
of the exported model in onnxruntime and in the edgert runtime. Writes
``digits_edgert_<arch>.onnx`` (input ``input`` [batch, 1, 8, 8], output ``probabilities``
[batch, 10]) to ``--out``. Needs scikit-learn (not an edgert dependency)::

    python models/train_digits_edgert.py [--out models] [--epochs 20]

BLAS runs single-threaded (set before NumPy loads): on a busy 2-core machine a multithreaded
OpenBLAS made each small matrix product ten times slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import pathlib
import sys
import time

import numpy as np

from edgert.train import Tensor, export_onnx, manual_seed, nn
from edgert.train import functional as F
from edgert.train.data import DataLoader, RandomCrop, TensorDataset
from edgert.train.fit import evaluate, fit, predict
from edgert.train.optim import Adam, OneCycleLR

HERE = pathlib.Path(__file__).resolve().parent
SEED = 0


class Classifier(nn.Module):
    """``features`` then ``classifier``; ``with_softmax`` makes the exported graph output
    probabilities instead of logits."""

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features, self.classifier = features, classifier
        self.with_softmax = False

    def forward(self, x: Tensor) -> Tensor:
        logits = self.classifier(self.features(x))
        return F.softmax(logits, 1) if self.with_softmax else logits


def digits_cnn() -> Classifier:
    """The architecture of ``train_digits_cnn.py`` (about 40k parameters)."""
    return Classifier(
        nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
        ),
        nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.2),
                      nn.Linear(64, 10)),
    )


def digits_mlp() -> Classifier:
    """64 -> 128 -> 64 -> 10 with ReLU and dropout."""
    return Classifier(
        nn.Flatten(),
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64),
                      nn.ReLU(), nn.Linear(64, 10)),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 3) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.skip else y


def digits_mobilenet() -> Classifier:
    """A small MobileNet-style network: depthwise separable convs, inverted residuals."""
    return Classifier(
        nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
            InvertedResidual(16, 16, 1), InvertedResidual(16, 32, 2),
            InvertedResidual(32, 32, 1), InvertedResidual(32, 48, 2),
            nn.AdaptiveAvgPool2d(1),
        ),
        nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(48, 10)),
    )


ARCHS = {"cnn": digits_cnn, "mlp": digits_mlp, "mobilenet": digits_mobilenet}


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    return x_train, x_test, y_train, y_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE), help="output folder (default: models/)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="cnn")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x_train, x_test, y_train, y_test = load_split()
    start = time.perf_counter()
    manual_seed(SEED)
    model = ARCHS[args.arch]()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch, shuffle=True,
                        seed=SEED, transform=RandomCrop(8, padding=1))
    opt = Adam(model.parameters(), lr=3e-3)
    sched = OneCycleLR(opt, max_lr=1e-2, total_steps=args.epochs * len(loader))
    hist = fit(model, loader, opt, lambda o, t: F.cross_entropy(o, t, label_smoothing=0.05),
               epochs=args.epochs, scheduler=sched, scheduler_per_batch=True,
               progress=args.progress)
    train_s = time.perf_counter() - start
    print(f"{args.arch}: {model.num_parameters():,} parameters; trained {args.epochs} epochs in "
          f"{train_s:.1f} s (final train loss {hist.history['loss'][-1]:.4f}; includes Numba "
          "compile on a cold cache)")
    test = evaluate(model, DataLoader(TensorDataset(x_test, y_test), batch_size=256))
    print(f"edgert.train test accuracy: {test['accuracy']:.2%}")

    model.with_softmax = True
    probs = predict(model, x_test)
    onnx_path = out / f"digits_edgert_{args.arch}.onnx"
    export_onnx(model, Tensor(x_test[:1]), onnx_path, output_names=["probabilities"])
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1024:.0f} KB)")

    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_probs = sess.run(["probabilities"], {"input": x_test})[0]
    from edgert.converter import convert
    from edgert.runtime import Interpreter

    interp = Interpreter(convert(str(onnx_path)))
    edge_probs = interp.run({"input": x_test})["probabilities"]
    for name, p in (("onnxruntime", ort_probs), ("edgert runtime", edge_probs)):
        acc = float((p.argmax(1) == y_test).mean())
        same = int((p.argmax(1) == probs.argmax(1)).sum())
        print(f"{name}: test accuracy {acc:.2%}, same predictions as the engine {same}/"
              f"{len(y_test)}, max |prob diff| {np.abs(p - probs).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
