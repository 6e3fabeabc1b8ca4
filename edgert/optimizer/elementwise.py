"""Elementwise chain fusion into one ``edgert.FusedElementwise`` node (fused ops allowed only).

A *group* is a tree of elementwise nodes in which every intermediate value has exactly one
reader (the next node of the group) and is neither a graph output nor read by a body; only the
group's root output leaves it. The group becomes one node whose ``program`` the runtime kernel
(:mod:`edgert.runtime.kernels.cpu.fused`) runs in a single pass over memory, instead of one
pass (and one intermediate tensor) per op. Typical groups: residual ``Add -> Relu`` tails,
``BatchNormalization -> Relu`` pre-activations, decomposed Gelu / HardSwish.

Members: Add, Sub, Mul, Div, Max/Min of two, Relu, Sigmoid, Tanh, Exp, Log, Neg, Abs, Sqrt,
Erf, Reciprocal, LeakyRelu, HardSigmoid, HardSwish, Clip, and BatchNormalization with constant
parameters (as ``x * s + t`` per channel, ``s = gamma / sqrt(var + eps)``, ``t = beta - mean*s``).

Declines: unknown or non-float dtypes, shapes that are not static, an input that is neither of
the output's shape, a single element, nor a per-channel (axis 1) vector; groups of one node
(the plain kernel is as good).
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value
from edgert.optimizer._util import const, new_const, pinned_names, single_use

_FLOATS = (dtypes.FLOAT, dtypes.DOUBLE)
_MAX_INPUTS = 8  # edgert.runtime.kernels.cpu.fused.MAX_INPUTS


def _known(v: Value) -> tuple | None:
    """``v``'s shape when every dim is an int or a symbol (None if any dim is unknown)."""
    if v.shape is None or any(d is None for d in v.shape):
        return None
    return tuple(v.shape)


def _mode(v: Value | None, shape: list, dtype: int) -> int | None:
    """How input ``v`` is read by a fused node of output ``shape`` (kernel mode), or None.

    Mode 0 ("full") only says the ranks agree and no dim pair is known to differ (symbols
    compare by name, unknown dims match anything); :func:`_safe` then proves the group's full
    inputs really have the output's shape, and the kernel checks again at prepare.
    """
    if v is None or v.dtype != dtype or v.shape is None or len(v.shape) > len(shape):
        return None
    s = list(v.shape)
    padded = [1] * (len(shape) - len(s)) + s
    if all(d == 1 for d in padded):
        return 1
    if len(shape) > 1 and all(d == 1 for i, d in enumerate(padded) if i != 1) and (
        isinstance(shape[1], int) and padded[1] == shape[1]
    ):
        return 2
    if len(s) == len(shape) and all(a is None or b is None or a == b for a, b in zip(s, shape)):
        return 0
    return None


def _safe(full_inputs: list[Value], root: Value) -> bool:
    """True when the group's full inputs provably all have the root's shape.

    One distinct full input: every op of the group keeps its shape (unary ops, and binary ops
    whose other operand is a scalar or a per-channel vector), so the root has it too. Several:
    their shapes and the root's must be known and identical.
    """
    if len({id(v) for v in full_inputs}) <= 1:
        return True
    shapes = {_known(v) for v in full_inputs} | {_known(root)}
    return len(shapes) == 1 and None not in shapes


def _opcode(node: Node) -> int | None:
    """The ``edgert.FusedElementwise`` opcode of a default-domain node: its CPU kernel's
    ``fusion`` trait (:class:`edgert.runtime.registry.OpTraits`), or None."""
    from edgert.runtime.kernels.cpu import registry

    return registry().traits(node.op_type, "", node.version).fusion


def _member(node: Node) -> bool:
    """Whether ``node`` may join a fused group (see the module docstring)."""
    from edgert.runtime.ops.fusion import BINARY_OPCODES, OP_CLIP

    if node.domain != "" or len(node.outputs) != 1 or node.subgraphs():
        return False
    y = node.outputs[0]
    shape = y.shape
    if not shape or y.dtype not in _FLOATS:
        return False
    op = node.op_type
    ins = node.inputs
    code = _opcode(node)
    if code == OP_CLIP:
        ok = 1 <= len(ins) <= 3
    elif code in BINARY_OPCODES:
        ok = len(ins) == 2
    elif code is not None:
        ok = len(ins) == 1
    elif op == "BatchNormalization":
        ok = (len(ins) == 5 and len(shape) >= 2 and isinstance(shape[1], int)
              and all(const(v) is not None and const(v).size == shape[1] for v in ins[1:])
              and not node.attrs.get("training_mode", 0))
        return ok and _mode(ins[0], shape, y.dtype) == 0
    else:
        return False
    return ok and all(v is None or _mode(v, shape, y.dtype) is not None for v in ins) and (
        any(v is not None and _mode(v, shape, y.dtype) == 0 for v in ins)
    )


