"""Calibration: run the float model in the edgert runtime and observe every float tensor.

Data comes as a ``.npz`` file (one array per model input, batch on axis 0), a ``.npy`` file (a
one-input model), a folder of such files, a dict of arrays, or any iterable of feed dicts. Each
feed is checked against the model's inputs (names, dtypes, static dims, finiteness) before it
runs, so a mistake is reported up front instead of producing a silently wrong range.

To read intermediate tensors without touching the interpreter, the calibration model is the same
IR graph lowered with every float tensor that a node computes marked as an extra graph output.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, InputError, ShapeError
from edgert.ir import Graph, Value
from edgert.quantization.observers import Observer, make_observer

Feed = dict[str, np.ndarray]
DEFAULT_BATCH = 16


# ----- data ---------------------------------------------------------------------------------------
def _split(arrays: dict[str, np.ndarray], batch: int) -> Iterator[Feed]:
    n = min((a.shape[0] if a.ndim else 1) for a in arrays.values())
    for start in range(0, n, batch):
        yield {k: a[start:start + batch] for k, a in arrays.items()}


def _load_file(path: pathlib.Path, input_names: list[str]) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        if len(input_names) != 1:
            raise InputError(
                f"calibration file {path} is a .npy (one array) but the model has "
                f"{len(input_names)} inputs ({', '.join(input_names)}); use a .npz with one "
                "array per input name")
        return {input_names[0]: np.load(path, allow_pickle=False)}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    raise InputError(f"calibration file {path}: expected a .npz or .npy file")


def iter_feeds(data: Any, input_names: list[str], batch: int = DEFAULT_BATCH) -> Iterator[Feed]:
    """Feed dicts from any accepted calibration source (see the module docstring)."""
    if isinstance(data, (str, os.PathLike)):
        path = pathlib.Path(data)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
            if not files:
                raise InputError(f"calibration folder {path} holds no .npz or .npy files")
            for f in files:
                yield from _split(_load_file(f, input_names), batch)
            return
        if not path.exists():
            raise InputError(f"calibration data {path} does not exist")
        yield from _split(_load_file(path, input_names), batch)
        return
    if isinstance(data, np.ndarray):
        if len(input_names) != 1:
            raise InputError(f"one calibration array given for a model with inputs "
                             f"{input_names}; pass dicts of name -> array")
        yield from _split({input_names[0]: data}, batch)
        return
    if isinstance(data, dict):
        yield from _split({k: np.asarray(v) for k, v in data.items()}, batch)
        return
    if isinstance(data, Iterable):
        for item in data:
            if isinstance(item, np.ndarray) and len(input_names) == 1:
                item = {input_names[0]: item}
            if not isinstance(item, dict):
                raise InputError(f"calibration items must be dicts of input name -> array, got "
                                 f"{type(item).__name__}")
            yield item
        return
    raise InputError(f"unusable calibration data of type {type(data).__name__}")


def check_feed(graph: Graph, feed: Feed, index: int) -> Feed:
    """Validate one feed against the graph inputs; float data is cast to the input's dtype."""
    inputs = {v.name: v for v in graph.inputs}
    unknown = sorted(set(feed) - set(inputs))
    missing = sorted(set(inputs) - set(feed))
    if unknown or missing:
        raise InputError(
            f"calibration sample {index}: names do not fit the model (model inputs: "
            f"{', '.join(inputs)}; unknown: {', '.join(unknown) or '-'}; missing: "
            f"{', '.join(missing) or '-'})")
    out: Feed = {}
    for name, v in inputs.items():
        arr = np.asarray(feed[name])
        want = dtypes.to_numpy(v.dtype) if dtypes.is_known(v.dtype) else arr.dtype
        if arr.dtype != want:
            if not (arr.dtype.kind == "f" and want.kind == "f"):
                raise DTypeError(f"calibration sample {index}: input '{name}' has dtype "
                                 f"{arr.dtype}, the model expects {want}")
            arr = arr.astype(want)
        if v.shape is not None:
            if arr.ndim != len(v.shape) or any(
                    isinstance(d, int) and d >= 0 and d != s for d, s in zip(v.shape, arr.shape)):
                raise ShapeError(f"calibration sample {index}: input '{name}' has shape "
                                 f"{arr.shape}, the model expects {v.shape}")
        if arr.size == 0:
            raise InputError(f"calibration sample {index}: input '{name}' is empty")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InputError(f"calibration sample {index}: input '{name}' contains NaN or Inf")
        out[name] = arr
    return out


