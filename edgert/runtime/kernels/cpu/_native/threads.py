"""Thread counts of a run.

An interpreter resolves its ``num_threads`` once (:func:`resolve`) and hands the count to every
kernel through ``OpContext.num_threads``; kernels split their work by that count, never by a
process-wide setting, so two interpreters with different counts can run side by side. Before a
run the interpreter sizes Numba's pool for the calling thread (:func:`enter`; Numba's setting is
per calling thread) and keeps NumPy's OpenBLAS single-threaded: large GEMMs are split by edgert
itself on Numba's pool (see ``blas.py`` for the measurements behind that).
"""

from __future__ import annotations

_numba_calls: tuple | None = None
_blas_pinned = False


def _numba_thread_calls() -> tuple:
    """Numba's (get, set, pool size) for the calling thread's count, bound once.

    The public ``numba.set_num_threads`` re-validates and re-checks the pool on every call
    (~5 µs, as much as a whole small Gemm); the underlying C entry points cost ~0.3 µs.
    Falls back to the public functions if Numba's internals change.
    """
    global _numba_calls
    if _numba_calls is None:
        import numba

        try:
            from numba.np.ufunc import parallel as _par

            _par._launch_threads()
            get, put = _par._get_num_threads, _par._set_num_threads
            get()
        except (ImportError, AttributeError, TypeError):  # pragma: no cover - other Numba
            get, put = numba.get_num_threads, numba.set_num_threads
        _numba_calls = (get, put, numba.config.NUMBA_NUM_THREADS)
    return _numba_calls


def pool_size() -> int:
    """The most threads a run can use (Numba's pool)."""
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def resolve(requested: int | None) -> int:
    """The thread count a run with ``num_threads=requested`` uses (None or 0: every core of the
    pool), capped at the pool's size."""
    most = pool_size()
    return min(requested or most, most)


def enter(n: int) -> None:
    """Size Numba's pool for the calling thread to ``n`` and pin NumPy's OpenBLAS to one thread
    (once per process)."""
    global _blas_pinned
    get, put, _ = _numba_thread_calls()
    if get() != n:
        put(n)
    if not _blas_pinned:
        from edgert.runtime.kernels.cpu._native.openblas import set_blas_threads

        set_blas_threads(1)
        _blas_pinned = True
