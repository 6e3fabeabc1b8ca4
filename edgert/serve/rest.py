"""The Open Inference Protocol over HTTP/REST (a Starlette app), with Triton's binary tensor
data extension.

A body with the ``Inference-Header-Content-Length: N`` header is N bytes of JSON followed by the
raw data of the inputs whose parameters carry ``binary_data_size`` (in the order of ``inputs``).
Outputs are returned raw the same way when their ``parameters`` ask for ``binary_data`` (or the
request's for ``binary_data_output``).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgert.serve.core import Engine, Prepared
from edgert.serve.metrics import CONTENT_TYPE_LATEST
from edgert.serve.protocol import (
    InferInput,
    InferRequest,
    ProtocolError,
    RequestedOutput,
    array_from_json,
    array_from_raw,
    check_shape,
    datatype_of,
    json_from_array,
    raw_from_array,
)

__all__ = ["make_app", "parse_infer", "encode_infer"]

HEADER_LENGTH = "inference-header-content-length"


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json_loads(data: bytes | memoryview) -> Any:
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None


def _params(obj: Any, what: str) -> dict[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: 'parameters' must be an object")
    return obj


def parse_infer(body: bytes, header_length: str | None, model: str, version: str) -> InferRequest:
    """An infer request from its body (JSON, or JSON + binary data)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"bad Inference-Header-Content-Length {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {n} is not within the body's "
                                f"{len(body)} bytes")
        header, binary = memoryview(body)[:n], memoryview(body)[n:]
    else:
        header, binary = memoryview(body), memoryview(b"")
    obj = _json_loads(header)
    if not isinstance(obj, dict):
        raise ProtocolError("the request must be a JSON object")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError("'id' must be a string")
    req = InferRequest(model, version, rid, _params(obj.get("parameters"), "request"))
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    pos = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise ProtocolError(f"inputs[{i}] must be an object")
        name = t.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"inputs[{i}]: 'name' must be a string")
        what = f"input '{name}'"
        datatype = t.get("datatype")
        shape = check_shape(t.get("shape"), what)
        params = _params(t.get("parameters"), what)
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ProtocolError(f"{what}: binary_data_size must be a non-negative integer")
            if size > len(binary) - pos:
                raise ProtocolError(f"{what}: binary_data_size {size} runs past the body's "
                                    f"binary data ({len(binary) - pos} bytes left)")
            if "data" in t:
                raise ProtocolError(f"{what}: both 'data' and binary_data_size are given")
            arr = array_from_raw(binary[pos:pos + size], datatype, shape, what)
            pos += size
        else:
            if "data" not in t:
                raise ProtocolError(f"{what}: no 'data' (or binary_data_size)")
            arr = array_from_json(t["data"], datatype, shape, what)
        req.inputs.append(InferInput(name, datatype, shape, arr, params))
    if pos != len(binary):
        raise ProtocolError(f"{len(binary) - pos} bytes of binary data are not claimed by any "
                            "input's binary_data_size")
    outputs = obj.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise ProtocolError("'outputs' must be a list")
        req.outputs = []
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ProtocolError(f"outputs[{i}] must be an object with a 'name'")
            req.outputs.append(RequestedOutput(o["name"], _params(o.get("parameters"),
                                                                  f"output '{o['name']}'")))
    return req


