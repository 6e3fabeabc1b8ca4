"""Level-2 fusions: fold affine ops into weights, merge ops into richer ONNX ops, fuse activations.

Algebra (per output channel ``c``; ``s = gamma / sqrt(var + eps)``):

* ``BN(Conv(x, W, B)) = Conv(x, W * s[c], (B - mean) * s + beta)`` — W scaled along its output
  channel axis (axis 0 for Conv; for ConvTranspose ``W`` is ``(C, M/G, k...)`` and output channel
  ``g * M/G + m`` is scaled at ``W[g*C/G:(g+1)*C/G, m]``).
* ``BN(Gemm(a, B, C)) = Gemm(a, alpha * B * s, (beta * C - mean) * s + bn_beta)`` with alpha and
  beta reset to 1 (``B`` scaled along its output axis, which depends on ``transB``);
  ``BN(MatMul(a, W))`` for 2-D ``a`` becomes the same Gemm with ``C = beta - mean * s``.
* ``Mul(Conv(x, W, B), k) = Conv(x, W * k[c], B * k)``; ``Add(Conv(x, W, B), k) = Conv(x, W, B+k)``
  for ``k`` constant per output channel (or scalar); the same for Gemm with ``k`` per column.
* ``Mul(BN(x), k)`` / ``Add(BN(x), k)`` merge into BN's scale and bias: ``gamma*k, beta*k`` /
  ``beta + k``.
* ``Add(MatMul(a, B), C) = Gemm(a, B, C)`` when ``a`` and ``B`` are 2-D and ``C`` broadcasts to the
  output without growing it.
* ``Conv(Pad(x, p))`` = ``Conv(x)`` with ``pads += p`` for zero constant padding of spatial axes;
  ``AveragePool(Pad(x, p))`` likewise with ``count_include_pad=1`` (padding zeros are counted),
  ``MaxPool(Pad(x, p, v))`` when ``v`` is at most every element of ``x`` (see
  :func:`fold_pad_into_pool`).

Every pass declines (leaves the graph alone) unless: the weights and the folded parameters are
constants; the intermediate value has exactly one consumer and is neither a graph output nor
read by a control-flow body; the shapes the algebra relies on are known.
"""

from __future__ import annotations

import math

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value
from edgert.optimizer._util import (
    const,
    is_graph_output,
    new_const,
    pinned_names,
    scalar,
    single_use,
)

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_FLOAT_KINDS = "f"


def _plain(node: Node, ops: tuple[str, ...]) -> bool:
    """A node of one of ``ops`` in the default domain or an ``edgert`` node without activation
    or residual sum (the algebra of the folding passes does not hold through either)."""
    return node.op_type in ops and not _beyond_plain_conv(node) and (
        node.domain == "" or (node.domain == "edgert" and not node.attrs.get("activation"))
    )


def _beyond_plain_conv(node: Node) -> bool:
    """An ``edgert.Conv`` with its fused residual input ``Z`` (see :func:`fuse_residual_add`)
    or a fused channel shuffle (:func:`fuse_shuffle_into_conv`): either way its output is no
    longer the plain ``conv + B`` that the folding passes assume."""
    return node.domain == "edgert" and node.op_type == "Conv" and (
        node.input(3) is not None or bool(node.attrs.get("channel_shuffle")))


def _next(graph: Graph, v: Value, pinned: set[str], ops: tuple[str, ...]) -> Node | None:
    """The single consumer of ``v`` when it is one of ``ops`` (default domain); ``v`` may go."""
    if not single_use(graph, v, pinned):
        return None
    c = v.consumers[0]
    return c if c.op_type in ops and c.domain == "" else None


def _splice(graph: Graph, producer: Node, follower: Node) -> None:
    """Remove ``follower`` and make ``producer`` write its output (the intermediate vanishes)."""
    out = follower.outputs[0]
    mid = producer.outputs[0]
    graph.remove_node(follower)
    producer.outputs[0] = out
    out.producer = producer
    mid.producer = None
    if out.shape is None and mid.shape is not None:
        out.shape = list(mid.shape)


