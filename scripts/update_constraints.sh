#!/usr/bin/env bash
# Move the test pins forward: resolve the newest releases of everything the `test` extra needs in
# a fresh virtual environment (no constraints), run the lint and the whole suite there, and, only
# if both pass, write what was installed to constraints/test.txt. Commit that file on its own.
# Extra arguments go to pytest. The venv is kept in .venv-latest for a look after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
rm -rf .venv-latest
"$PY" -m venv .venv-latest
.venv-latest/bin/python -m pip install --quiet --upgrade pip
.venv-latest/bin/python -m pip install --quiet -e ".[test]"
export PATH="$PWD/.venv-latest/bin:$PATH"
.venv-latest/bin/ruff check .
.venv-latest/bin/python -m pytest -q "$@"
{
  echo "# Pins for the test run (scripts/test.sh installs with -c constraints/test.txt)."
  echo "# Written by scripts/update_constraints.sh after the lint and the suite passed with them;"
  echo "# edgert's own dependency ranges (pyproject.toml) stay loose for users."
  .venv-latest/bin/python -m pip freeze --exclude-editable | grep -v '^edgert' | LC_ALL=C sort -f
} > constraints/test.txt
echo "constraints/test.txt updated; review 'git diff constraints/' and commit it."
