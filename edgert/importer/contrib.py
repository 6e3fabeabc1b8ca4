"""onnxruntime's own operators (domain ``com.microsoft``), lowered to standard ONNX at import.

Models that went through onnxruntime's tools carry its contrib operators: the transformers
optimizer's fused forms (SkipLayerNormalization, BiasGelu, FastGelu, Attention...), the
quantizers' QOperator forms (QLinearAdd, QGemm...), 4-bit weights (MatMulNBits). Each is rewritten
here, by one rule per operator, into the standard operators it stands for, using the same
:class:`~edgert.importer.upgrade.Rewrite` helpers as the opset rules; the optimizer then fuses
them into edgert's own fused kernels where those exist (LayerNormalization, Gelu, the fused
elementwise chains, the int8 kernels), and every other part of edgert (the quantizer, the
CUDA path, the ONNX exporter) sees only standard operators.

A rule rewrites ``rw.node`` in place into a default-domain operator (setting ``node.op_type``,
its attributes and inputs), may insert further nodes before or after it, and returns the
default-domain opset version its output needs (e.g. 17 for LayerNormalization); ``rw.opset`` is
the model's default-domain opset. A rule that cannot express a node (an attribute combination
without a standard equivalent, a non-constant input it needs to be constant) raises
:class:`~edgert.importer.upgrade.Decline` with the reason.

The semantics are onnxruntime's (its CPU kernels where it has them), including its mask
conventions: a 0/1 attention mask adds ``mask_filter_value`` (default -10000) to the masked
scores (a mask value ``<= 0`` masks), and causal masking (``unidirectional``) excludes the later
keys entirely. ONNX shape inference cannot see through contrib operators, so the values behind
one carry no rank or element type: the rules find those they need by following producers back to
known ones (through the operators already lowered); a rank that stays unknown makes the rule
decline rather than guess, an unknown element type makes it cast its constants like an input at
run time (CastLike).

Rules (``RULES``; more in :mod:`edgert.importer.contrib_quant` for the quantized forms):

=================================  ================================================================
SkipLayerNormalization             ``s = input + skip (+ bias)``; LayerNormalization-17(s, gamma,
                                   beta, axis=-1) with its Mean / InvStdDev outputs;
                                   ``input_skip_bias_sum`` is ``s``
SkipSimplifiedLayerNormalization   ``s`` as above; RMSNormalization-23(s, gamma); ``inv_std_var``
                                   = 1/sqrt(mean(s², -1) + eps) in float, ``mean`` = zeros (what
                                   onnxruntime writes), ``input_skip_bias_sum`` = ``s``
SimplifiedLayerNormalization       RMSNormalization-23 (``axis``, ``epsilon``, ``stash_type``);
(default domain, also              ``inv_std_var`` computed beside it in the stash type
com.microsoft)
Gelu                               Gelu-20 (exact erf form)
BiasGelu                           Add(A, B), then Gelu-20
FastGelu                           optional Add of ``bias``, then Gelu-20 ``approximate="tanh"``
QuickGelu                          Swish-24 with ``alpha`` (default 1.702): x·sigmoid(alpha·x)
BiasAdd                            Add(Add(X, bias), skip)
BiasSplitGelu                      Add(X, bias), split in halves on the last axis: left ·
                                   Gelu(right) (exact)
FusedMatMul, TransposeMatMul       Transpose (or, rank unknown, Einsum) for ``transA`` /
                                   ``transB`` / ``transBatchA`` / ``transBatchB``, MatMul, Mul by
                                   ``alpha`` when not 1
FusedGemm                          Gemm-13, then the activation (Relu, LeakyRelu, Sigmoid, Tanh,
                                   HardSigmoid, Elu, Selu, Softplus, Softsign, ThresholdedRelu,
                                   Celu, ScaledTanh, ParametricSoftplus) from ``activation_*``
FusedConv                          Conv-11, Add of ``Z``, then the activation (Relu, Sigmoid, Tanh,
                                   LeakyRelu, HardSigmoid, Clip, HardSwish) from
                                   ``activation_params``
NhwcConv                           Transpose to NCHW, Conv-11 with the [M, kH, kW, C/group] weight
                                   as [M, C/group, kH, kW], Transpose back
GroupNorm                          (Transpose NHWC -> NCHW,) GroupNormalization-21 (per-channel
                                   gamma / beta, cast to X's type), Swish-24 (SiLU) for
                                   ``activation=1``, (Transpose back)
Attention                          MatMul + Add(bias), Split by ``qkv_hidden_sizes``, then
                                   Attention-23 (3-D Q/K/V, ``q_num_heads=kv_num_heads=num_heads``,
                                   ``scale``, a negative one negating Q; ``is_causal`` =
                                   ``unidirectional``); ``mask_index`` (lengths [B], end / start
                                   [2B], a [B, T] or [B, S, T] 0/1 mask) and ``attention_bias``
                                   become its float [B, 1, S, T] ``attn_mask``; ``past``
                                   [2, B, N, P, H] splits into past_key / past_value, ``present``
                                   stacks present_key / present_value. Declined: 4-D (Megatron)
                                   masks, ``past_sequence_length`` / shared buffers, ``do_rotary``
MultiHeadAttention                 Add of the ``bias`` parts, Attention-23 (3-D, or 4-D for
                                   [B, N, L, H] key / value); packed QKV [B, L, N, 3, H] / KV
                                   [B, L, N, 2, H] split first; ``key_padding_mask`` ([B] lengths,
                                   [B, T], [B, S, T]) and ``attention_bias`` as in Attention;
                                   ``past_key`` / ``past_value`` / present outputs map one to one,
                                   ``qk`` is ``qk_matmul_output_mode=2`` (causally excluded keys
                                   at the lowest float, as onnxruntime). Declined: buffer sharing
                                   (``past_sequence_length``, ``cache_indirection``), bias with
                                   packed inputs
EmbedLayerNormalization            Gather of word / position (``position_ids``, else 0..S-1) /
                                   segment embeddings, Adds (``embedding_sum``), then
                                   LayerNormalization-17; ``mask_index`` = count of mask values
                                   equal to 1 per row (int32), zeros without a mask
RotaryEmbedding                    RotaryEmbedding-23 (inputs reordered); a [1] ``position_ids``
                                   offset becomes ``offset + 0..S-1`` per batch row; ``scale`` is
                                   ignored as in onnxruntime's kernel; ``is_packed_batching``
                                   declined
=================================  ================================================================

Operators onnxruntime registers in the default domain although ONNX does not define them there
(``DEFAULT_DOMAIN_OPS``): SimplifiedLayerNormalization (above; its transformers optimizer writes
it there), the leftovers of ONNX's early experimental operators (which onnxruntime runs up to
opset 9) and its device copies:

=================================  ================================================================
Affine                             ``alpha · x + beta`` (defaults 1, 0)
Scale                              ``scale · x`` (default 1)
ScaledTanh                         ``alpha · tanh(beta · x)`` (both required, as in onnxruntime)
ParametricSoftplus                 ``alpha · softplus(beta · x)`` (both required)
DynamicSlice                       Slice-10 (starts, ends, axes inputs)
MemcpyFromHost, MemcpyToHost       Identity (onnxruntime's device copies)
=================================  ================================================================
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.importer.upgrade import Decline, Rewrite, Rule
from edgert.ir import Node, Value

_INT64_MAX = int(np.iinfo(np.int64).max)
_FLOAT_CODES = {dtypes.FLOAT: np.float32, dtypes.FLOAT16: np.float16, dtypes.DOUBLE: np.float64}

# The default-domain opset at which an inserted operator has the form these rules write (axes as
# inputs, Split's num_outputs, Shape's start / end, ...); a node gets max(model opset, this).
_SINCE = {
    "Split": 18, "ReduceMean": 18, "Shape": 15, "CastLike": 15, "Gelu": 20, "Swish": 24,
    "LayerNormalization": 17, "RMSNormalization": 23, "GroupNormalization": 21, "Attention": 23,
    "RotaryEmbedding": 23, "HardSwish": 14, "Conv": 11, "Range": 11, "Einsum": 12,
}


# ----- shape and type inference by walking producers --------------------------------------------
# ONNX shape inference stops at contrib operators, so the values behind one carry no rank or
# element type. These tables derive them from the producing operators (standard ones, including
# the lowered contrib operators before this one), back to values whose type is known.
_SAME_RANK = frozenset({
    "Abs", "Neg", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Cast", "CastLike", "Identity", "Gelu", "Softmax",
    "LogSoftmax", "Clip", "Dropout", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Swish",
    "Mish", "ThresholdedRelu", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf", "Sin",
    "Cos", "LayerNormalization", "RMSNormalization", "GroupNormalization",
    "InstanceNormalization", "BatchNormalization", "LpNormalization", "Transpose", "Slice",
    "Split", "Pad", "Tile", "Resize", "CumSum", "Trilu", "RotaryEmbedding", "Conv",
    "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "DepthToSpace", "SpaceToDepth", "QuantizeLinear", "DequantizeLinear",
})
_BROADCAST = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "Equal",
    "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "BitShift",
})
_BOOL_OUT = frozenset({
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor",
    "IsNaN", "IsInf",
})
_REDUCE = frozenset({
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
})
_SAME_TYPE = (_SAME_RANK | _BROADCAST | _REDUCE | {
    "MatMul", "Gemm", "Reshape", "Unsqueeze", "Squeeze", "Gather", "GatherElements", "GatherND",
    "Concat", "Expand", "Flatten", "Einsum", "Attention", "Range",
}) - _BOOL_OUT - {"Cast", "CastLike", "Where", "QuantizeLinear", "DequantizeLinear"}
# operators whose outputs past the first differ from the first: (rank rule, type rule) for them;
# "same" = as input 0, an int = that rank, None = unknown
_LATER_OUTPUTS = {
    "LayerNormalization": ("same", "stash"), "RMSNormalization": (None, None),
    "Dropout": ("same", dtypes.BOOL), "Attention": (4, "same"),
    "BatchNormalization": (1, "same"),
}


def _axes_of(rw: Rewrite, node: Node) -> list[int] | None:
    """The ``axes`` of an Unsqueeze / Squeeze / Reduce node (attribute or constant input)."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if node.input(1) is None:
        return []
    data = rw.const_of(node.input(1))
    return None if data is None else [int(a) for a in data.reshape(-1)]


