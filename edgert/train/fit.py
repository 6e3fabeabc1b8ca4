"""Keras-style training loop: :func:`fit`, :func:`evaluate`, :func:`predict`, callbacks, logs.

``fit`` runs epochs of ``zero_grad / loss / backward / step`` over a :class:`DataLoader`,
evaluates on a validation loader after each epoch, and hands an ``epoch logs`` dict (``loss``,
``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``time``) to each callback. It returns a
:class:`History` with one list per metric. Like Keras it reports progress by default: a bar
per epoch on a terminal, one line per epoch elsewhere (``verbose=0`` silences it).

Logs: :class:`CSVLogger` writes one row per epoch; :class:`TensorBoardLogger` writes scalar
summaries in TensorBoard's event-file format (TFRecord framing with masked CRC32C around
hand-encoded ``Event`` protobufs — no tensorboard or protobuf dependency); :func:`plot_history`
draws a PNG when matplotlib is installed (it is not an edgert dependency).
"""

from __future__ import annotations

import csv
import math
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgert.train import functional as F
from edgert.train.nn import Module
from edgert.train.tensor import Tensor, no_grad


class History:
    """Per-epoch metric lists: ``history.history["val_accuracy"][-1]``."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))


class Callback:
    """Hooks: ``on_train_begin``, ``on_epoch_end(epoch, logs)``, ``on_train_end``; set
    ``stop_training`` on the trainer to stop."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


