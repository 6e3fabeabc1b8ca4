"""Codecs of the narrow types edgert holds in wider NumPy integers (see :mod:`edgert.dtypes`).

* bfloat16 and the float8 types: raw bits in uint16 / uint8 arrays;
* float4e2m1: its 4-bit code (0..15, sign in bit 3) in a uint8;
* float8e8m0: a biased power-of-two exponent in a uint8 (value ``2**(code - 127)``, 255 is NaN);
* int4 / uint4 / int2 / uint2: the value itself, unpacked, in an int8 / uint8 (decode is the
  identity; encode wraps integers and saturates floats, see :func:`_encode_int`).

Decoding a float8 code is a lookup in its 256-entry table. Encoding rounds to the nearest
representable value, ties to the even code (round-half-to-even, as ONNX Cast specifies): the
finite positive values of a format are increasing in their codes, so ``searchsorted`` finds the
two neighbours of ``|x|`` and the nearer one wins. Beyond the largest finite value, ``saturate``
clamps to it; otherwise the result is infinity (E5M2) or NaN (the formats without infinities).
The FNUZ formats have no negative zero: -0 encodes as +0.
"""

from __future__ import annotations

import functools

import numpy as np

from edgert import dtypes

# code -> (exponent bits, mantissa bits, exponent bias, fnuz, has_inf)
_FORMATS = {
    dtypes.FLOAT8E4M3FN: (4, 3, 7, False, False),
    dtypes.FLOAT8E4M3FNUZ: (4, 3, 8, True, False),
    dtypes.FLOAT8E5M2: (5, 2, 15, False, True),
    dtypes.FLOAT8E5M2FNUZ: (5, 2, 16, True, False),
}
# The float types held as codes: Cast and Q/DQ must decode / encode them (the importer tells the
# kernels which type a uint8 tensor really is).
BITS_TYPES = (dtypes.BFLOAT16, *_FORMATS, dtypes.FLOAT4E2M1, dtypes.FLOAT8E8M0)
# Every type whose holder does not carry its semantics: BITS_TYPES and the sub-byte integers.
CODED_TYPES = (*BITS_TYPES, *sorted(dtypes.SUBBYTE_INTS))

# float4e2m1: the values of codes 0..7 (bit 3 is the sign). No infinities, no NaN.
_FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


@functools.cache
def _table(code: int) -> np.ndarray:
    """float64 value of each of the 256 codes of a float8 format."""
    e_bits, m_bits, bias, fnuz, has_inf = _FORMATS[code]
    c = np.arange(256)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e = (c >> m_bits) & ((1 << e_bits) - 1)
    m = c & ((1 << m_bits) - 1)
    frac = m / float(1 << m_bits)
    val = np.where(e == 0, frac * 2.0 ** (1 - bias), (1 + frac) * 2.0 ** (e - bias)) * sign
    e_max, m_max = (1 << e_bits) - 1, (1 << m_bits) - 1
    if fnuz:
        val[0x80] = np.nan  # the "negative zero" code is the only NaN
    elif has_inf:  # E5M2: IEEE-like top exponent
        top = e == e_max
        val = np.where(top & (m == 0), sign * np.inf, val)
        val = np.where(top & (m != 0), np.nan, val)
    else:  # E4M3FN: only S.1111.111 is NaN
        val = np.where((e == e_max) & (m == m_max), np.nan, val)
    return val


def decode(bits: np.ndarray, code: int) -> np.ndarray:
    """float32 values of bfloat16 / float8 / float4 ``bits``; sub-byte integers unchanged."""
    if code in dtypes.SUBBYTE_INTS:
        return bits
    if code == dtypes.BFLOAT16:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if code == dtypes.FLOAT4E2M1:
        c = bits.astype(np.intp) & 0xF
        return np.where(c & 8, -1.0, 1.0).astype(np.float32) * _FP4_VALUES[c & 7].astype(
            np.float32)
    if code == dtypes.FLOAT8E8M0:
        # 2**(c - 127) built from float32 bits: code c is the float32 exponent field, except
        # codes 0 (2**-127, a float32 subnormal) and 255 (NaN).
        c = bits.astype(np.uint32)
        out = (c << 23).view(np.float32)
        out = np.where(c == 0, np.float32(2.0**-127), out)
        return np.where(c == 255, np.float32(np.nan), out).astype(np.float32)
    return _table(code)[bits.astype(np.intp)].astype(np.float32)


