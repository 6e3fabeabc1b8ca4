"""Level-1 constant folding, with the runtime's own CPU kernels as the evaluator.

A node is folded when every input it has is a constant, or when the kernel's ``prepare`` can
tell its outputs from input *shapes* alone (Shape, Size on a static shape) — which is what
collapses the Shape→Gather→Unsqueeze→Concat→Reshape chains exporters write. Evaluation goes
through the kernel contract exactly as the interpreter runs it (registry lookup, ``prepare``
with :class:`TensorInfo`, ``invoke`` into output arrays), so a folded value is what the runtime
would have computed.

Declines (graph left alone): nodes with subgraphs, non-deterministic ops, ops with no CPU
kernel, a kernel that raises (the runtime will report it with the model's own context), and
outputs that would grow the model: more than ``FOLD_MAX_BYTES`` bytes and more bytes than all
the node's constant inputs together. Sizes are compared in bytes, as the constants are stored
(int4/uint4 one value per byte, see :mod:`edgert.dtypes`): Expand / ConstantOfShape / Tile of
a small constant stay computed, and so does the DequantizeLinear of a large int8 / uint4
weight (QDQ models, MatMulNBits), which would otherwise become a float32 constant 4x its size;
the runtime dequantizes such a weight when it loads the model (DequantizeLinear is
``foldable``), so only the file keeps the narrow type.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import EdgeRTError
from edgert.ir import Graph, Node, Value
from edgert.optimizer._util import NONDETERMINISTIC

# Outputs up to this size fold even when they are larger than the node's inputs (4096 float32 /
# int32 elements: shape arithmetic, small Range / Expand tables).
FOLD_MAX_BYTES = 4096 * 4


def _info(v: Value | None, need_value: bool):
    from edgert.runtime.registry import TensorInfo

    if v is None:
        return None
    if v.const is not None:
        arr = v.const
        return TensorInfo(tuple(int(d) for d in arr.shape), arr.dtype, arr)
    if need_value:
        raise _NotFoldable
    shape = v.static_shape()
    if shape is None or not v.dtype:
        raise _NotFoldable
    return TensorInfo(shape, dtypes.to_numpy(v.dtype), None)


class _NotFoldable(Exception):
    pass


def _evaluate(node: Node, all_const: bool) -> list[np.ndarray] | None:
    """Outputs of ``node`` computed by its CPU kernel, or None when it cannot be folded."""
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext

    cls = registry().lookup(node.op_type, node.domain, node.version)
    if cls is None:
        return None
    try:
        infos = [_info(v, all_const) for v in node.inputs]
    except _NotFoldable:
        return None
    kernel = cls(OpContext(node.op_type, node.name, dict(node.attrs), node.domain,
                           node.version, 1))
    try:
        outs = kernel.prepare(infos)
        if all(o.value is not None for o in outs):
            return [np.asarray(o.value) for o in outs]
        if not all_const:
            return None
        limit = max(FOLD_MAX_BYTES, sum(int(v.const.nbytes) for v in node.inputs
                                        if v is not None))
        if any(o.shape is None for o in outs):
            results = kernel.invoke([None if i is None else i.value for i in infos],
                                    [None] * len(outs))
        else:
            total = sum(o.size * np.dtype(o.dtype).itemsize for o in outs)
            if total > limit:
                return None
            arrays = [np.empty(o.shape, o.dtype) for o in outs]
            results = kernel.invoke([None if i is None else i.value for i in infos], arrays)
            if results is None:
                results = arrays
        results = [np.asarray(r) for r in results]
        if sum(r.nbytes for r in results) > limit:
            return None
        return results
    except (EdgeRTError, ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError):
        return None


def fold_constants(graph: Graph, ctx) -> bool:
    """Replace nodes whose outputs are computable now by constants holding those outputs.

    The output values keep their names (they become constants in place), so graph outputs and
    names read by control-flow bodies survive. Omitted optional outputs are left alone.
    """
    changed = False
    for node in list(graph.nodes):
        if (node.op_type in NONDETERMINISTIC or node.subgraphs() or not node.inputs
                or any(v.meta.get("omitted") for v in node.outputs)
                or any(v.kind != "tensor" for v in node.outputs)):  # sequences: not constants
            continue
        present = [v for v in node.inputs if v is not None]
        all_const = all(v.const is not None for v in present)
        if not all_const and node.op_type not in ("Shape", "Size"):
            continue
        results = _evaluate(node, all_const)
        if results is None or len(results) != len(node.outputs):
            continue
        if any(v.dtype and dtypes.to_numpy(v.dtype) != r.dtype
               for v, r in zip(node.outputs, results)):
            continue  # the kernel disagrees with the declared type: leave it to the runtime
        graph.remove_node(node)
        for v, arr in zip(node.outputs, results):
            arr = np.require(arr, requirements="C")
            v.const = arr
            v.dtype = v.dtype or dtypes.from_numpy(arr.dtype)
            v.shape = list(arr.shape)
            graph.constants[v.name] = v
        ctx.count(removed=1)
        changed = True
    return changed


def _shape_dims(node: Node) -> list | None:
    """The dims a Shape node returns (ints, symbols or None), honouring ``start`` / ``end``."""
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None:
        return None
    r = len(x.shape)
    start = int(node.attrs.get("start", 0))
    end = int(node.attrs.get("end", r))
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return list(x.shape[start:end])


def fold_partial_shapes(graph: Graph, ctx) -> bool:
    """Fold ``Gather`` / ``Slice`` of a ``Shape`` when the dims they pick are known ints.

    Exporters compute reshape targets from ``Shape(x)`` even where only the batch dim is
    symbolic; picking a static dim (``Gather(Shape(x), -1)`` on ``[batch, seq, 48]``) is a
    constant, and the arithmetic after it then folds too. Declines when a picked dim is symbolic
    or unknown, an index is out of range, or the Slice parameters are not constants.
    """
    changed = False
    for node in list(graph.nodes):
        if node.domain or node.op_type not in ("Gather", "Slice") or not node.inputs:
            continue
        src = node.inputs[0]
        shape_node = src.producer if src is not None else None
        if shape_node is None or shape_node.op_type != "Shape" or shape_node.domain:
            continue
        dims = _shape_dims(shape_node)
        if dims is None:
            continue
        picked = _pick(node, dims)
        if picked is None or any(not isinstance(d, int) for d in picked.reshape(-1)):
            continue
        out = node.outputs[0]
        arr = picked.astype(np.int64)
        graph.remove_node(node)
        out.const = arr
        out.dtype = dtypes.INT64
        out.shape = list(arr.shape)
        graph.constants[out.name] = out
        ctx.count(removed=1)
        changed = True
    return changed


def _pick(node: Node, dims: list) -> np.ndarray | None:
    n = len(dims)
    table = np.empty(n, dtype=object)
    table[:] = dims
    if node.op_type == "Gather":
        idx = node.input(1)
        if idx is None or idx.const is None or int(node.attrs.get("axis", 0)) != 0:
            return None
        i = np.asarray(idx.const).astype(np.int64)
        if np.any(i < -n) or np.any(i >= n):
            return None
        flat = [dims[int(k)] for k in np.where(i < 0, i + n, i).reshape(-1)]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(i.shape)
    params = [node.input(k) for k in range(1, 5)]
    if params[0] is None or params[1] is None:
        return None
    if any(p is not None and p.const is None for p in params):
        return None
    starts, ends = (int(np.asarray(p.const).reshape(-1)[0]) for p in params[:2])
    if params[2] is not None and int(np.asarray(params[2].const).reshape(-1)[0]) not in (0, -1):
        return None
    step = 1 if params[3] is None else int(np.asarray(params[3].const).reshape(-1)[0])
    if step == 0 or any(np.asarray(p.const).size != 1 for p in params if p is not None):
        return None
    # Python slicing clamps exactly as ONNX Slice does for one axis.
    return table[slice(starts, ends, step)]
