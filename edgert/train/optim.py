"""Optimizers (SGD, Adam, AdamW, RMSprop), gradient clipping and learning-rate schedulers.

Each optimizer validates its arguments as PyTorch does (``Invalid learning rate: -1``) and
updates parameters in place, in their own dtype, with ``torch.optim``'s exact formulas (the
tests compare one step with each to 1e-6):

* SGD: ``d = g + wd*p``; ``buf = d`` (first step) else ``mu*buf + (1-dampening)*d``;
  ``d = d + mu*buf`` (Nesterov) or ``buf``; ``p -= lr*d``.
* Adam: ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``,
  ``p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)``; weight decay adds ``wd*p`` to g.
* AdamW: Adam with decoupled decay ``p *= 1 - lr*wd`` first.
* RMSprop: ``v = a*v + (1-a)*g^2``, ``p -= lr * g / (sqrt(v) + eps)`` (with optional momentum
  and centering).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgert.errors import EdgeRTError
from edgert.train.tensor import Tensor


class OptimizerError(EdgeRTError, ValueError):
    """An optimizer or scheduler got an invalid argument (or no parameters)."""


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        params = list(params)
        if not params:
            raise OptimizerError(f"{type(self).__name__} got an empty parameter list: pass "
                                 "model.parameters() of a model that has parameters")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        for group in params:
            g = dict(defaults)
            g.update(group)
            g["params"] = list(g["params"])
            for p in g["params"]:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise OptimizerError(f"{type(self).__name__} can only optimize tensors "
                                         "that require grad")
            self.param_groups.append(g)
        self.state: dict[int, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad.data, group, self.state.setdefault(id(p), {}))

    def _update(self, p: Tensor, g: np.ndarray, group: dict, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        ids = [id(p) for group in self.param_groups for p in group["params"]]
        return {"state": {i: dict(self.state[k]) for i, k in enumerate(ids) if k in self.state},
                "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                 for g in self.param_groups]}


def _check(name: str, value: float, ok: bool) -> None:
    if not ok:
        raise OptimizerError(f"Invalid {name}: {value}")


class SGD(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        _check("learning rate", lr, lr >= 0)
        _check("momentum value", momentum, momentum >= 0)
        _check("weight_decay value", weight_decay, weight_decay >= 0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise OptimizerError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _update(self, p: Tensor, g: np.ndarray, group: dict, state: dict) -> None:
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        mu = group["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, copy=True)
            else:
                buf *= mu
                buf += (1 - group["dampening"]) * g
            g = g + mu * buf if group["nesterov"] else buf
        p.data -= (group["lr"] * g).astype(p.dtype)


class Adam(Optimizer):
    decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check("learning rate", lr, lr >= 0)
        _check("epsilon value", eps, eps >= 0)
        _check("beta parameter at index 0", betas[0], 0 <= betas[0] < 1)
        _check("beta parameter at index 1", betas[1], 0 <= betas[1] < 1)
        _check("weight_decay value", weight_decay, weight_decay >= 0)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def _update(self, p: Tensor, g: np.ndarray, group: dict, state: dict) -> None:
        lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
        if wd:
            if self.decoupled:
                p.data *= 1 - lr * wd
            else:
                g = g + wd * p.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + group["eps"]
        p.data -= (lr / (1 - b1 ** t)) * m / denom


class AdamW(Adam):
    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False):
        _check("learning rate", lr, lr >= 0)
        _check("epsilon value", eps, eps >= 0)
        _check("alpha value", alpha, alpha >= 0)
        _check("momentum value", momentum, momentum >= 0)
        _check("weight_decay value", weight_decay, weight_decay >= 0)
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered})

    def _update(self, p: Tensor, g: np.ndarray, group: dict, state: dict) -> None:
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        a = group["alpha"]
        if not state:
            state["square_avg"] = np.zeros_like(p.data)
            if group["momentum"]:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(p.data)
        v = state["square_avg"]
        v *= a
        v += (1 - a) * g * g
        if group["centered"]:
            ga = state["grad_avg"]
            ga *= a
            ga += (1 - a) * g
            avg = np.sqrt(v - ga * ga) + group["eps"]
        else:
            avg = np.sqrt(v) + group["eps"]
        if group["momentum"]:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += g / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * g / avg


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale all gradients so that their joint L2 norm is at most ``max_norm``; returns the norm
    before clipping."""
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return total


# ----- schedulers --------------------------------------------------------------------------------
class LRScheduler:
    """Base class: call :meth:`step` once per epoch (or per batch for OneCycle/warm-up)."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def lr_at(self, base_lr: float, t: int) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(base, self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise OptimizerError(f"Invalid step_size: {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, t: int) -> float:
        return base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2``."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if T_max < 1:
            raise OptimizerError(f"Invalid T_max: {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, t: int) -> float:
        cos = math.cos(math.pi * t / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + cos) / 2


class LambdaLR(LRScheduler):
    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float]):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, t: int) -> float:
        return base_lr * self.lr_lambda(t)


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor`` in ``total_iters``
    steps."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1 / 3, end_factor: float = 1.0,
                 total_iters: int = 5):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise OptimizerError(f"Invalid start_factor/end_factor: {start_factor}, {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, t: int) -> float:
        frac = min(t, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class OneCycleLR(LRScheduler):
    """PyTorch's one-cycle policy (two phases, cosine annealing; momentum is not cycled)."""

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int,
                 pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4):
        if total_steps < 2:
            raise OptimizerError(f"Invalid total_steps: {total_steps}")
        if not 0 <= pct_start <= 1:
            raise OptimizerError(f"Invalid pct_start: {pct_start}")
        self.max_lr, self.total_steps = max_lr, total_steps
        self.initial = max_lr / div_factor
        self.final = self.initial / final_div_factor
        self.peak = float(pct_start * total_steps) - 1
        for g in optimizer.param_groups:
            g["initial_lr"] = self.initial
        super().__init__(optimizer)

    @staticmethod
    def _cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    def lr_at(self, base_lr: float, t: int) -> float:
        if t > self.total_steps:
            raise OptimizerError(f"OneCycleLR stepped {t} times, more than total_steps "
                                 f"{self.total_steps}")
        if t <= self.peak:
            return self._cos(self.initial, self.max_lr, t / self.peak)
        end = self.total_steps - 1
        return self._cos(self.max_lr, self.final, (t - self.peak) / (end - self.peak))
