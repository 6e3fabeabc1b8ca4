"""Level-2 channel-shuffle recognition (ShuffleNet).

Exporters write ShuffleNet's channel shuffle as three data movements::

    t = Reshape(x, [N, g, C/g, *S])        x: [N, C, *S]
    u = Transpose(t, perm=[0, 2, 1, 3, ...])
    y = Reshape(u, [N, C, *S])

which is one permutation of the channel axis: ``y[:, j*g + i] = x[:, i*(C/g) + j]``. The pass
replaces the three nodes by one:

* with ``allow_fused``: ``edgert.ChannelShuffle(x, group=g)``, which the runtime runs as a
  single copy of channel planes (:mod:`edgert.runtime.kernels.cpu.shuffle`);
* otherwise, only when :data:`STANDARD_GATHER` is set: the standard ``Gather(x, perm, axis=1)``
  with the constant channel permutation ``perm[j*g + i] = i*(C/g) + j`` (any ONNX runtime runs
  it; one node and one copy too). It is off by default because the int8 quantizer
  (:mod:`edgert.quantization.quantizer`, which optimizes with standard ops) moves Reshape and
  Transpose in int8 but keeps a Gather in float between Dequantize/Quantize: ShuffleNet's 16
  shuffles would leave the int8 path. Turn it on once the quantizer treats a Gather with
  constant indices as data movement.

Declines unless: ``x``, ``t``, ``u`` and ``y`` have known ranks and channel/spatial dims
(``N`` may be symbolic but must be the same dim everywhere); ``t`` is exactly
``[N, g, C/g, *S]``, the perm swaps axes 1 and 2 only, and ``y`` has ``x``'s shape; ``t`` and
``u`` are read only by the next node of the pattern and are neither graph outputs nor read by a
control-flow body.
"""

from __future__ import annotations

import numpy as np

from edgert.ir import Graph, Node
from edgert.optimizer._util import new_const, pinned_names, single_use

# Rewrite to a standard Gather without fused ops (see the module docstring for why it is off).
STANDARD_GATHER = False


def _is(node: Node | None, op: str) -> bool:
    return node is not None and node.domain == "" and node.op_type == op


def _dims_known(shape: list | None) -> bool:
    """Every dim except the first is an int (the batch dim may be a symbol)."""
    return (shape is not None and len(shape) >= 2 and shape[0] is not None
            and all(isinstance(d, int) for d in shape[1:]))


def fuse_channel_shuffle(graph: Graph, ctx) -> bool:
    """``Reshape → Transpose(0,2,1,...) → Reshape`` channel shuffle → one node (see module)."""
    if not (ctx.allow_fused or STANDARD_GATHER):
        return False
    pinned = pinned_names(graph)
    changed = False
    for r1 in list(graph.nodes):
        if not _is(r1, "Reshape") or not r1.outputs or r1.outputs[0].producer is not r1:
            continue
        x, t = r1.inputs[0], r1.outputs[0]
        if x is None or not _dims_known(x.shape) or not _dims_known(t.shape):
            continue
        if not single_use(graph, t, pinned):
            continue
        tr = t.consumers[0]
        if not _is(tr, "Transpose") or tr.inputs[0] is not t:
            continue
        u = tr.outputs[0]
        if not single_use(graph, u, pinned):
            continue
        r2 = u.consumers[0]
        if not _is(r2, "Reshape") or r2.inputs[0] is not u:
            continue
        y = r2.outputs[0]
        xs, ts, us, ys = x.shape, t.shape, u.shape, y.shape
        if ys is None or us is None or len(ts) != len(xs) + 1:
            continue
        n, c = xs[0], xs[1]
        g = ts[1]
        if g < 1 or c % g or list(ts) != [n, g, c // g] + list(xs[2:]):
            continue
        perm = tr.attrs.get("perm")
        if perm is None or [int(p) for p in perm] != [0, 2, 1] + list(range(3, len(ts))):
            continue
        if list(us) != [n, c // g, g] + list(xs[2:]) or list(ys) != list(xs):
            continue
        if x.dtype and y.dtype and x.dtype != y.dtype:
            continue
        graph.remove_node(r1)
        graph.remove_node(tr)
        idx = graph.nodes.index(r2)
        graph.remove_node(r2)
        if ctx.allow_fused:
            graph.add_node("ChannelShuffle", [x], [y], {"group": int(g)}, name=r2.name,
                           domain="edgert", version=1, index=idx)
            graph.opset.setdefault("edgert", 1)
        else:
            cg = c // g
            order = np.arange(c, dtype=np.int64).reshape(g, cg).T.reshape(-1)
            graph.add_node("Gather", [x, new_const(graph, "shuffle_perm", order)], [y],
                           {"axis": 1}, name=r2.name, version=13, index=idx)
        ctx.count(removed=2, fused=1)
        changed = True
    return changed
