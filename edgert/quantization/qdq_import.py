"""A QDQ ONNX model -> edgert's native int8 graph, with the model's own scales and zero points.

ONNX's interchange form for int8 models is QDQ: float ops between ``QuantizeLinear`` ->
``DequantizeLinear`` pairs, weights as int8 initializers behind a ``DequantizeLinear``
(onnxruntime's ``quantize_static(quant_format=QuantFormat.QDQ)``, PyTorch's exporters, edgert's
own ``quantize(format="onnx")``, :mod:`.qdq`). Converted as it stands that is fake-quantized
float. :func:`import_qdq` (run by :func:`edgert.converter.convert` for a model with Q/DQ pairs,
at optimization level 1 or more) makes it the ``edgert.QConv`` / ``QGemm`` / ``QAdd`` / ... graph
that :func:`edgert.quantize` makes, with the parameters the model carries (no calibration):

1. QOperator leftovers become QDQ: ``QLinearMatMul`` whose input comes from a QuantizeLinear
   becomes ``DequantizeLinear -> MatMul -> QuantizeLinear`` (the importer does the same for
   ``QLinearConv`` and onnxruntime's QLinear* contrib ops), and data movement on the int8 codes
   (MaxPool, Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice, ... as onnxruntime's
   QOperator models run them) becomes the same op between a DequantizeLinear and a
   QuantizeLinear with the codes' parameters (exact: they only move or pick values).
2. Every ``DequantizeLinear`` of a constant (or of a QuantizeLinear of a constant) becomes the
   float constant it computes, and its codes are kept by name: int8/uint8/int4/uint4 weights,
   int32 biases, per tensor, per axis or per block.
3. The graph is optimized as usual (``edgert.optimizer``, without edgert-domain fusions), the
   activation pairs standing in the way of fusions that would cross a quantization point;
   then step 2 again for what the optimizer made constant (a weight reshaped in the graph).
4. Each activation pair ``QuantizeLinear(t) -> DequantizeLinear`` with constant per-tensor
   int8/uint8 parameters is removed, and ``t`` gets those parameters. uint8 ``(scale, zp)`` is
   int8 ``(scale, zp - 128)`` with codes shifted by 128: exactly the same real values and
   saturation bounds. Where something reads ``t`` unquantized as well, the pair becomes an
   ``Identity`` whose output has the parameters (``t``'s producer then stays float). A
   dequantized value that is a model output keeps its name.
5. The rewriter of :mod:`.quantizer` (:func:`~edgert.quantization.quantizer.
   quantize_graph_explicit`) emits the int8 ops with those parameters and the model's own
   weight codes (int32 bias codes too, where their scale is ``x_scale * w_scale``); tensors
   without parameters stay float, so a float op of the QDQ model stays float, and the float
   readers of a quantized tensor read it quantized (``edgert.Quantize`` -> ``edgert.Dequantize``)
   as they do in the QDQ model. The model's inputs and outputs stay float32.

Rules that differ from :func:`edgert.quantize`'s: an op whose output has no parameters stays
float (the QDQ model runs it in float); Softmax takes the model's output parameters; a move or
MaxPool whose output parameters differ from its input's is followed by an ``edgert.QLut``
requantization (exact); an AveragePool / GlobalAveragePool into output parameters of its own
runs in float between ``edgert.Dequantize`` / ``edgert.Quantize`` (one rounding, as onnxruntime's
QLinear pools, which compute in float; the int8 average followed by a requantization would
round twice). With equal parameters the int8 pools run, as in :func:`edgert.quantize`: they
round a mean that is exactly half-way away from zero, ONNX's QuantizeLinear to even (one step,
where a window's sum hits a half: often with a 2x2 window).

Kept float (and reported, see :class:`QdqImportResult`; a ``UserWarning`` lists the ops that
the QDQ model quantizes): a Conv/Gemm/MatMul whose weight is not symmetric (a non-zero zero
point; uint8 weights only with zero point 128), int16/float8 codes, weight scales that vary
inside an output channel (blocked quantization, per input channel), a ConvTranspose with
group > 1 and per-channel scales. Pairs with per-channel activation scales, 16-bit or float8
codes, or computed scales stay as they are (float QuantizeLinear / DequantizeLinear ops).

How close it is to onnxruntime running the QDQ model: onnxruntime fuses the same patterns into
integer kernels (QLinearConv, QGemm...), so both compute the same integer accumulators; they
differ in the requantization rounding (edgert: fixed-point multiplier, ties toward +inf;
onnxruntime: float32 multiply, ties to even) and where edgert folds a Relu/Clip into the
preceding op's output clamp, by at most one output step where they differ; later layers can
grow such a step (so do onnxruntime's own optimized and unoptimized runs of the same model:
``benchmarks/qdq_models.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value
from edgert.quantization.quantizer import (
    FLOAT_ROUNDING,
    QConst,
    int8_rule,
    quantize_graph_explicit,
)

STANDARD = ("", "ai.onnx")
# Ops that move or pick int8 codes without computing on them: on codes with parameters
# (scale, zp) they equal DequantizeLinear -> op -> QuantizeLinear with the same parameters.
CODE_MOVES = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                        "Identity", "Slice", "DepthToSpace", "SpaceToDepth", "Expand", "Tile",
                        "Gather"})
# Code types and the shift that maps them onto int8 / symmetric weights.
_SHIFT = {dtypes.INT8: 0, dtypes.UINT8: 128, dtypes.INT4: 0, dtypes.UINT4: 8, dtypes.INT32: 0}
# Readers of a tensor's float form that only look at its shape.
_SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclass
class QdqImportResult:
    """The int8 graph and what became of the QDQ model's ops."""

    graph: Graph
    int8_ops: dict[str, int] = field(default_factory=dict)
    # ops that stay float although some input has int8 parameters: (op, name, reason)
    float_ops: list[tuple[str, str, str]] = field(default_factory=list)
    # those among them that the QDQ model quantizes (its output has a Q/DQ pair)
    unrepresentable: list[tuple[str, str, str]] = field(default_factory=list)
    pairs: int = 0  # activation Q/DQ pairs that became int8 tensors
    constants: int = 0  # DequantizeLinear'd constants folded (weights, biases)
    lowered: int = 0  # QLinearMatMul and code moves turned into QDQ form
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # Q/DQ left as float ops

    def summary(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.int8_ops.items()))
        lines = [f"QDQ import: {self.pairs} activation Q/DQ pairs, {self.constants} quantized "
                 f"constants" + (f", {self.lowered} QOperator nodes lowered"
                                 if self.lowered else ""),
                 f"int8 ops: {ops or 'none'}"]
        if self.float_ops:
            lines.append(f"left in float ({len(self.float_ops)}):")
            lines += [f"  {op} '{name}': {why}" for op, name, why in self.float_ops]
        if self.kept:
            lines.append(f"Q/DQ nodes kept as float ops ({len(self.kept)}):")
            lines += [f"  {op} '{name}': {why}" for op, name, why in self.kept]
        return "\n".join(lines)


