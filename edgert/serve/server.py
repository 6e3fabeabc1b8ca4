"""The server: REST (uvicorn) and gRPC (grpcio) over one model repository, with a graceful
shutdown on SIGTERM / SIGINT (stop accepting, finish the requests in flight, then exit)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import threading
import time

from edgert.serve.core import Engine
from edgert.serve.metrics import Metrics, log
from edgert.serve.model import ModelConfig
from edgert.serve.repository import Repository

__all__ = ["ServerConfig", "Server"]


@dataclasses.dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000  # 0: any free port
    grpc_port: int | None = 8001  # None: no gRPC; 0: any free port
    max_body_bytes: int = 64 << 20
    poll_s: float = 2.0  # 0: no polling
    grpc_workers: int = 16
    shutdown_grace_s: float = 30.0


class Server:
    """Start with :meth:`start` (returns once both listeners are up), stop with :meth:`stop`;
    :meth:`serve_forever` does both around signal handling."""

    def __init__(self, model_path: str | os.PathLike, config: ServerConfig | None = None,
                 model_defaults: ModelConfig | None = None):
        from edgert import __version__

        self.config = config or ServerConfig()
        self.metrics = Metrics()
        self.repository = Repository(model_path, model_defaults, self.metrics,
                                     self.config.poll_s)
        self.engine = Engine(self.repository, self.metrics, "edgert", __version__)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._uvicorn = None
        self._http_thread: threading.Thread | None = None
        self._grpc = None
        self._stopped = threading.Event()

    def start(self) -> None:
        import uvicorn

        from edgert.serve.rest import make_app

        cfg = self.config
        # Ports first (a port in use fails at once, not after loading every model); listen
        # only once the models are loaded.
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        # proto given: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
        # without it a response's body waits ~40 ms behind its headers (Nagle + delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((cfg.host, cfg.http_port))
            self.http_port = sock.getsockname()[1]
            if cfg.grpc_port is not None:
                from edgert.serve.grpc_server import make_grpc_server

                host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
                self._grpc, self.grpc_port = make_grpc_server(
                    self.engine, f"{host}:{cfg.grpc_port}", cfg.grpc_workers,
                    cfg.max_body_bytes)
            t = time.perf_counter()
            self.repository.load_all()
            log.info("repository %s loaded in %.2f s", self.repository.path,
                     time.perf_counter() - t)
            sock.listen(2048)
        except BaseException:
            sock.close()
            raise
        app = make_app(self.engine, cfg.max_body_bytes)
        ucfg = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                              timeout_graceful_shutdown=cfg.shutdown_grace_s,
                              timeout_keep_alive=30)
        self._uvicorn = uvicorn.Server(ucfg)
        self._http_thread = threading.Thread(target=self._uvicorn.run,
                                             kwargs={"sockets": [sock]}, name="edgert-http",
                                             daemon=True)
        self._http_thread.start()
        if self._grpc is not None:
            self._grpc.start()
        while not self._uvicorn.started:
            if not self._http_thread.is_alive():
                raise OSError("the HTTP server did not start")
            time.sleep(0.01)
        self.repository.start_polling()
        log.info("serving: HTTP on %s:%d%s", cfg.host, self.http_port,
                 f", gRPC on port {self.grpc_port}" if self.grpc_port else "",
                 extra={"fields": {"http_port": self.http_port, "grpc_port": self.grpc_port}})

    def stop(self) -> None:
        """Stop accepting; let in-flight requests finish (up to ``shutdown_grace_s``); free."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.shutdown_grace_s
        log.info("shutting down: finishing the requests in flight")
        done = None
        if self._grpc is not None:
            done = self._grpc.stop(grace)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(grace + 5)
        if done is not None:
            done.wait(grace + 5)
        self.repository.close()
        log.info("stopped")

    def serve_forever(self, ready_file: str | None = None) -> None:
        stop = threading.Event()
        signals = {}

        def handler(signum, frame):
            if stop.is_set() and signum == signal.SIGINT:  # a second Ctrl-C: now
                os._exit(130)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signals[sig] = signal.signal(sig, handler)
        try:
            self.start()
            if ready_file:
                tmp = ready_file + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"pid": os.getpid(), "http_port": self.http_port,
                               "grpc_port": self.grpc_port}, f)
                os.replace(tmp, ready_file)
            while not stop.wait(0.5):
                if self._http_thread is not None and not self._http_thread.is_alive():
                    log.error("the HTTP server stopped")
                    break
        finally:
            self.stop()
            for sig, old in signals.items():
                signal.signal(sig, old)
