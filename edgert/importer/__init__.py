"""ONNX -> edgert IR.

* :func:`import_onnx` — read an ONNX model (ModelProto, path or bytes) into an
  :class:`edgert.ir.Graph`, normalizing older opset forms (:mod:`edgert.importer.upgrade`).
* :func:`load_onnx` / :func:`import_model` — the same in two steps (parse, then import), for callers
  that also need the parsed model or its hash.
"""

from edgert.importer.onnx_export import export_onnx
from edgert.importer.onnx_import import (
    LoadedModel,
    import_model,
    import_onnx,
    load_onnx,
)

__all__ = [
    "LoadedModel", "export_onnx", "import_model", "import_onnx",
    "load_onnx",
]
