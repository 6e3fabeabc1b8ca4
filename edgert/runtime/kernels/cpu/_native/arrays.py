"""Array helpers for packing constants at prepare."""

from __future__ import annotations

import numpy as np


def owned(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A writable, C-contiguous copy of a constant (mapped weights may be read-only).

    That also matters to Numba: weights mapped read-only from a ``.edgert`` file would otherwise
    be a different array type and compile a kernel a second time.
    """
    return np.array(value, dtype=dtype, order="C", copy=True)
