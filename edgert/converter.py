"""ONNX (or an IR graph) -> `.edgert`.

The pipeline of :func:`convert`:

1. import — :func:`edgert.importer.import_onnx` (skipped when given an :class:`~edgert.ir.Graph`);
2. optimize — ``edgert.optimizer.optimize(graph, level, allow_fused=True)`` when ``level > 0``
   (the `.edgert` runtime runs the fused ``edgert``-domain ops); a QDQ model is optimized and
   rewritten to edgert's int8 ops with its own parameters instead
   (:func:`edgert.quantization.qdq_import.import_qdq`);
3. check — every node (control-flow bodies included) must have a kernel in the CPU registry; all
   nodes without one are reported together in one :class:`~edgert.errors.UnsupportedOpError`;
4. lower — :func:`lower` turns the IR into the plain :class:`~edgert.format.ModelDef` objects;
5. write — :func:`edgert.format.write_model` serializes them (and writes ``output`` if given).

How :func:`lower` maps the IR onto the file's objects:

* Each graph becomes a :class:`~edgert.format.SubGraphDef` whose tensors are numbered in this
  order: graph inputs, the constants that something reads, then node inputs/outputs in node
  order. A constant keeps its data in ``TensorDef.data``; unused constants are left out.
* Dims: an int stays; a symbolic (str) or unknown (None) dim becomes -1, and
  ``shape_signature`` then names every dim ("" where static or unnamed). An unknown rank is
  ``shape=()`` with ``unknown_rank=True``; so is a sequence or optional value, whose
  ``TensorDef.kind`` says which (``Value.kind``) and whose dtype is its tensors' element type.
* An omitted optional input (None) is -1; so is an omitted optional output (a value the
  importer marked ``meta["omitted"]``).
* ``Value.quant`` becomes :class:`~edgert.format.QuantParams` (float32 scales, int64 zero points).
* A Graph-valued attribute (If/Loop/Scan body) becomes a nested SubGraphDef attribute; the writer
  stores it as another subgraph. A body reads enclosing-scope values by name: each such name is
  in its ``outer_inputs`` and has a tensor of that name in the body (not among its inputs).
* ``ModelDef.metadata`` is the graph's metadata (``onnx.doc_string`` goes to ``description``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgert import __version__, dtypes
from edgert.errors import EdgeRTError, UnsupportedOpError
from edgert.format.model import (
    KIND_NAMES,
    ModelDef,
    OperatorDef,
    QuantParams,
    SubGraphDef,
    TensorDef,
)
from edgert.ir import Graph, Node, Value

if TYPE_CHECKING:
    import onnx

    from edgert.runtime.registry import KernelRegistry, OpTraits

CONVERT_ADVICE = (
    "These operators import fine but the edgert runtime has no kernel for them (see the README's "
    "supported-operator list). Rewrite them with supported operators in the exporting framework, "
    "or pass check_ops=False to write the file anyway (it will not run here)."
)


# ----- convert ------------------------------------------------------------------------------------
def convert(
    model: onnx.ModelProto | str | os.PathLike | bytes | Graph,
    output: str | os.PathLike | None = None,
    *,
    check_ops: bool = True,
    metadata: dict[str, str] | None = None,
    level: int = 2,
    base_dir: str | os.PathLike | None = None,
    registry: KernelRegistry | None = None,
    verbose: bool = False,
) -> bytes:
    """Convert an ONNX model (or an IR graph) into a `.edgert` model.

    Args:
        model: an ``onnx.ModelProto``, a path to an ``.onnx`` file, its bytes, or an IR
            :class:`~edgert.ir.Graph` (used as is, and modified by the optimizer when
            ``level > 0``).
        output: where to write the `.edgert` file; nothing is written when None.
        check_ops: check every operator against the kernel registry first.
        metadata: extra ``name -> value`` entries for the file's metadata (they win over the
            entries edgert writes).
        level: graph optimization level (see :mod:`edgert.optimizer`): 0 converts the graph as
            imported, 1 basic, 2 extended (the default).
        verbose: print the optimizer's per-pass report.
        base_dir: folder of the model's external data (see :func:`edgert.importer.import_onnx`).
        registry: the kernel registry to check against; defaults to the CPU registry.

    Returns:
        The bytes of the `.edgert` file.

    Metadata written: ``producer`` ("edgert <version>"), ``edgert_version``, and for an ONNX
    source ``source_producer`` (its producer name and version) and ``source_sha256`` (the
    SHA-256 of the serialized ONNX model, the ``.onnx`` file itself for a path), plus the ONNX
    model's own ``metadata_props`` and ``onnx.*`` fields.

    Raises:
        ModelImportError: the ONNX model cannot be read (see the importer).
        UnsupportedOpError: operators the importer or the runtime does not support, all listed.
        EdgeRTError: ``level > 0`` without an optimizer in this build.
    """
    if isinstance(model, Graph):
        graph = model
    else:
        from edgert.importer import import_onnx

        graph = import_onnx(model, base_dir=base_dir)
    graph = _optimize(graph, level, verbose)
    if check_ops:
        check_supported(graph, registry)
    model_def = lower(graph)
    model_def.metadata = _file_metadata(graph, metadata)

    from edgert.format import write_model

    return write_model(model_def, None if output is None else os.fspath(output))


def _optimize(graph: Graph, level: int, verbose: bool = False) -> Graph:
    """Level 0 leaves the graph alone; higher levels run :func:`edgert.optimizer.optimize` on it
    in place (edgert-domain fused ops allowed). A QDQ model (int8 activations between
    QuantizeLinear/DequantizeLinear pairs) becomes edgert's int8 graph with its own scales and
    zero points instead (:mod:`edgert.quantization.qdq_import`, which optimizes it first)."""
    if not isinstance(level, int) or level < 0:
        raise EdgeRTError(f"optimization level must be a non-negative integer, got {level!r}")
    if level > 0:
        from edgert.quantization.qdq_import import has_qdq, import_qdq

        if has_qdq(graph):
            return import_qdq(graph, level, verbose).graph
        from edgert.optimizer import optimize

        optimize(graph, level, verbose=verbose, allow_fused=True)
    return graph


def _file_metadata(graph: Graph, extra: dict[str, str] | None) -> dict[str, str]:
    meta = {k: v for k, v in graph.metadata.items() if k not in ("onnx.doc_string", "onnx.sha256")}
    meta["producer"] = f"edgert {__version__}"
    meta["edgert_version"] = __version__
    source = " ".join(
        x for x in (graph.metadata.get("onnx.producer_name"),
                    graph.metadata.get("onnx.producer_version")) if x
    )
    if source:
        meta["source_producer"] = source
    if graph.metadata.get("onnx.sha256"):
        meta["source_sha256"] = graph.metadata["onnx.sha256"]
    for key, value in (extra or {}).items():
        meta[str(key)] = str(value)
    return meta


# ----- kernel check -------------------------------------------------------------------------------
def _all_nodes(graph: Graph) -> Iterable[Node]:
    """Every node of ``graph`` and of its control-flow bodies (iteratively, depth first)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes:
            yield node
            stack.extend(reversed(node.subgraphs()))


