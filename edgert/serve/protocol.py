"""The Open Inference Protocol's tensors: data types, and JSON / binary / gRPC encodings.

Everything here is independent of the transport: :class:`InferRequest` is what both the REST
and the gRPC front ends decode a request into, and what :mod:`edgert.serve.repository` runs.
A malformed request raises :class:`ProtocolError` with the HTTP status to answer (400 for the
client's mistakes, 404 for an unknown model), which the front ends turn into
``{"error": "..."}`` (REST) or a gRPC status.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DATATYPES", "ProtocolError", "InferInput", "RequestedOutput", "InferRequest",
           "datatype_of", "array_from_json", "array_from_raw", "raw_from_array",
           "json_from_array", "check_shape"]

# The protocol's tensor data types and the NumPy dtype each decodes to (little-endian).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {dt.newbyteorder("="): name for name, dt in DATATYPES.items()}

# The most elements one tensor of a request may declare (the body-size limit bounds real data;
# this bounds what a shape alone could make the server allocate, e.g. for a zero-size dtype).
MAX_ELEMENTS = 1 << 31


class ProtocolError(Exception):
    """A request the server answers with an error: ``status`` is the HTTP status (400 bad
    request, 404 unknown model, 503 unavailable, 500 the server's own failure)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status

    @property
    def message(self) -> str:
        return str(self)


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[InferInput] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None: every output of the model


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name for a NumPy dtype (``object``/str arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    name = _BY_DTYPE.get(dtype.newbyteorder("="))
    if name is None:
        if dtype.name == "bfloat16":  # ml_dtypes
            return "BF16"
        raise ProtocolError(f"tensors of dtype {dtype} have no Open Inference Protocol "
                            "datatype", 500)
    return name


def _dtype(datatype: Any, what: str) -> np.dtype:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(f"{what}: unknown datatype {datatype!r} (expected one of "
                            f"{', '.join(DATATYPES)})")
    return DATATYPES[datatype]


def check_shape(shape: Any, what: str) -> tuple[int, ...]:
    """A shape from a request: a list of non-negative integers with a bounded product."""
    if not isinstance(shape, (list, tuple)):
        raise ProtocolError(f"{what}: 'shape' must be a list of integers, got {shape!r}")
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ProtocolError(f"{what}: 'shape' must hold non-negative integers, got {shape!r}")
        out.append(int(d))
    if math.prod(out) > MAX_ELEMENTS:
        raise ProtocolError(f"{what}: shape {out} has more than {MAX_ELEMENTS} elements")
    return tuple(out)


def _flatten(data: Any, out: list) -> None:
    if isinstance(data, list):
        for v in data:
            _flatten(v, out)
    else:
        out.append(data)


def array_from_json(data: Any, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A tensor from its JSON ``data`` (flattened row-major, or nested lists)."""
    dtype = _dtype(datatype, what)
    if not isinstance(data, list):
        data = [data]
    flat: list = []
    _flatten(data, flat)
    n = math.prod(shape)
    if len(flat) != n:
        raise ProtocolError(f"{what}: shape {list(shape)} needs {n} values, 'data' has "
                            f"{len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"{what}: BYTES data must be strings")
        arr = np.empty(n, object)
        arr[:] = flat
        return arr.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise ProtocolError(f"{what}: BOOL data must be true/false")
        return np.array(flat, np.bool_).reshape(shape)
    if dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise ProtocolError(f"{what}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ProtocolError(f"{what}: a value is out of {datatype}'s range "
                                f"[{info.min}, {info.max}]")
        return np.array(flat, dtype).reshape(shape)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise ProtocolError(f"{what}: {datatype} data must be numbers")
    return np.array(flat, dtype).reshape(shape)


def array_from_raw(buf: bytes | memoryview, datatype: str, shape: tuple[int, ...],
                   what: str) -> np.ndarray:
    """A tensor from its raw little-endian bytes (the binary extension, gRPC raw contents);
    BYTES: each element a 4-byte little-endian length and its bytes."""
    dtype = _dtype(datatype, what)
    n = math.prod(shape)
    if datatype == "BYTES":
        items = []
        mv = memoryview(buf)
        pos = 0
        while pos < len(mv):
            if pos + 4 > len(mv):
                raise ProtocolError(f"{what}: truncated BYTES element length")
            (size,) = struct.unpack_from("<I", mv, pos)
            pos += 4
            if size > len(mv) - pos:
                raise ProtocolError(f"{what}: a BYTES element runs past the tensor's data")
            items.append(bytes(mv[pos:pos + size]))
            pos += size
        if len(items) != n:
            raise ProtocolError(f"{what}: shape {list(shape)} needs {n} BYTES elements, the "
                                f"data has {len(items)}")
        arr = np.empty(n, object)
        arr[:] = [_text(b) for b in items]
        return arr.reshape(shape)
    if len(buf) != n * dtype.itemsize:
        raise ProtocolError(f"{what}: shape {list(shape)} of {datatype} needs "
                            f"{n * dtype.itemsize} bytes, got {len(buf)}")
    arr = np.frombuffer(buf, dtype, count=n).reshape(shape)
    if datatype == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
        raise ProtocolError(f"{what}: BOOL bytes must be 0 or 1")
    return arr


def _text(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    return str(v).encode("utf-8")


def raw_from_array(arr: np.ndarray) -> bytes:
    """Raw little-endian bytes of a tensor (BYTES: length-prefixed elements)."""
    if arr.dtype.kind in "OSU":
        parts = []
        for v in arr.ravel():
            b = _as_bytes(v)
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    return np.ascontiguousarray(arr, dt).tobytes()


def json_from_array(arr: np.ndarray) -> list:
    """A tensor's values flattened row-major, for JSON (BYTES as strings)."""
    if arr.dtype.kind in "OSU":
        out = []
        for v in arr.ravel():
            if isinstance(v, bytes):
                v = v.decode("utf-8", errors="replace")
            out.append(v if isinstance(v, str) else str(v))
        return out
    # (NaN and infinities are written as JSON's common extension NaN / Infinity, as Python's
    # json module and tritonclient's rapidjson read them)
    return arr.ravel().tolist()
