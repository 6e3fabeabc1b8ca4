"""What the ai.onnx.ml classifiers and regressors share: score post-transforms and class labels.

``post_transform`` (LinearClassifier, SVMClassifier, TreeEnsembleClassifier / Regressor,
TreeEnsemble) maps the raw scores of each row:

* ``NONE``: unchanged;
* ``LOGISTIC``: ``1 / (1 + exp(-x))``, computed on ``|x|`` so that it never overflows;
* ``SOFTMAX``: over the row, after subtracting its maximum;
* ``SOFTMAX_ZERO``: a softmax in which a score of exactly zero (``|x| <= 1e-7``) stays zero (a
  class no tree voted for); a row of only such scores becomes 0.5 everywhere;
* ``PROBIT``: ``sqrt(2) * erfinv(2x - 1)`` with the closed-form inverse error function of
  Winitzki (``a = 0.147``, relative error ~2e-3) in float32, the approximation onnxruntime
  computes, so that probit outputs agree with it and not with an exact erfinv.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import KernelError

POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")


def check_post_transform(where: str, name) -> str:
    """The ``post_transform`` attribute, or a KernelError naming the allowed values."""
    name = "NONE" if name is None else name
    if name not in POST_TRANSFORMS:
        raise KernelError(f"{where}: post_transform must be one of {', '.join(POST_TRANSFORMS)}, "
                          f"got {name!r}")
    return name


def logistic(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    v = 1.0 / (1.0 + e)
    return np.where(x < 0, 1.0 - v, v).astype(x.dtype, copy=False)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a [N, C] array."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(x.dtype, copy=False)


def softmax_zero(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax in which (near-)zero scores stay zero (see the module docstring)."""
    top = x.max(axis=1, keepdims=True)
    zero = np.abs(x) <= 1e-7
    e = np.where(zero, x * np.exp(-top), np.exp(x - top))
    s = e.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s == 0, 0.5, e / s)
    return out.astype(x.dtype, copy=False)


def erfinv_approx(x: np.ndarray) -> np.ndarray:
    """Winitzki's closed-form inverse error function (a = 0.147), in float32 with onnxruntime's
    constants (pi as 3.14159): erfinv(+-1) is +-inf."""
    x = np.asarray(x, np.float32)
    sgn = np.where(x < 0, np.float32(-1), np.float32(1))
    w = (np.float32(1) - x) * (np.float32(1) + x)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(w)
        a = np.float32(2 / (3.14159 * 0.147)) + np.float32(0.5) * lg
        b = lg / np.float32(0.147)
        return sgn * np.sqrt(-a + np.sqrt(a * a - b))


def probit(x: np.ndarray) -> np.ndarray:
    return (np.float32(1.41421356) * erfinv_approx(np.float32(2) * x - np.float32(1))).astype(
        x.dtype, copy=False)


def apply_post_transform(scores: np.ndarray, name: str) -> np.ndarray:
    """``scores`` [N, C] after ``post_transform`` ``name`` (a new array unless NONE)."""
    if name == "LOGISTIC":
        return logistic(scores)
    if name == "SOFTMAX":
        return softmax(scores)
    if name == "SOFTMAX_ZERO":
        return softmax_zero(scores)
    if name == "PROBIT":
        return probit(scores)
    return scores


def class_labels(kernel, where: str) -> tuple[np.ndarray, bool]:
    """A classifier's ``classlabels_int64s`` / ``classlabels_strings`` (exactly one of them):
    ``(labels, is_string)`` with labels an int64 array or an object array of str."""
    name = "classlabels_int64s" if kernel.attr("classlabels_int64s") is not None or \
        kernel.attr("classlabels_ints") is None else "classlabels_ints"
    ints = kernel.attr(name)
    strings = kernel.attr("classlabels_strings")
    if (ints is None) == (strings is None):
        raise KernelError(f"{where}: needs exactly one of {name} and classlabels_strings")
    if strings is not None:
        return np.array([str(s) for s in strings], dtype=object), True
    return np.asarray(ints, dtype=np.int64).reshape(-1), False