def check_supported(graph: Graph, registry: KernelRegistry | None = None) -> None:
    """Raise one :class:`UnsupportedOpError` listing every node that has no kernel.

    Args:
        graph: the graph to check (bodies of If/Loop/Scan included).
        registry: the registry to check against; defaults to the CPU kernel registry.
    """
    from edgert.runtime.kernels.cpu import registry as cpu_registry

    if registry is None:
        registry = cpu_registry()
    # What an op may take (raw-bit narrow types, sequences) is its CPU kernel's traits.
    traits = cpu_registry().traits
    missing: list[tuple[str, str, str]] = []
    for node in _all_nodes(graph):
        t = traits(node.op_type, node.domain, node.version)
        raw = _raw_bits_dtype(node, t)
        if raw is not None:
            missing.append((node.op_type, node.name,
                            f"{dtypes.name(raw)} tensors are only moved or cast by the edgert "
                            f"runtime, not computed on by {node.op_type}; Cast them to float32"))
            continue
        odd = _unsupported_value_type(node) or _sequence_misuse(node, t)
        if odd is not None:
            missing.append((node.op_type, node.name, odd))
            continue
        if not registry.supports(node.op_type, node.domain, node.version):
            dom = node.domain or "ai.onnx"
            missing.append((
                node.op_type,
                node.name,
                f"no {registry.device} kernel for {dom}.{node.op_type} (opset {node.version})",
            ))
    if missing:
        from edgert.errors import describe_unsupported

        raise UnsupportedOpError(
            describe_unsupported(
                missing,
                "cannot convert: {count} node(s) have no kernel in the edgert runtime ({summary})",
                CONVERT_ADVICE,
            ),
            ops=missing,
        )


