"""The ``ai.onnx.ml`` operators other than the tree ensembles (those are in ``trees.py``).

Every kernel is a few vectorized NumPy calls (:class:`~edgert.runtime.kernels.cpu.misc.
EagerKernel`). Attributes are validated and turned into tables once, on the first ``prepare``
(``setup``): lengths that must agree with each other raise a KernelError, lengths that must agree
with the input's feature count a ShapeError, input values outside what the model accepts an
InputError at run time. The kernels never index with a position a model or an input chose
without checking it first.

Semantics follow the ONNX spec, and onnxruntime (what users compare with) where the spec is
silent or ambiguous:

* Classifier and regressor inputs are ``[N, F]`` or ``[F]`` (one row); scores are float32.
  Linear models run as a BLAS product (float64 for double inputs, else float32); SVM kernels
  and decision values in float64.
* Post-transforms (``ml_common``) apply row-wise. A classifier with a single score ``s`` for
  two labels (LinearClassifier with one coefficient row; a two-class SVC without
  probabilities) reports two columns as onnxruntime does: ``[1 - s, s]``, or ``[-s, s]`` for
  an SVC with NONE; ``[σ(-s), σ(s)]`` for LOGISTIC; and ``[-probit(s), probit(s)]`` for
  PROBIT, where onnxruntime leaves a column unwritten. LinearClassifier's label is then
  ``labels[1]`` when ``s > 0``; the SVC's is its vote (``labels[0]`` when ``s > 0``).
* An SVC (``vectors_per_class``) is one-vs-one as in libsvm: one decision value per class pair,
  a vote per pair, the label with the most votes (the first on ties), also when
  ``prob_a``/``prob_b`` turn the scores into probabilities (Platt's sigmoid per pair, then
  libsvm's pairwise coupling in float32 like onnxruntime). Without probabilities the scores are
  the ``k(k-1)/2`` pair decision values. A linear SVMClassifier (no support vectors) adds
  ``rho[0]`` to every class score and, for two classes, picks the label as onnxruntime does
  (``labels[1]`` when the top score is positive with mixed-sign weights, or at least 0.5 with
  non-negative ones).
* LinearRegressor and SVMRegressor apply ``post_transform`` to their scores, one target
  included (onnxruntime ignores it there); an SVMRegressor with ``one_class`` outputs ±1.
* Normalizer (``[N, C]`` or ``[C]``): MAX divides a row by its maximum, L1 by the sum of its
  absolute values, L2 by its Euclidean norm (the sign kept); a zero divisor leaves it as is.
* LabelEncoder: opset 1 maps strings to their index in ``classes_strings`` and back; opsets 2
  and 4 map ``keys_*`` to ``values_*``. Float keys compare bit for bit in opset 2 (its spec);
  opset 4 matches any NaN with a NaN key and lets the last of repeated keys win (its spec),
  opset 2 the first (onnxruntime). Lookups use a dict (strings) or a sorted array.
* Imputer and Scaler take per-feature attributes along the last axis, or one value for all.
* DictVectorizer takes a map or a sequence of maps (``[1, V]`` or ``[N, V]``); keys outside the
  vocabulary are ignored, as onnxruntime does. CastMap's SPARSE form rejects keys outside
  ``[0, max_map)``; it pads with 0 (``"0.f"`` for strings, as onnxruntime) and formats floats
  as C's ``%f``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from edgert.errors import DTypeError, InputError, ShapeError
from edgert.runtime._jit import njit
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.kernels.cpu.ml_common import (
    apply_post_transform,
    check_post_transform,
    class_labels,
    logistic,
    probit,
)
from edgert.runtime.registry import KernelRegistry, OpTraits, TensorInfo

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
I64 = np.dtype(np.int64)
I32 = np.dtype(np.int32)
OBJECT = np.dtype(object)
NUMERIC = (F32, F64, I64, I32)
ML_DOMAIN = "ai.onnx.ml"
T = TypeVar("T")


class _MLKernel(EagerKernel):
    """An EagerKernel whose attributes are checked, and tables built, once (``setup``)."""

    _ready = False
    _packed_for: object = None

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        if not self._ready:
            self.setup()
            self._ready = True
        return self.check(inputs)

    def setup(self) -> None:
        """Validate the attributes and precompute what ``compute`` needs."""

    def packed(self, key: object, build: Callable[[], T]) -> T:
        """``build()`` (weights laid out for the input's feature count...), rebuilt only when
        ``key`` changes: a prepare that runs at every invoke (a dynamic step) repacks nothing."""
        if self._packed_for != key:
            self._packed = build()
            self._packed_for = key
        return self._packed

    # ----- shared checks ----------------------------------------------------------------------
    def tensor_input(self, inputs: list[TensorInfo | None], i: int, what: str,
                     allowed: tuple[np.dtype, ...]) -> TensorInfo:
        """Input ``i``, which must be a tensor of one of the ``allowed`` dtypes."""
        info = inputs[i]
        if info.shape is None or isinstance(info.value, (dict, list)):
            raise self.error(f"{what} must be a tensor, got a map or sequence", InputError)
        if np.dtype(info.dtype) not in allowed:
            names = ", ".join("string" if d == OBJECT else d.name for d in allowed)
            raise self.error(f"{what} has dtype {_dtype_name(info.dtype)}; expected one of "
                             f"{names}", DTypeError)
        return info

    def rows(self, info: TensorInfo) -> tuple[int, int]:
        """(N, F) of a classifier / regressor input: ``[N, F]``, or ``[F]`` for one row."""
        if len(info.shape) == 1:
            return 1, info.shape[0]
        if len(info.shape) == 2:
            return info.shape
        raise self.error(f"X must be [N, F] or [F], got shape {info.shape}", ShapeError)

    def floats(self, name: str, required: bool = False) -> np.ndarray | None:
        """A FLOATS attribute as a float32 array (None when absent, or empty and optional)."""
        value = self.attr(name)
        if value is None or len(value) == 0:
            if required:
                raise self.error(f"attribute '{name}' is required and must not be empty")
            return None
        return np.asarray(value, dtype=np.float32).reshape(-1)

    def ints(self, name: str) -> np.ndarray | None:
        """An INTS attribute as an int64 array (None when absent or empty)."""
        value = self.attr(name)
        if value is None or len(value) == 0:
            return None
        return np.asarray(value, dtype=np.int64).reshape(-1)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        """A STRING attribute that must be one of ``allowed``."""
        value = self.attr(name, default)
        if value not in allowed:
            raise self.error(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value


def _dtype_name(dtype) -> str:
    dtype = np.dtype(dtype)
    return "string" if dtype == OBJECT else dtype.name


def _as_2d(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A classifier input as a C-contiguous [N, F] array of ``dtype``."""
    x = x.reshape(1, -1) if x.ndim == 1 else x
    return np.ascontiguousarray(x, dtype=dtype)


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 inputs compute in float64, the others (float32, int32, int64) in float32."""
    return F64 if np.dtype(dtype) == F64 else F32


def _binary_scores(s: np.ndarray, post_transform: str, negate_raw: bool) -> np.ndarray:
    """The two score columns onnxruntime writes for a binary classifier with one score ``s``
    (see the module docstring); ``negate_raw``: ``[-s, s]`` rather than ``[1 - s, s]`` for
    NONE (an SVC)."""
    if post_transform == "LOGISTIC":
        return logistic(np.stack([-s, s], axis=1))
    if post_transform == "PROBIT":
        p = probit(s)
        return np.stack([-p, p], axis=1)
    if negate_raw and post_transform == "NONE":
        return np.stack([-s, s], axis=1)
    return np.stack([1 - s, s], axis=1)


# ----- lookups ------------------------------------------------------------------------------------
class _Lookup:
    """A key -> value table built once: ``lookup(x)`` maps every element of ``x``.

    String keys go through a dict, numeric keys through a sorted array (``np.searchsorted``).
    Either way an element becomes a position in ``table`` (the values, then the default).
    ``bitwise``: float keys match by bit pattern (so a NaN key matches that same NaN);
    otherwise a NaN key matches every NaN and ``-0.0`` matches ``0.0``.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray, default, *, last_wins: bool,
                 bitwise: bool = False):
        self.string_keys = keys.dtype == OBJECT
        self.bitwise = bitwise and keys.dtype.kind == "f"
        if self.bitwise:
            keys = keys.view(np.uint32 if keys.dtype.itemsize == 4 else np.uint64)
        n = len(values)
        self.table = np.empty(n + 1, dtype=values.dtype)
        self.table[:n] = values
        self.table[n] = default
        self.missing = n
        self.nan = n  # the position NaN inputs take (float keys, not bitwise)
        where: dict = {}
        for i, k in enumerate(keys.tolist()):
            if not self.string_keys and not self.bitwise and keys.dtype.kind == "f" and k != k:
                if last_wins or self.nan == n:
                    self.nan = i
                continue
            if last_wins or k not in where:
                where[k] = i
        if self.string_keys:
            self.index = where
        else:
            ordered = sorted(where)
            self.sorted = np.array(ordered, dtype=keys.dtype)
            self.position = np.array([where[k] for k in ordered], dtype=np.intp)

    def positions(self, x: np.ndarray) -> np.ndarray:
        """The table position of every element of ``x`` (flattened)."""
        flat = x.reshape(-1)
        if self.string_keys:
            get, missing = self.index.get, self.missing
            return np.fromiter((get(s, missing) for s in flat), dtype=np.intp, count=flat.size)
        keys = flat.view(self.sorted.dtype) if self.bitwise else flat
        out = np.full(flat.size, self.missing, dtype=np.intp)
        if len(self.sorted):
            at = np.minimum(np.searchsorted(self.sorted, keys), len(self.sorted) - 1)
            hit = self.sorted[at] == keys
            out[hit] = self.position[at[hit]]
        if not self.bitwise and flat.dtype.kind == "f":
            out[np.isnan(flat)] = self.nan
        return out

    def lookup(self, x: np.ndarray) -> np.ndarray:
        return self.table[self.positions(x)].reshape(x.shape)


