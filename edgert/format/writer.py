"""Write a :class:`~edgert.format.model.ModelDef` as a `.edgert` file.

File layout::

    offset 0                      the FlatBuffer (root offset, identifier "EDGR", tables)
    align64(len(FlatBuffer))      blob of buffer 1
    next multiple of 64           blob of buffer 2
    ...                           (zero padding between blobs)

* ``Model.version`` is :data:`~edgert.format.constants.SCHEMA_VERSION` (``ModelDef.version`` is
  ignored: it reports what the reader found).
* Operator codes are deduplicated by ``(domain, op_type, version)`` and referenced by index.
* Buffer 0 is the empty buffer (offset 0, size 0) and means "no constant data". Every other
  buffer names its blob by absolute file offset and size; non-empty blobs start at multiples of
  :data:`~edgert.format.constants.BLOB_ALIGNMENT` (64). Identical blobs (same bytes) share one
  buffer. Zero-size constants share one buffer of size 0 at offset 0 (they need a buffer index
  other than 0 to be constants at all).
* Blobs hold the little-endian bytes of the NumPy array that holds the dtype (bfloat16 and float8
  as their uint16/uint8 bits, see :mod:`edgert.dtypes`). String tensors keep their elements in
  ``Tensor.string_data`` instead, with buffer 0.
* Attribute values (see :mod:`edgert.format.model` for the Python types):

  - an ``np.ndarray`` value (TENSOR, TENSORS) becomes a constant tensor appended to the end of the
    operator's subgraph's tensor list, and the attribute stores its index. The reader resolves it
    back into the array and drops these trailing attribute-only tensors, so they never show up in
    ``SubGraphDef.tensors``.
  - a ``SubGraphDef`` value (GRAPH, GRAPHS) is stored as a subgraph index. Subgraphs are numbered
    ``model.subgraphs`` first, then every other body reachable through attributes, breadth-first
    (:func:`edgert.format.verify.all_subgraphs`); a body already listed in ``model.subgraphs`` is
    referenced, not copied. The reader lists all of them in ``ModelDef.subgraphs``.
  - floats are stored as float32 and ints as int64 (an int outside int64 is an error).

* One SignatureDef, ``"serving_default"``, maps subgraph 0's input and output names to tensor
  indices. Metadata (``dict[str, str]``) becomes ``Model.metadata``.

Blob offsets are absolute, so they are known only once the FlatBuffer's size is known, and the
FlatBuffer contains them. The builder runs with ``ForceDefaults(True)``, so every scalar field is
written whatever its value: a ``Buffer.offset`` of 0 still gets its 8 bytes. The FlatBuffer is
built once with offsets 0, its size fixes the blob offsets, and the offsets are then patched into
those 8-byte fields in place (nothing moves; each patched value is read back and asserted). This
is equivalent to building twice and asserting the sizes agree, at half the cost. Python's
``flatbuffers`` ignores ``force_align``, hence the explicit alignment.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
import struct
import tempfile
import threading
from dataclasses import dataclass, field

import flatbuffers
import numpy as np

from edgert import dtypes
from edgert.errors import ModelFormatError
from edgert.format import _generated as fb
from edgert.format.constants import BLOB_ALIGNMENT, FILE_IDENTIFIER, SCHEMA_VERSION
from edgert.format.model import ModelDef, OperatorDef, SubGraphDef, TensorDef
from edgert.format.verify import all_subgraphs, check_model

_PREFIX = "cannot write .edgert model"
SIGNATURE_KEY = "serving_default"
_INT64 = np.iinfo(np.int64)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def write_model(model: ModelDef, path: str | os.PathLike | None = None) -> bytes:
    """Serialize ``model``; also write it to ``path`` when given.

    The file is written to a temporary file in the same folder and renamed over ``path``, so a
    reader never sees a half-written model.

    Returns:
        The bytes of the file.

    Raises:
        ModelFormatError: the model is not sound (see :mod:`edgert.format.verify`) or holds an
            attribute value or constant the format cannot store.
    """
    check_model(model, prefix=_PREFIX)
    plan = _Plan(model)
    flat = _build(plan)
    offsets, end = _layout(len(flat), plan.blobs)
    flat = _patch_offsets(flat, offsets)
    pieces: list = [flat]
    pos = len(flat)
    for blob, off in zip(plan.blobs, offsets):
        if blob.nbytes == 0:
            continue
        pieces.append(bytes(off - pos))
        pieces.append(blob)
        pos = off + blob.nbytes
    assert pos == end
    data = b"".join(pieces)
    if path is not None:
        _write_atomically(pathlib.Path(path), data)
    return data


def _layout(flat_size: int, blobs: list[memoryview]) -> tuple[list[int], int]:
    """Absolute offsets of the blobs after a FlatBuffer of ``flat_size`` bytes, and the file end."""
    offsets = []
    pos = flat_size
    for blob in blobs:
        if blob.nbytes == 0:
            offsets.append(0)
            continue
        pos = -(-pos // BLOB_ALIGNMENT) * BLOB_ALIGNMENT
        offsets.append(pos)
        pos += blob.nbytes
    return offsets, pos


def _patch_offsets(flat: bytes, offsets: list[int]) -> bytes:
    """Write the blobs' absolute offsets into the Buffer tables of a finished FlatBuffer.

    The builder ran with ForceDefaults, so every ``Buffer.offset`` field is present (a default
    0 would otherwise be left out) and has a fixed position; patching it cannot move anything.
    """
    out = bytearray(flat)
    root = fb.Model.GetRootAs(out, 0)
    for k, off in enumerate(offsets, start=1):
        table = root.Buffers(k)._tab
        field = table.Offset(4)  # vtable entry of Buffer.offset (slot 0)
        assert field, "Buffer.offset missing: the builder must use ForceDefaults"
        struct.pack_into("<Q", out, table.Pos + field, off)
        assert root.Buffers(k).Offset() == off
    return bytes(out)


def current_umask() -> int:
    """The process's umask, read without changing it where the OS tells (Linux's
    ``/proc/self/status``), else by setting and restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def new_file_mode(path: pathlib.Path) -> int:
    """The permission bits a file written at ``path`` gets: the mode of the file it replaces,
    else ``0o666 & ~umask`` (what ``open(path, "w")`` gives a new file)."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode) & 0o777  # not its setuid/setgid/sticky bits
    return 0o666 & ~current_umask()


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over: readers see the old or the new file.

    mkstemp creates the file with mode 0600; it gets :func:`new_file_mode` (the umask's mode,
    or the replaced file's) before the rename, as a file written in place would.
    """
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:  # pragma: no cover - Windows (before Python 3.13)
                os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------------------------
