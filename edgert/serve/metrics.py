"""Prometheus metrics (``GET /metrics``) and the per-request log line.

The metrics live in a registry of the server's own (not prometheus_client's global one), so
that several servers in one process, or a host application's own metrics, do not mix.
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "JSONFormatter", "setup_logging", "log"]

log = logging.getLogger("edgert.serve")

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's counters and histograms, labelled by model and version."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        mv = ("model", "version")
        self.requests = Counter(
            "edgert_inference_requests", "Inference requests by outcome (success or failure)",
            mv + ("outcome",), registry=r)
        self.request_duration = Histogram(
            "edgert_inference_request_duration_seconds",
            "Server-side time of a successful inference request, from its decoded body to "
            "its encoded response (queue + compute + decode/encode)", mv,
            buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "edgert_inference_queue_duration_seconds",
            "Time a request waited for an interpreter (including the dynamic-batching delay)",
            mv, buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_duration = Histogram(
            "edgert_inference_compute_duration_seconds",
            "Model run time of each request (the run of the batch it was part of)", mv,
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "edgert_batch_size", "Rows (first-dimension size) per model execution; one "
            "execution runs one request, or several merged by dynamic batching", mv,
            buckets=_BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram(
            "edgert_batch_requests", "Requests merged into one model execution", mv,
            buckets=_BATCH_BUCKETS, registry=r)
        self.errors = Counter(
            "edgert_request_errors", "Requests answered with an error, by protocol and status "
            "(including those for unknown models)", ("protocol", "status"), registry=r)
        self.model_ready = Gauge(
            "edgert_model_ready", "1 while the model version is loaded and ready", mv,
            registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            obj.update(fields)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Log ``edgert.serve`` (and uvicorn's errors) to stderr, as text or JSON lines."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("edgert.serve", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