# ----- progress -----------------------------------------------------------------------------------
class _Progress:
    """tqdm when installed, else a plain counter on stderr; silent when ``enabled`` is False."""

    def __init__(self, enabled: bool, total: int | None):
        self.bar = None
        self.enabled = enabled
        self.n = 0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="sample", desc="calibrating")
            except ImportError:
                pass

    def update(self, k: int) -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled:
            print(f"\rcalibrating: {self.n} samples", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n:
            print(file=sys.stderr)


# ----- calibration --------------------------------------------------------------------------------
def float_activations(graph: Graph) -> list[Value]:
    """Float tensors that nodes compute (the ones quantization needs ranges for), inputs first."""
    seen: set[int] = set()
    out: list[Value] = []
    for v in list(graph.inputs) + [o for n in graph.nodes for o in n.outputs]:
        if id(v) in seen or v.const is not None or v.meta.get("omitted"):
            continue
        seen.add(id(v))
        if v.dtype == dtypes.FLOAT:
            out.append(v)
    return out


def probe_model(graph: Graph, extra: list[Value]) -> bytes:
    """The graph lowered with ``extra`` values as additional outputs (the graph is unchanged)."""
    from edgert.converter import convert

    saved = list(graph.outputs)
    ids = {id(v) for v in saved}
    graph.outputs = saved + [v for v in extra if id(v) not in ids]
    try:
        return convert(graph, level=0)
    finally:
        graph.outputs = saved


def calibrate(
    graph: Graph,
    data: Any,
    method: str = "minmax",
    *,
    batch_size: int = DEFAULT_BATCH,
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, tuple[float, float]]:
    """Run ``graph`` over the calibration data; return ``name -> (lo, hi)`` per float tensor.

    Raises:
        InputError / ShapeError / DTypeError: data that does not fit the model, or no data.
        EdgeRTError: the model has no float tensors to calibrate.
    """
    from edgert.errors import EdgeRTError
    from edgert.runtime import Interpreter

    acts = float_activations(graph)
    if not acts:
        raise EdgeRTError("the model has no float tensors: there is nothing to quantize")
    interp = Interpreter(probe_model(graph, acts), num_threads=None)
    # Model inputs keep their full range whatever the method: clipping the data itself (digits'
    # pixels in [0, 1]) cost 1.1 points of accuracy with entropy calibration.
    input_ids = {id(v) for v in graph.inputs}
    observers: dict[str, Observer] = {
        v.name: make_observer("minmax" if id(v) in input_ids else method) for v in acts}
    names = [v.name for v in graph.inputs]
    bar = _Progress(progress, max_samples)
    samples = 0
    try:
        for i, feed in enumerate(iter_feeds(data, names, batch_size)):
            feed = check_feed(graph, feed, i)
            outs = interp.run(feed, copy=False)  # views: read before the next run
            for name, obs in observers.items():
                arr = outs.get(name, feed.get(name))
                if arr is not None and arr.size:
                    # min and max see any NaN (they propagate it) or Inf: one pass fewer
                    # than an isfinite check over every activation
                    lo, hi = float(arr.min()), float(arr.max())
                    if not (np.isfinite(lo) and np.isfinite(hi)):
                        raise InputError(
                            f"calibration sample {i}: tensor '{name}' became NaN/Inf in the "
                            "float model; check the data's range and preprocessing")
                    obs.update(arr, lo, hi)
            k = next(iter(feed.values())).shape[0] if feed else 1
            samples += k
            bar.update(k)
            if max_samples is not None and samples >= max_samples:
                break
    finally:
        bar.close()
    if samples == 0:
        raise InputError("the calibration data is empty: give at least one sample")
    return {name: obs.range() for name, obs in observers.items() if obs.seen}
