"""Post-training quantization: calibrate a float model, rewrite it to int8 (or fp16 weights).

Example:
    >>> import edgert
    >>> res = edgert.quantize("model.onnx", "model.edgert", calibration="calib.npz")
    >>> print(res.summary())

Pipeline of :func:`quantize` (mode ``"int8"``):

1. import the ONNX model and optimize it (:func:`edgert.optimizer.optimize`, level 2: among
   others BatchNormalization folded into Conv);
2. calibrate (:mod:`.calibrate`): run the float model in the edgert interpreter over the data and
   record a range per float tensor with the chosen observer (:mod:`.observers`), inside
   If/Loop/Scan bodies too; tensors that hold NaN/±inf (an attention mask) get none and stay
   float;
3. rewrite (:mod:`.quantizer`): int8 ops in domain ``edgert`` where a kernel exists, float ops
   between ``edgert.Dequantize``/``edgert.Quantize`` elsewhere; the model's inputs and outputs
   stay float32. Control-flow bodies are rewritten the same way, one by one
   (:func:`_quantize_bodies`; ``.edgert`` output only);
4. write the `.edgert` file (or, with ``format="onnx"``, a QDQ ONNX model, :mod:`.qdq`).

The report (:class:`QuantizationReport`) lists what stayed float and why, and warns when little
or nothing was quantized; ``strict=True`` makes that an error (:class:`StrictQuantizationError`).

Modes ``"fp16"`` (weights stored as float16) and ``"dynamic"`` (weights stored int8 per channel,
activations float) need no calibration data.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from edgert.errors import EdgeRTError
from edgert.ir import Graph

MODES = ("int8", "fp16", "dynamic")
# below this share of int8 ops (among the ops that could have been) the report warns
LITTLE_QUANTIZED = 0.5
# control-flow ops: containers whose bodies are quantized, never int8 ops themselves
CONTROL_FLOW = ("If", "Loop", "Scan")


class StrictQuantizationError(EdgeRTError):
    """``strict=True``: nothing was quantized, or some op stayed float. ``report`` says what."""

    def __init__(self, message: str, report: QuantizationReport):
        super().__init__(message)
        self.report = report


@dataclass
class QuantizationReport:
    """What :func:`quantize` did: op counts, float leftovers, sizes, SQNR per tensor.

    ``float_ops`` entries are ``(op type, node name, why)``; a node inside a control-flow body
    is named by its path, ``"If_2.then_branch/Conv_0"``. ``nonfinite`` lists the tensors that
    held NaN/±inf during calibration (kept float), ``body_int8_ops`` the int8 ops per body.
    """

    mode: str
    method: str
    int8_ops: dict[str, int] = field(default_factory=dict)
    float_ops: list[tuple[str, str, str]] = field(default_factory=list)
    size_bytes: int = 0
    calibration_seconds: float = 0.0
    sqnr: list[tuple[str, float]] = field(default_factory=list)  # worst first
    float_io: list[str] = field(default_factory=list)  # io='int8': what stayed float
    samples: int = 0  # calibration samples observed
    dropped: int = 0  # samples left over after the last full batch (static batch)
    nonfinite: list[tuple[str, str]] = field(default_factory=list)  # (tensor, what)
    body_int8_ops: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_int8_ops(self) -> int:
        return sum(self.int8_ops.values())

    def warnings(self) -> list[str]:
        """Little or nothing quantized, and anything else the user should not miss."""
        out = list(self.notes)
        n8, nf = self.num_int8_ops, len(self.float_ops)
        if n8 == 0:
            what = ("the output is the float model" if self.mode == "int8"
                    else "no Conv/Gemm/MatMul weight to store smaller")
            out.insert(0, f"nothing was quantized: {what}" + (
                " (see 'left in float' for why)" if nf else ""))
        elif nf and n8 / (n8 + nf) < LITTLE_QUANTIZED:
            out.insert(0, f"little was quantized: {n8} of {n8 + nf} ops are int8, {nf} stayed "
                          "float (see 'left in float' for why)")
        return out

    def strict_problems(self) -> list[str]:
        """What ``strict=True`` refuses: nothing quantized, or ops left float."""
        if self.num_int8_ops == 0:
            return ["nothing was quantized"]
        return [f"{op} '{name}' left in float: {why}" for op, name, why in self.float_ops]

    def summary(self) -> str:
        calib = ""
        if self.mode == "int8":
            calib = (f", calibration {self.method} on {self.samples} sample"
                     f"{'' if self.samples == 1 else 's'} ({self.calibration_seconds:.1f} s)")
        lines = [f"mode {self.mode}{calib}, {self.size_bytes / 1024:.1f} KiB"]
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.int8_ops.items()))
        lines.append(f"quantized ops: {ops or 'none'}")
        for scope, counts in self.body_int8_ops.items():
            inner = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            lines.append(f"  inside {scope}: {inner or 'none'}")
        for w in self.warnings():
            lines.append(f"WARNING: {w}")
        if self.float_ops:
            lines.append(f"left in float ({len(self.float_ops)}):")
            for op, name, why in self.float_ops:
                lines.append(f"  {op} '{name}': {why}")
        if self.nonfinite:
            lines.append("kept float, NaN/Inf in the float model (int8 has no infinities; "
                         "left out of the ranges):")
            for name, what in self.nonfinite:
                lines.append(f"  {name}: {what}")
        if self.float_io:
            lines.append("left float with io=int8 (no int8 form): " + ", ".join(self.float_io))
        if self.sqnr:
            lines.append("SQNR per tensor (float vs int8, dB), worst first:")
            for name, db in self.sqnr:
                lines.append(f"  {db:8.2f}  {name}")
        return "\n".join(lines)


def load_graph(model: Any) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) or take an IR graph, and fold BN."""
    if isinstance(model, Graph):
        graph = model
    else:
        from edgert.importer import import_onnx

        graph = import_onnx(model)
    from edgert.optimizer import optimize

    optimize(graph, 2)
    return graph


def quantize(
    model: Any,
    output: str | os.PathLike | None = None,
    *,
    calibration: Any = None,
    method: str = "minmax",
    per_channel: bool = True,
    mode: str = "int8",
    format: str = "edgert",
    report: bool = False,
    batch_size: int = 16,
    max_samples: int | None = None,
    progress: bool = False,
    io: str = "float",
    batch_axis: dict[str, int | None] | None = None,
    strict: bool = False,
) -> tuple[bytes, QuantizationReport]:
    """Quantize a float model.

    Args:
        model: an ONNX path / bytes / ModelProto, or an IR graph.
        output: where to write the result (nothing is written when None).
        calibration: the data (see :mod:`edgert.quantization.calibrate`); required for
            ``int8``: a ``.npz``/``.npy`` path, a folder or list of them (e.g. one sample per
            file), a dict of arrays, or an iterable of feed dicts.
        method: ``"minmax"``, ``"moving_average"``, ``"percentile"`` or ``"entropy"``.
        per_channel: per-output-channel weight scales (else one per tensor).
        mode: ``"int8"``, ``"fp16"`` (float16 weights) or ``"dynamic"`` (int8 weights only).
        format: ``"edgert"`` or ``"onnx"`` (a QDQ ONNX model; int8 mode only).
        report: compute the per-tensor SQNR on the first calibration batches.
        batch_size: calibration batch size when the data comes as arrays.
        max_samples: stop calibrating after this many samples.
        progress: show a progress bar while calibrating.
        io: ``"float"`` (float32 inputs and outputs, quantized inside the model) or ``"int8"``
            (inputs and outputs are the int8 tensors; their scale and zero point are in the
            file and in ``Interpreter.get_input_details()``); int8 mode, ``.edgert`` only.
        batch_axis: per input name, the axis of the calibration arrays that holds the samples,
            or None for an input fed whole to every sample (a scalar, a shared state); inputs
            not named: inferred (0, the model's named batch dim, none for scalars).
        strict: raise :class:`StrictQuantizationError` (and write nothing) when nothing was
            quantized or some op stayed float.

    Returns:
        ``(file bytes, QuantizationReport)``.

    Raises:
        EdgeRTError: bad mode/method/format, missing calibration data, or a model without
            float tensors; InputError/ShapeError/DTypeError for calibration data that does not
            fit the model (BatchAxisError, an InputError, for a ``batch_axis`` that does not);
            StrictQuantizationError with ``strict=True``.
    """
    from edgert.converter import convert
    from edgert.quantization.calibrate import calibrate
    from edgert.quantization.observers import METHODS
    from edgert.quantization.quantizer import quantize_graph, weights_only

    if mode not in MODES:
        raise EdgeRTError(f"unknown quantization mode {mode!r}; expected one of "
                          f"{', '.join(MODES)}")
    if method not in METHODS:
        raise EdgeRTError(f"unknown calibration method {method!r}; expected one of "
                          f"{', '.join(METHODS)}")
    if format not in ("edgert", "onnx"):
        raise EdgeRTError(f"unknown output format {format!r}; expected 'edgert' or 'onnx'")
    if format == "onnx" and mode != "int8":
        raise EdgeRTError("format='onnx' writes a QDQ model, which needs mode='int8'")
    if io not in ("float", "int8"):
        raise EdgeRTError(f"unknown io {io!r}; expected 'float' or 'int8'")
    if io == "int8" and (mode != "int8" or format != "edgert"):
        raise EdgeRTError("io='int8' (int8 model inputs and outputs) needs mode='int8' and "
                          "format='edgert'")
    if calibration is not None and mode != "int8":
        raise EdgeRTError(f"mode={mode!r} stores the weights only and uses no calibration data; "
                          "drop calibration=..., or use mode='int8'")
    if batch_axis is not None and calibration is None:
        raise EdgeRTError("batch_axis=... describes calibration data; there is none")
    graph = load_graph(model)
    rep = QuantizationReport(mode, method)
    if mode != "int8":
        from edgert.quantization.calibrate import float_activations

        if not float_activations(graph):
            raise EdgeRTError("the model has no float tensors: there is nothing to quantize")
        res = weights_only(graph, mode, per_channel)
        rep.int8_ops = res.int8_ops
        _check_strict(rep, strict)
        data = convert(graph, output, level=0)
        rep.size_bytes = len(data)
        return data, rep
    if calibration is None:
        raise EdgeRTError("mode='int8' needs calibration data (calibration=...); modes 'fp16' "
                          "and 'dynamic' do not")
    t0 = time.perf_counter()
    ranges = calibrate(graph, calibration, method, batch_size=batch_size,
                       max_samples=max_samples, progress=progress, batch_axis=batch_axis,
                       keep_feeds=2 if report else 0)
    rep.calibration_seconds = time.perf_counter() - t0
    rep.samples, rep.dropped = ranges.samples, ranges.dropped
    if ranges.dropped:
        rep.notes.append(f"{ranges.dropped} calibration sample(s) left over after the last "
                         "full batch (the model's batch dim is static) were not used")
    if ranges.body_error:
        rep.notes.append(ranges.body_error)
    res = quantize_graph(graph, ranges, per_channel)
    rep.int8_ops, rep.float_ops = dict(res.int8_ops), list(res.float_ops)
    _quantize_bodies(res.graph, ranges, per_channel, rep, qdq=format == "onnx")
    _explain_nonfinite(graph, ranges, rep)
    _check_strict(rep, strict)
    if report:
        from edgert.quantization.report import sqnr_report

        rep.sqnr = sqnr_report(graph, res, calibration, batch_size, batch_axis=batch_axis,
                               feeds=ranges.first_feeds or None)
    if format == "onnx":
        from edgert.quantization.qdq import export_qdq

        data = export_qdq(graph, res, output)  # annotates the float graph in place
    else:
        if io == "int8":
            from edgert.quantization.quantizer import int8_io

            rep.float_io = int8_io(res.graph)
        data = convert(res.graph, output, level=0)
    rep.size_bytes = len(data)
    return data, rep


def _check_strict(rep: QuantizationReport, strict: bool) -> None:
    if not strict:
        return
    problems = rep.strict_problems()
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"]
                                 if len(problems) > 10 else [])
        raise StrictQuantizationError(
            "strict quantization failed (nothing was written): " + "; ".join(shown), rep)


def _quantize_bodies(qgraph: Graph, ranges: Any, per_channel: bool, rep: QuantizationReport,
                     qdq: bool = False) -> None:
    """Rewrite every If/Loop/Scan body of ``qgraph`` (in place) with its calibrated ranges.

    A body reads its enclosing scopes' values by name; their ranges (and constants, so that a
    weight initialized in the main graph quantizes as a weight) come from those scopes. A body
    that never ran while calibrating stays float, and so do all bodies of a QDQ export.
    """
    from edgert.quantization.calibrate import scope_name, scoped
    from edgert.quantization.quantizer import quantize_graph

    def walk(g: Graph, path: tuple, outer_ranges: dict, outer_consts: dict) -> None:
        consts = dict(outer_consts)
        consts.update((n, v.const) for n, v in g.constants.items() if v.const is not None)
        for node in g.nodes:
            subs = [(a, b) for a, b in node.attrs.items() if isinstance(b, Graph)]
            if not subs:
                continue
            node_name = node.name or node.op_type
            left: list[str] = []
            for attr, body in subs:
                bpath = path + ((node_name, attr),)
                own = None if qdq else ranges.bodies.get(bpath)
                if own is None:
                    why = f"{attr} stays float: " + (
                        "the QDQ export does not quantize control-flow bodies" if qdq else
                        "it never ran during calibration (no ranges)")
                    ops = _body_float_ops(body, bpath, why)
                    if ops:  # a body without float work has nothing to quantize
                        left.append(why)
                        rep.float_ops.extend(ops)
                    continue
                body_ranges = {**outer_ranges, **own}
                with _outer_constants(body, consts):
                    sub = quantize_graph(body, body_ranges, per_channel)
                qbody = sub.graph
                qbody.outer_inputs = [n for n in body.outer_inputs if n in _free_names(qbody)]
                node.attrs[attr] = qbody
                for op, k in sub.int8_ops.items():
                    rep.int8_ops[op] = rep.int8_ops.get(op, 0) + k
                if sub.int8_ops:
                    rep.body_int8_ops[scope_name(bpath)] = dict(sub.int8_ops)
                rep.float_ops.extend((op, scoped(bpath, name), why)
                                     for op, name, why in sub.float_ops)
                walk(qbody, bpath, body_ranges, consts)
            # The container is no int8 op: it is listed only when a body stayed float.
            me = scoped(path, node.name)
            rep.float_ops[:] = [f for f in rep.float_ops
                                if not (f[0] == node.op_type and f[1] == me)]
            if left and node.op_type in CONTROL_FLOW:
                rep.float_ops.append((node.op_type, me, "; ".join(left)))

    walk(qgraph, (), dict(ranges), {})


def _body_float_ops(body: Graph, path: tuple, why: str) -> list[tuple[str, str, str]]:
    """A float body's ops that compute float tensors, for the report (control flow excluded:
    walk() lists it)."""
    from edgert import dtypes
    from edgert.quantization.calibrate import scoped

    return [(n.op_type, scoped(path, n.name), why) for n in body.nodes
            if n.op_type not in CONTROL_FLOW and n.op_type != "Identity"
            and any(o.dtype == dtypes.FLOAT for o in n.outputs)]


def _free_names(g: Graph) -> set[str]:
    """Names of the values ``g`` reads from enclosing scopes (no producer, input or data)."""
    inputs = {id(v) for v in g.inputs}
    vals = [v for n in g.nodes for v in n.inputs if v is not None] + list(g.outputs)
    return {v.name for v in vals
            if v.producer is None and v.const is None and id(v) not in inputs}


@contextlib.contextmanager
def _outer_constants(body: Graph, consts: dict):
    """Give a body's proxies of enclosing-scope constants their data while it is rewritten
    (a MatMul weight initialized in the main graph is then quantized as a weight)."""
    from edgert import dtypes

    names = set(body.outer_inputs)
    inputs = {id(v) for v in body.inputs}
    saved: dict[int, tuple] = {}
    for n in body.nodes:
        for v in n.inputs:
            if (v is not None and id(v) not in saved and v.producer is None and v.const is None
                    and id(v) not in inputs and v.name in names and v.name in consts):
                saved[id(v)] = (v, v.shape, v.dtype)
    try:
        for v, _, dtype in saved.values():
            arr = consts[v.name]
            v.const, v.shape = arr, list(arr.shape)
            v.dtype = dtype or dtypes.from_numpy(arr.dtype)
        yield
    finally:
        for v, shape, dtype in saved.values():
            v.const, v.shape, v.dtype = None, shape, dtype


def _explain_nonfinite(graph: Graph, ranges: Any, rep: QuantizationReport) -> None:
    """Say, next to each op left float for a missing range, when NaN/Inf were the reason; list
    the readers of such tensors too (the quantizer lists only ops with a calibrated input)."""
    from edgert import dtypes
    from edgert.quantization.calibrate import body_graphs, scoped

    if not ranges.nonfinite:
        return
    rep.nonfinite = sorted(ranges.nonfinite.items())
    nodes = {n.name: n for n in graph.nodes}
    for path, body in body_graphs(graph).items():
        nodes.update((scoped(path, n.name), n) for n in body.nodes)

    def held(name: str, values) -> list[str]:
        # the node's scope and the enclosing ones (a body reads outer values by name)
        parts = name.split("/")[:-1]
        prefixes = ["/".join(parts[:k]) + "/" if k else "" for k in range(len(parts), -1, -1)]
        return [f"'{v.name}'" for v in values
                if v is not None and any(p + v.name in ranges.nonfinite for p in prefixes)]

    why_inf = "held NaN/Inf in the float model, which int8 cannot represent"
    listed = set()
    for i, (op, name, why) in enumerate(rep.float_ops):
        listed.add(name)
        node = nodes.get(name)
        if node is None or "calibrated range" not in why:
            continue
        bad = held(name, list(node.inputs) + list(node.outputs))
        if bad:
            rep.float_ops[i] = (op, name, f"{why}: {', '.join(bad)} {why_inf}")
    for name, node in nodes.items():
        if name in listed or node.op_type in CONTROL_FLOW or not any(
                o.dtype == dtypes.FLOAT for o in node.outputs):
            continue
        bad = held(name, node.inputs)
        if bad:
            rep.float_ops.append((node.op_type, name, f"stays float: its input "
                                                      f"{', '.join(bad)} {why_inf}"))


__all__ = ["quantize", "QuantizationReport", "StrictQuantizationError", "load_graph",
           "MODES"]
