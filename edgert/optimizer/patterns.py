"""Level-2 pattern recognition: decomposed subgraphs as exporters write them → one ONNX op.

PyTorch (older opsets), Paddle and hand-written models spell common layers out in primitive
ops. Each pass below finds one family of such subgraphs and replaces it by the single standard
op the runtime has a kernel for (one pass over memory instead of five to nine):

* :func:`fuse_layernorm` — ``m = ReduceMean(x, axes)``, ``d = Sub(x, m)``,
  ``v = ReduceMean(Pow(d, 2) | Mul(d, d), axes)``, ``y = Div(d, Sqrt(Add(v, eps)))`` (or
  ``d * Reciprocal(Sqrt(·))``, ``d * Pow(·, -0.5)``), then
  optionally ``Mul(y, gamma)`` and ``Add(·, beta)`` → ``LayerNormalization(x, gamma, beta,
  axis, epsilon)`` (opset 17). ``axes`` (attribute, or the opset-18 constant input) must be the
  trailing axes ``axis..rank-1`` with ``keepdims=1``; ``gamma``/``beta`` constants that
  broadcast only over those axes; ``eps`` a non-negative scalar; float32 only (the op's
  ``stash_type`` is float32, so other types would compute at another precision).
* :func:`fuse_hardsigmoid` — ``Clip(a*x + b, 0, hi) * s`` (the Mul by ``a``, the Add of ``b``
  and the final Mul/Div optional, at least two nodes in all) with ``hi * s == 1`` and ``s > 0``
  → ``HardSigmoid(alpha=a*s, beta=b*s)``, because ``s * clip(t, 0, hi) = clip(s*t, 0, s*hi)``
  for ``s > 0``. Covers ``Clip(x + 3, 0, 6) / 6`` and Paddle's ``Clip(x*slope + offset, 0, 1)``.
* :func:`fuse_hardswish` — ``Mul(x, HardSigmoid(x; 1/6, 1/2))`` and
  ``(x * Clip(x + 3, 0, 6)) / 6`` (or ``* (1/6)``) → ``HardSwish(x)`` (opset 14).
* :func:`fuse_gelu` — ``0.5 * x * (1 + erf(x / sqrt(2)))`` (Div by √2 or Mul by 1/√2; the two
  Muls by ``x`` and ``0.5`` in any order or association) → ``Gelu(x)``, and the tanh form
  ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`` (``Pow(x, 3)`` or ``x*x*x``) →
  ``Gelu(x, approximate="tanh")``. Gelu is an opset-20 op: the pass runs only when the graph's
  opset is already 20 or later, or with ``allow_fused`` (the result is for the edgert runtime,
  whose Gelu kernel serves every opset).

Proof obligations, checked by every pass before it touches the graph: each constant is a
scalar (or a broadcast-only-where-allowed tensor) of the input's float dtype and cannot grow the
result's rank; constants equal their expected value to within float32 rounding (relative
``1e-6``); every intermediate value is read only inside the pattern and is neither a graph
output nor read by a control-flow body. Anything else: the graph is left alone.
"""

from __future__ import annotations

import math

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value
from edgert.optimizer._util import const, new_const, pinned_names

_FLOATS = (dtypes.FLOAT, dtypes.DOUBLE)
REL_TOL = 1e-6  # constants written in float32 match their exact value to ~6e-8


def _close(a: float | None, b: float) -> bool:
    return a is not None and math.isfinite(a) and abs(a - b) <= REL_TOL * max(abs(b), 1e-30)


def _op(node: Node | None, *ops: str) -> bool:
    return node is not None and node.domain == "" and node.op_type in ops


def _scalar_of(v: Value | None, x: Value) -> float | None:
    """Value of ``v`` if it is a one-element constant of ``x``'s dtype that cannot grow the rank.

    A ``[1, 1, 1]`` constant times a rank-2 tensor gives a rank-3 result, so the constant's rank
    must not exceed ``x``'s (a rank-0 constant is always fine).
    """
    c = const(v)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    if v.dtype and x.dtype and v.dtype != x.dtype:
        return None
    if c.ndim > 0 and (x.rank is None or c.ndim > x.rank):
        return None
    return float(c.reshape(-1)[0])


def _alive(node: Node) -> bool:
    """False for a node an earlier rewrite of the same sweep removed (its outputs lost it)."""
    return bool(node.outputs) and node.outputs[0].producer is node


