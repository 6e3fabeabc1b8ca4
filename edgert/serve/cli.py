"""``edgert serve PATH``: the command line of the server.

``add_parser(subparsers)`` adds the ``serve`` subcommand to an argparse parser (``edgert``'s);
it imports nothing of the serve extra, so ``edgert --help`` works without it. ``main(args)``
runs the server until SIGTERM / SIGINT. ``python -m edgert.serve PATH ...`` is the same.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "build_parser", "main"]


def _port(text: str) -> int | None:
    if text == "auto":
        return -1
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number or 'auto', got {text!r}")
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v} out of range")
    return v


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
        return v
    return parse


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a model file (.edgert, or .onnx converted at load) or a "
                                "repository folder laid out as NAME/VERSION/model.edgert")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--http-port", type=_port, default=8000,
                   help="HTTP/REST port (default 8000; 0 or 'auto': any free port)")
    p.add_argument("--grpc-port", type=_port, default=8001,
                   help="gRPC port (default 8001; 0: no gRPC; 'auto': any free port)")
    p.add_argument("--threads", type=_positive(int), default=1,
                   help="kernel threads per interpreter instance (default 1)")
    p.add_argument("--instances", type=_positive(int), default=None,
                   help="interpreter instances (parallel runs) per model version (default: "
                        "the CPUs divided by --threads)")
    p.add_argument("--max-batch-size", type=_positive(int), default=0,
                   help="dynamic batching: merge queued requests up to this many rows for "
                        "models with a dynamic first dimension (default 0: off)")
    p.add_argument("--batch-delay-ms", type=_positive(float), default=1.0,
                   help="dynamic batching: how long a batch's first request waits for others "
                        "(default 1 ms)")
    p.add_argument("--max-body-mb", type=_positive(float), default=64.0,
                   help="largest request body (and gRPC message) accepted, in MiB (default 64)")
    p.add_argument("--poll-s", type=_positive(float), default=2.0,
                   help="seconds between checks of the model files for changes (default 2; "
                        "0: never)")
    p.add_argument("--grpc-workers", type=_positive(int), default=16,
                   help="gRPC handler threads (default 16)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text or as one JSON object each (default text)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="debug: also one line per request (default info)")
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``argparse`` subparsers object; its ``func`` is :func:`main`."""
    p = subparsers.add_parser("serve", help="serve models over the Open Inference Protocol "
                                            "(KServe v2 / Triton REST and gRPC)",
                              description="Serve .edgert/.onnx models over the Open Inference "
                                          "Protocol (REST and gRPC).")
    _add_arguments(p)
    p.set_defaults(func=main)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgert.serve",
                                description="Serve .edgert/.onnx models over the Open Inference "
                                            "Protocol (REST and gRPC).")
    _add_arguments(p)
    return p


def main(args: argparse.Namespace) -> int:
    try:
        from edgert.serve.metrics import setup_logging
        from edgert.serve.model import ModelConfig
        from edgert.serve.server import Server, ServerConfig
    except ImportError as exc:
        print(f"edgert: error: edgert serve needs the serve extra (pip install "
              f"'edgert[serve]'): {exc}", file=sys.stderr)
        return 1
    setup_logging(args.log_level, args.log_format)
    grpc_port = None if args.grpc_port == 0 else max(args.grpc_port, 0)
    config = ServerConfig(host=args.host, http_port=max(args.http_port, 0), grpc_port=grpc_port,
                          max_body_bytes=int(args.max_body_mb * (1 << 20)), poll_s=args.poll_s,
                          grpc_workers=max(1, args.grpc_workers))
    try:
        defaults = ModelConfig(instances=args.instances or None, threads=max(1, args.threads),
                               max_batch_size=args.max_batch_size,
                               max_queue_delay_ms=args.batch_delay_ms)
        defaults.validate("command line")
        server = Server(args.path, config, defaults)
        server.serve_forever(args.ready_file)
    except (OSError, ValueError) as exc:
        print(f"edgert: error: {exc}", file=sys.stderr)
        return 1
    return 0
