"""IR -> ONNX: write an :class:`edgert.ir.Graph` back as an ``onnx.ModelProto``.

Used by ``edgert optimize`` so that any ONNX tool reads what the optimizer produced.

* Opset: the importer rewrote old operator forms into newer ones and recorded, per node, an
  opset version at which the node has its meaning (``node.version``, see
  :mod:`edgert.importer.upgrade`). The model is written at the newest of those versions (and at
  least the model's own opset), which is valid for every node because the kernels and the
  upgrade rules follow the newest semantics. The one exception is Softmax / LogSoftmax /
  Hardmax before opset 13, which flatten their input to 2-D around ``axis``: written at opset
  13 or later they become ``Flatten -> op(axis=-1) -> Reshape(Shape(x))`` unless ``axis`` is
  already the last axis (then both meanings agree).
* ``edgert``-domain nodes (fused activations) are written in domain ``edgert``, version 1; only
  the edgert runtime runs them. ``ai.onnx.ml`` nodes are written as imported, at the model's ML
  opset; map and sequence-of-map values keep their ONNX types.
* Constants become initializers (raw data of the value's own element type); a constant that is
  a graph output is written as a ``Constant`` node so its name stays an output.
* Graph inputs and outputs keep their names, element types and shapes (symbolic dims as
  ``dim_param``, unknown dims empty); intermediate types are left to ONNX shape inference.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgert import dtypes
from edgert.errors import EdgeRTError
from edgert.ir import Graph, Node, Value

_SOFTMAX_FAMILY = ("Softmax", "LogSoftmax", "Hardmax")
_ML = "ai.onnx.ml"


def export_onnx(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """Build an ONNX model from ``graph`` (not modified).

    Args:
        graph: the IR graph.
        opset: the ai.onnx opset to declare; default: the newest ``node.version`` of the graph,
            at least the graph's own opset (see the module docstring).

    Raises:
        EdgeRTError: a node is of a domain other than ai.onnx, ai.onnx.ml, edgert and the
            custom domains the graph declares (``import_onnx(keep_custom=True)``), or an
            attribute or constant cannot be written.
    """
    target = opset if opset is not None else _target_opset(graph)
    domains: set[str] = set()
    gp = _graph_proto(graph, target, domains, top=True)
    imports = [helper.make_opsetid("", target)]
    if "edgert" in domains:
        imports.append(helper.make_opsetid("edgert", 1))
    if _ML in domains:  # (the model's own ML opset: the importer keeps ML nodes as they are)
        imports.append(helper.make_opsetid(_ML, int(graph.opset.get(_ML) or 1)))
    for domain in sorted(domains - {"edgert", _ML}):  # custom domains, kept as imported
        imports.append(helper.make_opsetid(domain, int(graph.opset.get(domain) or 1)))
    model = helper.make_model(gp, opset_imports=imports, producer_name="edgert")
    from edgert import __version__

    model.producer_version = __version__
    model.ir_version = min(model.ir_version, helper.find_min_ir_version_for(imports, True))
    for key, value in graph.metadata.items():
        if not key.startswith("onnx."):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
    return model


def _target_opset(graph: Graph) -> int:
    best = max(int(graph.opset.get("", 0) or 0), 7)
    stack = [graph]
    while stack:
        g = stack.pop()
        for n in g.nodes:
            if n.domain == "":
                best = max(best, int(n.version or 0))
            stack.extend(n.subgraphs())
    return best


def _value_info(v: Value) -> onnx.ValueInfoProto:
    if v.kind in ("map", "sequence_map"):  # map(K, V) / seq(map(K, V)) of ai.onnx.ml
        tp = helper.make_map_type_proto(
            int(v.meta.get("key_dtype") or TensorProto.INT64),
            helper.make_tensor_type_proto(v.dtype or TensorProto.FLOAT, []))
        if v.kind == "sequence_map":
            tp = helper.make_sequence_type_proto(tp)
        return helper.make_value_info(v.name, tp)
    if v.kind != "tensor":  # seq(tensor), optional(tensor), optional(seq(tensor))
        tp = helper.make_tensor_type_proto(v.dtype or TensorProto.FLOAT, None)
        if v.kind in ("sequence", "optional_sequence"):
            tp = helper.make_sequence_type_proto(tp)
        if v.kind.startswith("optional"):
            tp = helper.make_optional_type_proto(tp)
        return helper.make_value_info(v.name, tp)
    if v.shape is None:
        return helper.make_tensor_value_info(v.name, v.dtype or TensorProto.FLOAT, None)
    dims = [d if isinstance(d, (int, str)) else None for d in v.shape]
    return helper.make_tensor_value_info(v.name, v.dtype or TensorProto.FLOAT, dims)


def _tensor(name: str, arr: np.ndarray, code: int) -> TensorProto:
    arr = np.asarray(arr)
    if code in (0, dtypes.STRING) or arr.dtype.kind in "OSU":
        return numpy_helper.from_array(arr, name)
    t = TensorProto()
    t.name = name
    t.data_type = code
    t.dims.extend(int(d) for d in arr.shape)
    if code in _PACKED_BITS:
        t.raw_data = _pack(arr, _PACKED_BITS[code])
        return t
    data = np.require(arr, requirements="C")
    if data.dtype.byteorder == ">":
        data = data.byteswap().view(data.dtype.newbyteorder("<"))
    t.raw_data = data.tobytes()
    return t


# Types edgert holds one per byte but ONNX packs (bits per element); see edgert.dtypes.
_PACKED_BITS = {
    dtypes.INT4: 4, dtypes.UINT4: 4, dtypes.FLOAT4E2M1: 4, dtypes.INT2: 2, dtypes.UINT2: 2,
}


def _pack(arr: np.ndarray, bits: int) -> bytes:
    """ONNX's packed layout: ``8 // bits`` elements per byte, the first in the lowest bits, the
    last byte zero-padded. Signed values keep their two's-complement low bits."""
    per_byte = 8 // bits
    low = arr.reshape(-1).astype(np.int64) & ((1 << bits) - 1)
    pad = (-low.size) % per_byte
    low = np.concatenate([low, np.zeros(pad, np.int64)]).reshape(-1, per_byte)
    shifts = np.arange(per_byte, dtype=np.int64) * bits
    return (low << shifts).sum(axis=1).astype(np.uint8).tobytes()


