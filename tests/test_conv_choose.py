"""The Conv path choice (``conv/choose.py``): which named path a layer takes, forcing one, the
tuning that moves the thresholds; and the op traits that other parts of edgert read from the
kernels. Numerics of each path are tested against onnxruntime in the test_conv_* files."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ATOL, RTOL, ort_node, run_kernel

from edgert.errors import KernelError
from edgert.runtime.kernels.cpu import registry
from edgert.runtime.kernels.cpu._native import openblas
from edgert.runtime.kernels.cpu.conv import (
    DEFAULT_TUNING,
    PLANS,
    ConvPath,
    ConvProblem,
    ConvTuning,
    choose,
)
from edgert.runtime.ops.fusion import ALL_OPCODES
from edgert.runtime.ops.window import Window

BLAS = openblas.routines() is not None


def _problem(x, w, strides=(1, 1), pads=(0, 0, 0, 0), group=1, w_const=True,
             dtype=np.float32, threads=1, identical=False, blas=True, out=None):
    n, c = x[0], x[1]
    m, k = w[0], w[2:]
    nsp = len(k)
    pb, pe = tuple(pads[:nsp]), tuple(pads[nsp:])
    if out is None:
        out = tuple((x[2 + i] + pb[i] + pe[i] - k[i]) // strides[i] + 1 for i in range(nsp))
    win = Window(tuple(k), tuple(strides), (1,) * nsp, pb, pe, tuple(x[2:]), out)
    return ConvProblem(n, c, m, group, win, np.dtype(dtype), w_const, identical, blas, threads)


@pytest.mark.parametrize("x,w,kw,want", [
    # pointwise family
    ((1, 64, 56, 56), (256, 64, 1, 1), {}, ConvPath.POINTWISE_BLAS),
    ((1, 8, 4, 4), (16, 8, 1, 1), {}, ConvPath.POINTWISE_SMALL),
    ((1, 64, 56, 56), (256, 64, 1, 1), {"identical": True}, ConvPath.POINTWISE_GEMM),
    ((1, 64, 56, 56), (256, 64, 1, 1), {"blas": False}, ConvPath.POINTWISE_GEMM),
    ((1, 256, 56, 56), (512, 256, 1, 1), {"strides": (2, 2)}, ConvPath.POINTWISE_BLAS),
    # depthwise family (MobileNet's shapes)
    ((1, 144, 56, 56), (144, 1, 3, 3), {"pads": (1, 1, 1, 1), "group": 144},
     ConvPath.DEPTHWISE_3X3),
    ((1, 960, 7, 7), (960, 1, 3, 3), {"pads": (1, 1, 1, 1), "group": 960},
     ConvPath.DEPTHWISE_HWC),
    ((1, 32, 64, 64), (32, 1, 5, 5), {"pads": (2, 2, 2, 2), "group": 32, "w_const": False},
     ConvPath.DEPTHWISE_PHASE),
    ((1, 32, 20, 20), (32, 1, 5, 5), {"pads": (2, 2, 2, 2), "group": 32, "w_const": False},
     ConvPath.DEPTHWISE_PADDED),
    ((1, 32, 20, 20, 20), (32, 1, 3, 3, 3), {"pads": (1, 1, 1, 1, 1, 1), "group": 32,
                                              "strides": (1, 1, 1)}, ConvPath.DEPTHWISE),
    # general family
    ((1, 3, 224, 224), (32, 3, 3, 3), {"pads": (1, 1, 1, 1), "strides": (2, 2)},
     ConvPath.STEM_3X3_S2),
    ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": (1, 1, 1, 1)}, ConvPath.DIRECT),
    ((1, 3, 224, 224), (64, 3, 7, 7), {"pads": (3, 3, 3, 3), "strides": (2, 2)},
     ConvPath.DIRECT),
    ((1, 16, 32, 48), (8, 16, 3, 3), {"pads": (1, 1, 1, 1)}, ConvPath.IMPLICIT_GEMM),
    ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": (1, 1, 1, 1), "dtype": np.float64},
     ConvPath.IM2COL_BLAS_ROWS),
    ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": (1, 1, 1, 1), "w_const": False, "blas": False},
     ConvPath.IM2COL_GEMM),
    ((1, 16, 8, 8), (32, 4, 3, 3), {"pads": (1, 1, 1, 1), "group": 4}, ConvPath.IM2COL_GEMM),
])
def test_choose_names_the_path_of_each_layer_class(x, w, kw, want):
    assert choose(_problem(x, w, **kw)) is want


def test_tuning_moves_the_thresholds():
    dw = _problem((1, 32, 14, 14), (32, 1, 3, 3), pads=(1, 1, 1, 1), group=32)
    assert choose(dw) is ConvPath.DEPTHWISE_3X3
    assert choose(dw, ConvTuning(dw3_min_plane=(1 << 40, 1 << 40))) is ConvPath.DEPTHWISE_HWC
    conv3 = _problem((1, 64, 56, 56), (64, 64, 3, 3), pads=(1, 1, 1, 1))
    assert choose(conv3, ConvTuning(dconv_min_c=1 << 30)) in (ConvPath.IM2COL_BLAS_ROWS,
                                                              ConvPath.IM2COL_GEMM)
    small = _problem((1, 8, 4, 4), (16, 8, 1, 1))
    assert choose(small, ConvTuning(pointwise_small_macs=0)) is ConvPath.POINTWISE_BLAS


def test_a_forced_path_must_apply():
    conv3 = _problem((1, 64, 56, 56), (64, 64, 3, 3), pads=(1, 1, 1, 1))
    assert choose(conv3, DEFAULT_TUNING, ConvPath.IM2COL_GEMM) is ConvPath.IM2COL_GEMM
    assert choose(conv3, DEFAULT_TUNING, ConvPath.IMPLICIT_GEMM) is ConvPath.IMPLICIT_GEMM
    why = choose(conv3, DEFAULT_TUNING, ConvPath.DEPTHWISE_3X3)
    assert isinstance(why, str) and "one input channel per group" in why
    why = choose(_problem((1, 64, 8, 8), (64, 64, 3, 3), w_const=False), DEFAULT_TUNING,
                 ConvPath.DIRECT)
    assert "constant weights" in why


def test_every_path_has_a_plan():
    assert set(PLANS) == set(ConvPath)
    assert all(PLANS[p].path is p for p in ConvPath)


def test_forcing_through_the_op_context_runs_that_path_or_raises():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 12, 32)).astype(np.float32)
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    want = ort_node("Conv", [x, w], {"pads": [1, 1, 1, 1]})[0]
    for path in (ConvPath.DIRECT, ConvPath.IMPLICIT_GEMM, ConvPath.IM2COL_GEMM) + (
            (ConvPath.IM2COL_BLAS_ROWS,) if BLAS else ()):
        got = run_kernel("Conv", [x, w], {"pads": [1, 1, 1, 1]}, const_inputs=(1,),
                         path=path)[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=path.name)
    with pytest.raises(KernelError, match="DEPTHWISE_HWC needs one input channel per group"):
        run_kernel("Conv", [x, w], {"pads": [1, 1, 1, 1]}, const_inputs=(1,),
                   path=ConvPath.DEPTHWISE_HWC)


# ----- op traits ----------------------------------------------------------------------------------
def test_op_traits_are_declared_on_the_kernels():
    reg = registry()
    assert reg.traits("Reshape").moves_bits and reg.traits("Reshape").int8 == "move"
    assert not reg.traits("Add").moves_bits and reg.traits("Add").int8 == "binary"
    assert reg.traits("SequenceConstruct").makes_sequence
    assert reg.traits("SequenceAt").takes_sequences and not reg.traits("SequenceAt").makes_sequence
    assert reg.traits("Cast").tags_narrow_types and reg.traits("Cast").moves_bits
    assert reg.traits("DequantizeLinear").type_attr == "edgert_from_type"
    assert reg.traits("Conv").int8 == reg.traits("Conv", "edgert").int8 == "linear"
    assert reg.traits("NoSuchOp").int8 is None  # defaults for an unknown op
    # every fusion opcode a kernel declares is one FusedElementwise runs, and each is declared
    # by exactly one op
    codes = [reg.traits(op).fusion for op in reg.op_types() if "." not in op]
    codes = [c for c in codes if c is not None]
    assert set(codes) == set(ALL_OPCODES) and len(codes) == len(set(codes))
