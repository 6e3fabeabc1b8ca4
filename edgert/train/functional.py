"""Neural-network ops on :class:`~edgert.train.tensor.Tensor`: layers' maths and losses.

As in ``torch.nn.functional``, modules hold the state and these functions hold the maths. Each
op with its own gradient rule keeps the backward closure right beside the forward; the others
are compositions of differentiable primitives (their gradient comes for free).

Convolution is im2col + one (batched, over groups) matrix product:
``Y[g] = W[g] @ cols[g]`` with ``W[g]`` of shape ``(O/G, C/G*KH*KW)``; the backward pass is
``dW[g] = dY[g] @ cols[g]^T`` and ``dX = col2im(W[g]^T @ dY[g])``. im2col/col2im and pooling are
Numba kernels (:mod:`edgert.train._kernels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgert.errors import ShapeError
from edgert.train import _kernels as K
from edgert.train import tensor as T
from edgert.train.tensor import (  # noqa: F401  (re-exported: F.relu etc.)
    Tensor,
    _make,
    gelu,
    hardswish,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    softmax,
    tanh,
)


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if len(v) != 2:
        raise ShapeError(f"{name} must be an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


# ----- linear and convolution ------------------------------------------------------------------
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` with one fused node (exported as Gemm for 2-D inputs)."""
    if x.shape[-1] != weight.shape[1]:
        raise ShapeError(f"linear: input of shape {x.shape} does not fit weight of shape "
                         f"{weight.shape} (in_features {x.shape[-1]} != {weight.shape[1]})")
    out = x.data @ weight.data.T
    if bias is not None:
        out = out + bias.data
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g: np.ndarray) -> tuple:
        gx = g @ weight.data if x.requires_grad else None
        g2 = g.reshape(-1, g.shape[-1])
        gw = g2.T @ x.data.reshape(-1, x.shape[-1]) if weight.requires_grad else None
        gb = g2.sum(axis=0) if bias is not None else None
        return gx, gw, gb

    return _make(out, parents, backward, "Linear")


