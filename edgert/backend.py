"""edgert as an ONNX backend (``onnx.backend.base.Backend``).

This is what the ONNX conformance suite drives (``tests/test_conformance.py``), so it goes through
exactly the pipeline a user runs: :func:`edgert.converter.convert` imports the ONNX model, checks
every operator against the CPU registry and writes the `.edgert` bytes; the
:class:`~edgert.runtime.Interpreter` then reads those bytes back (verifying them) and runs them.
Nothing is shared in memory between the two halves.

Example:
    >>> import edgert.backend as backend
    >>> rep = backend.prepare(model)              # onnx.ModelProto
    >>> outputs = rep.run([x])                    # list, in graph-output order
    >>> y, = backend.run_node(node, [a, b])       # one onnx.NodeProto
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from edgert.converter import convert
from edgert.errors import InputError
from edgert.runtime import Interpreter


class EdgeRTRep(BackendRep):
    """A prepared model: an :class:`Interpreter` over the converted `.edgert` bytes."""

    def __init__(self, interpreter: Interpreter, model_bytes: bytes,
                 output_types: Sequence[int] = ()):
        self.interpreter = interpreter
        self.model_bytes = model_bytes  # the `.edgert` file, for inspection
        self._output_types = list(output_types)  # ONNX elem types of the graph outputs

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run the model.

        Args:
            inputs: a list of arrays in the order of the model's (non-initializer) inputs, a dict
                ``name -> array``, or one array for a single-input model.

        Returns:
            The outputs in graph-output order.
        """
        names = self.interpreter.input_names
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(names):
                raise InputError(
                    f"the model takes {len(names)} input(s) {names}, got {len(inputs)}"
                )
            feeds = dict(zip(names, inputs))
        feeds = {k: _feed(v) for k, v in feeds.items()}
        results = self.interpreter.run(feeds)
        outs = [results[name] for name in self.interpreter.output_names]
        for k, code in enumerate(self._output_types[: len(outs)]):
            outs[k] = _from_bits(outs[k], code)
        return tuple(outs)


def _feed(value: Any) -> Any:
    """An input as the interpreter takes it: an array, a sequence (list) or an empty optional."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_feed(x) for x in value]
    return _to_bits(np.asarray(value))


def _to_bits(arr: np.ndarray) -> np.ndarray:
    """bfloat16/float8 arrays (ml_dtypes) as the unsigned-integer bits edgert carries them in."""
    if arr.dtype.name in _BIT_TYPE_NAMES.values():
        return arr.view(np.uint8 if arr.dtype.itemsize == 1 else np.uint16)
    if arr.dtype.name in _SUBBYTE_INT_NAMES.values():  # int4/int2: values, one per (u)int8
        return arr.astype(np.int8 if arr.dtype.name.startswith("int") else np.uint8)
    return arr


def _from_bits(arr: np.ndarray, code: int) -> np.ndarray:
    """Raw bits of a bfloat16/float8 output viewed as the ml_dtypes type (when installed)."""
    name = _BIT_TYPE_NAMES.get(code)
    if code in _SUBBYTE_INT_NAMES and arr.dtype.kind in "iu":
        try:
            import ml_dtypes
        except ImportError:
            return arr
        return arr.astype(getattr(ml_dtypes, _SUBBYTE_INT_NAMES[code]))
    if name is None or arr.dtype.kind != "u":
        return arr
    try:
        import ml_dtypes
    except ImportError:  # no NumPy type for it: leave the raw bits
        return arr
    return arr.view(getattr(ml_dtypes, name))


# ONNX element types carried as raw bits, and their ml_dtypes names.
_BIT_TYPE_NAMES = {
    16: "bfloat16",
    17: "float8_e4m3fn",
    18: "float8_e4m3fnuz",
    19: "float8_e5m2",
    20: "float8_e5m2fnuz",
    23: "float4_e2m1fn",
    24: "float8_e8m0fnu",
}
# Sub-byte integer types, held unpacked as their values in int8/uint8, and their ml_dtypes names.
_SUBBYTE_INT_NAMES = {21: "uint4", 22: "int4", 25: "uint2", 26: "int2"}


class EdgeRTBackend(Backend):
    """The ONNX backend interface over edgert's convert → `.edgert` → Interpreter pipeline."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgeRTRep:
        """Convert ``model`` to `.edgert` bytes and load them in an :class:`Interpreter`.

        Keyword args ``num_threads`` (Interpreter) and ``level`` (optimization level) are passed
        on. Import, conversion and load errors are the :mod:`edgert.errors` family.
        """
        if not cls.supports_device(device):
            raise InputError(f"edgert backend: unsupported device {device!r}; use 'CPU'")
        data = convert(model, level=int(kwargs.get("level", 0)))
        types = [o.type.tensor_type.elem_type if o.type.HasField("tensor_type") else 0
                 for o in model.graph.output]
        return EdgeRTRep(Interpreter(data, num_threads=kwargs.get("num_threads")), data, types)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Sequence[np.ndarray],
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, ...]:
        """Run a single node on ``inputs`` (wrapped in a one-node model at the newest opset)."""
        model = make_node_model(node, inputs, kwargs.get("opset_version"))
        return cls.prepare(model, device).run(list(inputs))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


def make_node_model(
    node: onnx.NodeProto, inputs: Sequence[np.ndarray], opset_version: int | None = None
) -> onnx.ModelProto:
    """A one-node model whose inputs have the dtypes and shapes of ``inputs``."""
    from onnx import helper

    in_names = [n for n in node.input if n]
    if len(in_names) != len(inputs):
        raise InputError(f"node {node.op_type}: {len(in_names)} named input(s), got {len(inputs)}")
    graph_inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype), np.shape(x)
        )
        for name, x in zip(in_names, inputs)
    ]
    graph_outputs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
    graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs, graph_outputs)
    domain = node.domain or ""
    version = opset_version or onnx.defs.onnx_opset_version()
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version)])


backend = EdgeRTBackend
prepare = EdgeRTBackend.prepare
run_model = EdgeRTBackend.run_model
run_node = EdgeRTBackend.run_node
supports_device = EdgeRTBackend.supports_device
