"""Level-1 clean-up passes: dead code, no-op nodes, common subexpressions, duplicate constants.

Each pass is ``pass(graph, ctx) -> bool`` (True when it changed the graph).
"""

from __future__ import annotations

import numpy as np

from edgert.ir import Graph, Node
from edgert.optimizer._util import (
    NONDETERMINISTIC,
    attrs_key,
    body_reads,
    bypass,
    pinned_names,
)


def eliminate_dead_nodes(graph: Graph, ctx) -> bool:
    """Remove nodes none of whose outputs is read, and constants nothing reads.

    Cases: a node is dead when no output has a consumer, is a graph output, or is read by name
    from a control-flow body; removal runs backwards so whole dead chains go in one sweep.
    Non-deterministic ops are removed too (an unread random tensor has no effect). Constants
    (initializers) that no node, graph output or body reads are dropped.
    """
    keep = pinned_names(graph)
    changed = False
    for node in reversed(list(graph.nodes)):
        if any(v.consumers or v.name in keep for v in node.outputs):
            continue
        graph.remove_node(node)
        ctx.count(removed=1)
        changed = True
    read = {v.name for n in graph.nodes for v in n.inputs if v is not None}
    read.update(keep)
    for name in [k for k in graph.constants if k not in read]:
        del graph.constants[name]
        changed = True
    return changed


def eliminate_noop(graph: Graph, ctx) -> bool:
    """Remove nodes that return their input unchanged.

    Cases: Identity; Dropout at inference (its mask output unread); Cast to the input's own
    dtype; Reshape / Flatten / Squeeze / Unsqueeze / Expand whose static output shape equals the
    static input shape; Transpose with the identity permutation. A node whose output is a graph
    output keeps that output name (its input's producer writes it instead), or stays when that
    is impossible (the input is a graph input or a constant).
    """
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if node.domain or not node.outputs or not node.inputs or node.inputs[0] is None:
            continue
        x, y = node.inputs[0], node.outputs[0]
        op = node.op_type
        same = False
        if op == "Identity":
            same = True
        elif op == "Dropout":
            same = len(node.outputs) < 2 or not (
                node.outputs[1].consumers or node.outputs[1].name in pinned
            )
        elif op == "Cast":
            same = bool(x.dtype) and node.attrs.get("to") == x.dtype and (
                node.attrs.get("saturate", 1) == 1
            )
        elif op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"):
            xs, ys = x.static_shape(), y.static_shape()
            same = xs is not None and xs == ys
        elif op == "Transpose":
            perm = node.attrs.get("perm")
            same = perm is not None and list(perm) == list(range(len(perm)))
        if not same or (x.dtype and y.dtype and x.dtype != y.dtype):
            continue
        if bypass(graph, node, y, x, pinned):
            ctx.count(removed=1)
            changed = True
            pinned = pinned_names(graph)
    return changed


def eliminate_common_subexpressions(graph: Graph, ctx) -> bool:
    """Merge nodes that compute the same thing: same op, domain, version, inputs, attributes.

    Declines: nodes with subgraphs, non-deterministic ops, and a duplicate whose outputs are
    pinned (graph outputs keep their own names; a body reading one by name would break).
    """
    pinned = pinned_names(graph)
    seen: dict[tuple, Node] = {}
    changed = False
    for node in list(graph.nodes):
        if node.op_type in NONDETERMINISTIC or node.subgraphs():
            continue
        akey = attrs_key(node.attrs)
        if akey is None:
            continue
        key = (node.op_type, node.domain, node.version, len(node.outputs),
               tuple(id(v) if v is not None else 0 for v in node.inputs), akey)
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        if any(v.name in pinned for v in node.outputs):
            continue
        for old, new in zip(node.outputs, first.outputs):
            graph.replace_all_uses(old, new)
        graph.remove_node(node)
        ctx.count(removed=1)
        changed = True
    return changed


def share_duplicate_constants(graph: Graph, ctx) -> bool:
    """Make nodes read one constant where several hold identical data (dtype, shape, bytes).

    Candidates are bucketed by dtype, shape and a small sample of their elements, and only
    then compared in full: hashing every weight of a 100 MB model each round cost a second.
    Declines for pinned constants (graph outputs, names read by bodies).
    """
    pinned = body_reads(graph) | {v.name for v in graph.outputs}
    buckets: dict[tuple, list] = {}
    changed = False
    for name, v in list(graph.constants.items()):
        if name in pinned or v.const is None or not v.consumers:
            continue
        arr = v.const
        flat = arr.reshape(-1)
        sample = flat[:8].tobytes() + flat[-8:].tobytes() if flat.size else b""
        key = (arr.dtype.str, arr.shape, v.dtype, sample)
        same = None
        for other in buckets.setdefault(key, []):
            if np.array_equal(other.const, arr) and (
                arr.dtype.kind != "f" or np.array_equal(np.signbit(other.const), np.signbit(arr))
            ):
                same = other
                break
        if same is None:
            buckets[key].append(v)
            continue
        graph.replace_all_uses(v, same)
        del graph.constants[name]
        changed = True
    return changed