def _check_key_dtype(kernel: _MLKernel, info: TensorInfo, keys: np.ndarray, what: str) -> None:
    if np.dtype(info.dtype) != keys.dtype:
        raise kernel.error(f"X has dtype {_dtype_name(info.dtype)} but the {what} are "
                           f"{_dtype_name(keys.dtype)}: they must be the same type", DTypeError)


# ----- simple element-wise ops --------------------------------------------------------------------
class Binarizer(_MLKernel):
    """Binarizer: 1 where ``X > threshold`` (default 0.0), else 0 (NaN gives 0), same dtype."""

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        self._threshold = float(self.attr("threshold", 0.0))
        return [TensorInfo(tuple(x.shape), np.dtype(x.dtype))]

    def compute(self, inputs):
        x = inputs[0]
        return [(x > self._threshold).astype(x.dtype)]


class Scaler(_MLKernel):
    """Scaler: ``(X - offset) * scale`` as float32; offset and scale of length 1 or F (the last
    axis), the same length."""

    def setup(self):
        self._scale = self.floats("scale", required=True)
        self._offset = self.floats("offset", required=True)
        if len(self._scale) != len(self._offset):
            raise self.error(f"scale has {len(self._scale)} values and offset "
                             f"{len(self._offset)}: they must have the same length")

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        if not x.shape:
            raise self.error("X must have at least one dimension", ShapeError)
        if len(self._scale) not in (1, x.shape[-1]):
            raise self.error(f"scale and offset have {len(self._scale)} values; X has "
                             f"{x.shape[-1]} features (expected 1 or {x.shape[-1]})", ShapeError)
        self._dtype = _compute_dtype(x.dtype)
        return [TensorInfo(tuple(x.shape), F32)]

    def compute(self, inputs):
        x = inputs[0].astype(self._dtype, copy=False)
        y = (x - self._offset.astype(self._dtype)) * self._scale.astype(self._dtype)
        return [y.astype(np.float32, copy=False)]


