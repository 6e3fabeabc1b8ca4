"""Element types shared by every layer.

Codes follow ONNX's ``TensorProto.DataType`` numbering, a stable public standard, so an importer
maps a type by copying one integer and a `.edgert` file can be read without a private table.
bfloat16 and the float8 / float4 types have no NumPy dtype: their raw bits (codes) are carried in
an unsigned integer array of the same width (float4e2m1: one code, 0..15, per uint8).

The sub-byte integers (int4, uint4, int2, uint2) are stored *unpacked*, one value per int8 /
uint8 element, in memory and in the `.edgert` file: every kernel and every view stays byte
addressed, at the cost of 2-4x the bytes of ONNX's packed form (the importer unpacks, the ONNX
exporter packs back). :func:`value_range` gives the values such a holder may contain.
"""

from __future__ import annotations

import numpy as np

UNDEFINED = 0
FLOAT = 1
UINT8 = 2
INT8 = 3
UINT16 = 4
INT16 = 5
INT32 = 6
INT64 = 7
STRING = 8
BOOL = 9
FLOAT16 = 10
DOUBLE = 11
UINT32 = 12
UINT64 = 13
COMPLEX64 = 14
COMPLEX128 = 15
BFLOAT16 = 16
FLOAT8E4M3FN = 17
FLOAT8E4M3FNUZ = 18
FLOAT8E5M2 = 19
FLOAT8E5M2FNUZ = 20
UINT4 = 21
INT4 = 22
FLOAT4E2M1 = 23
FLOAT8E8M0 = 24
UINT2 = 25
INT2 = 26

# code -> (name, numpy dtype used to hold it)
_TABLE: dict[int, tuple[str, np.dtype]] = {
    FLOAT: ("float32", np.dtype(np.float32)),
    UINT8: ("uint8", np.dtype(np.uint8)),
    INT8: ("int8", np.dtype(np.int8)),
    UINT16: ("uint16", np.dtype(np.uint16)),
    INT16: ("int16", np.dtype(np.int16)),
    INT32: ("int32", np.dtype(np.int32)),
    INT64: ("int64", np.dtype(np.int64)),
    STRING: ("string", np.dtype(object)),
    BOOL: ("bool", np.dtype(np.bool_)),
    FLOAT16: ("float16", np.dtype(np.float16)),
    DOUBLE: ("float64", np.dtype(np.float64)),
    UINT32: ("uint32", np.dtype(np.uint32)),
    UINT64: ("uint64", np.dtype(np.uint64)),
    COMPLEX64: ("complex64", np.dtype(np.complex64)),
    COMPLEX128: ("complex128", np.dtype(np.complex128)),
    BFLOAT16: ("bfloat16", np.dtype(np.uint16)),
    FLOAT8E4M3FN: ("float8e4m3fn", np.dtype(np.uint8)),
    FLOAT8E4M3FNUZ: ("float8e4m3fnuz", np.dtype(np.uint8)),
    FLOAT8E5M2: ("float8e5m2", np.dtype(np.uint8)),
    FLOAT8E5M2FNUZ: ("float8e5m2fnuz", np.dtype(np.uint8)),
    UINT4: ("uint4", np.dtype(np.uint8)),
    INT4: ("int4", np.dtype(np.int8)),
    FLOAT4E2M1: ("float4e2m1", np.dtype(np.uint8)),
    FLOAT8E8M0: ("float8e8m0", np.dtype(np.uint8)),
    UINT2: ("uint2", np.dtype(np.uint8)),
    INT2: ("int2", np.dtype(np.int8)),
}

# Types held in a wider NumPy integer: the values (sub-byte integers) or codes (float4) a holder
# element may contain. Anything outside is a corrupt tensor, not a value of the type.
_RANGES: dict[int, tuple[int, int]] = {
    UINT4: (0, 15),
    INT4: (-8, 7),
    UINT2: (0, 3),
    INT2: (-2, 1),
    FLOAT4E2M1: (0, 15),
}
# The sub-byte integer types (values, not codes, in their holder).
SUBBYTE_INTS = frozenset({UINT4, INT4, UINT2, INT2})

_FROM_NUMPY: dict[np.dtype, int] = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int8): INT8,
    np.dtype(np.uint16): UINT16,
    np.dtype(np.int16): INT16,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(object): STRING,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.float64): DOUBLE,
    np.dtype(np.uint32): UINT32,
    np.dtype(np.uint64): UINT64,
    np.dtype(np.complex64): COMPLEX64,
    np.dtype(np.complex128): COMPLEX128,
}


def is_known(code: int) -> bool:
    """Whether ``code`` is an element type edgert can store."""
    return code in _TABLE


def to_numpy(code: int) -> np.dtype:
    """The NumPy dtype that holds elements of type ``code``.

    Raises:
        ValueError: ``code`` is not a known element type.
    """
    try:
        return _TABLE[code][1]
    except KeyError:
        raise ValueError(f"unknown element type code {code}") from None


def name(code: int) -> str:
    """Human-readable name of an element type code (``'float32'``, ``'bfloat16'``...)."""
    entry = _TABLE.get(code)
    return entry[0] if entry else f"<unknown dtype {code}>"


def from_numpy(dtype) -> int:
    """The element type code of a NumPy dtype.

    Raises:
        ValueError: NumPy dtype with no edgert equivalent.
    """
    dt = np.dtype(dtype)
    if dt.kind in "US":
        return STRING
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise ValueError(f"NumPy dtype {dt} has no edgert element type") from None


def value_range(code: int) -> tuple[int, int] | None:
    """``(lo, hi)`` of what a holder element of a narrow type may contain, None for other types.

    int4/uint4/int2/uint2 hold their values, float4e2m1 its 4-bit codes.
    """
    return _RANGES.get(code)


def itemsize(code: int) -> int:
    """Bytes per element when stored in a buffer (strings are not stored as fixed-size items)."""
    if code == STRING:
        raise ValueError("string tensors have no fixed item size")
    return to_numpy(code).itemsize
