"""Small graph queries shared by the passes.

The passes never rename a value that the outside world can see: a graph input or output, or a
name a control-flow body reads from the enclosing scope (``Graph.outer_inputs`` of a body). Such
values are *pinned*; :func:`pinned_names` collects them once per pass run.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgert.ir import Graph, Node, Value

# Ops whose result is not a function of their inputs: never folded, deduplicated or removed.
NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
     "Bernoulli"}
)


def body_reads(graph: Graph) -> set[str]:
    """Names of values of ``graph`` that a control-flow body (at any depth) reads by name."""
    names: set[str] = set()
    stack = [g for n in graph.nodes for g in n.subgraphs()]
    while stack:
        g = stack.pop()
        names.update(g.outer_inputs)
        stack.extend(sg for n in g.nodes for sg in n.subgraphs())
    return names


def pinned_names(graph: Graph) -> set[str]:
    """Names a pass must keep: graph inputs and outputs, and names read by bodies."""
    names = body_reads(graph)
    names.update(v.name for v in graph.inputs)
    names.update(v.name for v in graph.outputs)
    return names


def is_graph_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def single_use(graph: Graph, v: Value, pinned: set[str]) -> bool:
    """True when ``v`` is read by exactly one node and nothing else (so it may disappear)."""
    return len(v.consumers) == 1 and v.name not in pinned and not is_graph_output(graph, v)


def only_consumer(v: Value) -> Node | None:
    return v.consumers[0] if len(v.consumers) == 1 else None


def const(v: Value | None) -> np.ndarray | None:
    return None if v is None else v.const


def scalar(v: Value | None) -> float | None:
    """The value of a constant holding exactly one element, else None."""
    c = const(v)
    if c is None or c.size != 1:
        return None
    return float(c.reshape(-1)[0])


def bypass(graph: Graph, node: Node, out: Value, src: Value, pinned: set[str]) -> bool:
    """Remove ``node`` whose output ``out`` equals ``src``; keep ``out``'s name if it is pinned.

    When ``out`` is a graph output (or read by a body) its name must survive: then ``src``'s
    producer is made to write ``out`` directly, which is only possible when ``src`` is an
    unpinned output of another node. Returns False (graph untouched) when neither works.
    """
    if out.name not in pinned:
        graph.replace_all_uses(out, src)
        _drop(graph, node)
        return True
    prod = src.producer
    if prod is None or src.name in pinned or (src.dtype and out.dtype and src.dtype != out.dtype):
        return False
    # src's producer now writes `out`; everything that read src reads out.
    graph.remove_node(node)
    k = prod.outputs.index(src)
    prod.outputs[k] = out
    out.producer = prod
    src.producer = None
    graph.replace_all_uses(src, out)
    if out.shape is None and src.shape is not None:
        out.shape = list(src.shape)
    return True


def _drop(graph: Graph, node: Node) -> None:
    graph.remove_node(node)


def new_const(graph: Graph, base: str, data: np.ndarray) -> Value:
    return graph.add_constant(base, np.require(data, requirements="C"))


def attrs_key(attrs: dict) -> tuple | None:
    """A hashable form of plain attributes, or None when one cannot be compared (a subgraph)."""
    items = []
    for k in sorted(attrs):
        v = attrs[k]
        if isinstance(v, np.ndarray):
            items.append((k, "nd", v.dtype.str, v.shape, v.tobytes()))
        elif isinstance(v, (list, tuple)):
            # (lists are homogeneous: tensors, graphs or scalars; a tree ensemble's hold 10^5)
            if v and isinstance(v[0], (np.ndarray, Graph)):
                return None
            items.append((k, tuple(v)))
        elif isinstance(v, Graph):
            return None
        else:
            items.append((k, v))
    return tuple(items)


def all_nodes_of(graphs: Iterable[Graph]) -> Iterable[Node]:
    for g in graphs:
        yield from g.nodes