class Imputer(_MLKernel):
    """Imputer: elements equal to the replaced value (any NaN, when it is NaN) become the imputed
    value of their feature (the last axis), or the single imputed value."""

    def setup(self):
        floats = self.attr("imputed_value_floats") or None
        ints = self.attr("imputed_value_int64s") or None
        if (floats is None) == (ints is None):
            raise self.error("needs exactly one of imputed_value_floats and "
                             "imputed_value_int64s (non-empty)")
        self._is_float = floats is not None
        if self._is_float:
            self._values = np.asarray(floats, dtype=np.float64)
            self._replaced = float(self.attr("replaced_value_float", 0.0))
        else:
            self._values = np.asarray(ints, dtype=np.int64)
            self._replaced = int(self.attr("replaced_value_int64", 0))

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        dtype = np.dtype(x.dtype)
        if (dtype.kind == "f") != self._is_float:
            which = "imputed_value_floats" if self._is_float else "imputed_value_int64s"
            raise self.error(f"X has dtype {dtype.name} but the model gives {which}: float "
                             "inputs need float values, integer inputs integer ones", DTypeError)
        if not x.shape:
            raise self.error("X must have at least one dimension", ShapeError)
        if len(self._values) not in (1, x.shape[-1]):
            raise self.error(f"{len(self._values)} imputed values for {x.shape[-1]} features "
                             f"(expected 1 or {x.shape[-1]})", ShapeError)
        if dtype.kind == "i":
            info = np.iinfo(dtype)
            if self._values.min() < info.min or self._values.max() > info.max:
                raise self.error(f"imputed values do not fit in X's dtype {dtype.name}")
        self._fill = self._values.astype(dtype)
        return [TensorInfo(tuple(x.shape), dtype)]

    def compute(self, inputs):
        x = inputs[0]
        if self._is_float and np.isnan(self._replaced):
            mask = np.isnan(x)
        else:
            mask = x == self._replaced
        return [np.where(mask, self._fill, x)]


class Normalizer(_MLKernel):
    """Normalizer: each row of X ([N, C], or [C]) divided by its MAX, L1 or L2 norm, as float32;
    a zero divisor leaves the row unchanged."""

    def setup(self):
        self._norm = self.choice("norm", "MAX", ("MAX", "L1", "L2"))

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        self.rows(x)
        self._dtype = _compute_dtype(x.dtype)
        return [TensorInfo(tuple(x.shape), F32)]

    def compute(self, inputs):
        x = inputs[0].astype(self._dtype, copy=False)
        axis = x.ndim - 1
        if self._norm == "MAX":
            div = x.max(axis=axis, keepdims=True)
        elif self._norm == "L1":
            div = np.abs(x).sum(axis=axis, keepdims=True)
        else:
            div = np.sqrt(np.square(x).sum(axis=axis, keepdims=True))
        zero = div == 0
        return [np.where(zero, x, x / np.where(zero, 1, div)).astype(np.float32, copy=False)]


