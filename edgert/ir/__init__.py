"""edgert's intermediate representation (see :mod:`edgert.ir.graph`)."""

from edgert.ir.graph import Graph, Node, Value

__all__ = ["Graph", "Node", "Value"]
