"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), on grpcio's
thread-pool server. Inputs may come as typed ``contents`` or as ``raw_input_contents`` (what
tritonclient sends); outputs are always returned as ``raw_output_contents``, as Triton does."""

from __future__ import annotations

import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from edgert.serve.core import Engine, Prepared
from edgert.serve.proto import grpc_predict_v2_pb2 as pb
from edgert.serve.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from edgert.serve.protocol import (
    DATATYPES,
    InferInput,
    InferRequest,
    ProtocolError,
    RequestedOutput,
    array_from_json,
    array_from_raw,
    check_shape,
    datatype_of,
    raw_from_array,
)

__all__ = ["make_grpc_server"]

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
           503: grpc.StatusCode.UNAVAILABLE}

# Which InferTensorContents field holds each datatype.
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _param(p: pb.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _params(m) -> dict[str, Any]:
    return {k: _param(v) for k, v in m.items()}


def _contents_array(t, what: str, shape: tuple[int, ...]) -> np.ndarray:
    dt = t.datatype
    if dt not in DATATYPES:
        raise ProtocolError(f"{what}: unknown datatype {dt!r}")
    field = _CONTENTS.get(dt)
    if field is None:
        raise ProtocolError(f"{what}: {dt} data must come as raw_input_contents")
    values = list(getattr(t.contents, field))
    n = int(np.prod(shape, dtype=np.int64))
    if len(values) != n:
        raise ProtocolError(f"{what}: shape {list(shape)} needs {n} values, contents.{field} "
                            f"has {len(values)}")
    if dt == "BYTES":
        return array_from_raw(b"".join(len(v).to_bytes(4, "little") + v for v in values), dt,
                              shape, what)
    if dt in ("FP32", "FP64"):
        return np.array(values, DATATYPES[dt]).reshape(shape)
    return array_from_json(values, dt, shape, what)


def parse_request(r: pb.ModelInferRequest) -> InferRequest:
    req = InferRequest(r.model_name, r.model_version, r.id or None, _params(r.parameters))
    raw = r.raw_input_contents
    if raw and len(raw) != len(r.inputs):
        raise ProtocolError(f"raw_input_contents has {len(raw)} entries for {len(r.inputs)} "
                            "inputs (one per input, or none)")
    if not r.inputs:
        raise ProtocolError("the request has no inputs")
    for i, t in enumerate(r.inputs):
        what = f"input '{t.name}'"
        shape = check_shape(list(t.shape), what)
        if raw:
            if t.HasField("contents"):
                raise ProtocolError(f"{what}: both contents and raw_input_contents are given")
            arr = array_from_raw(raw[i], t.datatype, shape, what)
        else:
            arr = _contents_array(t, what, shape)
        req.inputs.append(InferInput(t.name, t.datatype, shape, arr, _params(t.parameters)))
    if r.outputs:
        req.outputs = [RequestedOutput(o.name, _params(o.parameters)) for o in r.outputs]
    return req


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine: Engine):
        self.engine = engine
        self.repo = engine.repository

    def _abort(self, context, exc: ProtocolError):
        context.abort(_STATUS.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.repo.ready())

    def ModelReady(self, request, context):
        try:
            mv = self.repo.get(request.name, request.version)
        except ProtocolError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not mv.closed)

    def ServerMetadata(self, request, context):
        e = self.engine
        return pb.ServerMetadataResponse(name=e.server_name, version=e.version,
                                         extensions=e.extensions)

    def ModelMetadata(self, request, context):
        try:
            mv = self.repo.get(request.name, request.version)
        except ProtocolError as exc:
            self._abort(context, exc)
        md = mv.metadata(self.repo.versions(mv.name))
        T = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=md["name"], versions=md["versions"], platform=md["platform"],
            inputs=[T(**t) for t in md["inputs"]], outputs=[T(**t) for t in md["outputs"]])

    def ModelInfer(self, request, context):
        t0 = time.perf_counter()
        prepared: Prepared | None = None
        e = self.engine
        try:
            req = parse_request(request)
            prepared = e.prepare(req, t0)
            value = e.submit(prepared).result()
            result = e.result(prepared, value)
            mv = prepared.model
            resp = pb.ModelInferResponse(model_name=mv.name, model_version=mv.version,
                                         id=request.id)
            for name, arr in result.outputs.items():
                resp.outputs.add(name=name, datatype=datatype_of(arr.dtype), shape=arr.shape)
                resp.raw_output_contents.append(raw_from_array(arr))
        except ProtocolError as exc:
            e.failed(exc, "grpc", prepared, request.model_name, t0)
            self._abort(context, exc)
        e.succeeded(result, "grpc")
        return resp

    def RepositoryIndex(self, request, context):
        R = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[R(**m) for m in self.repo.index(request.ready)])

    def RepositoryModelLoad(self, request, context):
        try:
            self.repo.load(request.model_name)
        except ProtocolError as exc:
            self._abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        try:
            self.repo.unload(request.model_name)
        except ProtocolError as exc:
            self._abort(context, exc)
        return pb.RepositoryModelUnloadResponse()


def make_grpc_server(engine: Engine, address: str, workers: int = 16,
                     max_message_bytes: int = 64 << 20) -> tuple[grpc.Server, int]:
    """A started-later grpcio server bound to ``address`` (``host:0``: any free port); returns
    it and the port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgert-grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes),
                 ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(engine), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server, port
