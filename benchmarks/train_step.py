"""Time per training step of the digits CNN (batch 64): edgert.train beside PyTorch CPU.

One step is ``zero_grad``, forward, cross-entropy, backward and an Adam update, for the same
architecture (models/train_digits_edgert.py) on the same random batch. Both run single-threaded
(``torch.set_num_threads(1)``; OpenBLAS pinned to one thread before NumPy loads), warmed up
first; each number is the median of ``--repeats`` timings of ``--steps`` steps. PyTorch is
optional (skipped if not installed)::

    python benchmarks/train_step.py [--steps 20] [--repeats 7] [--batch 64]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np


def edgert_step(x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    from edgert.train import Tensor, manual_seed, nn
    from edgert.train import functional as F
    from edgert.train.optim import Adam

    manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    opt = Adam(m.parameters(), lr=1e-3)
    xt = Tensor(x)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(m(xt), y).backward()
        opt.step()

    return step


def torch_step(x: np.ndarray, y: np.ndarray) -> Callable[[], None] | None:
    try:
        import torch
    except ImportError:
        return None
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()

    return step


def median_ms(step: Callable[[], None], steps: int, repeats: int) -> float:
    for _ in range(5):
        step()  # warm-up (Numba compile, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t) / steps * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    # Alternate the two engines so that load from other processes hits both alike.
    ed, th = edgert_step(x, y), torch_step(x, y)
    results: dict[str, list[float]] = {"edgert.train": [], "torch": []}
    for _ in range(3):
        results["edgert.train"].append(median_ms(ed, args.steps, args.repeats))
        if th is not None:
            results["torch"].append(median_ms(th, args.steps, args.repeats))
    e = statistics.median(results["edgert.train"])
    print(f"digits CNN training step, batch {args.batch}, single thread (median ms)")
    print(f"  edgert.train  {e:8.2f} ms")
    if th is None:
        print("  torch         (not installed)")
        return 0
    t = statistics.median(results["torch"])
    print(f"  torch {__import__('torch').__version__:<8}{t:8.2f} ms")
    print(f"  ratio edgert/torch: {e / t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
