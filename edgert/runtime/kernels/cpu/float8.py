"""bfloat16 and float8 codecs: edgert carries these types as raw bits in uint16 / uint8 arrays.

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
BITS_TYPES = (dtypes.BFLOAT16, *_FORMATS)


@functools.lru_cache(maxsize=None)
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
    """float32 values of bfloat16 / float8 ``bits``."""
    if code == dtypes.BFLOAT16:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return _table(code)[bits.astype(np.intp)].astype(np.float32)


def encode(x: np.ndarray, code: int, saturate: bool = True) -> np.ndarray:
    """bfloat16 / float8 bits of float values ``x`` (round half to even)."""
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
