"""Plain Python objects that mirror the `.edgert` schema.

The writer takes a :class:`ModelDef` and the reader returns one, so both sides of the file share a
single description. Nothing here knows about the IR or ONNX: the converter (``edgert.convert``)
lowers an IR graph into these objects.

Attribute values are plain Python:

====================  ============================================
Python value          stored as
====================  ============================================
``float``             FLOAT
``int`` / ``bool``    INT
``str`` / ``bytes``   STRING (``str`` is UTF-8 encoded; read back as ``bytes``
                      only when it is not valid UTF-8)
``list[int]``         INTS (an empty list too)
``list[float]``       FLOATS
``list[str]``         STRINGS
``np.ndarray``        TENSOR (a constant tensor of the operator's subgraph)
``list[np.ndarray]``  TENSORS
``SubGraphDef``       GRAPH (a control-flow body, stored as another subgraph)
``list[SubGraphDef]`` GRAPHS
====================  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class QuantParams:
    """Affine quantization: ``real = (q - zero_point) * scale``.

    Per tensor when ``scale`` has one element; otherwise per slice along ``axis``.
    """

    scale: np.ndarray  # float32, 1-D
    zero_point: np.ndarray  # int64, 1-D, same length as scale
    axis: int = 0


# TensorDef.kind: what a tensor entry holds (schema enum ValueKind). Sequence, optional and map
# values are run-time objects (a list of arrays; an array, a list or None; a dict, a list of
# dicts) that the runtime never places in its arena; their dtype is the element type of the
# tensors inside (a map's values) and their rank is unknown; a map's keys are ``key_dtype``.
KIND_TENSOR = 0
KIND_SEQUENCE = 1
KIND_OPTIONAL_TENSOR = 2
KIND_OPTIONAL_SEQUENCE = 3
KIND_MAP = 4
KIND_SEQUENCE_MAP = 5
KIND_NAMES = ("tensor", "sequence", "optional_tensor", "optional_sequence", "map",
              "sequence_map")  # by kind number


@dataclass
class TensorDef:
    """A tensor of a subgraph: an activation, a graph input, or a constant (``data`` set)."""

    name: str
    dtype: int  # edgert.dtypes code (ONNX numbering)
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    shape_signature: tuple[str, ...] | None = None  # symbolic dim names ("" where static)
    data: np.ndarray | None = None  # constant data; read back as a zero-copy, read-only view
    quant: QuantParams | None = None
    unknown_rank: bool = False
    kind: int = KIND_TENSOR  # KIND_TENSOR, KIND_SEQUENCE, KIND_OPTIONAL_TENSOR, ...
    key_dtype: int = 0  # KIND_MAP / KIND_SEQUENCE_MAP: the keys' dtype code (int64 or string)


@dataclass
class OperatorDef:
    op_type: str
    inputs: list[int]  # tensor indices, -1 = omitted optional input
    outputs: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""  # "" = ONNX default domain, "edgert" = fused/lowered ops
    version: int = 0  # opset version of `domain` this operator follows


@dataclass
class SubGraphDef:
    name: str
    tensors: list[TensorDef]
    inputs: list[int]
    outputs: list[int]
    operators: list[OperatorDef]  # topological order
    outer_inputs: list[str] = field(default_factory=list)  # enclosing-scope names a body reads


@dataclass
class ModelDef:
    """A whole model. ``subgraphs[0]`` is the main graph; its inputs/outputs form the signature."""

    subgraphs: list[SubGraphDef]
    metadata: dict[str, str] = field(default_factory=dict)
    description: str = ""
    version: int = 1  # format version the file was written with

    @property
    def main(self) -> SubGraphDef:
        return self.subgraphs[0]