# ----- detection ----------------------------------------------------------------------------------
def _is(node: Node, op: str) -> bool:
    return node.op_type == op and node.domain in STANDARD


def _const_scale(node: Node) -> bool:
    s, z = node.input(1), node.input(2)
    return (s is not None and s.const is not None and s.const.size == 1
            and (z is None or z.const is not None))


def has_qdq(graph: Graph) -> bool:
    """Whether ``graph`` holds int8 activations in QDQ form: a QuantizeLinear with a constant
    per-tensor scale whose output a DequantizeLinear, a QLinearMatMul or an op moving the codes
    reads (a lone QuantizeLinear or DequantizeLinear, or int8 weights only, do not count)."""
    for node in graph.nodes:
        if not _is(node, "QuantizeLinear") or not _const_scale(node):
            continue
        for c in node.outputs[0].consumers:
            if (_is(c, "DequantizeLinear") or _is(c, "QLinearMatMul")
                    or (c.op_type in CODE_MOVES and c.domain in STANDARD)):
                return True
    return False


# ----- 1. QOperator leftovers ---------------------------------------------------------------------
def lower_qoperator(graph: Graph) -> int:
    """QLinearMatMul and data movement on int8 codes (fed by a QuantizeLinear) -> QDQ form, in
    place. Returns how many nodes were rewritten."""
    coded: dict[int, tuple[Value, Value | None]] = {}  # codes value -> its (scale, zp) values
    count = 0
    for node in list(graph.nodes):
        if node.domain not in STANDARD:
            continue
        if node.op_type == "QuantizeLinear":
            if _const_scale(node) and not node.attrs.get("block_size"):
                coded[id(node.outputs[0])] = (node.inputs[1], node.input(2))
            continue
        x = node.input(0)
        p = None if x is None else coded.get(id(x))
        if p is None:
            continue
        if node.op_type == "QLinearMatMul":
            y = _lower_qlinear_matmul(graph, node)
            if y is not None:
                coded[id(y)] = (node.inputs[6], node.inputs[7])
                count += 1
        elif node.op_type in CODE_MOVES and len(node.outputs) == 1:
            o = node.outputs[0]
            s, z = p
            d = graph.new_value(x.name + "_dq", dtypes.FLOAT, x.shape)
            graph.insert_before(node, "DequantizeLinear", [x, s, z], [d],
                                name=graph.unique_name(x.name + "_DequantizeLinear"), version=13)
            graph.set_input(node, 0, d)
            f = graph.new_value(o.name + "_float", dtypes.FLOAT, o.shape)
            node.outputs[0] = f
            f.producer = node
            o.dtype = o.dtype or (z.dtype if z is not None else dtypes.UINT8)
            graph.add_node("QuantizeLinear", [f, s, z], [o],
                           name=graph.unique_name(o.name + "_QuantizeLinear"), version=13,
                           index=graph.nodes.index(node) + 1)
            coded[id(o)] = p
            count += 1
    return count