def _later(node: Node, out: Value) -> tuple | None:
    """The _LATER_OUTPUTS entry when ``out`` is not the node's first output."""
    if node.op_type in _LATER_OUTPUTS and node.outputs and out is not node.outputs[0]:
        return _LATER_OUTPUTS[node.op_type]
    return None


def _rank_deps(node: Node, out: Value) -> list[Value | None]:
    op = node.op_type
    if node.domain:
        return []
    later = _later(node, out)
    if later is not None:
        return [node.input(0)] if later[0] == "same" else []
    if op in _BROADCAST or op in ("MatMul", "Gather"):
        return list(node.inputs)
    if op in _SAME_RANK or op in _REDUCE or op in ("Unsqueeze", "Squeeze", "Concat", "Expand",
                                                   "Attention", "ArgMax", "ArgMin"):
        return [node.input(0)]
    if op == "GatherElements":
        return [node.input(1)]
    return []


def _rank_rule(rw: Rewrite, node: Node, out: Value, ranks: list[int | None]) -> int | None:
    op = node.op_type
    if node.domain:
        return None
    later = _later(node, out)
    if later is not None:
        return ranks[0] if later[0] == "same" else later[0]
    first = ranks[0] if ranks else None
    if op in ("Shape", "Range"):
        return 1
    if op in ("NonZero", "Gemm", "Flatten"):
        return 2
    if op == "Size":
        return 0
    if op in _SAME_RANK or op in ("Concat", "Attention", "GatherElements"):
        return first
    if op in _BROADCAST:
        return None if not ranks or None in ranks else max(ranks)
    if op == "MatMul":
        if len(ranks) != 2 or None in ranks:
            return None
        a, b = ranks
        if a == 1 and b == 1:
            return 0
        return b - 1 if a == 1 else (a - 1 if b == 1 else max(a, b))
    if op == "Gather":
        return None if len(ranks) < 2 or None in ranks[:2] else ranks[0] + ranks[1] - 1
    if op == "Reshape":
        shape = rw.const_of(node.input(1))
        return None if shape is None else int(shape.size)
    if op in ("Unsqueeze", "Squeeze"):
        axes = _axes_of(rw, node)
        if first is None or axes is None or (op == "Squeeze" and not axes):
            return None
        return first + len(axes) if op == "Unsqueeze" else first - len(axes)
    if op == "Expand":
        shape = rw.const_of(node.input(1))
        return None if shape is None or first is None else max(first, int(shape.size))
    if op == "ConstantOfShape":
        shape_v = node.input(0)
        data = rw.const_of(shape_v)
        if data is not None:
            return int(data.size)
        if shape_v is not None and shape_v.shape is not None and len(shape_v.shape) == 1:
            return shape_v.shape[0] if isinstance(shape_v.shape[0], int) else None
        return None
    if op in _REDUCE or op in ("ArgMax", "ArgMin"):
        if first is None or int(node.attrs.get("keepdims", 1)):
            return first
        if op in ("ArgMax", "ArgMin"):
            return first - 1
        axes = _axes_of(rw, node)
        if axes is None or first == 0:
            return None if axes is None else 0
        if not axes:
            return first if int(node.attrs.get("noop_with_empty_axes", 0)) else 0
        return first - len({a % first for a in axes})
    return None


def _type_deps(node: Node, out: Value) -> list[Value | None]:
    op = node.op_type
    if node.domain:
        return []
    later = _later(node, out)
    if later is not None:
        return [node.input(0)] if later[1] == "same" else []
    if op in ("Where", "CastLike"):
        return [node.input(1)]
    if op in _SAME_TYPE:
        return [node.input(0)]
    return []


def _type_rule(rw: Rewrite, node: Node, out: Value, types: list[int | None]) -> int | None:
    op = node.op_type
    if node.domain:
        return None
    later = _later(node, out)
    if later is not None:
        if later[1] == "stash":
            return int(node.attrs.get("stash_type", dtypes.FLOAT))
        return types[0] if later[1] == "same" and types else later[1]
    if op == "Cast":
        return int(node.attrs["to"]) if "to" in node.attrs else None
    if op in _BOOL_OUT:
        return dtypes.BOOL
    if op in ("Shape", "Size", "NonZero", "ArgMax", "ArgMin"):
        return dtypes.INT64
    if op == "ConstantOfShape":
        value = node.attrs.get("value")
        return dtypes.from_numpy(np.asarray(value).dtype) if value is not None else dtypes.FLOAT
    return types[0] if types else None


def _walk(rw: Rewrite, v: Value | None, direct, deps_of, rule) -> int | None:
    """Evaluate ``rule`` over the producers of ``v`` (iteratively; cycles give None)."""
    if v is None:
        return None
    memo: dict[int, int | None] = {}
    pending: dict[int, list[Value | None]] = {}
    stack = [v]
    while stack:
        x = stack[-1]
        key = id(x)
        if key in memo:
            stack.pop()
            continue
        if key not in pending:
            found = direct(x)
            if found is not None or x.producer is None:
                memo[key] = found
                stack.pop()
                continue
            deps = deps_of(x.producer, x)
            pending[key] = deps
            todo = [d for d in deps if d is not None and id(d) not in memo
                    and id(d) not in pending]
            if todo:
                stack.extend(todo)
                continue
        deps = pending[key]
        memo[key] = rule(rw, x.producer, x, [None if d is None else memo.get(id(d))
                                              for d in deps])
        stack.pop()
    return memo[id(v)]


def _direct_rank(rw: Rewrite):
    return lambda x: rw.rank(x)


def _direct_type(rw: Rewrite):
    def find(x: Value) -> int | None:
        if x.dtype and dtypes.is_known(x.dtype):
            return int(x.dtype)
        data = rw.const_of(x)
        return None if data is None else dtypes.from_numpy(data.dtype)
    return find


