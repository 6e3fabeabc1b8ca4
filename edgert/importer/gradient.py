"""Expand ``ai.onnx.preview.training.Gradient`` into forward + backward ONNX nodes at import.

``Gradient(xs=[x1, ...], zs=[...], y=Y)`` outputs ``dY/dx_i``: the gradient of ``sum(Y)`` (the
backward pass seeded with ones of Y's shape) with respect to each ``x_i``. edgert has no
training runtime, so the importer replaces the node by its symbolic derivative, built from
default-domain operators that the runtime already runs:

* the nodes between the ``xs`` and ``y`` are visited in reverse topological order; each one adds
  its contribution to the gradient of each of its inputs that depends on an ``x``:

  ======  ==============================  ====================================
  op      d/dA                            d/dB
  ======  ==============================  ====================================
  Add     g                               g
  Sub     g                               -g
  Mul     g · B                           g · A
  Div     g / B                           -(g · out) / B   (out = A / B)
  ======  ==============================  ====================================

* contributions to one value are added; a contribution computed at a broadcast shape is summed
  back to the input's shape (``ReduceSum`` over the broadcast axes, then ``Reshape``), which needs
  the two shapes statically (from the model or ONNX shape inference);
* an ``x`` that ``y`` does not depend on gets a zero gradient of its own shape.

Anything else on the path from the ``xs`` to ``y`` raises :class:`UnsupportedOpError` naming the
operator: only Add, Sub, Mul and Div are differentiated. ``zs`` are treated as constants, as the
operator's definition says.

Example:
    ``c = Add(a, b); d = Mul(c, a); da, db = Gradient<xs=[a, b], y=d>(a, b)`` becomes
    ``g = ConstantOfShape(Shape(d), 1); da = g·c + g·a; db = g·a`` (as nodes).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.shape_inference
from onnx import helper, numpy_helper

from edgert.errors import UnsupportedOpError

TRAINING_DOMAIN = "ai.onnx.preview.training"
DIFFERENTIABLE = ("Add", "Sub", "Mul", "Div")
_ADVICE = ("edgert expands Gradient into backward nodes for Add, Sub, Mul and Div only; compute "
           "other gradients in the training framework and export them as a plain graph.")


def has_gradient(graph: onnx.GraphProto) -> bool:
    """Whether the main graph holds a training-domain Gradient node."""
    return any(n.op_type == "Gradient" and n.domain == TRAINING_DOMAIN for n in graph.node)


def expand_gradients(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose Gradient nodes are replaced by backward-pass nodes.

    Raises:
        UnsupportedOpError: an operator on a path from ``xs`` to ``y`` that edgert cannot
            differentiate, a broadcast whose shapes are not static, or a malformed Gradient.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    types = _value_types(model)
    names = _Names(graph)
    problems: list[tuple[str, str, str]] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Gradient" or node.domain != TRAINING_DOMAIN:
            new_nodes.append(node)
            continue
        try:
            new_nodes.extend(_Backward(graph, node, opset, types, names).build())
        except _Unsupported as exc:
            problems.append(("Gradient", node.name, str(exc)))
    if problems:
        lines = "\n".join(f"  {op} '{name}': {why}" for op, name, why in problems)
        raise UnsupportedOpError(
            f"cannot import the ONNX model: {len(problems)} Gradient node(s) cannot be "
            f"expanded:\n{lines}\n{_ADVICE}", ops=problems)
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(n.domain == TRAINING_DOMAIN for n in graph.node):
        keep = [o for o in model.opset_import if o.domain != TRAINING_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return model


class _Unsupported(Exception):
    pass


class _Names:
    """Fresh value names that collide with nothing in the graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.used = {v.name for v in list(graph.input) + list(graph.output)}
        self.used.update(t.name for t in graph.initializer)
        for n in graph.node:
            self.used.update(n.input)
            self.used.update(n.output)

    def new(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple | None]]:
    """name -> (element type, static shape or None) from the model and shape inference.

    Inference runs on a copy without the Gradient nodes (their domain has no inference that
    helps here, and a failing inference only means fewer known shapes).
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    keep = [n for n in probe.graph.node if n.domain != TRAINING_DOMAIN]
    del probe.graph.node[:]
    probe.graph.node.extend(keep)
    produced = {o for n in keep for o in n.output} | {i.name for i in probe.graph.input} | \
        {t.name for t in probe.graph.initializer}
    outs = [o for o in probe.graph.output if o.name in produced]
    del probe.graph.output[:]
    probe.graph.output.extend(outs)
    try:
        probe = onnx.shape_inference.infer_shapes(probe, strict_mode=False)
    except Exception:  # noqa: BLE001  (no inference: only the declared types are known)
        pass
    types: dict[str, tuple[int, tuple | None]] = {}
    for vi in list(probe.graph.value_info) + list(probe.graph.input) + list(probe.graph.output):
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            shape = tuple(dims) if all(d is not None for d in dims) else None
        types[vi.name] = (tt.elem_type, shape)
    for t in probe.graph.initializer:
        types[t.name] = (t.data_type, tuple(t.dims))
    return types


class _Backward:
    """The backward nodes of one Gradient node."""

    def __init__(self, graph, node, opset, types, names):
        self.graph, self.node, self.opset, self.types, self.names = graph, node, opset, types, names
        self.out: list[onnx.NodeProto] = []
        self.prefix = node.name or "Gradient"

    def _fresh(self, what: str) -> str:
        return self.names.new(f"{self.prefix}_{what}")

    def _add(self, op: str, inputs: list[str], what: str, **attrs) -> str:
        name = self._fresh(what)
        self.out.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def build(self) -> list[onnx.NodeProto]:
        attrs = {a.name: helper.get_attribute_value(a) for a in self.node.attribute}
        xs = [v.decode() if isinstance(v, bytes) else v for v in attrs.get("xs", [])]
        y = attrs.get("y", b"")
        y = y.decode() if isinstance(y, bytes) else y
        if not xs or not y:
            raise _Unsupported("attributes 'xs' and 'y' are required")
        if len(self.node.output) > len(xs):
            raise _Unsupported(f"{len(self.node.output)} outputs for {len(xs)} xs")
        if self.opset < 9:
            raise _Unsupported(f"needs opset >= 9 for ConstantOfShape (model has {self.opset})")
        producers = {o: n for n in self.graph.node if n.domain in ("", "ai.onnx")
                     for o in n.output}
        path = self._path(xs, y, producers)
        grads: dict[str, list[str]] = {y: [self._seed(y, 1.0)]}
        for n in reversed(path):
            out = n.output[0]
            if out not in grads:
                continue
            g = self._total(grads[out])
            for i, contrib in self._rules(n, g):
                name = n.input[i]
                if name in self._depends:
                    grads.setdefault(name, []).append(self._unbroadcast(contrib, out, name, n))
        for x, target in zip(xs, self.node.output):
            if not target:
                continue
            src = self._total(grads[x]) if x in grads else self._seed(x, 0.0)
            self.out.append(helper.make_node("Identity", [src], [target],
                                             name=self._fresh(f"d_{x}")))
        return self.out

    def _path(self, xs, y, producers) -> list[onnx.NodeProto]:
        """Nodes between the xs and y in graph order; rejects what cannot be differentiated."""
        if y in xs:
            self._depends = set(xs)
            return []
        ancestors: list[onnx.NodeProto] = []
        seen: set[str] = set()
        stack = [y]
        while stack:
            v = stack.pop()
            if v in seen or v in xs:
                continue
            seen.add(v)
            n = producers.get(v)
            if n is None:
                continue
            ancestors.append(n)
            stack.extend(i for i in n.input if i)
        order = {id(n): k for k, n in enumerate(self.graph.node)}
        ancestors = sorted({id(n): n for n in ancestors}.values(), key=lambda n: order[id(n)])
        self._depends = set(xs)
        path = []
        for n in ancestors:
            if not any(i in self._depends for i in n.input):
                continue
            if n.op_type not in DIFFERENTIABLE or len(n.output) != 1:
                raise _Unsupported(
                    f"cannot differentiate through {n.op_type} '{n.name}' (edgert differentiates "
                    f"{', '.join(DIFFERENTIABLE)})")
            self._depends.update(n.output)
            path.append(n)
        if y not in self._depends:
            self._depends.add(y)  # y does not depend on the xs: every gradient is zero
        return path

    def _seed(self, like: str, value: float) -> str:
        """ConstantOfShape(Shape(like)) filled with ``value`` in ``like``'s element type."""
        elem = self.types.get(like, (0, None))[0]
        if not elem:
            raise _Unsupported(f"the element type of '{like}' is unknown")
        shape = self._add("Shape", [like], f"shape_{like}")
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        fill = numpy_helper.from_array(np.array([value], dtype=dtype))
        return self._add("ConstantOfShape", [shape], f"{'ones' if value else 'zeros'}_{like}",
                         value=fill)

    def _total(self, parts: list[str]) -> str:
        total = parts[0]
        for p in parts[1:]:
            total = self._add("Add", [total, p], "acc")
        return total

    def _rules(self, n: onnx.NodeProto, g: str):
        a, b = n.input[0], n.input[1]
        op = n.op_type
        if op == "Add":
            return [(0, g), (1, g)]
        if op == "Sub":
            return [(0, g), (1, self._add("Neg", [g], "neg"))]
        if op == "Mul":
            return [(0, self._add("Mul", [g, b], "mul")), (1, self._add("Mul", [g, a], "mul"))]
        # Div: d(a/b)/db = -(a/b)/b
        ga = self._add("Div", [g, b], "div")
        gb = self._add("Neg", [self._add("Div", [self._add("Mul", [g, n.output[0]], "mul"), b],
                                         "div")], "neg")
        return [(0, ga), (1, gb)]

    def _unbroadcast(self, contrib: str, out: str, inp: str, n: onnx.NodeProto) -> str:
        """Sum ``contrib`` (shaped like ``out``) back to the shape of ``inp``."""
        s_out = self.types.get(out, (0, None))[1]
        s_in = self.types.get(inp, (0, None))[1]
        if s_out is not None and s_in is not None and tuple(s_out) == tuple(s_in):
            return contrib
        if s_out is None or s_in is None:
            # Equal inputs of an elementwise op need no reduction even with unknown shapes
            if len(n.input) == 2 and n.input[0] == n.input[1]:
                return contrib
            raise _Unsupported(f"the shapes of '{inp}' and '{out}' of {n.op_type} '{n.name}' "
                               "must be static to sum a broadcast gradient")
        lead = len(s_out) - len(s_in)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(s_in)
                                    if d == 1 and s_out[lead + i] != 1]
        r = contrib
        if axes:
            if self.opset >= 13:
                ax = self._const(np.array(axes, np.int64), "axes")
                r = self._add("ReduceSum", [r, ax], "sum", keepdims=1)
            else:
                r = self._add("ReduceSum", [r], "sum", axes=axes, keepdims=1)
        shape = self._const(np.array(s_in, np.int64), "shape")
        return self._add("Reshape", [r, shape], "unbroadcast")

    def _const(self, arr: np.ndarray, what: str) -> str:
        name = self._fresh(what)
        self.out.append(helper.make_node("Constant", [], [name], name=name,
                                         value=numpy_helper.from_array(arr, name)))
        return name


__all__ = ["DIFFERENTIABLE", "TRAINING_DOMAIN", "expand_gradients", "has_gradient"]
