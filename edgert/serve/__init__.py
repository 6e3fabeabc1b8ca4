"""``edgert serve``: the Open Inference Protocol (KServe v2, as Triton and MLServer speak it)
over HTTP/REST and gRPC, for ``.edgert`` (and ``.onnx``) models.

Needs the ``serve`` extra (``pip install 'edgert[serve]'``: starlette, uvicorn, grpcio,
protobuf, prometheus_client). The runtime never imports this package; this package imports the
runtime, and the converter only when it serves an ``.onnx`` file.

    from edgert.serve import Server, ServerConfig, ModelConfig
    server = Server("repo/", ServerConfig(http_port=8000, grpc_port=8001),
                    ModelConfig(max_batch_size=16))
    server.serve_forever()        # or server.start() ... server.stop()
"""

from __future__ import annotations

__all__ = ["Server", "ServerConfig", "ModelConfig"]


def __getattr__(name: str):
    # Lazy: `edgert.serve.cli` (imported by `edgert --help`) must not need the extra.
    if name in ("Server", "ServerConfig"):
        from edgert.serve import server

        return getattr(server, name)
    if name == "ModelConfig":
        from edgert.serve.model import ModelConfig

        return ModelConfig
    raise AttributeError(name)