def _lower_qlinear_matmul(graph: Graph, node: Node) -> Value | None:
    """``QLinearMatMul(a, as, az, b, bs, bz, ys, yz)`` -> ``Q(DQ(a) @ DQ(b))``; per-tensor a and y,
    b per tensor or per column (2-D b). Returns the output, or None (left alone)."""
    ins = [node.input(i) for i in range(8)]
    if any(v is None for v in ins) or any(v.const is None for v in ins[1:3] + ins[4:8]):
        return None
    a, a_s, a_z, b, b_s, b_z, y_s, y_z = ins
    if a_s.const.size != 1 or a_z.const.size != 1 or y_s.const.size != 1 or y_z.const.size != 1:
        return None
    b_attrs: dict = {}
    if b_s.const.size != 1:
        if b.rank != 2 or b_s.const.ndim != 1 or b_z.const.shape != b_s.const.shape:
            return None
        b_attrs = {"axis": 1}
    y = node.outputs[0]
    base = node.name or "QLinearMatMul"
    index = graph.nodes.index(node)
    graph.remove_node(node)
    af = graph.new_value(base + "_a_float", dtypes.FLOAT, a.shape)
    bf = graph.new_value(base + "_b_float", dtypes.FLOAT, b.shape)
    yf = graph.new_value(base + "_float", dtypes.FLOAT, y.shape)
    y.dtype = y.dtype or y_z.dtype
    for k, (op, i, o, attrs) in enumerate((
            ("DequantizeLinear", [a, a_s, a_z], [af], {}),
            ("DequantizeLinear", [b, b_s, b_z], [bf], b_attrs),
            ("MatMul", [af, bf], [yf], {}),
            ("QuantizeLinear", [yf, y_s, y_z], [y], {}))):
        graph.add_node(op, i, o, attrs, name=graph.unique_name(f"{base}_{op}"), version=13,
                       index=index + k)
    return y


