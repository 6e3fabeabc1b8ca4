"""ONNX -> edgert IR.

:func:`import_onnx` reads a model (a ``ModelProto``, a path or serialized bytes), annotates value
types with ONNX shape inference, and builds an :class:`edgert.ir.Graph`:

* initializers and ``Constant`` nodes become constants (NumPy arrays, external data included;
  bfloat16 and float8 keep their raw bits in unsigned integer arrays, as :mod:`edgert.dtypes`
  says); a graph input that is also an initializer (IR version < 4 models) is a constant;
* every other node becomes a :class:`~edgert.ir.Node` with plain Python attributes; If / Loop /
  Scan bodies become :class:`~edgert.ir.Graph` attribute values whose ``outer_inputs`` list the
  enclosing-scope names they read (directly or through a nested body);
* older opset forms are rewritten into the newest form (:mod:`edgert.importer.upgrade`, which also
  documents the ``node.version`` convention);
* value dtypes and shapes come from the model and from shape inference: symbolic dims stay names
  (``"batch"``), unknown dims are None (so are the ``unk__N`` names shape inference makes up)
  and an unknown rank is a None shape.

Problems are reported, never guessed around: a file that cannot be read or parsed, external data
that is missing or outside the model's folder, or a name nothing defines raise
:class:`~edgert.errors.ModelImportError`; operators edgert cannot import are collected over the
whole model (subgraphs included) and raised together as one
:class:`~edgert.errors.UnsupportedOpError`.

Example:
    >>> graph = import_onnx("model.onnx")
    >>> graph.op_histogram()
    {'Conv': 20, 'Relu': 19, ...}
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.inliner
import onnx.shape_inference
from onnx import AttributeProto, TensorProto, numpy_helper

from edgert import dtypes
from edgert.errors import (
    EdgeRTError,
    ModelImportError,
    UnsupportedOpError,
    describe_unsupported,
)
from edgert.importer import gradient, upgrade
from edgert.ir import Graph, Node, Value
from edgert.ir.graph import (
    MAP,
    OPTIONAL_SEQUENCE,
    OPTIONAL_TENSOR,
    SEQUENCE,
    SEQUENCE_MAP,
    TENSOR,
    VALUE_KINDS,
)

ModelSource = onnx.ModelProto | str | os.PathLike | bytes | bytearray | memoryview

# Dim names ONNX shape inference makes up for unknown dims ("unk__0"): unknown, not symbols.
_GENERATED_DIM = re.compile(r"unk__\d+")
# Names of the ONNX default domain.
_DEFAULT_DOMAINS = ("", "ai.onnx")
# Element types stored as raw bits in unsigned integers (no NumPy type of their own).
_BIT_TYPES = {
    dtypes.BFLOAT16: np.dtype(np.uint16),
    dtypes.FLOAT8E4M3FN: np.dtype(np.uint8),
    dtypes.FLOAT8E4M3FNUZ: np.dtype(np.uint8),
    dtypes.FLOAT8E5M2: np.dtype(np.uint8),
    dtypes.FLOAT8E5M2FNUZ: np.dtype(np.uint8),
    dtypes.FLOAT8E8M0: np.dtype(np.uint8),
}
# Types ONNX packs two (4-bit) or four (2-bit) to a byte: unpacked here, one value (int4/uint4/
# int2/uint2) or one code (float4e2m1) per int8/uint8 element, as edgert.dtypes describes.
_PACKED_TYPES = frozenset({dtypes.FLOAT4E2M1, *dtypes.SUBBYTE_INTS})
# Types whose holder (a NumPy integer) does not say what they are: the ops that decode or encode
# them (Cast, CastLike, QuantizeLinear, DequantizeLinear) get the real type as an attribute.
_CODED_TYPES = frozenset({*_BIT_TYPES, *_PACKED_TYPES})

ML_DOMAIN = "ai.onnx.ml"
# Ops that onnxruntime runs under an ai.onnx opset older than the one that added them, because
# it had them as extensions of the same meaning first -> the opset that added them.
_LENIENT_SINCE = {"LayerNormalization": 17}

IMPORT_ADVICE = (
    "edgert imports operators of the ONNX default domain (opset 7 to {newest}) and rewrites older "
    "forms itself. Replace the operators listed above in the exporting framework (or export "
    "with another opset), or decompose them into supported ONNX operators."
)
# Advice for nodes of other domains, by domain (any other: a custom op of its producer).
_DOMAIN_ADVICE = {
    "com.microsoft": (
        "Operators of domain 'com.microsoft' are onnxruntime's own extensions, written by its "
        "transformers optimizer and quantizers: convert the model as it was before those tools "
        "ran (for int8, quantize it with `edgert quantize`, or to QDQ form: QuantizeFormat.QDQ)."
    ),
    "custom": (
        "Operators of domain '{domain}' are custom operators of the tool that wrote the model: "
        "edgert can only run them once they are expressed in ONNX operators (re-export without "
        "the custom op, or replace it with the ONNX operators it stands for)."
    ),
}


_NUMBER_ATTRS = {AttributeProto.FLOAT: (AttributeProto.FLOAT, AttributeProto.INT)}


def _against_schema(schema, node: Node, n: onnx.NodeProto) -> str | None:
    """Why a default-domain node does not fit its operator's schema (too few or too many inputs,
    a required input omitted, an attribute of another type), or None. Checked before anything
    reads the node: passes and kernels index inputs and convert attributes the schema
    promises."""
    name = f"{node.op_type}-{schema.since_version}"
    count = len(n.input)
    while count and not n.input[count - 1]:
        count -= 1
    if count < schema.min_input or count > schema.max_input:
        span = (f"{schema.min_input}" if schema.min_input == schema.max_input else
                f"{schema.min_input} to {schema.max_input}")
        return f"{count} input(s), but {name} takes {span}"
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for i, formal in enumerate(schema.inputs):
        if formal.option == single and i < len(n.input) and not n.input[i]:
            return f"required input {i} ('{formal.name}') of {name} is omitted"
    for a in n.attribute:
        declared = schema.attributes.get(a.name)
        if declared is None or declared.type == AttributeProto.UNDEFINED:
            continue
        got = _attr_type(a)
        if got not in _NUMBER_ATTRS.get(declared.type, (declared.type,)):
            return (f"attribute '{a.name}' is {AttributeProto.AttributeType.Name(got)}, but "
                    f"{name} declares it {AttributeProto.AttributeType.Name(declared.type)}")
    return None


def _contrib_default_ops() -> frozenset[str]:
    from edgert.importer.contrib import DEFAULT_DOMAIN_OPS

    return DEFAULT_DOMAIN_OPS


def _foreign_reason(domain: str) -> str:
    if domain == "com.microsoft":
        return "onnxruntime contrib operators (domain 'com.microsoft') are not supported"
    return f"operators of the custom domain '{domain}' are not supported"


def _import_advice(domains: set[str]) -> str:
    """The advice under the list of unsupported nodes, for the domains they come from."""
    parts = []
    if "" in domains:
        parts.append(IMPORT_ADVICE.format(newest=onnx.defs.onnx_opset_version()))
    if ML_DOMAIN in domains:
        parts.append("edgert runs the operators of ai.onnx.ml opsets 1 to 5: the model names "
                     "an operator or a version outside them.")
    if "com.microsoft" in domains:
        parts.append(_DOMAIN_ADVICE["com.microsoft"])
    for d in sorted(domains - {"", ML_DOMAIN, "com.microsoft"}):
        parts.append(_DOMAIN_ADVICE["custom"].format(domain=d))
    return "\n".join(parts)


@dataclass
class LoadedModel:
    """A parsed ONNX model and where it came from."""

    proto: onnx.ModelProto
    base_dir: str | None  # folder that external-data locations are relative to
    sha256: str  # hex SHA-256 of the serialized model ("" when it cannot be serialized)


# ----- public API ---------------------------------------------------------------------------------
def import_onnx(model: ModelSource, *, base_dir: str | os.PathLike | None = None,
                keep_custom: bool = False) -> Graph:
    """Import an ONNX model into edgert's IR.

    Args:
        model: an ``onnx.ModelProto``, a path to an ``.onnx`` file, or the serialized model bytes.
        base_dir: folder that external-data locations are relative to. Defaults to the model
            file's folder for a path; needed for a ModelProto or bytes whose tensors are stored
            externally.
        keep_custom: keep nodes of custom domains (declared in the model's opset_import, other
            than ai.onnx, ai.onnx.ml and com.microsoft) as opaque nodes, with their attributes,
            instead of refusing them: for ``edgert optimize``, which writes them back to ONNX
            untouched. The runtime has no kernels for them (``convert`` refuses them).

    Returns:
        The main graph. ``graph.opset`` holds the model's opset imports (``""`` for the ONNX
        default domain), ``graph.metadata`` the model's ``metadata_props`` plus
        ``onnx.producer_name``, ``onnx.producer_version``, ``onnx.ir_version``,
        ``onnx.model_version``, ``onnx.domain``, ``onnx.doc_string`` (where set) and
        ``onnx.sha256``, the SHA-256 of the serialized model.

    Raises:
        ModelImportError: unreadable file, malformed protobuf, missing external data, a value
            that nothing defines, a cycle, a constant of an element type edgert cannot store.
        UnsupportedOpError: operators that cannot be imported; ``.ops`` lists every one.
    """
    loaded = load_onnx(model, base_dir=base_dir)
    return import_model(loaded.proto, base_dir=loaded.base_dir, sha256=loaded.sha256,
                        keep_custom=keep_custom)


def load_onnx(model: ModelSource, *, base_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Parse ``model`` (without touching external data) and hash its serialized form."""
    if isinstance(model, onnx.ModelProto):
        try:
            sha = hashlib.sha256(model.SerializeToString()).hexdigest()
        except Exception:  # noqa: BLE001  (over protobuf's 2 GiB limit: nothing to hash)
            sha = ""
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        proto = _parse(data, "the given bytes")
        sha = hashlib.sha256(data).hexdigest()
    elif isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(os.fspath(model))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelImportError(f"cannot read ONNX model '{path}': no such file") from None
        except IsADirectoryError:
            raise ModelImportError(f"cannot read ONNX model '{path}': it is a folder") from None
        except OSError as exc:
            raise ModelImportError(
                f"cannot read ONNX model '{path}': {exc.strerror or exc}"
            ) from None
        proto = _parse(data, f"'{path}'")
        sha = hashlib.sha256(data).hexdigest()
        if base_dir is None:
            base_dir = path.resolve().parent
    else:
        raise ModelImportError(
            f"expected an onnx.ModelProto, a path or the serialized model bytes, "
            f"got {type(model).__name__}"
        )
    if not proto.HasField("graph"):
        raise ModelImportError("not an ONNX model: the protobuf has no graph")
    return LoadedModel(proto, None if base_dir is None else os.fspath(base_dir), sha)