class ArrayFeatureExtractor(_MLKernel):
    """ArrayFeatureExtractor: ``X[..., Y]`` with the indices Y (int64, any shape, flattened), each
    in ``[0, F)``; a 1-D X gives ``[1, len(Y)]``."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 2)
        x = self.tensor_input(inputs, 0, "X", (*NUMERIC, OBJECT))
        y = self.tensor_input(inputs, 1, "Y", (I64,))
        if not x.shape:
            raise self.error("X must have at least one dimension", ShapeError)
        count = int(np.prod(y.shape, dtype=np.int64))
        if y.value is not None:
            self._check_indices(np.asarray(y.value), x.shape[-1])
        shape = (1, count) if len(x.shape) == 1 else (*x.shape[:-1], count)
        return [TensorInfo(shape, np.dtype(x.dtype))]

    def _check_indices(self, idx: np.ndarray, n: int) -> None:
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise self.error(f"index {int(idx[bad][0])} is out of range for the last dimension "
                             f"of X ({n} features; indices must lie in [0, {n}))", InputError)

    def compute(self, inputs):
        x, idx = inputs[0], inputs[1].reshape(-1)
        self._check_indices(idx, x.shape[-1])
        out = np.take(x, idx, axis=-1)
        return [out.reshape(1, -1) if x.ndim == 1 else out]


class OneHotEncoder(_MLKernel):
    """OneHotEncoder: ``Y[..., c] = 1`` where X's element is category c (numeric inputs are
    truncated to integers first); an unknown category gives zeros, or an error when
    ``zeros`` is 0."""

    def setup(self):
        ints = self.ints("cats_int64s")
        strings = self.attr("cats_strings") or None
        if (ints is None) == (strings is None):
            raise self.error("needs exactly one of cats_int64s and cats_strings (non-empty)")
        keys = ints if ints is not None else np.array([str(s) for s in strings], dtype=object)
        self._count = len(keys)
        self._lookup = _Lookup(keys, np.arange(self._count, dtype=np.intp), -1, last_wins=True)
        self._zeros = bool(self.attr("zeros", 1))

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", (OBJECT, I64, I32, F32, F64))
        if (np.dtype(x.dtype) == OBJECT) != self._lookup.string_keys:
            raise self.error(f"X has dtype {_dtype_name(x.dtype)} but the categories are "
                             f"{'strings' if self._lookup.string_keys else 'integers'}",
                             DTypeError)
        return [TensorInfo((*x.shape, self._count), F32)]

    def compute(self, inputs):
        x = inputs[0]
        if x.dtype.kind == "f":  # cast to integers (truncation); NaN, inf: no category
            ok = np.isfinite(x) & (np.abs(x) < 2.0**63)
            cat = np.where(ok, self._lookup.lookup(np.trunc(np.where(ok, x, 0)).astype(np.int64)),
                           -1)
        else:
            cat = self._lookup.lookup(x)
        cat = cat.reshape(-1)
        known = cat >= 0
        if not self._zeros and not known.all():
            raise self.error(f"value {x.reshape(-1)[~known][0]!r} is not one of the categories "
                             "(and zeros is 0)", InputError)
        out = np.zeros((cat.size, self._count), dtype=np.float32)
        out[np.flatnonzero(known), cat[known]] = 1.0
        return [out.reshape(*x.shape, self._count)]


class FeatureVectorizer(_MLKernel):
    """FeatureVectorizer: the inputs ([N, C] or [C] = [1, C]; trailing dims flattened) side by
    side as float32, input i taking ``inputdimensions[i]`` columns: truncated or zero-padded."""

    def setup(self):
        dims = self.ints("inputdimensions")
        if dims is None or (dims < 0).any():
            raise self.error("attribute 'inputdimensions' is required (one non-negative size "
                             "per input)")
        self._dims = dims

    def check(self, inputs):
        count = max(len(inputs), 1)
        self.require_inputs(inputs, count, count)
        if len(inputs) != len(self._dims):
            raise self.error(f"{len(inputs)} inputs but inputdimensions has {len(self._dims)} "
                             "values (one per input)")
        batch = None
        for i in range(len(inputs)):
            info = self.tensor_input(inputs, i, f"input {i}", NUMERIC)
            if not info.shape:
                raise self.error(f"input {i} must have at least one dimension", ShapeError)
            n = 1 if len(info.shape) == 1 else info.shape[0]
            if batch is not None and n != batch:
                raise self.error(f"input {i} has {n} rows, input 0 has {batch}", ShapeError)
            batch = n
        return [TensorInfo((batch, int(self._dims.sum())), F32)]

    def compute(self, inputs):
        n = 1 if inputs[0].ndim == 1 else inputs[0].shape[0]
        out = np.zeros((n, int(self._dims.sum())), dtype=np.float32)
        col = 0
        for x, width in zip(inputs, self._dims.tolist()):
            x = x.reshape(n, x.size // n if n else 0)
            take = min(width, x.shape[1])
            out[:, col : col + take] = x[:, :take]
            col += width
        return [out]


# ----- label and category mappings ----------------------------------------------------------------
class CategoryMapper(_MLKernel):
    """CategoryMapper: strings -> int64 through (cats_strings, cats_int64s), or int64 -> strings
    the other way; ``default_int64`` (-1) / ``default_string`` ("_Unused") when not found. The
    last of repeated categories wins."""

    def setup(self):
        ints = self.attr("cats_int64s")
        strings = self.attr("cats_strings")
        if ints is None or strings is None:
            raise self.error("needs both cats_int64s and cats_strings")
        if len(ints) != len(strings):
            raise self.error(f"cats_int64s has {len(ints)} values and cats_strings "
                             f"{len(strings)}: they must have the same length")
        ints = np.asarray(ints, dtype=np.int64).reshape(-1)
        strings = np.array([str(s) for s in strings], dtype=object)
        self._to_int = _Lookup(strings, ints, int(self.attr("default_int64", -1)),
                               last_wins=True)
        self._to_str = _Lookup(ints, strings, str(self.attr("default_string", "_Unused")),
                               last_wins=True)

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", (OBJECT, I64))
        self._lookup = self._to_int if np.dtype(x.dtype) == OBJECT else self._to_str
        return [TensorInfo(tuple(x.shape), self._lookup.table.dtype)]

    def compute(self, inputs):
        return [self._lookup.lookup(inputs[0])]


class LabelEncoder(_MLKernel):
    """LabelEncoder, opsets 1, 2 and 4 (see the module docstring)."""

    _KEYS = {"keys_strings": OBJECT, "keys_int64s": I64, "keys_floats": F32}
    _VALUES = {"values_strings": OBJECT, "values_int64s": I64, "values_floats": F32}
    _TENSOR_TYPES = (OBJECT, I64, I32, np.dtype(np.int16), F32, F64)

    def setup(self):
        if self.op.version < 2:
            strings = np.array([str(s) for s in self.attr("classes_strings") or []],
                               dtype=object)
            self._v1 = (
                _Lookup(strings, np.arange(len(strings), dtype=np.int64),
                        int(self.attr("default_int64", -1)), last_wins=True),
                _Lookup(np.arange(len(strings), dtype=np.int64), strings,
                        str(self.attr("default_string", "_Unused")), last_wins=True),
            )
            return
        v4 = self.op.version >= 4
        keys = self._attribute("keys", self._KEYS, v4)
        values = self._attribute("values", self._VALUES, v4)
        if len(keys) != len(values):
            raise self.error(f"{len(keys)} keys and {len(values)} values: they must have the "
                             "same length")
        self._keys = keys
        self._table = _Lookup(keys, values, self._default(values.dtype, v4), last_wins=v4,
                              bitwise=not v4)

    def _attribute(self, kind: str, lists: dict, v4: bool) -> np.ndarray:
        """The one ``keys_*`` (``values_*``) attribute, as a 1-D array of its type."""
        given = [name for name in (*lists, f"{kind}_tensor") if self.attr(name) is not None]
        if len(given) != 1:
            raise self.error(f"needs exactly one {kind}_* attribute, got "
                             f"{', '.join(given) or 'none'}")
        name = given[0]
        if name == f"{kind}_tensor":
            if not v4:
                raise self.error(f"{name} needs LabelEncoder-4 (ai.onnx.ml opset 4)")
            arr = np.asarray(self.attr(name))
            if arr.ndim != 1 or arr.dtype not in self._TENSOR_TYPES:
                raise self.error(f"{name} must be a 1-D tensor of string, int16, int32, int64, "
                                 f"float or double, got {_dtype_name(arr.dtype)} shape "
                                 f"{arr.shape}")
            if arr.dtype == OBJECT:
                return np.array([str(s) for s in arr], dtype=object)
            return arr
        dtype = lists[name]
        if dtype == OBJECT:
            return np.array([str(s) for s in self.attr(name)], dtype=object)
        return np.asarray(self.attr(name), dtype=dtype).reshape(-1)

    def _default(self, dtype: np.dtype, v4: bool):
        """The value of keys that are not found, of the values' type."""
        tensor = self.attr("default_tensor")
        if tensor is not None and not v4:
            raise self.error("default_tensor needs LabelEncoder-4 (ai.onnx.ml opset 4)")
        if tensor is not None:
            arr = np.asarray(tensor)
            if arr.size != 1 or arr.dtype != dtype:
                raise self.error(f"default_tensor must hold one {_dtype_name(dtype)} value like "
                                 f"the values, got {arr.size} {_dtype_name(arr.dtype)} value(s)")
            return arr.reshape(-1)[0]
        if dtype == OBJECT:
            return str(self.attr("default_string", "_Unused"))
        if dtype.kind == "f":
            return float(self.attr("default_float", -0.0))
        value = int(self.attr("default_int64", -1))
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise self.error(f"default_int64 {value} does not fit the values' type {dtype.name}")
        return value

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", self._TENSOR_TYPES)
        if self.op.version < 2:
            if np.dtype(x.dtype) not in (OBJECT, I64):
                raise self.error(f"X has dtype {_dtype_name(x.dtype)}; LabelEncoder-1 takes "
                                 "string or int64", DTypeError)
            self._lookup = self._v1[0] if np.dtype(x.dtype) == OBJECT else self._v1[1]
        else:
            _check_key_dtype(self, x, self._keys, "keys")
            self._lookup = self._table
        return [TensorInfo(tuple(x.shape), self._lookup.table.dtype)]

    def compute(self, inputs):
        return [self._lookup.lookup(inputs[0])]


