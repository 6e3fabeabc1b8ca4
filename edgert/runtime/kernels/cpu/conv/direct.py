"""Group-1 float32 convolutions without a column matrix, for constant weights:

* ``DIRECT`` — :mod:`edgert.runtime.kernels.cpu.dconv`: 16 output channels in the vector lanes
  by 6 positions per tile, read straight from a padded copy of the input (2-D; adds the
  residual in its epilogue);
* ``IMPLICIT_GEMM`` — :mod:`edgert.runtime.kernels.cpu.fgemm`: the input copied once into the
  implicit-GEMM layout, FMA micro-tiles over 16 positions of an output row (any rank; few output
  channels or few positions).
"""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import dconv, fgemm
from edgert.runtime.kernels.cpu.conv.choose import ConvPath
from edgert.runtime.kernels.cpu.conv.plan import ConvPlan


class DirectPlan(ConvPlan):
    path = ConvPath.DIRECT
    adds_residual = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        self.g = dconv.Geometry(p.win.geo(), p.c_in)
        self.scratch_shape = (self.g.pad_elems,)
        self.scratch_nbytes = self.g.pad_elems * 4
        macs = p.m_out * p.c_in * p.k_size * p.p_out
        parts = p.threads if macs >= self.t.split_min_macs else 1
        self.parts = parts
        self.fn = dconv.dconv if parts > 1 else dconv.dconv_serial
        self.pad = dconv.pad_input if parts > 1 else dconv.pad_input_serial

    def pack(self, w, const):
        return dconv.pack_weights(np.asarray(w, np.float32))

    def run(self, x, w, bias, y, z, scratch):
        p, g = self.p, self.g
        z3 = self.residual(z, (p.n, p.m_out, p.p_out))
        for n in range(p.n):
            src = x[n].reshape(-1)
            if g.padded:
                self.pad(x[n].reshape(p.c_in, p.in3[1], p.in3[2]),
                         scratch.reshape(p.c_in, g.hp, g.wp), g.pt, g.pl)
                src = scratch
            self.fn(w, src, g.offs, p.c_in, g.plane, g.wp, g.sh, g.sw, g.oh, g.ow,
                    g.block_tiles, dconv.SUB, bias, self.code, self.p0, self.p1,
                    y[n].reshape(p.m_out, p.p_out), z3[n] if z is not None else self.no_sum[2],
                    self.parts)
        return None


class ImplicitGemmPlan(ConvPlan):
    path = ConvPath.IMPLICIT_GEMM

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.p
        self.fplan = fgemm.plan(p.win.geo(), p.c_in)
        # a large padded input lives in the shared scratch (zeroed per invoke)
        self.scratch_shape = (self.fplan.size,)
        self.scratch_nbytes = self.fplan.size * 4 if self.fplan.shared else 0

    def pack(self, w, const):
        return fgemm.pack_conv_weights(np.asarray(w, np.float32))

    def run(self, x, w, bias, y, z, scratch):
        p, plan = self.p, self.fplan
        buf = plan.buffer(None if scratch is None else scratch.view(np.uint8))
        x5 = x.reshape((p.n, p.c_in) + p.in3)
        for n in range(p.n):
            fgemm.pack_input(x5[n], plan.pads, plan.strides, plan.dims, plan.cstride, buf)
            fgemm.fconv(w, plan, p.m_out, bias, self.code, self.p0, self.p1,
                        y[n].reshape(p.m_out, p.p_out), buf)
        return None
