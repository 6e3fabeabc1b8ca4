"""What calibrating + quantizing costs: edgert vs onnxruntime's ``quantize_static``.

For each model, method (MinMax, Entropy) and calibration sample count, both quantizers run in a
fresh subprocess on the same random N(0, 1) images (generated in the child, so both hold the same
input data); the table shows wall time and peak RSS (``VmHWM``). edgert's observers keep bounded
histograms, so its memory must not grow with the sample count; onnxruntime's entropy calibration
keeps every activation batch and grows with it.

    python benchmarks/quantize_cost.py [--samples 25 100] [models...]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quantize_compare import _run_child  # noqa: E402


def main() -> None:
    from light_models import materialize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["resnet50"])
    ap.add_argument("--samples", type=int, nargs="+", default=[100])
    ap.add_argument("--methods", nargs="+", default=["minmax", "entropy"])
    args = ap.parse_args()
    print(f"{'model':12} {'method':8} {'samples':>7} | {'edgert s':>9} {'ort s':>9} "
          f"{'ratio':>6} | {'edgert MB':>9} {'ort MB':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            src = str(materialize(name))
            for method in args.methods:
                for n in args.samples:
                    e = _run_child(f"edgert:{method}", src, f"{tmp}/{name}.edgert", n)
                    o = _run_child(f"ort:{method}", src, f"{tmp}/{name}_qdq.onnx", n)
                    if "error" in e or "error" in o:
                        print(f"{name:12} {method:8} {n:7d} | edgert {e.get('error', 'ok')} | "
                              f"onnxruntime {o.get('error', 'ok')}")
                        continue
                    print(f"{name:12} {method:8} {n:7d} | {e['seconds']:9.1f} {o['seconds']:9.1f} "
                          f"{e['seconds'] / o['seconds']:6.2f} | {e['peak_rss_mb']:9.0f} "
                          f"{o['peak_rss_mb']:9.0f} {e['peak_rss_mb'] / o['peak_rss_mb']:6.2f}",
                          flush=True)


if __name__ == "__main__":
    main()