# ----- linear models ------------------------------------------------------------------------------
class LinearRegressor(_MLKernel):
    """LinearRegressor: ``X @ coefficients.T + intercepts`` ([N, targets] float32), then the
    post-transform."""

    def setup(self):
        self._targets = int(self.attr("targets", 1))
        if self._targets < 1:
            raise self.error(f"targets must be at least 1, got {self._targets}")
        self._coef = self.floats("coefficients", required=True)
        if len(self._coef) % self._targets:
            raise self.error(f"{len(self._coef)} coefficients do not split into {self._targets} "
                             "targets")
        self._intercepts = self.floats("intercepts")
        if self._intercepts is not None and len(self._intercepts) != self._targets:
            raise self.error(f"{len(self._intercepts)} intercepts for {self._targets} targets")
        self._post = check_post_transform(self.where(), self.attr("post_transform"))

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        n, f = self.rows(x)
        if f * self._targets != len(self._coef):
            raise self.error(f"X has {f} features but the model has "
                             f"{len(self._coef) // self._targets} per target", ShapeError)
        self._dtype = _compute_dtype(x.dtype)
        self._wt = self.packed((f, self._dtype), lambda: np.ascontiguousarray(
            self._coef.reshape(self._targets, f).T, self._dtype))
        return [TensorInfo((n, self._targets), F32)]

    def compute(self, inputs):
        y = _as_2d(inputs[0], self._dtype) @ self._wt
        if self._intercepts is not None:
            y += self._intercepts
        return [apply_post_transform(y.astype(np.float32, copy=False), self._post)]


class LinearClassifier(_MLKernel):
    """LinearClassifier: scores ``X @ coefficients.T + intercepts``, the label of the highest
    score (of ``s > 0`` for one score and two labels), scores post-transformed."""

    def setup(self):
        self._labels, _ = class_labels(self, self.where())
        if len(self._labels) < 2:
            raise self.error(f"needs at least 2 class labels, got {len(self._labels)}")
        self._coef = self.floats("coefficients", required=True)
        self._intercepts = self.floats("intercepts")
        self._post = check_post_transform(self.where(), self.attr("post_transform"))

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        n, f = self.rows(x)
        if f == 0 or len(self._coef) % f:
            raise self.error(f"{len(self._coef)} coefficients are not a whole number of rows of "
                             f"X's {f} features", ShapeError)
        targets = len(self._coef) // f
        if self._intercepts is not None and len(self._intercepts) != targets:
            raise self.error(f"{len(self._intercepts)} intercepts for {targets} coefficient "
                             f"rows of {f} features", ShapeError)
        labels = len(self._labels)
        self._binary = targets == 1 and labels == 2
        if targets != labels and not self._binary:
            raise self.error(f"{targets} coefficient rows of {f} features for {labels} class "
                             "labels (expected one row per class, or one row for 2 classes)",
                             ShapeError)
        self._dtype = _compute_dtype(x.dtype)
        self._wt = self.packed((f, self._dtype), lambda: np.ascontiguousarray(
            self._coef.reshape(targets, f).T, self._dtype))
        return [TensorInfo((n,), self._labels.dtype), TensorInfo((n, labels), F32)]

    def compute(self, inputs):
        scores = _as_2d(inputs[0], self._dtype) @ self._wt
        if self._intercepts is not None:
            scores += self._intercepts
        scores = scores.astype(np.float32, copy=False)
        if self._binary:
            s = scores[:, 0]
            return [self._labels[(s > 0).astype(np.intp)],
                    _binary_scores(s, self._post, negate_raw=False)]
        return [self._labels[np.argmax(scores, axis=1)],
                apply_post_transform(scores, self._post)]


# ----- support vector machines --------------------------------------------------------------------
_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


class _SVM(_MLKernel):
    """What SVMClassifier and SVMRegressor share: the kernel function."""

    def setup_kernel(self) -> None:
        self._kernel = self.choice("kernel_type", "LINEAR", _KERNELS)
        params = self.attr("kernel_params")
        if params is None or len(params) == 0:
            params = [0.0, 0.0, 0.0]
        if len(params) != 3:
            raise self.error(f"kernel_params must be [gamma, coef0, degree], got {len(params)} "
                             "values")
        self._gamma, self._coef0, self._degree = (float(np.float32(p)) for p in params)

    def kernel_matrix(self, x: np.ndarray, sv: np.ndarray, sv_sq: np.ndarray) -> np.ndarray:
        """``K(x_n, sv_j)`` for every row of ``x`` [N, F] and support vector ``sv`` [V, F]."""
        dot = x @ sv.T
        if self._kernel == "LINEAR":
            return dot
        if self._kernel == "RBF":
            dist = np.square(x).sum(axis=1, keepdims=True) + sv_sq - 2.0 * dot
            return np.exp(-self._gamma * np.maximum(dist, 0.0))
        inner = self._gamma * dot + self._coef0
        if self._kernel == "POLY":
            return np.power(inner, self._degree)
        return np.tanh(inner)

    def support_vectors(self, count: int, features: int) -> tuple[np.ndarray, np.ndarray]:
        """The support vectors [count, features] (float64) and their squared norms."""
        sv = self.floats("support_vectors")
        have = 0 if sv is None else len(sv)
        if have != count * features:
            raise self.error(f"support_vectors has {have} values; {count} support vectors of "
                             f"X's {features} features need {count * features}", ShapeError)
        sv = sv.astype(np.float64).reshape(count, features)
        return sv, np.square(sv).sum(axis=1)


