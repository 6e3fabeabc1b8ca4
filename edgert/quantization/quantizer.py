"""The int8 rewriter: a float IR graph plus calibrated ranges -> an int8 IR graph.

The rewrite walks the float graph in order and builds a new graph. Every tensor may exist in a
float form, an int8 form, or both; a form is created on demand:

* an op with an int8 kernel asks for the int8 form of its inputs (``edgert.Quantize`` is
  inserted after a float producer, once) and produces only an int8 output;
* an op without one asks for the float form (``edgert.Dequantize`` after an int8 producer, once)
  and stays float — it is listed in :attr:`QuantizeResult.float_ops`.

So int8 chains stay int8 (residual Add, Concat and pooling included), and the model's inputs and
outputs stay float (:func:`int8_io` makes them int8 on request). Rules per op (the new ops are
documented in :mod:`edgert.runtime.kernels.cpu.quantized`):

* Conv / ConvTranspose / Gemm / MatMul with constant weights: weights symmetric int8 per output
  channel (or per tensor), bias int32 with scale ``x_scale * w_scale``; a following Relu/Clip
  that is the only reader is folded into the output range and clamp.
* Add / Mul (broadcasting; a constant operand is quantized per tensor), Concat (inputs rescaled).
* Resize (every mode) on the int8 codes, keeping the input's parameters.
* MaxPool / AveragePool / GlobalAveragePool: output keeps the input's parameters.
* Relu, Clip, LeakyRelu, Sigmoid, Tanh, HardSigmoid, HardSwish: a 256-entry lookup table.
* Softmax: output scale 1/256, zero point -128 (the TFLite convention).
* Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Identity, Pad (constant mode): the
  same op moves int8 data; the output keeps the input's parameters.

An AveragePool that counts its padding, on a zero point other than 0, is a depthwise
``edgert.QConv`` with weights 1 (the pads must be real zeros, which ``edgert.QAveragePool``'s
code-0 padding is not).

The rewriter works from one ``(scale, zero_point)`` per float tensor. :func:`quantize_graph`
derives them from calibrated ranges (:func:`activation_params`) and quantizes the weights itself;
:func:`quantize_graph_explicit` takes them as given, with the weights' own int8 codes (a QDQ
ONNX model's, :mod:`.qdq_import`). Then a tensor without parameters stays float, and so does
every op whose output has none; a float op's output that has parameters is read quantized; a
move or MaxPool whose output parameters differ from its input's is followed by an
``edgert.QLut`` that requantizes (DequantizeLinear -> QuantizeLinear exactly); Softmax keeps the
given output parameters; an averaging pool into output parameters other than its input's runs
in float between ``edgert.Dequantize``/``edgert.Quantize`` (:data:`FLOAT_ROUNDING`): one
rounding, as DequantizeLinear -> pool -> QuantizeLinear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value

# A Concat whose smallest input range is this many times below its output range stays float.
_CONCAT_RANGE_RATIO = 32
QMIN, QMAX = -128, 127
# The reason given for an op that explicit mode keeps float on purpose (not for want of a form).
FLOAT_ROUNDING = "averaged in float into output parameters of its own (one rounding)"
_NO_PAD = ("NOTSET", b"NOTSET", "VALID", b"VALID")


def int8_rule(node: Node) -> str | None:
    """The quantizer's rule for ``node``: its CPU kernel's ``int8`` trait
    (:class:`edgert.runtime.registry.OpTraits`); edgert-domain nodes only for the linear ops
    (the optimizer's fused Conv/Gemm/MatMul)."""
    from edgert.runtime.kernels.cpu import registry

    if node.domain not in ("", "ai.onnx", "edgert"):
        return None
    rule = registry().traits(node.op_type, node.domain if node.domain == "edgert" else "",
                             node.version).int8
    return rule if node.domain != "edgert" or rule == "linear" else None


def f32(x: float) -> float:
    """``x`` rounded to float32: scales are stored as float32, so compute with those values."""
    return float(np.float32(x))


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` for the range ``[lo, hi]`` (0 always included,
    so that zero padding and ReLU's 0 are exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return 1.0 / 255.0, 0
    scale = f32((hi - lo) / 255.0)
    zp = int(round(QMIN - lo / scale))
    return scale, min(max(zp, QMIN), QMAX)


def quantize_array(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zp
    return np.clip(q, QMIN, QMAX).astype(np.int8)


def weight_params(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """Symmetric scales ``max|w| / 127`` per output channel (axis 0) or one per tensor."""
    a = np.abs(w.reshape(w.shape[0], -1)) if per_channel else np.abs(w.reshape(1, -1))
    m = a.max(axis=1).astype(np.float64)
    return np.where(m > 0, m / 127.0, 1.0).astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    s = scales.reshape((-1,) + (1,) * (w.ndim - 1))
    return np.clip(np.rint(w.astype(np.float32) / s), -127, 127).astype(np.int8)


def quantize_bias(b: np.ndarray, x_scale: float, w_scales: np.ndarray) -> np.ndarray:
    s = np.float32(x_scale) * w_scales.astype(np.float32)
    q = np.rint(b.astype(np.float64) / s.astype(np.float64))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)


@dataclass
class QConst:
    """A constant of the float graph given as integer codes: ``value == (codes - 0) * scale``.

    ``value`` is the float constant that the graph holds (checked against the graph's constant,
    so that one changed by the optimizer, e.g. a BatchNormalization folded into it, is noticed);
    ``codes`` int8 (weights) or int32 (biases), zero point 0; ``scale`` float32, broadcastable
    to ``codes.shape`` (per tensor, per axis, or per block).
    """

    value: np.ndarray
    codes: np.ndarray
    scale: np.ndarray


@dataclass
class QuantizeResult:
    """The rewritten graph and what happened to each op."""

    graph: Graph
    int8_ops: dict[str, int] = field(default_factory=dict)
    float_ops: list[tuple[str, str, str]] = field(default_factory=list)  # (op, name, reason)
    # float tensor name -> its int8 value in the new graph (for the SQNR report)
    qvalues: dict[str, Value] = field(default_factory=dict)


class _Rewriter:
    """``params``: int8 ``(scale, zero_point)`` per float tensor name. ``weights`` None: weights
    are quantized here (symmetric, ``per_channel``); else explicit mode: the int8 weights and
    int32 biases by constant name (a str: why that weight cannot be int8)."""

    def __init__(self, src: Graph, params: dict[str, tuple[float, int]], per_channel: bool,
                 weights: dict[str, QConst | str] | None = None):
        self.src = src
        self.params = dict(params)
        self.per_channel = per_channel
        self.explicit = weights is not None
        self.weights = weights or {}
        # Explicit mode: the unquantized output of a float op whose output has parameters. Its
        # readers see it quantized (float readers through Quantize -> Dequantize), as in QDQ.
        self.raw: dict[str, Value] = {}
        g = Graph(src.name)
        g.opset = dict(src.opset)
        g.opset.setdefault("edgert", 1)
        g.metadata = dict(src.metadata)
        # Reserve every original name: float forms keep them, new values get fresh ones.
        for v in src.values():
            g.unique_name(v.name)
        for n in src.nodes:
            if n.name:
                g.unique_name(n.name)
        self.g = g
        self.fmap: dict[str, Value] = {}
        self.qmap: dict[str, Value] = {}
        self.result = QuantizeResult(g)

    # ----- forms of a tensor --------------------------------------------------------------------
    def _copy_value(self, v: Value) -> Value:
        nv = Value(v.name, v.dtype, v.shape, v.const)
        nv.meta = dict(v.meta)
        if v.const is not None:
            self.g.constants[v.name] = nv
        return nv

    def float_of(self, v: Value | None) -> Value | None:
        if v is None:
            return None
        if v.name in self.fmap:
            return self.fmap[v.name]
        if v.name in self.raw:
            self.int8_of(v)
        elif v.const is not None or v.name not in self.qmap:
            nv = self._copy_value(v)
            self.fmap[v.name] = nv
            return nv
        q = self.qmap[v.name]
        scale, zp, _ = q.quant
        raw = self.raw.get(v.name)
        nv = Value(v.name if raw is None or raw.name != v.name
                   else self.g.unique_name(v.name + "_dq"), dtypes.FLOAT, v.shape)
        self.g.add_node("Dequantize", [q], [nv], {"scale": [float(scale[0])],
                                                  "zero_point": [int(zp[0])]},
                        name=self.g.unique_name(v.name + "_dequant"), domain="edgert")
        self.fmap[v.name] = nv
        return nv

    def params_of(self, v: Value) -> tuple[float, int] | None:
        if v.name in self.qmap:
            s, z, _ = self.qmap[v.name].quant
            return float(s[0]), int(z[0])
        p = self.params.get(v.name)
        if p is None and v.const is not None and v.const.dtype.kind == "f" and v.const.size:
            return activation_params(float(v.const.min()), float(v.const.max()))
        return p

    def int8_of(self, v: Value) -> Value:
        if v.name in self.qmap:
            return self.qmap[v.name]
        scale, zp = self.params_of(v)
        if v.const is not None:
            q = self.g.add_constant(v.name + "_q", quantize_array(v.const, scale, zp))
            q.quant = (np.array([scale], np.float32), np.array([zp], np.int64), 0)
            self.qmap[v.name] = q
            return q
        f = self.raw[v.name] if v.name in self.raw else self.float_of(v)
        q = self.new_q(v, scale, zp)
        self.g.add_node("Quantize", [f], [q], {"scale": scale, "zero_point": zp},
                        name=self.g.unique_name(v.name + "_quant"), domain="edgert")
        return q

    def new_q(self, v: Value, scale: float, zp: int, axis: int = 0) -> Value:
        q = self.g.new_value(v.name + "_q", dtypes.INT8, v.shape)
        q.quant = (np.array([scale], np.float32), np.array([zp], np.int64), axis)
        self.qmap[v.name] = q
        self.result.qvalues[v.name] = q
        return q

    def quantizable(self, v: Value | None) -> bool:
        return (v is not None and v.const is None and v.dtype == dtypes.FLOAT
                and (v.name in self.qmap or v.name in self.params))

    # ----- the walk -----------------------------------------------------------------------------
    def run(self) -> QuantizeResult:
        if self.explicit:  # a model input with parameters: its readers see it quantized
            for v in self.src.inputs:
                if v.name in self.params and v.dtype == dtypes.FLOAT:
                    self.raw[v.name] = self._copy_value(v)
        skip: set[int] = set()
        for node in self.src.nodes:
            if id(node) in skip:
                continue
            reason = self.try_int8(node, skip)
            if reason is None:
                key = node.op_type
                self.result.int8_ops[key] = self.result.int8_ops.get(key, 0) + 1
                continue
            if any(self.quantizable(v) for v in node.inputs):
                self.result.float_ops.append((node.op_type, node.name, reason))
            self.copy_float(node)
        self.g.inputs = [self.raw.get(v.name) or self.float_of(v) for v in self.src.inputs]
        self.g.outputs = [self.float_of(v) for v in self.src.outputs]
        return self.result

    def copy_float(self, node: Node) -> None:
        if (self.explicit and node.op_type == "Identity" and node.domain in ("", "ai.onnx")
                and len(node.outputs) == 1 and node.outputs[0].name in self.params
                and node.input(0) is not None):
            # A float value quantized under another name (qdq_import's form of a pair on a
            # tensor that is read unquantized too): no copy, the same float value.
            self.raw[node.outputs[0].name] = self.float_of(node.inputs[0])
            return
        ins = [self.float_of(v) for v in node.inputs]
        outs = []
        for o in node.outputs:
            if self.explicit and o.name in self.params and o.dtype == dtypes.FLOAT:
                nv = Value(self.g.unique_name(o.name + "_float"), o.dtype, o.shape)
                self.raw[o.name] = nv
            else:
                nv = Value(o.name, o.dtype, o.shape)
                self.fmap[o.name] = nv
            nv.meta = dict(o.meta)
            outs.append(nv)
        self.g.add_node(node.op_type, ins, outs, dict(node.attrs), name=node.name,
                        domain=node.domain, version=node.version)

    def try_int8(self, node: Node, skip: set[int]) -> str | None:
        """Emit the int8 form of ``node`` and return None, or return why it stays float."""
        op = node.op_type
        rule = int8_rule(node)
        if rule is None:
            return f"no int8 kernel for {node.domain + '.' if node.domain else ''}{op}"
        if node.domain == "edgert" and op == "Conv" and node.input(3) is not None:
            return "no int8 kernel for a Conv with a fused residual sum"
        if node.domain == "edgert" and node.attrs.get("channel_shuffle"):
            return "no int8 kernel for a Conv with a fused channel shuffle"
        x = node.input(0)
        if rule == "binary" and not self.quantizable(x):
            x = node.input(1)  # Add(bias, x), as exporters write it: binary() takes either
        if not self.quantizable(x):
            return self.missing("its input")
        live_outs = [o for o in node.outputs if not o.meta.get("omitted")]
        if len(live_outs) != 1 or live_outs[0].dtype != dtypes.FLOAT:
            return "more than one output"
        y = live_outs[0]
        if rule == "linear":
            return self.linear(node, x, y, skip)
        if rule == "binary":
            return self.binary(node, y, skip)
        if rule == "concat":
            if not all(self.quantizable(v) or (v is not None and v.const is not None
                                               and v.const.dtype.kind == "f")
                       for v in node.inputs):
                return self.missing("an input")
            return self.concat(node, y)
        if rule == "pool":
            return self.pool(node, x, y)
        if rule == "move":
            return self.move(node, x, y)
        if rule == "lut":
            return self.lut(node, x, y)
        if rule == "softmax":
            return self.softmax(node, x, y)
        raise AssertionError(f"unknown int8 rule {rule!r} of {op}")

    def missing(self, what: str) -> str:
        return f"{what} has no " + ("quantization parameters in the model" if self.explicit
                                    else "calibrated range")

    def out_params(self, y: Value) -> tuple[float, int] | None:
        return self.params.get(y.name)

    # ----- Conv / Gemm / MatMul -----------------------------------------------------------------
    def fused_activation(self, node: Node, y: Value, skip: set[int]):
        """``(final output value, clamp lo, hi in real units)`` with a following Relu/Clip."""
        act = node.attrs.get("activation")
        if act is not None:
            params = list(node.attrs.get("activation_params", []))
            if act == "Relu":
                return y, 0.0, math.inf, None
            if act == "Clip":
                lo = params[0] if len(params) > 0 else -math.inf
                hi = params[1] if len(params) > 1 else math.inf
                return y, lo, hi, None
            return None, 0.0, 0.0, f"fused activation {act} has no int8 form"
        if (len(y.consumers) == 1 and y not in self.src.outputs
                and self.out_params(y.consumers[0].outputs[0]) is not None):
            nxt = y.consumers[0]
            if nxt.op_type == "Relu" and nxt.domain == "":
                skip.add(id(nxt))
                return nxt.outputs[0], 0.0, math.inf, None
            if nxt.op_type == "Clip" and nxt.domain == "":
                lo, hi = _clip_bounds(nxt)
                if lo is not None:
                    skip.add(id(nxt))
                    return nxt.outputs[0], lo, hi, None
        return y, -math.inf, math.inf, None

    def linear(self, node: Node, x: Value, y: Value, skip: set[int]) -> str | None:
        op = node.op_type
        w = node.input(1)
        if w is None or w.const is None or w.const.dtype.kind != "f":
            return "the weight is not a constant float tensor"
        explicit = None
        if self.explicit:
            explicit = self.weights.get(w.name)
            if explicit is None:
                return "its weight is not quantized in the model"
            if isinstance(explicit, str):
                return explicit
            if not np.array_equal(w.const, explicit.value):
                return "its weight was changed by the optimizer (a folded BatchNormalization?)"
        wf = w.const.astype(np.float32)
        bias = None
        bias_v = None
        attrs: dict = {}
        w_shape = wf.shape
        group = int(node.attrs.get("group", 1))
        alpha = 1.0
        if op == "ConvTranspose":
            # W is (C_in, M / group, k...): quantize it output-channel-major, (M, C_in/g * k),
            # and store it back in its own layout with the scales along axis 1 (per tensor for
            # group > 1, where axis 1 does not span every output channel).
            if wf.ndim < 3 or wf.shape[0] % group:
                return "weight rank < 3 or channels not divisible by group"
            bias_v = node.input(2)
            for k in ("strides", "pads", "dilations", "group", "auto_pad", "kernel_shape",
                      "output_padding", "output_shape"):
                if k in node.attrs:
                    attrs[k] = node.attrs[k]
            c_g, m_g = wf.shape[0] // group, wf.shape[1]

            def rows(a: np.ndarray) -> np.ndarray:
                return np.ascontiguousarray(a.reshape(group, c_g, m_g, -1).transpose(0, 2, 1, 3)
                                            .reshape(group * m_g, -1))
            qop = "QConvTranspose"
        elif op == "Conv":
            if wf.ndim < 3:
                return "weight rank < 3"
            bias_v = node.input(2)
            for k in ("strides", "pads", "dilations", "group", "auto_pad", "kernel_shape"):
                if k in node.attrs:
                    attrs[k] = node.attrs[k]

            def rows(a: np.ndarray) -> np.ndarray:
                return a.reshape(a.shape[0], -1)
            qop = "QConv"
        else:
            # (an unknown input rank is fine: MatMul's input has rank >= 1 and Gemm's is 2-D,
            # and QGemm takes [..., K])
            if wf.ndim != 2 or (x.rank is not None and x.rank < 1):
                return "the weight is not 2-D"
            trans = op == "Gemm" and bool(node.attrs.get("transB", 0))
            if op == "Gemm":
                if node.attrs.get("transA", 0) or x.rank not in (None, 2):
                    return "transA=1 or a non-2-D input"
                alpha = float(node.attrs.get("alpha", 1.0))
                beta = float(node.attrs.get("beta", 1.0))
                c = node.input(2)
                if c is not None:
                    if c.const is None:
                        return "C is not a constant"
                    try:
                        bias = np.broadcast_to(c.const.astype(np.float32) * beta,
                                               (1, w_shape[0] if trans else w_shape[1])
                                               ).reshape(-1)
                    except ValueError:
                        return "C does not broadcast to a per-output bias"
                    if beta == 1.0 and c.const.ndim >= 1 and c.const.size == bias.size:
                        bias_v = c  # the explicit int32 codes apply as they are
            elif node.input(2) is not None:  # edgert.MatMul's bias: one value per column
                c = node.input(2)
                if c.const is None or c.const.size != w_shape[1]:
                    return "its bias is not a constant of one value per output column"
                bias, bias_v = c.const.astype(np.float32).reshape(-1), c

            def rows(a: np.ndarray) -> np.ndarray:
                return np.ascontiguousarray(a if trans else a.T)
            qop = "QGemm"
        if op in ("Conv", "ConvTranspose") and bias_v is not None:
            if bias_v.const is None:
                return "the bias is not a constant"
            bias = bias_v.const.astype(np.float32).reshape(-1)
        final, lo, hi, why = self.fused_activation(node, y, skip)
        if why:
            return why
        out = self.out_params(final)
        if out is None:
            return self.missing("its output")
        xs, xz = self.params_of(x)
        if explicit is not None:
            got = self._explicit_weight(explicit, rows, op, group, alpha)
            if isinstance(got, str):
                return got
            wq, w_scales, w_axis = got
            n_out = wq.shape[1] * group if op == "ConvTranspose" else wq.shape[0]
        else:
            wf = rows(wf) * np.float32(alpha) if qop == "QGemm" else wf
            if op == "ConvTranspose":
                wr = rows(wf)
                w_scales = weight_params(wr, self.per_channel and group == 1)
                wq = quantize_weight(wr, w_scales)
                c_g, m_g = w_shape[0] // group, w_shape[1]
                wq = np.ascontiguousarray(wq.reshape(group, m_g, c_g, -1).transpose(0, 2, 1, 3)
                                          .reshape(w_shape))
                w_axis = 1
            else:
                w_scales = weight_params(wf, self.per_channel)
                wq = quantize_weight(wf, w_scales)
                w_axis = 0
            n_out = wq.shape[1] * group if op == "ConvTranspose" else wq.shape[0]
        ys, yz = out
        attrs.update(x_scale=xs, x_zero_point=xz, w_scale=[float(s) for s in w_scales],
                     y_scale=ys, y_zero_point=yz)
        act_min, act_max = _qbound(lo, ys, yz, QMIN), _qbound(hi, ys, yz, QMAX)
        if act_min > act_max:
            return "empty activation range"
        attrs.update(act_min=act_min, act_max=act_max)
        xq = self.int8_of(x)
        wv = self.g.add_constant(w.name + "_q", wq)
        wv.quant = (w_scales.astype(np.float32), np.zeros(w_scales.size, np.int64), w_axis)
        ins = [xq, wv]
        if bias is not None:
            b_scales = np.broadcast_to(w_scales, (n_out,))
            bq = self._explicit_bias(bias_v, xs, b_scales) if self.explicit else None
            if bq is None:
                bq = quantize_bias(bias, xs, b_scales)
            bv = self.g.add_constant((node.input(2).name if node.input(2) else w.name) + "_q",
                                     bq)
            # No quantization record on the bias: its scale is x_scale * w_scale (both stored
            # already) and its zero point 0; repeating them per channel cost ~2 % of the file.
            ins.append(bv)
        yq = self.new_q(final, ys, yz)
        self.g.add_node(qop, ins, [yq], attrs, name=node.name, domain="edgert")
        return None

    def _explicit_weight(self, wc: QConst, rows, op: str, group: int, alpha: float):
        """``(int8 weight as the kernel stores it, scales per output channel or one, axis)`` of
        a given int8 weight, or why it has no such form (scales that vary inside an output
        channel: per input channel, or blocked)."""
        codes = np.asarray(wc.codes)
        if codes.dtype != np.int8 or codes.shape != wc.value.shape:
            return "the weight is not int8"
        scale = np.asarray(wc.scale, np.float32)
        if scale.size == 1:
            w_scales = scale.reshape(1)
        else:
            srows = rows(np.broadcast_to(scale, codes.shape))
            if not np.all(srows == srows[:, :1]):
                return ("its weight scales vary within an output channel (blocked or per input "
                        "channel): edgert's int8 kernels take one scale per output channel")
            w_scales = np.ascontiguousarray(srows[:, 0])
            if op == "ConvTranspose" and group > 1:
                if not np.all(w_scales == w_scales[0]):
                    return "per-channel weight scales with group > 1 (one scale per tensor only)"
                w_scales = w_scales[:1]
        if alpha != 1.0:
            w_scales = (w_scales * np.float32(alpha)).astype(np.float32)
        if op in ("Conv", "ConvTranspose"):
            return codes, w_scales.astype(np.float32), 1 if op == "ConvTranspose" else 0
        return rows(codes), w_scales.astype(np.float32), 0

    def _explicit_bias(self, b: Value | None, xs: float, w_scales: np.ndarray):
        """The model's own int32 bias codes when their scale is ``x_scale * w_scale``."""
        bc = None if b is None else self.weights.get(b.name)
        if not isinstance(bc, QConst) or bc.codes.dtype != np.int32:
            return None
        if not np.array_equal(b.const, bc.value):
            return None
        n = w_scales.shape[0]
        codes = np.asarray(bc.codes).reshape(-1)
        if codes.size != n:
            return None
        want = np.float32(xs) * w_scales.astype(np.float32)
        got = np.broadcast_to(np.asarray(bc.scale, np.float32).reshape(-1), (n,))
        if not np.allclose(got, want, rtol=1e-6, atol=0):
            return None
        return codes.astype(np.int32)

    # ----- elementwise --------------------------------------------------------------------------
    def binary(self, node: Node, y: Value, skip: set[int]) -> str | None:
        a, b = node.input(0), node.input(1)
        for v in (a, b):
            if not (self.quantizable(v) or (v is not None and v.const is not None
                                            and v.const.dtype.kind == "f")):
                return self.missing("an input")
        # A residual Add followed by its only reader Relu (ResNet) folds the Relu into the clamp.
        final, lo, hi, why = self.fused_activation(node, y, skip)
        if why:
            return why
        out = self.out_params(final)
        if out is None:
            return self.missing("its output")
        (sa, za), (sb, zb) = self.params_of(a), self.params_of(b)
        ys, yz = out
        if node.op_type == "Add":
            twice = 2.0 * max(sa, sb)
            if twice / ((1 << 20) * ys) >= 2**30:
                return "output scale too small for the inputs"
        elif not sa * sb / ys < 2**30:  # (inf and NaN too)
            # e.g. an attention mask's (1 - mask) * float32.min that calibration only saw at 0:
            # a product scale of 1e36 on a zero-width output range, no int8 multiplier holds it
            return "output scale too small for the inputs"
        aq, bq = self.int8_of(a), self.int8_of(b)
        attrs = dict(a_scale=sa, a_zero_point=za, b_scale=sb, b_zero_point=zb, y_scale=ys,
                     y_zero_point=yz, act_min=_qbound(lo, ys, yz, QMIN),
                     act_max=_qbound(hi, ys, yz, QMAX))
        yq = self.new_q(final, ys, yz)
        self.g.add_node("Q" + node.op_type, [aq, bq], [yq], attrs, name=node.name,
                        domain="edgert")
        return None

    def concat(self, node: Node, y: Value) -> str | None:
        out = self.out_params(y)
        if out is None:
            return self.missing("its output")
        # One int8 scale for inputs of very different ranges erases the smaller one: YOLOv8's
        # head joins box coordinates (0..320) and class scores (0..1), whose every score then
        # rounded to 0. Such a Concat stays float.
        if min(self.params_of(v)[0] for v in node.inputs) * _CONCAT_RANGE_RATIO < out[0]:
            return (f"its inputs' ranges differ more than {_CONCAT_RANGE_RATIO}x (one int8 "
                    "scale would erase the smaller)")
        ins = [self.int8_of(v) for v in node.inputs]
        params = [(float(q.quant[0][0]), int(q.quant[1][0])) for q in ins]
        yq = self.new_q(y, *out)
        self.g.add_node("QConcat", ins, [yq], dict(axis=int(node.attrs.get("axis", 0)),
                                                   scales=[p[0] for p in params],
                                                   zero_points=[p[1] for p in params],
                                                   y_scale=out[0], y_zero_point=out[1]),
                        name=node.name, domain="edgert")
        return None

    def pool(self, node: Node, x: Value, y: Value) -> str | None:
        if node.op_type == "AveragePool" and node.attrs.get("ceil_mode", 0):
            return "ceil_mode with averaging"
        out = self.same_params_out(x, y)
        if isinstance(out, str):
            return out
        s, z = self.params_of(x)
        padded = (any(node.attrs.get("pads") or [])
                  or node.attrs.get("auto_pad", "NOTSET") not in _NO_PAD)
        counted_pads = (node.op_type == "AveragePool" and z != 0 and padded
                        and bool(node.attrs.get("count_include_pad", 0)))
        if node.op_type != "MaxPool":
            if out is not None:  # explicit mode: output parameters of its own
                # As DequantizeLinear -> pool -> QuantizeLinear (and onnxruntime's QLinear
                # pools): one rounding. The int8 average and a requantization after it would
                # round twice, by several output steps where the output scale is the finer.
                return FLOAT_ROUNDING
            if counted_pads:
                # Padding that counts needs the pads to be real zeros (the zero point), which
                # edgert.QAveragePool does not do (it sums code 0 for them).
                return self.average_as_conv(node, x, y, (s, z))
        xq = self.int8_of(x)
        yq = self.new_q(y, s, z)
        self.g.add_node("Q" + node.op_type, [xq], [yq], dict(node.attrs), name=node.name,
                        domain="edgert")
        self.requantize(y, out)  # MaxPool: max commutes with the (monotone) requantization
        return None

    def average_as_conv(self, node: Node, x: Value, y: Value, out: tuple[float, int]):
        """AveragePool / GlobalAveragePool into output parameters of its own: a depthwise
        ``edgert.QConv`` with weights 1 and weight scale ``1 / window``."""
        shape = x.static_shape()
        if shape is None and x.shape is not None and len(x.shape) > 2 and all(
                isinstance(d, int) for d in x.shape[1:]):
            shape = (1,) + tuple(x.shape[1:])  # the batch dim may be symbolic
        if shape is None or len(shape) < 3:
            return "averaging into other parameters needs static channel and spatial dims"
        c, spatial = int(shape[1]), [int(d) for d in shape[2:]]
        attrs: dict = {"group": c}
        if node.op_type == "GlobalAveragePool":
            kernel = spatial
        else:
            kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
            pads = node.attrs.get("pads")
            if (not node.attrs.get("count_include_pad", 0) and
                    (any(pads or []) or node.attrs.get("auto_pad", "NOTSET") not in _NO_PAD)):
                return "averaging with padding not counted, into other parameters"
            for k in ("strides", "pads", "dilations", "auto_pad"):
                if k in node.attrs:
                    attrs[k] = node.attrs[k]
        if len(kernel) != len(spatial) or not all(k > 0 for k in kernel):
            return "bad kernel_shape"
        window = int(np.prod(kernel))
        xs, xz = self.params_of(x)
        ys, yz = out
        w = self.g.add_constant(node.name + "_ones" if node.name else "avg_ones",
                                np.ones([c, 1] + kernel, np.int8))
        ws = f32(1.0 / window)
        w.quant = (np.array([ws], np.float32), np.zeros(1, np.int64), 0)
        attrs.update(kernel_shape=kernel, x_scale=xs, x_zero_point=xz, w_scale=[ws], y_scale=ys,
                     y_zero_point=yz, act_min=QMIN, act_max=QMAX)
        xq = self.int8_of(x)
        yq = self.new_q(y, ys, yz)
        self.g.add_node("QConv", [xq, w], [yq], attrs, name=node.name, domain="edgert")
        return None

    def same_params_out(self, x: Value, y: Value):
        """For an op whose int8 output keeps its input's parameters: in explicit mode the
        parameters ``y`` must end with (None when they are the input's), or why none."""
        if not self.explicit:
            return None
        out = self.out_params(y)
        if out is None:
            return self.missing("its output")
        return None if out == self.params_of(x) else out

    def requantize(self, y: Value, out: tuple[float, int] | None) -> None:
        """Move ``y``'s int8 form to the parameters ``out`` (an exact DequantizeLinear ->
        QuantizeLinear as a 256-entry lookup table)."""
        if out is None:
            return
        q = self.qmap[y.name]
        xs, xz = float(q.quant[0][0]), int(q.quant[1][0])
        ys, yz = out
        codes = np.arange(QMIN, QMAX + 1, dtype=np.float32)
        real = np.float32(xs) * (codes - np.float32(xz))
        table = np.clip(np.rint(real / np.float32(ys)) + yz, QMIN, QMAX).astype(int)
        yq = self.new_q(y, ys, yz)
        self.g.add_node("QLut", [q], [yq], {"table": table.astype(np.int8)},
                        name=self.g.unique_name(y.name + "_requant"), domain="edgert")

    def move(self, node: Node, x: Value, y: Value) -> str | None:
        if node.op_type == "Pad":
            mode = node.attrs.get("mode", "constant")
            if isinstance(mode, bytes):
                mode = mode.decode()
            if mode != "constant":
                return f"Pad mode {mode}"
        for v in node.inputs[1:]:
            if v is not None and v.const is None:
                return "a shape parameter is computed at run time"
        out = self.same_params_out(x, y)
        if isinstance(out, str):
            return out
        xq = self.int8_of(x)
        s, z = self.params_of(x)
        ins = [xq]
        attrs = dict(node.attrs)
        if node.op_type == "Resize" and "extrapolation_value" in attrs:
            # Resize of int8 codes is exact: its weights sum to one, so interpolating the codes
            # interpolates the real values with the same scale and zero point (integer outputs
            # are rounded half to even and saturated); only a real-valued constant, the
            # tf_crop_and_resize extrapolation value, has to become a code.
            ev = np.array([float(attrs["extrapolation_value"])])
            attrs["extrapolation_value"] = float(quantize_array(ev, s, z)[0])
        if node.op_type == "Pad":
            cv = node.input(2)
            if cv is None:
                value = float(attrs.pop("value", 0.0))
            else:
                value = float(cv.const.reshape(-1)[0]) if cv.const.size else 0.0
            pads = node.input(1)
            if pads is None:  # opset < 11: pads is an attribute
                pads = self.g.add_constant(node.name + "_pads",
                                           np.asarray(attrs.pop("pads"), np.int64))
            else:
                pads = self.float_of(pads)
            qv = quantize_array(np.array([value]), s, z).reshape(())
            ins += [pads, self.g.add_constant(node.name + "_padvalue", qv)]
            if node.input(3) is not None:
                ins.append(self.float_of(node.input(3)))
        else:
            ins += [self.float_of(v) for v in node.inputs[1:]]
        yq = self.new_q(y, s, z)
        self.g.add_node(node.op_type, ins, [yq], attrs, name=node.name,
                        version=max(node.version, 11) if node.op_type == "Pad" else node.version)
        self.requantize(y, out)
        return None

    def lut(self, node: Node, x: Value, y: Value) -> str | None:
        out = self.out_params(y)
        if out is None:
            return self.missing("its output")
        fn = _lut_function(node)
        if fn is None:
            return "Clip bounds are not constants"
        xs, xz = self.params_of(x)
        ys, yz = out
        q = np.arange(QMIN, QMAX + 1, dtype=np.float64)
        real = fn(np.float32(xs) * (q - xz).astype(np.float32)).astype(np.float32)
        table = np.clip(np.rint(real / np.float32(ys)) + yz, QMIN, QMAX).astype(int)
        xq = self.int8_of(x)
        yq = self.new_q(y, ys, yz)
        self.g.add_node("QLut", [xq], [yq], {"table": table.astype(np.int8)}, name=node.name,
                        domain="edgert")
        return None

    def softmax(self, node: Node, x: Value, y: Value) -> str | None:
        axis = int(node.attrs.get("axis", -1 if node.version >= 13 else 1))
        rank = x.rank
        if rank is None:
            return "unknown rank"
        axis = axis + rank if axis < 0 else axis
        if node.version < 13 and axis != rank - 1:
            # Before opset 13 Softmax works on the input flattened to 2-D at `axis`; that is the
            # one-axis softmax when every later dim is 1 (SqueezeNet's [1, 1000, 1, 1]).
            tail = x.shape[axis + 1:]
            if not all(d == 1 for d in tail):
                return "opset < 13 Softmax over several axes"
        ys, yz = 1.0 / 256.0, -128  # native: the TFLite convention
        if self.explicit:
            out = self.out_params(y)
            if out is None:
                return self.missing("its output")
            ys, yz = out
        xs, xz = self.params_of(x)
        xq = self.int8_of(x)
        yq = self.new_q(y, ys, yz)
        self.g.add_node("QSoftmax", [xq], [yq], dict(axis=axis, x_scale=xs, x_zero_point=xz,
                                                     y_scale=ys, y_zero_point=yz),
                        name=node.name, domain="edgert")
        return None


def share_concat_ranges(graph: Graph, ranges: dict[str, tuple[float, float]]) -> None:
    """Give each Concat input that feeds only the Concat the Concat's output range.

    TFLite's rule for concatenation: the producer then requantizes straight into the
    output's parameters and the int8 Concat is a plain copy, not a per-element rescale
    (SqueezeNet's eight fire-module concats took 2 ms of a 20 ms int8 run rescaling). The
    output range covers every input's under MinMax, so no input is clipped by it.
    """
    outputs = {id(v) for v in graph.outputs}
    for node in graph.nodes:
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx"):
            continue
        r = ranges.get(node.outputs[0].name)
        if r is None:
            continue
        widths = [ranges[v.name][1] - ranges[v.name][0] for v in node.inputs
                  if v is not None and v.name in ranges]
        if widths and min(widths) * _CONCAT_RANGE_RATIO < r[1] - r[0]:
            continue  # ranges too different for one scale: the Concat stays float (concat())
        for v in node.inputs:
            if (v is not None and v.const is None and v.producer is not None
                    and len(v.consumers) == 1 and id(v) not in outputs
                    and v.name in ranges):
                ranges[v.name] = r


def _qbound(r: float, scale: float, zp: int, default: int) -> int:
    """A real clamp bound as an int8 value (inside [-128, 127]); infinite -> ``default``."""
    if math.isinf(r):
        return default
    return int(min(max(round(r / scale) + zp, QMIN), QMAX))


def _clip_bounds(node: Node) -> tuple[float | None, float]:
    if node.version and node.version < 11:
        return float(node.attrs.get("min", -math.inf)), float(node.attrs.get("max", math.inf))
    lo, hi = -math.inf, math.inf
    for i, which in ((1, "lo"), (2, "hi")):
        v = node.input(i)
        if v is None:
            continue
        if v.const is None:
            return None, 0.0
        if which == "lo":
            lo = float(v.const.reshape(-1)[0])
        else:
            hi = float(v.const.reshape(-1)[0])
    return lo, hi


def _lut_function(node: Node):
    op, a = node.op_type, node.attrs
    if op == "Relu":
        return lambda r: np.maximum(r, 0)
    if op == "Clip":
        lo, hi = _clip_bounds(node)
        if lo is None:
            return None
        return lambda r: np.clip(r, lo, hi)
    if op == "LeakyRelu":
        alpha = float(a.get("alpha", 0.01))
        return lambda r: np.where(r >= 0, r, r * alpha)
    if op == "Sigmoid":
        return lambda r: 1.0 / (1.0 + np.exp(-r.astype(np.float64)))
    if op == "Tanh":
        return np.tanh
    if op == "HardSigmoid":
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        return lambda r: np.clip(alpha * r + beta, 0, 1)
    if op == "HardSwish":
        return lambda r: r * np.clip(r / 6.0 + 0.5, 0, 1)
    return None


def quantize_graph(
    graph: Graph, ranges: dict[str, tuple[float, float]], per_channel: bool = True
) -> QuantizeResult:
    """Rewrite ``graph`` (left unchanged) into an int8 graph using the calibrated ``ranges``."""
    ranges = dict(ranges)
    share_concat_ranges(graph, ranges)
    params = {name: activation_params(*r) for name, r in ranges.items()
              if name not in graph.constants}
    return _Rewriter(graph, params, per_channel).run()


def quantize_graph_explicit(
    graph: Graph,
    params: dict[str, tuple[float, int]],
    weights: dict[str, QConst | str],
) -> QuantizeResult:
    """Rewrite ``graph`` (left unchanged) into an int8 graph with given parameters.

    Args:
        graph: the float graph.
        params: int8 ``(scale, zero_point)`` per tensor name (activations, and constants that an
            Add/Mul/Concat reads); a tensor without an entry stays float, and so does an op
            whose output has none. A float op's output that has parameters is quantized for
            every reader (float readers read it through ``edgert.Quantize`` ->
            ``edgert.Dequantize``), as a QuantizeLinear -> DequantizeLinear pair does.
        weights: the int8 weights (:class:`QConst`, int8 codes) and int32 biases (int32 codes)
            by constant name, or why a weight has no int8 form (its op then stays float, with
            that reason); a Conv/Gemm/MatMul whose weight has no entry stays float.
    """
    return _Rewriter(graph, params, True, weights).run()


def int8_io(graph: Graph) -> list[str]:
    """Make the int8 graph's inputs and outputs int8, in place (TFLite's
    ``inference_input_type``/``inference_output_type = int8``).

    A float input whose only int8 form is an ``edgert.Quantize`` becomes that int8 tensor (with
    its scale and zero point in the file, shown by the interpreter's ``get_input_details``);
    float ops that read the raw input get an ``edgert.Dequantize`` of it. An output produced by
    an ``edgert.Dequantize`` becomes the int8 tensor before it. Names do not change. Returns
    the inputs and outputs that stay float (no int8 form), for the report.
    """
    left: list[str] = []
    new_inputs = []
    for fv in graph.inputs:
        quants = [n for n in fv.consumers if n.op_type == "Quantize" and n.domain == "edgert"]
        if fv.dtype != dtypes.FLOAT or len(quants) != 1:
            left.append(f"input '{fv.name}'")
            new_inputs.append(fv)
            continue
        qnode = quants[0]
        q = qnode.outputs[0]
        graph.remove_node(qnode)
        name = fv.name
        fv.name = graph.unique_name(name + "_float")
        q.name = name
        if fv.consumers:  # float ops read the input too
            scale, zp, _ = q.quant
            graph.add_node("Dequantize", [q], [fv], {"scale": [float(scale[0])],
                                                     "zero_point": [int(zp[0])]},
                           name=graph.unique_name(name + "_dequant"), domain="edgert", index=0)
        new_inputs.append(q)
    graph.inputs = new_inputs
    new_outputs = []
    for fv in graph.outputs:
        node = fv.producer
        if (node is None or node.op_type != "Dequantize" or node.domain != "edgert"
                or node.inputs[0] is None or node.inputs[0].quant is None
                or fv in new_outputs):
            left.append(f"output '{fv.name}'")
            new_outputs.append(fv)
            continue
        q = node.inputs[0]
        name = fv.name
        fv.name = graph.unique_name(name + "_float")
        q.name = name
        if not fv.consumers:
            graph.remove_node(node)
        new_outputs.append(q)
    graph.outputs = new_outputs
    return left


# ----- weight-only modes --------------------------------------------------------------------------


def weights_only(graph: Graph, mode: str, per_channel: bool = True) -> QuantizeResult:
    """fp16 or int8 ("dynamic") storage of the float weights of Conv/Gemm/MatMul, in place.

    The weight is stored small and turned back into float32 by a ``Cast`` (fp16) or an
    ``edgert.Dequantize`` (int8, per output channel) that the interpreter folds at prepare time:
    the file shrinks 2x/4x, activations stay float. (Activations are not quantized at run time.)
    """
    result = QuantizeResult(graph)
    for node in list(graph.nodes):
        if int8_rule(node) != "linear":  # Conv, ConvTranspose, Gemm, MatMul
            continue
        w = node.input(1)
        if w is None or w.const is None or w.const.dtype != np.float32 or w.const.size < 16:
            continue
        if mode == "fp16":
            c = graph.add_constant(w.name + "_fp16", w.const.astype(np.float16))
            out = graph.new_value(w.name + "_fp32", dtypes.FLOAT, list(w.const.shape))
            graph.insert_before(node, "Cast", [c], [out], {"to": dtypes.FLOAT},
                                name=graph.unique_name(w.name + "_cast"), version=13)
        else:
            wf = w.const
            # Conv and ConvTranspose/Gemm/MatMul keep their layouts; scale along axis 0 for Conv
            # (output channels), along the last axis for MatMul/Gemm weights [K, N].
            axis = 0 if node.op_type == "Conv" else (
                0 if node.op_type == "Gemm" and node.attrs.get("transB", 0) else wf.ndim - 1)
            if node.op_type == "ConvTranspose":
                axis = 1
            moved = np.moveaxis(wf, axis, 0)
            scales = weight_params(moved, per_channel)
            q = np.moveaxis(quantize_weight(moved, scales), 0, axis)
            c = graph.add_constant(w.name + "_q", np.ascontiguousarray(q))
            c.quant = (scales, np.zeros(scales.size, np.int64), axis)
            out = graph.new_value(w.name + "_dq", dtypes.FLOAT, list(wf.shape))
            graph.insert_before(node, "Dequantize", [c], [out],
                                {"scale": [float(s) for s in scales],
                                 "zero_point": [0] * scales.size, "axis": axis},
                                name=graph.unique_name(w.name + "_dequant"), domain="edgert")
        for i, v in enumerate(node.inputs):
            if v is w:
                graph.set_input(node, i, out)
        result.int8_ops[node.op_type] = result.int8_ops.get(node.op_type, 0) + 1
    for name in [n for n, v in graph.constants.items() if not v.consumers
                 and v not in graph.outputs]:
        del graph.constants[name]
    return result
