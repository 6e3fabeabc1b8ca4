"""Datasets, a batching :class:`DataLoader`, and image transforms (tf.data-style pipeline).

The loader batches by *index arrays*: a :class:`TensorDataset` is sliced once per batch
(``x[idx]``), not item by item, so loading costs one NumPy gather per batch. Transforms work on
one sample (C, H, W) or on a whole batch (N, C, H, W) at once, vectorized, and draw their
randomness from a generator the loader seeds, so an epoch is reproducible.

Example::

    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, seed=0,
                        transform=Compose([RandomCrop(8, padding=1), Normalize(0.5, 0.25)]))
    for xb, yb in loader:
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgert.errors import ShapeError
from edgert.train.tensor import Tensor


class Dataset:
    """Anything with ``__len__`` and ``__getitem__(i) -> sample``."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Any:
        raise NotImplementedError


class TensorDataset(Dataset):
    """Rows of equally long arrays: ``ds[i] == (a[i], b[i], ...)``; also indexable by arrays."""

    def __init__(self, *arrays: Any):
        self.arrays = [np.asarray(a.data if isinstance(a, Tensor) else a) for a in arrays]
        if not self.arrays:
            raise ShapeError("TensorDataset needs at least one array")
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            raise ShapeError(f"TensorDataset: arrays differ in length: "
                             f"{[len(a) for a in self.arrays]}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, i: Any) -> tuple:
        return tuple(a[i] for a in self.arrays)


def default_collate(samples: Sequence[Any]) -> Any:
    """Stack a list of samples (arrays, numbers, or tuples of them) into batch arrays."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(default_collate([s[i] for s in samples]) for i in range(len(first)))
    return np.stack([np.asarray(getattr(s, "data", s)) for s in samples])


class DataLoader:
    """Iterate a dataset in batches of :class:`Tensor`.

    Args:
        dataset: a :class:`Dataset` (a :class:`TensorDataset` is batched by one gather).
        batch_size: samples per batch.
        shuffle: a new permutation every epoch from a generator seeded with ``seed``.
        drop_last: skip the last, smaller batch.
        collate_fn: turns a list of samples into a batch (default: stack).
        transform: applied to the first element of each batch (the inputs), vectorized.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False,
                 collate_fn: Callable | None = None, transform: Callable | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.drop_last, self.collate_fn, self.transform = drop_last, collate_fn, transform
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            if self.collate_fn is None and isinstance(self.dataset, TensorDataset):
                batch = self.dataset[idx]
            else:
                batch = (self.collate_fn or default_collate)([self.dataset[int(i)] for i in idx])
            single = not isinstance(batch, tuple)
            parts = [batch] if single else list(batch)
            if self.transform is not None:
                parts[0] = self.transform(parts[0], self.rng)
            out = tuple(Tensor(np.asarray(p)) for p in parts)
            yield out[0] if single else out


# ----- transforms --------------------------------------------------------------------------------
class Compose:
    """Apply transforms in order; each is ``f(x, rng) -> x``."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        for t in self.transforms:
            x = t(x, rng)
        return x


def _batched(x: np.ndarray) -> tuple[np.ndarray, bool]:
    if x.ndim == 3:
        return x[None], True
    if x.ndim == 4:
        return x, False
    raise ShapeError(f"image transforms expect (C, H, W) or (N, C, H, W), got {x.shape}")


class Normalize:
    """``(x - mean) / std`` per channel."""

    def __init__(self, mean: Any, std: Any):
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        if np.any(self.std == 0):
            raise ValueError("Normalize: std must be non-zero")

    def __call__(self, x: np.ndarray, rng: Any = None) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(x.dtype)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, single = _batched(x)
        flip = rng.random(len(b)) < self.p
        out = b.copy()
        out[flip] = b[flip][..., ::-1]
        return out[0] if single else out


class RandomCrop:
    """Zero-pad by ``padding`` then crop ``size`` at a random offset per image."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = padding

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, single = _batched(x)
        p = self.padding
        padded = np.pad(b, ((0, 0), (0, 0), (p, p), (p, p)))
        n, _, h, w = padded.shape
        th, tw = self.size
        if th > h or tw > w:
            raise ShapeError(f"RandomCrop: crop {self.size} is larger than the padded image "
                             f"{(h, w)}")
        dy = rng.integers(0, h - th + 1, n)
        dx = rng.integers(0, w - tw + 1, n)
        rows = (dy[:, None] + np.arange(th))[:, None, :, None]
        cols = (dx[:, None] + np.arange(tw))[:, None, None, :]
        out = padded[np.arange(n)[:, None, None, None], np.arange(b.shape[1])[None, :, None, None],
                     rows, cols]
        return out[0] if single else out
