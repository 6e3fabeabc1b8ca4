"""``edgert quantize``: the command-line front of :func:`edgert.quantization.quantize`."""

from __future__ import annotations

import argparse
import pathlib
import sys


def add_quantize_parser(sub) -> None:
    """Add the ``quantize`` subcommand to the ``edgert`` parser's subparsers."""
    p = sub.add_parser("quantize", help="quantize a float ONNX model to int8 (or fp16 weights)")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", required=True, help="output .edgert (or .onnx) file")
    p.add_argument("--calibration", metavar="DATA", action="append",
                   help=".npz/.npy file or folder of them (needed for --mode int8); repeatable "
                        "(e.g. one sample per file)")
    p.add_argument("--batch-axis", metavar="NAME=AXIS", action="append", default=None,
                   help="the axis of input NAME's calibration arrays that holds the samples, "
                        "or 'none' for an input fed whole to every sample (a scalar, a shared "
                        "state); repeatable; default: 0, or the model's named batch dim")
    p.add_argument("--method", default="minmax",
                   choices=("minmax", "moving_average", "percentile", "entropy"),
                   help="how activation ranges come from the calibration data: minmax "
                        "(default), moving_average, percentile (clips outliers), entropy "
                        "(KL divergence, TensorRT's)")
    p.add_argument("--mode", default="int8", choices=("int8", "fp16", "dynamic"),
                   help="int8: int8 weights and activations, needs --calibration (default); "
                        "fp16: weights stored as float16; dynamic: weights stored int8, "
                        "activations float (these two take no calibration data)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor")
    p.add_argument("--format", default="edgert", choices=("edgert", "onnx"),
                   help="onnx writes a QDQ model that onnxruntime runs")
    p.add_argument("--io", default="float", choices=("float", "int8"),
                   help="int8: the model's inputs and outputs are the int8 tensors (scale and "
                        "zero point in the file) instead of float32")
    p.add_argument("--max-samples", type=int, default=None, help="calibrate on at most N samples")
    p.add_argument("--report", action="store_true", help="print per-tensor SQNR, worst first")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1, nothing written) when nothing was quantized or some op "
                        "stayed float")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    """``edgert quantize``: quantize, print where it went and the report's summary."""
    rep = run_quantize(args)
    print(f"wrote {args.output}")
    print(rep.summary())
    return 0


def run_quantize(args: argparse.Namespace):
    """Quantize as the command's arguments say; the :class:`QuantizationReport`."""
    from edgert.cli import UsageError, _output_path, _require_convert_extra, _require_onnx_file
    from edgert.errors import EdgeRTError
    from edgert.quantization.calibrate import BatchAxisError, parse_batch_axis

    batch_axis = None
    if args.batch_axis:
        if not args.calibration:
            raise UsageError("--batch-axis describes the --calibration data; there is none")
        try:
            batch_axis = parse_batch_axis(args.batch_axis)
        except BatchAxisError as exc:
            raise UsageError(str(exc)) from None
    if args.max_samples is not None and args.max_samples < 1:
        raise UsageError(f"--max-samples must be a positive integer, got {args.max_samples}")
    if not pathlib.Path(args.model).exists():
        raise EdgeRTError(f"no such file: {args.model}")
    _require_onnx_file(args.model)
    _output_path(args.output)
    _require_convert_extra("quantize")
    from edgert.quantization import StrictQuantizationError, quantize

    calibration = args.calibration
    if calibration is not None and len(calibration) == 1:
        calibration = calibration[0]
    try:
        _, rep = quantize(args.model, args.output, calibration=calibration, method=args.method,
                          per_channel=not args.per_tensor, mode=args.mode, format=args.format,
                          report=args.report, max_samples=args.max_samples,
                          progress=sys.stderr.isatty(),  # (no bar in logs)
                          io=args.io, batch_axis=batch_axis, strict=args.strict)
    except BatchAxisError as exc:  # a --batch-axis that does not fit the model: a bad argument
        raise UsageError(str(exc).replace("batch axis given", "--batch-axis given")) from None
    except StrictQuantizationError as exc:
        print(exc.report.summary(), file=sys.stderr)
        raise
    return rep
