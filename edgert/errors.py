"""The edgert exception family.

Every error edgert raises on purpose derives from :class:`EdgeRTError`, so an application that
embeds the runtime can catch one type. A message says what was wrong, where (op name, tensor name,
file offset) and, where there is one, what to do about it.
"""

from __future__ import annotations


class EdgeRTError(Exception):
    """Base class of every error edgert raises on purpose."""


class ModelFormatError(EdgeRTError):
    """A `.edgert` file is malformed: truncated, wrong identifier, offsets or indices out of
    range."""


class ModelImportError(EdgeRTError):
    """An ONNX model could not be imported (malformed protobuf, missing initializer, ...)."""


class UnsupportedOpError(EdgeRTError):
    """One or more operators (or an operator's dtype/attribute combination) are not supported.

    ``ops`` lists ``(op_type, node_name, reason)`` for every offending node, so that a user sees all
    of them at once rather than one per conversion attempt.
    """

    def __init__(self, message: str, ops: list[tuple[str, str, str]] | None = None):
        super().__init__(message)
        self.ops = list(ops or [])


class ShapeError(EdgeRTError):
    """Shapes do not fit: a wrong input shape, or an op whose inputs cannot be broadcast."""


class DTypeError(EdgeRTError):
    """An input or tensor has the wrong element type."""


class InputError(EdgeRTError):
    """A feed names an unknown input, misses a required input, or is otherwise unusable."""


class KernelError(EdgeRTError):
    """An op's kernel rejected its attributes or inputs while preparing (axis out of range, ...)."""


class ResourceLimitError(EdgeRTError):
    """A run went past a limit the host application set on the interpreter (or its default):
    ``max_alloc_bytes``, ``max_loop_iterations`` or ``timeout_s``. The message names the op and
    the limit; ``limit`` is the limit's name and ``value`` its setting."""

    def __init__(self, message: str, limit: str = "", value: float | int | None = None):
        super().__init__(message)
        self.limit = limit
        self.value = value


__all__ = [
    "EdgeRTError",
    "ModelFormatError",
    "ModelImportError",
    "UnsupportedOpError",
    "ShapeError",
    "DTypeError",
    "InputError",
    "KernelError",
    "ResourceLimitError",
]


def describe_unsupported(ops: list[tuple[str, str, str]], headline: str, advice: str) -> str:
    """The message of an :class:`UnsupportedOpError`: a count summary, one line per node, advice.

    ``headline`` may use ``{count}`` (number of nodes) and ``{summary}`` ("Det ×2, Foo ×1").
    """
    counts: dict[str, int] = {}
    for op_type, _, _ in ops:
        counts[op_type] = counts.get(op_type, 0) + 1
    summary = ", ".join(f"{op} ×{n}" for op, n in sorted(counts.items()))
    shown = 30
    lines = [f"  {op_type} '{name}': {why}" for op_type, name, why in ops[:shown]]
    if len(ops) > shown:
        lines.append(f"  ... and {len(ops) - shown} more")
    head = headline.format(count=len(ops), summary=summary)
    return f"{head}:\n" + "\n".join(lines) + "\n" + advice
