"""What the REST and gRPC front ends share: checking a decoded request against its model,
queueing it, and accounting for it (metrics, the per-request log line)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgert.serve.metrics import Metrics, log
from edgert.serve.model import ModelVersion, SchedulerClosed
from edgert.serve.protocol import InferRequest, ProtocolError
from edgert.serve.repository import Repository

__all__ = ["Engine", "Prepared", "Result"]


@dataclass
class Prepared:
    request: InferRequest
    model: ModelVersion
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    t0: float


@dataclass
class Result:
    prepared: Prepared
    outputs: dict[str, np.ndarray]  # the requested outputs, in the requested order
    queue_s: float
    compute_s: float


class Engine:
    """The repository plus the metrics; ``prepare`` → ``submit`` → ``finish``."""

    def __init__(self, repository: Repository, metrics: Metrics, server_name: str = "edgert",
                 version: str = ""):
        self.repository = repository
        self.metrics = metrics
        self.server_name = server_name
        self.version = version
        self.extensions = ["binary_tensor_data", "model_repository"]  # Triton's names

    def prepare(self, req: InferRequest, t0: float) -> Prepared:
        mv = self.repository.get(req.model_name, req.model_version)
        try:
            feeds = mv.check_inputs(req.inputs)
            names = mv.check_outputs(None if req.outputs is None
                                     else [o.name for o in req.outputs])
        except ProtocolError:
            self.metrics.requests.labels(mv.name, mv.version, "failure").inc()
            raise
        return Prepared(req, mv, feeds, names, t0)

    def submit(self, p: Prepared):
        """Queue a prepared request; a version being swapped out by a reload is retried once
        on the version that replaced it."""
        try:
            return p.model.submit(p.feeds)
        except SchedulerClosed:
            p.model = self.repository.get(p.request.model_name, p.request.model_version)
            return p.model.submit(p.feeds)

    def result(self, p: Prepared, value) -> Result:
        out, queue_s, compute_s = value
        return Result(p, {n: out[n] for n in p.output_names}, queue_s, compute_s)

    def succeeded(self, r: Result, protocol: str) -> None:
        mv = r.prepared.model
        total = time.perf_counter() - r.prepared.t0
        self.metrics.requests.labels(mv.name, mv.version, "success").inc()
        self.metrics.request_duration.labels(mv.name, mv.version).observe(total)
        if log.isEnabledFor(10):  # DEBUG
            log.debug("infer", extra={"fields": {
                "protocol": protocol, "model": mv.name, "version": mv.version,
                "id": r.prepared.request.id, "status": 200,
                "total_ms": round(total * 1e3, 3), "queue_ms": round(r.queue_s * 1e3, 3),
                "compute_ms": round(r.compute_s * 1e3, 3)}})

    def failed(self, exc: ProtocolError, protocol: str, p: Prepared | None = None,
               model: str = "", t0: float | None = None) -> None:
        self.metrics.errors.labels(protocol, str(exc.status)).inc()
        if p is not None:
            self.metrics.requests.labels(p.model.name, p.model.version, "failure").inc()
        if log.isEnabledFor(10):
            fields = {"protocol": protocol, "model": p.model.name if p else model,
                      "status": exc.status, "error": exc.message}
            if t0 is not None:
                fields["total_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
            log.debug("infer failed", extra={"fields": fields})