def _channel_vector(k: np.ndarray, rank: int | None, channels: int, axis: int) -> np.ndarray | None:
    """``k`` as a length-``channels`` vector if it broadcasts only along ``axis``, else None."""
    if rank is None or k.ndim > rank:
        return None
    shape = (1,) * (rank - k.ndim) + k.shape
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            return None
    if shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(k.reshape(-1) if k.size > 1 else k.reshape(1), (channels,)).astype(
        np.float64
    )


def _weight_info(node: Node) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """(W, B or None, output channels) of a Conv/ConvTranspose/Gemm/MatMul with const weights."""
    w = const(node.input(1))
    if w is None or w.dtype.kind not in _FLOAT_KINDS:
        return None
    b_val = node.input(2)
    b = None
    if b_val is not None:
        b = const(b_val)
        if b is None:
            return None
    op = node.op_type
    if op == "Conv":
        m = w.shape[0]
    elif op == "ConvTranspose":
        g = int(node.attrs.get("group", 1))
        if w.ndim < 2 or g < 1 or w.shape[0] % g:
            return None
        m = w.shape[1] * g
    elif op == "Gemm":
        if w.ndim != 2:
            return None
        m = w.shape[0] if node.attrs.get("transB", 0) else w.shape[1]
    else:  # MatMul
        if w.ndim != 2:
            return None
        m = w.shape[1]
    if b is not None and op in ("Conv", "ConvTranspose") and b.shape != (m,):
        return None
    return w, b, m