class SVMRegressor(_SVM):
    """SVMRegressor: ``sum_j coefficients[j] K(x, sv_j) + rho[0]`` (``n_supports`` > 0), or
    ``x . coefficients + rho[0]``; ±1 by its sign with ``one_class``; else post-transformed."""

    def setup(self):
        self.setup_kernel()
        self._count = int(self.attr("n_supports", 0))
        if self._count < 0:
            raise self.error(f"n_supports must not be negative, got {self._count}")
        self._coef = self.floats("coefficients", required=True).astype(np.float64)
        rho = self.floats("rho", required=True)
        if len(rho) != 1:
            raise self.error(f"rho must hold one value, got {len(rho)}")
        self._rho = float(rho[0])
        if self._count and len(self._coef) != self._count:
            raise self.error(f"{len(self._coef)} coefficients for {self._count} support vectors")
        if not self._count and self.floats("support_vectors") is not None:
            raise self.error("support_vectors given but n_supports is 0")
        self._one_class = bool(self.attr("one_class", 0))
        self._post = check_post_transform(self.where(), self.attr("post_transform"))
        if self._one_class and self._post != "NONE":
            raise self.error(f"one_class outputs ±1: post_transform {self._post} does not apply")

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        n, f = self.rows(x)
        if self._count:
            self._sv, self._sv_sq = self.packed(f, lambda: self.support_vectors(self._count, f))
        elif len(self._coef) != f:
            raise self.error(f"X has {f} features but the linear model has {len(self._coef)} "
                             "coefficients", ShapeError)
        return [TensorInfo((n, 1), F32)]

    def compute(self, inputs):
        x = _as_2d(inputs[0], np.float64)
        if self._count:
            y = self.kernel_matrix(x, self._sv, self._sv_sq) @ self._coef
        else:
            y = x @ self._coef
        y = (y + self._rho).astype(np.float32)[:, None]
        if self._one_class:
            return [np.where(y > 0, 1.0, -1.0).astype(np.float32)]
        return [apply_post_transform(y, self._post)]


