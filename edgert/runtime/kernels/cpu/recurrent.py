"""Recurrent layers: RNN, GRU and LSTM (forward, reverse, bidirectional; every activation).

The input projection of all time steps is one matmul (``X·Wᵀ + Wb`` for the whole sequence);
the recurrence then runs step by step, each step one ``H·Rᵀ`` matmul over the batch. Gate
orders follow ONNX: LSTM ``i o f c``, GRU ``z r h``.

``sequence_lens``: a batch entry stops at its length — later steps output 0 in ``Y`` and leave
its state unchanged; the reverse direction walks each entry's own ``[0, len)`` backwards.
``clip`` bounds every gate pre-activation to ``[-clip, clip]``. ``layout=1`` puts the batch
first in X, Y, the initial and final states.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import ShapeError
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.registry import KernelRegistry, TensorInfo


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows; the two branches are the same function
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


# name -> (number of parameters, f(x, alpha, beta), default alpha, default beta)
_ACTIVATIONS = {
    "relu": (0, lambda x, a, b: np.maximum(x, 0), None, None),
    "tanh": (0, lambda x, a, b: np.tanh(x), None, None),
    "sigmoid": (0, lambda x, a, b: _sigmoid(x), None, None),
    "affine": (2, lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (1, lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (1, lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (2, lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (2, lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (1, lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)), 1.0, None),
    "softsign": (0, lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (0, lambda x, a, b: np.logaddexp(0, x), None, None),
}


class _Recurrent(EagerKernel):
    """Shared attribute handling, shapes and the time loop; subclasses define ``cell``."""

    gates = 1
    default_acts: tuple[str, ...] = ()
    n_states = 1  # LSTM: 2 (h and c)

    def check(self, inputs):
        self.require_inputs(inputs, 3, 8)
        x, w, r = inputs[:3]
        self.require_float(x, "X")
        if len(x.shape) != 3 or len(w.shape) != 3 or len(r.shape) != 3:
            raise self.error("X, W and R must be 3-D", ShapeError)
        direction = self.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.error(f"unknown direction {direction!r}")
        self._dirs = 2 if direction == "bidirectional" else 1
        self._reverse = direction == "reverse"
        self._layout = int(self.attr("layout", 0))
        hidden = self.attr("hidden_size", None)
        hidden = int(hidden) if hidden is not None else r.shape[-1]
        self._hidden = hidden
        g = self.gates
        if w.shape[0] != self._dirs or w.shape[1] != g * hidden or r.shape != (
                self._dirs, g * hidden, hidden):
            raise self.error(f"W {w.shape} / R {r.shape} do not match {self._dirs} direction(s),"
                             f" {g} gate(s) and hidden_size {hidden}", ShapeError)
        in_size = x.shape[2]
        if w.shape[2] != in_size:
            raise self.error(f"W expects input size {w.shape[2]}, X has {in_size}", ShapeError)
        self._acts = self._activations()
        self._clip = self.attr("clip", None)
        seq, batch = (x.shape[0], x.shape[1]) if self._layout == 0 else (x.shape[1], x.shape[0])
        dt = np.dtype(x.dtype)
        y_shape = (seq, self._dirs, batch, hidden) if self._layout == 0 else (
            batch, seq, self._dirs, hidden)
        s_shape = (self._dirs, batch, hidden) if self._layout == 0 else (batch, self._dirs, hidden)
        return [TensorInfo(y_shape, dt)] + [TensorInfo(s_shape, dt)] * self.n_states

    def _activations(self):
        names = self.attr("activations", None)
        per_dir = len(self.default_acts)
        if not names:
            names = list(self.default_acts) * self._dirs
        names = [str(n).lower() for n in names]
        if len(names) != per_dir * self._dirs:
            raise self.error(f"expects {per_dir * self._dirs} activations, got {len(names)}")
        alphas = list(self.attr("activation_alpha", []) or [])
        betas = list(self.attr("activation_beta", []) or [])
        acts = []
        for name in names:
            if name not in _ACTIVATIONS:
                raise self.error(f"activation {name!r} is not supported")
            n_params, fn, a0, b0 = _ACTIVATIONS[name]
            a = alphas.pop(0) if n_params >= 1 and alphas else a0
            b = betas.pop(0) if n_params >= 2 and betas else b0
            acts.append((fn, a, b))
        return [acts[d * per_dir:(d + 1) * per_dir] for d in range(self._dirs)]

    def _clipped(self, z):
        if self._clip is None:
            return z
        return np.clip(z, -float(self._clip), float(self._clip))

    def compute(self, inputs):
        inputs = list(inputs) + [None] * (8 - len(inputs))
        x, w, r, b, lens = inputs[:5]
        init = inputs[5:5 + self.n_states]
        extra = inputs[7] if self.n_states == 2 else None  # LSTM peepholes P
        dt = x.dtype
        if self._layout == 1:
            x = np.swapaxes(x, 0, 1)
            init = [None if s is None else np.swapaxes(s, 0, 1) for s in init]
        seq, batch = x.shape[0], x.shape[1]
        hid, g = self._hidden, self.gates
        lens = np.full(batch, seq, np.int64) if lens is None else lens.astype(np.int64)
        if np.any((lens < 0) | (lens > seq)):
            raise ShapeError(f"{self.where()}: sequence_lens must lie in [0, {seq}]")
        y = np.zeros((seq, self._dirs, batch, hid), dt)
        finals = [np.zeros((self._dirs, batch, hid), dt) for _ in range(self.n_states)]
        steps = np.arange(seq)[:, None]
        for d in range(self._dirs):
            wb = np.zeros(2 * g * hid, dt) if b is None else b[d]
            xw = np.matmul(x, w[d].T) + wb[: g * hid]  # [seq, batch, g*hid]
            states = [np.zeros((batch, hid), dt) if s is None else s[d].astype(dt)
                      for s in init]
            reverse = self._reverse or d == 1
            # time index of step t for every batch entry: reversed inside each entry's length
            order = np.where(steps < lens, lens - 1 - steps, steps) if reverse else \
                np.broadcast_to(steps, (seq, batch))
            peep = None if extra is None else extra[d]
            for t in range(seq):
                ti = order[t]
                active = (t < lens)[:, None]
                xt = xw[ti, np.arange(batch)]
                new = self.cell(xt, states, r[d], wb[g * hid:], self._acts[d], peep)
                states = [np.where(active, n, s) for n, s in zip(new, states)]
                bi = np.arange(batch)
                y[ti, d, bi] = np.where(active, states[0], y[ti, d, bi])
            for k in range(self.n_states):
                finals[k][d] = states[0 if k == 0 else k]
        if self._layout == 1:
            y = np.transpose(y, (2, 0, 1, 3))
            finals = [np.swapaxes(f, 0, 1) for f in finals]
        return [y, *finals]

    def cell(self, xt, states, r, rb, acts, peep):
        raise NotImplementedError


class RNN(_Recurrent):
    """``H = f(X·Wᵀ + H·Rᵀ + Wb + Rb)``."""

    gates = 1
    default_acts = ("tanh",)

    def cell(self, xt, states, r, rb, acts, peep):
        (f, a, b), = acts
        return [f(self._clipped(xt + states[0] @ r.T + rb), a, b).astype(xt.dtype)]


class GRU(_Recurrent):
    """Update gate z, reset gate r, candidate h (``linear_before_reset`` picks the form)."""

    gates = 3
    default_acts = ("sigmoid", "tanh")

    def cell(self, xt, states, r, rb, acts, peep):
        (f, fa, fb), (gfn, ga, gb) = acts
        h = states[0]
        n = self._hidden
        rz, rr, rh = r[:n], r[n:2 * n], r[2 * n:]
        bz, br, bh = rb[:n], rb[n:2 * n], rb[2 * n:]
        xz, xr, xh = xt[:, :n], xt[:, n:2 * n], xt[:, 2 * n:]
        z = f(self._clipped(xz + h @ rz.T + bz), fa, fb)
        rg = f(self._clipped(xr + h @ rr.T + br), fa, fb)
        if self.attr("linear_before_reset", 0):
            cand = gfn(self._clipped(xh + rg * (h @ rh.T + bh)), ga, gb)
        else:
            cand = gfn(self._clipped(xh + (rg * h) @ rh.T + bh), ga, gb)
        return [((1 - z) * cand + z * h).astype(xt.dtype)]


class LSTM(_Recurrent):
    """Gates i, o, f, cell c; optional peepholes P and ``input_forget`` coupling."""

    gates = 4
    default_acts = ("sigmoid", "tanh", "tanh")
    n_states = 2

    def check(self, inputs):
        outs = super().check(inputs)
        p = inputs[7] if len(inputs) > 7 else None
        if p is not None and tuple(p.shape) != (self._dirs, 3 * self._hidden):
            raise self.error(f"P must have shape ({self._dirs}, {3 * self._hidden})", ShapeError)
        return outs

    def cell(self, xt, states, r, rb, acts, peep):
        (f, fa, fb), (gfn, ga, gb), (hfn, ha, hb) = acts
        h, c = states
        n = self._hidden
        z = xt + h @ r.T + rb  # [batch, 4n], gates i o f c
        pi, po, pf = (peep[:n], peep[n:2 * n], peep[2 * n:]) if peep is not None else (0, 0, 0)
        i = f(self._clipped(z[:, :n] + pi * c), fa, fb)
        if self.attr("input_forget", 0):
            fg = 1 - i
        else:
            fg = f(self._clipped(z[:, 2 * n:3 * n] + pf * c), fa, fb)
        cand = gfn(self._clipped(z[:, 3 * n:]), ga, gb)
        c_new = fg * c + i * cand
        o = f(self._clipped(z[:, n:2 * n] + po * c_new), fa, fb)
        h_new = o * hfn(c_new, ha, hb)
        return [h_new.astype(xt.dtype), c_new.astype(xt.dtype)]


def register(reg: KernelRegistry) -> None:
    reg.add("RNN", RNN)
    reg.add("GRU", GRU)
    reg.add("LSTM", LSTM)
