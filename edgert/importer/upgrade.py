"""Opset normalization: rewrite older ONNX operator forms into the form of a newer opset.

The runtime's kernels implement one semantic per operator, the newest ONNX one. The importer
therefore rewrites every node whose opset version uses an older form (an attribute that later
became an input, a renamed operator, a legacy broadcasting rule...) into the newer form right
after it has built the graph. Each rule below is one function, named after the operator, and is
registered explicitly in :data:`RULES` with the range of schema versions (``since_version`` of
the operator's schema at the model's opset) it applies to.

A rule returns the opset version whose form it produced (for instance 13 after moving
Squeeze's ``axes`` attribute to an input); the importer then sets
``node.version = max(model opset, that version)``. Nodes no rule touches keep
``node.version = model opset``. So ``node.version`` is always an opset version at which the node,
exactly as it now stands in the IR, has the meaning the original node had. The one family that is
*not* rewritten is Softmax / LogSoftmax / Hardmax before opset 13 (they flatten the input to 2-D
around ``axis``): their kernels read ``node.version`` to tell the two semantics apart.

A rule that cannot express the old form in the new one (its inputs are not constants, a rank is
unknown, the old form has no equivalent) raises :class:`Decline` with a reason; the importer
collects every reason and reports them together.

Rules and what they do (``old since-versions -> version produced``):

=================================  ================================================================
Slice 1 -> 10                      ``starts``/``ends``/``axes`` attributes -> int64 inputs
Squeeze, Unsqueeze 1, 11 -> 13     ``axes`` attribute -> int64 input
ReduceSum 1, 11 -> 13              ``axes`` attribute -> int64 input
Reduce{Mean,Max,Min,Prod,L1,L2,    ``axes`` attribute -> int64 input
LogSum,LogSumExp,SumSquare} -> 18
Split 1, 2, 11, 13 -> 13 / 18      ``split`` attribute -> input (13); an equal split gets
                                   ``num_outputs`` = number of outputs (18)
Pad 1, 2 -> 11                     ``pads`` (``paddings``) / ``value`` attributes -> inputs
Clip 1, 6 -> 11                    ``min`` / ``max`` attributes -> scalar inputs of X's type
Dropout 1, 6, 7, 10 -> 12          ``ratio`` attribute -> input; ``is_test`` dropped (inference);
                                   a used mask of X's type (before 10) is cast back from bool
BatchNormalization 1, 6, 7 -> 9    ``spatial`` (1 only), ``is_test``, ``consumed_inputs`` dropped;
BatchNormalization (every version) training mode (declared statistics outputs, ``is_test=0``
                                   with them, ``training_mode=1``) declined
Upsample 1, 7, 9, 10 -> 13         -> Resize(X, "", scales) with ``coordinate_transformation_mode``
                                   "asymmetric" and, for nearest, ``nearest_mode`` "floor"
Resize 10 -> 13                    as Upsample (nearest downsampling rounds with "ceil")
Resize 11.. -> 13..                empty constant ``roi`` / ``scales`` (with sizes) -> omitted
TopK 1 -> 10                       ``k`` attribute -> int64 input of shape [1]
Gemm 1, 6 -> 7                     ``broadcast`` dropped
Concat 1 -> 4                      missing ``axis`` -> 1 (Concat-1's documented default)
Reshape 1 -> 5                     ``shape`` attribute -> int64 input
Cast 1 -> 6                        ``to`` given as a type name -> type code
Tile 1 -> 6                        ``tiles`` and ``axis`` inputs -> ``repeats`` (constants only)
Scatter 9, 11 -> ScatterElements 11
PRelu 1, 6 -> 7                    per-channel slope [C] reshaped to [C, 1, ...] for X's rank
Add, Sub, Mul, Div, Pow, And, Or,  legacy ``broadcast``/``axis`` -> NumPy broadcasting (B gets
Xor, Equal, Greater, Less 1, 6     trailing 1-dims when ``axis`` is given)
-> 7
LpPool, GlobalLpPool 1 -> 2        float ``p`` -> int
GridSample 16 -> 20                mode "bilinear"/"bicubic" -> "linear"/"cubic"
RoiAlign 10 -> 16                  ``coordinate_transformation_mode`` "output_half_pixel" made
                                   explicit (16's default is "half_pixel")
DFT 17 -> 20                       ``axis`` attribute (default 1) -> int64 scalar input
GroupNormalization 18 -> 21        per-group scale/bias -> per-channel (constants, known C)
ImageScaler (experimental) -> 7    Mul by ``scale`` then Add of per-channel ``bias``
QLinearConv 10 -> 13               ``QuantizeLinear(Conv(DequantizeLinear(x), DequantizeLinear(w,
                                   axis 0), DequantizeLinear(B, x_scale * w_scale)), y_scale,
                                   y_zero_point)``, every Conv attribute kept (see
                                   :func:`edgert.importer.contrib_quant.qlinear_conv`)
Scan 8                             declined (batched Scan with sequence_lens; re-export at opset 9+)
=================================  ================================================================

Every node whose schema predates opset 6 also loses the opset-1 ``consumed_inputs`` attribute.

One rule is a lowering rather than an upgrade: QLinearConv (every version) has no kernel and
becomes standard operators that have one, as onnxruntime's contrib operators do
(:mod:`edgert.importer.contrib_quant` holds the rule, and says how exact it is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgert import dtypes
from edgert.ir import Graph, Node, Value

# FLT_MAX: Clip-6's default bounds.
_FLT_MAX = float(np.finfo(np.float32).max)


class Decline(Exception):
    """A rule cannot rewrite this node; ``str(exc)`` is the reason shown to the user."""


@dataclass
class Rewrite:
    """What a rule sees: the node, its graph, and helpers to edit them.

    Attributes:
        graph: the graph that holds ``node``.
        node: the node to rewrite (already linked to its input and output values).
        since: ``since_version`` of the node's schema at the model's opset (the form it is in).
        opset: the model's opset version for the node's domain.
        const_of: returns the constant data behind a value (also through enclosing scopes), or
            None when it is computed at run time.
        num_outputs: how many outputs the ONNX node declared (empty names included).
        is_output: whether a value is read by the graph's outputs or an enclosing scope.
    """

    graph: Graph
    node: Node
    since: int
    opset: int
    const_of: Callable[[Value | None], np.ndarray | None]
    num_outputs: int
    is_output: Callable[[Value], bool]

    # ----- attributes ---------------------------------------------------------------------------
    def pop(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.pop(name, default)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    # ----- values -------------------------------------------------------------------------------
    def const(self, what: str, data: np.ndarray) -> Value:
        """A new constant of this graph named after the node (``<node>_<what>``)."""
        name = self.graph.unique_name(f"{self.node.name}_{what}")
        arr = np.require(data, requirements="C")  # keeps 0-d scalars 0-d
        v = Value(name, const=arr)
        self.graph.constants[name] = v
        return v

    def int64s(self, what: str, values) -> Value:
        return self.const(what, np.asarray(list(values), dtype=np.int64).reshape(-1))

    def set_input(self, i: int, value: Value | None) -> None:
        """Set input ``i``, padding with omitted inputs when ``i`` is past the end."""
        node = self.node
        while len(node.inputs) <= i:
            node.inputs.append(None)
        self.graph.set_input(node, i, value)
        while node.inputs and node.inputs[-1] is None:
            node.inputs.pop()

    def input(self, i: int) -> Value | None:
        return self.node.input(i)

    def rank(self, v: Value | None) -> int | None:
        if v is None:
            return None
        data = self.const_of(v)
        if data is not None:
            return data.ndim
        return v.rank

    def np_dtype(self, v: Value | None, what: str) -> np.dtype:
        """NumPy dtype of ``v``; declines when it is unknown (no type information)."""
        if v is not None:
            data = self.const_of(v)
            if data is not None:
                return data.dtype
            if v.dtype and dtypes.is_known(v.dtype):
                return dtypes.to_numpy(v.dtype)
        raise Decline(f"the element type of {what} is unknown (shape inference gave none)")

    def used(self, v: Value) -> bool:
        return bool(v.consumers) or self.is_output(v)

    def unsqueeze_trailing(self, v: Value, count: int, what: str) -> Value:
        """``v`` with ``count`` size-1 dims appended: a reshaped constant, else an Unsqueeze."""
        if count <= 0:
            return v
        data = self.const_of(v)
        if data is not None:
            return self.const(what, data.reshape(data.shape + (1,) * count))
        rank = self.rank(v)
        assert rank is not None
        axes = self.int64s(f"{what}_axes", range(rank, rank + count))
        out = self.graph.new_value(f"{self.node.name}_{what}", v.dtype,
                                   None if v.shape is None else list(v.shape) + [1] * count)
        self.graph.insert_before(
            self.node, "Unsqueeze", [v, axes], [out],
            name=self.graph.unique_name(f"{self.node.name}_{what}_unsqueeze"),
            version=max(self.opset, 13),
        )
        return out

    def drop_unused_outputs(self, keep: int) -> None:
        """Remove outputs ``keep..`` (the caller checked that none of them is used)."""
        for v in self.node.outputs[keep:]:
            v.producer = None
        del self.node.outputs[keep:]


Rule = Callable[[Rewrite], int]


# ----- attributes that became inputs --------------------------------------------------------------
def slice_1(rw: Rewrite) -> int:
    starts = rw.pop("starts")
    ends = rw.pop("ends")
    axes = rw.pop("axes")
    if starts is None or ends is None:
        raise Decline("Slice-1 needs both 'starts' and 'ends' attributes")
    rw.set_input(1, rw.int64s("starts", starts))
    rw.set_input(2, rw.int64s("ends", ends))
    if axes is not None:
        rw.set_input(3, rw.int64s("axes", axes))
    return 10


def axes_to_input(rw: Rewrite) -> int:
    """Squeeze / Unsqueeze / Reduce*: the ``axes`` attribute becomes input 1."""
    axes = rw.pop("axes")
    if rw.node.op_type == "Unsqueeze" and axes is None:
        raise Decline("Unsqueeze needs an 'axes' attribute before opset 13")
    if axes is not None and (len(axes) > 0 or rw.node.op_type == "Unsqueeze"):
        rw.set_input(1, rw.int64s("axes", axes))
    if rw.node.op_type in ("Squeeze", "Unsqueeze", "ReduceSum"):
        return 13
    return 18


def split(rw: Rewrite) -> int:
    sizes = rw.pop("split")
    if rw.input(1) is not None:  # Split-1's optional second input, or Split-13's
        return 13
    if sizes is not None and len(sizes) > 0:
        rw.set_input(1, rw.int64s("split", sizes))
        return 13
    # Equal split into as many parts as there are outputs: before opset 18 the size had to divide
    # evenly, which Split-18's num_outputs computes identically.
    rw.node.attrs["num_outputs"] = rw.num_outputs
    return 18


def pad(rw: Rewrite) -> int:
    pads = rw.pop("pads")
    if pads is None:
        pads = rw.pop("paddings")  # Pad-1's name for it
    if pads is None:
        raise Decline("Pad needs a 'pads' attribute before opset 11")
    value = float(rw.pop("value", 0.0))
    rw.set_input(1, rw.int64s("pads", pads))
    mode = rw.attr("mode", "constant")
    if value != 0.0 and mode == "constant":
        dt = rw.np_dtype(rw.input(0), "Pad's input")
        rw.set_input(2, rw.const("value", np.array(value, dtype=dt)))
    return 11


def clip(rw: Rewrite) -> int:
    lo = rw.pop("min")
    hi = rw.pop("max")
    if lo is None and hi is None:
        return 11
    dt = rw.np_dtype(rw.input(0), "Clip's input")
    if lo is not None:
        rw.set_input(1, rw.const("min", np.array(lo, dtype=dt)))
    if hi is not None:
        if lo is None:
            # An omitted min between present inputs: Clip-6's default bound.
            rw.set_input(1, rw.const("min", np.array(-_FLT_MAX, dtype=dt)))
        rw.set_input(2, rw.const("max", np.array(hi, dtype=dt)))
    return 11


def dropout(rw: Rewrite) -> int:
    # Inference only: is_test is dropped (a Dropout running in training mode has no deterministic
    # meaning for a deployed model), the ratio becomes an input and training_mode stays omitted.
    rw.pop("is_test")
    ratio = rw.pop("ratio", 0.5)
    rw.set_input(1, rw.const("ratio", np.array(ratio, dtype=np.float32)))
    node = rw.node
    if len(node.outputs) > 1 and rw.since < 10:
        mask = node.outputs[1]
        if not rw.used(mask):
            rw.drop_unused_outputs(1)
        else:
            # Before opset 10 the mask had X's element type; Dropout-12 makes it bool.
            dt = rw.np_dtype(rw.input(0), "Dropout's input")
            bool_mask = rw.graph.new_value(f"{node.name}_mask_bool", dtypes.BOOL, mask.shape)
            node.outputs[1] = bool_mask
            bool_mask.producer = node
            mask.producer = None
            index = rw.graph.nodes.index(node) + 1
            rw.graph.add_node(
                "Cast", [bool_mask], [mask], {"to": dtypes.from_numpy(dt)},
                name=rw.graph.unique_name(f"{node.name}_mask_cast"),
                version=max(rw.opset, 13), index=index,
            )
    return 12


def topk_1(rw: Rewrite) -> int:
    k = rw.pop("k")
    if k is None:
        raise Decline("TopK-1 needs a 'k' attribute")
    rw.set_input(1, rw.int64s("k", [k]))
    return 10


def reshape_1(rw: Rewrite) -> int:
    shape = rw.pop("shape")
    if rw.input(1) is None:
        if shape is None:
            raise Decline("Reshape-1 needs a 'shape' attribute")
        rw.set_input(1, rw.int64s("shape", shape))
    return 5


def tile_1(rw: Rewrite) -> int:
    tiles = rw.const_of(rw.input(1))
    axis = rw.const_of(rw.input(2))
    rank = rw.rank(rw.input(0))
    if tiles is None or axis is None or rank is None:
        raise Decline("Tile-1 is only supported with constant 'tiles' and 'axis' and a known rank")
    ax = int(axis.reshape(-1)[0])
    if not -rank <= ax < rank:
        raise Decline(f"Tile-1 axis {ax} is out of range for rank {rank}")
    repeats = [1] * rank
    repeats[ax % rank] = int(tiles.reshape(-1)[0])
    rw.set_input(2, None)
    rw.set_input(1, rw.int64s("repeats", repeats))
    return 6


# ----- renamed or re-spelled attributes -----------------------------------------------------------
def cast_1(rw: Rewrite) -> int:
    to = rw.attr("to")
    if isinstance(to, (str, bytes)):
        name = to.decode() if isinstance(to, bytes) else to
        from onnx import TensorProto

        try:
            rw.node.attrs["to"] = int(TensorProto.DataType.Value(name.upper()))
        except ValueError:
            raise Decline(f"Cast-1 'to' names an unknown type {name!r}") from None
    return 6


def concat_1(rw: Rewrite) -> int:
    rw.node.attrs.setdefault("axis", 1)
    return 4


def gemm_6(rw: Rewrite) -> int:
    # broadcast=1 allowed C to broadcast to (M, N); Gemm-7 always broadcasts C unidirectionally.
    rw.pop("broadcast")
    return 7


def lp_pool_1(rw: Rewrite) -> int:
    p = rw.attr("p")
    if p is not None:
        if float(p) != int(p):
            raise Decline(f"{rw.node.op_type}-1 with non-integer p={p} has no opset-2 equivalent")
        rw.node.attrs["p"] = int(p)
    return 2


def grid_sample_16(rw: Rewrite) -> int:
    mode = rw.attr("mode")
    if mode is not None:
        rw.node.attrs["mode"] = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return 20


def roi_align_10(rw: Rewrite) -> int:
    # RoiAlign-16 added coordinate_transformation_mode with default "half_pixel"; opset 10
    # behaved as what 16 calls "output_half_pixel".
    rw.node.attrs.setdefault("coordinate_transformation_mode", "output_half_pixel")
    return 16


def dft_17(rw: Rewrite) -> int:
    # The axis moved to input 2 in opset 20, and its default changed from 1 to -2.
    axis = int(rw.pop("axis", 1))
    rw.set_input(2, rw.const("axis", np.array(axis, dtype=np.int64)))
    return 20


def group_normalization_18(rw: Rewrite) -> int:
    """GroupNormalization-18 scaled per group; 21 scales per channel: repeat each group's value."""
    groups = int(rw.attr("num_groups", 0))
    x = rw.input(0)
    channels = x.shape[1] if x is not None and x.shape is not None and len(x.shape) > 1 else None
    params = [rw.const_of(rw.input(1)), rw.const_of(rw.input(2))]
    if not isinstance(channels, int) or any(p is None for p in params):
        raise Decline("GroupNormalization-18 needs constant scale/bias and a known channel count "
                      "to be rewritten per channel (opset 21)")
    if groups <= 0 or channels % groups:
        raise Decline(f"GroupNormalization: {channels} channels do not split into {groups} groups")
    for i, (what, p) in enumerate(zip(("scale", "bias"), params), start=1):
        if p.shape != (groups,):
            raise Decline(f"GroupNormalization-18 {what} has shape {p.shape}, expected ({groups},)")
        rw.set_input(i, rw.const(what, np.repeat(p, channels // groups)))
    return 21


def scatter(rw: Rewrite) -> int:
    rw.node.op_type = "ScatterElements"  # deprecated alias with identical semantics
    return 11


def batch_normalization(rw: Rewrite) -> int:
    """Inference BatchNormalization only.

    Before opset 14 a node that declares the mean/variance outputs runs in training mode (Y uses
    the batch statistics; onnxruntime does so even when the extra outputs are unused), so such a
    node is declined. Before opset 7 ``is_test=1`` said so explicitly: there, unused extra outputs
    are simply dropped. A single-output node with ``is_test=0`` is taken as inference, as ONNX's
    own version converter does.
    """
    if rw.since < 9:
        spatial = rw.pop("spatial", 1)
        if int(spatial) != 1:
            raise Decline("BatchNormalization with spatial=0 (per-activation statistics) is not "
                          "supported; re-export the model with opset 9 or newer")
    is_test = int(rw.pop("is_test", 0)) if rw.since < 7 else 0
    extra = [v for v in rw.node.outputs[1:] if not v.meta.get("omitted")]
    if extra:
        used = [v.name for v in extra if rw.used(v)]
        if not is_test or used:
            raise Decline(
                "training-mode BatchNormalization (it declares the running mean/variance "
                f"outputs {', '.join(v.name for v in extra)}) is not supported; export the model "
                "in eval mode"
            )
    if rw.since >= 14 and int(rw.attr("training_mode", 0)):
        raise Decline("BatchNormalization with training_mode=1 is not supported; export the "
                      "model in eval mode")
    rw.drop_unused_outputs(1)
    return max(rw.since, 9)


# ----- Upsample / Resize --------------------------------------------------------------------------
def _resize_mode(rw: Rewrite, mode: str, scales: np.ndarray | None) -> None:
    """Attributes giving Resize-13 the coordinate mapping of Upsample / Resize-10.

    Both map an output coordinate to ``x_out / scale`` ("asymmetric"). Nearest picks
    ``floor`` of it when upsampling; onnxruntime (the reference implementation of opset <= 10)
    rounds *up* when downsampling, which Resize-13 spells ``nearest_mode="ceil"``.
    """
    attrs = rw.node.attrs
    mode = mode.lower()
    if mode in ("linear", "bilinear"):
        attrs["mode"] = "linear"
    elif mode == "nearest":
        attrs["mode"] = "nearest"
        nearest = "floor"
        if scales is not None:
            s = scales.reshape(-1)
            if np.all(s <= 1) and np.any(s < 1):
                nearest = "ceil"
            elif np.any(s < 1) and np.any(s > 1):
                raise Decline("nearest Resize-10 that up- and downsamples at once has no opset-13 "
                              "equivalent")
        attrs["nearest_mode"] = nearest
    else:
        raise Decline(f"{rw.node.op_type} mode {mode!r} is not one of 'nearest', 'linear'")
    attrs["coordinate_transformation_mode"] = "asymmetric"


def upsample(rw: Rewrite) -> int:
    node = rw.node
    mode = rw.pop("mode", "nearest")
    if rw.since == 1:
        h = rw.pop("height_scale")
        w = rw.pop("width_scale")
        if h is None or w is None:
            raise Decline("Upsample-1 needs 'height_scale' and 'width_scale'")
        scales_v = rw.const("scales", np.array([1.0, 1.0, h, w], dtype=np.float32))
    elif rw.since == 7:
        scales = rw.pop("scales")
        if scales is None:
            raise Decline("Upsample-7 needs a 'scales' attribute")
        scales_v = rw.const("scales", np.asarray(scales, dtype=np.float32))
    else:
        scales_v = rw.input(1)
        if scales_v is None:
            raise Decline("Upsample needs a 'scales' input")
    node.op_type = "Resize"
    _resize_mode(rw, mode, rw.const_of(scales_v))
    rw.set_input(1, None)
    rw.set_input(2, scales_v)
    return 13


def resize_10(rw: Rewrite) -> int:
    scales_v = rw.input(1)
    if scales_v is None:
        raise Decline("Resize-10 needs a 'scales' input")
    _resize_mode(rw, rw.pop("mode", "nearest"), rw.const_of(scales_v))
    rw.set_input(1, None)
    rw.set_input(2, scales_v)
    return 13


def resize_11(rw: Rewrite) -> int:
    if rw.attr("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
        raise Decline("coordinate_transformation_mode 'tf_half_pixel_for_nn' was removed in "
                      "opset 13 and is not supported")
    # Resize-11 required roi and scales; an empty constant stood for "not given".
    for i in (1, 2):
        data = rw.const_of(rw.input(i))
        if data is not None and data.size == 0 and (i == 1 or rw.input(3) is not None):
            rw.set_input(i, None)
    return max(rw.since, 13)


# ----- legacy broadcasting ------------------------------------------------------------------------
def legacy_broadcast(rw: Rewrite) -> int:
    """Binary ops before opset 7: ``broadcast=1`` with ``axis`` aligns B with A at ``axis``.

    Without ``axis`` B's shape had to be a suffix of A's, which NumPy broadcasting also accepts.
    With it, appending ``rank(A) - axis - rank(B)`` size-1 dims to B gives NumPy broadcasting the
    same alignment.
    """
    broadcast = int(rw.pop("broadcast", 0))
    axis = rw.pop("axis")
    if not broadcast or axis is None:
        return 7
    a, b = rw.input(0), rw.input(1)
    rank_a, rank_b = rw.rank(a), rw.rank(b)
    if rank_a is None or rank_b is None:
        raise Decline(f"legacy broadcast with axis={axis} needs the ranks of both inputs")
    axis = int(axis)
    if axis < 0:
        axis += rank_a
    if not 0 <= axis <= rank_a - rank_b:
        raise Decline(f"legacy broadcast axis {axis} does not fit ranks {rank_a} and {rank_b}")
    assert b is not None
    rw.set_input(1, rw.unsqueeze_trailing(b, rank_a - axis - rank_b, "B"))
    return 7


def prelu_6(rw: Rewrite) -> int:
    """Before opset 7 a slope of shape [C] applied per channel (axis 1), not to the last axis."""
    x, slope = rw.input(0), rw.input(1)
    if slope is None:
        return 7
    data = rw.const_of(slope)
    rank_s = rw.rank(slope)
    if data is not None:
        size = data.size
    elif slope.shape is not None and len(slope.shape) == 1 and isinstance(slope.shape[0], int):
        size = slope.shape[0]
    else:
        size = None
    if rank_s is not None and (rank_s != 1 or size == 1):
        return 7  # a scalar or a full-rank slope broadcasts the same way in both forms
    rank_x = rw.rank(x)
    if rank_s is None or rank_x is None:
        raise Decline("PRelu before opset 7 needs the ranks of X and slope to place a "
                      "per-channel slope")
    if rank_x > 2:
        rw.set_input(1, rw.unsqueeze_trailing(slope, rank_x - 2, "slope"))
    return 7


# ----- experimental / removed ops -----------------------------------------------------------------
def image_scaler(rw: Rewrite) -> int:
    """ImageScaler (experimental, removed in opset 10): ``y = scale * x + bias[c]`` on NCHW."""
    node = rw.node
    x = rw.input(0)
    scale = float(rw.pop("scale", 1.0))
    bias = rw.pop("bias")
    try:
        dt = rw.np_dtype(x, "ImageScaler's input")
    except Decline:
        dt = np.dtype(np.float32)
    version = max(rw.opset, 7)
    node.op_type = "Mul"
    rw.set_input(1, rw.const("scale", np.array(scale, dtype=dt)))
    if bias:
        out = node.outputs[0]
        scaled = rw.graph.new_value(f"{node.name}_scaled", out.dtype, out.shape)
        node.outputs[0] = scaled
        scaled.producer = node
        out.producer = None
        b = np.asarray(bias, dtype=dt).reshape(1, -1, 1, 1)
        rw.graph.add_node(
            "Add", [scaled, rw.const("bias", b)], [out],
            name=rw.graph.unique_name(f"{node.name}_bias"), version=version,
            index=rw.graph.nodes.index(node) + 1,
        )
    return version


def _qlinear_conv(rw: Rewrite) -> int:
    # contrib_quant imports this module: import it when the rule runs, not at module level
    from edgert.importer.contrib_quant import qlinear_conv

    return qlinear_conv(rw)


def scan_8(rw: Rewrite) -> int:
    raise Decline("Scan-8 (batched, with sequence_lens) is not supported; re-export the model "
                  "with opset 9 or newer")


_REDUCE_18 = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSumSquare",
)
_LEGACY_BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less",
)

# (op_type) -> [(first since_version, last since_version, rule)], default domain only.
RULES: dict[str, list[tuple[int, int, Rule]]] = {
    "Slice": [(1, 9, slice_1)],
    "Squeeze": [(1, 12, axes_to_input)],
    "Unsqueeze": [(1, 12, axes_to_input)],
    "ReduceSum": [(1, 12, axes_to_input)],
    **{op: [(1, 17, axes_to_input)] for op in _REDUCE_18},
    "Split": [(1, 17, split)],
    "Pad": [(1, 10, pad)],
    "Clip": [(1, 10, clip)],
    "Dropout": [(1, 11, dropout)],
    "BatchNormalization": [(1, 10_000, batch_normalization)],
    "Upsample": [(1, 10, upsample)],
    "Resize": [(10, 10, resize_10), (11, 10_000, resize_11)],
    "TopK": [(1, 9, topk_1)],
    "Gemm": [(1, 6, gemm_6)],
    "Concat": [(1, 3, concat_1)],
    "Reshape": [(1, 4, reshape_1)],
    "Cast": [(1, 5, cast_1)],
    "Tile": [(1, 5, tile_1)],
    "Scatter": [(9, 11, scatter)],
    "PRelu": [(1, 6, prelu_6)],
    **{op: [(1, 6, legacy_broadcast)] for op in _LEGACY_BROADCAST},
    "LpPool": [(1, 1, lp_pool_1)],
    "GlobalLpPool": [(1, 1, lp_pool_1)],
    "GridSample": [(16, 19, grid_sample_16)],
    "RoiAlign": [(10, 15, roi_align_10)],
    "DFT": [(17, 19, dft_17)],
    "GroupNormalization": [(18, 20, group_normalization_18)],
    "Scan": [(8, 8, scan_8)],
    "QLinearConv": [(10, 10_000, _qlinear_conv)],
}

# Experimental ops the installed onnx no longer knows, with the rule that replaces them.
EXPERIMENTAL: dict[str, Rule] = {
    "ImageScaler": image_scaler,
}


def find_rule(op_type: str, since: int) -> Rule | None:
    for lo, hi, rule in RULES.get(op_type, ()):
        if lo <= since <= hi:
            return rule
    return None


def apply(rw: Rewrite, rule: Rule | None) -> int:
    """Run ``rule`` (if any) on ``rw.node`` and set ``node.version``; may raise :class:`Decline`."""
    if rw.since < 6:
        rw.pop("consumed_inputs")
    produced = rule(rw) if rule is not None else 0
    rw.node.version = max(rw.opset, produced)
    return rw.node.version
