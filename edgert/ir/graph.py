"""The intermediate representation shared by importer, optimizer, quantizer and writer.

One small graph type serves every stage:

* :class:`Value` — a tensor: name, dtype code, shape (ints, or strings for symbolic dims, or
  ``None`` for an unknown dim / unknown rank), optional constant data and quantization, and the
  node that produces it plus the nodes that consume it. A value's ``kind`` says whether it holds
  a tensor (the usual case) or an ONNX sequence / optional value (see :data:`VALUE_KINDS`).
* :class:`Node` — an operator: op type (ONNX names for ONNX ops, domain ``"edgert"`` for fused or
  lowered ops), inputs (``None`` for an omitted optional input), outputs, attributes as plain
  Python values, and subgraphs (If/Loop/Scan bodies) as attribute values of type :class:`Graph`.
* :class:`Graph` — nodes in topological order, inputs, outputs, and edit methods that keep the
  producer/consumer links right so passes stay short.

Example:
    >>> g = Graph("g")
    >>> x = g.add_input("x", FLOAT, ["N", 4])
    >>> y = g.add_node("Relu", [x]).outputs[0]
    >>> g.outputs.append(y)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edgert import dtypes
from edgert.dtypes import FLOAT  # noqa: F401  (re-exported for convenience)

Dim = int | str | None

# What a value holds (ONNX value types). Sequence and optional values carry the element type of
# the tensors inside them in ``dtype``; their ``shape`` is None. At run time a sequence is a list
# of arrays and an optional is an array, a list, or None when empty.
TENSOR = "tensor"
SEQUENCE = "sequence"  # seq(tensor)
OPTIONAL_TENSOR = "optional_tensor"  # optional(tensor)
OPTIONAL_SEQUENCE = "optional_sequence"  # optional(seq(tensor))
# map(K, V) and seq(map(K, V)) of the ai.onnx.ml operators (DictVectorizer's input, ZipMap's
# output): ``dtype`` is V, ``meta["key_dtype"]`` is K (int64 or string); a dict (a list of dicts)
# at run time.
MAP = "map"
SEQUENCE_MAP = "sequence_map"
VALUE_KINDS = (TENSOR, SEQUENCE, OPTIONAL_TENSOR, OPTIONAL_SEQUENCE, MAP, SEQUENCE_MAP)


class Value:
    """A tensor in the graph.

    Attributes:
        name: unique name within the graph.
        dtype: element type code (:mod:`edgert.dtypes`), 0 when unknown.
        shape: list of dims (int, symbolic str, or None when unknown), or None for unknown rank.
        const: constant data (a NumPy array) or None for a computed value.
        quant: optional quantization ``(scale: np.ndarray, zero_point: np.ndarray, axis: int)``.
        producer: the node that outputs this value (None for inputs and constants).
        consumers: nodes that read this value, one entry per use.
        kind: :data:`TENSOR`, or a sequence / optional kind (one of :data:`VALUE_KINDS`).
    """

    __slots__ = ("name", "dtype", "shape", "const", "quant", "producer", "consumers", "meta",
                 "kind")

    def __init__(
        self,
        name: str,
        dtype: int = 0,
        shape: Sequence[Dim] | None = None,
        const: np.ndarray | None = None,
    ):
        self.name = name
        self.dtype = dtype
        self.shape: list[Dim] | None = list(shape) if shape is not None else None
        self.const = const
        self.quant: tuple[np.ndarray, np.ndarray, int] | None = None
        self.producer: Node | None = None
        self.consumers: list[Node] = []
        self.meta: dict[str, Any] = {}
        self.kind: str = TENSOR
        if const is not None:
            if dtype == 0:
                self.dtype = dtypes.from_numpy(const.dtype)
            if shape is None:
                self.shape = list(const.shape)

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_tensor(self) -> bool:
        """False for sequence and optional values."""
        return self.kind == TENSOR

    def static_shape(self) -> tuple[int, ...] | None:
        """The shape as a tuple of ints, or None if any dim is symbolic or unknown."""
        if self.shape is None or any(not isinstance(d, int) for d in self.shape):
            return None
        return tuple(self.shape)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        kind = "const " if self.is_const else ""
        if self.kind != TENSOR:
            kind += f"{self.kind} "
        return f"Value({kind}{self.name!r}, {dtypes.name(self.dtype)}, {self.shape})"


class Node:
    """An operator. ``attrs`` holds plain Python values; a subgraph is a :class:`Graph` value."""

    __slots__ = ("op_type", "domain", "version", "name", "inputs", "outputs", "attrs")

    def __init__(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        name: str = "",
        domain: str = "",
        version: int = 0,
    ):
        self.op_type = op_type
        self.domain = domain
        self.version = version
        self.name = name
        self.inputs: list[Value | None] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.attrs: dict[str, Any] = dict(attrs or {})

    def input(self, i: int) -> Value | None:
        """Input ``i``, or None when it is omitted or past the end."""
        return self.inputs[i] if i < len(self.inputs) else None

    def subgraphs(self) -> list[Graph]:
        out: list[Graph] = []
        for v in self.attrs.values():
            if isinstance(v, Graph):
                out.append(v)
            elif isinstance(v, list) and v and all(isinstance(g, Graph) for g in v):
                out.extend(v)
        return out

    def __repr__(self) -> str:
        ins = ", ".join(v.name if v is not None else "<none>" for v in self.inputs)
        outs = ", ".join(v.name for v in self.outputs)
        dom = f"{self.domain}." if self.domain else ""
        return f"Node({dom}{self.op_type} {self.name!r}: [{ins}] -> [{outs}])"


class Graph:
    """A computation graph; nodes are kept in topological order.

    Edits go through the methods below (:meth:`add_node`, :meth:`remove_node`,
    :meth:`replace_all_uses`, :meth:`insert_before`) which maintain producer/consumer links.
    """

    def __init__(self, name: str = "main"):
        self.name = name
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        # Constants (initializers) by name, including those only used by subgraphs.
        self.constants: dict[str, Value] = {}
        # Names of enclosing-scope values a control-flow body reads.
        self.outer_inputs: list[str] = []
        self.opset: dict[str, int] = {"": 0}
        self.metadata: dict[str, str] = {}
        self._names: set[str] = set()
        self._counter = itertools.count()

    # ----- values -------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A value or node name not used yet in this graph, derived from ``base``."""
        name = base
        while name in self._names:
            name = f"{base}_{next(self._counter)}"
        self._names.add(name)
        return name

    def add_input(self, name: str, dtype: int, shape: Sequence[Dim] | None) -> Value:
        v = Value(self.unique_name(name), dtype, shape)
        self.inputs.append(v)
        return v

    def add_constant(self, name: str, data: np.ndarray) -> Value:
        v = Value(self.unique_name(name), const=np.asarray(data))
        self.constants[v.name] = v
        return v

    def new_value(self, name: str, dtype: int = 0, shape: Sequence[Dim] | None = None) -> Value:
        return Value(self.unique_name(name), dtype, shape)

    # ----- nodes --------------------------------------------------------------------------------
    def add_node(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value] | int = 1,
        attrs: dict[str, Any] | None = None,
        name: str = "",
        domain: str = "",
        version: int = 0,
        index: int | None = None,
    ) -> Node:
        """Append (or insert at ``index``) a node; ``outputs`` may be a count of fresh values."""
        if isinstance(outputs, int):
            base = name or op_type.lower()
            outputs = [self.new_value(f"{base}_out{i}") for i in range(outputs)]
        node = Node(op_type, inputs, outputs, attrs, name=name, domain=domain, version=version)
        if node.name:
            self._names.add(node.name)
        for v in node.inputs:
            if v is not None:
                v.consumers.append(node)
        for v in node.outputs:
            v.producer = node
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    def insert_before(
        self, anchor: Node, op_type: str, inputs, outputs=1, attrs=None, **kw
    ) -> Node:
        return self.add_node(op_type, inputs, outputs, attrs, index=self.nodes.index(anchor), **kw)

    def remove_node(self, node: Node) -> None:
        """Remove ``node``; its outputs must have no remaining consumers or be rewired first."""
        for v in node.inputs:
            if v is not None:
                v.consumers.remove(node)
        for v in node.outputs:
            if v.producer is node:
                v.producer = None
        self.nodes.remove(node)

    def set_input(self, node: Node, i: int, value: Value | None) -> None:
        old = node.inputs[i]
        if old is not None:
            old.consumers.remove(node)
        node.inputs[i] = value
        if value is not None:
            value.consumers.append(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new`` instead."""
        for node in list(old.consumers):
            for i, v in enumerate(node.inputs):
                if v is old:
                    self.set_input(node, i, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    # ----- queries ------------------------------------------------------------------------------
    def values(self) -> Iterable[Value]:
        """Every value once: inputs, constants, then node outputs in order."""
        seen: set[int] = set()
        for v in itertools.chain(
            self.inputs,
            self.constants.values(),
            (x for n in self.nodes for x in n.inputs if x is not None),
            (x for n in self.nodes for x in n.outputs),
        ):
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def toposort(self) -> None:
        """Reorder nodes topologically (Kahn's algorithm, iterative, stable w.r.t. current order).

        Raises:
            ValueError: the graph has a cycle.
        """
        index = {id(n): i for i, n in enumerate(self.nodes)}
        pending = {id(n): 0 for n in self.nodes}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None and v.producer is not None and id(v.producer) in index:
                    pending[id(n)] += 1
        import heapq

        ready = [(index[id(n)], n) for n in self.nodes if pending[id(n)] == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for out in n.outputs:
                for c in out.consumers:
                    if id(c) in pending:
                        pending[id(c)] -= 1
                        if pending[id(c)] == 0:
                            heapq.heappush(ready, (index[id(c)], c))
        if len(order) != len(self.nodes):
            raise ValueError(f"graph {self.name!r} has a cycle")
        self.nodes = order

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.domain}.{n.op_type}" if n.domain else n.op_type
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def __repr__(self) -> str:
        return (
            f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={[v.name for v in self.inputs]},"
            f" outputs={[v.name for v in self.outputs]})"
        )
