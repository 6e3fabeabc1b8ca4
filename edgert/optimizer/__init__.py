"""Graph optimizer: IR -> IR passes and the pass manager (see :mod:`.manager` for the levels).

Example:
    >>> from edgert.optimizer import optimize
    >>> report = optimize(graph, level=2)
    >>> print(report)
"""

from edgert.optimizer.manager import OptimizeReport, optimize, passes_for

__all__ = ["OptimizeReport", "optimize", "passes_for"]