class SVMClassifier(_SVM):
    """SVMClassifier: one-vs-one SVC (``vectors_per_class``) or linear (one coefficient row
    per class); see the module docstring."""

    def setup(self):
        self.setup_kernel()
        self._labels, _ = class_labels(self, self.where())
        k = len(self._labels)
        if k < 2:
            raise self.error(f"needs at least 2 class labels, got {k}")
        self._coef = self.floats("coefficients", required=True)
        self._rho = self.floats("rho", required=True)
        self._post = check_post_transform(self.where(), self.attr("post_transform"))
        prob_a, prob_b = self.floats("prob_a"), self.floats("prob_b")
        if (prob_a is None) != (prob_b is None) or (
                prob_a is not None and len(prob_a) != len(prob_b)):
            raise self.error("prob_a and prob_b must both be given, with the same length")
        per_class = self.ints("vectors_per_class")
        self._svc = per_class is not None
        pairs = k * (k - 1) // 2
        if self._svc:
            if len(per_class) != k or (per_class < 0).any() or per_class.sum() == 0:
                raise self.error(f"vectors_per_class must hold {k} non-negative counts (one per "
                                 f"class, not all 0), got {per_class.tolist()}")
            self._count = int(per_class.sum())
            if len(self._coef) != (k - 1) * self._count:
                raise self.error(f"{len(self._coef)} coefficients; {k} classes and "
                                 f"{self._count} support vectors need {(k - 1) * self._count}")
            if len(self._rho) != pairs:
                raise self.error(f"rho has {len(self._rho)} values; {k} classes need one per "
                                 f"class pair ({pairs})")
            if prob_a is not None and len(prob_a) != pairs:
                raise self.error(f"prob_a has {len(prob_a)} values; {k} classes need one per "
                                 f"class pair ({pairs})")
            self._pair_weights(per_class)
        else:
            if self.floats("support_vectors") is not None:
                raise self.error("support_vectors given without vectors_per_class")
            if prob_a is not None:
                raise self.error("prob_a / prob_b need support vectors (vectors_per_class)")
            if len(self._rho) != 1:
                raise self.error(f"a linear SVMClassifier takes one rho, got {len(self._rho)}")
            self._all_positive = bool((self._coef >= 0).all())
        self._prob = (prob_a, prob_b) if prob_a is not None else None

    def _pair_weights(self, per_class: np.ndarray) -> None:
        """``self._pair_w`` [V, pairs]: the decision value of pair (i, j) is
        ``K(x, sv) @ pair_w[:, p] + rho[p]``, with libsvm's coefficient layout
        (``coefficients`` [k - 1, V]: class i's vectors weigh ``coef[j - 1]`` against class j,
        class j's weigh ``coef[i]``)."""
        k, v = len(per_class), self._count
        coef = self._coef.astype(np.float64).reshape(k - 1, v)
        start = np.concatenate([[0], np.cumsum(per_class)])
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        w = np.zeros((v, len(pairs)))
        for p, (i, j) in enumerate(pairs):
            w[start[i]:start[i + 1], p] = coef[j - 1, start[i]:start[i + 1]]
            w[start[j]:start[j + 1], p] = coef[i, start[j]:start[j + 1]]
        self._pair_w = w
        self._pairs = pairs

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", NUMERIC)
        n, f = self.rows(x)
        k = len(self._labels)
        if self._svc:
            self._sv, self._sv_sq = self.packed(f, lambda: self.support_vectors(self._count, f))
            width = k if self._prob is not None else max(len(self._pairs), 2)
        else:
            if len(self._coef) != k * f:
                raise self.error(f"{len(self._coef)} coefficients; {k} classes of X's {f} "
                                 f"features need {k * f}", ShapeError)
            self._wt = self.packed(f, lambda: self._coef.astype(np.float64).reshape(k, f).T.copy())
            width = k
        return [TensorInfo((n,), self._labels.dtype), TensorInfo((n, width), F32)]

    def compute(self, inputs):
        x = _as_2d(inputs[0], np.float64)
        if not self._svc:
            return self._linear(x)
        decision = self.kernel_matrix(x, self._sv, self._sv_sq) @ self._pair_w + self._rho
        votes = np.zeros((len(x), len(self._labels)), dtype=np.int64)
        for p, (i, j) in enumerate(self._pairs):
            wins = decision[:, p] > 0
            votes[:, i] += wins
            votes[:, j] += ~wins
        labels = self._labels[np.argmax(votes, axis=1)]
        scores = decision.astype(np.float32)
        if self._prob is not None:
            return [labels, apply_post_transform(self._probabilities(scores), self._post)]
        if len(self._pairs) == 1:
            return [labels, _binary_scores(scores[:, 0], self._post, negate_raw=True)]
        return [labels, apply_post_transform(scores, self._post)]

    def _linear(self, x: np.ndarray) -> list[np.ndarray]:
        scores = (x @ self._wt + self._rho[0]).astype(np.float32)
        best = np.argmax(scores, axis=1)
        if len(self._labels) == 2:  # onnxruntime's (and the ONNX reference's) binary rule
            top = scores[np.arange(len(scores)), best]
            second = (top >= 0.5) if self._all_positive else (top > 0)
            best = np.where(second, 1, best)
        return [self._labels[best], apply_post_transform(scores, self._post)]

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities [N, k] from the pair decision values, libsvm's way: Platt's
        sigmoid per pair, then pairwise coupling (float32, as onnxruntime)."""
        prob_a, prob_b = self._prob
        k = len(self._labels)
        r = np.zeros((len(scores), k, k), dtype=np.float32)
        pair = 1 - logistic(scores * prob_a + prob_b)
        pair = np.minimum(np.maximum(pair, np.float32(1e-7)), np.float32(1 - 1e-7))
        for p, (i, j) in enumerate(self._pairs):
            r[:, i, j] = pair[:, p]
            r[:, j, i] = 1 - pair[:, p]
        return _pairwise_coupling(r)


def _pairwise_coupling(r: np.ndarray) -> np.ndarray:
    """libsvm's ``multiclass_probability`` (Wu, Lin and Weng 2004, method 2) per row, in float32
    and with at most 100 sweeps like onnxruntime: ``r`` [N, k, k] holds
    ``r[:, i, j] = P(class i | class i or j)``; a row stops when ``max |Qp - pQp| < 0.005 / k``.
    Compiled: the NumPy form (vectorized over rows, a Python loop over sweeps and classes) took
    0.15 ms of a 0.18 ms single-row SVC."""
    p = np.empty(r.shape[:2], np.float32)
    _coupling(np.ascontiguousarray(r, dtype=np.float32), p)
    return p


@njit(fastmath=False)
def _coupling(r, p):
    n, k, _ = r.shape
    q = np.zeros((k, k), np.float32)
    qp = np.zeros(k, np.float32)
    one = np.float32(1.0)
    eps = np.float32(0.005) / np.float32(k)
    for row in range(n):
        for i in range(k):
            p[row, i] = one / np.float32(k)
            q[i, i] = 0
            for j in range(i):
                q[i, i] += r[row, j, i] * r[row, j, i]
                q[i, j] = q[j, i]
            for j in range(i + 1, k):
                q[i, i] += r[row, j, i] * r[row, j, i]
                q[i, j] = -r[row, j, i] * r[row, i, j]
        for _ in range(100):
            pqp = np.float32(0.0)
            for i in range(k):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += q[i, j] * p[row, j]
                qp[i] = acc
                pqp += p[row, i] * qp[i]
            worst = np.float32(0.0)
            for i in range(k):
                worst = max(worst, abs(qp[i] - pqp))
            if worst < eps:
                break
            for i in range(k):
                diff = (-qp[i] + pqp) / q[i, i]
                p[row, i] += diff
                grow = one + diff
                pqp = (pqp + diff * (diff * q[i, i] + np.float32(2.0) * qp[i])) / grow / grow
                for j in range(k):
                    qp[j] = (qp[j] + diff * q[i, j]) / grow
                    p[row, j] /= grow


# ----- maps ---------------------------------------------------------------------------------------
class ZipMap(_MLKernel):
    """ZipMap: each row of X (float32 [N, C] or [C]) as a dict {label: value}, keys in ascending
    order (onnxruntime's ``std::map``; the last of repeated labels wins); a list of N dicts (a
    ``seq(map)`` value)."""

    traits = OpTraits(makes_sequence=True)

    def setup(self):
        labels, _ = class_labels(self, self.where())
        if not len(labels):
            raise self.error("needs at least one label")
        self._labels = len(labels)
        column = {label: i for i, label in enumerate(labels.tolist())}
        self._keys = sorted(column)
        self._columns = np.array([column[k] for k in self._keys], dtype=np.intp)

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        x = self.tensor_input(inputs, 0, "X", (F32,))
        if len(x.shape) not in (1, 2):
            raise self.error(f"X must be [N, C] or [C], got shape {x.shape}", ShapeError)
        if x.shape[-1] != self._labels:
            raise self.error(f"X has {x.shape[-1]} columns for {self._labels} labels",
                             ShapeError)
        return [TensorInfo(None, OBJECT)]

    def compute(self, inputs):
        keys = self._keys
        rows = inputs[0].reshape(-1, self._labels)[:, self._columns]
        return [[dict(zip(keys, row)) for row in rows]]

    def invoke(self, inputs, outputs):
        return self.compute(inputs)


def _map_input(kernel: _MLKernel, info: TensorInfo, sequence_ok: bool) -> dict | list | None:
    """A map (or sequence of maps) input's value; None while it is unknown (planning)."""
    if info.shape is not None:
        raise kernel.error(f"X must be a map{' or a sequence of maps' if sequence_ok else ''}, "
                           f"got a tensor of shape {info.shape}", InputError)
    value = info.value
    if value is None or isinstance(value, dict):
        return value
    if sequence_ok and isinstance(value, list) and all(isinstance(d, dict) for d in value):
        return value
    raise kernel.error(f"X must be a map{' or a sequence of maps' if sequence_ok else ''}",
                       InputError)