# ----- 2. quantized constants ---------------------------------------------------------------------
@dataclass
class _Codes:
    """A DequantizeLinear'd constant: ``value = (codes - zp) * scale`` (broadcast arrays)."""

    value: np.ndarray
    codes: np.ndarray
    dtype: int
    scale: np.ndarray  # float32, broadcastable to codes
    zp: np.ndarray  # int64, broadcastable to codes

    def weight(self) -> QConst | str:
        """The symmetric int8 (int32 for a bias) form, or why there is none."""
        shift = _SHIFT.get(self.dtype)
        if shift is None:
            return f"its weight is {dtypes.name(self.dtype)}: no int8 form"
        zp = self.zp - shift
        if np.any(zp != 0):
            zs = sorted({int(z) for z in np.unique(self.zp)[:4]})
            return (f"asymmetric {dtypes.name(self.dtype)} weights (zero point {zs}"
                    f"{', ...' if np.unique(self.zp).size > 4 else ''}): edgert's int8 kernels "
                    "take symmetric weights")
        if self.dtype == dtypes.INT32:
            return QConst(self.value, self.codes.astype(np.int32), self.scale)
        return QConst(self.value, (self.codes.astype(np.int16) - shift).astype(np.int8),
                      self.scale)

    def activation(self) -> tuple[float, int] | None:
        """Per-tensor int8 parameters (a constant operand of Add/Mul/Concat), or None."""
        if self.dtype not in (dtypes.INT8, dtypes.UINT8) or self.scale.size != 1:
            return None
        return float(self.scale.reshape(-1)[0]), int(self.zp.reshape(-1)[0]) - _SHIFT[self.dtype]


