"""Sequence, optional and map values at run time (ONNX ``seq(tensor)``, ``optional(...)``,
``map(K, V)`` and ``seq(map(K, V))``).

They are not tensors: the interpreter never plans them in its arena. A value slot holds

* a **sequence** as a Python ``list`` of NumPy arrays (all of one dtype, shapes may differ);
* an **optional** as its content (an array, or a list for ``optional(seq(...))``) or ``None``
  when it is empty;
* a **map** as a Python ``dict`` from ``int`` or ``str`` keys to NumPy scalars of the value
  type, and a **sequence of maps** as a ``list`` of such dicts (ZipMap's output, as onnxruntime
  returns it).

Every operator that reads or writes one runs as a dynamic step: its ``prepare`` receives a
sequence as ``TensorInfo(None, object, value=the_list)`` (see :func:`value_info`) and an empty
optional as ``None`` (like an omitted input), reports unknown output shapes, and its ``invoke``
returns the values it built. Kernels never modify a list or an array they were given, and copy
arrays into the sequences they build (an input array may be an arena view that the next step
overwrites), so that lists can be passed on by reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, InputError
from edgert.format.model import (
    KIND_MAP,
    KIND_NAMES,
    KIND_OPTIONAL_SEQUENCE,
    KIND_OPTIONAL_TENSOR,
    KIND_SEQUENCE,
    KIND_SEQUENCE_MAP,
    TensorDef,
)
from edgert.runtime.registry import TensorInfo

OBJECT = np.dtype(object)


def value_info(a: Any) -> TensorInfo:
    """What a kernel's ``prepare`` is told about a run-time value (an array or a sequence)."""
    if type(a) is list or type(a) is dict:
        return TensorInfo(None, OBJECT, a)
    return TensorInfo(tuple(a.shape), a.dtype, a)


def copy_value(value: Any) -> Any:
    """A deep copy of an array, a sequence (list of arrays) or an empty optional (None)."""
    if value is None:
        return None
    if type(value) is list:
        return [copy_value(x) for x in value]
    if type(value) is dict:
        return dict(value)  # keys and scalar values are immutable
    return np.array(value, copy=True)


def check_value(t: TensorDef, value: Any) -> Any:
    """A sequence / optional model input as the interpreter holds it, or a clear error.

    Args:
        t: the input's tensor entry (``t.kind`` is not ``KIND_TENSOR``).
        value: a list or tuple of arrays for a sequence; for an optional, None (empty) or its
            content.
    """
    kind = int(t.kind)
    what = KIND_NAMES[kind] if 0 <= kind < len(KIND_NAMES) else f"kind {kind}"
    want = dtypes.to_numpy(int(t.dtype)) if dtypes.is_known(int(t.dtype)) else None

    def tensor(x: Any, where: str) -> np.ndarray:
        if x is None or isinstance(x, (list, tuple)):
            raise InputError(f"input '{t.name}'{where}: expected an array, got "
                             f"{type(x).__name__} (the input is a {what} value)")
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        if want is not None and arr.dtype != want:
            raise DTypeError(
                f"input '{t.name}'{where}: expected dtype {dtypes.name(int(t.dtype))}, got "
                f"{arr.dtype} (convert with .astype(np.{want.name}))"
            )
        narrow = dtypes.value_range(int(t.dtype)) if want is not None else None
        if narrow is not None and arr.size and (arr.min() < narrow[0] or arr.max() > narrow[1]):
            raise InputError(f"input '{t.name}'{where}: values outside the range of "
                             f"{dtypes.name(int(t.dtype))} [{narrow[0]}, {narrow[1]}]")
        return arr

    if kind in (KIND_MAP, KIND_SEQUENCE_MAP):
        return _check_map_value(t, value, what, want)
    if value is None:
        if kind in (KIND_OPTIONAL_TENSOR, KIND_OPTIONAL_SEQUENCE):
            return None
        raise InputError(f"input '{t.name}' is a {what} value; got None")
    if kind in (KIND_SEQUENCE, KIND_OPTIONAL_SEQUENCE):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"input '{t.name}' is a {what} value: pass a list of arrays, got "
                             f"{type(value).__name__}")
        return [tensor(x, f", element {k}") for k, x in enumerate(value)]
    return tensor(value, "")


def _check_map_value(t: TensorDef, value: Any, what: str, want: np.dtype | None) -> Any:
    """A map (dict) or sequence-of-maps (list of dicts) input, keys and values checked."""
    string_keys = int(t.key_dtype) == dtypes.STRING

    def one(d: Any, where: str) -> dict:
        if not isinstance(d, dict):
            raise InputError(f"input '{t.name}'{where}: expected a dict, got {type(d).__name__} "
                             f"(the input is a {what} value)")
        out = {}
        for k, v in d.items():
            if string_keys and not isinstance(k, str):
                raise InputError(f"input '{t.name}'{where}: key {k!r} is not a str (the map's "
                                 "keys are strings)")
            if not string_keys and (isinstance(k, bool) or
                                    not isinstance(k, (int, np.integer))):
                raise InputError(f"input '{t.name}'{where}: key {k!r} is not an int (the map's "
                                 "keys are int64)")
            try:
                val = np.asarray(v) if want is None else np.asarray(v, dtype=want)
            except (TypeError, ValueError):
                raise InputError(f"input '{t.name}'{where}: value {v!r} of key {k!r} is not a "
                                 f"{dtypes.name(int(t.dtype))}") from None
            if val.ndim:
                raise InputError(f"input '{t.name}'{where}: value of key {k!r} is not a scalar")
            out[k if string_keys else int(k)] = val[()]
        return out

    if t.kind == KIND_MAP:
        return one(value, "")
    if not isinstance(value, (list, tuple)):
        raise InputError(f"input '{t.name}' is a {what} value: pass a list of dicts, got "
                         f"{type(value).__name__}")
    return [one(d, f", element {k}") for k, d in enumerate(value)]
