"""Export the int8 result as a QDQ ONNX model (QuantizeLinear/DequantizeLinear pairs).

The float graph is annotated with exactly the parameters of the int8 `.edgert` model, so that
onnxruntime (or any ONNX int8 engine) runs the same quantization:

* every activation that the int8 model holds as int8 gets ``QuantizeLinear -> DequantizeLinear``
  right after its producer (a Relu/Clip folded into a Conv in the int8 model is kept after the
  Conv here, and its output carries the pair);
* the weights of quantized Conv/ConvTranspose/Gemm/MatMul become int8 initializers behind a
  per-axis ``DequantizeLinear`` (axis 0 for Conv and transposed Gemm weights, 1 for ``[K, N]``
  and ConvTranspose weights),
  biases int32 with scale ``x_scale * w_scale``; Gemm's ``alpha``/``beta``, already folded into
  those constants, become 1;
* the model is written at opset 13 or newer, where per-axis DequantizeLinear exists, through
  :func:`edgert.importer.export_onnx` (which also rewrites old-opset forms, so an opset-9 source
  gives a valid model).
"""

from __future__ import annotations

import os

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value

QDQ_OPSET = 13


def _const(g: Graph, name: str, data: np.ndarray) -> Value:
    return g.add_constant(name, np.asarray(data))


def _dq(g: Graph, anchor: Node, q: Value, scale: np.ndarray, axis: int, zp: np.ndarray | None,
        base: str) -> Value:
    out = g.new_value(base + "_dq", dtypes.FLOAT, q.shape)
    if scale.ndim == 1 and scale.size == 1:  # per tensor: scalar parameters
        scale = scale.reshape(())
        zp = None if zp is None else np.asarray(zp).reshape(())
    ins = [q, _const(g, base + "_scale", scale.astype(np.float32))]
    if zp is not None:
        ins.append(_const(g, base + "_zp", zp))
    attrs = {"axis": axis} if scale.ndim == 1 else {}
    g.insert_before(anchor, "DequantizeLinear", ins, [out], attrs,
                    name=g.unique_name(base + "_DequantizeLinear"), version=QDQ_OPSET)
    return out


def annotate_qdq(graph: Graph, result) -> Graph:
    """Insert the QDQ pairs and int8 weights into ``graph`` (modified in place) and return it."""
    qnodes = {n.name: n for n in result.graph.nodes
              if n.domain == "edgert" and n.op_type in ("QConv", "QConvTranspose", "QGemm")
              and n.name}
    # Weights and biases.
    for node in list(graph.nodes):
        qn = qnodes.get(node.name)
        if qn is None or node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        wq = qn.inputs[1]
        scales = np.asarray(wq.quant[0], np.float32)
        q = wq.const
        axis = int(wq.quant[2])  # 1 for ConvTranspose's (C, M/group, k...) weights
        if node.op_type == "MatMul" or (node.op_type == "Gemm"
                                        and not node.attrs.get("transB", 0)):
            q, axis = np.ascontiguousarray(q.T), 1
        wv = _const(graph, node.input(1).name + "_int8", q)
        graph.set_input(node, 1, _dq(graph, node, wv, scales, axis,
                                     np.zeros(scales.size, np.int8), wv.name))
        if len(qn.inputs) > 2 and qn.inputs[2] is not None:
            bq = qn.inputs[2]
            bv = _const(graph, bq.name + "_int32", bq.const)
            # The bias scale is x_scale * w_scale in float32, as the quantizer computed it.
            b_scales = (np.float32(qn.attrs["x_scale"]) * np.broadcast_to(
                scales, (np.asarray(bq.const).shape[0],))).astype(np.float32)
            deq = _dq(graph, node, bv, b_scales, 0, None, bv.name)
            if len(node.inputs) > 2:
                graph.set_input(node, 2, deq)
            else:
                node.inputs.append(deq)
                deq.consumers.append(node)
        if node.op_type == "Gemm":
            node.attrs["alpha"] = 1.0
            node.attrs["beta"] = 1.0
    # Activations.
    by_name = {v.name: v for v in graph.values()}
    int8_nodes = {n.name: n for n in result.graph.nodes if n.name}
    int8_outputs = {v.name: v for v in result.graph.outputs}

    def unquantized(v: Value | None) -> bool:
        """``v`` (a float value of the int8 graph) is a float op's output or a model input, not
        an edgert.Dequantize of the int8 form."""
        return v is not None and v.dtype == dtypes.FLOAT and (
            v.producer is None or v.producer.op_type != "Dequantize"
            or v.producer.domain != "edgert")

    for name, qv in result.qvalues.items():
        v = by_name.get(name)
        if v is None or v.const is not None:
            continue
        scale = np.float32(qv.quant[0][0])
        zp = np.int8(qv.quant[1][0])
        # A float op that the int8 model runs on the unquantized value (the float output of
        # another float op, or a model input) keeps reading it; the others read the pair.
        readers = [r for r in v.consumers if not any(
            x.name == name and unquantized(x) for x in getattr(int8_nodes.get(r.name), "inputs",
                                                                 []) if x is not None)]
        readers = list(dict.fromkeys(readers))
        is_output = v in graph.outputs and not unquantized(int8_outputs.get(name))
        if not readers and not is_output:
            continue
        anchor = readers[0] if readers else None
        if anchor is not None:
            anchor = min(readers, key=graph.nodes.index)
        qval = graph.new_value(name + "_QuantizeLinear", dtypes.INT8, v.shape)
        dq = graph.new_value(name + "_DequantizeLinear", dtypes.FLOAT, v.shape)
        s, z = _const(graph, name + "_qscale", scale), _const(graph, name + "_qzp", zp)
        qn = Node("QuantizeLinear", [v, s, z], [qval], name=graph.unique_name(name + "_Q"),
                  version=QDQ_OPSET)
        dn = Node("DequantizeLinear", [qval, s, z], [dq], name=graph.unique_name(name + "_DQ"),
                  version=QDQ_OPSET)
        index = graph.nodes.index(anchor) if anchor is not None else len(graph.nodes)
        for k, n in enumerate((qn, dn)):
            graph.add_node(n.op_type, n.inputs, n.outputs, {}, name=n.name, version=n.version,
                           index=index + k)
        for r in readers:
            for i, x in enumerate(r.inputs):
                if x is v:
                    graph.set_input(r, i, dq)
        if is_output:
            # Keep the model's output name: the float producer's value is renamed instead.
            old = v.name
            v.name = graph.unique_name(old + "_float")
            dq.name = old
            graph.outputs = [dq if o is v else o for o in graph.outputs]
    graph.toposort()
    return graph


def export_qdq(graph: Graph, result, output: str | os.PathLike | None = None) -> bytes:
    """Annotate ``graph`` (modified) and serialize it as a QDQ ONNX model."""
    import onnx

    from edgert.importer import export_onnx

    annotate_qdq(graph, result)
    versions = [int(n.version or 0) for n in graph.nodes if n.domain == ""]
    opset = max([QDQ_OPSET, int(graph.opset.get("", 0) or 0)] + versions)
    model = export_onnx(graph, opset=opset)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if output is not None:
        with open(output, "wb") as f:
            f.write(data)
    return data