def _gmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix products over the group axis. One group (the common case) goes straight to a 2-D
    BLAS call: ``np.matmul`` on a stack of one measured 1.7x slower than the plain 2-D product
    for a (64, 256) x (256, 64) float32 case."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.matmul(a, b)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation) of ``x`` (N, C, H, W) with ``weight`` (O, C/G, KH, KW).
    """
    if x.ndim != 4 or weight.ndim != 4:
        raise ShapeError(f"conv2d: input {x.shape} and weight {weight.shape} must both be 4-D "
                         "(N, C, H, W) and (O, C/groups, KH, KW)")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups or c // groups != cg:
        raise ShapeError(f"conv2d: input of shape {x.shape} does not fit weight of shape "
                         f"{weight.shape} with groups={groups} (input channels {c} / groups "
                         f"must equal weight dim 1 = {cg}, and {o} output channels must divide "
                         "by groups)")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ShapeError("conv2d: stride and dilation must be >= 1 and padding >= 0")
    oh, ow = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv2d: input {x.shape} is smaller than the (dilated) kernel "
                         f"{weight.shape[2:]} with padding {(ph, pw)}")
    geo = (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    xd = np.ascontiguousarray(x.data)
    cols = np.empty((c * kh * kw, n * oh * ow), x.dtype)
    K.im2col(xd, cols, *geo)
    g_n = groups
    wg = weight.data.reshape(g_n, o // g_n, cg * kh * kw)
    colsg = cols.reshape(g_n, cg * kh * kw, n * oh * ow)
    y = _gmm(wg, colsg).reshape(o, n, oh, ow).transpose(1, 0, 2, 3)
    if bias is not None:
        y = y + bias.data.reshape(1, o, 1, 1)
    y = np.ascontiguousarray(y)
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g: np.ndarray) -> tuple:
        gy = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(g_n, o // g_n, n * oh * ow)
        gw = gx = gb = None
        if weight.requires_grad:
            gw = _gmm(gy, colsg.transpose(0, 2, 1)).reshape(weight.shape)
        if x.requires_grad:
            gcols = _gmm(wg.transpose(0, 2, 1), gy).reshape(c * kh * kw, n * oh * ow)
            gx = np.zeros(x.shape, x.dtype)
            K.col2im(gcols, gx, *geo)
        if bias is not None:
            gb = g.sum(axis=(0, 2, 3))
        return gx, gw, gb

    return _make(y, parents, backward, "Conv",
                 {"strides": (sh, sw), "pads": (ph, pw, ph, pw), "dilations": (dh, dw),
                  "group": groups, "kernel_shape": (kh, kw)})


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1,
           padding: int = 0, dilation: int = 1, groups: int = 1) -> Tensor:
    """1-D convolution of (N, C, L) as a 2-D one over (N, C, 1, L)."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ShapeError(f"conv1d: input {x.shape} and weight {weight.shape} must both be 3-D")
    y = conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, (1, stride), (0, padding),
               (1, dilation), groups)
    return y.squeeze(2)


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, dilation: Any = 1) -> Tensor:
    """Transposed convolution (the gradient of conv2d w.r.t. its input); ``weight`` (C, O, KH, KW).

    ``cols = W^T @ x`` then ``col2im``; backward: ``dx = W @ im2col(dy)``,
    ``dW = x @ im2col(dy)^T``. Groups are not supported.
    """
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    oph, opw = _pair(output_padding, "output_padding")
    dh, dw = _pair(dilation, "dilation")
    n, c, h, w = x.shape
    if weight.ndim != 4 or weight.shape[0] != c:
        raise ShapeError(f"conv_transpose2d: input of shape {x.shape} does not fit weight of "
                         f"shape {weight.shape} (weight dim 0 must equal input channels {c})")
    _, o, kh, kw = weight.shape
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    geo = (kh, kw, sh, sw, ph, pw, dh, dw, h, w)
    w2 = weight.data.reshape(c, o * kh * kw)
    xm = np.ascontiguousarray(x.data.transpose(1, 0, 2, 3)).reshape(c, n * h * w)
    cols = np.ascontiguousarray(w2.T @ xm)
    y = np.zeros((n, o, oh, ow), x.dtype)
    K.col2im(cols, y, *geo)
    if bias is not None:
        y += bias.data.reshape(1, o, 1, 1)
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g: np.ndarray) -> tuple:
        gcols = np.empty((o * kh * kw, n * h * w), x.dtype)
        K.im2col(np.ascontiguousarray(g), gcols, *geo)
        gx = (w2 @ gcols).reshape(c, n, h, w).transpose(1, 0, 2, 3) if x.requires_grad else None
        gw = (xm @ gcols.T).reshape(weight.shape) if weight.requires_grad else None
        gb = g.sum(axis=(0, 2, 3)) if bias is not None else None
        return gx, gw, gb

    return _make(y, parents, backward, "ConvTranspose",
                 {"strides": (sh, sw), "pads": (ph, pw, ph, pw), "dilations": (dh, dw),
                  "output_padding": (oph, opw), "kernel_shape": (kh, kw)})


