"""Vectorizable float32 transcendental functions for the CPU kernels' row loops.

``math.exp`` and friends in a Numba loop are a libm call per element, which LLVM cannot
vectorize (no SVML here): Sigmoid/SiLU chains ran as scalar code (40 % of a YOLOv8n's time),
erf-GELU 21 % of a MiniLM's. These are arithmetic, selects and bit moves only, so the
loops vectorize; each is within a few ulp of float64 NumPy / ``math`` (tested), keeps NaN, and
takes +-inf and over/underflow as the spec does. float64 data keeps the libm calls.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from edgert.runtime._jit import FASTMATH, njit

# math.exp in a Numba loop is a libm call per element, which LLVM cannot vectorize (no SVML
# here): Sigmoid/SiLU chains ran as scalar code (40 % of a YOLOv8n's time). exp(x) = 2^n * e^r
# with n = round(x / ln 2) and |r| <= ln2 / 2 (Cody-Waite: ln 2 split in two so n * ln2_hi is
# exact), e^r from its degree-7 Taylor polynomial (truncation below 2e-9 relative, under the
# float32 rounding of the result), 2^n from exponent bits: every step is arithmetic the loop
# vectorizes. Saturation: x > 88.72 gives inf, x < -103.97 gives 0, NaN stays NaN.
_LN2_HI = 0.693145751953125  # 12 significant bits: n * _LN2_HI is exact for |n| <= 2^11
_LN2_LO = 1.428606820309417e-06
_LOG2E = 1.4426950408889634
@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (a register move, vectorizable)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_EXP_HI, _EXP_LO = 88.72283935546875, -103.97207708


# No reassociation here: with it LLVM turned (p * 2^k1) * 2^k2 into p * 2^(k1 + k2), which is
# inf for k = 128 (x in [88.38, 88.72]).
@njit(fastmath=FASTMATH - {"reassoc"})
def _exp_poly(x):
    """exp(x) of a float32 ``x`` clamped to [_EXP_LO, _EXP_HI] (float32 throughout: a float64
    step in the chain would halve the vector width)."""
    one = np.float32(1.0)
    n = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = (x - n * np.float32(_LN2_HI)) - n * np.float32(_LN2_LO)
    p = one + r * (one + r * (np.float32(0.5) + r * (np.float32(1 / 6) + r * (
        np.float32(1 / 24) + r * (np.float32(1 / 120) + r * (
            np.float32(1 / 720) + r * np.float32(1 / 5040)))))))
    # 2^n as two powers of two built from their exponent bits (n in [-150, 128] splits into
    # halves in [-75, 64], both normal floats): p * 2^n1 is exact, the second product rounds
    # once, also into the subnormals; n = -150 (x at the clamp) gives 0. (A NaN's n converts
    # to anything: clamped first.)
    k = min(max(np.int32(n), np.int32(-150)), np.int32(128))
    k1 = k >> np.int32(1)
    s1 = _f32_from_bits(np.int32((k1 + np.int32(127)) << np.int32(23)))
    s2 = _f32_from_bits(np.int32((k - k1 + np.int32(127)) << np.int32(23)))
    y = (p * s1) * s2
    return y if k > np.int32(-150) else np.float32(0.0)


@njit
def exp_row(d, s, m):
    """``d[j] = exp(s[j])`` for float32 rows, vectorized (see above)."""
    for j in range(m):
        x = s[j]
        xc = x if x == x else np.float32(0.0)  # NaN: computed as 0, replaced below
        y = _exp_poly(min(max(xc, np.float32(_EXP_LO)), np.float32(_EXP_HI)))
        y = np.float32(np.inf) if x > np.float32(_EXP_HI) else y
        d[j] = x if x != x else y


@njit(error_model="numpy")  # 1 + e >= 1: no zero divisor; without the test the loop vectorizes
def sigmoid_row(d, s, m):
    """``d[j] = 1 / (1 + exp(-s[j]))`` for float32 rows, from e = exp(-|x|) <= 1 (no overflow):
    ``1 / (1 + e)`` for x >= 0, ``e / (1 + e)`` below; NaN stays NaN."""
    one = np.float32(1.0)
    for j in range(m):
        v = s[j]
        a = -abs(v) if v == v else np.float32(0.0)  # NaN: computed as 0, replaced below
        e = _exp_poly(max(a, np.float32(_EXP_LO)))
        q = one / (one + e)
        y = q if v >= np.float32(0.0) else e * q
        d[j] = v if v != v else y


@njit(error_model="numpy")  # 1 + e >= 1: no zero divisor (see sigmoid_row)
def tanh_row(d, s, m):
    """``d[j] = tanh(s[j])`` for float32 rows, vectorized: the odd Taylor polynomial to x^9
    for |x| < 0.25 (truncation below 1e-10 relative), else ``sign(x) * (1 - e) / (1 + e)``
    with e = exp(-2|x|) <= 0.61 (no cancellation there); NaN stays NaN, +-inf give +-1."""
    one = np.float32(1.0)
    for j in range(m):
        v = s[j]
        a = abs(v) if v == v else np.float32(0.0)  # NaN: computed as 0, replaced below
        e = _exp_poly(max(np.float32(-2.0) * a, np.float32(_EXP_LO)))
        big = (one - e) / (one + e)
        x2 = v * v
        small = v * (one + x2 * (np.float32(-1 / 3) + x2 * (np.float32(2 / 15) + x2 * (
            np.float32(-17 / 315) + x2 * np.float32(62 / 2835)))))
        y = small if a < np.float32(0.25) else (big if v >= np.float32(0.0) else -big)
        d[j] = v if v != v else y


# erf for float32 rows: least-squares polynomial fits made for edgert (numpy.polyfit against
# math.erf on Chebyshev nodes): erf(x) = x * P(x^2) for |x| < 1 (fit error 1.4e-9 relative);
# erf(x) = 1 - exp(-x^2) * Q(1/x) for 1 <= |x| < 4 (Q fits erfc(x) exp(x^2), error 6e-9
# absolute, a tenth of float32's step at 1); 1 beyond (erfc(4) = 1.5e-8 is below it).
_ERF_P = (1.12837916588333, -0.3761262690789202, 0.1128359749155175, -0.026854329537852696,
          0.005189312811666684, -0.0008018859005975861, 7.882500416351154e-05)
_ERF_Q = (0.0002749496239184968, 0.558959680432355, 0.042608775062407955, -0.4739546270996394,
          0.5022039332393949, -0.24921603914427914, 0.029919120529289092, 0.0256570699068052,
          -0.00886930355737489)
_ERF_P32 = tuple(np.float32(c) for c in _ERF_P)
_ERF_Q32 = tuple(np.float32(c) for c in _ERF_Q)


@njit
def erf_row(d, s, m):
    """``d[j] = erf(s[j])`` for float32 rows, vectorized (within a few ulp, see above);
    +-inf give +-1, NaN stays NaN."""
    one = np.float32(1.0)
    p0, p1, p2, p3, p4, p5, p6 = _ERF_P32
    q0, q1, q2, q3, q4, q5, q6, q7, q8 = _ERF_Q32
    for j in range(m):
        v = s[j]
        a = min(abs(v), np.float32(4.0)) if v == v else np.float32(0.0)
        u = a * a
        small = a * (p0 + u * (p1 + u * (p2 + u * (p3 + u * (p4 + u * (p5 + u * p6))))))
        t = one / max(a, one)
        q = q0 + t * (q1 + t * (q2 + t * (q3 + t * (q4 + t * (q5 + t * (q6 + t * (
            q7 + t * q8)))))))
        large = one - _exp_poly(-u) * q
        y = small if a < one else (one if a >= np.float32(4.0) else large)
        d[j] = v if v != v else np.copysign(y, v)  # odd: -0 stays -0