def encode_infer(req: InferRequest, model_name: str, model_version: str,
                 outputs: dict[str, Any]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    default_binary = bool(req.parameters.get("binary_data_output", False))
    per_output = {o.name: o.parameters for o in req.outputs or ()}
    entries = []
    blobs = []
    for name, arr in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype),
                                 "shape": list(arr.shape)}
        binary = per_output.get(name, {}).get("binary_data", default_binary)
        if binary:
            raw = raw_from_array(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = json_from_array(arr)
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if req.id is not None:
        body["id"] = req.id
    body["outputs"] = entries
    header = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


_DRAIN_BYTES = 256 << 20  # an oversized body is read (and dropped) up to this much more


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            int(length)
        except ValueError:
            raise ProtocolError(f"bad Content-Length {length!r}") from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            # Read the rest without keeping it, so that the client (which is still sending)
            # gets the 400 instead of a reset connection; give up past _DRAIN_BYTES.
            chunks = []
            if size > limit + _DRAIN_BYTES:
                break
            continue
        chunks.append(chunk)
    if size > limit:
        more = "over " if size > limit + _DRAIN_BYTES else ""
        raise ProtocolError(f"the request body ({more}{size} bytes) is larger than the limit of "
                            f"{limit} bytes (--max-body-mb)")
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            body = d.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ProtocolError(f"cannot decompress the {encoding} body: {exc}") from None
        if len(body) > limit or d.unconsumed_tail:
            raise ProtocolError(f"the decompressed request body is larger than the limit of "
                                f"{limit} bytes (--max-body-mb)")
    elif encoding != "identity":
        raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")
    return body


def make_app(engine: Engine, max_body_bytes: int = 64 << 20) -> Starlette:
    repo = engine.repository
    metrics = engine.metrics

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        ok = repo.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 400)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": engine.server_name, "version": engine.version,
                             "extensions": engine.extensions})

    def _model(request: Request):
        p = request.path_params
        return repo.get(p["name"], p.get("version", ""))

    async def model_metadata(request: Request) -> Response:
        try:
            mv = _model(request)
        except ProtocolError as exc:
            return _error(exc.message, exc.status)
        return JSONResponse(mv.metadata(repo.versions(mv.name)))

    async def model_ready(request: Request) -> Response:
        try:
            mv = _model(request)
        except ProtocolError as exc:
            name = request.path_params["name"]
            if exc.status == 404 and not repo.versions(name) and name in {
                    m["name"] for m in repo.index()}:  # known, not loaded: not ready
                return JSONResponse({"name": name, "ready": False},
                                    status_code=400)
            return _error(exc.message, exc.status)
        return JSONResponse({"name": mv.name, "ready": not mv.closed})

    async def infer(request: Request) -> Response:
        t0 = time.perf_counter()
        name = request.path_params["name"]
        prepared: Prepared | None = None
        try:
            body = await _read_body(request, max_body_bytes)
            t0 = time.perf_counter()
            req = parse_infer(body, request.headers.get(HEADER_LENGTH), name,
                              request.path_params.get("version", ""))
            prepared = engine.prepare(req, t0)
            fut = engine.submit(prepared)
            result = engine.result(prepared, await asyncio.wrap_future(fut))
            mv = prepared.model
            data, header_len = encode_infer(req, mv.name, mv.version, result.outputs)
        except ProtocolError as exc:
            engine.failed(exc, "http", prepared, name, t0)
            return _error(exc.message, exc.status)
        engine.succeeded(result, "http")
        if header_len is None:
            return Response(data, media_type="application/json")
        return Response(data, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_len)})

    async def repo_index(request: Request) -> Response:
        try:
            body = await _read_body(request, 1 << 20)
            obj = _json_loads(body) if body.strip() else {}
            ready_only = bool(obj.get("ready", False)) if isinstance(obj, dict) else False
        except ProtocolError as exc:
            return _error(exc.message, exc.status)
        return JSONResponse(repo.index(ready_only))

    async def repo_load(request: Request) -> Response:
        try:
            await run_in_threadpool(repo.load, request.path_params["name"])
        except ProtocolError as exc:
            return _error(exc.message, exc.status)
        return JSONResponse({})

    async def repo_unload(request: Request) -> Response:
        try:
            await run_in_threadpool(repo.unload, request.path_params["name"])
        except ProtocolError as exc:
            return _error(exc.message, exc.status)
        return JSONResponse({})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", None) or "error"
        return _error(f"{detail}: {request.method} {request.url.path}", status)

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

    m = "/v2/models/{name}"
    mv = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route(m, model_metadata, methods=["GET"]),
        Route(mv, model_metadata, methods=["GET"]),
        Route(m + "/ready", model_ready, methods=["GET"]),
        Route(mv + "/ready", model_ready, methods=["GET"]),
        Route(m + "/infer", infer, methods=["POST"]),
        Route(mv + "/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repo_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repo_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repo_unload, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error,
                                                        Exception: server_error})
