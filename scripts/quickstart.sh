#!/usr/bin/env bash
# Quick start: set up a virtual environment, convert the bundled digits classifier to .edgert,
# run it on eight sample digits and time it; then run the whole pipeline (scripts/pipeline.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[convert]"
mkdir -p build
.venv/bin/edgert convert models/digits_cnn.onnx -o build/digits_cnn.edgert
.venv/bin/edgert inspect build/digits_cnn.edgert
.venv/bin/edgert run build/digits_cnn.edgert --input input=models/digits_sample.npy --time 200
# The whole pipeline: train with edgert.train, export, optimize, quantize to int8, run; one table.
.venv/bin/python scripts/pipeline.py