def fuse_elementwise(graph: Graph, ctx) -> bool:
    """Replace groups of elementwise nodes by ``edgert.FusedElementwise`` nodes."""
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    group_of: dict[int, list[Node]] = {}  # id(node) -> its group (root last)
    for node in graph.nodes:
        if not _member(node):
            continue
        group = [node]
        for v in node.inputs:
            p = v.producer if v is not None else None
            if p is None or id(p) not in group_of or not single_use(graph, v, pinned):
                continue
            other = group_of[id(p)]
            if other[-1] is not p or other is group:
                continue
            group = other + [n for n in group if n not in other]
        for n in group:
            group_of[id(n)] = group
    groups: list[list[Node]] = []
    seen: set[int] = set()
    for g in group_of.values():
        if id(g) not in seen and len(g) >= 2:
            seen.add(id(g))
            groups.append(g)
    groups = [g for g in groups
              if _safe(_full_inputs(graph, g), g[-1].outputs[0]) and _input_count(g) <= _MAX_INPUTS]
    for g in groups:
        _rewrite(graph, g)
        ctx.count(removed=len(g) - 1, fused=1)
    if groups:
        graph.opset.setdefault("edgert", 1)
    return bool(groups)


def _input_count(group: list[Node]) -> int:
    """An upper bound on the fused node's inputs (the kernel takes at most ``MAX_INPUTS``)."""
    internal = {id(n.outputs[0]) for n in group}
    ext = {id(v) for n in group for v in n.inputs if v is not None and id(v) not in internal}
    return len(ext) + sum(2 for n in group if n.op_type in ("Clip", "BatchNormalization"))


def _full_inputs(graph: Graph, group: list[Node]) -> list[Value]:
    internal = {id(n.outputs[0]) for n in group}
    out = []
    for n in group:
        ins = n.inputs[:1] if n.op_type in ("Clip", "BatchNormalization") else n.inputs
        for v in ins:
            if v is not None and id(v) not in internal and _mode(v, n.outputs[0].shape,
                                                                  v.dtype) == 0:
                out.append(v)
    return out


def _rewrite(graph: Graph, group: list[Node]) -> None:
    from edgert.runtime.ops.fusion import OP_ADD, OP_MUL

    order = sorted(group, key=graph.nodes.index)
    root = order[-1]
    y = root.outputs[0]
    shape = y.shape
    np_dtype = dtypes.to_numpy(y.dtype)
    internal = {id(n.outputs[0]) for n in order[:-1]}
    inputs: list[Value] = []
    modes: list[int] = []
    reg: dict[int, int] = {}

    def external(v: Value) -> None:
        if id(v) not in reg and id(v) not in internal:
            reg[id(v)] = len(inputs)
            inputs.append(v)
            modes.append(_mode(v, shape, y.dtype))

    # Clip bounds and BN coefficients become extra inputs first, so registers are known.
    extra: dict[int, list[Value]] = {}
    for n in order:
        if n.op_type == "Clip":
            lo, hi = n.input(1), n.input(2)
            lo = lo if lo is not None else new_const(graph, "clip_min", np.array(-np.inf, np_dtype))
            hi = hi if hi is not None else new_const(graph, "clip_max", np.array(np.inf, np_dtype))
            extra[id(n)] = [lo, hi]
        elif n.op_type == "BatchNormalization":
            gamma, beta, mean, var = (const(n.inputs[i]).astype(np.float64) for i in range(1, 5))
            s = gamma / np.sqrt(var + float(n.attrs.get("epsilon", 1e-5)))
            t = beta - mean * s
            cshape = (shape[1],) + (1,) * (len(shape) - 2)
            extra[id(n)] = [
                new_const(graph, "bn_scale", s.reshape(cshape).astype(np_dtype)),
                new_const(graph, "bn_shift", t.reshape(cshape).astype(np_dtype)),
            ]
    for n in order:
        for v in n.inputs[:1] if n.op_type in ("Clip", "BatchNormalization") else n.inputs:
            if v is not None:
                external(v)
        for v in extra.get(id(n), []):
            external(v)
    nreg = len(inputs)
    program: list[int] = []
    params: list[float] = []
    for n in order:
        srcs = [reg[id(v)] for v in (n.inputs[:1] if id(n) in extra else n.inputs)
                if v is not None]
        srcs += [reg[id(v)] for v in extra.get(id(n), [])]
        dst = nreg
        nreg += 1
        op = n.op_type
        p = [0.0, 0.0]
        if op == "BatchNormalization":
            program += [OP_MUL, dst, srcs[0], srcs[1], 0, OP_ADD, dst + 1, dst, srcs[2], 0]
            params += p + p
            nreg += 1
            dst += 1
        else:
            code = _opcode(n)
            if op == "LeakyRelu":
                p = [float(n.attrs.get("alpha", 0.01)), 0.0]
            elif op == "HardSigmoid":
                p = [float(n.attrs.get("alpha", 0.2)), float(n.attrs.get("beta", 0.5))]
            s = srcs + [0] * (3 - len(srcs))
            program += [code, dst, s[0], s[1], s[2]]
            params += p
        reg[id(n.outputs[0])] = dst
    index = graph.nodes.index(root)
    for n in reversed(order):
        graph.remove_node(n)
    graph.add_node(
        "FusedElementwise", inputs, [y],
        {"program": program, "params": params, "modes": modes},
        name=graph.unique_name((root.name or "fused") + "_fused"), domain="edgert", version=1,
        index=min(index, len(graph.nodes)) - (len(order) - 1),
    )
