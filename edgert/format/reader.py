"""Read and verify a `.edgert` file: a memory-mapped, zero-copy :class:`ModelDef`.

The file is never trusted. It is checked in layers, as TFLite's verifier does, and every failure
raises :class:`~edgert.errors.ModelFormatError` naming what was wrong and where (field path such
as ``subgraphs[0].tensors[3].shape``, tensor and operator by index and name, byte offset):

0. **Source.** A path is memory-mapped read-only; ``bytes``/``bytearray``/``memoryview`` are used in
   place. Nothing is copied, and nothing below reads a byte of constant data, so loading costs the
   same whatever the size of the weights.
1. **Header.** Length >= 8, file identifier ``b"EDGR"`` at bytes 4..8, root table in range, and
   ``Model.version <= SCHEMA_VERSION`` (read before anything else, so a file from a newer edgert
   gets "upgrade edgert" rather than a confusing structural error).
2. **Buffers.** Each buffer's ``offset + size`` lies inside the file (``size > len or off > len -
   size``), non-empty blobs start at multiples of 64, buffer 0 is empty. The first non-empty blob
   marks the end of the FlatBuffer: from here on every table, vector and string must lie before
   it, so a corrupt vector length can only drive allocations as large as the (small) FlatBuffer.
3. **Structure.** Every table the reader uses is walked through :mod:`edgert.format._flatview`,
   which range-checks each vtable, field, vector and string before reading it (the Python code
   ``flatc`` generates is used only by the writer: it reads garbage without complaint).
4. **Decoding.** Operator-code, buffer, attribute-tensor, attribute-subgraph and signature indices
   are in range; a constant has a known dtype, a static shape, and exactly
   ``prod(shape) * itemsize`` bytes in its buffer (Python ints, compared with the buffer size
   before ``np.frombuffer``); a string constant has one string per element.
5. **Semantics** (``verify=True``): :func:`edgert.format.verify.check_model`: tensor indices,
   topological order, single producers, dims, quantization, no subgraph cycles.

``verify=False`` skips layer 5 only; layers 0-4 always run because decoding relies on them (and
they cost little: they never touch a weight page). Use it only for files you just wrote.

What comes back:

* constants (``TensorDef.data``) are read-only NumPy views into the mapping or the caller's
  buffer, with the dtype that holds the tensor type (:func:`edgert.dtypes.to_numpy`) and the
  declared shape. Each view keeps the mapping alive; it is unmapped when the last view is gone.
  (Bytes of bool constants are not inspected: that would touch every weight page.)
* string constants are object arrays of ``str`` (``bytes`` for an element that is not UTF-8).
* ``ModelDef.subgraphs`` lists every subgraph of the file, the main graph first, control-flow
  bodies after it; a graph attribute's value is the very same :class:`SubGraphDef` object.
* tensor attributes are stored by the writer as constant tensors appended to the end of their
  subgraph's tensor list. The reader resolves them into arrays and drops the trailing tensors that
  only attributes reference, so ``SubGraphDef.tensors`` shows the graph's own tensors only.
* ``shape_signature`` is ``None`` when the file stores none (or an empty one); ``ModelDef.version``
  is the file's format version; attribute floats are the stored float32 values.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat

import numpy as np

from edgert import dtypes
from edgert.errors import ModelFormatError
from edgert.format._flatview import Region, Table, fail
from edgert.format.constants import BLOB_ALIGNMENT, FILE_IDENTIFIER, SCHEMA_VERSION
from edgert.format.model import ModelDef, OperatorDef, QuantParams, SubGraphDef, TensorDef
from edgert.format.verify import MAX_RANK, check_model

_HEADER_SIZE = 8  # root offset + file identifier
_INT64_MAX = 2**63 - 1

Source = str | os.PathLike | bytes | bytearray | memoryview


def read_model(source: Source, *, verify: bool = True) -> ModelDef:
    """Read a `.edgert` model from a path or from its bytes.

    Args:
        source: a file path (memory-mapped read-only), or ``bytes``/``bytearray``/``memoryview``
            holding the file (used in place: do not modify it while the model is in use).
        verify: run the semantic checks (layer 5 in the module docstring). The structural checks
            always run.

    Returns:
        The model; constant data are zero-copy, read-only views.

    Raises:
        ModelFormatError: the file is not a valid `.edgert` model (the message says why and where),
            the path is missing, a folder, not a regular file or unreadable, or ``source`` is
            not a path or a contiguous buffer.
    """
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        buf = _map_file(path)
        try:
            return _read(buf, verify)
        except ModelFormatError as exc:
            # Constants decoded before the failure may still export the mapping: then the
            # garbage collector unmaps it once they are gone.
            with contextlib.suppress(BufferError):
                buf.close()
            raise ModelFormatError(f"{path}: {exc}") from None
    if isinstance(source, bytes | bytearray | memoryview):
        return _read(_as_bytes_view(source), verify)
    raise ModelFormatError(
        f"read_model takes a path, bytes, bytearray or memoryview, not {type(source).__name__}"
    )


def _map_file(path: str) -> mmap.mmap:
    # Checked before open(): a FIFO or a device would block open() or a read forever.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFormatError(f"{path} is a folder, not an .edgert model")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"{path} is not a regular file (a pipe or a device); edgert reads "
                               "model files")
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot open it ({exc.strerror or exc})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ModelFormatError(f"{path}: the file is empty, not an .edgert model")
        # The mapping keeps its own handle on the file, so closing `f` is safe.
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _as_bytes_view(source: bytes | bytearray | memoryview):
    if isinstance(source, bytes):
        return source
    view = memoryview(source)
    if not view.c_contiguous:
        raise ModelFormatError("read_model needs a C-contiguous buffer")
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _read(buf, verify: bool) -> ModelDef:
    size = len(buf)
    if size < _HEADER_SIZE:
        raise ModelFormatError(
            f"malformed .edgert file: {size} bytes is too short for an .edgert model "
            f"(at least {_HEADER_SIZE} bytes of header)"
        )
    found = bytes(buf[4:_HEADER_SIZE])
    if found != FILE_IDENTIFIER:
        hint = " (this looks like a TensorFlow Lite model)" if found == b"TFL3" else ""
        raise ModelFormatError(
            f"not an .edgert file: expected the file identifier {FILE_IDENTIFIER!r} at bytes "
            f"4..8, found {found!r}{hint}"
        )

    # Layers 1-2 over the whole file: version, then the buffers that bound the FlatBuffer.
    whole = Region(buf, size)
    root = whole.root()
    version = _check_version(root)
    buffers = _read_buffers(root, size)
    blob_starts = [off for off, n in buffers if n > 0]
    fb_end = min(blob_starts, default=size)

    # Layers 3-4 over the FlatBuffer part only.
    region = Region(buf, fb_end)
    if fb_end < size:
        region.describe = f"the FlatBuffer (bytes 0..{fb_end}; constant data starts there)"
    model = _Decoder(region, buf, buffers).decode(version)
    if verify:
        check_model(model)
    return model


def _check_version(root: Table) -> int:
    version = root.scalar(0, "I", 0, "version")
    if version > SCHEMA_VERSION:
        raise ModelFormatError(
            f"the file uses .edgert format version {version}, newer than the versions this "
            f"edgert reads (up to {SCHEMA_VERSION}); upgrade edgert to load it"
        )
    if version < 1:
        raise ModelFormatError(
            f"malformed .edgert file: model.version: bad format version {version}"
        )
    return version


def _read_buffers(root: Table, file_size: int) -> list[tuple[int, int]]:
    buffers = []
    for i, t in enumerate(root.tables(4, "buffers")):
        off = t.scalar(0, "Q", 0, "offset")
        n = t.scalar(1, "Q", 0, "size")
        if i == 0 and n:
            raise fail(t.where, f"buffer 0 must be the empty buffer, it holds {n} bytes")
        if n > file_size or off > file_size - n:
            raise fail(
                t.where,
                f"blob of {n} bytes at byte offset {off} extends past the end of the file "
                f"({file_size} bytes)",
            )
        if n and off % BLOB_ALIGNMENT:
            raise fail(
                t.where,
                f"blob at byte offset {off} is not aligned to {BLOB_ALIGNMENT} bytes",
            )
        if n and off < _HEADER_SIZE:
            raise fail(t.where, f"blob at byte offset {off} overlaps the file header")
        buffers.append((off, n))
    return buffers


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


_ATTR_TYPES = {1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS",
               7: "INTS", 8: "STRINGS", 9: "TENSORS", 10: "GRAPHS"}


class _Decoder:
    """Layers 3-4: turn the verified tables into a ModelDef."""

    def __init__(self, region: Region, buf, buffers: list[tuple[int, int]]):
        self.region = region
        self.buf = buf
        self.buffers = buffers

    def decode(self, version: int) -> ModelDef:
        root = self.region.root()
        # The buffer tables were read against the whole file; they must lie in the FlatBuffer too.
        root.tables(4, "buffers")
        self.opcodes = [
            (t.string(0, "domain"), t.string(1, "op_type"), t.scalar(2, "i", 0, "version"))
            for t in root.tables(2, "operator_codes")
        ]
        tables = root.tables(3, "subgraphs")
        if not tables:
            raise fail("model.subgraphs", "the model has no subgraph (0 is the main graph)")
        graphs = [self._subgraph(si, t) for si, t in enumerate(tables)]
        pending = [self._operators(si, t, graphs[si]) for si, t in enumerate(tables)]
        for si, ops in enumerate(pending):
            graphs[si].operators = [self._resolve(si, graphs, *op) for op in ops]
        signature_refs = self._signatures(root, graphs)
        for si, sg in enumerate(graphs):
            _drop_attribute_tensors(sg, signature_refs.get(si, set()))
        metadata = {}
        for t in root.tables(6, "metadata"):
            metadata[t.string(0, "name")] = t.string(1, "value")
        return ModelDef(
            subgraphs=graphs,
            metadata=metadata,
            description=root.string(1, "description"),
            version=version,
        )

    # ---- subgraphs and tensors ----------------------------------------------------------

    def _subgraph(self, si: int, t: Table) -> SubGraphDef:
        name = t.string(0, "name")
        label = f"subgraph {si} ({name!r})"
        tensors = [self._tensor(label, ti, tt) for ti, tt in enumerate(t.tables(1, "tensors"))]
        return SubGraphDef(
            name=name,
            tensors=tensors,
            inputs=t.numbers(2, "i", "inputs") or [],
            outputs=t.numbers(3, "i", "outputs") or [],
            operators=[],
            outer_inputs=t.strings(5, "outer_inputs") or [],
        )

    def _tensor(self, subgraph: str, ti: int, t: Table) -> TensorDef:
        name = t.string(0, "name")
        where = f"{subgraph}, tensor {ti} ({name!r})"
        dtype = t.scalar(1, "i", 0, "dtype")
        shape = tuple(t.numbers(2, "q", "shape") or [])
        signature = t.strings(3, "shape_signature")
        buffer = t.scalar(4, "I", 0, "buffer")
        qt = t.table(5, "quantization")
        unknown_rank = bool(t.scalar(6, "B", 0, "unknown_rank"))
        string_data = t.raw_strings(7, "string_data")
        kind = t.scalar(8, "b", 0, "kind")  # checked with the semantics (verify.py)
        key_dtype = t.scalar(9, "i", 0, "key_dtype")
        tensor = TensorDef(
            name=name,
            dtype=dtype,
            shape=shape,
            shape_signature=tuple(signature) if signature else None,
            quant=None if qt is None else _quant(qt),
            unknown_rank=unknown_rank,
            kind=kind,
            key_dtype=key_dtype,
        )
        if buffer and buffer >= len(self.buffers):  # 0 = no data, even with no buffer table
            raise ModelFormatError(
                f"malformed .edgert file: {where}: buffer index {buffer} out of range (the file "
                f"has {len(self.buffers)} buffers)"
            )
        if string_data is not None:
            if buffer:
                raise ModelFormatError(
                    f"malformed .edgert file: {where}: has both string_data and buffer {buffer}"
                )
            tensor.data = self._string_constant(tensor, string_data, where)
        elif buffer:
            tensor.data = self._constant(tensor, buffer, where)
        return tensor

    def _static_shape(self, t: TensorDef, where: str, itemsize: int) -> int:
        """Element count of a constant's shape, after checking the shape can hold data."""
        if t.unknown_rank:
            raise ModelFormatError(f"malformed .edgert file: {where}: a constant has unknown rank")
        if len(t.shape) > MAX_RANK:
            raise ModelFormatError(
                f"malformed .edgert file: {where}: rank {len(t.shape)} exceeds {MAX_RANK}"
            )
        if any(d < 0 for d in t.shape):
            raise ModelFormatError(
                f"malformed .edgert file: {where}: a constant needs a static shape, got {t.shape}"
            )
        # Python ints cannot overflow; the count is compared with the buffer size by the caller.
        count = nonzero = 1
        for d in t.shape:
            count *= d
            nonzero *= max(d, 1)
        # NumPy refuses even a zero-size array whose other dims overflow (0 x 2**62 x 2**62).
        if nonzero * itemsize > _INT64_MAX:
            raise ModelFormatError(
                f"malformed .edgert file: {where}: shape {t.shape} overflows a 64-bit size"
            )
        return count

    def _constant(self, t: TensorDef, buffer: int, where: str) -> np.ndarray:
        if not dtypes.is_known(t.dtype) or t.dtype == dtypes.STRING:
            what = "string data belongs in string_data" if t.dtype == dtypes.STRING else (
                f"unknown dtype code {t.dtype}")
            raise ModelFormatError(f"malformed .edgert file: {where}: {what}")
        holder = dtypes.to_numpy(t.dtype)
        count = self._static_shape(t, where, holder.itemsize)
        need = count * holder.itemsize
        off, size = self.buffers[buffer]
        if need != size:
            raise ModelFormatError(
                f"malformed .edgert file: {where}: shape {t.shape} of {dtypes.name(t.dtype)} "
                f"needs {need} bytes but buffer {buffer} (byte offset {off}) holds {size}"
            )
        if count == 0:
            arr = np.empty(t.shape, holder)
        else:
            # Little-endian on disk; on a little-endian host this is the native dtype.
            arr = np.frombuffer(self.buf, dtype=holder.newbyteorder("<"), count=count, offset=off)
            arr = arr.reshape(t.shape)
        arr.flags.writeable = False
        return arr

    def _string_constant(self, t: TensorDef, items: list[bytes], where: str) -> np.ndarray:
        if t.dtype != dtypes.STRING:
            raise ModelFormatError(
                f"malformed .edgert file: {where}: string_data on a {dtypes.name(t.dtype)} tensor"
            )
        count = self._static_shape(t, where, 8)
        if count != len(items):
            raise ModelFormatError(
                f"malformed .edgert file: {where}: shape {t.shape} needs {count} strings but "
                f"string_data has {len(items)}"
            )
        arr = np.empty(len(items), dtype=object)
        arr[:] = [_text_or_bytes(s) for s in items]
        arr = arr.reshape(t.shape)
        arr.flags.writeable = False
        return arr

    # ---- operators and attributes ---------------------------------------------------------

    def _operators(self, si: int, sg_table: Table, sg: SubGraphDef) -> list[tuple]:
        ops = []
        for oi, t in enumerate(sg_table.tables(4, "operators")):
            name = t.string(4, "name")
            where = f"subgraph {si} ({sg.name!r}), operator {oi} ({name!r}"
            code = t.scalar(0, "I", 0, "opcode_index")
            if code >= len(self.opcodes):
                raise ModelFormatError(
                    f"malformed .edgert file: {where}): operator code index {code} out of range "
                    f"(the file has {len(self.opcodes)} operator codes)"
                )
            domain, op_type, version = self.opcodes[code]
            op = OperatorDef(
                op_type=op_type,
                inputs=t.numbers(1, "i", "inputs") or [],
                outputs=t.numbers(2, "i", "outputs") or [],
                name=name,
                domain=domain,
                version=version,
            )
            attrs = [self._attribute(a) for a in t.tables(3, "attributes")]
            ops.append((op, attrs, f"{where}, {op_type})"))
        return ops

    def _attribute(self, t: Table) -> tuple[str, int, object, str]:
        """``(name, type, payload, where)``; tensor and graph payloads are still indices."""
        name = t.string(0, "name")
        kind = t.scalar(1, "b", 0, "type")
        if kind == 1:
            payload = float(t.scalar(2, "f", 0.0, "f"))
        elif kind == 2:
            payload = int(t.scalar(3, "q", 0, "i"))
        elif kind == 3:
            payload = _text_or_bytes(t.raw_bytes(4, "s") or b"")
        elif kind == 6:
            payload = t.numbers(5, "f", "floats") or []
        elif kind == 7:
            payload = t.numbers(6, "q", "ints") or []
        elif kind == 8:
            payload = [_text_or_bytes(s) for s in t.raw_strings(7, "strings") or []]
        elif kind in (4, 9):
            payload = t.numbers(8, "i", "tensors") or []
        elif kind in (5, 10):
            payload = t.numbers(9, "i", "subgraphs") or []
        else:
            raise fail(t.where, f"attribute {name!r} has unknown type {kind}")
        return name, kind, payload, t.where

    def _resolve(self, si: int, graphs: list[SubGraphDef], op: OperatorDef, attrs: list,
                 where: str) -> OperatorDef:
        """Turn attribute tensor/subgraph indices into arrays/SubGraphDefs."""
        tensors = graphs[si].tensors
        for name, kind, payload, field_where in attrs:
            label = f"malformed .edgert file: {where}, attribute {name!r}"
            if name in op.attrs:
                raise ModelFormatError(f"{label}: the attribute appears twice")
            if kind in (4, 5, 9, 10):
                single = kind in (4, 5)
                if single and len(payload) != 1:
                    raise ModelFormatError(
                        f"{label}: a {_ATTR_TYPES[kind]} attribute needs exactly one index, "
                        f"has {len(payload)}"
                    )
                if kind in (4, 9):
                    values = [self._attr_tensor(tensors, i, label) for i in payload]
                else:
                    values = [_attr_graph(graphs, i, label) for i in payload]
                payload = values[0] if single else values
            op.attrs[name] = payload
        return op

    @staticmethod
    def _attr_tensor(tensors: list[TensorDef], i: int, label: str) -> np.ndarray:
        if not 0 <= i < len(tensors):
            raise ModelFormatError(
                f"{label}: tensor index {i} out of range (the subgraph has {len(tensors)} tensors)"
            )
        if tensors[i].data is None:
            raise ModelFormatError(
                f"{label}: tensor {i} ({tensors[i].name!r}) has no constant data"
            )
        return tensors[i].data

    # ---- signatures ---------------------------------------------------------------------

    def _signatures(self, root: Table, graphs: list[SubGraphDef]) -> dict[int, set[int]]:
        """Range-check the signature defs; return the tensor indices they name per subgraph."""
        refs: dict[int, set[int]] = {}
        for t in root.tables(5, "signature_defs"):
            si = t.scalar(3, "I", 0, "subgraph_index")
            if si >= len(graphs):
                raise fail(
                    t.where,
                    f"subgraph index {si} out of range (the file has {len(graphs)} subgraphs)",
                )
            n = len(graphs[si].tensors)
            for slot, field in ((0, "inputs"), (1, "outputs")):
                for m in t.tables(slot, field):
                    ti = m.scalar(1, "I", 0, "tensor_index")
                    if ti >= n:
                        raise fail(
                            m.where,
                            f"tensor index {ti} out of range (subgraph {si} has {n} tensors)",
                        )
                    refs.setdefault(si, set()).add(ti)
        return refs


