"""Level-2 data-movement passes: Transpose and Reshape chains.

* ``Transpose(Transpose(x, p1), p2)`` = ``Transpose(x, [p1[i] for i in p2])``; an identity result
  is removed by :func:`edgert.optimizer.cleanup.eliminate_noop`.
* ``Reshape(R(x), s)`` where ``R`` is Reshape / Flatten / Squeeze / Unsqueeze = ``Reshape(x, s)``
  when ``s`` is a constant without 0 entries (a 0 copies a dim of the *intermediate*), or when
  the final shape is fully static (then ``s`` is that shape); the second node may also be a
  Flatten / Squeeze / Unsqueeze when its output shape is static.

Declines when the intermediate has other readers, is a graph output, or is read by a body.
"""

from __future__ import annotations

import numpy as np

from edgert.ir import Graph
from edgert.optimizer._util import const, new_const, pinned_names, single_use

_SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def merge_transposes(graph: Graph, ctx) -> bool:
    """Compose two consecutive Transposes into one (see the module docstring)."""
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if node.op_type != "Transpose" or node.domain != "" or node not in graph.nodes:
            continue
        x = node.inputs[0]
        first = x.producer if x is not None else None
        if first is None or first.op_type != "Transpose" or first.domain != "":
            continue
        if not single_use(graph, x, pinned):
            continue
        p1, p2 = first.attrs.get("perm"), node.attrs.get("perm")
        if p1 is None or p2 is None or len(p1) != len(p2):
            continue
        node.attrs["perm"] = [int(p1[i]) for i in p2]
        graph.set_input(node, 0, first.inputs[0])
        graph.remove_node(first)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def merge_reshapes(graph: Graph, ctx) -> bool:
    """Collapse chains of Reshape / Flatten / Squeeze / Unsqueeze (see the module docstring)."""
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if node.op_type not in _SHAPE_OPS or node.domain != "" or node not in graph.nodes:
            continue
        x = node.inputs[0]
        first = x.producer if x is not None else None
        if first is None or first.op_type not in _SHAPE_OPS or first.domain != "":
            continue
        if not single_use(graph, x, pinned):
            continue
        y = node.outputs[0]
        target = None
        if y.static_shape() is not None and 0 not in y.static_shape():
            # (a 0 in Reshape's shape means "copy this dim", so empty shapes are left alone)
            target = np.array(y.static_shape(), dtype=np.int64)
        elif node.op_type == "Reshape" and not node.attrs.get("allowzero", 0):
            s = const(node.input(1))
            if s is not None and s.ndim == 1 and not np.any(s == 0):
                target = s.astype(np.int64)
        if target is None:
            continue
        src = first.inputs[0]
        graph.remove_node(node)
        reshape = graph.add_node("Reshape", [src, new_const(graph, "shape_merged", target)], [y],
                                 name=node.name, version=max(node.version, 14),
                                 index=graph.nodes.index(first) + 1)
        del reshape
        graph.remove_node(first)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed
