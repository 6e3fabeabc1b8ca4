"""Resource limits a host application sets on an :class:`~edgert.runtime.Interpreter`.

A model file decides how much memory a run asks for (a ``ConstantOfShape`` of a shape read from
the file or computed from the feeds, a ``Resize`` by a scale of 10^6...) and how long it runs (a
``Loop`` whose condition never turns false). An application that runs models it does not fully
trust sets, per interpreter:

* ``max_alloc_bytes`` — the largest arena, single tensor or scratch buffer the interpreter
  allocates. Checked from the shapes, *before* allocating: at plan time for the static part of
  the model, and at run time for steps whose shapes depend on data. Default: half of the
  machine's physical memory (``os.sysconf``), or no limit where that cannot be read.
* ``max_loop_iterations`` — iterations of one ``Loop`` or ``Scan`` node per run. Default
  :data:`DEFAULT_MAX_LOOP_ITERATIONS`.
* ``timeout_s`` — a wall-clock budget per :meth:`~edgert.runtime.Interpreter.run` /
  ``invoke``, checked between ops and between ``Loop``/``Scan`` iterations (one op that is
  already running is not interrupted). Default: none.

Going past one raises :class:`~edgert.errors.ResourceLimitError` naming the op and the limit.
The interpreters that run control-flow bodies share their parent's limits and its deadline.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass

from edgert.errors import EdgeRTError, ResourceLimitError

# Loop/Scan iterations per node and run. An iteration of the lightest body (one Add) costs about
# 10 µs (a nested interpreter run, measured on the 2-core CI machine), so a Loop whose condition
# never stops it fails after ~10 s instead of running for hours, while the loops models really
# hold (token generation, beam search, NMS, a Scan over a sequence) iterate thousands of times,
# not millions. Raise it per interpreter for a model that needs more.
DEFAULT_MAX_LOOP_ITERATIONS = 1_000_000

class _Default:
    """The sentinel of a limit left out: use the default (None means "no limit")."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def default_max_alloc_bytes() -> int | None:
    """Half of the physical memory, or None (no limit) where ``os.sysconf`` cannot tell."""
    try:
        pages = int(os.sysconf("SC_PHYS_PAGES"))
        page = int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page <= 0:
        return None
    return pages * page // 2


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


@dataclass
class RunLimits:
    """The limits of one interpreter (shared with the nested interpreters of its bodies)."""

    max_alloc_bytes: int | None = None
    max_loop_iterations: int | None = None
    timeout_s: float | None = None
    # time.monotonic() past which the current run fails; None while no run with a timeout is
    # under way (set and cleared by the outermost interpreter only)
    deadline: float | None = None
    started: float = 0.0

    @classmethod
    def build(cls, max_alloc_bytes=DEFAULT, max_loop_iterations=DEFAULT,
              timeout_s=None) -> RunLimits:
        """Validated limits; :data:`DEFAULT` picks the default, None means no limit."""
        if max_alloc_bytes is DEFAULT:
            max_alloc_bytes = default_max_alloc_bytes()
        if max_loop_iterations is DEFAULT:
            max_loop_iterations = DEFAULT_MAX_LOOP_ITERATIONS
        for name, v in (("max_alloc_bytes", max_alloc_bytes),
                        ("max_loop_iterations", max_loop_iterations)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise EdgeRTError(f"{name} must be a non-negative integer or None, got {v!r}")
        if timeout_s is not None:
            ok = isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
            if not ok or not timeout_s > 0 or timeout_s != timeout_s:
                raise EdgeRTError(f"timeout_s must be a positive number of seconds or None, "
                                  f"got {timeout_s!r}")
            timeout_s = float(timeout_s)
        return cls(max_alloc_bytes, max_loop_iterations, timeout_s)

    # ----- checks -------------------------------------------------------------------------------
    def check_alloc(self, where: str, nbytes: int, what: str) -> None:
        """Refuse to allocate ``nbytes`` for ``what`` (``"output 'y' (4, 1000)"``) of ``where``
        (the op, or "the model") when that is more than ``max_alloc_bytes``."""
        limit = self.max_alloc_bytes
        if limit is not None and nbytes > limit:
            raise ResourceLimitError(
                f"{where}: {what} needs {nbytes} bytes ({_size(nbytes)}), more than "
                f"max_alloc_bytes={limit} ({_size(limit)}); check the input shapes and the "
                "model's shape constants, or raise Interpreter(max_alloc_bytes=...)",
                "max_alloc_bytes", limit)

    def check_iterations(self, where: str, count: int) -> None:
        """Refuse to start iteration number ``count`` (1-based) of a Loop/Scan past the cap."""
        cap = self.max_loop_iterations
        if cap is not None and count > cap:
            raise ResourceLimitError(
                f"{where}: would run more than max_loop_iterations={cap} iterations (a loop "
                "whose trip count and condition never stop it?); raise "
                "Interpreter(max_loop_iterations=...) if the model needs more",
                "max_loop_iterations", cap)

    def check_deadline(self, where: str) -> None:
        """Fail the run when it has been running longer than ``timeout_s``."""
        deadline = self.deadline
        if deadline is not None and time.monotonic() > deadline:
            self.timed_out(where)

    def timed_out(self, where: str):
        elapsed = time.monotonic() - self.started
        raise ResourceLimitError(
            f"{where}: the run took {elapsed:.3f} s, past timeout_s={self.timeout_s}",
            "timeout_s", self.timeout_s)

    @contextlib.contextmanager
    def running(self):
        """The budget of one run: sets the deadline unless a run is already under way (a body's
        nested interpreter, or run() calling invoke())."""
        if self.timeout_s is None or self.deadline is not None:
            yield
            return
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout_s
        try:
            yield
        finally:
            self.deadline = None


# The limits of the kernel whose control-flow bodies are being built on this thread, and the
# body's name: the interpreters built for those bodies (control_flow.Body, and any subclass of
# it) share the limits and name their errors after the body.
_parent = threading.local()


@contextlib.contextmanager
def inherited_by_bodies(limits: RunLimits | None, scope: str = ""):
    """Interpreters created on this thread inside the block share ``limits``; ``scope`` (the
    body, "Loop 'L' (body)") prefixes the ops they name in limit errors."""
    prev = getattr(_parent, "state", None)
    _parent.state = (limits, scope)
    try:
        yield
    finally:
        _parent.state = prev


def parent_limits() -> tuple[RunLimits | None, str]:
    """The limits an interpreter created now inherits (inside :func:`inherited_by_bodies`) and
    its scope."""
    return getattr(_parent, "state", None) or (None, "")


# Kernels built outside an interpreter (tests, the optimizer's constant folding) get these.
UNLIMITED = RunLimits()