# ----- node building ------------------------------------------------------------------------------
class _Lower:
    """Builders around one :class:`Rewrite`: new nodes before / after the rewritten node,
    constants, and the rank / element type of values."""

    def __init__(self, rw: Rewrite):
        self.rw = rw
        self.graph = rw.graph
        self.node = rw.node
        self._after = 0

    # -- inference --
    def rank(self, v: Value | None) -> int | None:
        return _walk(self.rw, v, _direct_rank(self.rw), _rank_deps, _rank_rule)

    def dtype(self, *values: Value | None) -> int | None:
        """Element type code of the first of ``values`` whose type can be found."""
        for v in values:
            code = _walk(self.rw, v, _direct_type(self.rw), _type_deps, _type_rule)
            if code:
                return code
        return None

    # -- values --
    def version(self, op: str) -> int:
        return max(self.rw.opset, _SINCE.get(op, 13))

    def _name(self, what: str) -> str:
        return self.graph.unique_name(f"{self.node.name}_{what}")

    def const(self, what: str, data) -> Value:
        return self.rw.const(what, np.asarray(data))

    def i64(self, what: str, values) -> Value:
        return self.rw.int64s(what, values)

    def scalar_i64(self, what: str, value: int) -> Value:
        return self.const(what, np.array(value, dtype=np.int64))

    def floats(self, what: str, data, code: int | None, like: Value) -> Value:
        """Float constant ``data`` in element type ``code``; unknown (or a type NumPy cannot hold)
        -> a float32 constant cast like ``like`` at run time."""
        if code in _FLOAT_CODES:
            return self.const(what, np.asarray(data, dtype=_FLOAT_CODES[code]))
        raw = self.const(f"{what}_f32", np.asarray(data, dtype=np.float32))
        return self.before("CastLike", [raw, like], what=what)

    # -- nodes --
    def before(self, op: str, inputs, attrs=None, *, what: str, n_out: int = 1,
               dtype: int = 0, version: int | None = None):
        """A node inserted before the rewritten one; returns its output (list when n_out > 1)."""
        outs = [self.graph.new_value(self._name(what if n_out == 1 else f"{what}{i}"), dtype)
                for i in range(n_out)]
        self.graph.insert_before(self.node, op, list(inputs), outs, dict(attrs or {}),
                                 name=self._name(f"{what}_{op.lower()}"),
                                 version=self.version(op) if version is None else version)
        return outs[0] if n_out == 1 else outs

    def after(self, op: str, inputs, outputs: list[Value], attrs=None, *, what: str) -> Node:
        """A node placed after the rewritten one (and after those placed before it)."""
        self._after += 1
        index = self.graph.nodes.index(self.node) + self._after
        return self.graph.add_node(op, list(inputs), outputs, dict(attrs or {}),
                                   name=self._name(f"{what}_{op.lower()}"),
                                   version=self.version(op), index=index)

    def dim(self, v: Value, axis: int, what: str) -> Value:
        """``v.shape[axis]`` as an int64 [1] tensor (Shape-15 with start / end)."""
        attrs = {"start": axis} if axis == -1 else {"start": axis, "end": axis + 1}
        return self.before("Shape", [v], attrs, what=what, dtype=dtypes.INT64)

    def scalar(self, v: Value, what: str) -> Value:
        """A [1] tensor as a scalar."""
        return self.before("Squeeze", [v, self.i64(f"{what}_axes", [0])], what=what,
                           dtype=dtypes.INT64)

    # -- the rewritten node --
    def set_inputs(self, values) -> None:
        node = self.node
        for v in node.inputs:
            if v is not None:
                v.consumers.remove(node)
        values = list(values)
        while values and values[-1] is None:
            values.pop()
        node.inputs = values
        for v in values:
            if v is not None:
                v.consumers.append(node)

    def set_outputs(self, values: list[Value]) -> None:
        node = self.node
        for v in node.outputs:
            if v.producer is node and all(v is not w for w in values):
                v.producer = None
        node.outputs = list(values)
        for v in values:
            v.producer = node

    def wanted(self, i: int) -> Value | None:
        """Output ``i`` when the model declares it and something reads it, else None."""
        outs = self.node.outputs
        if i >= len(outs) or outs[i].meta.get("omitted") or not self.rw.used(outs[i]):
            return None
        return outs[i]

    def stand_in(self, v: Value, what: str) -> Value:
        """A fresh value for the node to produce instead of ``v`` (which a node placed after
        it then produces)."""
        return self.graph.new_value(self._name(what), v.dtype, v.shape)

    def placeholder(self, what: str) -> Value:
        v = self.graph.new_value(self._name(what))
        v.meta["omitted"] = True
        return v


# ----- small checks -------------------------------------------------------------------------------
def _require(rw: Rewrite, i: int, what: str) -> Value:
    v = rw.input(i)
    if v is None:
        raise Decline(f"needs its '{what}' input")
    return v


def _no_inputs_past(rw: Rewrite, count: int) -> None:
    if any(v is not None for v in rw.node.inputs[count:]):
        raise Decline(f"has {len(rw.node.inputs)} inputs; the operator defines "
                      f"{count}")


def _no_outputs_past(rw: Rewrite, count: int) -> None:
    extra = [v for v in rw.node.outputs[count:] if not v.meta.get("omitted")]
    if extra:
        raise Decline(f"declares {len(rw.node.outputs)} outputs; the operator "
                      f"defines {count}")


def _int(rw: Rewrite, name: str, default: int | None = None) -> int:
    value = rw.attr(name, default)
    if value is None:
        raise Decline(f"needs the '{name}' attribute")
    if isinstance(value, (list, tuple, bytes, str)) or float(value) != int(value):
        raise Decline(f"attribute '{name}' must be an integer, got {value!r}")
    return int(value)


def _float(rw: Rewrite, name: str, default: float) -> float:
    value = rw.attr(name, default)
    if isinstance(value, (list, tuple, bytes, str)):
        raise Decline(f"attribute '{name}' must be a float, got {value!r}")
    return float(value)


def _flag(rw: Rewrite, name: str) -> bool:
    value = _int(rw, name, 0)
    if value not in (0, 1):
        raise Decline(f"attribute '{name}' must be 0 or 1, got {value}")
    return bool(value)


