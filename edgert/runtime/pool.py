"""Serve one loaded model from many threads in parallel: a pool of interpreters.

One :class:`~edgert.runtime.Interpreter` is safe to call from several threads, but its runs take
turns (one arena, one lock). :class:`InterpreterPool` holds up to ``size`` interpreters over the
same model, read once, and lends a free one to each :meth:`InterpreterPool.run`.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any

import numpy as np

from edgert.errors import EdgeRTError
from edgert.format import ModelDef, read_model
from edgert.runtime.interpreter import Interpreter

__all__ = ["InterpreterPool"]


class InterpreterPool:
    """Up to ``size`` interpreters over one model, lent to concurrent :meth:`run` calls.

    Args:
        model: a path to a `.edgert` file, its bytes, or a :class:`~edgert.format.ModelDef`. It
            is read (a path: memory-mapped) once; every member interpreter gets the same
            :class:`~edgert.format.ModelDef`, so the file is neither re-read nor re-verified.
        size: the most interpreters, i.e. the most runs in parallel. Default: the CPUs this
            process may run on divided by ``num_threads``, at least 1.
        num_threads: kernel threads of each member (default 1: N client threads × 1 kernel
            thread each, as a server does; on a machine with C cores keep
            ``size * num_threads <= C``).
        **interpreter_kwargs: passed to every :class:`~edgert.runtime.Interpreter` (``device``,
            ``kernel_options``, ``max_alloc_bytes``, ``max_loop_iterations``, ``timeout_s``).

    Members are created lazily: the first one at construction (so that a model the runtime
    cannot run fails here, and the input/output names are known), the others when a run finds
    every existing member busy. When all ``size`` members are busy, :meth:`run` blocks until one
    is returned (first free, first lent; the most recently used member is lent first, its
    buffers warm).

    Cost model: the model's mapped weights and its decoded graph are shared (one mapping, the
    OS shares its pages); each member has its own arena (the activations, planned for the last
    feed shapes it saw, re-planned when a feed's shape changes) and its own kernels, with their
    own packed constants (pre-packed GEMM/Conv weights, int8 requantization tables). So each
    extra member costs about one arena plus the packed weights, and its first run costs one
    plan. Kernel compilation is shared (Numba compiles once per process).

    Example:
        >>> with InterpreterPool("model.edgert", size=8) as pool:
        ...     y = pool.run({"input": x})["output"]      # from any thread
    """

    def __init__(self, model, size: int | None = None, num_threads: int | None = 1,
                 **interpreter_kwargs: Any):
        if size is None:
            try:
                cpus = len(os.sched_getaffinity(0))
            except AttributeError:  # pragma: no cover - not Linux
                cpus = os.cpu_count() or 1
            size = max(1, cpus // (num_threads or cpus))
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise EdgeRTError(f"size must be a positive integer or None, got {size!r}")
        self._model = model if isinstance(model, ModelDef) else read_model(model)
        self._size = size
        self._num_threads = num_threads
        self._kwargs = dict(interpreter_kwargs)
        self._cond = threading.Condition()
        self._closed = False
        self._created = 1
        self._idle: list[Interpreter] = [self._new()]
        self._first = self._idle[0]

    def _new(self) -> Interpreter:
        return Interpreter(self._model, self._num_threads, **self._kwargs)

    # ----- lending ------------------------------------------------------------------------------
    def _acquire(self) -> Interpreter:
        with self._cond:
            while True:
                if self._closed:
                    raise EdgeRTError("the InterpreterPool is closed")
                if self._idle:
                    return self._idle.pop()
                if self._created < self._size:
                    self._created += 1
                    break
                self._cond.wait()
        try:  # built outside the lock: other threads keep borrowing and returning meanwhile
            return self._new()
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def _release(self, interp: Interpreter) -> None:
        with self._cond:
            if self._closed:
                self._created -= 1
            else:
                self._idle.append(interp)
            self._cond.notify()

    @contextmanager
    def interpreter(self):
        """Borrow one member for several calls (e.g. ``run(..., copy=False)`` views, which stay
        valid until the block ends); blocks while every member is busy."""
        interp = self._acquire()
        try:
            yield interp
        finally:
            self._release(interp)

    def run(self, feeds: dict[str, Any], copy: bool = True) -> dict[str, np.ndarray]:
        """:meth:`Interpreter.run <edgert.runtime.Interpreter.run>` on a free member; safe from
        any number of threads, up to ``size`` of them in parallel (the others wait).

        The results are copies: a member's buffers are reused by the next thread that borrows
        it, so ``copy=False`` is refused here; use ``with pool.interpreter() as interp:`` for
        zero-copy views.
        """
        if not copy:
            raise EdgeRTError("InterpreterPool.run returns copies (a member's buffers are reused "
                              "by the next borrower); borrow one with `with pool.interpreter() "
                              "as interp:` for copy=False views")
        interp = self._acquire()
        try:
            return interp.run(feeds)
        finally:
            self._release(interp)

    # ----- facts --------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """The most members (runs in parallel)."""
        return self._size

    @property
    def created(self) -> int:
        """Members created so far (lazily, up to :attr:`size`)."""
        return self._created

    @property
    def input_names(self) -> list[str]:
        return self._first.input_names

    @property
    def output_names(self) -> list[str]:
        return self._first.output_names

    @property
    def metadata(self) -> dict[str, str]:
        return self._first.metadata

    def get_input_details(self) -> list[dict[str, Any]]:
        return self._first.get_input_details()

    def get_output_details(self) -> list[dict[str, Any]]:
        return self._first.get_output_details()

    # ----- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the idle members; members in use are dropped when their run ends. Later and
        waiting :meth:`run` calls raise :class:`~edgert.errors.EdgeRTError`. Idempotent."""
        with self._cond:
            self._closed = True
            self._created -= len(self._idle)
            self._idle.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> InterpreterPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._created}/{self._size} created"
        return f"InterpreterPool({state}, num_threads={self._num_threads})"
