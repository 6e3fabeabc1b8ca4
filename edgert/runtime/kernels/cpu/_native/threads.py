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


def physical_cores(cpuinfo: str | None = None) -> int | None:
    """The physical cores this process may run on: distinct (package, core) pairs among the
    CPUs of its affinity mask, from ``/proc/cpuinfo`` (Linux); None where that is unknown."""
    import os

    try:
        allowed = os.sched_getaffinity(0)
        if cpuinfo is None:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
    except (AttributeError, OSError):
        return None
    cores, cpu, pkg = set(), None, "0"
    for line in cpuinfo.splitlines() + [""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cpu, pkg = int(value), "0"
        elif key == "physical id":
            pkg = value
        elif key == "core id" and cpu in allowed:
            cores.add((pkg, value))
    return len(cores) or None


def resolve(requested: int | None) -> int:
    """The thread count a run with ``num_threads=requested`` uses, capped at the pool's size.
    None or 0: the physical cores (onnxruntime's default too; a second hardware thread of a
    core adds little to these kernels and costs a tail latency when the machine is busy),
    else every CPU of the pool."""
    most = pool_size()
    if not requested:
        requested = physical_cores() or most
    return min(requested, most)


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