def _improved(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the
    best weights."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "min",
                 min_delta: float = 0.0, restore_best_weights: bool = False):
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.restore = restore_best_weights
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.best_state: dict | None = None
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"EarlyStopping: metric {self.monitor!r} not in logs {sorted(logs)}")
        if _improved(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            if self.restore:
                self.best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                self.stopped_epoch = epoch

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save the model's state dict to ``path`` whenever ``monitor`` improves."""

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", mode: str = "min"):
        self.path, self.monitor, self.mode = path, monitor, mode
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is not None and _improved(self.mode, value, self.best, 0.0):
            self.best, self.best_epoch = value, epoch
            trainer.model.save(self.path)


class CSVLogger(Callback):
    """One row per epoch: ``epoch,loss,accuracy,...``."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self.keys: list[str] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        new = self.keys is None
        if new:
            self.keys = sorted(logs)
        with open(self.path, "w" if new else "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch"] + self.keys)
            w.writerow([epoch] + [logs.get(k, "") for k in self.keys])


# ----- TensorBoard event files --------------------------------------------------------------------
def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C (Castagnoli polynomial) of ``data``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def _event(wall_time: float, step: int, tag: str | None = None, value: float = 0.0,
           file_version: str | None = None) -> bytes:
    """An ``Event`` protobuf: wall_time=1 (double), step=2 (int64), file_version=3,
    summary=5 {value=1 {tag=1, simple_value=2 (float)}}."""
    msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        fv = file_version.encode()
        msg += _field(3, 2, _varint(len(fv)) + fv)
    if tag is not None:
        t = tag.encode()
        val = _field(1, 2, _varint(len(t)) + t) + _field(2, 5, struct.pack("<f", value))
        summ = _field(1, 2, _varint(len(val)) + val)
        msg += _field(5, 2, _varint(len(summ)) + summ)
    return msg


class TensorBoardLogger(Callback):
    """Scalars per epoch in an ``events.out.tfevents.*`` file that TensorBoard reads."""

    def __init__(self, log_dir: str | os.PathLike):
        os.makedirs(log_dir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.edgert"
        self.path = os.path.join(log_dir, name)
        self._write(_event(time.time(), 0, file_version="brain.Event:2"), "wb")

    def _write(self, record: bytes, mode: str = "ab") -> None:
        header = struct.pack("<Q", len(record))
        with open(self.path, mode) as f:
            f.write(header + struct.pack("<I", _masked_crc(header)) + record
                    + struct.pack("<I", _masked_crc(record)))

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self._write(_event(time.time(), epoch, k, float(v)))


def read_tensorboard_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """Decode the scalar events of a file written by :class:`TensorBoardLogger` (for tests)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        if struct.unpack_from("<I", data, pos + 8)[0] != _masked_crc(data[pos:pos + 8]):
            raise ValueError("bad record header CRC")
        rec = data[pos + 12:pos + 12 + n]
        if struct.unpack_from("<I", data, pos + 12 + n)[0] != _masked_crc(rec):
            raise ValueError("bad record CRC")
        pos += 16 + n
        fields = _parse(rec)
        if 5 in fields:
            step = fields.get(2, 0)
            val = _parse(_parse(fields[5])[1])
            out.append((step, val[1].decode(), struct.unpack("<f", val[2])[0]))
    return out


def _parse(buf: bytes) -> dict[int, Any]:
    fields: dict[int, Any] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            fields[num], pos = _read_varint(buf, pos)
        elif wire == 1:
            fields[num], pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            fields[num], pos = buf[pos:pos + 4], pos + 4
        else:
            n, pos = _read_varint(buf, pos)
            fields[num], pos = buf[pos:pos + n], pos + n
    return fields


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def plot_history(history: History, path: str | os.PathLike) -> bool:
    """Write a PNG of the loss and accuracy curves; returns False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key in (metric, f"val_{metric}"):
            if key in history.history:
                ax.plot(history.epoch, history.history[key], label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ----- the loop -----------------------------------------------------------------------------------
class Trainer:
    """State shared with callbacks: the model, optimizer and ``stop_training`` flag."""

    def __init__(self, model: Module, optimizer: Any, loss_fn: Callable) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.stop_training = False


def _accuracy(logits: np.ndarray, y: np.ndarray) -> int:
    if logits.ndim == 2 and y.ndim == 1 and y.dtype.kind in "iu":
        return int((logits.argmax(axis=1) == y).sum())
    return 0


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _verbosity(verbose: int | str, progress: bool | None) -> int:
    """0 silent, 1 progress bar, 2 one line per epoch (Keras's values; 'auto' is 1)."""
    if isinstance(verbose, str):
        if verbose != "auto":
            raise ValueError(f"fit: verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
        mode = 1
    elif verbose in (0, 1, 2):  # True / False count as 1 / 0
        mode = int(verbose)
    else:
        raise ValueError(f"fit: verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    if progress is True and mode == 0:
        mode = 1
    elif progress is False and mode == 1:
        mode = 2
    return mode


def _open_bar(total: int | None, desc: str) -> Any:
    """A tqdm bar on stderr, or None where stderr is no terminal (logs, pipes, CI) or tqdm is
    not installed: a bar's carriage returns would litter a log file."""
    if not _stderr_is_terminal():
        return None
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=True, file=sys.stderr,
                dynamic_ncols=True)


def _fmt(v: float) -> str:
    return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.4e}"


def format_logs(logs: dict[str, float]) -> str:
    """``"loss: 0.1234 - accuracy: 0.9500 - ..."`` (Keras's style; ``time`` is left out)."""
    return " - ".join(f"{k}: {_fmt(v)}" for k, v in logs.items() if k != "time")


def fit(model: Module, train_loader: Any, optimizer: Any, loss_fn: Callable = F.cross_entropy,
        epochs: int = 1, val_loader: Any = None, scheduler: Any = None,
        scheduler_per_batch: bool = False, callbacks: Iterable[Callback] = (),
        progress: bool | None = None, verbose: int | str = "auto") -> History:
    """Train ``model``; returns the :class:`History` (loss, accuracy, val_* per epoch).

    ``loss_fn(outputs, targets)`` is a function (``F.cross_entropy``) or a loss module
    (``nn.CrossEntropyLoss()``). ``scheduler.step()`` runs after every batch when
    ``scheduler_per_batch`` (one-cycle, warm-up), else after every epoch.

    ``verbose`` as in Keras: ``"auto"`` (the default) and ``1`` show a progress bar per epoch
    (tqdm, on stderr) that ends with the epoch's metrics, ``2`` prints one line per epoch on
    stdout, ``0`` prints nothing. The bar needs a terminal: where stderr is not one (a log file,
    a pipe, CI) or tqdm is not installed, ``1`` prints the lines of ``2`` instead. ``progress``
    is the older switch for the bar: ``False`` means lines, ``True`` a bar even with
    ``verbose=0``.
    """
    mode = _verbosity(verbose, progress)
    trainer = Trainer(model, optimizer, loss_fn)
    callbacks = list(callbacks)
    history = History()
    try:
        total = len(train_loader)
    except TypeError:
        total = None
    for cb in callbacks:
        cb.on_train_begin(trainer)
    for epoch in range(epochs):
        start = time.perf_counter()
        desc = f"Epoch {epoch + 1}/{epochs}"
        bar = _open_bar(total, desc) if mode == 1 else None
        try:
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for xb, yb in train_loader:
                out = model(xb)
                loss = loss_fn(out, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if scheduler is not None and scheduler_per_batch:
                    scheduler.step()
                n = len(xb)
                total_loss += loss.item() * n
                correct += _accuracy(out.data, yb.data)
                seen += n
                if bar is not None:
                    bar.set_postfix_str(f"loss: {_fmt(total_loss / seen)}", refresh=False)
                    bar.update(1)
            if scheduler is not None and not scheduler_per_batch:
                scheduler.step()
            logs = {"loss": total_loss / seen, "accuracy": correct / seen,
                    "lr": optimizer.param_groups[0]["lr"]}
            if val_loader is not None:
                val = evaluate(model, val_loader, loss_fn)
                logs.update({f"val_{k}": v for k, v in val.items()})
            logs["time"] = time.perf_counter() - start
            if bar is not None:
                bar.set_postfix_str(format_logs(logs), refresh=False)
            elif mode:
                print(f"{desc} - {logs['time']:.2f}s - {format_logs(logs)}", flush=True)
        finally:
            if bar is not None:
                bar.close()
        history.append(epoch, logs)
        for cb in callbacks:
            cb.on_epoch_end(trainer, epoch, logs)
        if trainer.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(trainer)
    model.eval()
    return history


def evaluate(model: Module, loader: Any, loss_fn: Callable = F.cross_entropy) -> dict[str, float]:
    """Mean loss and accuracy over ``loader`` in eval mode."""
    was = model.training
    model.eval()
    total, correct, seen = 0.0, 0, 0
    with no_grad():
        for xb, yb in loader:
            out = model(xb)
            total += loss_fn(out, yb).item() * len(xb)
            correct += _accuracy(out.data, yb.data)
            seen += len(xb)
    model.train(was)
    return {"loss": total / max(seen, 1), "accuracy": correct / max(seen, 1)}


def predict(model: Module, x: Any, batch_size: int = 256) -> np.ndarray:
    """Model outputs for an array of inputs, batched, in eval mode, as one NumPy array."""
    was = model.training
    model.eval()
    x = np.asarray(getattr(x, "data", x))
    outs = []
    with no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(Tensor(x[i:i + batch_size])).data)
    model.train(was)
    return np.concatenate(outs) if outs else np.empty((0,))
