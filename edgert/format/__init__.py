"""The `.edgert` model file: a FlatBuffer (schema in ``schema/edgert.fbs``) followed by 64-byte
aligned constant blobs.

* :func:`write_model` serializes a :class:`ModelDef` (:mod:`edgert.format.writer` shows the layout).
* :func:`read_model` memory-maps and verifies a file and returns a :class:`ModelDef` whose
  constants are zero-copy, read-only NumPy views (see :mod:`edgert.format.reader` for the
  verification layers and :mod:`edgert.format.verify` for the semantic checks).

Example::

    from edgert.format import read_model, write_model
    write_model(model_def, "net.edgert")
    model = read_model("net.edgert")
    weights = model.main.tensors[3].data      # a view into the mapped file

This package imports only flatbuffers, numpy, :mod:`edgert.dtypes` and :mod:`edgert.errors`.
The writer (with the generated FlatBuffers builder code) is imported on first use of
:func:`write_model`: a device that only reads models never pays for it (start-up time).
"""

from edgert.format.constants import BLOB_ALIGNMENT, FILE_EXTENSION, FILE_IDENTIFIER, SCHEMA_VERSION
from edgert.format.model import ModelDef, OperatorDef, QuantParams, SubGraphDef, TensorDef
from edgert.format.reader import read_model
from edgert.format.verify import check_model

__all__ = [
    "BLOB_ALIGNMENT",
    "FILE_EXTENSION",
    "FILE_IDENTIFIER",
    "SCHEMA_VERSION",
    "ModelDef",
    "OperatorDef",
    "QuantParams",
    "SubGraphDef",
    "TensorDef",
    "check_model",
    "read_model",
    "write_model",
]


def __getattr__(name: str):
    if name == "write_model":
        from edgert.format.writer import write_model

        return write_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