def _attr_graph(graphs: list[SubGraphDef], i: int, label: str) -> SubGraphDef:
    if not 0 <= i < len(graphs):
        raise ModelFormatError(
            f"{label}: subgraph index {i} out of range (the file has {len(graphs)} subgraphs)"
        )
    return graphs[i]


def _drop_attribute_tensors(sg: SubGraphDef, signature_refs: set[int]) -> None:
    """Drop the trailing tensors that only tensor attributes reference (see module docstring).

    Only a suffix is dropped, so every remaining tensor keeps its index.
    """
    used = set(sg.inputs) | set(sg.outputs) | signature_refs
    for op in sg.operators:
        used.update(op.inputs)
        used.update(op.outputs)
    attr_arrays = set()
    for op in sg.operators:
        for value in op.attrs.values():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, np.ndarray):
                    attr_arrays.add(id(v))
    k = len(sg.tensors)
    while k > 0 and (k - 1) not in used and id(sg.tensors[k - 1].data) in attr_arrays:
        k -= 1
    del sg.tensors[k:]


def _quant(t: Table) -> QuantParams:
    scale = np.array(t.numbers(0, "f", "scale") or [], np.float32)
    zero_point = np.array(t.numbers(1, "q", "zero_point") or [], np.int64)
    if zero_point.size == 0:  # absent: all zeros (the writer leaves all-zero vectors out)
        zero_point = np.zeros(scale.size, np.int64)
    return QuantParams(scale=scale, zero_point=zero_point,
                       axis=t.scalar(2, "i", 0, "quantized_dimension"))

