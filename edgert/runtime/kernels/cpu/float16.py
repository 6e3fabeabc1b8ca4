"""float16 for the float32 compute kernels (MatMul, Gemm, Conv, ConvTranspose).

:func:`with_float16` wraps a float32/float64 kernel class so that float16 operands run through
it in float32: ``prepare`` hands the wrapped kernel float32 views of the inputs (constant
weights converted once, so packing happens in float32) and keeps float32 buffers for the
variable inputs and the outputs; ``invoke`` widens the inputs into those buffers, runs the
float32 kernel and rounds its outputs to float16 once, at the end.

Why not a float16 GEMM: NumPy has no float16 BLAS (its float16 matmul is a slow loop that
rounds every partial sum), and accumulating a long dot product in float16 loses digits. One
rounding of a float32 accumulation is also what onnxruntime's CPU kernels return.

The buffers live outside the arena (the planner only knows the float16 tensors): a float16
layer costs its inputs and outputs again in float32 while it is prepared.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import DTypeError
from edgert.runtime.registry import Kernel, TensorInfo

_F16 = np.dtype(np.float16)
# ONNX input names, for error messages
_INPUT_NAMES = {"Gemm": "ABC", "MatMul": "AB", "Conv": "XWBZ", "ConvTranspose": "XWB"}
_F32 = np.dtype(np.float32)


class _Float16Via32:
    """Mixin placed before a float32 kernel class in the MRO (see :func:`with_float16`)."""

    _half = False

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        dts = [None if i is None else np.dtype(i.dtype) for i in inputs]
        self._half = any(dt == _F16 for dt in dts)
        if not self._half:
            return super().prepare(inputs)
        other = next((k for k, dt in enumerate(dts) if dt is not None and dt.kind == "f"
                      and dt != _F16), None)
        if other is not None:
            half = dts.index(_F16)
            names = _INPUT_NAMES.get(self.op.op_type, "")
            a = names[half] if half < len(names) else str(half)
            b = names[other] if other < len(names) else str(other)
            raise self.error(
                f"input {a} has dtype float16 but input {b} has {dts[other]}; float16 runs only "
                "when every float input is float16", DTypeError)
        wide: list[TensorInfo | None] = []
        # (input index, float32 buffer) for each variable float16 input, (index, widened value)
        # for each constant one (kernels read some constants in invoke too, e.g. Conv's X)
        self._in32: list[tuple[int, np.ndarray]] = []
        self._const32: list[tuple[int, np.ndarray]] = []
        for k, info in enumerate(inputs):
            if info is None or dts[k] != _F16:
                wide.append(info)
                continue
            value = None if info.value is None else np.asarray(info.value, _F32)
            wide.append(TensorInfo(info.shape, _F32, value))
            if value is None:
                self._in32.append((k, np.empty(info.shape, _F32)))
            else:
                self._const32.append((k, value))
        outs = super().prepare(wide)
        self._out32 = [np.empty(o.shape, o.dtype) for o in outs]
        return [TensorInfo(o.shape, _F16 if o.dtype == _F32 else o.dtype) for o in outs]

    def invoke(self, inputs, outputs):
        if not self._half:
            return super().invoke(inputs, outputs)
        ins = list(inputs)
        for k, value in self._const32:
            ins[k] = value
        for k, buf in self._in32:
            np.copyto(buf, inputs[k])  # exact: every float16 is a float32
            ins[k] = buf
        super().invoke(ins, self._out32)
        for out, out32 in zip(outputs, self._out32):
            np.copyto(out, out32, casting="unsafe")  # the one rounding, to nearest even
        return None


def with_float16(cls: type[Kernel]) -> type[Kernel]:
    """A subclass of ``cls`` that also takes float16 operands (computed in float32)."""
    return type(cls.__name__ + "Float16", (_Float16Via32, cls),
                {"__doc__": f"{cls.__doc__}\n\nfloat16 operands: see :mod:`{__name__}`."})
