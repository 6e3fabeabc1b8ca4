"""Train the bundled digits classifier (models/digits_cnn.onnx) with PyTorch.

Data: scikit-learn's bundled 8x8 handwritten digits (``sklearn.datasets.load_digits``: 1,797
images, pixel values 0..16, no download). Split 80/20 with
``train_test_split(test_size=0.2, random_state=0)``: 1,437 training and 360 test images.
Inputs are scaled to [0, 1] by dividing by 16; that is the only preprocessing the model expects.

Model: Conv(1->16) BN ReLU, Conv(16->32) BN ReLU, MaxPool 2 (4x4), Conv(32->64) BN ReLU,
MaxPool 2 (2x2), Flatten, Linear(256->64) ReLU, Dropout 0.2, Linear(64->10), Softmax. About
40k parameters; the exporter folds the BatchNorms into the Convs.

Training is seeded and single-threaded (CPU float sums are reproducible only with a fixed thread
count): Adam, lr 3e-3 with cosine decay, 40 epochs of batch 32, with random shifts of up to one
pixel as augmentation. Takes under a minute on one core.

Outputs (all small): ``digits_cnn.onnx`` (input ``input`` float32 [batch, 1, 8, 8], output
``probabilities`` float32 [batch, 10]; batch is dynamic), ``digits_test.npz`` (the test split:
``x`` float32 [360, 1, 8, 8] already scaled, ``y`` int64 [360]) and ``digits_sample.npy`` (the
first 8 test images). The accuracy printed at the end is measured on the exported ONNX file
with onnxruntime. Needs torch and scikit-learn (not edgert dependencies)::

    python models/train_digits_cnn.py [--out models]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SEED = 0
EPOCHS = 40
BATCH = 32
LR = 3e-3
HERE = pathlib.Path(__file__).resolve().parent


class DigitsCNN(nn.Module):
    """Small CNN for 1x8x8 digit images; returns logits (softmax is added for export)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class WithSoftmax(nn.Module):
    """The exported graph: class probabilities instead of logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.net(x), dim=1)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed 80/20 split, images scaled to [0, 1] as float32 [N, 1, 8, 8], labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    return x_train, x_test, y_train, y_test


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel in each direction (zero fill)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, x.shape[0]), generator=gen)
    rows = (dy[:, None] + torch.arange(8))[:, None, :, None].expand(-1, 1, 8, 10)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(8))[:, None, None, :].expand(-1, 1, 8, 8)
    return torch.gather(out, 3, cols)


def train(x_train: np.ndarray, y_train: np.ndarray) -> nn.Module:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps = EPOCHS * -(-len(x_train) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(model(shift(xt[idx], gen)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 9:
            print(f"epoch {epoch + 1}: train loss {total / len(xt):.4f}")
    return model.eval()


def export(model: nn.Module, path: pathlib.Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            WithSoftmax(model).eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
            opset_version=17, input_names=["input"], output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        )


def onnx_accuracy(path: pathlib.Path, x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """Correct predictions of the ONNX file in onnxruntime: (correct, total)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], {"input": x})[0]
    return int((probs.argmax(axis=1) == y).sum()), len(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE), help="output folder (default: models/)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    x_train, x_test, y_train, y_test = load_split()
    start = time.perf_counter()
    model = train(x_train, y_train)
    print(f"trained in {time.perf_counter() - start:.1f} s")
    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())

    onnx_path = out / "digits_cnn.onnx"
    export(model, onnx_path)
    np.savez_compressed(out / "digits_test.npz", x=x_test, y=y_test)
    np.save(out / "digits_sample.npy", x_test[:8])
    correct, total = onnx_accuracy(onnx_path, x_test, y_test)
    print(f"test accuracy: torch {torch_acc:.2%}, onnxruntime {correct}/{total} "
          f"= {correct / total:.2%}")
    print(f"sample labels: {y_test[:8].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
