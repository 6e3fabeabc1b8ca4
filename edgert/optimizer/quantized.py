"""Fusions of integer-arithmetic chains that exporters and quantizers write out op by op.

:func:`fuse_integer_matmul`: onnxruntime's ``quantize_dynamic`` (the form hub models ship as
``model_quantized.onnx``) writes each quantized MatMul as ::

    DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q, x_zp, w_zp) -> Cast(float)
        -> Mul(., Mul(x_scale, w_scale)) [-> Add(., bias)]

The int32 result then makes two more passes over memory as int32 and float. Fused, the integer
GEMM writes ``float32(acc) * (x_scale * w_scale) + bias`` straight from its tiles
(``edgert.MatMulIntegerToFloat``, com.microsoft's op of that name with ``W`` constant), rounding
each step as the unfused ops do, so the result is bit for bit the same.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value
from edgert.optimizer._util import pinned_names, single_use

_INT8 = (dtypes.INT8, dtypes.UINT8)


def _only_reader(graph: Graph, v: Value, pinned: set[str], op: str) -> Node | None:
    if not single_use(graph, v, pinned):
        return None
    c = v.consumers[0]
    return c if c.op_type == op and c.domain == "" else None


def _other(node: Node, v: Value) -> Value | None:
    """The other input of a two-input node that reads ``v`` once."""
    if len(node.inputs) != 2 or node.inputs.count(v) != 1:
        return None
    return node.inputs[1] if node.inputs[0] is v else node.inputs[0]


def _per_column(v: Value | None, n: int) -> bool:
    """A float32 constant of one value or ``n`` along the last axis only."""
    if v is None or v.const is None or v.const.dtype != np.float32:
        return False
    c = v.const
    return c.size == 1 or (c.size == n and c.shape[-1] == n and c.ndim <= 2)


def _scalar_float(v: Value | None) -> bool:
    if v is None or v.dtype != dtypes.FLOAT:
        return False
    shape = v.static_shape()
    return shape is not None and int(np.prod(shape, dtype=np.int64)) == 1 and len(shape) <= 1


def _scales(graph: Graph, s: Value, n: int) -> tuple[Value, Value] | None:
    """``(a_scale, b_scale)`` whose product is ``s``: a scalar float32 and a per-column constant
    (``s`` a product of the two), or 1 and ``s`` when ``s`` is such a constant itself."""
    if _per_column(s, n):  # (1 * s is s exactly)
        return graph.add_constant("one", np.array(1.0, np.float32)), s
    p = s.producer
    if p is None or p.op_type != "Mul" or p.domain != "" or len(p.inputs) != 2:
        return None
    x, y = p.inputs
    if x is None or y is None:
        return None
    if _per_column(y, n) and _scalar_float(x):
        return x, y
    if _per_column(x, n) and _scalar_float(y):
        return y, x
    return None


def fuse_integer_matmul(graph: Graph, ctx) -> bool:
    """``Add(Mul(Cast(MatMulInteger(A, W, za, zw)), S), bias)`` →
    ``edgert.MatMulIntegerToFloat(A, W, a_scale, w_scale, za, zw, bias)`` (the Add optional).

    ``W`` is a constant 2-D int8/uint8 matrix with a constant zero point of one value or one per
    column; ``S`` is ``a_scale * w_scale`` (a float32 scalar times a per-column constant, the
    ``quantize_dynamic`` form) or itself such a constant; ``bias`` a float32 constant of one
    value per column. Each intermediate must have no other reader. Runs only with
    ``allow_fused``.
    """
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    changed = False
    for mm in list(graph.nodes):
        if mm.op_type != "MatMulInteger" or mm.domain != "" or len(mm.inputs) < 2:
            continue
        a, w = mm.inputs[0], mm.inputs[1]
        za = mm.input(2)
        zw = mm.input(3)
        if a is None or w is None or w.const is None or w.const.ndim != 2 \
                or w.const.dtype not in (np.int8, np.uint8) or a.dtype not in _INT8:
            continue
        n = w.const.shape[1]
        if zw is not None and (zw.const is None or zw.const.size not in (1, n)):
            continue
        cast = _only_reader(graph, mm.outputs[0], pinned, "Cast")
        if cast is None or int(cast.attrs.get("to", 0)) != dtypes.FLOAT:
            continue
        mul = _only_reader(graph, cast.outputs[0], pinned, "Mul")
        s = None if mul is None else _other(mul, cast.outputs[0])
        scales = None if s is None else _scales(graph, s, n)
        if scales is None:
            continue
        last = mul
        bias = None
        add = _only_reader(graph, mul.outputs[0], pinned, "Add")
        b = None if add is None else _other(add, mul.outputs[0])
        if b is not None and b.const is not None and b.const.dtype == np.float32 \
                and b.const.size == n and b.const.shape[-1] == n:
            last, bias = add, b
        out = last.outputs[0]
        for node in (last, mul, cast) if last is not mul else (mul, cast):
            graph.remove_node(node)
        for k, v in enumerate((scales[0], scales[1], za, zw, bias)):
            if len(mm.inputs) <= 2 + k:
                mm.inputs.append(None)
            graph.set_input(mm, 2 + k, v)
        mid = mm.outputs[0]
        mid.producer = None
        mm.outputs[0] = out
        out.producer = mm
        mm.op_type = "MatMulIntegerToFloat"
        mm.domain = "edgert"
        graph.opset.setdefault("edgert", 1)
        ctx.count(removed=2 if last is mul else 3, fused=1)
        changed = True
    return changed