# ----- pooling ------------------------------------------------------------------------------------
def _pool_geometry(x: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                   name: str) -> tuple:
    if x.ndim != 4:
        raise ShapeError(f"{name}: input must be 4-D (N, C, H, W), got {x.shape}")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if ph > kh // 2 or pw > kw // 2:
        raise ShapeError(f"{name}: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    oh = _out_size(x.shape[2], kh, sh, ph, dh)
    ow = _out_size(x.shape[3], kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise ShapeError(f"{name}: input {x.shape} is smaller than the kernel {(kh, kw)}")
    return kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


def max_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1) -> Tensor:
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _pool_geometry(
        x, kernel_size, stride, padding, dilation, "max_pool2d")
    xd = np.ascontiguousarray(x.data)
    y = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    idx = np.empty(y.shape, np.int64)
    K.max_pool_fwd(xd, y, idx, kh, kw, sh, sw, ph, pw, dh, dw)

    def backward(g: np.ndarray) -> tuple:
        gx = np.zeros(x.shape, x.dtype)
        K.max_pool_bwd(np.ascontiguousarray(g), idx, gx)
        return (gx,)

    return _make(y, (x,), backward, "MaxPool",
                 {"kernel_shape": (kh, kw), "strides": (sh, sw), "pads": (ph, pw, ph, pw),
                  "dilations": (dh, dw)})


def avg_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True) -> Tensor:
    kh, kw, sh, sw, ph, pw, _, _, oh, ow = _pool_geometry(
        x, kernel_size, stride, padding, 1, "avg_pool2d")
    y = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    geo = (kh, kw, sh, sw, ph, pw, count_include_pad)
    K.avg_pool_fwd(np.ascontiguousarray(x.data), y, *geo)

    def backward(g: np.ndarray) -> tuple:
        gx = np.zeros(x.shape, x.dtype)
        K.avg_pool_bwd(np.ascontiguousarray(g), gx, *geo)
        return (gx,)

    return _make(y, (x,), backward, "AveragePool",
                 {"kernel_shape": (kh, kw), "strides": (sh, sw), "pads": (ph, pw, ph, pw),
                  "count_include_pad": int(count_include_pad)})


def adaptive_avg_pool2d(x: Tensor, output_size: Any) -> Tensor:
    if x.ndim != 4:
        raise ShapeError(f"adaptive_avg_pool2d: input must be 4-D, got {x.shape}")
    oh, ow = _pair(output_size, "output_size")
    y = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    K.adaptive_avg_fwd(np.ascontiguousarray(x.data), y)

    def backward(g: np.ndarray) -> tuple:
        gx = np.zeros(x.shape, x.dtype)
        K.adaptive_avg_bwd(np.ascontiguousarray(g), gx)
        return (gx,)

    return _make(y, (x,), backward, "AdaptiveAvgPool",
                 {"output_size": (oh, ow), "input_size": x.shape[2:]})


