"""Numba settings for every CPU kernel, in one place.

* ``cache=True`` always: compiled machine code goes to an on-disk cache so that only the first
  process on a machine pays compile time. The cache folder is ``$EDGERT_CACHE_DIR/numba``,
  else ``$NUMBA_CACHE_DIR``, else ``~/.cache/edgert/numba`` (``$XDG_CACHE_HOME`` honoured):
  site-packages is often read-only, which would silently disable Numba's default cache.
* ``nogil=True``: kernels release the GIL so an app can run interpreters on several threads.
* fastmath without ``nnan``/``ninf``: NaN and Inf must propagate exactly as in NumPy/ONNX
  (a max-pool over a NaN must return NaN), while reassociation and contraction let LLVM
  vectorize reductions.
* Nothing is compiled at import: kernels carry no signatures and compile on first call.
"""

from __future__ import annotations

import os
import pathlib


def cache_dir() -> pathlib.Path:
    """The folder where compiled kernels are cached."""
    if os.environ.get("EDGERT_CACHE_DIR"):
        return pathlib.Path(os.environ["EDGERT_CACHE_DIR"]) / "numba"
    if os.environ.get("NUMBA_CACHE_DIR"):
        return pathlib.Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "edgert" / "numba"


os.environ["NUMBA_CACHE_DIR"] = str(cache_dir())
# Numba's OpenMP workers (GNU libgomp) wait between parallel regions by spinning for a bounded
# number of polls, then sleeping; waking a sleeping worker costs 30-200 µs on a virtual machine
# (the idle vCPU is woken through the hypervisor), more than many layers' whole work. With
# sleeping workers (OMP_WAIT_POLICY=PASSIVE) SqueezeNet ran no faster on 2 threads than on 1;
# with a short spin (GOMP_SPINCOUNT=30000, about a millisecond of polling after the last
# region) it ran 1.5x faster (measured). Unbounded spinning is not used: a worker spinning while
# BLAS or the app computes takes a core from it. All of edgert's parallel work, GEMMs included
# (_native/openblas.py), runs on this one pool, and NumPy's BLAS is kept single-threaded. Users' own
# OMP_WAIT_POLICY or GOMP_SPINCOUNT settings are left alone.
#
# On a machine already busier than the CPUs this process may use, spinning turns against us: a
# worker polling for the next region takes the core from the thread doing the work (2 threads
# beside a third busy process: PP-OCR's classifier 122-276 ms per run with the spin, 1.6-3.4 ms
# without; a YOLOv8n 337-434 ms against 32-64 ms). Then the workers sleep at once.
SPIN_POLLS = 30000


def default_spincount(load: float | None, cpus: int) -> int:
    """``GOMP_SPINCOUNT`` for a 1-minute load average ``load`` (None: unknown) on ``cpus``
    usable CPUs: the short spin, or none when the machine is already at least fully busy."""
    return 0 if load is not None and load >= cpus else SPIN_POLLS


def _load_and_cpus() -> tuple[float | None, int]:
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this OS
        load = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return load, cpus


if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = str(default_spincount(*_load_and_cpus()))

import numba  # noqa: E402  (must follow NUMBA_CACHE_DIR)

numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


def _import_arraymath_without_scipy() -> None:
    """Import ``numba.np.arraymath`` without the SciPy import it would trigger.

    Numba loads its lowering registries on the first compile *or cache load*; one of them,
    ``numba.np.arraymath``, probes for a BLAS at import by importing ``scipy.linalg``, which took
    0.33 s of ResNet-50's 2 s warm-cache start-up (measured with cProfile). The probe only sets
    ``arraymath._HAVE_BLAS``, which picks BLAS over a plain loop for ``np.cov``-style inner
    products inside jitted code; edgert's kernels use none, and BLAS work goes through NumPy
    (``blas.py``). So the probe is answered "no BLAS" unless SciPy's BLAS is already imported.
    ``numba.np.linalg`` (``np.dot`` in jitted code) keeps its own, untouched check.
    """
    import sys

    if "numba.np.arraymath" in sys.modules:
        return
    from numba.np import linalg

    original = linalg.ensure_blas

    def probe() -> None:
        if "scipy.linalg.cython_blas" in sys.modules:
            original()
            return
        raise ImportError("BLAS probe skipped by edgert (see edgert.runtime._jit)")

    linalg.ensure_blas = probe
    try:
        from numba.np import arraymath
    finally:
        linalg.ensure_blas = original
    arraymath.ensure_blas = original