def import_model(
    proto: onnx.ModelProto, *, base_dir: str | os.PathLike | None = None, sha256: str = "",
    keep_custom: bool = False,
) -> Graph:
    """Import a parsed ModelProto (see :func:`import_onnx`)."""
    importer = _Importer(proto, None if base_dir is None else os.fspath(base_dir), sha256)
    importer.keep_custom = keep_custom
    try:
        return importer.run()
    except EdgeRTError:
        raise
    except Exception as exc:
        # A protobuf can hold what ONNX forbids (names that are not UTF-8, wrong field types...):
        # whatever slipped past the explicit checks still surfaces as an import error.
        raise ModelImportError(
            f"the ONNX model is malformed: {type(exc).__name__}: {exc}"
        ) from exc


# ----- loading ------------------------------------------------------------------------------------
def _parse(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001  (protobuf's DecodeError and friends)
        raise ModelImportError(
            f"{where} is not a valid ONNX model: the protobuf cannot be parsed ({exc})"
        ) from None
    return proto


# Domains whose nodes shape inference may see: onnx has no schemas for onnxruntime's operators
# and skips them (their outputs keep the types the model declares).
_INFERABLE_DOMAINS = (*_DEFAULT_DOMAINS, "com.microsoft")


def _foreign_nodes(graph: onnx.GraphProto) -> bool:
    """Whether ``graph`` (or a body inside it) has a node of a domain shape inference must not
    see (see :func:`_infer_shapes`)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            if n.domain not in _INFERABLE_DOMAINS:
                return True
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return False


# Initializers whose data shape inference does not need to see (see _infer_shapes).
_STRIP_ELEMENTS = 1 << 14


def _copy_fields(dst, src, skip: str = "") -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except ``skip``."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _without_weights(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, TensorProto]]:
    """A copy of ``proto`` whose large main-graph initializers keep their name, type and shape
    but no data, and those initializers of ``proto`` by name."""
    light = onnx.ModelProto()
    _copy_fields(light, proto, skip="graph")
    _copy_fields(light.graph, proto.graph, skip="initializer")
    big: dict[str, TensorProto] = {}
    for t in proto.graph.initializer:
        # (the element count, not ByteSize(): upb encodes the message to measure it)
        count = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
        if (t.data_location != TensorProto.EXTERNAL and t.data_type != TensorProto.STRING
                and count > _STRIP_ELEMENTS):
            stub = light.graph.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
            big[t.name] = t
        else:
            light.graph.initializer.add().CopyFrom(t)
    return light, big


def _infer_shapes(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, TensorProto]]:
    """Shape inference when it works; the model as it is when it does not (never fatal).

    Returns the model to import and, by name, the initializers whose data is to be read from
    the given model instead (the result lacks it). onnx's inference serializes the model,
    parses it in C++, serializes the result and parses that again: four copies of every weight
    (a 574 MB VGG-19 peaked at 2.8 GB). It runs on a copy without the large initializers'
    data; inference needs only their shapes (data propagation reads shape-sized integer
    tensors, which are kept).

    Skipped when a node is of a domain other than the default one and onnxruntime's
    (``com.microsoft``, which onnx skips): the inference functions of other domains are not
    robust to inputs of unknown type (onnx 1.23 crashes the process on ai.onnx.ml's LabelEncoder
    and DictVectorizer fed by an untyped value), and custom domains are rejected anyway.
    """
    if _foreign_nodes(proto.graph):
        return proto, {}
    light, big = _without_weights(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            light, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception:  # noqa: BLE001  (inference only annotates: any failure means "no info")
        return proto, {}
    if [t.name for t in inferred.graph.initializer] != [t.name for t in light.graph.initializer]:
        return proto, {}
    return inferred, big


def _decode(s: bytes) -> str | bytes:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def _dtype_name(code: int) -> str:
    try:
        return TensorProto.DataType.Name(code).lower()
    except ValueError:
        return f"<type code {code}>"


def _type_info(tp: onnx.TypeProto) -> tuple[int, list | None, str]:
    """(dtype code, shape, kind) of a value's ONNX type.

    kind is "tensor", one of the IR's sequence / optional kinds ("sequence", "optional_tensor",
    "optional_sequence", whose dtype is the element type of the tensors inside and whose shape
    is None), or another ONNX type name ("map", "sparse_tensor"...) that edgert does not run.
    """
    kind = tp.WhichOneof("value") or ""
    if kind in ("sequence_type", "optional_type"):
        return _container_type(tp)
    if kind == "map_type":
        value = _map_value(tp.map_type)
        if value is None:  # (not the MAP kind's name: a kind the runtime does not hold)
            return 0, None, f"map({_dtype_name(tp.map_type.key_type)}, ...)"
        return value, None, MAP
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return 0, None, kind.removesuffix("_type")
    tt = getattr(tp, kind)
    if not tt.HasField("shape"):
        return tt.elem_type, None, "tensor"
    dims: list = []
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        if which == "dim_value" and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif which == "dim_param" and d.dim_param:
            name = d.dim_param
            if isinstance(name, bytes):  # not valid UTF-8: keep it readable
                name = name.decode("utf-8", errors="replace")
            dims.append(None if _GENERATED_DIM.fullmatch(name) else name)
        else:
            dims.append(None)
    return tt.elem_type, dims, "tensor"


def _container_type(tp: onnx.TypeProto) -> tuple[int, None, str]:
    """(element dtype, None, kind) of a sequence or optional type (see :func:`_type_info`)."""
    outer = tp.WhichOneof("value")
    inner = tp.sequence_type.elem_type if outer == "sequence_type" else tp.optional_type.elem_type
    inner_kind = inner.WhichOneof("value")
    if outer == "sequence_type" and inner_kind == "tensor_type":
        return inner.tensor_type.elem_type, None, SEQUENCE
    if outer == "optional_type" and inner_kind == "tensor_type":
        return inner.tensor_type.elem_type, None, OPTIONAL_TENSOR
    if outer == "optional_type" and inner_kind == "sequence_type":
        leaf = inner.sequence_type.elem_type
        if leaf.WhichOneof("value") == "tensor_type":
            return leaf.tensor_type.elem_type, None, OPTIONAL_SEQUENCE
    if outer == "sequence_type" and inner_kind == "map_type":
        value = _map_value(inner.map_type)
        if value is not None:
            return value, None, SEQUENCE_MAP
    if outer == "sequence_type" and inner_kind is None:  # element type left open
        return 0, None, SEQUENCE
    if outer == "optional_type" and inner_kind is None:
        return 0, None, OPTIONAL_TENSOR
    # seq(seq(...)), seq(map(...)), optional(map(...)): no edgert value kind for these
    inner_name = (inner_kind or "").removesuffix("_type")
    return 0, None, f"{outer.removesuffix('_type')}({inner_name})"


def _map_value(mt) -> int | None:
    """The value dtype of a map type the runtime holds (int64 or string keys, tensor values),
    or None."""
    if mt.key_type not in (TensorProto.INT64, TensorProto.STRING):
        return None
    if mt.value_type.WhichOneof("value") != "tensor_type":
        return None
    return mt.value_type.tensor_type.elem_type


def _map_key(tp: onnx.TypeProto) -> int:
    """The key dtype of a map or sequence-of-maps type, else 0."""
    if tp.WhichOneof("value") == "sequence_type":
        tp = tp.sequence_type.elem_type
    return int(tp.map_type.key_type) if tp.WhichOneof("value") == "map_type" else 0


def _attr_type(a: AttributeProto) -> int:
    """An attribute's type; very old models leave ``type`` unset, so infer it from the field."""
    if a.type != AttributeProto.UNDEFINED:
        return a.type
    for field, code in (
        ("g", AttributeProto.GRAPH),
        ("t", AttributeProto.TENSOR),
        ("sparse_tensor", AttributeProto.SPARSE_TENSOR),
    ):
        if a.HasField(field):
            return code
    for field, code in (
        ("floats", AttributeProto.FLOATS),
        ("ints", AttributeProto.INTS),
        ("strings", AttributeProto.STRINGS),
        ("tensors", AttributeProto.TENSORS),
        ("graphs", AttributeProto.GRAPHS),
    ):
        if len(getattr(a, field)):
            return code
    for field, code in (
        ("f", AttributeProto.FLOAT),
        ("i", AttributeProto.INT),
        ("s", AttributeProto.STRING),
    ):
        if a.HasField(field):
            return code
    return AttributeProto.UNDEFINED


def _set_kind(v: Value, kind: str, key_dtype: int = 0) -> None:
    """Record a value's ONNX type kind: the IR's kind where it has one, else ``meta``."""
    if kind in VALUE_KINDS:
        v.kind = kind
        if kind in (MAP, SEQUENCE_MAP):
            v.meta["key_dtype"] = key_dtype
    if kind != TENSOR:
        v.meta["onnx_type"] = kind


def _traits(op_type: str):
    """The runtime's traits of a default-domain op (edgert.runtime.registry.OpTraits): which
    ops make sequences, which take narrow types the importer must tag. Asked of the CPU kernel
    registry, where each op's kernel declares them (the runtime never imports the importer)."""
    from edgert.runtime.kernels.cpu import registry

    return registry().traits(op_type)


def _default_kinds(node: Node) -> None:
    """Give the output of a sequence-producing node its kind when its type is unknown."""
    out = node.outputs[0] if node.outputs else None
    if out is None or out.kind != TENSOR or out.meta.get("onnx_type"):
        return
    if node.op_type != "Optional":
        out.kind = SEQUENCE
        if not out.dtype:  # the element type of what goes in
            src = node.input(1) if node.op_type == "SequenceInsert" else node.input(0)
            out.dtype = src.dtype if src is not None else int(node.attrs.get("dtype", 1))
        return
    src = node.input(0)
    nested = (src is not None and src.kind == SEQUENCE) or node.attrs.get("type") == SEQUENCE
    out.kind = OPTIONAL_SEQUENCE if nested else OPTIONAL_TENSOR
    if src is not None and not out.dtype:
        out.dtype = src.dtype


# ----- scopes -------------------------------------------------------------------------------------
class _Scope:
    """The values a (sub)graph can name: its own, then (through proxies) its enclosing scopes'.

    A body that reads an enclosing-scope value gets a proxy :class:`Value` of the same name (no
    producer, not an input); the name is recorded in ``outer_names`` (which becomes the body's
    ``outer_inputs``) and, in the scope that owns the value, in ``read_by_bodies``.
    """

    def __init__(self, graph: Graph, parent: _Scope | None):
        self.graph = graph
        self.parent = parent
        self.values: dict[str, Value] = {}
        self.outer: dict[int, Value] = {}  # id(proxy) -> the enclosing scope's value
        self.outer_names: list[str] = []
        self.read_by_bodies: set[str] = set()

    def define(self, value: Value) -> Value:
        if value.name in self.values:
            raise ModelImportError(
                f"'{value.name}' is defined twice in graph '{self.graph.name}' (ONNX values must "
                "have unique names)"
            )
        self.graph.unique_name(value.name)  # reserve it: generated names never collide
        self.values[value.name] = value
        return value

    def resolve(self, name: str) -> Value | None:
        v = self.values.get(name)
        if v is not None:
            return v
        if self.parent is None:
            return None
        pv = self.parent.resolve(name)
        if pv is None:
            return None
        const = self.parent.const_of(pv)
        if const is not None:
            # An enclosing-scope constant becomes the body's own (the same data; the writer
            # stores identical bytes once): read as an input, its value was unknown when the
            # body was planned, so every op whose output shape depends on it (Pad's pads,
            # Reshape's shape, Slice's starts) and all after it ran as dynamic steps, prepared
            # again at every run (a VAD's If branch: 28 of 31 steps).
            v = Value(name, pv.dtype, list(const.shape), const=const)
            v.kind = pv.kind
            v.meta = dict(pv.meta)
            self.graph.unique_name(name)
            self.values[name] = v
            self.graph.constants[name] = v
            return v
        self.parent.read_by_bodies.add(name)
        proxy = Value(name, pv.dtype, pv.shape)
        proxy.kind = pv.kind
        self.graph.unique_name(name)
        self.values[name] = proxy
        self.outer[id(proxy)] = pv
        self.outer_names.append(name)
        return proxy

    def const_of(self, v: Value | None) -> np.ndarray | None:
        if v is None:
            return None
        if v.const is not None:
            return v.const
        pv = self.outer.get(id(v))
        if pv is None or self.parent is None:
            return None
        return self.parent.const_of(pv)

    def is_output(self, v: Value) -> bool:
        return any(o is v for o in self.graph.outputs) or v.name in self.read_by_bodies


# ----- the importer -------------------------------------------------------------------------------
class _Importer:
    def __init__(self, proto: onnx.ModelProto, base_dir: str | None, sha256: str):
        self.source = proto
        self.base_dir = base_dir
        self.sha256 = sha256
        self.opsets: dict[str, int] = {}
        self.unsupported: list[tuple[str, str, str]] = []
        self.rejected_domains: set[str] = set()
        self.weights: dict[str, TensorProto] = {}  # see _infer_shapes
        self.keep_custom = False  # see import_onnx

    def run(self) -> Graph:
        proto = self.source
        for imp in proto.opset_import:
            domain = "" if imp.domain in _DEFAULT_DOMAINS else imp.domain
            version = int(imp.version)
            if self.opsets.get(domain, version) != version:
                # (the same entry twice, as skl2onnx 1.20 writes, is merged)
                raise ModelImportError(
                    f"the model imports domain '{domain or 'ai.onnx'}' twice, at opsets "
                    f"{self.opsets[domain]} and {version}: which one its nodes follow is ambiguous"
                )
            self.opsets[domain] = version
        if "" not in self.opsets and not proto.opset_import and proto.ir_version < 3:
            self.opsets[""] = 1  # IR versions 1-2 predate opset_import: opset 1
        if proto.functions:
            try:
                proto = onnx.inliner.inline_local_functions(proto)
            except Exception:  # noqa: BLE001, S110
                pass  # calls stay as nodes of the function's domain and are reported below
        if gradient.has_gradient(proto.graph):  # training-domain Gradient -> backward nodes
            proto = gradient.expand_gradients(proto)
        proto, self.weights = _infer_shapes(proto)
        graph = self._graph(proto.graph, None, proto.graph.name or "main")
        if self.unsupported:
            raise UnsupportedOpError(
                describe_unsupported(
                    self.unsupported,
                    "cannot import the ONNX model: {count} node(s) use operators edgert cannot "
                    "import ({summary})",
                    _import_advice(self.rejected_domains),
                ),
                ops=self.unsupported,
            )
        graph.metadata = self._metadata(self.source)
        return graph

    def _metadata(self, proto: onnx.ModelProto) -> dict[str, str]:
        meta = {p.key: p.value for p in proto.metadata_props}
        fields = (
            ("onnx.producer_name", proto.producer_name),
            ("onnx.producer_version", proto.producer_version),
            ("onnx.domain", proto.domain),
            ("onnx.model_version", str(proto.model_version) if proto.model_version else ""),
            ("onnx.ir_version", str(proto.ir_version) if proto.ir_version else ""),
            ("onnx.doc_string", proto.doc_string),
            ("onnx.sha256", self.sha256),
        )
        for key, value in fields:
            if value:
                meta[key] = value
        return meta

    # ----- graphs -----------------------------------------------------------------------------
    def _graph(self, gp: onnx.GraphProto, parent: _Scope | None, name: str) -> Graph:
        g = Graph(name)
        g.opset = dict(self.opsets) if self.opsets else {"": 0}
        scope = _Scope(g, parent)
        where = f"graph '{name}'"

        types: dict[str, tuple[int, list | None, str]] = {}
        keys: dict[str, int] = {}  # map values' key dtypes
        for vi in gp.value_info:
            types[vi.name] = _type_info(vi.type)
            keys[vi.name] = _map_key(vi.type)
        for vi in list(gp.output) + list(gp.input):
            declared = _type_info(vi.type)
            keys[vi.name] = _map_key(vi.type) or keys.get(vi.name, 0)
            inferred = types.get(vi.name)
            if inferred is not None:
                declared = (
                    declared[0] or inferred[0],
                    declared[1] if declared[1] is not None else inferred[1],
                    declared[2] or inferred[2],
                )
            types[vi.name] = declared

        # Constants: initializers (dense and sparse), then Constant nodes.
        init_names = {t.name for t in gp.initializer}
        init_names.update(sp.values.name for sp in gp.sparse_initializer)
        for vi in gp.input:
            if vi.name in init_names:
                continue  # an initializer listed as input (IR < 4): a constant
            if not vi.name:
                raise ModelImportError(f"{where}: an input has no name")
            dtype, shape, kind = types[vi.name]
            v = scope.define(Value(vi.name, dtype, shape))
            _set_kind(v, kind, keys.get(vi.name, 0))
            g.inputs.append(v)
        for t in gp.initializer:
            if parent is None:  # the main graph's weights stayed out of shape inference
                t = self.weights.get(t.name, t)
            arr, code = self._tensor(t, f"initializer '{t.name}'")
            self._constant(scope, t.name, arr, code)
        for sp in gp.sparse_initializer:
            arr, code = self._sparse(sp, f"sparse initializer '{sp.values.name}'")
            self._constant(scope, sp.values.name, arr, code)

        nodes = list(gp.node)
        for n in nodes:
            texts = [n.op_type, n.domain, n.name, *n.input, *n.output]
            if not all(isinstance(t, str) for t in texts):
                raise ModelImportError(
                    f"{where}: a node's op type, domain, name or a value name is not valid UTF-8"
                )
        is_const = [n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS for n in nodes]
        for n, const in zip(nodes, is_const):
            if const:
                if len(n.output) != 1 or not n.output[0]:
                    raise ModelImportError(f"{where}: Constant node '{n.name}' needs one output")
                arr, code = self._constant_node(n)
                self._constant(scope, n.output[0], arr, code)
            else:
                for out in n.output:
                    if out:
                        dtype, shape, kind = types.get(out, (0, None, "tensor"))
                        v = scope.define(Value(out, dtype, shape))
                        _set_kind(v, kind, keys.get(out, 0))

        node_names = self._node_names(nodes, is_const)
        pending: list[tuple[Node, onnx.NodeProto]] = []
        for n, const, node_name in zip(nodes, is_const, node_names):
            if const:
                continue
            inputs: list[Value | None] = []
            for x in n.input:
                if not x:
                    inputs.append(None)
                    continue
                v = scope.resolve(x)
                if v is None:
                    raise ModelImportError(
                        f"{where}: node {n.op_type} '{node_name}' reads '{x}', which no node, "
                        "input or initializer defines"
                    )
                inputs.append(v)
            while inputs and inputs[-1] is None:
                inputs.pop()
            last = max((i for i, o in enumerate(n.output) if o), default=-1)
            outputs: list[Value] = []
            for i, o in enumerate(n.output[: last + 1]):
                if o:
                    outputs.append(scope.values[o])
                else:  # an omitted optional output before a present one
                    ph = g.new_value(f"{node_name}_unused{i}")
                    ph.meta["omitted"] = True
                    outputs.append(ph)
            attrs = self._attrs(n, scope, node_name)
            self._outer_inputs(scope, attrs, inputs)
            if n.domain in _DEFAULT_DOMAINS and _traits(n.op_type).tags_narrow_types:
                # bfloat16 / float8 / float4 travel as raw uint bits and int4/int2 as int8/uint8
                # values: tell the kernel what they are
                for key, v in _coded_operands(n.op_type, inputs, outputs):
                    if v is not None and v.dtype in _CODED_TYPES:
                        attrs[key] = int(v.dtype)
            domain = "" if n.domain in _DEFAULT_DOMAINS else n.domain
            node = g.add_node(n.op_type, inputs, outputs, attrs, name=node_name, domain=domain)
            # the first output of a sequence-making op is a sequence or an optional whatever
            # shape inference says (it may leave a value's type out, e.g. inside a body)
            if not domain and _traits(n.op_type).makes_sequence:
                _default_kinds(node)
            pending.append((node, n))

        for vi in gp.output:
            v = scope.resolve(vi.name)
            if v is None:
                raise ModelImportError(
                    f"{where}: output '{vi.name}' is not produced by any node, input or "
                    "initializer"
                )
            g.outputs.append(v)

        for node, n in pending:
            self._normalize(scope, node, n)
        try:
            g.toposort()
        except ValueError:
            raise ModelImportError(f"{where} has a cycle: its nodes cannot be ordered") from None
        g.outer_inputs = list(scope.outer_names)
        return g

    @staticmethod
    def _outer_inputs(scope: _Scope, attrs: dict, inputs: list[Value | None]) -> None:
        """Make the enclosing-scope values a node's bodies read explicit trailing inputs.

        The node then depends on them like on any input (topological order, and the memory
        planner keeps them alive while the node runs); attribute ``edgert_outer_inputs`` names
        them, in input order, so a control-flow kernel can bind them to the body's tensors.
        """
        names: list[str] = []
        for value in attrs.values():
            graphs = value if isinstance(value, list) and value and \
                isinstance(value[0], Graph) else [value]
            for g in graphs:
                if isinstance(g, Graph):
                    names.extend(x for x in g.outer_inputs if x not in names)
        if not names:
            return
        for name in names:
            v = scope.resolve(name)
            if v is None:  # defined nowhere: the body import already reported it
                raise ModelImportError(f"a control-flow body reads '{name}', which nothing defines")
            inputs.append(v)
        attrs["edgert_outer_inputs"] = names

    @staticmethod
    def _constant(scope: _Scope, name: str, arr: np.ndarray, code: int) -> Value:
        v = scope.define(Value(name, code, list(arr.shape), const=arr))
        scope.graph.constants[name] = v
        return v

    @staticmethod
    def _node_names(nodes: list[onnx.NodeProto], is_const: list[bool]) -> list[str]:
        """Node names as in the model; unnamed or repeated ones get ``<OpType>_<index>``."""
        given = {n.name for n, c in zip(nodes, is_const) if n.name and not c}
        used: set[str] = set()
        names: list[str] = []
        for i, (n, const) in enumerate(zip(nodes, is_const)):
            name = n.name
            if const:
                names.append(name)
                continue
            if not name or name in used:
                base = f"{n.op_type}_{i}" if not name else name
                name, k = base, 0
                while name in used or name in given:
                    k += 1
                    name = f"{base}_{k}"
            used.add(name)
            names.append(name)
        return names

    # ----- normalization ----------------------------------------------------------------------
    def _normalize(self, scope: _Scope, node: Node, n: onnx.NodeProto) -> None:
        domain = node.domain
        if domain == "com.microsoft" and domain not in self.opsets:
            # onnxruntime runs its own operators without the declaration (its transformers
            # optimizer's in-memory models lack it; only the saved file gets one)
            self.opsets[domain] = 1
        if domain not in self.opsets:
            node.version = 0
            shown = domain or "ai.onnx"
            self._reject(node, f"domain '{shown}' is not declared in the model's opset_import")
            return
        opset = self.opsets[domain]
        node.version = opset
        if domain == ML_DOMAIN:
            self._ml_node(scope, node, opset)
            return
        if domain == "com.microsoft":
            self._contrib_node(scope, node, n)
            return
        if domain != "":
            if not self.keep_custom:
                self._reject(node, _foreign_reason(domain))
            return  # (kept: an opaque node of its domain, at the model's opset for it)
        rule = None
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            rule = upgrade.EXPERIMENTAL.get(node.op_type)
            since = 1
            if rule is None and node.op_type in _LENIENT_SINCE:
                # an op written before its opset existed, by tools whose runtime had it as an
                # extension of the same meaning (onnxruntime's transformers optimizer writes
                # LayerNormalization under opset 14): run it as its first standard version
                since = _LENIENT_SINCE[node.op_type]
                warnings.warn(
                    f"{node.op_type} '{node.name}' is used under ai.onnx opset {opset}, but the "
                    f"operator was added in opset {since}: importing it as {node.op_type}-{since}",
                    stacklevel=2,
                )
                node.version = since
                return
            if rule is None and node.op_type in _contrib_default_ops():
                # onnxruntime registers a few of its operators in the default domain
                self._contrib_node(scope, node, n)
                return
            if rule is None:
                self._reject(node, self._unknown_op_reason(node.op_type, opset))
                return
        else:
            since = schema.since_version
            rule = upgrade.find_rule(node.op_type, since)
            wrong = _against_schema(schema, node, n)
            if wrong is not None:
                self._reject(node, wrong)
                return
        rw = upgrade.Rewrite(
            graph=scope.graph,
            node=node,
            since=since,
            opset=opset,
            const_of=scope.const_of,
            num_outputs=len(n.output),
            is_output=scope.is_output,
        )
        try:
            upgrade.apply(rw, rule)
        except upgrade.Decline as exc:
            self._reject(node, str(exc))
        except (TypeError, ValueError, IndexError) as exc:  # attributes of the wrong kind
            self._reject(node, f"malformed attributes or inputs ({type(exc).__name__}: {exc})")

    def _contrib_node(self, scope: _Scope, node: Node, n: onnx.NodeProto) -> None:
        """A ``com.microsoft`` node: lowered to standard operators (:mod:`.contrib`)."""
        from edgert.importer import contrib, contrib_quant

        rule = contrib.RULES.get(node.op_type) or contrib_quant.RULES.get(node.op_type)
        if rule is None:
            self._reject(node, f"onnxruntime contrib operator com.microsoft.{node.op_type} is "
                               "not supported")
            return
        opset = self.opsets.get("", 0)
        rw = upgrade.Rewrite(
            graph=scope.graph,
            node=node,
            since=1,
            opset=opset,
            const_of=scope.const_of,
            num_outputs=len(n.output),
            is_output=scope.is_output,
        )
        try:
            produced = rule(rw)
        except upgrade.Decline as exc:
            self._reject(node, str(exc))
            return
        except (TypeError, ValueError, IndexError) as exc:  # attributes of the wrong kind
            self._reject(node, f"malformed attributes or inputs ({type(exc).__name__}: {exc})")
            return
        node.domain = ""
        node.version = max(opset, produced)

    def _ml_node(self, scope: _Scope, node: Node, opset: int) -> None:
        """An ``ai.onnx.ml`` node: its schema must exist at the model's ML opset."""
        try:
            onnx.defs.get_schema(node.op_type, opset, ML_DOMAIN)
        except onnx.defs.SchemaError:
            self._reject(node, f"'{node.op_type}' is not an ai.onnx.ml operator at opset {opset}")
            return
        if node.op_type == "ZipMap" and node.outputs:
            out = node.outputs[0]  # seq(map(label, float)) whatever the model declares
            labels = node.attrs.get("classlabels_int64s")
            out.kind, out.dtype = SEQUENCE_MAP, dtypes.FLOAT
            out.meta["key_dtype"] = dtypes.INT64 if labels is not None else dtypes.STRING

    @staticmethod
    def _unknown_op_reason(op_type: str, opset: int) -> str:
        try:
            later = onnx.defs.get_schema(op_type, onnx.defs.onnx_opset_version(), "")
        except onnx.defs.SchemaError:
            return f"'{op_type}' is not an ONNX operator (ai.onnx opset {opset})"
        return (
            f"'{op_type}' does not exist at the model's opset {opset} (it was added in opset "
            f"{later.since_version}); the model's opset_import is wrong"
        )

    def _reject(self, node: Node, reason: str) -> None:
        self.unsupported.append((node.op_type, node.name, reason))
        self.rejected_domains.add(node.domain)

    # ----- attributes -------------------------------------------------------------------------
    def _attrs(self, n: onnx.NodeProto, scope: _Scope, node_name: str) -> dict:
        attrs: dict = {}
        for a in n.attribute:
            where = f"attribute '{a.name}' of {n.op_type} '{node_name}'"
            if a.ref_attr_name:
                raise ModelImportError(f"{where} refers to a function attribute outside a function")
            t = _attr_type(a)
            if t == AttributeProto.FLOAT:
                attrs[a.name] = float(a.f)
            elif t == AttributeProto.INT:
                attrs[a.name] = int(a.i)
            elif t == AttributeProto.STRING:
                attrs[a.name] = _decode(a.s)
            elif t == AttributeProto.TENSOR:
                attrs[a.name] = self._tensor(a.t, where)[0]
            elif t == AttributeProto.SPARSE_TENSOR:
                attrs[a.name] = self._sparse(a.sparse_tensor, where)[0]
            elif t == AttributeProto.GRAPH:
                attrs[a.name] = self._graph(a.g, scope, a.g.name or f"{node_name}_{a.name}")
            elif t == AttributeProto.FLOATS:
                attrs[a.name] = list(a.floats)  # (Python floats and ints already)
            elif t == AttributeProto.INTS:
                attrs[a.name] = list(a.ints)
            elif t == AttributeProto.STRINGS:
                attrs[a.name] = [_decode(x) for x in a.strings]
            elif t == AttributeProto.TENSORS:
                attrs[a.name] = [self._tensor(x, where)[0] for x in a.tensors]
            elif t == AttributeProto.SPARSE_TENSORS:
                attrs[a.name] = [self._sparse(x, where)[0] for x in a.sparse_tensors]
            elif t == AttributeProto.TYPE_PROTO:  # Optional's `type`: the kind of the value
                attrs[a.name] = _type_info(a.tp)[2]
            elif t == AttributeProto.GRAPHS:
                attrs[a.name] = [
                    self._graph(x, scope, x.name or f"{node_name}_{a.name}{i}")
                    for i, x in enumerate(a.graphs)
                ]
            else:
                kind = AttributeProto.AttributeType.Name(t) if t else "UNDEFINED"
                self.unsupported.append(
                    (n.op_type, node_name, f"attribute '{a.name}' of type {kind} is not supported")
                )
        return attrs

    # ----- tensors ----------------------------------------------------------------------------
    def _tensor(self, t: TensorProto, where: str) -> tuple[np.ndarray, int]:
        """A TensorProto as (NumPy array, dtype code), reading external data when needed."""
        code = int(t.data_type)
        if not dtypes.is_known(code):
            raise ModelImportError(
                f"{where}: element type {_dtype_name(code)} is not supported by edgert"
            )
        dims = [int(d) for d in t.dims]
        if any(d < 0 for d in dims):  # (NumPy's reshape would read any negative dim as -1)
            raise ModelImportError(
                f"{where}: dims {dims} hold a negative dimension; a tensor's dims are >= 0")
        if t.data_location == TensorProto.EXTERNAL:
            t = self._external(t, where)
        try:
            if code in _BIT_TYPES:
                arr = _bits(t, _BIT_TYPES[code])
            elif code in _PACKED_TYPES:
                arr = _unpacked(t, code)
            else:
                arr = numpy_helper.to_array(t)
        except Exception as exc:  # noqa: BLE001  (any decoding failure is a bad model)
            raise ModelImportError(f"{where}: cannot decode the tensor data ({exc})") from None
        if arr.shape != tuple(dims):
            raise ModelImportError(f"{where}: the data decodes to shape {arr.shape}, but the "
                                   f"tensor's dims are {dims}")
        if code == dtypes.STRING:
            flat = [_decode(x) if isinstance(x, bytes) else x for x in arr.reshape(-1)]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            arr = out.reshape(arr.shape)
        # Not np.ascontiguousarray: it turns a 0-d scalar into shape (1,).
        return np.require(arr, requirements="C"), code

    def _external(self, t: TensorProto, where: str) -> TensorProto:
        """A copy of ``t`` with its external bytes read into ``raw_data``."""
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location:
            raise ModelImportError(f"{where}: stored externally but names no file ('location')")
        if self.base_dir is None:
            raise ModelImportError(
                f"{where}: stored in the external file '{location}', but the model was given "
                "without its folder; load it from its path or pass base_dir="
            )
        base = os.path.realpath(self.base_dir)
        if os.path.isabs(location):
            raise ModelImportError(
                f"{where}: external data location '{location}' is an absolute path; ONNX "
                "requires a path relative to the model's folder"
            )
        path = os.path.realpath(os.path.join(base, location))
        if os.path.commonpath([base, path]) != base:
            raise ModelImportError(
                f"{where}: external data location '{location}' points outside the model's "
                f"folder {base}"
            )
        if not os.path.isfile(path):
            raise ModelImportError(
                f"{where}: external data file '{location}' not found in {base}"
            )
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise ModelImportError(
                f"{where}: external data offset/length are not integers ({info})"
            ) from None
        size = os.path.getsize(path)
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset > size or length > size - offset:
            raise ModelImportError(
                f"{where}: external data '{location}' needs bytes {offset}..{offset + length} "
                f"but the file has {size}"
            )
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        copy = TensorProto()
        copy.CopyFrom(t)
        del copy.external_data[:]
        copy.data_location = TensorProto.DEFAULT
        copy.raw_data = raw
        return copy

    def _sparse(self, sp: onnx.SparseTensorProto, where: str) -> tuple[np.ndarray, int]:
        """A sparse tensor made dense (edgert has no sparse tensors)."""
        values, code = self._tensor(sp.values, where)
        indices, _ = self._tensor(sp.indices, where)
        dims = [int(d) for d in sp.dims]
        dense = np.zeros(dims, dtype=values.dtype)
        size = dense.size
        idx = indices.astype(np.int64)
        values = values.reshape(-1)
        if idx.ndim == 1:
            flat = idx
        elif idx.ndim == 2 and idx.shape[1] == len(dims):
            if np.any(idx < 0) or np.any(idx >= np.asarray(dims, dtype=np.int64)):
                raise ModelImportError(f"{where}: sparse index out of range for shape {dims}")
            flat = np.ravel_multi_index(tuple(idx.T), dims) if dims else idx[:, 0]
        else:
            raise ModelImportError(
                f"{where}: sparse indices of shape {idx.shape} do not fit {dims}"
            )
        if flat.shape[0] != values.shape[0]:
            raise ModelImportError(
                f"{where}: {values.shape[0]} sparse values but {flat.shape[0]} indices"
            )
        if np.any(flat < 0) or np.any(flat >= size):
            raise ModelImportError(f"{where}: sparse index out of range for shape {dims}")
        dense.reshape(-1)[flat] = values
        return dense, code

    def _constant_node(self, n: onnx.NodeProto) -> tuple[np.ndarray, int]:
        where = f"Constant '{n.name or n.output[0]}'"
        if len(n.attribute) != 1:
            names = [a.name for a in n.attribute]
            raise ModelImportError(f"{where} must have exactly one value attribute, has {names}")
        a = n.attribute[0]
        if a.ref_attr_name:
            raise ModelImportError(f"{where} refers to a function attribute outside a function")
        if a.name == "value":
            return self._tensor(a.t, where)
        if a.name == "sparse_value":
            return self._sparse(a.sparse_tensor, where)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32), dtypes.FLOAT
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32), dtypes.FLOAT
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64), dtypes.INT64
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64), dtypes.INT64
        if a.name in ("value_string", "value_strings"):
            items = [_decode(a.s)] if a.name == "value_string" else [_decode(s) for s in a.strings]
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            return (arr.reshape(()) if a.name == "value_string" else arr), dtypes.STRING
        raise ModelImportError(f"{where} has an unknown value attribute '{a.name}'")


