"""onnxruntime's quantized contrib operators (domain ``com.microsoft``), lowered at import.

See :mod:`edgert.importer.contrib` for how a rule works.

Rules (``RULES``):
"""

from __future__ import annotations

from edgert.importer.upgrade import Rule

RULES: dict[str, Rule] = {}