# Planning: flatten subgraphs, attribute tensors, operator codes and blobs into index tables.


@dataclass
class _SubgraphPlan:
    sg: SubGraphDef
    tensors: list[TensorDef]  # sg.tensors + attribute tensors appended
    attr_tensor: dict[int, int] = field(default_factory=dict)  # id(array) -> tensor index
    buffer_of: list[int] = field(default_factory=list)  # per tensor: buffer index (0 = none)


class _Plan:
    """Everything the FlatBuffer needs, as index tables: subgraph order, the tensors of each
    subgraph (attribute tensors appended), operator codes, and the unique blobs."""

    def __init__(self, model: ModelDef):
        self.model = model
        self.graphs = all_subgraphs(model)
        self.graph_index = {id(sg): i for i, sg in reversed(list(enumerate(self.graphs)))}
        self.opcodes: dict[tuple[str, str, int], int] = {}
        self.blobs: list[memoryview] = []  # buffers 1.. (buffer 0 is the empty one)
        self._blob_index: dict[tuple[bytes, int], int] = {}
        self._zero_size_buffer = 0
        self.subgraphs = [self._plan_subgraph(si, sg) for si, sg in enumerate(self.graphs)]

    def _plan_subgraph(self, si: int, sg: SubGraphDef) -> _SubgraphPlan:
        plan = _SubgraphPlan(sg, list(sg.tensors))
        for oi, op in enumerate(sg.operators):
            self.opcode(op)
            for name, value in op.attrs.items():
                arrays = value if isinstance(value, (list, tuple)) else [value]
                for k, arr in enumerate(arrays):
                    if isinstance(arr, np.ndarray) and id(arr) not in plan.attr_tensor:
                        plan.attr_tensor[id(arr)] = len(plan.tensors)
                        plan.tensors.append(_attr_tensor(arr, si, oi, op, name, k))
        plan.buffer_of = [self._buffer_for(t) for t in plan.tensors]
        return plan

    def opcode(self, op: OperatorDef) -> int:
        key = (op.domain or "", op.op_type, int(op.version))
        return self.opcodes.setdefault(key, len(self.opcodes))

    def _buffer_for(self, t: TensorDef) -> int:
        """The buffer index of a tensor's data: 0 for none, shared by identical bytes."""
        if t.data is None or t.dtype == dtypes.STRING:
            return 0
        holder = dtypes.to_numpy(int(t.dtype)).newbyteorder("<")
        arr = np.ascontiguousarray(t.data, dtype=holder)
        raw = memoryview(arr.reshape(-1).view(np.uint8))
        if raw.nbytes == 0:
            if not self._zero_size_buffer:
                self.blobs.append(raw)
                self._zero_size_buffer = len(self.blobs)
            return self._zero_size_buffer
        key = (hashlib.blake2b(raw, digest_size=16).digest(), raw.nbytes)
        index = self._blob_index.get(key)
        if index is None:
            self.blobs.append(raw)
            index = self._blob_index[key] = len(self.blobs)
        return index


