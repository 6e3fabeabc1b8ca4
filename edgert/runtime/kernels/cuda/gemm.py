"""CUDA kernels: Gemm and MatMul as one shared-memory tiled GEMM with a fused epilogue.

``Y[b] = act(alpha * A[b] @ B[b] + C)``: each 16x16 thread block computes a 16x16 tile of ``Y``,
walking K in steps of 16. Every step loads one tile of A and one of B into shared memory (each
thread one element of each, so global reads are coalesced along the tile row) and accumulates
16 products per thread from shared memory. A and B are addressed through element strides, so
transposed operands (Gemm ``transA``/``transB``) and a batch broadcast (stride 0) need no copy.

The bias ``C`` (already multiplied by beta in the CPU ``prepare``) and the fused activation are
applied while the result is in a register. Device coverage: float32 with a constant or absent C
and batch dims that broadcast as a whole; anything else runs through the CPU kernel.
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import gemm as cpu
from edgert.runtime.kernels.cuda._common import CudaKernel, cuda
from edgert.runtime.kernels.cuda.epilogue import activate
from edgert.runtime.registry import KernelRegistry

TILE = 16
F32 = np.dtype(np.float32)

# How C broadcasts over (M, N); the values of cpu/gemm.py's modes are private, these are ours.
C_NONE, C_COL, C_ROW, C_FULL = 0, 1, 2, 3


@cuda.jit
def _gemm_tiled(a, b, c, y, m, n, k, a_off, a_bs, a_si, a_sk, b_bs, b_sk, b_sj, c_mode, alpha,
                code, p0, p1):
    """One 16x16 output tile per block; ``blockIdx.z`` is the batch index."""
    sa = cuda.shared.array((TILE, TILE), np.float32)
    sb = cuda.shared.array((TILE, TILE), np.float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    bz = cuda.blockIdx.z
    abase = a_off + bz * a_bs
    bbase = bz * b_bs
    acc = np.float32(0.0)
    for t0 in range(0, k, TILE):
        ka = t0 + tx
        if row < m and ka < k:
            sa[ty, tx] = a[abase + row * a_si + ka * a_sk]
        else:
            sa[ty, tx] = np.float32(0.0)
        kb = t0 + ty
        if kb < k and col < n:
            sb[ty, tx] = b[bbase + kb * b_sk + col * b_sj]
        else:
            sb[ty, tx] = np.float32(0.0)
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()
    if row < m and col < n:
        v = acc * alpha
        if c_mode == C_COL:
            v += c[col]
        elif c_mode == C_ROW:
            v += c[row]
        elif c_mode == C_FULL:
            v += c[row * n + col]
        y[(bz * m + row) * n + col] = activate(v, code, p0, p1)


def launch_gemm(stream, a, b, c, y, m, n, k, batch, a_strides, b_strides, c_mode, alpha, act,
                params, a_off=0) -> None:
    """Launch :func:`_gemm_tiled`; strides are ``(batch, row, col)`` in elements."""
    grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE, batch)
    _gemm_tiled[grid, (TILE, TILE), stream](
        a.reshape(-1), b.reshape(-1), c.reshape(-1), y.reshape(-1), m, n, k, a_off, *a_strides,
        *b_strides, c_mode, np.float32(alpha), act.code, np.float32(params[0]),
        np.float32(params[1]),
    )


class CudaGemm(CudaKernel):
    """ONNX Gemm on the device (see the module docstring for what falls back)."""

    CPU = cpu.GemmKernel

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        m, n = outs[0].shape
        a_rows, a_cols = inputs[0].shape
        k = a_rows if self.trans_a else a_cols
        self._mnk = (m, n, k)
        # A (M, K) read through strides; stored (K, M) when transA.
        self._a_strides = (0, 1, a_cols) if self.trans_a else (0, a_cols, 1)
        mode = C_NONE
        if self.c_mode != cpu._C_NONE:
            mode = {cpu._C_COL: C_COL, cpu._C_ROW: C_ROW, cpu._C_FULL: C_FULL}[self.c_mode]
        self._c_mode = mode
        self.on_device = np.dtype(outs[0].dtype) == F32 and (
            mode == C_NONE or self.c_packed is not None
        )
        self._d_b = None
        if self.on_device:
            self._d_b = self.upload(self.b_packed, "B")  # (K, N), alpha folded in when constant
            self._d_c = self.upload(self.c_packed if mode != C_NONE else np.zeros(1, F32), "C")
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        m, n, k = self._mnk
        if y.size == 0:
            return
        if self._d_b is not None:
            b, b_strides = self._d_b, (0, n, 1)
            alpha = 1.0 if self.alpha_folded else self.alpha
        else:
            b = inputs[1]
            b_strides = (0, 1, k) if self.trans_b else (0, n, 1)
            alpha = self.alpha
        launch_gemm(self.stream, inputs[0], b, self._d_c, y, m, n, k, 1, self._a_strides,
                    b_strides, self._c_mode, alpha, self.act, self.params)


class CudaMatMul(CudaKernel):
    """ONNX MatMul on the device: batch dims broadcast as a whole (one side 1, or equal)."""

    CPU = cpu.MatMulKernel

    def prepare(self, inputs):
        outs = super().prepare(inputs)
        sa, sb = tuple(inputs[0].shape), tuple(inputs[1].shape)
        pa = (1,) + sa if len(sa) == 1 else sa
        pb = sb + (1,) if len(sb) == 1 else sb
        m, k, n = pa[-2], pa[-1], pb[-1]
        ba = int(np.prod(pa[:-2], dtype=np.int64))
        bb = int(np.prod(pb[:-2], dtype=np.int64))
        batch = max(ba, bb)
        ok = np.dtype(outs[0].dtype) == F32
        if self.flat:  # A's batch folds into its rows: one GEMM
            m, batch, ba, bb = ba * m, 1, 1, 1
        elif ba not in (1, batch) or bb not in (1, batch) or (
            ba == bb and pa[:-2] != pb[:-2]
        ) or (ba > 1 and bb > 1 and len(pa) != len(pb)):
            ok = False  # a true multi-axis broadcast: the CPU kernel handles it
        bias = self.bias  # edgert.MatMul's per-column bias: a constant one goes in as C
        if bias is True:
            ok = False
        self.on_device = ok
        self._geom = (m, n, k, batch)
        self._a_strides = (m * k if ba > 1 else 0, k, 1)
        self._b_strides = (k * n if bb > 1 else 0, n, 1)
        self._d_b = self.upload(self.b_packed, "B") if ok else None
        self._c_mode = C_NONE if bias is None else C_COL
        self._d_c = (self.upload(np.zeros(1, F32) if bias is None else bias, "C")
                     if ok else None)
        return outs

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        m, n, k, batch = self._geom
        b = self._d_b if self._d_b is not None else inputs[1]
        launch_gemm(self.stream, inputs[0], b, self._d_c, y, m, n, k, batch, self._a_strides,
                    self._b_strides, self._c_mode, 1.0, self.act, self.params)


def register(reg: KernelRegistry) -> None:
    reg.add("Gemm", CudaGemm)
    reg.add("MatMul", CudaMatMul)
    reg.add("Gemm", CudaGemm, domain="edgert")
    reg.add("MatMul", CudaMatMul, domain="edgert")