def _text(rw: Rewrite, name: str, default: str | None = None) -> str | None:
    value = rw.attr(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is not None and not isinstance(value, str):
        raise Decline(f"attribute '{name}' must be a string, got {value!r}")
    return value


def _vector(rw: Rewrite, v: Value | None, what: str, length: int | None = None) -> None:
    """Check that a constant parameter is 1-D (of ``length`` when given)."""
    data = rw.const_of(v)
    shape = data.shape if data is not None else (v.static_shape() if v is not None else None)
    if shape is None:
        return
    if len(shape) != 1 or (length is not None and shape[0] != length):
        want = f"[{length}]" if length is not None else "1-D"
        raise Decline(f"'{what}' must be {want}, got shape {list(shape)}")


# ----- normalization ------------------------------------------------------------------------------
def _skip_sum(low: _Lower, rw: Rewrite, bias_index: int) -> Value:
    """``input + skip (+ bias)``, produced into the declared input_skip_bias_sum when it is read."""
    x = _require(rw, 0, "input")
    skip = _require(rw, 1, "skip")
    bias = rw.input(bias_index)
    rx, rs = low.rank(x), low.rank(skip)
    if rx is not None and rx not in (2, 3):
        raise Decline(f"input must be 2-D or 3-D, got rank {rx}")
    if rs is not None and (rs < 2 or (rx is not None and rs > rx)):
        raise Decline(f"skip of rank {rs} does not match the input (rank {rx})")
    _vector(rw, bias, "bias")
    # the last Add produces the declared input_skip_bias_sum (keeping its name and readers)
    total = low.wanted(3)
    pairs = [[x, skip]] + ([[None, bias]] if bias is not None else [])
    s = None
    for i, (lhs, rhs) in enumerate(pairs):
        ins = [s if lhs is None else lhs, rhs]
        if i == len(pairs) - 1 and total is not None:
            _produce(low, "Add", ins, total, what="input_skip_bias_sum")
            s = total
        else:
            s = low.before("Add", ins, what="skip_sum" if i == 0 else "skip_bias_sum")
    return s


def _keep_outputs(low: _Lower, keep: list[Value | None]) -> None:
    """Outputs of the rewritten node: the given values, omitted ones as placeholders."""
    while keep and keep[-1] is None:
        keep.pop()
    low.set_outputs([v if v is not None else low.placeholder(f"unused{i}")
                     for i, v in enumerate(keep)])


def skip_layer_normalization(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 5)
    _no_outputs_past(rw, 4)
    eps = _float(rw, "epsilon", 1e-12)
    gamma = _require(rw, 2, "gamma")
    beta = rw.input(3)
    _vector(rw, gamma, "gamma")
    _vector(rw, beta, "beta")
    s = _skip_sum(low, rw, 4)
    node = rw.node
    node.op_type = "LayerNormalization"
    node.attrs = {"axis": -1, "epsilon": eps}
    low.set_inputs([s, gamma, beta])
    _keep_outputs(low, [node.outputs[0], low.wanted(1), low.wanted(2)])
    return 17


def _inv_rms(low: _Lower, x: Value, axes: list[int], eps: float, stash: int, what: str) -> Value:
    """1 / sqrt(mean(x², axes) + eps) in the stash type (keepdims)."""
    xs = low.before("Cast", [x], {"to": stash}, what=f"{what}_x", dtype=stash)
    sq = low.before("Mul", [xs, xs], what=f"{what}_sq", dtype=stash)
    ms = low.before("ReduceMean", [sq, low.i64(f"{what}_axes", axes)], {"keepdims": 1},
                    what=f"{what}_ms", dtype=stash)
    eps_v = low.const(f"{what}_eps", np.array(eps, dtype=_FLOAT_CODES[stash]))
    sd = low.before("Sqrt", [low.before("Add", [ms, eps_v], what=f"{what}_var", dtype=stash)],
                    what=f"{what}_rms", dtype=stash)
    return low.before("Reciprocal", [sd], what=what, dtype=stash)


def _produce(low: _Lower, op: str, inputs, target: Value, attrs=None, *, what: str) -> None:
    """A node inserted before the rewritten one that produces the declared value ``target``."""
    low.graph.insert_before(low.node, op, list(inputs), [target], dict(attrs or {}),
                            name=low._name(f"{what}_{op.lower()}"), version=low.version(op))


def skip_simplified_layer_normalization(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 4)
    _no_outputs_past(rw, 4)
    eps = _float(rw, "epsilon", 1e-12)
    gamma = _require(rw, 2, "gamma")
    _vector(rw, gamma, "gamma")
    s = _skip_sum(low, rw, 3)
    node = rw.node
    mean, inv = low.wanted(1), low.wanted(2)
    if mean is not None or inv is not None:
        inv_v = _inv_rms(low, s, [-1], eps, dtypes.FLOAT, "inv_std_var")
        if inv is not None:
            _produce(low, "Identity", [inv_v], inv, what="inv_std_var")
        if mean is not None:  # onnxruntime writes zeros there
            shape = low.before("Shape", [inv_v], what="mean_shape", dtype=dtypes.INT64)
            _produce(low, "ConstantOfShape", [shape], mean,
                     {"value": np.zeros(1, np.float32)}, what="mean")
    node.op_type = "RMSNormalization"
    node.attrs = {"axis": -1, "epsilon": eps}
    low.set_inputs([s, gamma])
    low.set_outputs([node.outputs[0]])
    return 23


def simplified_layer_normalization(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 2)
    _no_outputs_past(rw, 2)
    x = _require(rw, 0, "X")
    scale = _require(rw, 1, "scale")
    axis = _int(rw, "axis", -1)
    eps = _float(rw, "epsilon", 1e-5)
    stash = _int(rw, "stash_type", dtypes.FLOAT)
    if stash not in (dtypes.FLOAT, dtypes.DOUBLE):
        raise Decline(f"stash_type {stash} is not float or double")
    node = rw.node
    inv = low.wanted(1)
    if inv is not None:
        if axis < 0:
            axes = list(range(axis, 0))
        else:
            rank = low.rank(x)
            if rank is None:
                raise Decline(f"inv_std_var with axis={axis} needs the input's rank, "
                              "which is unknown")
            if axis >= rank:
                raise Decline(f"axis {axis} is out of range for rank {rank}")
            axes = list(range(axis, rank))
        inv_v = _inv_rms(low, x, axes, eps, stash, "inv_std_var")
        _produce(low, "Identity", [inv_v], inv, what="inv_std_var")
    node.op_type = "RMSNormalization"
    node.attrs = {"axis": axis, "epsilon": eps, "stash_type": stash}
    low.set_inputs([x, scale])
    low.set_outputs([node.outputs[0]])
    return 23


def group_norm(rw: Rewrite) -> int:
    """GroupNorm (onnxruntime's CUDA kernel for diffusion models)."""
    low = _Lower(rw)
    _no_inputs_past(rw, 3)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    gamma = _require(rw, 1, "gamma")
    beta = _require(rw, 2, "beta")
    groups = _int(rw, "groups")
    activation = _int(rw, "activation")
    channels_last = _flag(rw, "channels_last") if rw.attr("channels_last") is not None else True
    eps = _float(rw, "epsilon", 1e-5)
    if activation not in (0, 1):
        raise Decline(f"activation {activation} is not 0 (none) or 1 (SiLU)")
    if groups <= 0:
        raise Decline(f"groups must be positive, got {groups}")
    rank = low.rank(x)
    if rank is not None and rank != 4:
        raise Decline(f"X must be 4-D, got rank {rank}")
    gdata = rw.const_of(gamma)
    channels = None if gdata is None else gdata.size
    _vector(rw, gamma, "gamma")
    _vector(rw, beta, "beta", channels)
    if channels is not None and channels % groups:
        raise Decline(f"{channels} channels do not split into {groups} groups")
    code = low.dtype(x)
    params = []
    for what, p in (("gamma", gamma), ("beta", beta)):
        pcode = low.dtype(p)
        data = rw.const_of(p)
        if pcode is not None and pcode == code:
            params.append(p)
        elif data is not None and code in _FLOAT_CODES:
            params.append(low.const(what, data.astype(_FLOAT_CODES[code])))
        else:  # gamma / beta may be float32 for a float16 X: cast them like X
            params.append(low.before("CastLike", [p, x], what=what))
    node = rw.node
    y = node.outputs[0]
    if channels_last:
        x = low.before("Transpose", [x], {"perm": [0, 3, 1, 2]}, what="nchw")
    node.op_type = "GroupNormalization"
    node.attrs = {"num_groups": groups, "epsilon": eps}
    low.set_inputs([x, *params])
    tail: list[tuple[str, list, dict]] = []
    if activation:
        tail.append(("Swish", [], {}))
    if channels_last:
        tail.append(("Transpose", [], {"perm": [0, 2, 3, 1]}))
    _chain_after(low, y, tail, "groupnorm")
    return 21


def _chain_after(low: _Lower, y: Value, tail: list[tuple[str, list, dict]], what: str) -> None:
    """Ops applied in turn to the rewritten node's first output; the last produces ``y``.
    Each entry is (op, extra inputs after the running value, attributes)."""
    if not tail:
        return
    cur = low.stand_in(y, f"{what}_out")
    outs = list(low.node.outputs)
    outs[0] = cur
    low.set_outputs(outs)
    for i, (op, extra, attrs) in enumerate(tail):
        nxt = y if i == len(tail) - 1 else low.stand_in(y, f"{what}_{op.lower()}{i}")
        low.after(op, [cur, *extra], [nxt], attrs, what=f"{what}_{op.lower()}{i}")
        cur = nxt


# ----- activations --------------------------------------------------------------------------------
def gelu(rw: Rewrite) -> int:
    _no_inputs_past(rw, 1)
    _no_outputs_past(rw, 1)
    _require(rw, 0, "X")
    rw.node.op_type = "Gelu"
    rw.node.attrs = {}
    return 20


def bias_gelu(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 2)
    _no_outputs_past(rw, 1)
    a = _require(rw, 0, "A")
    b = _require(rw, 1, "B")
    _vector(rw, b, "B")
    s = low.before("Add", [a, b], what="biased")
    rw.node.op_type = "Gelu"
    rw.node.attrs = {}
    low.set_inputs([s])
    return 20


def fast_gelu(rw: Rewrite) -> int:
    """FastGelu's 0.5·x·(1 + tanh(0.797885·x + 0.035677·x³)) is Gelu's tanh approximation."""
    low = _Lower(rw)
    _no_inputs_past(rw, 2)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    bias = rw.input(1)
    if bias is not None:
        _vector(rw, bias, "bias")
        x = low.before("Add", [x, bias], what="biased")
    rw.node.op_type = "Gelu"
    rw.node.attrs = {"approximate": "tanh"}
    low.set_inputs([x])
    return 20


def quick_gelu(rw: Rewrite) -> int:
    _no_inputs_past(rw, 1)
    _no_outputs_past(rw, 1)
    _require(rw, 0, "X")
    alpha = _float(rw, "alpha", 1.702)
    rw.node.op_type = "Swish"
    rw.node.attrs = {"alpha": alpha}
    return 24


def bias_add(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 3)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    bias = _require(rw, 1, "bias")
    skip = _require(rw, 2, "skip")
    _vector(rw, bias, "bias")
    s = low.before("Add", [x, bias], what="biased")
    rw.node.op_type = "Add"
    rw.node.attrs = {}
    low.set_inputs([s, skip])
    return 14


def bias_split_gelu(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 2)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    bias = _require(rw, 1, "bias")
    _vector(rw, bias, "bias")
    data = rw.const_of(bias)
    if data is not None and data.size % 2:
        raise Decline(f"the hidden size {data.size} is odd; it must split in halves")
    s = low.before("Add", [x, bias], what="biased")
    left, right = low.before("Split", [s], {"axis": -1, "num_outputs": 2}, what="half",
                             n_out=2)
    g = low.before("Gelu", [right], what="gelu")
    rw.node.op_type = "Mul"
    rw.node.attrs = {}
    low.set_inputs([left, g])
    return 14


# ----- MatMul / Gemm / Conv -----------------------------------------------------------------------
def _transposed(low: _Lower, v: Value, trans: bool, trans_batch: bool, what: str) -> Value:
    """FusedMatMul's operand transform: ``transBatch`` moves dim 0 behind the other batch dims
    ([d0, b.., m, k] -> [b.., d0, m, k]... as perm [1..r-2, 0, r-1]); ``trans`` then swaps the
    last two dims."""
    if not trans and not trans_batch:
        return v
    rank = low.rank(v)
    data = low.rw.const_of(v)
    if rank is not None:
        perm = list(range(rank))
        if trans_batch and rank > 2:
            perm = list(range(1, rank - 1)) + [0, rank - 1]
        if trans:
            perm[-1], perm[-2] = perm[-2], perm[-1]
        if data is not None:
            return low.const(what, np.ascontiguousarray(np.transpose(data, perm)))
        return low.before("Transpose", [v], {"perm": perm}, what=what)
    # rank unknown: Einsum's ellipsis covers every batch rank
    src = "a...b" if trans_batch else "...ab"
    dst = "...ba" if trans else "...ab"
    return low.before("Einsum", [v], {"equation": f"{src}->{dst}"}, what=what)


def fused_matmul(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 2)
    _no_outputs_past(rw, 1)
    a = _require(rw, 0, "A")
    b = _require(rw, 1, "B")
    alpha = _float(rw, "alpha", 1.0)
    flags = [_flag(rw, f) for f in ("transA", "transB", "transBatchA", "transBatchB")]
    for v, trans, name in ((a, flags[0] or flags[2], "A"), (b, flags[1] or flags[3], "B")):
        rank = low.rank(v) if trans else None
        if rank is not None and rank < 2:
            raise Decline(f"a transposed operand must have rank >= 2, {name} has rank {rank}")
    a = _transposed(low, a, flags[0], flags[2], "a_t")
    b = _transposed(low, b, flags[1], flags[3], "b_t")
    node = rw.node
    node.op_type = "MatMul"
    node.attrs = {}
    low.set_inputs([a, b])
    if alpha != 1.0:
        y = node.outputs[0]
        code = low.dtype(rw.input(0), rw.input(1))
        scale = low.floats("alpha", alpha, code, a)
        _chain_after(low, y, [("Mul", [scale], {})], "alpha")
    return 13


_GEMM_ACTIVATIONS = {
    # name: (ONNX op, {onnx attr: FusedGemm attr}, attrs onnxruntime requires)
    "Relu": ("Relu", {}, ()),
    "Sigmoid": ("Sigmoid", {}, ()),
    "Tanh": ("Tanh", {}, ()),
    "Softplus": ("Softplus", {}, ()),
    "Softsign": ("Softsign", {}, ()),
    "LeakyRelu": ("LeakyRelu", {"alpha": "activation_alpha"}, ("activation_alpha",)),
    "HardSigmoid": ("HardSigmoid", {"alpha": "activation_alpha", "beta": "activation_beta"},
                    ("activation_alpha", "activation_beta")),
    "Elu": ("Elu", {"alpha": "activation_alpha"}, ("activation_alpha",)),
    "Selu": ("Selu", {"alpha": "activation_alpha", "gamma": "activation_gamma"},
             ("activation_alpha", "activation_gamma")),
    "ThresholdedRelu": ("ThresholdedRelu", {"alpha": "activation_alpha"}, ("activation_alpha",)),
    "Celu": ("Celu", {"alpha": "activation_alpha"}, ("activation_alpha",)),
    "ScaledTanh": (None, {}, ("activation_alpha", "activation_beta")),
    "ParametricSoftplus": (None, {}, ("activation_alpha", "activation_beta")),
}


def fused_gemm(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 3)
    _no_outputs_past(rw, 1)
    a = _require(rw, 0, "A")
    _require(rw, 1, "B")
    act = _text(rw, "activation")
    if act is None:
        raise Decline("has no 'activation' attribute (onnxruntime requires one)")
    if act not in _GEMM_ACTIVATIONS:
        raise Decline(f"activation {act!r} is not one onnxruntime's FusedGemm "
                      f"supports ({', '.join(sorted(_GEMM_ACTIVATIONS))})")
    onnx_op, mapping, required = _GEMM_ACTIVATIONS[act]
    for name in required:
        if rw.attr(name) is None:
            raise Decline(f"activation {act} needs the '{name}' attribute")
    params = {k: _float(rw, k, 0.0) for k in ("activation_alpha", "activation_beta",
                                               "activation_gamma") if rw.attr(k) is not None}
    gemm_attrs = {"alpha": _float(rw, "alpha", 1.0), "beta": _float(rw, "beta", 1.0),
                  "transA": int(_flag(rw, "transA")), "transB": int(_flag(rw, "transB"))}
    node = rw.node
    node.op_type = "Gemm"
    node.attrs = gemm_attrs
    y = node.outputs[0]
    if onnx_op is not None:
        _chain_after(low, y, [(onnx_op, [], {k: params[v] for k, v in mapping.items()})], "act")
    else:
        code = low.dtype(a, rw.input(1), rw.input(2))
        alpha = low.floats("act_alpha", params["activation_alpha"], code, a)
        beta = low.floats("act_beta", params["activation_beta"], code, a)
        inner = "Tanh" if act == "ScaledTanh" else "Softplus"  # alpha·f(beta·x)
        _chain_after(low, y, [("Mul", [beta], {}), (inner, [], {}), ("Mul", [alpha], {})], "act")
    return 13


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_CONV_ACTIVATIONS = {"Relu": 0, "Sigmoid": 0, "Tanh": 0, "HardSwish": 0, "LeakyRelu": 1,
                     "HardSigmoid": 2, "Clip": 2}


def _conv_activation(low: _Lower, rw: Rewrite, x: Value) -> list[tuple[str, list, dict]]:
    act = _text(rw, "activation")
    if act is None:
        return []
    if act not in _CONV_ACTIVATIONS:
        raise Decline(f"activation {act!r} is not one onnxruntime's FusedConv "
                      f"supports ({', '.join(sorted(_CONV_ACTIVATIONS))})")
    params = [float(p) for p in (rw.attr("activation_params") or [])]
    if len(params) != _CONV_ACTIVATIONS[act] and _CONV_ACTIVATIONS[act]:
        raise Decline(f"activation {act} needs {_CONV_ACTIVATIONS[act]} "
                      f"activation_params, got {len(params)}")
    if act == "LeakyRelu":
        return [("LeakyRelu", [], {"alpha": params[0]})]
    if act == "HardSigmoid":
        return [("HardSigmoid", [], {"alpha": params[0], "beta": params[1]})]
    if act == "Clip":
        code = low.dtype(x, rw.input(1), rw.input(2))
        lo = low.floats("clip_min", params[0], code, x)
        hi = low.floats("clip_max", params[1], code, x)
        return [("Clip", [lo, hi], {})]
    return [(act, [], {})]


def fused_conv(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 4)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    w = _require(rw, 1, "W")
    z = rw.input(3)
    tail = [("Add", [z], {})] if z is not None else []
    tail += _conv_activation(low, rw, x)
    node = rw.node
    node.op_type = "Conv"
    node.attrs = {k: node.attrs[k] for k in _CONV_ATTRS if k in node.attrs}
    low.set_inputs([x, w, rw.input(2)])
    _chain_after(low, node.outputs[0], tail, "conv")
    return 11


def nhwc_conv(rw: Rewrite) -> int:
    """NhwcConv: X and Y channels-last, W as onnxruntime's NHWC fusion writes it, [M, k.., C]."""
    low = _Lower(rw)
    _no_inputs_past(rw, 3)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    w = _require(rw, 1, "W")
    rank = rw.rank(w) or low.rank(x)
    if rank is None:
        raise Decline("needs the rank of X or W, which is unknown")
    if rank < 3:
        raise Decline(f"W must have rank >= 3, got {rank}")
    to_first = [0, rank - 1] + list(range(1, rank - 1))
    to_last = [0] + list(range(2, rank)) + [1]
    data = rw.const_of(w)
    if data is not None:
        w = low.const("weight_oihw", np.ascontiguousarray(np.transpose(data, to_first)))
    else:
        w = low.before("Transpose", [w], {"perm": to_first}, what="weight_oihw")
    xt = low.before("Transpose", [x], {"perm": to_first}, what="nchw")
    node = rw.node
    node.op_type = "Conv"
    node.attrs = {k: node.attrs[k] for k in _CONV_ATTRS if k in node.attrs}
    low.set_inputs([xt, w, rw.input(2)])
    _chain_after(low, node.outputs[0], [("Transpose", [], {"perm": to_last})], "nhwc")
    return 11


# ----- attention ----------------------------------------------------------------------------------
def _mask_rank(low: _Lower, mask: Value | None) -> int | None:
    """The mask's rank (checked before the rule edits anything); None without a mask."""
    if mask is None:
        return None
    rank = low.rank(mask)
    if rank is None:
        raise Decline("the rank of the mask input is unknown, and its form (lengths, a 2-D or a "
                      "3-D mask) depends on it")
    if rank not in (1, 2, 3):
        raise Decline(f"a {rank}-D mask is not supported (onnxruntime's CPU kernel has none "
                      "either)")
    return rank


def _mask_bias(low: _Lower, mask: Value, rank: int, query: Value, total: Value, filt: Value,
               zero: Value, lengths_2b: bool) -> Value:
    """onnxruntime's mask_index / key_padding_mask as an additive [B, 1, S, T] float bias.

    ``query`` is the [B, S, ...] input on the query side, ``total`` the [1] total key count;
    ``filt`` / ``zero`` are the float scalars of Q's type. 1-D: end positions [B] (and, with
    ``lengths_2b``, when its length is 2B, start positions after them; onnxruntime reads only the
    first B values of any other length). 2-D [B, T] and 3-D [B, S, T]: a value <= 0 masks the key.
    """
    if rank in (2, 3):
        code = low.dtype(mask) or dtypes.INT32
        zero_i = low.const("mask_zero", np.zeros((), dtype=dtypes.to_numpy(code)))
        keep = low.before("Greater", [mask, zero_i], what="mask_keep", dtype=dtypes.BOOL)
        bias = low.before("Where", [keep, zero, filt], what="mask_bias")
        if rank == 3:
            return low.before("Unsqueeze", [bias, low.i64("mask_bias_axes", [1])],
                              what="mask_bias4d")
        return _per_query(low, bias, query)
    i64 = dtypes.INT64
    batch = low.dim(query, 0, "batch")
    mask64 = low.before("Cast", [mask], {"to": i64}, what="mask_i64", dtype=i64)
    end = low.before("Slice", [mask64, low.i64("mask_start0", [0]), batch], what="mask_end",
                     dtype=i64)
    keys = low.before("Range", [low.scalar_i64("keys_from", 0), low.scalar(total, "keys_total"),
                                low.scalar_i64("keys_step", 1)], what="keys", dtype=i64)
    col = low.i64("mask_col_axes", [1])
    end_col = low.before("Unsqueeze", [end, col], what="mask_end_col", dtype=i64)
    masked = low.before("GreaterOrEqual", [keys, end_col], what="mask_past_end",
                        dtype=dtypes.BOOL)
    if lengths_2b:
        # [B] or [2B] is known only at run time: the starts are mask[B:2B] when len == 2B, else 0
        twice = low.before("Mul", [batch, low.i64("two", [2])], what="batch2", dtype=i64)
        length = low.before("Shape", [mask64], what="mask_len", dtype=i64)
        is_2b = low.before("Equal", [length, twice], what="mask_is_2b", dtype=dtypes.BOOL)
        doubled = low.before("Concat", [mask64, mask64], {"axis": 0}, what="mask_twice",
                             dtype=i64)
        tail = low.before("Slice", [doubled, batch, twice], what="mask_tail", dtype=i64)
        start = low.before("Where", [is_2b, tail, low.i64("mask_nostart", [0])],
                           what="mask_start", dtype=i64)
        start_col = low.before("Unsqueeze", [start, col], what="mask_start_col", dtype=i64)
        before = low.before("Less", [keys, start_col], what="mask_before_start",
                            dtype=dtypes.BOOL)
        masked = low.before("Or", [masked, before], what="mask_out", dtype=dtypes.BOOL)
    bias = low.before("Where", [masked, filt, zero], what="mask_bias")
    return _per_query(low, bias, query)


def _per_query(low: _Lower, bias: Value, query: Value) -> Value:
    """A [B, T] bias as [B, 1, S, T]. The kernel builds that sum anyway; spelling out the query
    axis keeps the graph valid for onnxruntime's Attention-23 too (once exported), which wants
    attn_mask's second-to-last dim to be S rather than a broadcast 1."""
    bias4 = low.before("Unsqueeze", [bias, low.i64("mask_bias_axes", [1, 2])],
                       what="mask_bias4d")
    shape = low.before("Concat", [low.i64("mask_ones", [1, 1]), low.dim(query, 1, "query_len"),
                                  low.i64("mask_one", [1])], {"axis": 0}, what="mask_shape",
                       dtype=dtypes.INT64)
    return low.before("Expand", [bias4, shape], what="mask_bias_full")


def _sum_dims(low: _Lower, parts: list[tuple[Value, int]], what: str) -> Value:
    """Sum of ``v.shape[axis]`` over ``parts`` as an int64 [1] tensor."""
    total = low.dim(parts[0][0], parts[0][1], f"{what}0")
    for i, (v, axis) in enumerate(parts[1:], start=1):
        total = low.before("Add", [total, low.dim(v, axis, f"{what}{i}")], what=f"{what}_sum{i}",
                           dtype=dtypes.INT64)
    return total


def _attention_mask(low: _Lower, mask: Value | None, rank: int | None, bias: Value | None,
                    filter_value: float, code: int | None, like: Value, query: Value,
                    total_parts: list[tuple[Value, int]], lengths_2b: bool) -> Value | None:
    """The float attn_mask: mask bias + attention_bias (None when there is neither)."""
    out = None
    if mask is not None and rank is not None:
        filt = low.floats("mask_filter", filter_value, code, like)
        zero = low.floats("mask_pass", 0.0, code, like)
        total = _sum_dims(low, total_parts, "total_len")
        out = _mask_bias(low, mask, rank, query, total, filt, zero, lengths_2b)
    if bias is not None:
        out = bias if out is None else low.before("Add", [out, bias], what="attn_bias")
    return out


def _attention_outputs(low: _Lower, present: list[Value | None], qk: Value | None) -> None:
    """Set the Attention-23 node's outputs: Y, present_key, present_value, qk_matmul_output."""
    node = low.node
    _keep_outputs(low, [node.outputs[0], *present, qk])


def _scale_attrs(low: _Lower, q: Value, scale: float) -> tuple[Value, dict]:
    """Attention-23's ``scale`` (0: its default 1/sqrt(head size)). Attention-23 scales Q and K by
    sqrt(scale) each, so a negative scale becomes -Q with the scale's magnitude."""
    if scale == 0.0:
        return q, {}
    if scale < 0:
        q = low.before("Neg", [q], what="query_negated")
    return q, {"scale": abs(scale)}


def attention(rw: Rewrite) -> int:
    """onnxruntime's BERT / GPT-2 Attention: input projection fused with the attention."""
    low = _Lower(rw)
    _no_inputs_past(rw, 7)
    _no_outputs_past(rw, 2)
    node = rw.node
    heads = _int(rw, "num_heads")
    if heads <= 0:
        raise Decline(f"num_heads must be positive, got {heads}")
    for name in ("do_rotary", "past_present_share_buffer"):
        if _flag(rw, name):
            raise Decline(f"{name}=1 is not supported")
    causal = _flag(rw, "unidirectional")
    filter_value = _float(rw, "mask_filter_value", -10000.0)
    scale = _float(rw, "scale", 0.0)
    x = _require(rw, 0, "input")
    w = _require(rw, 1, "weights")
    b, mask, past, extra_bias = rw.input(2), rw.input(3), rw.input(4), rw.input(5)
    if rw.input(6) is not None:
        raise Decline("past_sequence_length (a shared past/present buffer) is not "
                      "supported")
    sizes = rw.attr("qkv_hidden_sizes")
    wdata = rw.const_of(w)
    width = wdata.shape[1] if wdata is not None and wdata.ndim == 2 else None
    if wdata is not None and wdata.ndim != 2:
        raise Decline(f"weights must be 2-D, got shape {list(wdata.shape)}")
    if sizes is not None and len(sizes):
        sizes = [int(s) for s in sizes]
        if len(sizes) != 3 or any(s <= 0 or s % heads for s in sizes) or sizes[0] != sizes[1]:
            raise Decline(f"qkv_hidden_sizes {sizes} must be three positive multiples "
                          f"of num_heads={heads} with equal Q and K sizes")
        if width is not None and sum(sizes) != width:
            raise Decline(f"qkv_hidden_sizes {sizes} do not add up to the weights' "
                          f"{width} columns")
    else:
        sizes = None
        if width is not None and (width % 3 or (width // 3) % heads):
            raise Decline(f"the weights' {width} columns are not three hidden sizes "
                          f"divisible by num_heads={heads}")
    if past is not None and sizes is not None and len(set(sizes)) != 1:
        raise Decline("a past state needs equal Q, K and V hidden sizes")
    _vector(rw, b, "bias", width)
    mask_rank = _mask_rank(low, mask)
    code = low.dtype(w, b, x)
    qkv = low.before("MatMul", [x, w], what="qkv")
    if b is not None:
        qkv = low.before("Add", [qkv, b], what="qkv_biased")
    if sizes is not None:
        q, k, v = low.before("Split", [qkv, low.i64("qkv_sizes", sizes)], {"axis": -1},
                             what="qkv_part", n_out=3, version=max(rw.opset, 13))
    else:
        q, k, v = low.before("Split", [qkv], {"axis": -1, "num_outputs": 3}, what="qkv_part",
                             n_out=3)
    past_k = past_v = None
    if past is not None:
        past_k = low.before("Gather", [past, low.scalar_i64("past_key_index", 0)], {"axis": 0},
                            what="past_key")
        past_v = low.before("Gather", [past, low.scalar_i64("past_value_index", 1)],
                            {"axis": 0}, what="past_value")
    parts = [(x, 1)] + ([(past, 3)] if past is not None else [])
    attn_mask = _attention_mask(low, mask, mask_rank, extra_bias, filter_value, code, qkv, x,
                                parts, lengths_2b=True)
    q, scale_attrs = _scale_attrs(low, q, scale)
    node.op_type = "Attention"
    node.attrs = {"q_num_heads": heads, "kv_num_heads": heads, **scale_attrs}
    if causal:
        node.attrs["is_causal"] = 1
    low.set_inputs([q, k, v, attn_mask, past_k, past_v])
    present = low.wanted(1)
    if present is None:
        _attention_outputs(low, [], None)
        return 23
    pk = low.stand_in(present, "present_key")
    pv = low.stand_in(present, "present_value")
    _attention_outputs(low, [pk, pv], None)
    axis0 = low.i64("present_axes", [0])
    pk1 = low.stand_in(present, "present_key1")
    pv1 = low.stand_in(present, "present_value1")
    low.after("Unsqueeze", [pk, axis0], [pk1], what="present_key")
    low.after("Unsqueeze", [pv, axis0], [pv1], what="present_value")
    low.after("Concat", [pk1, pv1], [present], {"axis": 0}, what="present")
    return 23


def _bias_part(low: _Lower, bias: Value, q: Value, index: int, what: str) -> Value:
    """``bias[index·D : (index+1)·D]`` (the last part: to the end), D = q's hidden size."""
    rw = low.rw
    data = rw.const_of(bias)
    hidden = q.shape[-1] if q.shape else None
    if data is not None and isinstance(hidden, int):
        stop = None if index == 2 else (index + 1) * hidden
        return low.const(what, data[index * hidden: stop])
    d = low.dim(q, -1, f"{what}_hidden")
    if index == 0:
        start, end = low.i64(f"{what}_zero", [0]), d
    else:
        d2 = low.before("Mul", [d, low.i64(f"{what}_two", [2])], what=f"{what}_2d",
                        dtype=dtypes.INT64)
        start, end = (d, d2) if index == 1 else (d2, low.i64(f"{what}_end", [_INT64_MAX]))
    return low.before("Slice", [bias, start, end], what=what)


def _unpack(low: _Lower, packed: Value, count: int, what: str) -> list[Value]:
    """[B, L, N, count, H] -> ``count`` tensors [B, L, N·H]."""
    parts = low.before("Split", [packed], {"axis": 3, "num_outputs": count}, what=f"{what}_part",
                       n_out=count)
    shape = low.i64(f"{what}_shape", [0, 0, -1])
    return [low.before("Reshape", [p, shape], what=f"{what}{i}") for i, p in enumerate(parts)]


def multi_head_attention(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 10)
    _no_outputs_past(rw, 4)
    node = rw.node
    heads = _int(rw, "num_heads")
    if heads <= 0:
        raise Decline(f"num_heads must be positive, got {heads}")
    causal = _flag(rw, "unidirectional")
    filter_value = _float(rw, "mask_filter_value", -10000.0)
    scale = _float(rw, "scale", 0.0)
    q = _require(rw, 0, "query")
    k, v, bias, mask, extra_bias, past_k, past_v = (rw.input(i) for i in range(1, 8))
    if rw.input(8) is not None or rw.input(9) is not None:
        raise Decline("past_sequence_length / cache_indirection (shared buffers, "
                      "beam search) are not supported")
    if (past_k is None) != (past_v is None):
        raise Decline("past_key and past_value must be given together")
    four_d = False
    packing = None
    if k is not None:
        rq = low.rank(q)
        if rq is not None and rq != 3:
            raise Decline(f"query must be 3-D [B, S, D], got rank {rq}")
    if k is None:
        if v is not None:
            raise Decline("value without key")
        if low.rank(q) != 5:
            raise Decline(f"without key, query must be packed QKV [B, L, N, 3, H] "
                          f"(rank 5), got rank {low.rank(q)}")
        if bias is not None:
            raise Decline("bias with packed QKV is not supported")
        packing = "qkv"
    elif v is None:
        if low.rank(k) != 5:
            raise Decline(f"without value, key must be packed KV [B, L, N, 2, H] "
                          f"(rank 5), got rank {low.rank(k)}")
        if bias is not None:
            raise Decline("bias with packed KV is not supported")
        packing = "kv"
    else:
        rk, rv = low.rank(k), low.rank(v)
        if rk is None or rv is None:
            raise Decline("the ranks of key and value are unknown (3-D [B, L, D] "
                          "and 4-D [B, N, L, H] inputs are lowered differently)")
        if rk != rv or rk not in (3, 4):
            raise Decline(f"key and value must both be 3-D or both 4-D, got ranks "
                          f"{rk} and {rv}")
        four_d = rk == 4
        if four_d and past_k is not None:
            raise Decline("4-D key / value with a past state is not supported")
    if bias is not None:
        _vector(rw, bias, "bias")
    mask_rank = _mask_rank(low, mask)
    code = low.dtype(q, bias, k, v, extra_bias)
    if packing == "qkv":
        q, k, v = _unpack(low, q, 3, "qkv")
    elif packing == "kv":
        k, v = _unpack(low, k, 2, "kv")
    if bias is not None:
        q0 = q
        q = low.before("Add", [q, _bias_part(low, bias, q0, 0, "bias_q")], what="query")
        if not four_d:
            k = low.before("Add", [k, _bias_part(low, bias, q0, 1, "bias_k")], what="key")
            v = low.before("Add", [v, _bias_part(low, bias, q0, 2, "bias_v")], what="value")
    kv_axis = 2 if four_d else 1
    parts = [(k, kv_axis)] + ([(past_k, 2)] if past_k is not None else [])
    attn_mask = _attention_mask(low, mask, mask_rank, extra_bias, filter_value, code, q, q,
                                parts, lengths_2b=False)
    y = node.outputs[0]
    if four_d:
        q4 = low.before("Reshape", [q, low.i64("query_shape", [0, 0, heads, -1])],
                        what="query_heads")
        q = low.before("Transpose", [q4], {"perm": [0, 2, 1, 3]}, what="query_bnsh")
    q, scale_attrs = _scale_attrs(low, q, scale)
    node.op_type = "Attention"
    node.attrs = {} if four_d else {"q_num_heads": heads, "kv_num_heads": heads}
    node.attrs.update(scale_attrs)
    if causal:
        node.attrs["is_causal"] = 1
    qk = low.wanted(3)
    if qk is not None:
        node.attrs["qk_matmul_output_mode"] = 2
    low.set_inputs([q, k, v, attn_mask, past_k, past_v])
    qk_out = qk
    if qk is not None and causal:
        qk_out = low.stand_in(qk, "qk_causal")
    _attention_outputs(low, [low.wanted(1), low.wanted(2)], qk_out)
    if qk_out is not qk:
        # onnxruntime writes the lowest finite float where the causal mask excludes a key
        lowest = float(np.finfo(_FLOAT_CODES.get(code, np.float32)).min)
        low.after("Max", [qk_out, low.floats("qk_lowest", lowest, code, q)], [qk],
                  what="qk")
    if four_d:
        _chain_after(low, y, [("Transpose", [], {"perm": [0, 2, 1, 3]}),
                              ("Reshape", [low.i64("output_shape", [0, 0, -1])], {})], "bsnh")
    return 23


def embed_layer_normalization(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 9)
    _no_outputs_past(rw, 3)
    node = rw.node
    eps = _float(rw, "epsilon", 1e-12)
    ids = _require(rw, 0, "input_ids")
    seg_ids = rw.input(1)
    word = _require(rw, 2, "word_embedding")
    pos = _require(rw, 3, "position_embedding")
    seg = rw.input(4)
    gamma = _require(rw, 5, "gamma")
    beta = _require(rw, 6, "beta")
    mask, pos_ids = rw.input(7), rw.input(8)
    if (seg_ids is None) != (seg is None):
        raise Decline("segment_ids and segment_embedding must be given together")
    for what, table in (("word_embedding", word), ("position_embedding", pos),
                        ("segment_embedding", seg)):
        rank = rw.rank(table)
        if rank is not None and rank != 2:
            raise Decline(f"{what} must be 2-D, got rank {rank}")
    _vector(rw, gamma, "gamma")
    _vector(rw, beta, "beta")
    rank = low.rank(ids)
    if rank is not None and rank != 2:
        raise Decline(f"input_ids must be 2-D [B, S], got rank {rank}")
    total = low.before("Gather", [word, ids], {"axis": 0}, what="word")
    if pos_ids is None:
        seq = low.scalar(low.dim(ids, 1, "seq_len"), "seq")
        pos_ids = low.before("Range", [low.scalar_i64("pos_from", 0), seq,
                                       low.scalar_i64("pos_step", 1)], what="position_ids",
                             dtype=dtypes.INT64)
    pe = low.before("Gather", [pos, pos_ids], {"axis": 0}, what="position")
    embedding_sum = low.wanted(2)
    if seg is None and embedding_sum is not None:
        _produce(low, "Add", [total, pe], embedding_sum, what="embedding_sum")
        total = embedding_sum
    else:
        total = low.before("Add", [total, pe], what="word_position")
    if seg is not None:
        se = low.before("Gather", [seg, seg_ids], {"axis": 0}, what="segment")
        if embedding_sum is not None:
            _produce(low, "Add", [total, se], embedding_sum, what="embedding_sum")
            total = embedding_sum
        else:
            total = low.before("Add", [total, se], what="embeddings")
    mask_index = low.wanted(1)
    if mask_index is not None:
        i32 = dtypes.INT32
        if mask is not None:
            code = low.dtype(mask) or i32
            one = low.const("mask_one", np.ones((), dtype=dtypes.to_numpy(code)))
            ones = low.before("Equal", [mask, one], what="mask_ones", dtype=dtypes.BOOL)
            ones32 = low.before("Cast", [ones], {"to": i32}, what="mask_ones_i32", dtype=i32)
            _produce(low, "ReduceSum", [ones32, low.i64("mask_axes", [1])], mask_index,
                     {"keepdims": 0}, what="mask_index")
        else:  # onnxruntime writes zeros
            _produce(low, "ConstantOfShape", [low.dim(ids, 0, "batch")], mask_index,
                     {"value": np.zeros(1, np.int32)}, what="mask_index")
    node.op_type = "LayerNormalization"
    node.attrs = {"axis": -1, "epsilon": eps}
    low.set_inputs([total, gamma, beta])
    low.set_outputs([node.outputs[0]])
    return 17


def rotary_embedding(rw: Rewrite) -> int:
    low = _Lower(rw)
    _no_inputs_past(rw, 4)
    _no_outputs_past(rw, 1)
    node = rw.node
    x = _require(rw, 0, "input")
    pos = _require(rw, 1, "position_ids")
    cos = _require(rw, 2, "cos_cache")
    sin = _require(rw, 3, "sin_cache")
    interleaved = _flag(rw, "interleaved")
    if _flag(rw, "is_packed_batching"):
        raise Decline("is_packed_batching=1 (ragged batches) is not supported")
    heads = _int(rw, "num_heads", 0)
    rot = _int(rw, "rotary_embedding_dim", 0)
    if rot and heads <= 0:
        raise Decline("rotary_embedding_dim needs num_heads (as in onnxruntime)")
    if heads < 0 or rot < 0:
        raise Decline("num_heads and rotary_embedding_dim must be >= 0")
    for what, cache in (("cos_cache", cos), ("sin_cache", sin)):
        r = low.rank(cache)
        if r is not None and r != 2:
            raise Decline(f"{what} must be 2-D [max_position, rotary_dim / 2], got rank {r}")
    prank = low.rank(pos)
    if prank is None:
        raise Decline("the rank of position_ids is unknown ([1] offset or [B, S])")
    if prank not in (1, 2):
        raise Decline(f"position_ids must be [1] or [B, S], got rank {prank}")
    head_size = None  # set when a 3-D input without num_heads is split into heads here
    if not heads:
        rank = low.rank(x)
        if rank is None:
            raise Decline("without num_heads the input's rank must be known")
        if rank not in (3, 4):
            raise Decline(f"input must be 3-D or 4-D, got rank {rank}")
        if rank == 3:
            # full rotation: onnxruntime takes the head size from the cache
            cdata = rw.const_of(cos)
            cshape = list(cdata.shape) if cdata is not None else cos.shape
            half = cshape[1] if cshape is not None and len(cshape) == 2 else None
            if not isinstance(half, int):
                raise Decline("without num_heads the head size must come from a cos_cache of "
                              "known shape")
            head_size = 2 * half
    if prank == 1:
        # one start offset: positions offset + 0..S-1 for every batch row
        seq = low.scalar(low.dim(x, -2, "seq_len"), "seq")
        steps = low.before("Range", [low.scalar_i64("pos_from", 0), seq,
                                     low.scalar_i64("pos_step", 1)], what="steps",
                           dtype=dtypes.INT64)
        row = low.before("Add", [steps, pos], what="position_row", dtype=dtypes.INT64)
        row2 = low.before("Unsqueeze", [row, low.i64("pos_axes", [0])], what="position_row2d",
                          dtype=dtypes.INT64)
        batch = low.dim(x, 0, "batch")
        shape = low.before("Concat", [batch, low.i64("pos_one", [1])], {"axis": 0},
                           what="position_shape", dtype=dtypes.INT64)
        pos = low.before("Expand", [row2, shape], what="position_ids", dtype=dtypes.INT64)
    attrs = {"interleaved": int(interleaved)}
    if rot:
        attrs["rotary_embedding_dim"] = rot
    if heads:
        attrs["num_heads"] = heads
    y = node.outputs[0]
    tail: list[tuple[str, list, dict]] = []
    if head_size is not None:
        # [B, S, D] -> [B, N, S, H], rotated, and back
        x4 = low.before("Reshape", [x, low.i64("heads_shape", [0, 0, -1, head_size])],
                        what="heads")
        orig = low.before("Shape", [x], what="input_shape", dtype=dtypes.INT64)
        x = low.before("Transpose", [x4], {"perm": [0, 2, 1, 3]}, what="bnsh")
        tail = [("Transpose", [], {"perm": [0, 2, 1, 3]}), ("Reshape", [orig], {})]
    node.op_type = "RotaryEmbedding"
    node.attrs = attrs
    low.set_inputs([x, cos, sin, pos])
    _chain_after(low, y, tail, "rotary")
    return 23


# ----- onnxruntime's default-domain leftovers of ONNX's experimental operators (opset <= 9) ------
def _scaled(rw: Rewrite, inner: str | None, alpha: float, beta: float | None) -> int:
    """``alpha · inner(beta · x)`` (no Mul for a factor of None; the node becomes the last op)."""
    low = _Lower(rw)
    _no_inputs_past(rw, 1)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    code = low.dtype(x)
    if beta is not None:
        x = low.before("Mul", [x, low.floats("beta", beta, code, x)], what="scaled_input")
    if inner is not None:
        x = low.before(inner, [x], what=inner.lower())
    rw.node.op_type = "Mul"
    rw.node.attrs = {}
    low.set_inputs([x, low.floats("alpha", alpha, code, x)])
    return 14


def _required_floats(rw: Rewrite, *names: str) -> list[float]:
    for name in names:
        if rw.attr(name) is None:
            raise Decline(f"needs the '{name}' attribute (onnxruntime requires it)")
    return [_float(rw, name, 0.0) for name in names]


def scaled_tanh(rw: Rewrite) -> int:
    alpha, beta = _required_floats(rw, "alpha", "beta")
    return _scaled(rw, "Tanh", alpha, beta)


def parametric_softplus(rw: Rewrite) -> int:
    alpha, beta = _required_floats(rw, "alpha", "beta")
    return _scaled(rw, "Softplus", alpha, beta)


def scale(rw: Rewrite) -> int:
    return _scaled(rw, None, _float(rw, "scale", 1.0), None)


def affine(rw: Rewrite) -> int:
    """``alpha · x + beta``."""
    low = _Lower(rw)
    _no_inputs_past(rw, 1)
    _no_outputs_past(rw, 1)
    x = _require(rw, 0, "X")
    alpha, beta = _float(rw, "alpha", 1.0), _float(rw, "beta", 0.0)
    code = low.dtype(x)
    scaled = low.before("Mul", [x, low.floats("alpha", alpha, code, x)], what="scaled")
    rw.node.op_type = "Add"
    rw.node.attrs = {}
    low.set_inputs([scaled, low.floats("beta", beta, code, x)])
    return 14


def dynamic_slice(rw: Rewrite) -> int:
    """DynamicSlice(data, starts, ends, axes) is Slice-10 (without steps)."""
    _no_inputs_past(rw, 4)
    _no_outputs_past(rw, 1)
    for i, what in enumerate(("data", "starts", "ends")):
        _require(rw, i, what)
    rw.node.op_type = "Slice"
    rw.node.attrs = {}
    return 10


def memcpy(rw: Rewrite) -> int:
    """MemcpyFromHost / MemcpyToHost (device copies onnxruntime inserts) are identities here."""
    _no_inputs_past(rw, 1)
    _no_outputs_past(rw, 1)
    _require(rw, 0, "X")
    rw.node.op_type = "Identity"
    rw.node.attrs = {}
    return 13


RULES: dict[str, Rule] = {
    "SkipLayerNormalization": skip_layer_normalization,
    "SkipSimplifiedLayerNormalization": skip_simplified_layer_normalization,
    "SimplifiedLayerNormalization": simplified_layer_normalization,
    "Gelu": gelu,
    "BiasGelu": bias_gelu,
    "FastGelu": fast_gelu,
    "QuickGelu": quick_gelu,
    "BiasAdd": bias_add,
    "BiasSplitGelu": bias_split_gelu,
    "FusedMatMul": fused_matmul,
    "TransposeMatMul": fused_matmul,
    "FusedGemm": fused_gemm,
    "FusedConv": fused_conv,
    "NhwcConv": nhwc_conv,
    "GroupNorm": group_norm,
    "Attention": attention,
    "MultiHeadAttention": multi_head_attention,
    "EmbedLayerNormalization": embed_layer_normalization,
    "RotaryEmbedding": rotary_embedding,
    "Affine": affine,
    "Scale": scale,
    "ScaledTanh": scaled_tanh,
    "ParametricSoftplus": parametric_softplus,
    "DynamicSlice": dynamic_slice,
    "MemcpyFromHost": memcpy,
    "MemcpyToHost": memcpy,
}
# Operators onnxruntime registers in the *default* domain although ONNX does not define them
# there (its transformers optimizer writes them so); lowered by the same rules.
DEFAULT_DOMAIN_OPS: frozenset[str] = frozenset({
    "SimplifiedLayerNormalization", "Affine", "Scale", "ScaledTanh", "ParametricSoftplus",
    "DynamicSlice", "MemcpyFromHost", "MemcpyToHost",
})