def _value_dtype(maps: list[dict]) -> np.dtype:
    """The value type of maps as the runtime holds them (NumPy scalars, or str)."""
    for d in maps:
        for v in d.values():
            return OBJECT if isinstance(v, str) else np.asarray(v).dtype
    return F32  # no value at all: the output is all zeros, of float (the common case)


class DictVectorizer(_MLKernel):
    """DictVectorizer: a map's values at their key's positions in the vocabulary ([1, V]), a
    sequence of maps one row each ([N, V]); 0 ("" for strings) where a key is absent."""

    traits = OpTraits(takes_sequences=True)

    def setup(self):
        ints = self.ints("int64_vocabulary")
        strings = self.attr("string_vocabulary") or None
        if (ints is None) == (strings is None):
            raise self.error("needs exactly one of int64_vocabulary and string_vocabulary "
                             "(non-empty)")
        vocab = ints.tolist() if ints is not None else [str(s) for s in strings]
        self._string_keys = strings is not None
        self._positions: dict = {}
        for i, key in enumerate(vocab):  # a repeated key fills every one of its positions
            self._positions.setdefault(key, []).append(i)
        self._width = len(vocab)

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        value = _map_input(self, inputs[0], sequence_ok=True)
        if value is None:
            return [TensorInfo(None, F32)]
        maps = [value] if isinstance(value, dict) else value
        for d in maps:
            for key in d:
                if isinstance(key, str) != self._string_keys:
                    raise self.error(f"map key {key!r} does not match the "
                                     f"{'string' if self._string_keys else 'int64'} vocabulary",
                                     DTypeError)
                break
        return [TensorInfo((len(maps), self._width), _value_dtype(maps))]

    def compute(self, inputs):
        maps = [inputs[0]] if isinstance(inputs[0], dict) else inputs[0]
        dtype = _value_dtype(maps)
        out = np.full((len(maps), self._width), "" if dtype == OBJECT else 0, dtype=dtype)
        positions = self._positions
        for row, d in enumerate(maps):
            for key, v in d.items():
                for col in positions.get(key, ()):
                    out[row, col] = v
        return [out]


class CastMap(_MLKernel):
    """CastMap: a map(int64, float | string) to a [1, n] tensor in key order: DENSE takes the
    map's values, SPARSE puts each at its key's position in ``max_map`` slots."""

    traits = OpTraits(takes_sequences=True)
    _TYPES = {"TO_FLOAT": F32, "TO_INT64": I64, "TO_STRING": OBJECT}
    _PAD = {"TO_FLOAT": 0.0, "TO_INT64": 0, "TO_STRING": "0.f"}

    def setup(self):
        self._cast = self.choice("cast_to", "TO_FLOAT", tuple(self._TYPES))
        self._sparse = self.choice("map_form", "DENSE", ("DENSE", "SPARSE")) == "SPARSE"
        self._max = int(self.attr("max_map", 1))
        if self._sparse and self._max < 0:
            raise self.error(f"max_map must not be negative, got {self._max}")

    def check(self, inputs):
        self.require_inputs(inputs, 1, 1)
        value = _map_input(self, inputs[0], sequence_ok=False)
        dtype = self._TYPES[self._cast]
        if value is None:
            return [TensorInfo(None, dtype)]
        for key in value:
            if isinstance(key, str):
                raise self.error(f"map key {key!r} is a string; CastMap takes int64 keys",
                                 DTypeError)
            if self._sparse and not 0 <= key < self._max:
                raise self.error(f"key {key} is outside [0, max_map) = [0, {self._max}) of the "
                                 "SPARSE form", InputError)
        return [TensorInfo((1, self._max if self._sparse else len(value)), dtype)]

    def compute(self, inputs):
        d = inputs[0]
        keys = sorted(d)
        values = [self._convert(d[k]) for k in keys]
        dtype = self._TYPES[self._cast]
        if not self._sparse:
            return [np.array(values, dtype=dtype).reshape(1, len(values))]
        out = np.full((1, self._max), self._PAD[self._cast], dtype=dtype)
        out[0, keys] = values
        return [out]

    def _convert(self, v):
        if isinstance(v, str):
            try:
                if self._cast == "TO_FLOAT":
                    return np.float32(float(v))
                return int(v) if self._cast == "TO_INT64" else v
            except ValueError:
                raise self.error(f"map value {v!r} is not a number", InputError) from None
        v = np.float32(v)
        if self._cast == "TO_FLOAT":
            return v
        if self._cast == "TO_STRING":
            return f"{float(v):f}"  # C's %f, as std::to_string
        if not abs(v) < 2.0**63:  # NaN, inf, out of range
            raise self.error(f"map value {v} has no int64 value", InputError)
        return int(v)


def register(reg: KernelRegistry) -> None:
    for name, kernel in (
        ("ArrayFeatureExtractor", ArrayFeatureExtractor), ("Binarizer", Binarizer),
        ("CastMap", CastMap), ("CategoryMapper", CategoryMapper),
        ("DictVectorizer", DictVectorizer), ("FeatureVectorizer", FeatureVectorizer),
        ("Imputer", Imputer), ("LabelEncoder", LabelEncoder),
        ("LinearClassifier", LinearClassifier), ("LinearRegressor", LinearRegressor),
        ("Normalizer", Normalizer), ("OneHotEncoder", OneHotEncoder),
        ("SVMClassifier", SVMClassifier), ("SVMRegressor", SVMRegressor), ("Scaler", Scaler),
        ("ZipMap", ZipMap),
    ):
        reg.add(name, kernel, domain=ML_DOMAIN, since=1)