# bfloat16 and float8 have no NumPy dtype: the runtime holds their raw bits in uint16/uint8
# arrays, so a kernel cannot tell them from integers. Only ops that move bits unchanged (or Cast,
# which the importer tells the real type) may touch them; anything else would compute on the bits
# and give a silently wrong answer.
_RAW_BITS_TYPES = frozenset({
    dtypes.BFLOAT16, dtypes.FLOAT8E4M3FN, dtypes.FLOAT8E4M3FNUZ, dtypes.FLOAT8E5M2,
    dtypes.FLOAT8E5M2FNUZ, dtypes.FLOAT8E8M0, dtypes.FLOAT4E2M1, *dtypes.SUBBYTE_INTS,
})
# Held one per byte (int4 sign-extended): their holder's bits are not the ONNX bits, so even
# BitCast would be wrong on them.
_UNPACKED_TYPES = frozenset({dtypes.FLOAT4E2M1, *dtypes.SUBBYTE_INTS})


def _unsupported_value_type(node) -> str | None:
    """Why a node's input or output has an ONNX type the runtime cannot hold, or None.

    The runtime holds tensors, sequences of tensors and optional tensors / sequences
    (``Value.kind``); the importer records any other type (map, sequence of sequences...) in
    ``Value.meta["onnx_type"]`` and leaves the kind at "tensor".
    """
    for v in list(node.inputs) + list(node.outputs):
        if v is None or v.kind != "tensor":
            continue
        other = v.meta.get("onnx_type")
        if other and other not in ("tensor", "sparse_tensor"):
            return (f"value '{v.name}' has ONNX type {other}; the edgert runtime holds tensors, "
                    "sequences of tensors, optional tensors or sequences, and maps with int64 "
                    "or string keys (and sequences of them) only")
    return None


def _sequence_misuse(node, traits: OpTraits) -> str | None:
    """Why a tensor-only op (no ``takes_sequences`` trait) is wired to a sequence / optional
    value, or None."""
    if node.domain or traits.takes_sequences:
        return None
    for v in list(node.inputs) + list(node.outputs):
        if v is not None and v.kind != "tensor":
            return (f"value '{v.name}' is a {v.kind}, but {node.op_type} takes tensors only; "
                    "take its elements out with SequenceAt / OptionalGetElement first")
    return None


def _raw_bits_dtype(node, traits: OpTraits) -> int | None:
    """The bfloat16/float8 type a node would compute on, or None when it is safe: ops that
    only move bits (``moves_bits``) are, and Q/DQ on the type named by their ``type_attr``."""
    if node.domain:
        return None
    values = [v for v in list(node.inputs) + list(node.outputs) if v is not None]
    if traits.moves_bits:
        if node.op_type == "BitCast":
            return next((v.dtype for v in values if v.dtype in _UNPACKED_TYPES), None)
        return None
    tag = node.attrs.get(traits.type_attr) if traits.type_attr else None
    for v in values:
        if v.dtype in _RAW_BITS_TYPES and v.dtype != tag:
            return v.dtype
    return None


