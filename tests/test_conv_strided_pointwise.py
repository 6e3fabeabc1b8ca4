"""Strided 1x1 convs (ResNet's projection shortcuts) take the pointwise paths on a gathered copy
of every stride-th pixel; checked against onnxruntime.

Covered: 1-D, 2-D and 3-D, equal and unequal strides, sizes the stride does not divide, groups,
bias or none, fused activations, the residual ``Z`` of ``edgert.Conv``, batch 2, the small
pointwise kernel and the BLAS path at 1 and 2 threads, weights given only at run time, and a
second invoke with new data in the same arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node

from edgert.runtime.kernels.cpu import registry
from edgert.runtime.kernels.cpu.conv import ConvPath
from edgert.runtime.registry import OpContext, TensorInfo

CASES = [
    # (x shape, w shape, attrs)
    ((1, 32, 14, 14), (64, 32, 1, 1), {"strides": [2, 2]}),
    ((1, 64, 40, 40), (128, 64, 1, 1), {"strides": [2, 2]}),  # big enough to split
    ((2, 24, 15, 9), (40, 24, 1, 1), {"strides": [2, 3]}),  # strides that do not divide
    ((1, 16, 12, 12), (32, 4, 1, 1), {"strides": [2, 2], "group": 4}),
    ((1, 8, 25), (12, 8, 1), {"strides": [3]}),  # 1-D
    ((1, 6, 5, 6, 7), (10, 6, 1, 1, 1), {"strides": [2, 1, 2]}),  # 3-D
    ((1, 3, 4, 4), (4, 3, 1, 1), {"strides": [2, 2]}),  # a few MACs: the small kernel
]


def _conv(x, w, b, z, attrs, const=True, threads=1):
    domain = "edgert" if z is not None or "activation" in attrs else ""
    cls = registry().lookup("Conv", domain, 21)
    kern = cls(OpContext("Conv", "c", dict(attrs), domain, 21, threads))
    ins = [x, w] + ([b] if b is not None else []) + ([z] if z is not None else [])
    infos = [TensorInfo(a.shape, a.dtype, a if const and i in (1, 2) else None)
             for i, a in enumerate(ins)]
    (out,) = kern.prepare(infos)
    assert kern.path in (ConvPath.POINTWISE_SMALL, ConvPath.POINTWISE_BLAS,
                         ConvPath.POINTWISE_GEMM)
    assert kern.plan.stride is not None  # the pixels are gathered
    return kern, ins, out


def _want(x, w, b, z, attrs, act):
    plain = {k: v for k, v in attrs.items() if k not in ("activation", "activation_params")}
    y = ort_node("Conv", [x, w] + ([b] if b is not None else []), plain)[0]
    if z is not None:
        y = y + z
    if act == "Relu":
        y = np.maximum(y, 0)
    return y


@pytest.mark.parametrize("xs,ws,attrs", CASES)
@pytest.mark.parametrize("bias,act,residual", [(True, None, False), (False, "Relu", False),
                                               (True, "Relu", True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_strided_pointwise_matches_ort(xs, ws, attrs, bias, act, residual, threads):
    rng = np.random.default_rng(len(xs) * 100 + ws[0])
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    attrs = dict(attrs, **({"activation": act} if act else {}))
    want0 = _want(x, w, b, None, attrs, None)
    z = rng.standard_normal(want0.shape).astype(np.float32) if residual else None
    want = _want(x, w, b, z, attrs, act)
    kern, ins, out = _conv(x, w, b, z, attrs, threads=threads)
    y = np.full(out.shape, np.nan, np.float32)
    kern.invoke(ins, [y])
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)
    x[...] = rng.standard_normal(x.shape)  # same arrays, new values: gathered again
    y[...] = np.nan
    kern.invoke(ins, [y])
    np.testing.assert_allclose(y, _want(x, w, b, z, attrs, act), rtol=RTOL, atol=ATOL)


def test_strided_pointwise_runtime_weights():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((24, 16, 1, 1)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    attrs = {"strides": [2, 2]}
    kern, ins, out = _conv(x, w, b, None, attrs, const=False)
    y = np.empty(out.shape, np.float32)
    kern.invoke(ins, [y])
    np.testing.assert_allclose(y, _want(x, w, b, None, attrs, None), rtol=RTOL, atol=ATOL)
