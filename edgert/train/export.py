"""Export a model to ONNX by tracing one forward pass.

:func:`export_onnx` installs a tracer (:func:`edgert.train.tensor.set_tracer`), runs the model
once in eval mode under ``no_grad``, and turns every recorded op into ONNX nodes. A tensor that
no recorded op produced and that is not a graph input is a constant: parameters keep their
dotted names (``features.0.weight``), other constants are named ``const_N``. BatchNorm running
statistics are baked in as initializers.

What tracing cannot see: Python control flow is unrolled for the example input (a loop over the
time steps of an LSTM becomes that many copies), and shapes computed in Python become
constants. With ``dynamic_batch`` the first axis of inputs and outputs is named ``batch`` and a
Reshape that keeps the first axis writes 0 there ("copy the input's dim"), so the graph runs at
any batch size as long as the model itself does not fold the batch into another axis.

Batch-sized constants: a model that builds a tensor from the batch size in Python — the usual
``h0 = zeros(x.shape[0], hidden)`` initial state of an LSTM/GRU — would be frozen at the traced
batch. With ``dynamic_batch`` the model is therefore traced a second time on a batch one larger
(the example repeated), and the two traces are compared op by op: a constant whose first dim is
the batch in both traces and that holds one repeated value is written as
``ConstantOfShape(Concat(Shape(input)[0:1], rest))``, so it follows the input's batch. (If the
two traces differ in their ops, the model's Python control flow depends on the batch and the
constants stay as traced.)

Ops without an ONNX mapping (the fused losses, ``where``, advanced indexing other than a
Gather along one axis, ...) raise :class:`~edgert.errors.UnsupportedOpError` naming them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from edgert.errors import UnsupportedOpError
from edgert.train import tensor as T
from edgert.train.tensor import Tensor

if TYPE_CHECKING:
    import onnx

    from edgert.train.nn import Module

DEFAULT_OPSET = 17

_DIRECT = {"Add", "Sub", "Mul", "Div", "Pow", "Neg", "MatMul", "Relu", "Sigmoid", "Tanh", "Exp",
           "Log", "Sqrt", "Abs", "HardSwish", "Max", "Min", "Identity"}


class _Tracer:
    def __init__(self) -> None:
        self.records: list[tuple[str | None, tuple[Tensor, ...], Tensor, dict]] = []

    def record(self, op: str | None, inputs: tuple[Tensor, ...], out: Tensor, attrs: dict) -> None:
        self.records.append((op, inputs, out, attrs))


class _Builder:
    """Accumulates nodes and initializers, naming tensors by identity."""

    def __init__(self, onnx_mod: Any, param_names: dict[int, str], dynamic_batch: bool):
        self.onnx = onnx_mod
        self.helper = onnx_mod.helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names: dict[int, str] = {}
        self.param_names = param_names
        self.dynamic_batch = dynamic_batch
        self.counter = 0
        # id(constant) -> its one repeated value, for constants sized by the batch (see module)
        self.batch_fill: dict[int, Any] = {}
        self.batch_source = ""  # the input whose dim 0 is the batch

    def batch_filled(self, t: Tensor, value: Any) -> str:
        """``ConstantOfShape([batch, *t.shape[1:]], value)`` with ``batch`` read from the input."""
        shape = self.node("Shape", [self.batch_source])
        n = self.node("Slice", [shape, self.const(np.array([0], np.int64)),
                                self.const(np.array([1], np.int64))])
        if t.ndim > 1:
            n = self.node("Concat", [n, self.const(np.array(t.shape[1:], np.int64))], axis=0)
        fill = self.onnx.numpy_helper.from_array(np.array([value], t.dtype), "value")
        return self.node("ConstantOfShape", [n], value=fill)

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def const(self, arr: np.ndarray, base: str = "const") -> str:
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def name_of(self, t: Tensor) -> str:
        key = id(t)
        if key in self.batch_fill and key not in self.names:
            self.names[key] = self.batch_filled(t, self.batch_fill[key])
        if key not in self.names:
            name = self.param_names.get(key) or self.fresh("const")
            self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(t.data),
                                                                name))
            self.names[key] = name
        return self.names[key]

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None,
             **attrs: Any) -> str:
        outputs = outputs or [self.fresh(op.lower())]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.fresh(op),
                                                **attrs))
        return outputs[0]


def _ints(v: Any) -> list[int]:
    return [int(i) for i in v]


def _emit(b: _Builder, op: str, ins: tuple[Tensor, ...], out: Tensor, attrs: dict) -> str:
    """ONNX nodes for one recorded op; returns the name of the value holding ``out``."""
    if op is None:
        raise UnsupportedOpError(f"export: an op producing a {out.shape} tensor has no ONNX "
                                 "mapping (losses and where() are not exportable)",
                                 [("?", "", "no ONNX mapping")])
    x = [b.name_of(t) for t in ins]
    dt = out.dtype
    if op in _DIRECT:
        return b.node(op, x)
    if op == "Cast":
        return b.node("Cast", x, to=b.helper.np_dtype_to_tensor_dtype(np.dtype(attrs["to"])))
    if op == "LeakyRelu":
        return b.node(op, x, alpha=float(attrs["alpha"]))
    if op in ("Softmax", "LogSoftmax"):
        return b.node(op, x, axis=int(attrs["axis"]))
    if op == "Concat":
        return b.node(op, x, axis=int(attrs["axis"]))
    if op == "Transpose":
        return b.node(op, x, perm=_ints(attrs["perm"]))
    if op == "Gelu":
        # opset 17 has no Gelu: 0.5 * x * (1 + erf(x / sqrt(2)))
        e = b.node("Erf", [b.node("Mul", [x[0], b.const(np.array(np.sqrt(0.5), dt))])])
        h = b.node("Add", [e, b.const(np.array(1, dt))])
        return b.node("Mul", [b.node("Mul", [x[0], b.const(np.array(0.5, dt))]), h])
    if op == "Clip":
        lo = b.const(np.array(attrs["min"], dt)) if attrs["min"] is not None else ""
        hi = b.const(np.array(attrs["max"], dt)) if attrs["max"] is not None else ""
        return b.node("Clip", [x[0], lo, hi])
    if op.startswith("Reduce"):
        axes, keep = _ints(attrs["axes"]), int(attrs["keepdims"])
        if op == "ReduceSum":
            return b.node(op, [x[0], b.const(np.array(axes, np.int64))], keepdims=keep)
        return b.node(op, x, axes=axes, keepdims=keep)
    if op == "Reshape":
        shape = list(out.shape)
        if (b.dynamic_batch and ins[0].ndim and shape and shape[0] == ins[0].shape[0]):
            shape[0] = 0  # "copy the input's dim 0": keeps the batch dynamic
        return b.node("Reshape", [x[0], b.const(np.array(shape, np.int64))])
    if op == "Pad":
        width = attrs["pads"]
        pads = [lo for lo, _ in width] + [hi for _, hi in width]
        return b.node("Pad", [x[0], b.const(np.array(pads, np.int64)),
                              b.const(np.array(attrs["value"], dt))], mode="constant")
    if op == "Linear":
        if ins[0].ndim == 2:
            return b.node("Gemm", x, transB=1)
        y = b.node("MatMul", [x[0], b.const(ins[1].data.T, "weight_t")])
        return b.node("Add", [y, x[2]]) if len(x) > 2 else y
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
        keys = {"Conv": ("strides", "pads", "dilations", "group", "kernel_shape"),
                "ConvTranspose": ("strides", "pads", "dilations", "output_padding",
                                  "kernel_shape"),
                "MaxPool": ("kernel_shape", "strides", "pads", "dilations"),
                "AveragePool": ("kernel_shape", "strides", "pads", "count_include_pad")}[op]
        kw = {k: (_ints(attrs[k]) if isinstance(attrs[k], tuple) else int(attrs[k]))
              for k in keys}
        return b.node(op, x, **kw)
    if op == "AdaptiveAvgPool":
        (oh, ow), (h, w) = attrs["output_size"], attrs["input_size"]
        if (oh, ow) == (1, 1):
            return b.node("GlobalAveragePool", x)
        if h % oh == 0 and w % ow == 0:
            k = [h // oh, w // ow]
            return b.node("AveragePool", x, kernel_shape=k, strides=k)
        raise UnsupportedOpError(f"export: adaptive_avg_pool2d from {(h, w)} to {(oh, ow)} has "
                                 "uneven windows and no ONNX equivalent",
                                 [("AdaptiveAvgPool", "", "uneven windows")])
    if op == "BatchNormalization":
        if attrs["training"]:
            raise UnsupportedOpError("export: batch_norm without running statistics cannot be "
                                     "exported", [(op, "", "no running stats")])
        c = ins[0].shape[1]
        it = iter(x[1:])
        scale = next(it) if attrs["has_weight"] else b.const(np.ones(c, dt))
        bias = next(it) if attrs["has_bias"] else b.const(np.zeros(c, dt))
        return b.node(op, [x[0], scale, bias, b.const(attrs["mean"].astype(dt), "running_mean"),
                           b.const(attrs["var"].astype(dt), "running_var")],
                      epsilon=float(attrs["eps"]))
    if op == "LayerNormalization":
        shape = ins[0].shape[attrs["axis"]:]
        it = iter(x[1:])
        scale = next(it) if attrs["has_weight"] else b.const(np.ones(shape, dt))
        bias = next(it) if attrs["has_bias"] else b.const(np.zeros(shape, dt))
        return b.node(op, [x[0], scale, bias], axis=int(attrs["axis"]),
                      epsilon=float(attrs["epsilon"]))
    if op == "getitem":
        return _emit_getitem(b, ins[0], x[0], attrs["key"])
    raise UnsupportedOpError(f"export: the op {op} has no ONNX mapping",
                             [(op, "", "no ONNX mapping")])


def _emit_getitem(b: _Builder, src: Tensor, name: str, key: Any) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    if len(keys) == 1 and isinstance(keys[0], (np.ndarray, list)):
        idx = np.asarray(keys[0])
        if idx.dtype.kind in "iu":
            return b.node("Gather", [name, b.const(idx.astype(np.int64))], axis=0)
    if any(k is Ellipsis or k is None or isinstance(k, (np.ndarray, list)) for k in keys):
        raise UnsupportedOpError("export: indexing with Ellipsis, None or index arrays (other "
                                 "than one integer array on axis 0) is not exportable",
                                 [("getitem", "", str(key))])
    starts, ends, axes, steps, squeeze = [], [], [], [], []
    for axis, k in enumerate(keys):
        n = src.shape[axis]
        if isinstance(k, slice):
            if k == slice(None):
                continue
            start, stop, step = k.indices(n)
            if step < 0 and stop < 0:
                stop = -(2 ** 63)  # "before index 0" for a negative step
        else:
            i = int(k) % n
            start, stop, step = i, i + 1, 1
            squeeze.append(axis)
        starts.append(start)
        ends.append(stop)
        axes.append(axis)
        steps.append(step)
    out = name
    if axes:
        out = b.node("Slice", [name] + [b.const(np.array(v, np.int64))
                                        for v in (starts, ends, axes, steps)])
    if squeeze:
        out = b.node("Squeeze", [out, b.const(np.array(squeeze, np.int64))])
    return out if out != name else b.node("Identity", [name])


def _trace(model: Any, args: tuple[Tensor, ...]) -> tuple[_Tracer, Any]:
    """Run ``model(*args)`` once in eval mode under ``no_grad`` with a tracer installed."""
    from edgert.train.nn import Module

    is_module = isinstance(model, Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    tracer = _Tracer()
    old = T.set_tracer(tracer)
    try:
        with T.no_grad():
            result = model(*args)
    finally:
        T.set_tracer(old)
        if is_module:
            model.train(was_training)
    return tracer, result


def _uniform(a: np.ndarray) -> Any:
    """The one value every element of ``a`` holds (None if they differ or ``a`` is empty)."""
    if a.size == 0:
        return None
    first = a.reshape(-1)[0]
    if a.dtype.kind == "f" and np.isnan(first):
        return None
    return first.item() if np.all(a == first) else None


def _batch_sized_constants(tracer: _Tracer, probe: _Tracer, args: tuple[Tensor, ...],
                           param_names: dict[int, str], batch: int) -> dict[int, Any]:
    """Constants of ``tracer`` that grow with the batch in ``probe`` (traced at ``batch + 1``).

    Returns ``id(constant) -> fill value`` for constants whose dim 0 is ``batch`` here and
    ``batch + 1`` in the probe, whose other dims agree, and that hold one repeated value in
    both traces. Empty when the traces do not line up op by op.
    """
    if len(tracer.records) != len(probe.records):
        return {}
    made = {id(r[2]) for r in tracer.records} | {id(a) for a in args} | set(param_names)
    made_p = {id(r[2]) for r in probe.records}
    found: dict[int, Any] = {}
    for (op, ins, _, _), (op_p, ins_p, _, _) in zip(tracer.records, probe.records):
        if op != op_p or len(ins) != len(ins_p):
            return {}
        for t, tp in zip(ins, ins_p):
            if id(t) in made or id(tp) in made_p or t.shape == tp.shape:
                continue
            if (t.ndim >= 1 and t.ndim == tp.ndim and t.shape[0] == batch
                    and tp.shape[0] == batch + 1 and t.shape[1:] == tp.shape[1:]
                    and t.dtype == tp.dtype):
                v, vp = _uniform(t.data), _uniform(tp.data)
                if v is not None and v == vp:
                    found[id(t)] = v
    return found


def export_onnx(model: Module | Any, example_inputs: Any, path: str | os.PathLike | None = None,
                dynamic_batch: bool = True, input_names: list[str] | None = None,
                output_names: list[str] | None = None,
                opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace ``model(*example_inputs)`` into an ONNX model (and save it to ``path`` if given).

    Args:
        model: a :class:`~edgert.train.nn.Module` (traced in eval mode, restored afterwards) or
            any callable taking and returning tensors.
        example_inputs: a tensor/array or a tuple of them.
        dynamic_batch: name axis 0 of inputs and outputs ``batch``.
        input_names / output_names: default ``input``/``output`` (numbered if several).
    """
    import onnx

    from edgert.train.nn import Module

    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    args = tuple(a if isinstance(a, Tensor) else Tensor(np.asarray(a)) for a in args)
    is_module = isinstance(model, Module)
    param_names: dict[int, str] = {}
    if is_module:
        param_names = {id(p): n for n, p in model.named_parameters()}
    tracer, result = _trace(model, args)
    outs = result if isinstance(result, (tuple, list)) else (result,)
    batch_fill: dict[int, Any] = {}
    batch_at = next((i for i, a in enumerate(args) if a.ndim >= 1), None)
    if dynamic_batch and batch_at is not None:
        probe_args = tuple(Tensor(np.concatenate([a.data, a.data[:1]], 0)) if a.ndim else a
                           for a in args)
        try:
            probe, _ = _trace(model, probe_args)
        except Exception:  # noqa: BLE001 (a model that fails at another batch keeps its constants)
            probe = None
        if probe is not None:
            batch_fill = _batch_sized_constants(tracer, probe, args, param_names,
                                                int(args[batch_at].shape[0]))

    in_names = input_names or (["input"] if len(args) == 1 else
                               [f"input_{i}" for i in range(len(args))])
    out_names = output_names or (["output"] if len(outs) == 1 else
                                 [f"output_{i}" for i in range(len(outs))])
    b = _Builder(onnx, param_names, dynamic_batch)
    for t, name in zip(args, in_names):
        b.names[id(t)] = name
    if batch_fill:
        b.batch_fill = batch_fill
        b.batch_source = in_names[batch_at]
    for op, ins, out, attrs in tracer.records:
        b.names[id(out)] = _emit(b, op, ins, out, attrs)

    def info(t: Tensor, name: str) -> Any:
        shape: list[Any] = list(t.shape)
        if dynamic_batch and shape:
            shape[0] = "batch"
        elem = b.helper.np_dtype_to_tensor_dtype(t.dtype)
        return b.helper.make_tensor_value_info(name, elem, shape)

    for t, name in zip(outs, out_names):
        b.node("Identity", [b.name_of(t)], [name])
    graph = b.helper.make_graph(b.nodes, type(model).__name__,
                                [info(t, n) for t, n in zip(args, in_names)],
                                [info(t, n) for t, n in zip(outs, out_names)], b.inits)
    proto = b.helper.make_model(graph, opset_imports=[b.helper.make_opsetid("", opset)],
                                producer_name="edgert.train")
    proto.ir_version = min(proto.ir_version, 8 if opset <= 17 else proto.ir_version)
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto
