"""Post-training quantization: calibrate a float model, rewrite it to int8 (or fp16 weights).

Example:
    >>> import edgert
    >>> res = edgert.quantize("model.onnx", "model.edgert", calibration="calib.npz")
    >>> print(res.summary())

Pipeline of :func:`quantize` (mode ``"int8"``):

1. import the ONNX model and optimize it (:func:`edgert.optimizer.optimize`, level 2: among
   others BatchNormalization folded into Conv);
2. calibrate (:mod:`.calibrate`): run the float model in the edgert interpreter over the data and
   record a range per float tensor with the chosen observer (:mod:`.observers`);
3. rewrite (:mod:`.quantizer`): int8 ops in domain ``edgert`` where a kernel exists, float ops
   between ``edgert.Dequantize``/``edgert.Quantize`` elsewhere; the model's inputs and outputs
   stay float32;
4. write the `.edgert` file (or, with ``format="onnx"``, a QDQ ONNX model, :mod:`.qdq`).

Modes ``"fp16"`` (weights stored as float16) and ``"dynamic"`` (weights stored int8 per channel,
activations float) need no calibration data.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from edgert.errors import EdgeRTError
from edgert.ir import Graph

MODES = ("int8", "fp16", "dynamic")


@dataclass
class QuantizationReport:
    """What :func:`quantize` did: op counts, float leftovers, sizes, SQNR per tensor."""

    mode: str
    method: str
    int8_ops: dict[str, int] = field(default_factory=dict)
    float_ops: list[tuple[str, str, str]] = field(default_factory=list)
    size_bytes: int = 0
    calibration_seconds: float = 0.0
    sqnr: list[tuple[str, float]] = field(default_factory=list)  # worst first
    float_io: list[str] = field(default_factory=list)  # io='int8': what stayed float

    def summary(self) -> str:
        lines = [f"mode {self.mode}" + (f", calibration {self.method} "
                                        f"({self.calibration_seconds:.1f} s)"
                                        if self.mode == "int8" else "")
                 + f", {self.size_bytes / 1024:.1f} KiB"]
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.int8_ops.items()))
        lines.append(f"quantized ops: {ops or 'none'}")
        if self.float_ops:
            lines.append(f"left in float ({len(self.float_ops)}):")
            for op, name, why in self.float_ops:
                lines.append(f"  {op} '{name}': {why}")
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
) -> tuple[bytes, QuantizationReport]:
    """Quantize a float model.

    Args:
        model: an ONNX path / bytes / ModelProto, or an IR graph.
        output: where to write the result (nothing is written when None).
        calibration: the data (see :mod:`edgert.quantization.calibrate`); required for ``int8``.
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

    Returns:
        ``(file bytes, QuantizationReport)``.

    Raises:
        EdgeRTError: bad mode/method/format, missing calibration data, or a model without
            float tensors; InputError/ShapeError/DTypeError for calibration data that does not
            fit the model.
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
    graph = load_graph(model)
    rep = QuantizationReport(mode, method)
    if mode != "int8":
        from edgert.quantization.calibrate import float_activations

        if not float_activations(graph):
            raise EdgeRTError("the model has no float tensors: there is nothing to quantize")
        res = weights_only(graph, mode, per_channel)
        rep.int8_ops = res.int8_ops
        data = convert(graph, output, level=0)
        rep.size_bytes = len(data)
        return data, rep
    if calibration is None:
        raise EdgeRTError("mode='int8' needs calibration data (calibration=...); modes 'fp16' "
                          "and 'dynamic' do not")
    t0 = time.perf_counter()
    ranges = calibrate(graph, calibration, method, batch_size=batch_size,
                       max_samples=max_samples, progress=progress)
    rep.calibration_seconds = time.perf_counter() - t0
    res = quantize_graph(graph, ranges, per_channel)
    rep.int8_ops, rep.float_ops = res.int8_ops, res.float_ops
    if report:
        from edgert.quantization.report import sqnr_report

        rep.sqnr = sqnr_report(graph, res, calibration, batch_size)
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


__all__ = ["quantize", "QuantizationReport", "load_graph", "MODES"]