def _attr_tensor(
    arr: np.ndarray, si: int, oi: int, op: OperatorDef, name: str, k: int
) -> TensorDef:
    """The hidden constant tensor that stores a tensor-valued attribute."""
    where = f"subgraph {si}, operator {oi} ({op.name!r}, {op.op_type}), attribute {name!r}"
    try:
        code = dtypes.from_numpy(arr.dtype)
    except ValueError as exc:
        raise ModelFormatError(f"{_PREFIX}: {where}: {exc}") from None
    label = op.name or f"op{oi}"
    return TensorDef(name=f"{label}/{name}[{k}]", dtype=code, shape=tuple(arr.shape), data=arr)


# --------------------------------------------------------------------------------------------
# Building the FlatBuffer.


def _build(plan: _Plan) -> bytes:
    """The FlatBuffer, with every blob offset 0 (see :func:`_patch_offsets`)."""
    b = flatbuffers.Builder(1024)
    b.ForceDefaults(True)

    subgraphs = [_build_subgraph(b, plan, si, sp) for si, sp in enumerate(plan.subgraphs)]
    opcodes = []
    for domain, op_type, version in plan.opcodes:
        d, t = b.CreateString(domain), b.CreateString(op_type)
        fb.OperatorCodeStart(b)
        fb.OperatorCodeAddDomain(b, d)
        fb.OperatorCodeAddOpType(b, t)
        fb.OperatorCodeAddVersion(b, version)
        opcodes.append(fb.OperatorCodeEnd(b))
    buffers = []
    for size in [0] + [blob.nbytes for blob in plan.blobs]:
        fb.BufferStart(b)
        fb.BufferAddOffset(b, 0)
        fb.BufferAddSize(b, size)
        buffers.append(fb.BufferEnd(b))
    signature = _build_signature(b, plan.subgraphs[0])
    metadata = []
    for key, value in plan.model.metadata.items():
        k, v = b.CreateString(str(key)), b.CreateString(str(value))
        fb.MetadataStart(b)
        fb.MetadataAddName(b, k)
        fb.MetadataAddValue(b, v)
        metadata.append(fb.MetadataEnd(b))

    description = b.CreateString(plan.model.description or "")
    opcodes_vec = _offset_vector(b, opcodes)
    subgraphs_vec = _offset_vector(b, subgraphs)
    buffers_vec = _offset_vector(b, buffers)
    signatures_vec = _offset_vector(b, [signature])
    metadata_vec = _offset_vector(b, metadata)
    fb.ModelStart(b)
    fb.ModelAddVersion(b, SCHEMA_VERSION)
    fb.ModelAddDescription(b, description)
    fb.ModelAddOperatorCodes(b, opcodes_vec)
    fb.ModelAddSubgraphs(b, subgraphs_vec)
    fb.ModelAddBuffers(b, buffers_vec)
    fb.ModelAddSignatureDefs(b, signatures_vec)
    fb.ModelAddMetadata(b, metadata_vec)
    b.Finish(fb.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _string_vector(b: flatbuffers.Builder, items) -> int:
    return _offset_vector(b, [b.CreateString(s) for s in items])


def _int_vector(b: flatbuffers.Builder, values, dtype: str) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=np.dtype(dtype)).reshape(-1))


def _build_signature(b: flatbuffers.Builder, main: _SubgraphPlan) -> int:
    def maps(indices: list[int]) -> int:
        tables = []
        for i in indices:
            name = b.CreateString(main.tensors[i].name)
            fb.TensorMapStart(b)
            fb.TensorMapAddName(b, name)
            fb.TensorMapAddTensorIndex(b, int(i))
            tables.append(fb.TensorMapEnd(b))
        return _offset_vector(b, tables)

    inputs, outputs = maps(main.sg.inputs), maps(main.sg.outputs)
    key = b.CreateString(SIGNATURE_KEY)
    fb.SignatureDefStart(b)
    fb.SignatureDefAddInputs(b, inputs)
    fb.SignatureDefAddOutputs(b, outputs)
    fb.SignatureDefAddSignatureKey(b, key)
    fb.SignatureDefAddSubgraphIndex(b, 0)
    return fb.SignatureDefEnd(b)