def _other(node: Node, v: Value) -> Value | None:
    """The other operand of binary ``node`` one of whose inputs is ``v``."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is v:
        return b
    if b is v:
        return a
    return None


class _Match:
    """Nodes of one candidate pattern; checks that its intermediates stay inside it."""

    def __init__(self, graph: Graph, pinned: set[str]):
        self.graph = graph
        self.pinned = pinned
        self.nodes: list[Node] = []

    def add(self, *nodes: Node) -> None:
        for n in nodes:
            if all(n is not m for m in self.nodes):
                self.nodes.append(n)

    def sole_consumer(self, v: Value, *ops: str) -> Node | None:
        """The one node reading ``v`` (possibly twice), if it is one of ``ops``; ``v`` may go."""
        if v.name in self.pinned or any(o is v for o in self.graph.outputs):
            return None
        readers = {id(c): c for c in v.consumers}
        if len(readers) != 1:
            return None
        c = v.consumers[0]
        return c if _op(c, *ops) else None

    def internal(self, final: Node) -> bool:
        """Every output of every node except ``final`` is read only by pattern nodes."""
        ids = {id(n) for n in self.nodes}
        for n in self.nodes:
            if n is final:
                continue
            for v in n.outputs:
                if v.name in self.pinned or any(o is v for o in self.graph.outputs):
                    return False
                if any(id(c) not in ids for c in v.consumers):
                    return False
        return True

    def replace(self, final: Node, op_type: str, inputs: list[Value | None], attrs: dict,
                version: int) -> Node:
        """Remove the pattern; a new ``op_type`` node writes ``final``'s first output."""
        y = final.outputs[0]
        for n in self.nodes:
            if n is not final:
                self.graph.remove_node(n)
        idx = self.graph.nodes.index(final)
        self.graph.remove_node(final)
        return self.graph.add_node(op_type, inputs, [y], attrs, name=final.name or "",
                                   version=version, index=idx)


# ----- LayerNormalization -------------------------------------------------------------------------
def _reduce_axes(node: Node, rank: int) -> list[int] | None:
    """Sorted, normalized axes of a keepdims=1 ReduceMean (attribute or constant input)."""
    if int(node.attrs.get("keepdims", 1)) != 1:
        return None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        a = const(node.inputs[1])
        if a is None:
            return None
        axes = [int(i) for i in a.reshape(-1)]
    elif "axes" in node.attrs:
        axes = [int(i) for i in node.attrs["axes"]]
    else:
        axes = []
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return None
        axes = list(range(rank))
    if any(not -rank <= i < rank for i in axes):
        return None
    out = sorted({i + rank if i < 0 else i for i in axes})
    return out if len(out) == len(axes) else None


def _norm_param(v: Value | None, x: Value, axis: int, norm_shape: tuple[int, ...]
                ) -> np.ndarray | None:
    """Constant ``v`` as a float32 array of ``norm_shape`` if it varies only over ``axis..``."""
    c = const(v)
    rank = x.rank
    if c is None or c.dtype != np.float32 or rank is None or c.ndim > rank:
        return None
    padded = (1,) * (rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for d in padded[:axis]):
        return None
    tail = padded[axis:]
    if any(d not in (1, n) for d, n in zip(tail, norm_shape)):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(tail), norm_shape), np.float32)


def _inverse_std(m: _Match, ve: Value, div: Node, d: Value) -> bool:
    """``div`` divides ``d`` by ``Sqrt(ve)``, or multiplies it by ``Reciprocal(Sqrt(ve))`` or
    ``Pow(ve, -0.5)`` (adds the nodes between to ``m``)."""
    if div.op_type == "Div":
        sqrt = m.sole_consumer(ve, "Sqrt")
        if sqrt is None or div.inputs[1] is not sqrt.outputs[0]:
            return False
        m.add(sqrt)
        return True
    r = _other(div, d)
    p = m.sole_consumer(ve, "Sqrt", "Pow")
    if p is None:
        return False
    if p.op_type == "Pow":
        if p.inputs[0] is not ve or _scalar_of(p.input(1), ve) != -0.5 or r is not p.outputs[0]:
            return False
        m.add(p)
        return True
    rcp = m.sole_consumer(p.outputs[0], "Reciprocal")
    if rcp is None or r is not rcp.outputs[0]:
        return False
    m.add(p, rcp)
    return True


