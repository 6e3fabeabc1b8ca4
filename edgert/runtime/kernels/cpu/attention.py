"""Attention (opset 23+): scaled dot-product attention with masks, KV cache and GQA.

``Y = softmax(softcap(Q·Kᵀ·scale) + bias) · V`` where ``bias`` gathers every mask the operator
defines: ``attn_mask`` (bool: keep / drop, float: added), ``is_causal`` (bottom-right aligned
when a past cache or ``nonpad_kv_seqlen`` shifts the queries), the sliding window
(``left_window_size`` / ``right_window_size``) and the key padding of ``nonpad_kv_seqlen``.

Numerical traps, matching the ONNX definition:

* the scale is applied as ``sqrt(scale)`` to Q and to K before the product, which keeps float16
  products in range;
* a row whose keys are all masked has a max of -inf: it is softmaxed against 0 instead (no
  ``-inf - -inf = NaN``) and its probabilities are set to 0, so its output row is 0;
* ``softmax_precision`` picks the softmax's float type; everything else runs in Q's type.

3-D inputs ``[B, S, H·D]`` are split into heads with ``q_num_heads`` / ``kv_num_heads``; fewer
KV heads than query heads (grouped-query attention) repeat each KV head.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, InputError, KernelError, ShapeError
from edgert.runtime.kernels.cpu.misc import FLOATS, EagerKernel
from edgert.runtime.registry import KernelRegistry, TensorInfo


def _heads(x: np.ndarray, n: int) -> np.ndarray:
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, hd = x.shape
    return x.reshape(b, s, n, hd // n).transpose(0, 2, 1, 3)


def _mask_bias(mask: np.ndarray, dt) -> np.ndarray:
    """A bool keep-mask as an additive 0 / -inf bias."""
    return np.where(mask, dt.type(0), dt.type(-np.inf)).astype(dt)


def _band(q: int, kv: int, offset, lo: int | None, hi: int | None, dt) -> np.ndarray:
    """Additive bias allowing key j for query i iff ``-lo <= (i + offset) - j <= hi``.

    ``offset`` is a scalar, or one per batch entry (then the bias is [B, 1, q, kv]); a bound of
    None is unbounded. Causal masking is ``lo=None, hi=0`` in terms of ``j - p <= 0``.
    """
    i = np.arange(q).reshape(q, 1)
    j = np.arange(kv).reshape(1, kv)
    per_batch = np.ndim(offset) > 0
    p = i + (np.reshape(offset, (-1, 1, 1)) if per_batch else int(offset))
    diff = p - j  # distance of key j behind the query's absolute position
    allowed = np.ones(diff.shape, bool)
    if lo is not None:
        allowed &= diff <= lo
    if hi is not None:
        allowed &= -diff <= hi
    bias = _mask_bias(allowed, dt)
    return bias.reshape(bias.shape[0], 1, q, kv) if per_batch else bias


class Attention(EagerKernel):
    """ONNX Attention; outputs Y, present_key, present_value, qk_matmul_output."""

    def check(self, inputs):
        self.require_inputs(inputs, 3, 7)
        q, k, v = inputs[:3]
        for info, what in ((q, "Q"), (k, "K"), (v, "V")):
            self.require_float(info, what)
        rank = len(q.shape)
        if rank not in (3, 4) or len(k.shape) != rank or len(v.shape) != rank:
            raise self.error(f"Q, K, V must all be 3-D or all 4-D, got {q.shape}, {k.shape}, "
                             f"{v.shape}", ShapeError)
        self._qh = self.attr("q_num_heads", None)
        self._kvh = self.attr("kv_num_heads", None)
        if rank == 3:
            if not self._qh or not self._kvh:
                raise self.error("3-D inputs need q_num_heads and kv_num_heads")
            if q.shape[2] % self._qh or k.shape[2] % self._kvh or v.shape[2] % self._kvh:
                raise self.error("hidden sizes must be divisible by the numbers of heads",
                                 ShapeError)
        past_k = inputs[4] if len(inputs) > 4 else None
        past_v = inputs[5] if len(inputs) > 5 else None
        if (past_k is None) != (past_v is None):
            raise self.error("past_key and past_value must be given together")
        nonpad = inputs[6] if len(inputs) > 6 else None
        if nonpad is not None and past_k is not None:
            raise self.error("nonpad_kv_seqlen cannot be combined with a past cache")
        self._softcap = float(self.attr("softcap", 0.0) or 0.0)
        self._mode = int(self.attr("qk_matmul_output_mode", 0))
        if self._mode not in (0, 1, 2, 3):
            raise self.error(f"qk_matmul_output_mode must be 0..3, got {self._mode}")
        self._left = int(self.attr("left_window_size", -1))
        self._right = int(self.attr("right_window_size", -1))
        if self._left < -1 or self._right < -1:
            raise self.error("window sizes must be -1 (unbounded) or >= 0")
        prec = self.attr("softmax_precision", None)
        self._softmax_dt = None
        if prec is not None:
            if not dtypes.is_known(int(prec)) or dtypes.to_numpy(int(prec)) not in FLOATS:
                raise self.error(f"softmax_precision {dtypes.name(int(prec))} is not supported",
                                 DTypeError)
            self._softmax_dt = dtypes.to_numpy(int(prec))
        dt = np.dtype(q.dtype)
        return [TensorInfo(None, dt), TensorInfo(None, np.dtype(k.dtype)),
                TensorInfo(None, np.dtype(v.dtype)), TensorInfo(None, dt)]

    def compute(self, inputs):
        inputs = list(inputs) + [None] * (7 - len(inputs))
        q, k, v, mask, past_k, past_v, nonpad = inputs
        dt = q.dtype
        three_d = q.ndim == 3
        if three_d:
            q, k, v = _heads(q, self._qh), _heads(k, self._kvh), _heads(v, self._kvh)
        scale = self.attr("scale", None)
        scale = 1.0 / np.sqrt(q.shape[3]) if scale is None else float(scale)
        # (split over Q and K so that float16 products stay in range; a negative scale's sign
        # goes to Q)
        root = dt.type(np.sqrt(abs(scale)))
        q_root = -root if scale < 0 else root
        if past_k is not None:
            k = np.concatenate((past_k, k), axis=2)
            v = np.concatenate((past_v, v), axis=2)
        present_k, present_v = k, v
        sq, skv = q.shape[2], k.shape[2]
        if q.shape[1] % k.shape[1] or k.shape[1] != v.shape[1]:
            raise KernelError(f"{self.where()}: {q.shape[1]} query heads cannot share "
                              f"{k.shape[1]} key / {v.shape[1]} value heads")

        # --- the additive bias ------------------------------------------------------------------
        bias = np.zeros((sq, skv), dt)
        if mask is not None:
            pad = skv - mask.shape[-1]
            if pad < 0:
                raise KernelError(f"{self.where()}: attn_mask is longer ({mask.shape[-1]}) "
                                  f"than the keys ({skv})")
            if pad:
                fill = False if mask.dtype == np.bool_ else -np.inf
                mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)],
                              constant_values=fill)
            mask = _mask_bias(mask, dt) if mask.dtype == np.bool_ else mask.astype(dt)
            bias = bias + mask
        if nonpad is not None:
            offset = nonpad.reshape(-1).astype(np.int64) - sq  # per batch entry
        else:
            offset = past_k.shape[2] if past_k is not None else 0
        if self.attr("is_causal", 0):
            bias = bias + _band(sq, skv, offset, None, 0, dt)
        if self._left >= 0 or self._right >= 0:
            bias = bias + _band(sq, skv, offset, self._left if self._left >= 0 else None,
                                self._right if self._right >= 0 else None, dt)
        if nonpad is not None:
            keep = np.arange(skv)[None, :] < nonpad.reshape(-1, 1)
            bias = bias + _mask_bias(keep, dt).reshape(-1, 1, 1, skv)

        # --- scores, softmax, output ------------------------------------------------------------
        reps = q.shape[1] // k.shape[1]
        if reps > 1:
            k, v = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
        qk = np.matmul(q * q_root, np.swapaxes(k, 2, 3) * root)
        if self._softcap > 0:
            qk = (np.tanh(qk / dt.type(self._softcap)) * dt.type(self._softcap)).astype(dt)
        scores = qk + bias
        qk_out = scores if self._mode == 2 else qk
        sm_in = scores.astype(self._softmax_dt) if self._softmax_dt is not None else scores
        top = sm_in.max(axis=-1, keepdims=True)
        top = np.where(np.isneginf(top), 0, top).astype(sm_in.dtype)
        e = np.exp(sm_in - top)
        total = e.sum(axis=-1, keepdims=True)
        probs = e / np.where(total == 0, 1, total).astype(e.dtype)
        dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
        probs = np.where(dead, 0, probs).astype(sm_in.dtype)
        if self._mode == 3:
            qk_out = probs
        y = np.matmul(probs.astype(dt), v)
        if three_d:
            y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
        return [np.ascontiguousarray(y, dtype=dt), np.ascontiguousarray(present_k),
                np.ascontiguousarray(present_v), np.ascontiguousarray(qk_out, dtype=dt)]


# ----- RotaryEmbedding and TensorScatter (opset 23 / 24) ------------------------------------------
class RotaryEmbedding(EagerKernel):
    """RotaryEmbedding (opset 23): rotate the first ``rotary_embedding_dim`` features of each head.

    X is [B, H, S, D] or [B, S, H*D] (with ``num_heads``). Pairs are the two halves of the rotated
    features, or neighbours when ``interleaved``; each pair (x1, x2) becomes
    ``(cos·x1 - sin·x2, sin·x1 + cos·x2)`` with cos/sin gathered from the caches at
    ``position_ids`` [B, S] (caches [max_pos, d/2]) or given per token (caches [B, S, d/2]).
    Position ids are checked against the cache length before they are used.
    """

    def check(self, inputs):
        self.require_inputs(inputs, 3, 4)
        x, cos, sin = inputs[:3]
        pos = inputs[3] if len(inputs) > 3 else None
        for info, what in ((x, "X"), (cos, "cos_cache"), (sin, "sin_cache")):
            self.require_float(info, what)
        heads = int(self.attr("num_heads", 0) or 0)
        if len(x.shape) == 4:
            b, _, s, d = x.shape
        elif len(x.shape) == 3:
            if heads <= 0 or x.shape[2] % heads:
                raise self.error(f"3-D input {x.shape} needs num_heads dividing its hidden size",
                                 ShapeError)
            b, s, d = x.shape[0], x.shape[1], x.shape[2] // heads
        else:
            raise self.error(f"X must be 3-D or 4-D, got {x.shape}", ShapeError)
        rot = int(self.attr("rotary_embedding_dim", 0) or 0) or d
        if rot % 2 or rot > d or rot < 0:
            raise self.error(f"rotary_embedding_dim {rot} must be even, >= 0 and <= head size "
                             f"{d}")
        self._heads, self._rot = heads, rot
        if tuple(cos.shape) != tuple(sin.shape):
            raise self.error(f"cos_cache {cos.shape} and sin_cache {sin.shape} differ", ShapeError)
        if pos is not None:
            if np.dtype(pos.dtype).kind not in "iu" or tuple(pos.shape) != (b, s):
                raise self.error(f"position_ids must be integer [{b}, {s}], got {pos.dtype} "
                                 f"{pos.shape}", ShapeError)
            if len(cos.shape) != 2 or cos.shape[1] != rot // 2:
                raise self.error(f"with position_ids the caches must be [max_position, {rot // 2}],"
                                 f" got {cos.shape}", ShapeError)
            if pos.value is not None:
                self._check_positions(pos.value, cos.shape[0])
        elif tuple(cos.shape) != (b, s, rot // 2):
            raise self.error(f"without position_ids the caches must be [{b}, {s}, {rot // 2}], "
                             f"got {cos.shape}", ShapeError)
        return [TensorInfo(tuple(x.shape), np.dtype(x.dtype))]

    def _check_positions(self, pos: np.ndarray, n: int) -> None:
        if pos.size and (pos.min() < 0 or pos.max() >= n):
            raise self.error(f"position_ids must lie in [0, {n}) (the cache length), got values "
                             f"from {pos.min()} to {pos.max()}", InputError)

    def compute(self, inputs):
        x, cos, sin = inputs[:3]
        pos = inputs[3] if len(inputs) > 3 else None
        if pos is not None:
            self._check_positions(pos, cos.shape[0])
            cos, sin = cos[pos], sin[pos]  # [B, S, d/2]
        if x.ndim == 4:
            xs = x.transpose(0, 2, 1, 3)  # [B, S, H, D]
        else:
            xs = x.reshape(x.shape[0], x.shape[1], self._heads, x.shape[2] // self._heads)
        rot = self._rot
        c = cos[:, :, None, :].astype(x.dtype)
        sn = sin[:, :, None, :].astype(x.dtype)
        xr = xs[..., :rot]
        if self.attr("interleaved", 0):
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
        else:
            x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
        real = c * x1 - sn * x2
        imag = sn * x1 + c * x2
        y = xs.copy()
        if self.attr("interleaved", 0):
            y[..., 0:rot:2], y[..., 1:rot:2] = real, imag
        else:
            y[..., : rot // 2], y[..., rot // 2: rot] = real, imag
        y = y.transpose(0, 2, 1, 3) if x.ndim == 4 else y.reshape(x.shape)
        return [np.ascontiguousarray(y)]


class TensorScatter(EagerKernel):
    """TensorScatter (opset 24): write ``update`` into a KV cache at per-batch write indices.

    Linear mode requires ``write_indices[b] + seq <= max_seq``; circular mode wraps around. The
    indices are data and are checked at invoke before anything is written.
    """

    def check(self, inputs):
        self.require_inputs(inputs, 2, 3)
        past, upd = inputs[0], inputs[1]
        idx = inputs[2] if len(inputs) > 2 else None
        rank = len(past.shape)
        self._axis = self.normalize_axis(int(self.attr("axis", -2)), rank)
        if self._axis == 0:
            raise self.error("axis must not be the batch axis 0")
        self._mode = self.attr("mode", "linear")
        self._mode = self._mode.decode() if isinstance(self._mode, bytes) else str(self._mode)
        if self._mode not in ("linear", "circular"):
            raise self.error(f"unknown mode {self._mode!r} (expected linear or circular)")
        if np.dtype(upd.dtype) != np.dtype(past.dtype):
            raise self.error(f"update dtype {upd.dtype} differs from past_cache {past.dtype}",
                             DTypeError)
        if len(upd.shape) != rank or any(
                u != p for i, (u, p) in enumerate(zip(upd.shape, past.shape)) if i != self._axis
        ) or upd.shape[self._axis] > past.shape[self._axis]:
            raise self.error(f"update {upd.shape} does not fit past_cache {past.shape} along "
                             f"axis {self._axis}", ShapeError)
        if idx is not None:
            if np.dtype(idx.dtype).kind not in "iu" or tuple(idx.shape) != (past.shape[0],):
                raise self.error(f"write_indices must be an integer vector of {past.shape[0]} "
                                 f"values, got {idx.dtype} {idx.shape}", ShapeError)
            if idx.value is not None:
                self._check_indices(idx.value, upd.shape[self._axis], past.shape[self._axis])
        return [TensorInfo(tuple(past.shape), np.dtype(past.dtype))]

    def _check_indices(self, idx: np.ndarray, seq: int, max_seq: int) -> None:
        if not idx.size:
            return
        if idx.min() < 0:
            raise self.error(f"write_indices must be >= 0, got {idx.min()}", InputError)
        # compared as max > max_seq - seq: ``max + seq`` wraps around for an index near 2^63
        if self._mode == "linear" and int(idx.max()) > max_seq - seq:
            raise self.error(f"write index {idx.max()} + {seq} updates runs past the cache "
                             f"length {max_seq} (use mode='circular' to wrap)", InputError)

    def compute(self, inputs):
        past, upd = inputs[0], inputs[1]
        idx = inputs[2] if len(inputs) > 2 else None
        ax = self._axis
        seq, max_seq = upd.shape[ax], past.shape[ax]
        b = past.shape[0]
        idx = np.zeros(b, np.int64) if idx is None else idx.astype(np.int64)
        self._check_indices(idx, seq, max_seq)
        rows = idx[:, None] + np.arange(seq)[None, :]  # [B, seq]
        if self._mode == "circular":
            rows %= max_seq
        present = past.copy()
        view = np.moveaxis(present, ax, 1)  # a view: writes land in ``present``
        view[np.arange(b)[:, None], rows] = np.moveaxis(upd, ax, 1)
        return [present]


def register(reg: KernelRegistry) -> None:
    reg.add("Attention", Attention)
    reg.add("RotaryEmbedding", RotaryEmbedding, since=23)
    reg.add("TensorScatter", TensorScatter, since=24)