def _build_subgraph(b: flatbuffers.Builder, plan: _Plan, si: int, sp: _SubgraphPlan) -> int:
    tensors = [_build_tensor(b, t, sp.buffer_of[ti]) for ti, t in enumerate(sp.tensors)]
    operators = [
        _build_operator(b, plan, sp, f"subgraph {si}, operator {oi} ({op.name!r}, {op.op_type})",
                        op)
        for oi, op in enumerate(sp.sg.operators)
    ]
    name = b.CreateString(sp.sg.name or "")
    tensors_vec = _offset_vector(b, tensors)
    inputs = _int_vector(b, sp.sg.inputs, "<i4")
    outputs = _int_vector(b, sp.sg.outputs, "<i4")
    operators_vec = _offset_vector(b, operators)
    outer = _string_vector(b, sp.sg.outer_inputs)
    fb.SubGraphStart(b)
    fb.SubGraphAddName(b, name)
    fb.SubGraphAddTensors(b, tensors_vec)
    fb.SubGraphAddInputs(b, inputs)
    fb.SubGraphAddOutputs(b, outputs)
    fb.SubGraphAddOperators(b, operators_vec)
    fb.SubGraphAddOuterInputs(b, outer)
    return fb.SubGraphEnd(b)


def _build_tensor(b: flatbuffers.Builder, t: TensorDef, buffer: int) -> int:
    name = b.CreateString(t.name or "")
    shape = _int_vector(b, [int(d) for d in t.shape], "<i8")
    signature = _string_vector(b, t.shape_signature) if t.shape_signature else None
    quant = None
    if t.quant is not None:
        scale32 = np.asarray(t.quant.scale, dtype="<f4").reshape(-1)
        if not (np.isfinite(scale32) & (scale32 > 0)).all():
            raise ModelFormatError(
                f"{_PREFIX}: tensor {t.name!r}: a quantization scale is not a positive float32"
            )
        scale = b.CreateNumpyVector(scale32)
        # All-zero zero points (symmetric weights, int32 biases) are left out: 8 bytes per
        # channel that a per-channel int8 weight would otherwise carry (see the schema).
        zps = np.asarray(t.quant.zero_point).reshape(-1)
        zero_point = _int_vector(b, zps, "<i8") if zps.any() else None
        fb.QuantizationParametersStart(b)
        fb.QuantizationParametersAddScale(b, scale)
        if zero_point is not None:
            fb.QuantizationParametersAddZeroPoint(b, zero_point)
        fb.QuantizationParametersAddQuantizedDimension(b, int(t.quant.axis))
        quant = fb.QuantizationParametersEnd(b)
    strings = None
    if t.dtype == dtypes.STRING and t.data is not None:
        items = []
        for s in np.asarray(t.data).reshape(-1):
            if isinstance(s, np.str_ | np.bytes_):
                s = s.item()
            if not isinstance(s, str | bytes):
                raise ModelFormatError(
                    f"{_PREFIX}: string tensor {t.name!r} holds a {type(s).__name__} element"
                )
            items.append(s)
        strings = _string_vector(b, items)
    fb.TensorStart(b)
    fb.TensorAddName(b, name)
    fb.TensorAddDtype(b, int(t.dtype))
    fb.TensorAddShape(b, shape)
    if signature is not None:
        fb.TensorAddShapeSignature(b, signature)
    fb.TensorAddBuffer(b, buffer)
    if quant is not None:
        fb.TensorAddQuantization(b, quant)
    fb.TensorAddUnknownRank(b, bool(t.unknown_rank))
    if strings is not None:
        fb.TensorAddStringData(b, strings)
    if t.kind:
        fb.TensorAddKind(b, int(t.kind))
    if t.key_dtype:
        fb.TensorAddKeyDtype(b, int(t.key_dtype))
    return fb.TensorEnd(b)


def _build_operator(b: flatbuffers.Builder, plan: _Plan, sp: _SubgraphPlan, where: str,
                    op: OperatorDef) -> int:
    attrs = [_build_attribute(b, plan, sp, f"{where}, attribute {name!r}", name, value)
             for name, value in op.attrs.items()]
    inputs = _int_vector(b, op.inputs, "<i4")
    outputs = _int_vector(b, op.outputs, "<i4")
    attrs_vec = _offset_vector(b, attrs)
    name = b.CreateString(op.name or "")
    fb.OperatorStart(b)
    fb.OperatorAddOpcodeIndex(b, plan.opcode(op))
    fb.OperatorAddInputs(b, inputs)
    fb.OperatorAddOutputs(b, outputs)
    fb.OperatorAddAttributes(b, attrs_vec)
    fb.OperatorAddName(b, name)
    return fb.OperatorEnd(b)