def _attr(name: str, value, target: int, domains: set[str]):
    if isinstance(value, Graph):
        return helper.make_attribute(name, _graph_proto(value, target, domains, top=False))
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(g, Graph) for g in value):
            return helper.make_attribute(
                name, [_graph_proto(g, target, domains, top=False) for g in value])
        if value and all(isinstance(x, np.ndarray) for x in value):
            return helper.make_attribute(name, [numpy_helper.from_array(x) for x in value])
        value = [x.item() if isinstance(x, np.generic) else x for x in value]
        if not value:
            return None  # an empty list has no type in ONNX; the default applies
        if any(isinstance(x, float) for x in value):
            value = [float(x) for x in value]
        return helper.make_attribute(name, value)
    return helper.make_attribute(name, value)


def _graph_proto(graph: Graph, target: int, domains: set[str], top: bool) -> onnx.GraphProto:
    nodes: list[onnx.NodeProto] = []
    initializers: list[TensorProto] = []
    read = {v.name for n in graph.nodes for v in n.inputs if v is not None}
    read.update(name for n in graph.nodes for g in n.subgraphs() for name in g.outer_inputs)
    output_names = {v.name for v in graph.outputs}
    for name, v in graph.constants.items():
        if v.const is None:
            continue
        if name in output_names:
            nodes.append(helper.make_node("Constant", [], [name],
                                          value=_tensor(name, v.const, v.dtype)))
        elif name in read:
            initializers.append(_tensor(name, v.const, v.dtype))
    typed = []  # custom-domain outputs: ONNX shape inference cannot know their types
    for n in graph.nodes:
        nodes.extend(_node_protos(graph, n, target, domains))
        if n.domain not in ("", "edgert", _ML):
            typed.extend(v for v in n.outputs if v.dtype and v.name not in output_names
                         and not v.meta.get("omitted"))
    return helper.make_graph(
        nodes,
        graph.name or "main",
        [_value_info(v) for v in graph.inputs],
        [_value_info(v) for v in graph.outputs],
        initializer=initializers,
        value_info=[_value_info(v) for v in typed],
    )


def _node_protos(graph: Graph, n: Node, target: int, domains: set[str]) -> list[onnx.NodeProto]:
    if n.domain not in ("", "edgert", _ML) and n.domain not in graph.opset:
        raise EdgeRTError(f"{n.op_type} '{n.name}': domain '{n.domain}' cannot be written to "
                          "ONNX (the graph declares no opset for it)")
    if n.domain:
        domains.add(n.domain)
    ins = ["" if v is None else v.name for v in n.inputs]
    # Control flow: the importer appends the outer values its bodies read as trailing inputs
    # (named by ``edgert_outer_inputs``); ONNX reads them by name from the enclosing scope.
    n_outer = len(n.attrs.get("edgert_outer_inputs") or ())
    if n_outer:
        ins = ins[: len(ins) - n_outer]
    outs = ["" if v.meta.get("omitted") else v.name for v in n.outputs]
    attrs = {}
    for k, val in n.attrs.items():
        # edgert_*_type: the coded dtypes the importer tells Cast/Q/DQ kernels (re-derived from
        # the value types on import); not ONNX attributes
        if k in ("edgert_outer_inputs", "edgert_from_type", "edgert_to_type"):
            continue
        a = _attr(k, val, target, domains)
        if a is not None:
            attrs[k] = a
    if (n.domain == "" and n.op_type in _SOFTMAX_FAMILY and n.version and n.version < 13
            and target >= 13):
        return _old_softmax(n, ins, outs)
    node = helper.make_node(n.op_type, ins, outs, name=n.name or None, domain=n.domain or None)
    node.attribute.extend(attrs.values())
    return [node]


def _old_softmax(n: Node, ins: list[str], outs: list[str]) -> list[onnx.NodeProto]:
    """A pre-13 Softmax-family node in the opset-13 form (see the module docstring)."""
    x = n.inputs[0]
    axis = int(n.attrs.get("axis", 1))
    rank = x.rank if x is not None else None
    if rank is not None and (axis == -1 or axis == rank - 1):
        return [helper.make_node(n.op_type, ins, outs, name=n.name or None, axis=-1)]
    base = (n.name or outs[0]) + "_v13"
    flat, soft, shape = base + "_flat", base + "_2d", base + "_shape"
    return [
        helper.make_node("Flatten", [ins[0]], [flat], axis=axis),
        helper.make_node(n.op_type, [flat], [soft], axis=-1, name=n.name or None),
        helper.make_node("Shape", [ins[0]], [shape]),
        helper.make_node("Reshape", [soft, shape], outs),
    ]