# ----- normalization, dropout, embedding -------------------------------------------------------
def batch_norm(x: Tensor, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over all axes but 1; in training also updates the running stats.

    Running variance uses the unbiased batch variance (PyTorch's rule); normalization uses the
    biased one. Backward (training), with ``xh`` the normalized input and ``m`` the count:
    ``dx = (dxh - mean(dxh) - xh * mean(dxh * xh)) / sqrt(var + eps)``.
    """
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: input needs a channel axis, got shape {x.shape}")
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    if training:
        m = x.data.size // c
        if m < 2:
            raise ShapeError(f"batch_norm: training needs more than one value per channel, "
                             f"got input shape {x.shape}")
        mu = x.data.mean(axis=axes)
        var = x.data.var(axis=axes)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mu
            running_var *= 1 - momentum
            running_var += momentum * var * (m / (m - 1))
    else:
        mu, var = running_mean, running_var
    inv = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xh = (x.data - mu.reshape(bshape).astype(x.dtype)) * inv.reshape(bshape)
    gamma = weight.data.reshape(bshape) if weight is not None else 1
    out = xh * gamma + (bias.data.reshape(bshape) if bias is not None else 0)
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g: np.ndarray) -> tuple:
        gxh = g * gamma
        if training:
            gx = (gxh - gxh.mean(axis=axes, keepdims=True)
                  - xh * (gxh * xh).mean(axis=axes, keepdims=True)) * inv.reshape(bshape)
        else:
            gx = gxh * inv.reshape(bshape)
        grads = [gx]
        if weight is not None:
            grads.append((g * xh).sum(axis=axes))
        if bias is not None:
            grads.append(g.sum(axis=axes))
        return grads

    attrs = {"eps": eps, "mean": running_mean, "var": running_var, "training": training,
             "has_weight": weight is not None, "has_bias": bias is not None}
    return _make(out.astype(x.dtype), parents, backward, "BatchNormalization", attrs)


def layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the last ``len(normalized_shape)`` axes (same backward as batch norm)."""
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if x.shape[-k:] != normalized_shape:
        raise ShapeError(f"layer_norm: input of shape {x.shape} does not end with the "
                         f"normalized shape {normalized_shape}")
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.data.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(x.data.var(axis=axes, keepdims=True) + eps)
    xh = (x.data - mu) * inv
    gamma = weight.data if weight is not None else 1
    out = xh * gamma + (bias.data if bias is not None else 0)
    parents = tuple(t for t in (x, weight, bias) if t is not None)
    lead = tuple(range(x.ndim - k))

    def backward(g: np.ndarray) -> tuple:
        gxh = g * gamma
        gx = (gxh - gxh.mean(axis=axes, keepdims=True)
              - xh * (gxh * xh).mean(axis=axes, keepdims=True)) * inv
        grads = [gx]
        if weight is not None:
            grads.append((g * xh).sum(axis=lead))
        if bias is not None:
            grads.append(g.sum(axis=lead))
        return grads

    return _make(out.astype(x.dtype), parents, backward, "LayerNormalization",
                 {"axis": -k, "epsilon": eps, "has_weight": weight is not None,
                  "has_bias": bias is not None})


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability ``p``, scale the rest by ``1/(1-p)`` (training only)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep = (T.rng().random(x.shape) >= p).astype(x.dtype) / (1 - p)
    return x * Tensor(keep)


def embedding(indices: Any, weight: Tensor) -> Tensor:
    """Rows of ``weight`` picked by an integer tensor of any shape."""
    idx = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if idx.dtype.kind not in "iu":
        raise ShapeError(f"embedding: indices must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        raise ShapeError(f"embedding: index out of range for {weight.shape[0]} embeddings")
    return weight[idx]


# ----- losses -------------------------------------------------------------------------------------
# PyTorch's semantics, option for option (torch.nn.functional). Argument order: the third
# positional argument is ``reduction`` (``label_smoothing`` then ``reduction`` for
# cross_entropy), as this module always had it; every other option is keyword-only. PyTorch
# spells ``weight`` third: pass it by name here (a tensor in the reduction slot raises TypeError).
#
# Class weights, ``pos_weight`` and ``weight`` are constants (no gradient). Targets that are
# Tensors with ``requires_grad`` get a gradient wherever PyTorch gives one (probability targets
# of cross_entropy, the targets of the regression losses, BCE, KL divergence).
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: Any, name: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    if not isinstance(reduction, str):
        raise TypeError(f"{name}: reduction must be one of {allowed}, got "
                        f"{type(reduction).__name__} (options such as weight= are keyword-only "
                        "here)")
    if reduction not in allowed:
        quoted = ", ".join(repr(r) for r in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"reduction must be {quoted}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction, "loss")
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _reduced(per: np.ndarray, reduction: str, denom: float, dtype: np.dtype) -> np.ndarray:
    """The loss value: ``per`` itself, its sum, or its sum over ``denom``."""
    if reduction == "none":
        return per.astype(dtype, copy=False)
    total = per.sum()
    if reduction != "sum":  # mean / batchmean: 0 / 0 is NaN, as in PyTorch
        with np.errstate(invalid="ignore", divide="ignore"):
            total = total / denom
    return np.asarray(total, dtype)


def _upstream(g: np.ndarray, reduction: str, denom: float) -> np.ndarray:
    """The output gradient as a factor on the per-element gradient (broadcastable to it)."""
    if reduction == "none" or reduction == "sum":
        return g
    with np.errstate(invalid="ignore", divide="ignore"):
        return g / denom


def _array(x: Any, dtype: Any = None) -> np.ndarray:
    a = np.asarray(x.data if isinstance(x, Tensor) else x)
    return a if dtype is None else a.astype(dtype, copy=False)


def _target_tensor(target: Any, like: Tensor) -> Tensor:
    """``target`` as a Tensor of ``like``'s dtype: the caller's Tensor (so a gradient reaches it)
    when it already has that dtype, else a constant."""
    if isinstance(target, Tensor) and target.dtype == like.dtype:
        return target
    return Tensor(_array(target, like.dtype))


def _weight(weight: Any, n: int, dtype: np.dtype, name: str) -> np.ndarray | None:
    if weight is None:
        return None
    w = _array(weight, dtype)
    if w.shape != (n,):
        raise ShapeError(f"{name}: weight must hold one value per class, shape ({n},), got "
                         f"{w.shape}")
    return w


def _classes_last(x: Tensor, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Input (C,), (N, C) or (N, C, d1, ...) as rows (M, C); returns ``(rows, batch_shape)``
    with batch shape ``()``, ``(N,)`` or ``(N, d1, ...)``."""
    if x.ndim == 0:
        raise ShapeError(f"{name}: input must be (C,), (N, C) or (N, C, d1, ...), got a scalar")
    if x.ndim == 1:
        return x.data[None], ()
    c = x.shape[1]
    rows = np.moveaxis(x.data, 1, -1).reshape(-1, c)
    return rows, (x.shape[0],) + x.shape[2:]


def _rows_back(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_classes_last` for an array of the rows' shape."""
    if len(shape) == 1:
        return rows[0]
    c = shape[1]
    return np.ascontiguousarray(np.moveaxis(rows.reshape((shape[0],) + shape[2:] + (c,)), -1, 1))


def _class_targets(x: Tensor, t: np.ndarray, batch: tuple[int, ...], ignore_index: int,
                   name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate class-index targets; returns ``(safe, valid)`` flattened: ``safe`` has the ignored
    positions replaced by class 0, ``valid`` marks the others."""
    if t.dtype.kind not in "iu":
        raise ShapeError(f"{name}: targets must be class indices (integers) of shape {batch}, or "
                         f"class probabilities of the input's shape {x.shape}; got {t.dtype} "
                         f"targets of shape {t.shape}")
    if t.shape != batch:
        raise ShapeError(f"{name}: input of shape {x.shape} needs targets of shape {batch}, "
                         f"got {t.shape}")
    flat = t.reshape(-1).astype(np.int64)
    valid = flat != ignore_index
    c = x.shape[0] if x.ndim == 1 else x.shape[1]
    if np.any(valid & ((flat < 0) | (flat >= c))):
        raise ShapeError(f"{name}: target class out of range [0, {c}) (and not ignore_index "
                         f"{ignore_index})")
    return np.where(valid, flat, 0), valid


def cross_entropy(input: Tensor, target: Any, label_smoothing: float = 0.0,
                  reduction: str = "mean", *, weight: Any = None,
                  ignore_index: int = -100) -> Tensor:
    """Softmax cross-entropy from logits, as ``torch.nn.functional.cross_entropy``.

    ``input`` is (C,), (N, C) or (N, C, d1, ...) logits (class axis 1). ``target`` is either
    class indices of shape (), (N,) or (N, d1, ...), or class probabilities of the input's own
    shape (floating point; the shapes decide, as in PyTorch).

    Class indices, with class weights ``w`` (1 without ``weight``), smoothing ``e`` over ``C``
    classes and ``v`` = 0 where the target is ``ignore_index``::

        loss_i = v_i * ((1 - e) * -w[y_i] * logp_i[y_i] + e / C * -sum_c w[c] * logp_i[c])

    ``'mean'`` divides the sum by ``sum_i v_i * w[y_i]`` (PyTorch's weighted mean; NaN when every
    target is ignored). Probabilities ``p`` (``ignore_index`` is not allowed)::

        loss_i = -sum_c w[c] * ((1 - e) * p_i[c] + e / C) * logp_i[c]

    and ``'mean'`` divides by the number of positions ``N * d1 * ...``.

    One fused op on log-softmax (no log of 0, no overflow): writing the loss as
    ``-sum_c Q[c] * logp[c]``, the gradient is ``softmax * sum(Q) - Q``.
    """
    if isinstance(label_smoothing, (Tensor, np.ndarray, list, tuple)):
        raise TypeError("cross_entropy: the third positional argument is label_smoothing (a "
                        "float); pass class weights by name: weight=...")
    _check_reduction(reduction, "cross_entropy")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    t = _array(target)
    rows, batch = _classes_last(input, "cross_entropy")
    m, c = rows.shape
    dtype = input.dtype
    w = _weight(weight, c, dtype, "cross_entropy")
    shifted = rows - rows.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    soft = t.shape == input.shape
    tt = None
    if soft:
        if t.dtype.kind != "f":
            raise ShapeError(f"cross_entropy: targets of the input's shape {input.shape} are class "
                             f"probabilities and must be floating point, got {t.dtype}")
        if ignore_index >= 0:
            raise ValueError("cross_entropy: ignore_index is not supported for probability "
                             "targets")
        tt = _target_tensor(target, input)
        trows = (tt.data[None] if input.ndim == 1
                 else np.moveaxis(tt.data, 1, -1).reshape(-1, c))
        q = (1 - eps) * trows + eps / c
        if w is not None:
            q = q * w
        per = -(q * logp).sum(axis=1)
        denom = float(m)
    else:
        safe, valid = _class_targets(input, t, batch, ignore_index, "cross_entropy")
        wy = (w[safe] if w is not None else np.ones(m, dtype)) * valid
        # Gather rather than sum Q * logp: a -inf logit of another class must not give 0 * -inf.
        picked = np.where(valid, logp[np.arange(m), safe], 0.0)
        per = -(1 - eps) * wy * picked
        q = np.zeros((m, c), dtype)
        q[np.arange(m), safe] = (1 - eps) * wy
        if eps:
            wc = w if w is not None else np.ones(c, dtype)
            per = per - eps / c * np.where(valid, (logp * wc).sum(axis=1), 0.0)
            q += (eps / c) * wc * valid[:, None]
        denom = float(wy.sum())
    out = _reduced(per.reshape(batch), reduction, denom, dtype)

    def backward(g: np.ndarray) -> tuple:
        up = np.asarray(_upstream(g, reduction, denom))
        up = up.reshape(-1, 1) if reduction == "none" else up
        gx = None
        if input.requires_grad:
            gx = _rows_back(((np.exp(logp) * q.sum(axis=1, keepdims=True) - q) * up), input.shape)
            gx = gx.astype(dtype, copy=False)
        gt = None
        if tt is not None and tt.requires_grad:
            gr = -(1 - eps) * logp * (w if w is not None else 1) * up
            gt = _rows_back(gr, input.shape).astype(dtype, copy=False)
        return gx, gt

    parents = (input, tt) if tt is not None else (input,)
    return _make(out, parents, backward, None)


def nll_loss(input: Tensor, target: Any, reduction: str = "mean", *, weight: Any = None,
             ignore_index: int = -100) -> Tensor:
    """Negative log-likelihood of log-probabilities (C,), (N, C) or (N, C, d1, ...), as
    ``torch.nn.functional.nll_loss``: ``loss_i = -w[y_i] * input_i[y_i]`` (0 where the target is
    ``ignore_index``); ``'mean'`` divides by ``sum_i w[y_i]`` over the targets not ignored."""
    _check_reduction(reduction, "nll_loss")
    t = _array(target)
    rows, batch = _classes_last(input, "nll_loss")
    m, c = rows.shape
    dtype = input.dtype
    w = _weight(weight, c, dtype, "nll_loss")
    safe, valid = _class_targets(input, t, batch, ignore_index, "nll_loss")
    wy = (w[safe] if w is not None else np.ones(m, dtype)) * valid
    per = -wy * np.where(valid, rows[np.arange(m), safe], 0.0)
    denom = float(wy.sum())
    out = _reduced(per.reshape(batch), reduction, denom, dtype)

    def backward(g: np.ndarray) -> tuple:
        up = np.asarray(_upstream(g, reduction, denom))
        gr = np.zeros((m, c), dtype)
        gr[np.arange(m), safe] = -wy * (up.reshape(-1) if reduction == "none" else up)
        return (_rows_back(gr, input.shape),)

    return _make(out, (input,), backward, None)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """``(input - target) ** 2``, reduced (``torch.nn.functional.mse_loss``)."""
    _check_reduction(reduction, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """``|input - target|``, reduced (``torch.nn.functional.l1_loss``; gradient 0 at 0)."""
    _check_reduction(reduction, "l1_loss")
    return _reduce(T.abs(input - target), reduction)


def smooth_l1_loss(input: Tensor, target: Any, reduction: str = "mean", *,
                   beta: float = 1.0) -> Tensor:
    """``0.5 * d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 * beta`` (``d = input -
    target``), reduced; ``beta = 0`` is the L1 loss (``torch.nn.functional.smooth_l1_loss``)."""
    _check_reduction(reduction, "smooth_l1_loss")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    if beta == 0:
        return l1_loss(input, target, reduction)
    d = input - target
    ad = T.abs(d)
    per = T.where(ad.data < beta, d * d * (0.5 / beta), ad - 0.5 * beta)
    return _reduce(per, reduction)


def _elementwise_weight(weight: Any, shape: tuple[int, ...], dtype: np.dtype,
                        name: str, what: str = "weight") -> np.ndarray | None:
    if weight is None:
        return None
    w = _array(weight, dtype)
    try:
        fits = np.broadcast_shapes(w.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"{name}: {what} of shape {w.shape} does not broadcast to the input's "
                         f"shape {shape}")
    return w


def binary_cross_entropy_with_logits(input: Tensor, target: Any, reduction: str = "mean", *,
                                     weight: Any = None, pos_weight: Any = None) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable op
    (``torch.nn.functional.binary_cross_entropy_with_logits``)::

        loss = weight * ((1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x))

    with ``softplus(-x) = max(-x, 0) + log1p(exp(-|x|))`` (the log-sum-exp form: exp never
    overflows). ``weight`` rescales elements (broadcast to the input), ``pos_weight`` the positive
    term per class (broadcast along the last axis). Gradients: ``x``:
    ``weight * ((1 - y) - (1 + (pos_weight - 1) * y) * sigmoid(-x))``; ``y``:
    ``weight * ((pos_weight - 1) * softplus(-x) - x)``.
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(reduction, name)
    dtype = input.dtype
    yt = _target_tensor(target, input)
    if yt.shape != input.shape:
        raise ShapeError(f"{name}: target shape {yt.shape} != input shape {input.shape}")
    w = _elementwise_weight(weight, input.shape, dtype, name)
    pw = _elementwise_weight(pos_weight, input.shape, dtype, name, "pos_weight")
    x, y = input.data, yt.data
    sp = np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x)))  # softplus(-x) = -log(sigmoid(x))
    lw = 1.0 if pw is None else 1 + (pw - 1) * y
    per = (1 - y) * x + lw * sp
    if w is not None:
        per = per * w
    denom = float(per.size)
    out = _reduced(per, reduction, denom, dtype)

    def backward(g: np.ndarray) -> tuple:
        up = _upstream(g, reduction, denom)
        if w is not None:
            up = up * w
        gx = gy = None
        if input.requires_grad:
            sig_neg = 0.5 * (1 - np.tanh(0.5 * x))  # sigmoid(-x), overflow-free
            gx = ((1 - y) - lw * sig_neg) * up
        if yt.requires_grad:
            gy = (-x + (0 if pw is None else (pw - 1) * sp)) * up
        return (None if gx is None else np.asarray(gx, dtype),
                None if gy is None else np.asarray(gy, dtype))

    return _make(out, (input, yt), backward, None)


def binary_cross_entropy(input: Tensor, target: Any, reduction: str = "mean", *,
                         weight: Any = None) -> Tensor:
    """Binary cross-entropy of probabilities in [0, 1]
    (``torch.nn.functional.binary_cross_entropy``)::

        loss = -weight * (y * log(p) + (1 - y) * log(1 - p))

    with each log clamped at -100, as PyTorch does, so ``p`` of exactly 0 or 1 gives a finite
    loss. The gradient is ``weight * (p - y) / max(p * (1 - p), 1e-12)`` (PyTorch's guard).
    Prefer :func:`binary_cross_entropy_with_logits` on logits: it is stable where this is not.
    """
    name = "binary_cross_entropy"
    _check_reduction(reduction, name)
    dtype = input.dtype
    yt = _target_tensor(target, input)
    if yt.shape != input.shape:
        raise ShapeError(f"{name}: target shape {yt.shape} != input shape {input.shape}")
    p, y = input.data, yt.data
    if p.size and not (np.all(p >= 0) and np.all(p <= 1)):
        raise ValueError(f"{name}: all elements of input should be between 0 and 1 "
                         "(probabilities; use binary_cross_entropy_with_logits on logits)")
    w = _elementwise_weight(weight, input.shape, dtype, name)
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100)
        log_1p = np.maximum(np.log1p(-p), -100)
    per = -(y * log_p + (1 - y) * log_1p)
    if w is not None:
        per = per * w
    denom = float(per.size)
    out = _reduced(per, reduction, denom, dtype)

    def backward(g: np.ndarray) -> tuple:
        up = _upstream(g, reduction, denom)
        if w is not None:
            up = up * w
        gp = (p - y) / np.maximum(p * (1 - p), 1e-12) * up if input.requires_grad else None
        gy = (log_1p - log_p) * up if yt.requires_grad else None
        return (None if gp is None else np.asarray(gp, dtype),
                None if gy is None else np.asarray(gy, dtype))

    return _make(out, (input, yt), backward, None)


def kl_div(input: Tensor, target: Any, reduction: str = "mean", *,
           log_target: bool = False) -> Tensor:
    """Kullback-Leibler divergence with ``input`` log-probabilities
    (``torch.nn.functional.kl_div``)::

        loss = target * (log(target) - input)       (0 where target == 0)
        loss = exp(target) * (target - input)       (log_target=True)

    ``'batchmean'`` divides the sum by the batch size ``input.shape[0]`` (the KL divergence per
    sample); ``'mean'`` by the number of elements, and warns, as PyTorch does.
    """
    _check_reduction(reduction, "kl_div", _REDUCTIONS + ("batchmean",))
    if reduction == "mean":
        import warnings

        warnings.warn("kl_div: reduction='mean' divides the total loss by both the batch size "
                      "and the support size; 'batchmean' divides only by the batch size, which "
                      "is the KL divergence's definition", UserWarning, stacklevel=2)
    dtype = input.dtype
    tt = _target_tensor(target, input)
    x, t = input.data, tt.data
    try:
        shape = np.broadcast_shapes(x.shape, t.shape)
    except ValueError as exc:
        raise ShapeError(f"kl_div: input shape {x.shape} and target shape {t.shape} do not "
                         "broadcast") from exc
    et = log_t = None
    if log_target:
        et = np.exp(t)
        per = et * (t - x)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_t = np.log(np.where(t > 0, t, 1))
        per = np.where(t > 0, t * log_t, 0.0) - t * x
    per = np.broadcast_to(per, shape)
    denom = float(per.size if reduction == "mean" else shape[0] if shape else 1)
    out = _reduced(per, reduction, denom, dtype)

    def backward(g: np.ndarray) -> tuple:
        up = _upstream(g, reduction, denom)
        gx = gt = None
        if input.requires_grad:
            gx = T.unbroadcast(np.broadcast_to(-(et if log_target else t) * up, shape), x.shape)
        if tt.requires_grad:
            local = et * (t - x + 1) if log_target else np.where(t > 0, log_t + 1, 0.0) - x
            gt = T.unbroadcast(np.broadcast_to(local * up, shape), t.shape)
        return (None if gx is None else np.asarray(gx, dtype),
                None if gt is None else np.asarray(gt, dtype))

    return _make(out, (input, tt), backward, None)