# Not deferred to the first compile: loading a cached kernel imports ``arraymath`` too, when
# the kernel's environment refers to it (an ``a.sum()`` inside a kernel); most of its import cost
# is ``numba.np.arrayobj``, which every cached array kernel's environment imports anyway.
try:
    _import_arraymath_without_scipy()
except Exception:  # noqa: BLE001 (a future Numba layout: just pay the SciPy import)
    pass

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def _quick_load_cache_class():
    """A Numba ``FunctionCache`` whose cache *load* skips the full compiler set-up, or None.

    Before loading a cached kernel, Numba's ``Cache.load_overload`` refreshes the CPU target
    context: it imports and installs every typing and lowering registry (NumPy, cmath, typed
    containers, jitclass, random, polynomials...), which only *compiling* needs. That took
    0.12-0.17 s of a warm-cache ResNet-50 start-up of ~1.3 s (measured). Machine code read from
    the cache needs only the NRT runtime (its C helpers and atomic functions) to be set up, so
    this cache initializes just that; compiling (a cache miss, a new signature) still goes
    through Numba's compiler, which refreshes the contexts itself before typing anything.
    None (plain ``cache=True``) where Numba's internals differ from what this relies on.
    """
    try:
        from numba.core.caching import FunctionCache
        from numba.core.runtime import rtsys

        FunctionCache.load_overload  # noqa: B018 (the method overridden below)
        FunctionCache._load_overload  # noqa: B018
        FunctionCache._guard_against_spurious_io_errors  # noqa: B018
    except (ImportError, AttributeError):  # pragma: no cover - another Numba
        return None

    class QuickLoadCache(FunctionCache):
        def __init__(self, py_func):
            super().__init__(py_func)
            # Numba checks a cached kernel against its own file only; a kernel that inlines a
            # helper from another file (epilogue.py's activations, vmath.py's exp) kept the
            # old helper after that file changed. The stamp also covers every runtime source.
            cache_file = getattr(self, "_cache_file", None)
            stamp = getattr(cache_file, "_source_stamp", None)
            if stamp is not None:
                cache_file._source_stamp = (stamp, _runtime_sources_stamp())

        def load_overload(self, sig, target_context):
            _initialize_nrt(rtsys, target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)

    return QuickLoadCache


_SOURCES_STAMP: str | None = None


def _runtime_sources_stamp() -> str:
    """A digest of the size and modification time of every ``.py`` file of edgert.runtime
    (one stat per file, once per process)."""
    global _SOURCES_STAMP
    if _SOURCES_STAMP is None:
        import hashlib

        h = hashlib.sha1()
        root = os.path.dirname(os.path.abspath(__file__))
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    try:
                        st = os.stat(os.path.join(folder, name))
                    except OSError:
                        continue
                    rel = os.path.relpath(os.path.join(folder, name), root)
                    h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
        _SOURCES_STAMP = h.hexdigest()[:16]
    return _SOURCES_STAMP


