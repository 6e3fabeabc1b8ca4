"""The pass manager: run the passes of a level to a fixed point and report what each did.

Levels (as onnxruntime's):

* ``0`` — nothing.
* ``1`` basic — :mod:`.folding` (constant folding, and shape folding also where only some dims
  are static) and :mod:`.cleanup` (no-op nodes, common subexpressions, duplicate constants,
  dead nodes and constants).
* ``2`` extended (``3`` is accepted and means 2) — level 1 plus :mod:`.patterns` (decomposed
  LayerNorm / HardSigmoid / HardSwish / Gelu subgraphs → one op), :mod:`.fusion`
  (BatchNormalization and per-channel Mul/Add folded into Conv/ConvTranspose/Gemm/MatMul
  weights or merged into one BatchNormalization, MatMul+Add → Gemm, Pad folded into Conv and
  Max/AveragePool, Sum of two → Add), :mod:`.layout` (Transpose/Reshape chains merged or
  cancelled). With ``allow_fused=True`` it also turns ShuffleNet's channel shuffles into
  ``edgert.ChannelShuffle`` (:mod:`.shuffle`), fuses residual sums into the producing Conv
  (``edgert.Conv``'s fourth input ``Z``), fuses activations into the
  producing Conv/ConvTranspose/Gemm/MatMul (domain ``edgert``, attributes ``activation`` /
  ``activation_params``, which the CPU kernels apply in their epilogue), then, once the rest
  has settled, groups of elementwise nodes into ``edgert.FusedElementwise``
  (:mod:`.elementwise`).

Each pass is a function ``(graph, ctx) -> bool``. The manager runs the level's list in order,
repeating the whole list until no pass changes anything (at most ``MAX_ROUNDS`` rounds), then
optimizes the bodies of If/Loop/Scan nodes the same way (recursively, keeping each body's
inputs and outputs) and re-sorts the nodes topologically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgert.errors import EdgeRTError
from edgert.ir import Graph
from edgert.optimizer import (
    cleanup,
    elementwise,
    folding,
    fusion,
    layout,
    patterns,
    quantized,
    shuffle,
)

MAX_ROUNDS = 10


@dataclass
class PassStats:
    """What one pass did over the whole run."""

    name: str
    runs: int = 0
    changed: int = 0
    removed: int = 0
    fused: int = 0
    seconds: float = 0.0


@dataclass
class OptimizeReport:
    """Per-pass statistics and node counts before and after; ``str()`` gives a table."""

    level: int
    allow_fused: bool
    nodes_before: int = 0
    nodes_after: int = 0
    rounds: int = 0
    seconds: float = 0.0
    bodies: int = 0  # control-flow bodies optimized (at any depth)
    passes: dict[str, PassStats] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"optimize level {self.level}{' (fused ops allowed)' if self.allow_fused else ''}: "
            f"{self.nodes_before} -> {self.nodes_after} nodes in {self.rounds} round(s), "
            f"{self.seconds * 1000:.1f} ms"
            + (f" (+ {self.bodies} control-flow bodies)" if self.bodies else ""),
            f"  {'pass':<36} {'removed':>8} {'fused':>6} {'ms':>8}",
        ]
        for s in self.passes.values():
            lines.append(f"  {s.name:<36} {s.removed:>8} {s.fused:>6} {s.seconds * 1000:>8.1f}")
        return "\n".join(lines)


class PassContext:
    """Handed to each pass: options, and counters the pass bumps."""

    def __init__(self, allow_fused: bool):
        self.allow_fused = allow_fused
        self.current: PassStats | None = None

    def count(self, removed: int = 0, fused: int = 0) -> None:
        if self.current is not None:
            self.current.removed += removed
            self.current.fused += fused


Pass = Callable[[Graph, PassContext], bool]

LEVEL1: list[Pass] = [
    folding.fold_constants,
    folding.fold_partial_shapes,
    cleanup.eliminate_noop,
    cleanup.eliminate_common_subexpressions,
    cleanup.share_duplicate_constants,
    cleanup.eliminate_dead_nodes,
]

LEVEL2: list[Pass] = [
    patterns.fuse_layernorm,
    patterns.fuse_hardsigmoid,
    patterns.fuse_hardswish,
    patterns.fuse_gelu,
    fusion.sum_to_add,
    fusion.fold_pad_into_conv,
    fusion.fold_pad_into_pool,
    fusion.fold_batchnorm,
    fusion.fold_affine_into_producer,
    fusion.merge_affine_into_batchnorm,
    fusion.matmul_add_to_gemm,
    fusion.fuse_matmul_bias,
    layout.merge_transposes,
    layout.merge_reshapes,
    shuffle.fuse_channel_shuffle,
    fusion.fuse_residual_add,
    fusion.fuse_silu,
    fusion.fuse_activation,
    fusion.fuse_shuffle_into_conv,
    quantized.fuse_integer_matmul,
]


# Run once after the fixed point: groups must be formed after every other fusion has settled
# (an activation is better fused into its Conv than into an elementwise group).
LATE: list[Pass] = [
    elementwise.fuse_elementwise,
    cleanup.eliminate_dead_nodes,
]


def passes_for(level: int) -> list[Pass]:
    """The passes a level runs, in order."""
    if level <= 0:
        return []
    if level == 1:
        return list(LEVEL1)
    return LEVEL1 + LEVEL2


def optimize(graph: Graph, level: int = 2, verbose: bool = False,
             allow_fused: bool = False) -> OptimizeReport:
    """Optimize ``graph`` in place, and the bodies of its If/Loop/Scan nodes (recursively).

    Args:
        graph: the IR graph (modified in place).
        level: 0 none, 1 basic, 2 extended (3 is accepted and means 2).
        verbose: print the per-pass report.
        allow_fused: allow ``edgert``-domain nodes (only the edgert runtime runs them).

    Returns:
        The :class:`OptimizeReport` (body statistics are added to the per-pass rows;
        ``nodes_before`` / ``nodes_after`` count the main graph's nodes).
    """
    return _optimize(graph, level, verbose, allow_fused, frozenset())


def _optimize(graph: Graph, level: int, verbose: bool, allow_fused: bool,
              scope: frozenset[str]) -> OptimizeReport:
    """:func:`optimize` for a graph nested in scopes whose value names are ``scope``."""
    if not isinstance(level, int) or level < 0:
        raise EdgeRTError(f"optimization level must be a non-negative integer, got {level!r}")
    report = OptimizeReport(level=level, allow_fused=allow_fused,
                            nodes_before=len(graph.nodes))
    passes = passes_for(level)
    ctx = PassContext(allow_fused)
    t_all = time.perf_counter()
    for p in passes:
        report.passes[p.__name__] = PassStats(p.__name__)
    for _ in range(MAX_ROUNDS if passes else 0):
        report.rounds += 1
        any_change = False
        for p in passes:
            stats = report.passes[p.__name__]
            ctx.current = stats
            t0 = time.perf_counter()
            changed = bool(p(graph, ctx))
            stats.seconds += time.perf_counter() - t0
            stats.runs += 1
            stats.changed += int(changed)
            any_change |= changed
        if not any_change:
            break
    late = LATE if level >= 2 else []
    for p in late:
        stats = report.passes.setdefault(p.__name__, PassStats(p.__name__))
        ctx.current = stats
        t0 = time.perf_counter()
        stats.changed += int(bool(p(graph, ctx)))
        stats.seconds += time.perf_counter() - t0
        stats.runs += 1
    if passes:
        _optimize_bodies(graph, level, allow_fused, scope, report)
        graph.toposort()
    report.nodes_after = len(graph.nodes)
    report.seconds = time.perf_counter() - t_all
    if verbose:
        print(report)
    return report


def _optimize_bodies(graph: Graph, level: int, allow_fused: bool, scope: frozenset[str],
                     report: OptimizeReport) -> None:
    """Run the same passes on every control-flow body of ``graph``, once ``graph`` has settled.

    A body keeps its inputs and outputs (the passes pin them, as a main graph's), and the names
    it reads from enclosing scopes. Names the passes invent in a body must not shadow a name of
    an enclosing scope (ONNX requires one assignment per name across nested graphs, and the
    body could no longer read the outer value), so every enclosing name is reserved in the body
    before its passes run. Bodies are done after the enclosing graph, which therefore invents
    no name afterwards that a body already uses.
    """
    inner_scope = scope | frozenset(graph._names) | frozenset(v.name for v in graph.values())
    for node in graph.nodes:
        for body in node.subgraphs():
            # Graph has no public "reserve" method; unique_name() would rename an existing name.
            body._names.update(inner_scope)
            sub = _optimize(body, level, False, allow_fused, inner_scope)
            report.bodies += 1 + sub.bodies
            for name, st in sub.passes.items():
                mine = report.passes.setdefault(name, PassStats(name))
                mine.removed += st.removed
                mine.fused += st.fused
                mine.seconds += st.seconds