def encode(x: np.ndarray, code: int, saturate: bool = True, round_mode: str = "up"
           ) -> np.ndarray:
    """Codes (or sub-byte values) of ``x`` in the type ``code``.

    Floats round half to even (round_mode applies to float8e8m0 only); see the module
    docstring and the helpers for each family's overflow rules.
    """
    if code in dtypes.SUBBYTE_INTS:
        return _encode_int(np.asarray(x), code)
    if code == dtypes.FLOAT4E2M1:
        return _encode_fp4(np.asarray(x, np.float32))
    if code == dtypes.FLOAT8E8M0:
        return _encode_e8m0(np.asarray(x, np.float32), saturate, round_mode)
    x = np.asarray(x, np.float32)
    if code == dtypes.BFLOAT16:
        b = x.view(np.uint32).astype(np.uint64)
        rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
        return np.where(np.isnan(x), np.uint16(0x7FC0), rounded).astype(np.uint16)
    table = _table(code)
    e_bits, m_bits, bias, fnuz, has_inf = _FORMATS[code]
    pos_codes = np.array([c for c in range(128) if np.isfinite(table[c])])
    pos_vals = table[pos_codes]
    vmax = pos_vals[-1]
    # one step past the largest finite value: where rounding up means overflow
    ulp = vmax - pos_vals[-2]
    a = np.abs(x.astype(np.float64))
    idx = np.clip(np.searchsorted(pos_vals, a), 1, len(pos_vals))
    lo_i = idx - 1
    hi_v = np.where(idx < len(pos_vals), pos_vals[np.minimum(idx, len(pos_vals) - 1)], vmax + ulp)
    lo_v = pos_vals[lo_i]
    hi_code = np.where(idx < len(pos_vals), pos_codes[np.minimum(idx, len(pos_codes) - 1)], -1)
    lo_code = pos_codes[lo_i]
    d_lo, d_hi = a - lo_v, hi_v - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (lo_code % 2 == 1))
    out = np.where(pick_hi, hi_code, lo_code)
    over = out < 0  # rounded past the largest finite value (or |x| is infinite)
    over |= np.isinf(a)
    if saturate:
        out = np.where(over, pos_codes[-1], out)
    else:
        overflow_code = 0x7C if has_inf else (0x80 if fnuz else 0x7F)
        out = np.where(over, overflow_code, out)
    neg = np.signbit(x)
    if fnuz:
        neg &= out != 0  # no negative zero
    out = np.where(neg, out | 0x80, out)
    nan_code = 0x80 if fnuz else 0x7F
    out = np.where(np.isnan(x), nan_code, out)
    return out.astype(np.uint8)


def _encode_int(x: np.ndarray, code: int) -> np.ndarray:
    """int4 / uint4 / int2 / uint2 values of ``x``, as ONNX Cast defines a narrowing cast.

    Integers (and bools) keep their low bits, reinterpreted in two's complement: ONNX Cast
    defines a fixed -> fixed narrowing as "discard higher bits" (200 -> -56 for int8; -9 -> 7
    for int4).

    Floats truncate toward zero; a result outside the type's range is *undefined* in ONNX, and
    edgert's documented choice is to **saturate** it to the range (-9.5 -> -8 and 1e6 -> 7 for
    int4, -3 -> 0 for uint4; +-inf to the range's ends) and to give 0 for NaN. Saturation is what
    QuantizeLinear specifies for these types, what a user converting weights or activations
    expects (the nearest representable value, never a sign flip), and does not depend on a
    library's habit: the ONNX reference implementation delegates to ml_dtypes, which wrapped
    until 0.6 and returns 0 since 0.7.
    """
    lo, hi = dtypes.value_range(code)
    span = hi - lo + 1
    holder = dtypes.to_numpy(code)
    if x.dtype.kind == "b":
        return x.astype(holder)
    if x.dtype.kind in "iu":
        low = (x.astype(np.int64) if x.dtype != np.uint64 else x.astype(np.uint64)) & (span - 1)
        low = low.astype(np.int64)
        if lo < 0:
            low = np.where(low > hi, low - span, low)
        return low.astype(holder)
    f = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore"):
        t = np.clip(np.trunc(f), lo, hi)  # +-inf clip to the ends; NaN stays NaN
    return np.where(np.isnan(t), 0.0, t).astype(holder)


def _encode_fp4(x: np.ndarray) -> np.ndarray:
    """float4e2m1 codes of float32 ``x``: round half to even (ties to the even code), values
    past 6 (and infinities) saturate to +-6 since the type has no infinity. NaN has no code
    either; it becomes -0 (code 8), which is what the ONNX reference (ml_dtypes) produces."""
    a = np.abs(x.astype(np.float64))
    vals = _FP4_VALUES
    hi = np.clip(np.searchsorted(vals, a), 1, len(vals) - 1)  # vals[hi-1] < a <= vals[hi]
    lo = hi - 1
    d_lo, d_hi = a - vals[lo], vals[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (lo % 2 == 1))
    out = np.where(pick_hi, hi, lo)
    out = np.where(a >= vals[-1], len(vals) - 1, out)  # saturate (also infinities)
    out = np.where(np.signbit(x), out | 8, out)
    return np.where(np.isnan(x), 8, out).astype(np.uint8)


def _encode_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8e8m0 codes (biased exponents) of float32 ``x``.

    The code is the float32 exponent field, rounded by the 23 fraction bits:
    ``up`` adds one when any fraction bit is set, ``down`` truncates, ``nearest`` rounds at
    1.5 * 2**e (for subnormals, only strictly past half of 2**-126). The sign is ignored
    (negative inputs are undefined in ONNX). NaN gives 255 (NaN). With ``saturate`` an
    infinity or a value that rounds past 2**127 gives 254 (the largest value, as ONNX's table
    says); without it they give NaN, and so does 0 (below the smallest value, 2**-127).
    """
    if round_mode not in ("up", "down", "nearest"):
        raise ValueError(f"round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    bits = x.view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int64)
    frac = bits & 0x7FFFFF
    special = exp == 0xFF
    if round_mode == "up":
        inc = frac != 0
    elif round_mode == "nearest":
        half = (frac & 0x400000) != 0
        rest = (frac & 0x3FFFFF) != 0
        inc = half & (rest | (exp > 0))
    else:
        inc = np.zeros(x.shape, bool)
    code = exp + inc
    if saturate:
        code = np.minimum(code, 254)
        code = np.where(special & ~np.isnan(x), 254, code)
    else:
        code = np.where((x == 0) | np.isinf(x), 255, code)
    code = np.where(np.isnan(x), 255, code)
    return np.where(special & ~saturate, 255, code).astype(np.uint8)
