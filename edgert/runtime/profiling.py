"""Per-operator timing (``edgert bench --profile``) and ahead-of-time kernel compilation
(``edgert warmup``).

Profiling runs the interpreter's plan step by step with a clock around every kernel call, so it
adds a few microseconds per op: the per-op table explains where time goes, while the plain
``invoke`` latency stays the number to quote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class OpTiming:
    """Time spent in one operator over the profiled runs."""

    op_type: str
    name: str
    calls: int
    total_s: float

    @property
    def mean_s(self) -> float:
        return self.total_s / max(self.calls, 1)


def profile_ops(interp: Any, runs: int = 10) -> list[OpTiming]:
    """Run ``interp``'s current plan ``runs`` times, timing every operator; slowest first.

    The interpreter must be allocated and hold its inputs (``set_tensor`` or a ``run`` first).
    Operators folded away at prepare time do not appear (they cost nothing per run).
    """
    if not interp._prepared:
        interp.allocate_tensors()
    interp.invoke()  # binds dynamic steps and sets the thread count
    ops = interp._graph.operators
    steps = interp._steps
    totals = np.zeros(len(steps))
    clock = time.perf_counter
    for _ in range(runs):
        for k, step in enumerate(steps):
            t = clock()
            if step.dynamic:
                interp._invoke_dynamic(step)
            else:
                (getattr(step, "kernel_invoke", None) or step.kernel.invoke)(step.in_arrays,
                                                                             step.out_arrays)
            totals[k] += clock() - t
    out = [
        OpTiming(ops[s.op_index].op_type, ops[s.op_index].name, runs, float(totals[k]))
        for k, s in enumerate(steps)
    ]
    out.sort(key=lambda r: -r.total_s)
    return out


def format_profile(rows: list[OpTiming], limit: int | None = 40) -> str:
    """The per-op table: op type, node name, total and mean time, share of the total."""
    grand = sum(r.total_s for r in rows) or 1.0
    lines = [f"{'op type':<22} {'node':<40} {'total ms':>10} {'mean ms':>9} {'share':>6}"]
    shown = rows if limit is None else rows[:limit]
    for r in shown:
        name = r.name if len(r.name) <= 40 else "…" + r.name[-39:]
        lines.append(
            f"{r.op_type:<22} {name:<40} {r.total_s * 1e3:10.3f} {r.mean_s * 1e3:9.4f} "
            f"{100 * r.total_s / grand:5.1f}%"
        )
    if limit is not None and len(rows) > limit:
        rest = rows[limit:]
        lines.append(f"... {len(rest)} more ops, {sum(r.total_s for r in rest) * 1e3:.3f} ms")
    by_type: dict[str, float] = {}
    for r in rows:
        by_type[r.op_type] = by_type.get(r.op_type, 0.0) + r.total_s
    lines.append("by op type: " + ", ".join(
        f"{k} {100 * v / grand:.1f}%" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])
    ))
    return "\n".join(lines)
