"""The bfloat16 / float8 codecs of the Cast kernel against ml_dtypes (an independent reference)."""

import numpy as np
import pytest

from edgert import dtypes
from edgert.runtime.kernels.cpu import float8

ml_dtypes = pytest.importorskip("ml_dtypes")

FORMATS = [
    (dtypes.FLOAT8E4M3FN, "float8_e4m3fn"),
    (dtypes.FLOAT8E4M3FNUZ, "float8_e4m3fnuz"),
    (dtypes.FLOAT8E5M2, "float8_e5m2"),
    (dtypes.FLOAT8E5M2FNUZ, "float8_e5m2fnuz"),
    (dtypes.BFLOAT16, "bfloat16"),
]


def _values() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.integers(-6, 5, 2000),
        [0.0, -0.0, 1.0, -1.0, 0.5, 448.0, 240.0, 57344.0, 1e-9, -3.0e-3],
    ])
    return x.astype(np.float32)


@pytest.mark.parametrize("code, name", FORMATS)
def test_decode_every_code(code, name):
    ref_t = getattr(ml_dtypes, name)
    n = 1 << 16 if code == dtypes.BFLOAT16 else 256
    bits = np.arange(n, dtype=np.uint16 if code == dtypes.BFLOAT16 else np.uint8)
    ref = bits.view(ref_t).astype(np.float32)
    np.testing.assert_array_equal(float8.decode(bits, code), ref)


@pytest.mark.parametrize("code, name", FORMATS)
def test_encode_rounds_like_ml_dtypes_in_range(code, name):
    ref_t = getattr(ml_dtypes, name)
    x = _values()
    finite_max = float(ml_dtypes.finfo(ref_t).max)
    x = x[np.abs(x) <= finite_max]  # saturation differs by design: ONNX clamps, ml_dtypes not
    got = float8.decode(float8.encode(x, code), code)
    ref = x.astype(ref_t).astype(np.float32)
    np.testing.assert_array_equal(got, ref)


def test_saturation_and_overflow():
    big = np.array([1e6, -1e6, np.inf], np.float32)
    e4 = float8.decode(float8.encode(big, dtypes.FLOAT8E4M3FN, saturate=True),
                       dtypes.FLOAT8E4M3FN)
    np.testing.assert_array_equal(e4, [448, -448, 448])
    e4n = float8.decode(float8.encode(big, dtypes.FLOAT8E4M3FN, saturate=False),
                        dtypes.FLOAT8E4M3FN)
    assert np.isnan(e4n).all()
    e5n = float8.decode(float8.encode(big, dtypes.FLOAT8E5M2, saturate=False),
                        dtypes.FLOAT8E5M2)
    np.testing.assert_array_equal(e5n, [np.inf, -np.inf, np.inf])
    nan = float8.encode(np.array([np.nan], np.float32), dtypes.FLOAT8E4M3FNUZ)
    assert np.isnan(float8.decode(nan, dtypes.FLOAT8E4M3FNUZ)).all()