_AT = fb.AttributeType


def _is_int(v) -> bool:
    return isinstance(v, int | np.integer | np.bool_)


def _is_number(v) -> bool:
    return _is_int(v) or isinstance(v, float | np.floating)


def _attribute_kind(value, where: str) -> int:
    """The AttributeType a Python value is stored as (the table in edgert.format.model)."""
    if isinstance(value, np.ndarray):
        return _AT.TENSOR
    if isinstance(value, SubGraphDef):
        return _AT.GRAPH
    if isinstance(value, str | bytes):
        return _AT.STRING
    if _is_int(value):
        return _AT.INT
    if isinstance(value, float | np.floating):
        return _AT.FLOAT
    if isinstance(value, list | tuple):
        if all(_is_int(v) for v in value):  # the empty list too
            return _AT.INTS
        if all(_is_number(v) for v in value):
            return _AT.FLOATS
        if all(isinstance(v, str | bytes) for v in value):
            return _AT.STRINGS
        if all(isinstance(v, np.ndarray) for v in value):
            return _AT.TENSORS
        if all(isinstance(v, SubGraphDef) for v in value):
            return _AT.GRAPHS
        kinds = sorted({type(v).__name__ for v in value})
        raise ModelFormatError(f"{_PREFIX}: {where}: a list mixing {', '.join(kinds)}")
    raise ModelFormatError(
        f"{_PREFIX}: {where}: values of type {type(value).__name__} cannot be stored"
    )


def _float32(value: float, where: str) -> float:
    v = float(value)
    if abs(v) > _FLOAT32_MAX and np.isfinite(v):
        raise ModelFormatError(f"{_PREFIX}: {where}: {v!r} does not fit in a float32")
    return v


def _int64(values, where: str) -> np.ndarray:
    ints = [int(v) for v in values]
    for v in ints:
        if not _INT64.min <= v <= _INT64.max:
            raise ModelFormatError(f"{_PREFIX}: {where}: {v} does not fit in an int64")
    return np.asarray(ints, dtype="<i8").reshape(-1)


def _build_attribute(b: flatbuffers.Builder, plan: _Plan, sp: _SubgraphPlan, where: str,
                     name: str, value) -> int:
    kind = _attribute_kind(value, where)
    payload: dict[str, int] = {}
    f = 0.0
    i = 0
    if kind == _AT.FLOAT:
        f = _float32(value, where)
    elif kind == _AT.INT:
        i = int(_int64([value], where)[0])
    elif kind == _AT.STRING:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        payload["s"] = b.CreateByteVector(raw)
    elif kind == _AT.FLOATS:
        floats = [_float32(v, where) for v in value]
        payload["floats"] = b.CreateNumpyVector(np.asarray(floats, dtype="<f4").reshape(-1))
    elif kind == _AT.INTS:
        payload["ints"] = b.CreateNumpyVector(_int64(value, where))
    elif kind == _AT.STRINGS:
        payload["strings"] = _string_vector(b, value)
    elif kind in (_AT.TENSOR, _AT.TENSORS):
        arrays = [value] if kind == _AT.TENSOR else value
        payload["tensors"] = _int_vector(b, [sp.attr_tensor[id(a)] for a in arrays], "<i4")
    else:  # GRAPH, GRAPHS
        bodies = [value] if kind == _AT.GRAPH else value
        payload["subgraphs"] = _int_vector(b, [plan.graph_index[id(g)] for g in bodies], "<i4")
    name_off = b.CreateString(str(name))
    fb.AttributeStart(b)
    fb.AttributeAddName(b, name_off)
    fb.AttributeAddType(b, kind)
    fb.AttributeAddF(b, f)
    fb.AttributeAddI(b, i)
    adders = {
        "s": fb.AttributeAddS,
        "floats": fb.AttributeAddFloats,
        "ints": fb.AttributeAddInts,
        "strings": fb.AttributeAddStrings,
        "tensors": fb.AttributeAddTensors,
        "subgraphs": fb.AttributeAddSubgraphs,
    }
    for key, off in payload.items():
        adders[key](b, off)
    return fb.AttributeEnd(b)