def _scale_weights(node: Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``w`` with output channel ``c`` multiplied by ``s[c]`` (float64 math, ``w``'s dtype)."""
    op = node.op_type
    w64 = w.astype(np.float64)
    if op == "Conv":
        out = w64 * s.reshape((-1,) + (1,) * (w.ndim - 1))
    elif op == "ConvTranspose":
        g = int(node.attrs.get("group", 1))
        cin, mg = w.shape[0], w.shape[1]
        view = w64.reshape((g, cin // g, mg) + w.shape[2:])
        out = (view * s.reshape((g, 1, mg) + (1,) * (w.ndim - 2))).reshape(w.shape)
    elif op == "Gemm" and node.attrs.get("transB", 0):
        out = w64 * s[:, None]
    else:  # Gemm (K, M) or MatMul (K, M)
        out = w64 * s[None, :]
    return out.astype(w.dtype)


def _gemm_bias(node: Node, b: np.ndarray | None, m: int) -> np.ndarray | None:
    """A Gemm/MatMul bias as a float64 vector of length ``m`` (None if it is not per column)."""
    if b is None:
        return np.zeros(m)
    beta = float(node.attrs.get("beta", 1.0)) if node.op_type == "Gemm" else 1.0
    if b.size == 1:
        return np.full(m, float(b.reshape(-1)[0]) * beta)
    if b.shape in ((m,), (1, m)):
        return b.reshape(-1).astype(np.float64) * beta
    return None


def _out_rank(node: Node) -> int | None:
    return node.outputs[0].rank


def _rewrite_weights(graph: Graph, node: Node, w: np.ndarray, b: np.ndarray) -> None:
    """Give ``node`` new constant weights and bias (Gemm's alpha/beta reset to 1)."""
    wv = new_const(graph, (node.input(1).name if node.input(1) else "w") + "_folded", w)
    bv = new_const(graph, (node.name or node.op_type.lower()) + "_bias_folded", b)
    graph.set_input(node, 1, wv)
    if len(node.inputs) < 3:
        node.inputs.append(None)
    graph.set_input(node, 2, bv)
    if node.op_type == "Gemm":
        node.attrs["alpha"] = 1.0
        node.attrs["beta"] = 1.0


def _as_gemm(graph: Graph, node: Node) -> bool:
    """Turn a 2-D MatMul into a Gemm in place (so it can take a bias); False if not 2-D."""
    if node.op_type == "Gemm":
        return True
    a = node.input(0)
    if a is None or a.rank != 2:
        return False
    node.op_type = "Gemm"
    node.version = max(node.version, 11)
    return True


# ----- passes -------------------------------------------------------------------------------------
def sum_to_add(graph: Graph, ctx) -> bool:
    """``Sum(a, b)`` → ``Add(a, b)`` (same broadcasting), so Add patterns see residual sums."""
    changed = False
    for node in graph.nodes:
        if node.op_type == "Sum" and node.domain == "" and len(node.inputs) == 2 and all(
            v is not None for v in node.inputs
        ):
            node.op_type = "Add"
            node.version = max(node.version, 7)
            changed = True
    return changed


def fold_pad_into_conv(graph: Graph, ctx) -> bool:
    """``Conv(Pad(x))`` → ``Conv(x, pads + p)``.

    Declines unless: Pad is mode "constant" with value 0 (or omitted), constant pads that are
    zero on N and C and non-negative elsewhere, no ``axes`` input; the Conv has explicit pads
    (``auto_pad`` NOTSET); the padded tensor has one consumer.
    """
    pinned = pinned_names(graph)
    changed = False
    for pad in list(graph.nodes):
        if pad.op_type != "Pad" or pad.domain != "" or pad.attrs.get("mode", "constant") != (
            "constant"
        ):
            continue
        pads = const(pad.input(1))
        value = pad.input(2)
        if pads is None or pad.input(3) is not None:
            continue
        if value is not None and scalar(value) != 0.0:
            continue
        conv = _next(graph, pad.outputs[0], pinned, ("Conv",))
        if conv is None or conv.inputs[0] is not pad.outputs[0]:
            continue
        if conv.attrs.get("auto_pad", "NOTSET") != "NOTSET":
            continue
        r = pads.size // 2
        p = [int(x) for x in pads.reshape(-1)]
        if r < 3 or any(x < 0 for x in p) or p[0] or p[1] or p[r] or p[r + 1]:
            continue
        k = r - 2
        old = list(conv.attrs.get("pads", [0] * (2 * k)))
        if len(old) != 2 * k:
            continue
        conv.attrs["pads"] = [old[i] + p[2 + i] for i in range(k)] + [
            old[k + i] + p[r + 2 + i] for i in range(k)
        ]
        graph.set_input(conv, 0, pad.inputs[0])
        graph.remove_node(pad)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def _lower_bound(v: Value) -> float | None:
    """A value no element of ``v`` is below, when its producer proves one (else None).

    Relu and Sigmoid give 0; Clip its constant lower bound; an ``edgert`` op with a fused Relu,
    Sigmoid or Clip activation likewise. (NaN compares with nothing; MaxPool propagates it
    whether or not the padding is explicit.)
    """
    p = v.producer
    if p is None:
        return None
    op = p.op_type
    if p.domain == "edgert":
        op = p.attrs.get("activation") or ""
        if op == "Clip":
            params = p.attrs.get("activation_params") or []
            return float(params[0]) if params else None
    elif p.domain != "":
        return None
    if op in ("Relu", "Sigmoid"):
        return 0.0
    if op == "Clip" and p.domain == "":
        lo = scalar(p.input(1))
        return lo if lo is not None and not math.isnan(lo) else None
    return None


def fold_pad_into_pool(graph: Graph, ctx) -> bool:
    """``MaxPool(Pad(x))`` / ``AveragePool(Pad(x))`` → the pool with ``pads += p``.

    A pool's own padding is not a value: MaxPool ignores it (as if -inf), AveragePool counts it
    only with ``count_include_pad=1``. So, with ``v`` the Pad's constant:

    * AveragePool: ``v == 0``, and the result gets ``count_include_pad=1`` — allowed only when
      the pool already counts its padding or has none (else its old pads would start counting).
    * MaxPool: ``v`` must be at most every element of ``x``: ``v = -inf``, or a proven lower bound
      of ``x`` (Relu, Sigmoid, Clip, a fused activation) that is ``>= v``; only the ``Y`` output
      (``Indices`` would change); each window must still hold a real element, which the
      ``dilations == 1`` and ``pads < kernel`` checks below guarantee.

    Both: Pad mode "constant", constant non-negative pads, zero on N and C, no ``axes`` input;
    ``auto_pad`` NOTSET, dilations 1, every combined pad smaller than the kernel (onnxruntime
    and the edgert kernel reject larger); with ``ceil_mode=1`` no end padding from the Pad
    (the "window starts in the end padding" rule would drop a window the original kept); the
    padded tensor has one reader.
    """
    pinned = pinned_names(graph)
    changed = False
    for pad in list(graph.nodes):
        if pad.op_type != "Pad" or pad.domain != "" or pad.attrs.get("mode", "constant") != (
            "constant"
        ):
            continue
        pads = const(pad.input(1))
        if pads is None or pad.input(3) is not None or pad.inputs[0] is None:
            continue
        value_in = pad.input(2)
        v = 0.0 if value_in is None else scalar(value_in)
        if v is None or math.isnan(v):
            continue
        pool = _next(graph, pad.outputs[0], pinned, ("MaxPool", "AveragePool"))
        if pool is None or pool.inputs[0] is not pad.outputs[0]:
            continue
        a = pool.attrs
        if a.get("auto_pad", "NOTSET") != "NOTSET" or any(int(d) != 1 for d in
                                                             a.get("dilations", [])):
            continue
        ks = [int(k) for k in a.get("kernel_shape", [])]
        k = len(ks)
        r = pads.size // 2
        p = [int(x) for x in pads.reshape(-1)]
        if k == 0 or r != k + 2 or any(x < 0 for x in p) or p[0] or p[1] or p[r] or p[r + 1]:
            continue
        old = [int(x) for x in a.get("pads", [0] * (2 * k))]
        if len(old) != 2 * k:
            continue
        new = [old[i] + p[2 + i] for i in range(k)] + [old[k + i] + p[r + 2 + i]
                                                       for i in range(k)]
        if any(new[i] >= ks[i] or new[k + i] >= ks[i] for i in range(k)):
            continue
        if int(a.get("ceil_mode", 0)) and any(p[r + 2 + i] for i in range(k)):
            continue
        if pool.op_type == "AveragePool":
            if v != 0.0 or (not int(a.get("count_include_pad", 0)) and any(old)):
                continue
        else:
            if len(pool.outputs) > 1 and (pool.outputs[1].consumers
                                          or pool.outputs[1].name in pinned):
                continue
            lb = _lower_bound(pad.inputs[0])
            if not (v == -math.inf or (lb is not None and lb >= v)):
                continue
        pool.attrs["pads"] = new
        if pool.op_type == "AveragePool":
            pool.attrs["count_include_pad"] = 1
        graph.set_input(pool, 0, pad.inputs[0])
        graph.remove_node(pad)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def fold_batchnorm(graph: Graph, ctx) -> bool:
    """``BatchNormalization(Conv|ConvTranspose|Gemm|MatMul(x, W, B))`` → one op with new W, B.

    Declines unless W, B and all four BN parameters are constants, the BN's extra outputs (if
    any) are unread, the producer's output is read only by the BN, and (Gemm/MatMul) the output
    is 2-D; MatMul needs a 2-D first input (it becomes a Gemm).
    """
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if not _plain(node, _WEIGHTED):
            continue
        bn = _next(graph, node.outputs[0], pinned, ("BatchNormalization",))
        if bn is None or any(v.consumers or v.name in pinned for v in bn.outputs[1:]):
            continue
        params = [const(bn.input(i)) for i in range(1, 5)]
        if any(p is None for p in params) or bn.attrs.get("training_mode", 0):
            continue
        info = _weight_info(node)
        if info is None:
            continue
        w, b, m = info
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        if any(p.size != m for p in (gamma, beta, mean, var)):
            continue
        if node.op_type in ("Gemm", "MatMul") and _out_rank(node) != 2:
            continue
        eps = float(bn.attrs.get("epsilon", 1e-5))
        s = gamma / np.sqrt(var + eps)
        if node.op_type in ("Conv", "ConvTranspose"):
            b64 = np.zeros(m) if b is None else b.astype(np.float64)
            new_w = _scale_weights(node, w, s)
        else:
            b64 = _gemm_bias(node, b, m)
            if b64 is None or not _as_gemm(graph, node):
                continue
            alpha = float(node.attrs.get("alpha", 1.0))
            new_w = _scale_weights(node, w, s * alpha)
        new_b = ((b64 - mean) * s + beta).astype(w.dtype)
        _rewrite_weights(graph, node, new_w, new_b)
        _splice(graph, node, bn)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def fold_affine_into_producer(graph: Graph, ctx) -> bool:
    """``Mul(op(x), k)`` / ``Add(op(x), k)`` → ``op`` with scaled weights / shifted bias.

    ``op`` is Conv, ConvTranspose or Gemm with constant weights; ``k`` a constant that is a
    scalar or varies only along the output-channel axis (axis 1), so the output shape and dtype
    do not change. Declines for a MatMul (see :func:`matmul_add_to_gemm`), a fused activation,
    or an intermediate with other readers.
    """
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if not _plain(node, ("Conv", "ConvTranspose", "Gemm")):
            continue
        nxt = _next(graph, node.outputs[0], pinned, ("Mul", "Add"))
        if nxt is None or len(nxt.inputs) != 2:
            continue
        other = nxt.inputs[1] if nxt.inputs[0] is node.outputs[0] else nxt.inputs[0]
        k = const(other)
        info = _weight_info(node)
        if k is None or info is None or k.dtype != info[0].dtype:
            continue
        w, b, m = info
        vec = _channel_vector(k, _out_rank(node), m, 1)
        if vec is None:
            continue
        if node.op_type == "Gemm":
            b64 = _gemm_bias(node, b, m)
            if b64 is None:
                continue
            alpha = float(node.attrs.get("alpha", 1.0))
            w = _scale_weights(node, w, np.full(m, alpha)) if alpha != 1.0 else w
        else:
            b64 = np.zeros(m) if b is None else b.astype(np.float64)
        if nxt.op_type == "Mul":
            new_w, new_b = _scale_weights(node, w, vec), b64 * vec
        else:
            new_w, new_b = w, b64 + vec
        _rewrite_weights(graph, node, new_w, new_b.astype(w.dtype))
        _splice(graph, node, nxt)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def merge_affine_into_batchnorm(graph: Graph, ctx) -> bool:
    """``Mul(BN(x), k)`` / ``Add(BN(x), k)`` → one BN with ``gamma*k, beta*k`` / ``beta+k``.

    ``k`` must be a constant per channel (axis 1) or a scalar, of BN's dtype; BN's parameters
    constants; x's rank known.
    """
    pinned = pinned_names(graph)
    changed = False
    for bn in list(graph.nodes):
        if bn.op_type != "BatchNormalization" or bn.domain != "" or len(bn.outputs) != 1:
            continue
        nxt = _next(graph, bn.outputs[0], pinned, ("Mul", "Add"))
        if nxt is None or len(nxt.inputs) != 2:
            continue
        other = nxt.inputs[1] if nxt.inputs[0] is bn.outputs[0] else nxt.inputs[0]
        k = const(other)
        gamma, beta = const(bn.input(1)), const(bn.input(2))
        if k is None or gamma is None or beta is None or k.dtype != gamma.dtype:
            continue
        if const(bn.input(3)) is None or const(bn.input(4)) is None:
            continue
        vec = _channel_vector(k, bn.inputs[0].rank, gamma.size, 1)
        if vec is None:
            continue
        g64, b64 = gamma.astype(np.float64), beta.astype(np.float64)
        if nxt.op_type == "Mul":
            g64, b64 = g64 * vec, b64 * vec
        else:
            b64 = b64 + vec
        graph.set_input(bn, 1, new_const(graph, "bn_scale_merged", g64.astype(gamma.dtype)))
        graph.set_input(bn, 2, new_const(graph, "bn_bias_merged", b64.astype(beta.dtype)))
        _splice(graph, bn, nxt)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def matmul_add_to_gemm(graph: Graph, ctx) -> bool:
    """``Add(MatMul(a, B), C)`` → ``Gemm(a, B, C)`` for 2-D ``a`` and ``B``.

    ``C`` must have a static shape that broadcasts to the ``(N, M)`` output without growing it
    (Gemm broadcasts C one way only); the MatMul result must be read only by the Add.
    """
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if node.op_type != "MatMul" or node.domain != "":
            continue
        a, bw = node.input(0), node.input(1)
        if a is None or bw is None or a.rank != 2 or bw.rank != 2:
            continue
        add = _next(graph, node.outputs[0], pinned, ("Add",))
        if add is None or len(add.inputs) != 2:
            continue
        c = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
        cs, ys = c.static_shape() if c is not None else None, node.outputs[0].static_shape()
        if cs is None or ys is None or len(cs) > 2 or c.dtype != a.dtype:
            continue
        try:
            if tuple(np.broadcast_shapes(cs, ys)) != ys:
                continue
        except ValueError:
            continue
        node.op_type = "Gemm"
        node.version = max(node.version, 11)
        node.inputs.append(None)
        graph.set_input(node, 2, c)
        _splice(graph, node, add)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def fuse_matmul_bias(graph: Graph, ctx) -> bool:
    """``Add(MatMul(x, W), b)`` → ``edgert.MatMul(x, W, b)`` for a batched ``x`` (rank >= 3:
    a transformer's ``[batch, seq, hidden]``), a constant 2-D ``W`` and a constant ``b`` of one
    value per output column: the bias is added in the GEMM's epilogue (with the activation
    :func:`fuse_activation` may fuse next, e.g. a Gelu) instead of one more pass over the
    output. (Rank-2 ``x`` becomes a Gemm: :func:`matmul_add_to_gemm`.) Runs only with
    ``allow_fused``."""
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if not _plain(node, ("MatMul",)) or len(node.inputs) != 2:
            continue
        x, w = node.input(0), node.input(1)
        if x is None or w is None or x.rank is None or x.rank < 3 or w.const is None \
                or w.const.ndim != 2 or x.dtype not in (dtypes.FLOAT, dtypes.DOUBLE):
            continue
        add = _next(graph, node.outputs[0], pinned, ("Add",))
        if add is None or len(add.inputs) != 2 or add.inputs[0] is add.inputs[1]:
            continue
        b = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
        n = w.const.shape[1]
        bc = None if b is None else b.const
        if bc is None or b.dtype != x.dtype or bc.size != n or (bc.ndim and bc.shape[-1] != n) \
                or bc.ndim > x.rank:
            continue
        node.domain = "edgert"
        graph.opset.setdefault("edgert", 1)
        node.inputs.append(None)
        graph.set_input(node, 2, b)
        _splice(graph, node, add)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


# ----- residual sum fusion (edgert domain) --------------------------------------------------------
def _same_dims(a: Value, b: Value) -> bool:
    """Both shapes known and equal dim for dim (equal sizes or the same symbolic name)."""
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    return all(x == y and isinstance(x, (int, str)) and x != "" for x, y in zip(a.shape, b.shape))


def fuse_residual_add(graph: Graph, ctx) -> bool:
    """``Add(Conv(x, W, B), z)`` → ``edgert.Conv(x, W, B, z)``: the residual sum of ResNet,
    MobileNetV2 and ShuffleNet blocks added in the conv's epilogue, while its output block is in
    cache, instead of one more pass over memory (as onnxruntime's FusedConv ``Z`` input).
    :func:`fuse_activation` then fuses a following Relu as ``act(conv + B + z)``.

    Runs only with ``allow_fused``. Declines unless: the Add has no broadcasting (``z``, the
    conv's output and the Add's output have the same known shape and float dtype); ``z`` is not
    a constant (per-channel constants fold into the bias instead); the conv has neither an
    activation nor a residual already, and its output has no other reader and is not a graph
    output. When both operands qualify, the second one's conv takes the sum.
    """
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    changed = False
    for add in list(graph.nodes):
        if add.op_type != "Add" or add.domain != "" or len(add.inputs) != 2:
            continue
        y = add.outputs[0]
        if y.dtype not in (dtypes.FLOAT, dtypes.DOUBLE):
            continue
        for i in (1, 0):
            mid, z = add.inputs[i], add.inputs[1 - i]
            if mid is None or z is None or mid is z or z.const is not None:
                continue
            conv = mid.producer
            if conv is None or not _plain(conv, ("Conv",)) or len(conv.inputs) > 3:
                continue
            if not single_use(graph, mid, pinned):
                continue
            if not (_same_dims(mid, y) and _same_dims(z, y)) or mid.dtype != y.dtype \
                    or z.dtype != y.dtype:
                continue
            # Keep the node list topological: the conv moves to the Add's place (its inputs and
            # z are all computed before the Add; its output's readers all come after).
            graph.nodes.remove(conv)
            graph.nodes.insert(graph.nodes.index(add), conv)
            _splice(graph, conv, add)
            while len(conv.inputs) < 3:
                conv.inputs.append(None)
            conv.inputs.append(None)
            graph.set_input(conv, 3, z)
            conv.domain = "edgert"
            graph.opset.setdefault("edgert", 1)
            ctx.count(removed=1, fused=1)
            changed = True
            break
    return changed


def fuse_shuffle_into_conv(graph: Graph, ctx) -> bool:
    """``edgert.ChannelShuffle(Conv(x), group=g)`` → ``edgert.Conv`` with ``channel_shuffle=g``
    when the conv has ``g`` groups: each group's output rows go straight to their shuffled
    places (ShuffleNet's grouped 1x1 convs), one copy of the activations less.

    Output channel ``i * C/g + j`` of the conv (group ``i``, row ``j``) is written at channel
    ``j * g + i``, as ChannelShuffle moves it. The conv may already carry its activation and
    residual (they apply before the move). Runs only with ``allow_fused``; declines when the
    conv's output has other readers or is a graph output, or its group count differs.
    """
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        if node.op_type != "Conv" or node.domain not in ("", "edgert") \
                or node.attrs.get("channel_shuffle"):
            continue
        sh = _next_any(graph, node.outputs[0], pinned)
        if sh is None or sh.op_type != "ChannelShuffle" or sh.domain != "edgert":
            continue
        g = int(sh.attrs.get("group", 0))
        if g < 2 or int(node.attrs.get("group", 1)) != g:
            continue
        _splice(graph, node, sh)
        node.domain = "edgert"
        node.attrs["channel_shuffle"] = g
        graph.opset.setdefault("edgert", 1)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed


def _next_any(graph: Graph, v: Value, pinned: set[str]) -> Node | None:
    """The single reader of ``v`` (any domain), when ``v`` may disappear."""
    return v.consumers[0] if single_use(graph, v, pinned) else None


# ----- activation fusion (edgert domain) ----------------------------------------------------------
def _activation_params(graph: Graph, act: Node) -> list[float] | None:
    """``activation_params`` for an activation node, or None when it cannot be fused."""
    op = act.op_type
    if op in ("Relu", "Sigmoid", "Tanh", "HardSwish"):
        return []
    if op == "LeakyRelu":
        return [float(act.attrs.get("alpha", 0.01))]
    if op == "HardSigmoid":
        return [float(act.attrs.get("alpha", 0.2)), float(act.attrs.get("beta", 0.5))]
    if op == "Gelu":
        return [] if act.attrs.get("approximate", "none") == "none" else None
    if op == "Swish":
        return [float(act.attrs.get("alpha", 1.0))]
    if op == "Clip":
        lo, hi = act.input(1), act.input(2)
        lo_v = -math.inf if lo is None else scalar(lo)
        hi_v = math.inf if hi is None else scalar(hi)
        if lo_v is None or hi_v is None:
            return None
        return [lo_v, hi_v]
    return None


_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu",
                "Swish")


def fuse_silu(graph: Graph, ctx) -> bool:
    """``Mul(y, Sigmoid(y))`` (SiLU as exporters write it: YOLOv5/v8, EfficientNet) with ``y``
    the output of a Conv/ConvTranspose/Gemm/MatMul → that op with the fused activation
    ``Swish`` (alpha 1), computed in its epilogue while the output block is in cache instead of
    two more passes. Declines unless ``y`` is read by exactly that Sigmoid and Mul and the
    sigmoid only by the Mul, none of them a graph output. Runs only with ``allow_fused``."""
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    changed = False
    for mul in list(graph.nodes):
        if mul.op_type != "Mul" or mul.domain != "" or len(mul.inputs) != 2 or \
                mul.inputs[0] is mul.inputs[1]:
            continue
        for y, s in (mul.inputs, mul.inputs[::-1]):
            sig = None if s is None else s.producer
            if y is None or sig is None or sig.op_type != "Sigmoid" or sig.domain != "" \
                    or sig.inputs[0] is not y:
                continue
            prod = y.producer
            if prod is None or not (_plain(prod, _WEIGHTED) or (
                    prod.op_type == "Conv" and _beyond_plain_conv(prod)
                    and not prod.attrs.get("activation"))):
                continue
            if y.dtype not in (0, dtypes.FLOAT, dtypes.DOUBLE) or len(y.consumers) != 2 \
                    or {id(c) for c in y.consumers} != {id(sig), id(mul)} \
                    or y.name in pinned or is_graph_output(graph, y) \
                    or not single_use(graph, s, pinned):
                continue
            graph.remove_node(sig)
            _splice(graph, prod, mul)
            prod.domain = "edgert"
            prod.attrs["activation"] = "Swish"
            prod.attrs["activation_params"] = [1.0]
            graph.opset.setdefault("edgert", 1)
            ctx.count(removed=2, fused=1)
            changed = True
            break
    return changed


def fuse_activation(graph: Graph, ctx) -> bool:
    """``act(op(x))`` → ``edgert.op(x)`` with ``activation`` / ``activation_params`` attributes.

    ``op`` is Conv, ConvTranspose, Gemm or MatMul; ``act`` one of the activations the CPU
    epilogue implements (Relu, Clip with constant bounds, LeakyRelu, Sigmoid, HardSigmoid,
    HardSwish, Tanh, exact Gelu). Runs only with ``allow_fused`` (the result needs the edgert
    runtime). Declines when the op's output has other readers or is a graph output, or the
    activation's dtype differs (it never does for valid models).
    """
    if not ctx.allow_fused:
        return False
    pinned = pinned_names(graph)
    changed = False
    for node in list(graph.nodes):
        # a residual or shuffle conv takes its activation too (applied before the shuffle's move)
        fused_conv = (node.op_type == "Conv" and _beyond_plain_conv(node)
                      and not node.attrs.get("activation"))
        # (edgert.MatMulIntegerToFloat, quantize_dynamic's fused layer, takes one too)
        if not (_plain(node, _WEIGHTED + ("MatMulIntegerToFloat",)) or fused_conv):
            continue
        act = _next(graph, node.outputs[0], pinned, _ACTIVATIONS)
        if act is None or act.inputs[0] is not node.outputs[0]:
            continue
        params = _activation_params(graph, act)
        if params is None:
            continue
        y = act.outputs[0]
        if y.dtype and node.outputs[0].dtype and y.dtype != node.outputs[0].dtype:
            continue
        if y.dtype not in (0, dtypes.FLOAT, dtypes.DOUBLE):
            continue
        _splice(graph, node, act)
        node.domain = "edgert"
        node.attrs["activation"] = act.op_type
        if params:
            node.attrs["activation_params"] = params
        graph.opset.setdefault("edgert", 1)
        ctx.count(removed=1, fused=1)
        changed = True
    return changed
