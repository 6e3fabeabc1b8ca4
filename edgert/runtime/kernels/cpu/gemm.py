"""CPU kernels: Gemm and MatMul (float32/float64), with an optional fused activation.

Both hand the multiplication to BLAS through ``np.matmul(..., out=planned_buffer)``: OpenBLAS
beats anything Numba would compile for these shapes, and ``out=`` keeps invoke allocation-free.
What ``prepare`` does to make invoke cheap:

* a constant ``B`` is transposed (``transB``) into an owned contiguous array once, and ``alpha``
  folded into it, so invoke is one BLAS call;
* Gemm's ``C`` is classified once: a per-column vector (the usual FC bias, shape ``(N,)`` or
  ``(1, N)``), a per-row vector (``(M, 1)``), a scalar, or a full ``(M, N)`` matrix. Vectors and
  scalars are added by the Numba epilogue together with the fused activation, in one pass over Y;
  ``beta`` is folded into a constant ``C``;
* MatMul with a batched ``A`` and a 2-D ``B`` (a Linear layer over ``(batch, seq, K)``) runs as
  one ``(batch·seq, K) @ (K, N)`` GEMM instead of one small GEMM per batch item.

Fused activations come from the ``activation`` / ``activation_params`` attributes that the graph
optimizer sets on ``edgert.Gemm`` / ``edgert.MatMul`` (see :mod:`.epilogue`).
"""

from __future__ import annotations

import numpy as np

from edgert.errors import ShapeError
from edgert.runtime.kernels.cpu._native.arrays import owned
from edgert.runtime.kernels.cpu.blas import gemv, matmul
from edgert.runtime.kernels.cpu.epilogue import col_epilogue, epilogue, parse_activation
from edgert.runtime.kernels.cpu.float16 import with_float16
from edgert.runtime.ops.window import float_dtype
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo, broadcast_shapes

_C_NONE, _C_COL, _C_ROW, _C_FULL = "none", "col", "row", "full"


class GemmKernel(Kernel):
    """ONNX Gemm: ``Y = alpha * A' @ B' + beta * C`` with ``A' = A.T if transA`` (same for B)."""

    traits = OpTraits(int8="linear")

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 2, 3)
        a, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        dt = float_dtype(self, [(a, "A"), (b, "B"), (c, "C")])
        for info, name in ((a, "A"), (b, "B")):
            if len(info.shape) != 2:
                raise self.error(f"input {name} must be 2-D, got shape {info.shape}", ShapeError)
        self.trans_a = bool(int(self.attr("transA", 0)))
        self.trans_b = bool(int(self.attr("transB", 0)))
        self.alpha = float(self.attr("alpha", 1.0))
        self.beta = float(self.attr("beta", 1.0))
        m, k = (a.shape[1], a.shape[0]) if self.trans_a else a.shape
        kb, n = (b.shape[1], b.shape[0]) if self.trans_b else b.shape
        if k != kb:
            raise self.error(
                f"inner dimensions differ: A{' (transposed)' if self.trans_a else ''} is "
                f"{m}x{k}, B{' (transposed)' if self.trans_b else ''} is {kb}x{n}",
                ShapeError,
            )
        self.act = parse_activation(self.where(), self.attrs)
        self.params = self.act.params(dt)
        self.dtype = dt
        self.empty = np.zeros(0, dt)

        # B' (and alpha) packed once when B is constant.
        self.b_packed = None
        self.alpha_folded = False
        if b.value is not None:
            bp = np.asarray(b.value, dtype=dt)
            bp = bp.T if self.trans_b else bp
            if self.alpha != 1.0:
                bp = owned(bp, dt)
                bp *= dt.type(self.alpha)
                self.alpha_folded = True
            # Otherwise a zero-copy (possibly transposed) view of the file's weights: BLAS takes
            # the transpose flag at full speed, and a copy would double resident memory.
            self.b_packed = bp
        # One row times a constant transposed B (a batch-1 classifier head): blas.gemv over
        # B's rows as stored.
        self.gemv_wt = None
        if (m == 1 and self.trans_b and not self.trans_a and not self.alpha_folded
                and self.b_packed is not None and self.b_packed.T.flags.c_contiguous):
            self.gemv_wt = self.b_packed.T

        # C: how it broadcasts over (M, N), and beta folded into it when it is constant.
        self.c_mode = _C_NONE
        self.c_packed = None
        if c is not None and self.beta != 0.0:
            cs = tuple(c.shape)
            cs2 = (1,) * (2 - len(cs)) + cs
            # Unidirectional broadcasting: C must stretch to (M, N), never the other way.
            if len(cs) > 2 or any(d not in (1, full) for d, full in zip(cs2, (m, n))):
                raise self.error(
                    f"C of shape {cs} does not broadcast to the output shape ({m}, {n})",
                    ShapeError,
                )
            if cs2 == (m, n) and not (m == 1 or n == 1):
                self.c_mode = _C_FULL
            elif cs2[0] == 1:
                self.c_mode = _C_COL  # (1, N), (N,), (1, 1) or scalar: one value per column
            else:
                self.c_mode = _C_ROW  # (M, 1)
            self.c_shape2 = cs2
            if c.value is not None:
                self.c_packed = self._pack_c(np.asarray(c.value, dtype=dt), m, n)
        return [TensorInfo((m, n), dt)]

    def _pack_c(self, c: np.ndarray, m: int, n: int) -> np.ndarray:
        """C in the form the epilogue takes, scaled by beta: a vector for col/row, else (M, N)."""
        c2 = c.reshape(self.c_shape2)
        if self.c_mode == _C_COL:
            vec = np.broadcast_to(c2, (1, n))[0]
        elif self.c_mode == _C_ROW:
            vec = np.broadcast_to(c2, (m, 1))[:, 0]
        else:
            vec = c2
        out = owned(vec, self.dtype)
        if self.beta != 1.0:
            out *= self.dtype.type(self.beta)
        return out

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        a = inputs[0].T if self.trans_a else inputs[0]
        if self.gemv_wt is not None:
            gemv(np.ascontiguousarray(a).reshape(-1), self.gemv_wt, y.reshape(-1),
                 self.op.num_threads)
        else:
            b = self.b_packed if self.b_packed is not None else (
                inputs[1].T if self.trans_b else inputs[1])
            matmul(a, b, out=y, threads=self.op.num_threads)
        if self.alpha != 1.0 and not self.alpha_folded:
            y *= self.dtype.type(self.alpha)
        code = self.act.code
        p0, p1 = self.params
        if self.c_mode == _C_NONE:
            epilogue(y, self.empty, self.act, self.params)
            return
        c = self.c_packed
        if c is None:
            # A computed C: packed per call (small for the usual bias vectors).
            c = self._pack_c(np.asarray(inputs[2]), y.shape[0], y.shape[1])
        if self.c_mode == _C_COL:
            col_epilogue(y, c, code, p0, p1)
        elif self.c_mode == _C_ROW:
            epilogue(y, c, self.act, self.params)
        else:
            np.add(y, c, out=y)
            epilogue(y, self.empty, self.act, self.params)