def _match_layernorm(graph: Graph, rm1: Node, pinned: set[str]) -> tuple[_Match, Node, list,
                                                                         dict] | None:
    x = rm1.inputs[0] if rm1.inputs else None
    if x is None or x.dtype != dtypes.FLOAT or x.rank is None or x.rank == 0:
        return None
    rank = x.rank
    axes = _reduce_axes(rm1, rank)
    if axes is None or axes != list(range(axes[0], rank)):
        return None
    axis = axes[0]
    norm_shape = tuple(x.shape[axis:])
    if any(not isinstance(d, int) for d in norm_shape):
        return None
    m = _Match(graph, pinned)
    m.add(rm1)
    sub = m.sole_consumer(rm1.outputs[0], "Sub")
    if sub is None or sub.inputs[0] is not x or sub.inputs[1] is not rm1.outputs[0]:
        return None
    d = sub.outputs[0]
    m.add(sub)
    readers = {id(c): c for c in d.consumers}
    if len(readers) != 2 or d.name in pinned or any(o is d for o in graph.outputs):
        return None
    sq = div = None
    for c in readers.values():
        if _op(c, "Pow") and c.inputs[0] is d and _scalar_of(c.input(1), x) == 2.0:
            sq = c
        elif _op(c, "Mul") and len(c.inputs) == 2 and c.inputs[0] is d and c.inputs[1] is d:
            sq = c
        elif _op(c, "Div") and len(c.inputs) == 2 and c.inputs[0] is d:
            div = c
        elif _op(c, "Mul") and _other(c, d) is not None and _other(c, d) is not d:
            div = c  # d * rsqrt(...), checked below
    if sq is None or div is None:
        return None
    m.add(sq, div)
    rm2 = m.sole_consumer(sq.outputs[0], "ReduceMean")
    if rm2 is None or rm2.inputs[0] is not sq.outputs[0] or _reduce_axes(rm2, rank) != axes:
        return None
    m.add(rm2)
    add = m.sole_consumer(rm2.outputs[0], "Add")
    if add is None:
        return None
    eps = _scalar_of(_other(add, rm2.outputs[0]), x)
    if eps is None or not eps >= 0.0 or not math.isfinite(eps):
        return None
    m.add(add)
    if not _inverse_std(m, add.outputs[0], div, d):
        return None
    final = div
    scale = bias = None
    mul = m.sole_consumer(div.outputs[0], "Mul")
    if mul is not None:
        scale = _norm_param(_other(mul, div.outputs[0]), x, axis, norm_shape)
        if scale is not None:
            m.add(mul)
            final = mul
    if scale is not None:
        add_b = m.sole_consumer(mul.outputs[0], "Add")
        if add_b is not None:
            bias = _norm_param(_other(add_b, mul.outputs[0]), x, axis, norm_shape)
            if bias is not None:
                m.add(add_b)
                final = add_b
    if not m.internal(final):
        return None
    if scale is None:
        scale = np.ones(norm_shape, np.float32)
    attrs = {"axis": axis, "epsilon": float(np.float32(eps))}
    return m, final, [scale, bias], attrs


def fuse_layernorm(graph: Graph, ctx) -> bool:
    """Decomposed layer normalization → ``LayerNormalization`` (see the module docstring)."""
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if not _op(node, "ReduceMean") or not _alive(node):
            continue
        found = _match_layernorm(graph, node, pinned)
        if found is None:
            continue
        m, final, (scale, bias), attrs = found
        x = node.inputs[0]
        sv = new_const(graph, "ln_scale", scale)
        bv = new_const(graph, "ln_bias", bias) if bias is not None else None
        m.replace(final, "LayerNormalization", [x, sv] + ([bv] if bv is not None else []),
                  attrs, version=17)
        ctx.count(removed=len(m.nodes) - 1, fused=1)
        changed = True
    return changed


# ----- HardSigmoid / HardSwish --------------------------------------------------------------------
def _affine_clip(m: _Match, clip: Node) -> tuple[Value, float, float, float, list[Node]] | None:
    """``Clip(a*x + b, 0, hi)`` read backwards from ``clip``: ``(x, a, b, hi, nodes)``.

    The Mul and Add in front are optional (and taken only when read by nothing else); the
    lower bound must be exactly 0 and the upper finite and positive.
    """
    if not _op(clip, "Clip") or not clip.inputs or clip.inputs[0] is None:
        return None
    t = clip.inputs[0]
    lo_v, hi_v = clip.input(1), clip.input(2)
    lo = _scalar_of(lo_v, t) if lo_v is not None else None
    hi = _scalar_of(hi_v, t) if hi_v is not None else None
    if lo != 0.0 or hi is None or not (0.0 < hi < math.inf):
        return None
    nodes: list[Node] = []
    a, b, x = 1.0, 0.0, t
    prod = t.producer
    if _op(prod, "Add") and m.sole_consumer(t, "Clip") is clip:
        for cand in prod.inputs:
            k = _scalar_of(_other(prod, cand), cand) if cand is not None else None
            if k is not None and cand is not None and const(cand) is None:
                b, x = k, cand
                nodes.append(prod)
                break
    prod = x.producer
    if _op(prod, "Mul") and x is not t and m.sole_consumer(x, "Add") is nodes[0]:
        for cand in prod.inputs:
            k = _scalar_of(_other(prod, cand), cand) if cand is not None else None
            if k is not None and cand is not None and const(cand) is None:
                a, x = k, cand
                nodes.append(prod)
                break
    elif _op(prod, "Mul") and x is t and m.sole_consumer(t, "Clip") is clip:
        for cand in prod.inputs:
            k = _scalar_of(_other(prod, cand), cand) if cand is not None else None
            if k is not None and cand is not None and const(cand) is None:
                a, x = k, cand
                nodes.append(prod)
                break
    if x.dtype not in _FLOATS:
        return None
    return x, a, b, hi, nodes


