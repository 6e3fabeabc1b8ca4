"""Level-1 constant folding, with the runtime's own CPU kernels as the evaluator.

A node is folded when every input it has is a constant, or when the kernel's ``prepare`` can
tell its outputs from input *shapes* alone (Shape, Size on a static shape) — which is what
collapses the Shape→Gather→Unsqueeze→Concat→Reshape chains exporters write. Evaluation goes
through the kernel contract exactly as the interpreter runs it (registry lookup, ``prepare``
with :class:`TensorInfo`, ``invoke`` into output arrays), so a folded value is what the runtime
would have computed.

Declines (graph left alone): nodes with subgraphs, non-deterministic ops, ops with no CPU
kernel, a kernel that raises (the runtime will report it with the model's own context), and
outputs that would grow the model: more than ``FOLD_MAX_ELEMENTS`` elements and larger than
all the node's constant inputs together (Expand / ConstantOfShape / Tile of a small constant
stay computed).
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import EdgeRTError
from edgert.ir import Graph, Node, Value
from edgert.optimizer._util import NONDETERMINISTIC

FOLD_MAX_ELEMENTS = 4096


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
        in_size = sum(int(v.const.size) for v in node.inputs if v is not None)
        if any(o.shape is None for o in outs):
            results = kernel.invoke([None if i is None else i.value for i in infos],
                                    [None] * len(outs))
        else:
            total = sum(o.size for o in outs)
            if total > FOLD_MAX_ELEMENTS and total > in_size:
                return None
            arrays = [np.empty(o.shape, o.dtype) for o in outs]
            results = kernel.invoke([None if i is None else i.value for i in infos], arrays)
            if results is None:
                results = arrays
        results = [np.asarray(r) for r in results]
        if sum(r.size for r in results) > max(FOLD_MAX_ELEMENTS, in_size):
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
                or any(v.meta.get("omitted") for v in node.outputs)):
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