# ----- lowering -----------------------------------------------------------------------------------
def lower(graph: Graph) -> ModelDef:
    """Lower an IR graph to :class:`~edgert.format.ModelDef` (see the module docstring)."""
    main = _lower_graph(graph)
    return ModelDef(
        subgraphs=[main],
        metadata={k: v for k, v in graph.metadata.items() if k != "onnx.doc_string"},
        description=graph.metadata.get("onnx.doc_string", ""),
    )


def _lower_graph(graph: Graph) -> SubGraphDef:
    tensors: list[TensorDef] = []
    index: dict[int, int] = {}
    names: dict[str, int] = {}

    def add(v: Value) -> int:
        i = index.get(id(v))
        if i is not None:
            return i
        if v.name in names:
            raise EdgeRTError(
                f"graph '{graph.name}' has two different tensors named '{v.name}'"
            )
        i = len(tensors)
        tensors.append(_tensor_def(v))
        index[id(v)] = i
        names[v.name] = i
        return i

    inputs = [add(v) for v in graph.inputs]

    # Constants read by a node, a graph output, or (by name) a control-flow body.
    read = {id(v) for n in graph.nodes for v in n.inputs if v is not None}
    read.update(id(v) for v in graph.outputs)
    body_reads = {name for n in graph.nodes for g in n.subgraphs() for name in g.outer_inputs}
    for c in graph.constants.values():
        if id(c) in read or c.name in body_reads:
            add(c)

    operators: list[OperatorDef] = []
    for n in graph.nodes:
        ins = [-1 if v is None else add(v) for v in n.inputs]
        outs = [-1 if v.meta.get("omitted") else add(v) for v in n.outputs]
        attrs = {k: _lower_attr(v) for k, v in n.attrs.items()}
        kernel = _cpu_kernels().lookup(n.op_type, n.domain, n.version)
        if kernel is not None:
            attrs = kernel.pack_attributes(attrs)
        operators.append(
            OperatorDef(n.op_type, ins, outs, attrs, name=n.name, domain=n.domain,
                        version=n.version)
        )
    outputs = [add(v) for v in graph.outputs]
    return SubGraphDef(
        name=graph.name,
        tensors=tensors,
        inputs=inputs,
        outputs=outputs,
        operators=operators,
        outer_inputs=list(graph.outer_inputs),
    )


def _tensor_def(v: Value) -> TensorDef:
    quant = None
    if v.quant is not None:
        scale, zero_point, axis = v.quant
        quant = QuantParams(
            np.asarray(scale, dtype=np.float32).reshape(-1),
            np.asarray(zero_point, dtype=np.int64).reshape(-1),
            int(axis),
        )
    if v.kind != "tensor":  # a sequence / optional / map value: element dtype, no shape
        return TensorDef(v.name, v.dtype, (), None, None, None, unknown_rank=True,
                         kind=KIND_NAMES.index(v.kind), key_dtype=int(v.meta.get("key_dtype", 0)))
    if v.const is not None:
        data = np.require(v.const, requirements="C")
        return TensorDef(v.name, v.dtype, tuple(int(d) for d in data.shape), None, data, quant)
    if v.shape is None:
        return TensorDef(v.name, v.dtype, (), None, None, quant, unknown_rank=True)
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in v.shape)
    signature = None
    if any(d < 0 for d in shape):
        signature = tuple(d if isinstance(d, str) else "" for d in v.shape)
    return TensorDef(v.name, v.dtype, shape, signature, None, quant)


def _cpu_kernels() -> KernelRegistry:
    from edgert.runtime.kernels.cpu import registry

    return registry()


def _lower_attr(value: Any) -> Any:
    if isinstance(value, Graph):
        return _lower_graph(value)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(g, Graph) for g in value):
            return [_lower_graph(g) for g in value]
        if len(value) > 64 and not isinstance(value[0], (str, bytes, np.ndarray)):
            arr = np.asarray(value)  # a long numeric list (a tree ensemble's): in C, not per item
            if arr.ndim == 1 and arr.dtype.kind in "iuf":
                return arr.tolist()
        return [_lower_attr(x) for x in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