def _post_scale(m: _Match, v: Value) -> tuple[float, Node] | None:
    """``s`` and the node when ``v``'s sole reader is ``Mul(v, s)`` or ``Div(v, 1/s)``."""
    nxt = m.sole_consumer(v, "Mul", "Div")
    if nxt is None:
        return None
    if nxt.op_type == "Div":
        k = _scalar_of(nxt.input(1), v) if nxt.inputs[0] is v else None
        return (1.0 / k, nxt) if k else None
    k = _scalar_of(_other(nxt, v), v)
    return (k, nxt) if k is not None and _other(nxt, v) is not v else None


def fuse_hardsigmoid(graph: Graph, ctx) -> bool:
    """``Clip(a*x + b, 0, hi) * s`` with ``hi*s = 1`` → ``HardSigmoid`` (module docstring)."""
    pinned = pinned_names(graph)
    changed = False
    for clip in list(graph.nodes):
        if not _op(clip, "Clip") or not _alive(clip):
            continue
        m = _Match(graph, pinned)
        found = _affine_clip(m, clip)
        if found is None:
            continue
        x, a, b, hi, pre = found
        final, s = clip, 1.0
        post = _post_scale(m, clip.outputs[0])
        if post is not None:
            s, final = post
        if not s > 0.0 or not _close(hi * s, 1.0) or len(pre) + (final is not clip) < 1:
            continue
        m.add(*pre, clip, final)
        if not m.internal(final):
            continue
        m.replace(final, "HardSigmoid", [x], {"alpha": a * s, "beta": b * s}, version=6)
        ctx.count(removed=len(m.nodes) - 1, fused=1)
        changed = True
    return changed


def _is_hswish_sigmoid(node: Node | None) -> bool:
    return (_op(node, "HardSigmoid") and _close(float(node.attrs.get("alpha", 0.2)), 1 / 6)
            and _close(float(node.attrs.get("beta", 0.5)), 0.5))


def fuse_hardswish(graph: Graph, ctx) -> bool:
    """``x * HardSigmoid(x)`` and ``x * Clip(x + 3, 0, 6) / 6`` → ``HardSwish(x)``."""
    pinned = pinned_names(graph)
    changed = False
    for mul in list(graph.nodes):
        if not _op(mul, "Mul") or len(mul.inputs) != 2 or not _alive(mul):
            continue
        m = _Match(graph, pinned)
        for h in mul.inputs:
            x = _other(mul, h)
            if h is None or x is None or x is h or x.dtype not in _FLOATS:
                continue
            prod = h.producer
            if _is_hswish_sigmoid(prod) and prod.inputs[0] is x:
                m.add(prod, mul)
                final = mul
            elif _op(prod, "Clip"):
                found = _affine_clip(m, prod)
                post = _post_scale(m, mul.outputs[0])
                if found is None or post is None or found[0] is not x:
                    continue
                _, a, b, hi, pre = found
                s, final = post
                if not (s > 0 and _close(a * s, 1 / 6) and _close(b * s, 0.5)
                        and _close(hi * s, 1.0)):
                    continue
                m.add(*pre, prod, mul, final)
            else:
                continue
            if not m.internal(final):
                m = _Match(graph, pinned)
                continue
            m.replace(final, "HardSwish", [x], {}, version=14)
            ctx.count(removed=len(m.nodes) - 1, fused=1)
            changed = True
            break
    return changed


# ----- Gelu ---------------------------------------------------------------------------------------
_SQRT2 = math.sqrt(2.0)
_TANH_K = math.sqrt(2.0 / math.pi)


