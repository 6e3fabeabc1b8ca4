"""ConvTranspose (1-D, 2-D and 3-D, float32/float64), the adjoint of Conv:
``col (M·K, P_in) = Wᵀ @ X[n]`` by BLAS, then a Numba col2im scatter-adds the columns into the
output, parallel over output channels (disjoint writes), with the bias and a fused activation.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import ShapeError
from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu._native.arrays import owned
from edgert.runtime.kernels.cpu._native.geometry import valid_range
from edgert.runtime.kernels.cpu.blas import matmul
from edgert.runtime.kernels.cpu.epilogue import act_row, parse_activation
from edgert.runtime.ops.window import (
    Window,
    as3d,
    auto_pad_attr,
    float_dtype,
    int_list_attr,
    kernel_shape_attr,
    packed,
)
from edgert.runtime.registry import Kernel, OpTraits, TensorInfo


@njit(parallel=True)
def _col2im(col, y, bias, geo_a, act, p0, p1):
    """Scatter-add columns into one image: ``y[m, o] += col[(m, k), i]`` with ``o = i*s - p + k*d``.

    ``col``: ``(M * KD * KH * KW, ID * IH * IW)``; ``y``: ``(M, OD, OH, OW)``. Parallel over
    output channels, so no two threads touch the same element. Bias and activation follow.
    """
    geo = geo_a[0]  # the window (edgert.runtime.ops.window.Geo fields)
    kd_n, kh_n, kw_n = geo.kd, geo.kh, geo.kw
    sd, sh, sw = geo.sd, geo.sh, geo.sw
    dd, dh, dw = geo.dd, geo.dh, geo.dw
    pd, ph, pw = geo.pd, geo.ph, geo.pw
    id_n, ih_n, iw_n = geo.d, geo.h, geo.w
    m_n, od_n, oh_n, ow_n = y.shape
    k_n = kd_n * kh_n * kw_n
    nb = bias.shape[0]
    zero = y.dtype.type(0.0)
    for m in prange(m_n):
        ym = y[m]
        for oz in range(od_n):
            for oy in range(oh_n):
                ym[oz, oy, :] = zero
        for kd in range(kd_n):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    src = col[m * k_n + (kd * kh_n + kh) * kw_n + kw]
                    # Input positions ix whose output ix * sw + off lands inside the row.
                    off = kw * dw - pw
                    lo, hi = valid_range(iw_n, ow_n, sw, off)
                    if hi == lo:
                        continue
                    for iz in range(id_n):
                        oz = iz * sd - pd + kd * dd
                        if oz < 0 or oz >= od_n:
                            continue
                        for iy in range(ih_n):
                            oy = iy * sh - ph + kh * dh
                            if oy < 0 or oy >= oh_n:
                                continue
                            base = (iz * ih_n + iy) * iw_n
                            cseg = src[base + lo : base + hi]
                            if sw == 1:
                                yseg = ym[oz, oy, lo + off : hi + off]
                                for i in range(hi - lo):
                                    yseg[i] += cseg[i]
                            else:
                                yseg = ym[oz, oy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                                for i in range(hi - lo):
                                    yseg[i] += cseg[i]
        b = bias[m] if nb > 0 else zero
        for oz in range(od_n):
            for oy in range(oh_n):
                act_row(ym[oz, oy], b, act, p0, p1)


class ConvTransposeKernel(Kernel):
    """ONNX ConvTranspose (and ``edgert.ConvTranspose``). Inputs: X, W ``(C, M/G, k...)``, B."""

    traits = OpTraits(int8="linear")

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 2, 3)
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        dt = float_dtype(self, [(x, "X"), (w, "W"), (b, "B")])
        rank = len(x.shape)
        if not 3 <= rank <= 5:
            raise self.error(
                f"input X must have rank 3, 4 or 5 (N, C, spatial...), got shape {x.shape}",
                ShapeError,
            )
        if len(w.shape) != rank:
            raise self.error(
                f"weight W has shape {w.shape} (rank {len(w.shape)}) but X has rank {rank}",
                ShapeError,
            )
        nsp = rank - 2
        group = int(self.attr("group", 1))
        if group < 1:
            raise self.error(f"attribute 'group' = {group} must be >= 1")
        n_img, c_in = x.shape[0], x.shape[1]
        if w.shape[0] != c_in:
            raise self.error(
                f"input X has {c_in} channels but W of shape {w.shape} expects {w.shape[0]}",
                ShapeError,
            )
        if c_in % group != 0:
            raise self.error(
                f"input X has {c_in} channels, which group={group} does not divide", ShapeError
            )
        m_per_group = w.shape[1]
        m_out = m_per_group * group
        if b is not None and tuple(b.shape) != (m_out,):
            raise self.error(f"bias B has shape {b.shape}, expected ({m_out},)", ShapeError)
        ksp = tuple(w.shape[2:])
        kernel_shape_attr(self, ksp)
        if any(k <= 0 for k in ksp):
            raise self.error(f"weight W has an empty spatial shape {w.shape}", ShapeError)
        in_sp = tuple(x.shape[2:])
        strides = int_list_attr(self, "strides", nsp, 1, 1)
        dilations = int_list_attr(self, "dilations", nsp, 1, 1)
        pads = int_list_attr(self, "pads", 2 * nsp, 0, 0)
        out_pad = int_list_attr(self, "output_padding", nsp, 0, 0)
        mode = auto_pad_attr(self)
        out_shape_attr = self.attr("output_shape")
        target = None
        if out_shape_attr is not None and len(out_shape_attr) > 0:
            target = [int(v) for v in out_shape_attr]
            if len(target) == nsp + 2:
                target = target[2:]
            if len(target) != nsp or any(t <= 0 for t in target):
                raise self.error(
                    f"attribute output_shape {list(out_shape_attr)} must hold {nsp} positive "
                    "spatial sizes"
                )
        pb, pe, out = [], [], []
        for i in range(nsp):
            s, d, k, n = strides[i], dilations[i], ksp[i], in_sp[i]
            if out_pad[i] >= max(s, d):
                raise self.error(
                    f"output_padding {out_pad} must be smaller than the stride or dilation on "
                    f"axis {i} (stride {s}, dilation {d})"
                )
            full = s * (n - 1) + out_pad[i] + (k - 1) * d + 1
            if target is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
                o = target[i] if target is not None else n * s
                # A target larger than the full output leaves the extra elements at the bias.
                total = max(0, full - o)
                head = total // 2 if mode == "SAME_UPPER" else total - total // 2
                pb.append(head)
                pe.append(total - head)
            elif mode == "VALID":
                o = full
                pb.append(0)
                pe.append(0)
            else:
                o = full - pads[i] - pads[i + nsp]
                pb.append(pads[i])
                pe.append(pads[i + nsp])
            if o <= 0:
                raise self.error(
                    f"spatial axis {i}: pads {pads} leave an empty output (full size {full})",
                    ShapeError,
                )
            out.append(o)
        win = Window(ksp, tuple(strides), tuple(dilations), tuple(pb), tuple(pe), in_sp, tuple(out))
        self.act = parse_activation(self.where(), self.attrs)
        self.params = self.act.params(dt)
        self.group = group
        self.geo = win.geo()
        self.geo_a = packed(self.geo)
        self.out3 = as3d(win.out_shape)
        k_size = int(np.prod(ksp))
        p_in = int(np.prod(in_sp))
        self.p_in = p_in
        self.mk = m_per_group * k_size  # GEMM rows per group
        # Wᵀ per group: (G, M/G * K, C/G), so that col = Wᵀ @ X[n] is one batched BLAS call.
        # A constant W is packed contiguous once; a computed one is passed as the transposed view
        # (NumPy hands BLAS the transpose flag, measured as fast as a contiguous operand).
        self.w_packed = None
        if w.value is not None:
            self.w_packed = np.array(self._wt_view(np.asarray(w.value, dtype=dt)), order="C")
        self.b_packed = np.zeros(0, dt)
        if b is not None and b.value is not None:
            self.b_packed = owned(b.value, dt)
        self.has_bias_input = b is not None
        self.col = np.empty((m_out * k_size, p_in), dt)
        return [TensorInfo((n_img, m_out) + tuple(out), dt)]

    def _wt_view(self, w: np.ndarray) -> np.ndarray:
        g = self.group
        return w.reshape(g, w.shape[0] // g, self.mk).transpose(0, 2, 1)

    def invoke(self, inputs, outputs):
        y = outputs[0]
        if y.size == 0:
            return
        x = np.ascontiguousarray(inputs[0])
        w = self.w_packed
        if w is None:
            w = self._wt_view(np.ascontiguousarray(inputs[1]))
        bias = self.b_packed
        if self.has_bias_input and bias.shape[0] == 0:
            bias = np.ascontiguousarray(inputs[2])
        n_img, c_in = x.shape[0], x.shape[1]
        m_out = y.shape[1]
        g = self.group
        col = self.col
        col_g = col.reshape(g, self.mk, self.p_in)
        y5 = y.reshape((n_img, m_out) + self.out3)
        code = self.act.code
        p0, p1 = self.params
        for n in range(n_img):
            matmul(w, x[n].reshape(g, c_in // g, self.p_in), out=col_g,
                   threads=self.op.num_threads)
            _col2im(col, y5[n], bias, self.geo_a, code, p0, p1)