def _initialize_nrt(rtsys, ctx) -> None:
    """``rtsys.initialize(ctx)`` with the runtime's helper library taken from the cache folder.

    Numba compiles its runtime's helper functions (reference counts, allocation wrappers) from
    LLVM IR in every process, on the first kernel load: 45-65 ms of a warm-cache ResNet-50
    start-up (measured). Their machine code depends only on Numba, LLVM and the CPU, so it is
    stored once, the way Numba caches a kernel (object code plus the bitcode that later kernels
    link against), under a name made of those. Anything unexpected falls back to Numba's own
    initialization.
    """
    init = getattr(rtsys, "_init", None)
    if init:
        return
    if init is None:  # another Numba
        rtsys.initialize(ctx)
        return
    try:
        import hashlib
        import pickle

        from llvmlite import binding as ll
        from numba.core import config as nconfig
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.runtime import _nrt_python, nrtdynmod

        codegen = ctx.codegen()
        key = repr((numba.__version__, ll.llvm_version_info, codegen.magic_tuple(),
                    nconfig.DEBUG_NRT, nconfig.NRT_STATS))
        path = cache_dir() / f"edgert_nrt_{hashlib.sha256(key.encode()).hexdigest()[:24]}.bin"
        with global_compiler_lock:
            if rtsys._init:
                return
            if nconfig.NRT_STATS:
                _nrt_python.memsys_enable_stats()
            for py_name in _nrt_python.c_helpers:  # as rtsys.initialize registers them
                c_name = py_name if py_name.startswith("_") else "NRT_" + py_name
                ll.add_symbol(c_name, _nrt_python.c_helpers[py_name])
            library = None
            try:
                with open(path, "rb") as f:
                    stored_key, state = pickle.load(f)
                if stored_key == key:
                    library = codegen.unserialize_library(state)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
                library = None
            if library is None:  # compile_nrt_functions, keeping the object code
                ir_mod, library = nrtdynmod.create_nrt_module(ctx)
                library.enable_object_caching()
                library.add_ir_module(ir_mod)
                library.finalize()
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                try:  # written whole, then renamed: a concurrent reader sees old or new
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(tmp, "wb") as f:
                        pickle.dump((key, library.serialize_using_object_code()), f)
                    os.replace(tmp, path)
                except OSError:  # a read-only or full cache folder: compile every time
                    tmp.unlink(missing_ok=True)
            rtsys._library = library
            rtsys._init = True
    except Exception:  # noqa: BLE001 (another Numba: its own initialization)
        rtsys.initialize(ctx)


_QUICK_LOAD_CACHE = _quick_load_cache_class()


def njit(fn=None, *, parallel: bool = False, fastmath: bool | frozenset[str] = True,
         error_model: str = "python", inline: str = "never"):
    """``numba.njit`` with edgert's flags. Use as ``@njit`` or ``@njit(parallel=True)``.

    ``error_model="numpy"``: a float division by zero gives inf/NaN instead of raising, so no
    zero test stays in the loop and LLVM can vectorize it (for loops whose divisors cannot be
    zero, or where IEEE results are what the op specifies). ``inline="always"``: a helper that
    Numba inlines into each kernel calling it (a call across compiled functions is not inlined
    by LLVM: a per-node helper of a tree walk cost 1.6x)."""

    def wrap(f):
        disp = numba.njit(
            cache=_QUICK_LOAD_CACHE is None,
            nogil=True,
            parallel=parallel,
            fastmath=(set(fastmath) if isinstance(fastmath, frozenset)
                      else set(FASTMATH) if fastmath else False),
            error_model=error_model,
            inline=inline,
        )(f)
        if _QUICK_LOAD_CACHE is not None:
            # What cache=True does (``enable_caching`` sets ``_cache = FunctionCache(py_func)``),
            # with the quicker cache load.
            disp._cache = _QUICK_LOAD_CACHE(disp.py_func)
        return disp

    return wrap(fn) if fn is not None else wrap


prange = numba.prange

# Work below this many output elements runs in a kernel's serial twin (see ``serial_twin``):
# entering a parallel region costs ~3 µs on 2 threads with the workers spinning (measured;
# 30-40 µs when they slept), more than a small layer's whole computation. Interleaved A/B at
# 2 threads against the earlier 32K: ShuffleNet 0.91x, MobileNetV2 0.98x, ResNet-50 0.98x,
# SqueezeNet 1.00x (see blas.SPLIT_MIN_MACS). The environment variable
# EDGERT_PARALLEL_MIN_WORK overrides it (read at import) for tuning on a device.
PARALLEL_MIN_WORK = int(os.environ.get("EDGERT_PARALLEL_MIN_WORK", 1 << 13))


def serial_twin(parallel_fn):
    """A non-parallel compile of a ``@njit(parallel=True)`` kernel (its ``prange`` runs serially).

    The twin is a copy of the Python function under another ``__qualname__``: Numba names its
    cache files by qualified name, and the parallel and serial builds of one function must not
    share cache entries.
    """
    import types

    py = parallel_fn.py_func
    twin = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial",
                              py.__defaults__, py.__closure__)
    twin.__qualname__ = py.__qualname__ + "_serial"
    twin.__module__ = py.__module__
    twin.__doc__ = py.__doc__
    return njit(twin)