def _scaled_input(m: _Match, v: Value, expect: float) -> Value | None:
    """``x`` when ``v = x * expect`` (Mul, or Div by ``1/expect``) and ``v`` is read once."""
    prod = v.producer
    if prod is None or m.sole_consumer(v, "Erf", "Tanh") is None:
        return None
    if _op(prod, "Div") and len(prod.inputs) == 2:
        x = prod.inputs[0]
        if x is not None and _close(_scalar_of(prod.inputs[1], x), 1.0 / expect):
            m.add(prod)
            return x
    if _op(prod, "Mul") and len(prod.inputs) == 2:
        for x in prod.inputs:
            if x is not None and const(x) is None and _close(_scalar_of(_other(prod, x), x),
                                                             expect):
                m.add(prod)
                return x
    return None


def _cube_term(m: _Match, v: Value, x: Value) -> bool:
    """``v = x + 0.044715 * x^3`` (``Pow(x, 3)``, ``x*x*x`` or ``x*(x*x)``)."""
    add = v.producer
    if not _op(add, "Add") or _other(add, x) is None:
        return False
    t = _other(add, x)
    mul = t.producer
    if not _op(mul, "Mul") or m.sole_consumer(t, "Add") is not add:
        return False
    cube = None
    for c in mul.inputs:
        if c is not None and _close(_scalar_of(_other(mul, c), x), 0.044715):
            cube = c
    if cube is None or m.sole_consumer(cube, "Mul") is not mul:
        return False
    p = cube.producer
    nodes = [add, mul]
    if _op(p, "Pow") and p.inputs[0] is x and _scalar_of(p.input(1), x) == 3.0:
        nodes.append(p)
    elif _op(p, "Mul") and len(p.inputs) == 2 and x in p.inputs:
        sq = _other(p, x) if p.inputs.count(x) == 1 else None
        q = sq.producer if sq is not None else None
        if not (_op(q, "Mul") and q.inputs[0] is x and q.inputs[1] is x
                and m.sole_consumer(sq, "Mul") is p):
            return False
        nodes += [p, q]
    else:
        return False
    m.add(*nodes)
    return True


def _gelu_tail(m: _Match, h: Value, x: Value) -> Node | None:
    """The final node of ``0.5 * x * h`` (two Muls, any order), or None."""
    m1 = m.sole_consumer(h, "Mul")
    if m1 is None:
        return None
    o = _other(m1, h)
    if o is None:
        return None
    if o is x:
        m2 = m.sole_consumer(m1.outputs[0], "Mul")
        if m2 is None or not _close(_scalar_of(_other(m2, m1.outputs[0]), x), 0.5):
            return None
        m.add(m1, m2)
        return m2
    if _close(_scalar_of(o, x), 0.5):
        m2 = m.sole_consumer(m1.outputs[0], "Mul")
        if m2 is None or _other(m2, m1.outputs[0]) is not x:
            return None
        m.add(m1, m2)
        return m2
    p = o.producer
    if _op(p, "Mul") and _other(p, x) is not None and _close(_scalar_of(_other(p, x), x), 0.5):
        if m.sole_consumer(o, "Mul") is not m1:
            return None
        m.add(p, m1)
        return m1
    return None


def fuse_gelu(graph: Graph, ctx) -> bool:
    """Decomposed erf / tanh Gelu → ``Gelu`` (see the module docstring for when it runs)."""
    if not (ctx.allow_fused or int(graph.opset.get("", 0) or 0) >= 20):
        return False
    pinned = pinned_names(graph)
    changed = False
    for f in list(graph.nodes):
        if not _op(f, "Erf", "Tanh") or not _alive(f):
            continue
        m = _Match(graph, pinned)
        if f.op_type == "Erf":
            x = _scaled_input(m, f.inputs[0], 1.0 / _SQRT2)
            approx = "none"
        else:
            u = _scaled_input(m, f.inputs[0], _TANH_K)
            x = None
            if u is not None and u.producer is not None and m.sole_consumer(u, "Mul"):
                for cand in u.producer.inputs:
                    if cand is not None and const(cand) is None and _cube_term(m, u, cand):
                        x = cand
                        break
            approx = "tanh"
        if x is None or x.dtype not in _FLOATS:
            continue
        m.add(f)
        add = m.sole_consumer(f.outputs[0], "Add")
        if add is None or not _close(_scalar_of(_other(add, f.outputs[0]), x), 1.0):
            continue
        m.add(add)
        final = _gelu_tail(m, add.outputs[0], x)
        if final is None or not m.internal(final):
            continue
        attrs = {"approximate": approx} if approx != "none" else {}
        m.replace(final, "Gelu", [x], attrs, version=20)
        ctx.count(removed=len(m.nodes) - 1, fused=1)
        changed = True
    return changed