def _params_array(node: Node, shape: tuple[int, ...], arr: np.ndarray) -> np.ndarray | None:
    """A DequantizeLinear/QuantizeLinear scale or zero point broadcastable to ``shape``."""
    rank = len(shape)
    block = int(node.attrs.get("block_size", 0) or 0)
    if arr.size == 1 and block == 0:
        return arr.reshape((1,) * rank)
    axis = int(node.attrs.get("axis", 1))
    if rank == 0 or not -rank <= axis < rank:
        return None
    axis %= rank
    if block == 0:
        if arr.ndim != 1 or arr.size != shape[axis]:
            return None
        return arr.reshape(tuple(arr.size if i == axis else 1 for i in range(rank)))
    if arr.ndim != rank or any(arr.shape[i] != shape[i] for i in range(rank) if i != axis) \
            or arr.shape[axis] != -(-shape[axis] // block):
        return None
    return np.take(np.repeat(arr, block, axis=axis), np.arange(shape[axis]), axis=axis)


def _code_dtype(node: Node, zp: Value | None) -> int:
    """The codes' type of a QuantizeLinear: its zero point's, else ``output_dtype`` or uint8."""
    if zp is not None:
        return zp.dtype
    return int(node.attrs.get("output_dtype", 0) or dtypes.UINT8)


def _const_codes(graph: Graph, x: Value) -> tuple[np.ndarray, int] | None:
    """The codes of a DequantizeLinear's input: a constant, or a QuantizeLinear of one."""
    if x.const is not None:
        return x.const, x.dtype
    q = x.producer
    if q is None or not _is(q, "QuantizeLinear"):
        return None
    f, s, z = q.input(0), q.input(1), q.input(2)
    if (f is None or f.const is None or f.const.dtype != np.float32 or s is None
            or s.const is None or (z is not None and z.const is None)):
        return None
    dt = _code_dtype(q, z)
    rng = dtypes.value_range(dt) or ((-128, 127) if dt == dtypes.INT8 else
                                     (0, 255) if dt == dtypes.UINT8 else None)
    if rng is None:
        return None
    sb = _params_array(q, f.const.shape, s.const.astype(np.float32))
    zb = _params_array(q, f.const.shape, np.zeros(s.const.shape, np.int64) if z is None
                       else z.const.astype(np.int64))
    if sb is None or zb is None:
        return None
    codes = np.clip(np.rint(f.const / sb) + zb, *rng)
    return codes.astype(dtypes.to_numpy(dt)), dt


def fold_quantized_constants(graph: Graph) -> dict[str, _Codes]:
    """Replace each DequantizeLinear of constant codes (int8/uint8/int4/uint4/int32) by the float
    constant it computes, in place; returns the codes by the constant's name."""
    found: dict[str, _Codes] = {}
    outputs = {id(v) for v in graph.outputs}
    for node in list(graph.nodes):
        if not _is(node, "DequantizeLinear"):
            continue
        x, s, z = node.input(0), node.input(1), node.input(2)
        y = node.outputs[0]
        if (x is None or s is None or s.const is None or s.const.dtype != np.float32
                or (z is not None and z.const is None) or id(y) in outputs
                or int(node.attrs.get("output_dtype", 0) or dtypes.FLOAT) != dtypes.FLOAT):
            continue
        got = _const_codes(graph, x)
        if got is None or got[1] not in _SHIFT:
            continue
        codes, dt = got
        sb = _params_array(node, codes.shape, s.const)
        zb = _params_array(node, codes.shape, np.zeros(s.const.shape, np.int64) if z is None
                           else z.const.astype(np.int64))
        if sb is None or zb is None or not np.all(np.isfinite(sb)):
            continue
        value = ((codes.astype(np.int64) - zb).astype(np.float32) * sb).astype(np.float32)
        graph.remove_node(node)
        y.const = np.ascontiguousarray(value)
        y.dtype = dtypes.FLOAT
        y.shape = list(value.shape)
        graph.constants[y.name] = y
        found[y.name] = _Codes(y.const, codes, dt, sb, zb)
    return found


# ----- 4. activation pairs ------------------------------------------------------------------------
def _act_params(node: Node, codes_dtype: int) -> tuple[float, int] | str:
    """Per-tensor int8 parameters of a QuantizeLinear/DequantizeLinear, or why none."""
    s, z = node.input(1), node.input(2)
    if s is None or s.const is None or (z is not None and z.const is None):
        return "its scale or zero point is computed"
    if s.const.size != 1 or (z is not None and z.const.size != 1):
        return "per-channel activation parameters"
    if node.attrs.get("block_size"):
        return "blocked activation parameters"
    if codes_dtype not in (dtypes.INT8, dtypes.UINT8):
        return f"{dtypes.name(codes_dtype)} activations have no int8 form"
    scale = float(np.float32(s.const.reshape(-1)[0]))
    if not (np.isfinite(scale) and scale > 0):
        return f"scale {scale}"
    zp = 0 if z is None else int(z.const.reshape(-1)[0])
    return scale, zp - _SHIFT[codes_dtype]


def strip_pairs(graph: Graph):
    """Remove the activation pairs ``QuantizeLinear(t) -> DequantizeLinear`` in place.

    ``t`` then holds the pair's parameters and every reader of the dequantized value reads
    ``t``. Where something reads ``t`` unquantized as well (or ``t`` is a model output or input
    and so is the dequantized value), the pair becomes ``Identity(t)`` with the parameters on
    its output instead, and ``t``'s producer stays float.

    Returns ``(params, pairs, kept)``: int8 ``(scale, zp)`` by tensor name, the number of pairs
    removed, and the Q nodes left as they are with the reason.
    """
    params: dict[str, tuple[float, int]] = {}
    kept: list[tuple[str, str, str]] = []
    pairs = 0
    for qn in [n for n in graph.nodes if _is(n, "QuantizeLinear")]:
        t, q = qn.input(0), qn.outputs[0]
        why = None
        code_dtype = _code_dtype(qn, qn.input(2))
        p = _act_params(qn, code_dtype)
        dqs = list(q.consumers)
        out_dq = [dn for dn in dqs if dn.outputs[0] in graph.outputs]
        if isinstance(p, str):
            why = p
        elif t is None or t.const is not None or t.dtype != dtypes.FLOAT:
            why = "its input is not a computed float32 tensor"
        elif q in graph.outputs or not dqs or not all(
                _is(dn, "DequantizeLinear") and dn.inputs[0] is q and q not in dn.inputs[1:]
                for dn in dqs):
            why = "its int8 output is read by something other than a DequantizeLinear"
        elif any(_act_params(dn, code_dtype) != p for dn in dqs):
            why = "the DequantizeLinear parameters differ (a requantization)"
        elif any(int(dn.attrs.get("output_dtype", 0) or dtypes.FLOAT) != dtypes.FLOAT
                 for dn in dqs):
            why = "the DequantizeLinear output is not float32"
        elif t.name in params and params[t.name] != p:
            why = "a second quantization of the same tensor with other parameters"
        elif len(out_dq) > 1:
            why = "two of its dequantized values are model outputs"
        if why is not None:
            kept.append(("QuantizeLinear", qn.name, why))
            continue
        raw = (any(c.op_type not in _SHAPE_ONLY and not _is(c, "QuantizeLinear")
                   for c in t.consumers)
               or t in graph.outputs or (out_dq and t.producer is None))
        if raw:
            d0 = (out_dq or dqs)[0].outputs[0]
            for dn in dqs:
                d = dn.outputs[0]
                index = graph.nodes.index(dn)
                graph.remove_node(dn)
                if d is d0:
                    graph.add_node("Identity", [t], [d], name=graph.unique_name(
                        d.name + "_Identity"), version=13, index=index)
                else:
                    graph.replace_all_uses(d, d0)
            target = d0
        else:
            for dn in dqs:
                d = dn.outputs[0]
                if d in graph.outputs:  # the model's output keeps its name
                    t.name = d.name
                graph.replace_all_uses(d, t)
                graph.remove_node(dn)
            target = t
        graph.remove_node(qn)
        params[target.name] = p
        pairs += 1
    return params, pairs, kept


# ----- the whole path -----------------------------------------------------------------------------
def import_qdq(graph: Graph, level: int = 2, verbose: bool = False,
               warn: bool = True) -> QdqImportResult:
    """Turn a QDQ graph (modified) into edgert's int8 graph, optimizing it at ``level`` first.

    Args:
        graph: the imported QDQ model (:func:`edgert.importer.import_onnx`); modified.
        level: the optimization level (:func:`edgert.optimizer.optimize`, no edgert-domain
            fusions: the int8 rewrite does its own).
        verbose: print the optimizer's report and :meth:`QdqImportResult.summary`.
        warn: emit a ``UserWarning`` naming the ops that the QDQ model quantizes but that stay
            float here (asymmetric or blocked weights...).

    Returns:
        The :class:`QdqImportResult`; its ``graph`` is the new int8 graph.
    """
    from edgert.optimizer import optimize

    lowered = lower_qoperator(graph)
    codes = fold_quantized_constants(graph)
    optimize(graph, level, verbose=verbose)
    # DequantizeLinear of what the optimizer made constant (a weight reshaped in the graph)
    codes.update(fold_quantized_constants(graph))
    params, pairs, kept = strip_pairs(graph)
    weights: dict[str, QConst | str] = {}
    for name, c in codes.items():
        if name not in graph.constants:
            continue  # folded away or merged into an equal constant (which has its own codes)
        weights[name] = c.weight()
        act = c.activation()
        if act is not None:
            params.setdefault(name, act)
    res = quantize_graph_explicit(graph, params, weights)
    out = QdqImportResult(res.graph, res.int8_ops, res.float_ops, pairs=pairs,
                          constants=len(codes), lowered=lowered, kept=kept)
    # ops with an int8 form in edgert that the QDQ model quantizes (output and every computed
    # input), left float here
    quantized = {(n.op_type, n.name) for n in graph.nodes
                 if int8_rule(n) is not None and any(o.name in params for o in n.outputs)
                 and all(v.name in params for v in n.inputs
                         if v is not None and v.const is None)}
    out.unrepresentable = [f for f in res.float_ops if (f[0], f[1]) in quantized
                           and not f[2].startswith(FLOAT_ROUNDING)]
    named = {k[1] for k in kept}
    for n in res.graph.nodes:
        if (n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain in STANDARD
                and n.name not in named):
            src = n.inputs[0].producer if n.inputs and n.inputs[0] is not None else None
            if src is None or not _is(src, "QuantizeLinear") or src.name not in named:
                kept.append((n.op_type, n.name, "not part of an activation pair"))
    if verbose:
        print(out.summary())
    if warn and out.unrepresentable:
        listed = "; ".join(f"{op} '{name}': {why}" for op, name, why in out.unrepresentable[:8])
        more = len(out.unrepresentable) - 8
        warnings.warn(f"{len(out.unrepresentable)} op(s) that the QDQ model quantizes stay float "
                      f"in edgert: {listed}" + (f"; and {more} more" if more > 0 else ""),
                      stacklevel=2)
    return out


__all__ = ["has_qdq", "import_qdq", "QdqImportResult", "lower_qoperator",
           "fold_quantized_constants", "strip_pairs"]
