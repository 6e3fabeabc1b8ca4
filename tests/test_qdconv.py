"""The int8 direct convolution of ``qdconv.py``, bit-exact against the int64 NumPy reference.

Covers an odd channel count (the last pair half empty), output channels that do not fill a
16-channel block, positions that do not fill a tile, strides, padding or none, batches, the
int8 clamp, the largest products, one and two threads, and the bounds check.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_kernel
from test_kernels_quantized import golden_conv

from edgert.runtime.kernels.cpu import dconv, qdconv, quantized
from edgert.runtime.ops.window import Geo

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,cin,cout,hw,k,stride,pad", [
    (1, 7, 20, 9, 3, 1, 1),
    (2, 8, 33, 11, 3, 2, 1),
    (1, 16, 16, 6, 3, 1, 0),
    (1, 5, 24, 13, 5, 2, 2),
    (1, 6, 17, 7, 1, 2, 0),  # strided 1x1
])
def test_qdconv_bit_exact(n, cin, cout, hw, k, stride, pad, threads, monkeypatch):
    monkeypatch.setattr(quantized, "SPLIT_MIN_MACS_INT8", 1)
    monkeypatch.setattr(dconv, "BLOCK_BYTES", 256)  # several position blocks
    x = RNG.integers(-128, 128, size=(n, cin, hw, hw)).astype(np.int8)
    w = RNG.integers(-128, 128, size=(cout, cin, k, k)).astype(np.int8)
    b = RNG.integers(-5000, 5000, size=cout).astype(np.int32)
    ws = RNG.uniform(0.001, 0.02, cout).astype(np.float32)
    attrs = dict(strides=[stride] * 2, pads=[pad] * 4, x_scale=0.05, x_zero_point=-3,
                 w_scale=[float(s) for s in ws], y_scale=0.11, y_zero_point=7, act_min=-100,
                 act_max=120)
    got = run_kernel("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert",
                     num_threads=threads)[0]
    want = golden_conv(x, w, b, np.float32(0.05), -3, ws, float(np.float32(0.11)), 7, stride,
                       pad, 1, -100, 120)
    np.testing.assert_array_equal(got, want)


def test_qdconv_selected_and_worst_case_exact():
    """|x - zp| = 255 and |w| = 128 over a 1,152-long reduction stay exact in int32."""
    cin = 128
    x = np.where(RNG.random((1, cin, 6, 6)) < 0.9, -128, 127).astype(np.int8)
    w = np.where(RNG.random((16, cin, 3, 3)) < 0.8, -128, 127).astype(np.int8)
    b = RNG.integers(-2000, 2000, size=16).astype(np.int32)
    ws = np.full(16, 1e-6, np.float32)
    attrs = dict(pads=[1] * 4, x_scale=1.0, x_zero_point=127, w_scale=[float(v) for v in ws],
                 y_scale=1.0, y_zero_point=0)
    from edgert.runtime.kernels.cpu import registry
    from edgert.runtime.registry import OpContext, TensorInfo

    kern = registry().lookup("QConv", "edgert", 21)(OpContext("QConv", "q", attrs, "edgert", 21, 1))
    kern.prepare([TensorInfo(x.shape, x.dtype), TensorInfo(w.shape, w.dtype, w),
                  TensorInfo(b.shape, b.dtype, b)])
    assert kern.qd is not None
    got = run_kernel("QConv", [x, w, b], attrs, const_inputs=(1, 2), domain="edgert")[0]
    want = golden_conv(x, w, b, np.float32(1.0), 127, ws, 1.0, 0, 1, 1, 1)
    np.testing.assert_array_equal(got, want)


def test_qdconv_rejects_a_geometry_that_does_not_fit():
    geo = Geo(1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 8, 8, 1, 8, 8, 0, 1, 1)
    g = qdconv.Geometry(geo, 4)
    wp = qdconv.pack_weights(np.ones((16, 4, 3, 3), np.int8))
    y = np.empty((16, 64), np.int8)
    one = np.ones(16, np.int64)
    with pytest.raises(ValueError, match="does not fit"):
        qdconv.qdconv_serial(wp, np.zeros(g.size - 1, np.int16), g.offs, g.cp_n, g.cstride,
                             g.wp, g.sh, g.sw, g.oh, g.ow, g.block_tiles, 4, one, one, one,
                             0, -128, 127, y, 1)
    with pytest.raises(ValueError, match="does not fit"):
        qdconv.pack_pairs_serial(np.zeros((4, 8, 8), np.int8), 0,
                                 np.zeros((1, 10, 10, 2), np.int16), 1, 1)
