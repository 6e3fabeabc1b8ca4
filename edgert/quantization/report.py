"""The SQNR report: how much each int8 tensor differs from its float original.

``SQNR = 10 log10(sum(f^2) / sum((f - dq)^2))`` in dB, where ``f`` is the float model's tensor
and ``dq`` the int8 model's tensor dequantized with its own parameters, on the same input. One
int8 step of noise on a well-used range is about 40-50 dB; a layer far below its neighbours is
the one that hurts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgert.ir import Graph
from edgert.quantization.calibrate import Feed, float_activations, iter_feeds, probe_model


def sqnr(f: np.ndarray, q: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    f = np.asarray(f, np.float64)
    noise = float(np.sum((f - np.asarray(q, np.float64)) ** 2))
    signal = float(np.sum(f**2))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def sqnr_report(graph: Graph, result: Any, calibration: Any, batch_size: int = 16,
                batches: int = 2, *, batch_axis: dict[str, Any] | None = None,
                feeds: list[Feed] | None = None) -> list[tuple[str, float]]:
    """Per-tensor SQNR on the first ``batches`` calibration batches, worst first.

    ``feeds``: checked feeds to use instead of reading ``calibration`` again (calibration keeps
    its first ones, so that a one-shot iterator serves both). Tensors inside control-flow bodies
    are not covered.
    """
    from edgert.runtime import Interpreter

    fl = Interpreter(probe_model(graph, float_activations(graph)))
    qv = result.qvalues
    qi = Interpreter(probe_model(result.graph, list(qv.values())))
    sig: dict[str, float] = {}
    noise: dict[str, float] = {}
    if feeds is None:
        feeds = (f for f, _ in iter_feeds(graph, calibration, batch_size, batch_axis))
    for i, feed in enumerate(feeds):
        if i >= batches:
            break
        fo, qo = fl.run(feed), qi.run(feed)
        for name, v in qv.items():
            if name not in fo or v.name not in qo:
                continue
            scale, zp, _ = v.quant
            dq = (qo[v.name].astype(np.float64) - float(zp[0])) * float(scale[0])
            f = fo[name].astype(np.float64)
            sig[name] = sig.get(name, 0.0) + float(np.sum(f**2))
            noise[name] = noise.get(name, 0.0) + float(np.sum((f - dq) ** 2))
    out = []
    for name in sig:
        n, s = noise[name], sig[name]
        db = math.inf if n == 0 else (-math.inf if s == 0 else 10 * math.log10(s / n))
        out.append((name, db))
    out.sort(key=lambda kv: kv[1])
    return out
