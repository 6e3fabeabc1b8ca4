"""One served model version: its interpreters, request checks and the (batching) scheduler.

A :class:`ModelVersion` owns an :class:`~edgert.runtime.InterpreterPool` of ``instances``
interpreters and as many worker threads. Requests are queued; each worker takes the oldest one
and, when dynamic batching is on, also every queued request that can run with it (same dtypes
and non-batch dimensions) until the batch has ``max_batch_size`` rows or ``max_queue_delay``
has passed since the first one arrived; the merged feeds run once and the outputs are split
back per request. Requests that cannot be merged run apart.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import threading
import time
from typing import Any

import numpy as np

from edgert.errors import DTypeError, EdgeRTError, InputError, ResourceLimitError, ShapeError
from edgert.runtime import InterpreterPool
from edgert.serve.metrics import Metrics, log
from edgert.serve.protocol import InferInput, ProtocolError, datatype_of

__all__ = ["ModelConfig", "ModelVersion", "TensorInfo"]

# Errors of the runtime that the request caused (its shapes, its values): 400, not 500.
_CLIENT_ERRORS = (InputError, ShapeError, DTypeError, ResourceLimitError)


@dataclasses.dataclass
class ModelConfig:
    """How one model is served (``config.json`` next to its versions; defaults from the CLI).

    Attributes:
        instances: interpreters (parallel runs) per version; None: CPUs // threads.
        threads: kernel threads of each interpreter.
        max_batch_size: the most rows one merged execution may have; 0 turns dynamic batching
            off (it is also off for models whose inputs have no dynamic first dimension).
        max_queue_delay_ms: how long the first request of a batch waits for others.
        versions: "all" (default), "latest", or a list of version numbers to serve.
        warmup: run each version once when it is loaded (zeros, dynamic dims 1), so that
            compiling its kernels (on a machine whose kernel cache is cold) happens before it
            is ready instead of in its first request.
        timeout_s, max_alloc_bytes: the interpreters' limits per run (None: the runtime's
            defaults; see edgert.runtime.Interpreter); a request past one gets a 400.
    """

    instances: int | None = None
    threads: int = 1
    max_batch_size: int = 0
    max_queue_delay_ms: float = 1.0
    versions: Any = "all"
    warmup: bool = True
    timeout_s: float | None = None
    max_alloc_bytes: int | None = None

    @classmethod
    def from_json(cls, obj: Any, base: ModelConfig, where: str) -> ModelConfig:
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        cfg = dataclasses.replace(base, **obj)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "config") -> None:
        def positive_int(v: Any, name: str, minimum: int) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {v!r}")

        if self.instances is not None:
            positive_int(self.instances, "instances", 1)
        positive_int(self.threads, "threads", 1)
        positive_int(self.max_batch_size, "max_batch_size", 0)
        if (isinstance(self.max_queue_delay_ms, bool)
                or not isinstance(self.max_queue_delay_ms, (int, float))
                or not 0 <= self.max_queue_delay_ms <= 60_000):
            raise ValueError(f"{where}: max_queue_delay_ms must be a number in [0, 60000]")
        if self.timeout_s is not None and (isinstance(self.timeout_s, bool) or not isinstance(
                self.timeout_s, (int, float)) or self.timeout_s <= 0):
            raise ValueError(f"{where}: timeout_s must be a positive number or null")
        if self.max_alloc_bytes is not None:
            positive_int(self.max_alloc_bytes, "max_alloc_bytes", 1)
        if not isinstance(self.warmup, bool):
            raise ValueError(f"{where}: warmup must be true or false, got {self.warmup!r}")
        v = self.versions
        if not (v in ("all", "latest") or (isinstance(v, list) and all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v))):
            raise ValueError(f"{where}: versions must be \"all\", \"latest\" or a list of "
                             f"version numbers, got {v!r}")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size
    dtype: np.dtype
    dim0: str  # the first dimension's symbol ('' if none)


class _Item:
    __slots__ = ("feeds", "rows", "key", "t_enqueue", "t_start", "future", "compute_s")

    def __init__(self, feeds: dict[str, np.ndarray], rows: int, key: Any):
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.t_enqueue = time.perf_counter()
        self.t_start = 0.0
        self.compute_s = 0.0
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class SchedulerClosed(ProtocolError):
    def __init__(self, what: str):
        super().__init__(f"{what} is being unloaded", 503)


class ModelVersion:
    """A loaded model version: checks requests, queues them and runs them on its pool."""

    platform = "edgert"

    def __init__(self, name: str, version: str, model: Any, config: ModelConfig,
                 metrics: Metrics | None = None, source: str = ""):
        self.name = name
        self.version = version
        self.source = source
        self.config = config
        limits: dict[str, Any] = {}
        if config.timeout_s is not None:
            limits["timeout_s"] = float(config.timeout_s)
        if config.max_alloc_bytes is not None:
            limits["max_alloc_bytes"] = config.max_alloc_bytes
        self.pool = InterpreterPool(model, size=_instances(config), num_threads=config.threads,
                                    **limits)
        self.inputs = [_info(d) for d in self.pool.get_input_details()]
        self.outputs = [_info(d) for d in self.pool.get_output_details()]
        self._input_by_name = {t.name: t for t in self.inputs}
        self._output_names = [t.name for t in self.outputs]
        dim0 = {t.dim0 for t in self.inputs}
        self.batchable = bool(
            config.max_batch_size > 0 and self.inputs and self.outputs
            and all(len(t.shape) >= 1 and t.shape[0] == -1 for t in self.inputs + self.outputs)
            and len(dim0) == 1)
        self._max_batch = config.max_batch_size if self.batchable else 1
        self._delay_s = config.max_queue_delay_ms / 1e3
        self._metrics = metrics
        if metrics is not None:
            labels = (name, version)
            self._m_queue = metrics.queue_duration.labels(*labels)
            self._m_compute = metrics.compute_duration.labels(*labels)
            self._m_batch = metrics.batch_size.labels(*labels)
            self._m_batch_requests = metrics.batch_requests.labels(*labels)
        if config.warmup:
            self._warmup()
        self._queue: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"edgert-{name}-{version}-{i}",
                                          daemon=True) for i in range(self.pool.size)]
        for t in self._workers:
            t.start()

    def _warmup(self) -> None:
        feeds = {}
        for t in self.inputs:
            shape = tuple(1 if d < 0 else d for d in t.shape)
            if t.datatype == "BYTES":
                feeds[t.name] = np.full(shape, "", object)
            else:
                feeds[t.name] = np.zeros(shape, t.dtype)
        t0 = time.perf_counter()
        try:
            self.pool.run(feeds)
        except Exception as exc:  # noqa: BLE001 - zeros may be no valid input for some models
            log.info("model '%s' version %s: warm-up run on zeros failed (%s: %s); the first "
                     "request pays for compiling its kernels", self.name, self.version,
                     type(exc).__name__, exc)
            return
        log.debug("model '%s' version %s: warm-up run %.3f s", self.name, self.version,
                  time.perf_counter() - t0)

    # ----- requests ----------------------------------------------------------------------------
    def check_inputs(self, inputs: list[InferInput]) -> dict[str, np.ndarray]:
        """The feeds of a request, after checking names, datatypes and shapes (400 if wrong)."""
        feeds: dict[str, np.ndarray] = {}
        for inp in inputs:
            info = self._input_by_name.get(inp.name)
            if info is None:
                raise ProtocolError(f"model '{self.name}' has no input '{inp.name}' (inputs: "
                                    f"{', '.join(self._input_by_name)})")
            if inp.name in feeds:
                raise ProtocolError(f"input '{inp.name}' is given twice")
            if inp.datatype != info.datatype:
                raise ProtocolError(f"input '{inp.name}': datatype {inp.datatype}, the model "
                                    f"expects {info.datatype}")
            shape = inp.array.shape
            if len(shape) != len(info.shape) or any(
                    d != want for d, want in zip(shape, info.shape) if want >= 0):
                raise ProtocolError(f"input '{inp.name}': shape {list(shape)}, the model "
                                    f"expects {list(info.shape)} (-1: any size)")
            feeds[inp.name] = inp.array
        missing = [n for n in self._input_by_name if n not in feeds]
        if missing:
            raise ProtocolError(f"missing inputs: {', '.join(missing)}")
        return feeds

    def check_outputs(self, names: list[str] | None) -> list[str]:
        if names is None:
            return list(self._output_names)
        for n in names:
            if n not in self._output_names:
                raise ProtocolError(f"model '{self.name}' has no output '{n}' (outputs: "
                                    f"{', '.join(self._output_names)})")
        return names

    def submit(self, feeds: dict[str, np.ndarray]) -> concurrent.futures.Future:
        """Queue checked feeds; the future's result is ``(outputs, queue_s, compute_s)``."""
        rows = 1
        key = None
        if self.batchable:
            first = next(iter(feeds.values()))
            rows = first.shape[0]
            if all(a.shape[0] == rows for a in feeds.values()):
                key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(feeds.items()))
            # else: inconsistent batch sizes: never merged (the model decides if it runs)
        item = _Item(feeds, rows, key)
        with self._cond:
            if self._closed:
                raise SchedulerClosed(f"model '{self.name}' version {self.version}")
            self._queue.append(item)
            if self.batchable:  # a worker collecting a batch must see it too, not only an idle one
                self._cond.notify_all()
            else:
                self._cond.notify()
        return item.future

    # ----- workers -----------------------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            if first.key is None or first.rows >= self._max_batch:
                return batch
            rows = first.rows
            deadline = first.t_enqueue + self._delay_s
            while True:
                if self._queue:
                    keep = collections.deque()
                    for it in self._queue:
                        if it.key == first.key and rows + it.rows <= self._max_batch:
                            batch.append(it)
                            rows += it.rows
                        else:
                            keep.append(it)
                    self._queue = keep
                    if keep:  # another worker may start on what this batch cannot take
                        self._cond.notify()
                if rows >= self._max_batch or self._closed:
                    return batch
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return batch
                self._cond.wait(remaining)

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        t0 = time.perf_counter()
        for it in batch:
            it.t_start = t0
        if len(batch) == 1:
            self._run_one(batch[0])
        else:
            try:
                feeds = {n: np.concatenate([it.feeds[n] for it in batch])
                         for n in batch[0].feeds}
                out = self.pool.run(feeds)
                compute = time.perf_counter() - t0
                total = sum(it.rows for it in batch)
                if any(not isinstance(v, np.ndarray) or v.ndim == 0 or v.shape[0] != total
                       for v in out.values()):
                    log.warning("model '%s' version %s: an output's first dimension is not the "
                                "batch; dynamic batching turned off for it", self.name,
                                self.version)
                    self.batchable = False
                    raise _Unbatchable
                self._observe(total, len(batch))
                start = 0
                for it in batch:
                    stop = start + it.rows
                    it.compute_s = compute
                    _resolve(it, {n: v[start:stop] for n, v in out.items()})
                    start = stop
            except BaseException:  # a merged run failed: run each request alone
                for it in batch:
                    if not it.future.done():
                        self._run_one(it)
        for it in batch:
            if self._metrics is not None:
                self._m_queue.observe(it.t_start - it.t_enqueue)
                self._m_compute.observe(it.compute_s)

    def _run_one(self, it: _Item) -> None:
        t = time.perf_counter()
        try:
            out = self.pool.run(it.feeds)
        except _CLIENT_ERRORS as exc:
            it.future.set_exception(ProtocolError(f"model '{self.name}': {exc}", 400))
            return
        except EdgeRTError as exc:
            it.future.set_exception(ProtocolError(f"model '{self.name}': {exc}", 500))
            return
        except BaseException as exc:  # noqa: BLE001 - reported to the client, logged
            log.exception("model '%s' version %s: run failed", self.name, self.version)
            it.future.set_exception(ProtocolError(f"model '{self.name}': internal error: "
                                                  f"{type(exc).__name__}: {exc}", 500))
            return
        it.compute_s = time.perf_counter() - t
        self._observe(it.rows if self.batchable else 1, 1)
        _resolve(it, out)

    def _observe(self, rows: int, requests: int) -> None:
        if self._metrics is not None:
            self._m_batch.observe(rows)
            self._m_batch_requests.observe(requests)

    # ----- facts, closing ----------------------------------------------------------------------
    def metadata(self, versions: list[str]) -> dict[str, Any]:
        def t(x: TensorInfo) -> dict[str, Any]:
            return {"name": x.name, "datatype": x.datatype, "shape": list(x.shape)}

        return {"name": self.name, "versions": versions, "platform": self.platform,
                "inputs": [t(x) for x in self.inputs], "outputs": [t(x) for x in self.outputs]}

    def close(self, wait: bool = True) -> None:
        """Stop taking requests; the queued and running ones finish; then free the pool."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for t in self._workers:
                if t is not threading.current_thread():
                    t.join()
            self.pool.close()

    @property
    def closed(self) -> bool:
        return self._closed


class _Unbatchable(Exception):
    pass


def _resolve(it: _Item, out: dict[str, np.ndarray]) -> None:
    it.future.set_result((out, it.t_start - it.t_enqueue, it.compute_s))


def _instances(config: ModelConfig) -> int:
    if config.instances is not None:
        return config.instances
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // config.threads)


def _info(d: dict[str, Any]) -> TensorInfo:
    dtype = np.dtype(d["dtype"])
    names = d.get("dim_names") or ()
    shape = tuple(int(x) for x in d["shape_signature"])
    return TensorInfo(d["name"], datatype_of(dtype), shape, dtype,
                      names[0] if names and shape and shape[0] == -1 else "")