class MatMulKernel(Kernel):
    """ONNX MatMul: NumPy ``matmul`` semantics (batch broadcasting, 1-D operands promoted).

    ``edgert.MatMul`` may take a third input, a bias of one value per output column (shape
    ``(N,)`` or ``(1, ..., 1, N)``), added before the fused activation in the same pass: the
    optimizer's fusion of ``Add(MatMul(x, W), b)`` for a batched ``x`` (a transformer's linear
    layers on ``[batch, seq, hidden]``), which a 2-D Gemm cannot take.
    """

    traits = OpTraits(int8="linear")

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 2, 3 if self.op.domain == "edgert" else 2)
        a, b = inputs[0], inputs[1]
        dt = float_dtype(self, [(a, "A"), (b, "B")])
        sa, sb = tuple(a.shape), tuple(b.shape)
        if len(sa) == 0 or len(sb) == 0:
            raise self.error(f"inputs must have rank >= 1, got shapes {sa} and {sb}", ShapeError)
        # Promote 1-D operands as numpy.matmul does: A (K,) -> (1, K), B (K,) -> (K, 1).
        pa = (1,) + sa if len(sa) == 1 else sa
        pb = sb + (1,) if len(sb) == 1 else sb
        if pa[-1] != pb[-2]:
            raise self.error(
                f"inner dimensions differ: A {sa} has {pa[-1]} columns, B {sb} has {pb[-2]} rows",
                ShapeError,
            )
        batch = broadcast_shapes(self.where(), pa[:-2], pb[:-2])
        out = batch + (pa[-2], pb[-1])
        if len(sa) == 1:
            out = out[:-2] + out[-1:]
        if len(sb) == 1:
            out = out[:-1]
        self.act = parse_activation(self.where(), self.attrs)
        self.params = self.act.params(dt)
        self.empty = np.zeros(0, dt)
        self.b_packed = np.asarray(b.value, dtype=dt) if b.value is not None else None
        # A Linear layer over a batch: fold A's batch axes into its rows, one GEMM in total.
        self.flat = len(sa) >= 3 and len(sb) <= 2
        self.k = pa[-1]
        self.out_shape = out
        self.bias = None  # (the bias input: None, a constant vector, or True: read per call)
        bias = inputs[2] if len(inputs) > 2 else None
        if bias is not None:
            n = pb[-1]
            bs = tuple(bias.shape)
            if np.dtype(bias.dtype) != dt or int(np.prod(bs, dtype=np.int64)) != n or (
                    bs and bs[-1] != n) or len(bs) > len(out) or len(sb) < 2:
                raise self.error(f"bias must be {dt} with one value per output column ({n}), "
                                 f"got {np.dtype(bias.dtype)} {bs}", ShapeError)
            self.bias = True if bias.value is None else owned(
                np.asarray(bias.value).reshape(-1), dt)
        return [TensorInfo(out, dt)]

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        a = inputs[0]
        b = self.b_packed if self.b_packed is not None else inputs[1]
        if self.flat:
            a = np.ascontiguousarray(a)
            rows = a.size // self.k
            if b.ndim == 2:
                matmul(a.reshape(rows, self.k), b, out=y.reshape(rows, b.shape[1]),
                       threads=self.op.num_threads)
            else:
                np.matmul(a.reshape(rows, self.k), b, out=y.reshape(rows))
        elif b.ndim >= 2:
            matmul(a, b, out=y, threads=self.op.num_threads)
        else:
            np.matmul(a, b, out=y)
        if self.bias is not None:
            bias = self.bias if self.bias is not True else owned(
                np.asarray(inputs[2]).reshape(-1), y.dtype)
            col_epilogue(y.reshape(-1, y.shape[-1]), bias, self.act.code, *self.params)
        elif self.act.active:
            y2 = y.reshape(-1, y.shape[-1]) if y.ndim >= 2 else y.reshape(1, -1)
            epilogue(y2, self.empty, self.act, self.params)


def register(reg: KernelRegistry) -> None:
    # float16 operands run through the float32 kernels (one rounding at the end): float16.py
    gemm, mat_mul = with_float16(GemmKernel), with_float16(MatMulKernel)
    reg.add("Gemm", gemm)
    reg.add("MatMul", mat_mul)
    reg.add("Gemm", gemm, domain="edgert")
    reg.add("MatMul", mat_mul, domain="edgert")