def _coded_operands(op_type: str, inputs: list, outputs: list) -> list[tuple[str, object]]:
    """(attribute, value) pairs whose coded dtype a Cast / Q / DQ kernel must be told."""
    first_in = inputs[0] if inputs else None
    if op_type == "Cast":
        return [("edgert_from_type", first_in)]
    if op_type == "CastLike":
        return [("edgert_from_type", first_in),
                ("edgert_to_type", inputs[1] if len(inputs) > 1 else None)]
    if op_type == "QuantizeLinear":
        zp = inputs[2] if len(inputs) > 2 else None
        return [("edgert_to_type", outputs[0] if outputs and outputs[0].dtype else zp)]
    return [("edgert_from_type", first_in)]  # DequantizeLinear




def _unpacked(t: TensorProto, code: int) -> np.ndarray:
    """A packed 4-bit / 2-bit tensor, one value (or float4 code) per int8/uint8 element."""
    arr = numpy_helper.to_array(t)  # an ml_dtypes array, one element per byte
    if code == dtypes.FLOAT4E2M1:
        return arr.view(np.uint8) & np.uint8(0x0F)
    return arr.astype(dtypes.to_numpy(code))


def _bits(t: TensorProto, dt: np.dtype) -> np.ndarray:
    """Raw bits of a bfloat16 / float8 tensor (stored in raw_data, else one per int32_data)."""
    dims = tuple(int(d) for d in t.dims)
    if t.raw_data:
        arr = np.frombuffer(t.raw_data, dtype=dt.newbyteorder("<")).astype(dt)
    else:
        arr = np.asarray(t.int32_data, dtype=np.int64).astype(dt)
    return arr.reshape(dims)
