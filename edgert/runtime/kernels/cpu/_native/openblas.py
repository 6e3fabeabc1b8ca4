"""NumPy's own BLAS (``cblas_sgemm``/``cblas_dgemm``), called from compiled kernels.

Why: the GEMMs behind Conv, Gemm and MatMul were split over threads by a Python thread pool, a
second pool beside Numba's OpenMP one. Each hand-off woke a sleeping thread (30-200 µs on a
virtual machine, where waking an idle vCPU goes through the hypervisor), and the two pools
could not both spin-wait without fighting for the cores: a 64x144 @ 144x1815 product went from
0.54 ms to only 0.37-0.47 ms on 2 threads. Calling BLAS from inside a ``prange`` makes Numba's
pool the only one, so a conv is one parallel region (im2col, GEMM and epilogue per thread, on
cache-hot data), and the pool may spin briefly between regions (see ``_jit.py``): the same
product takes 0.30 ms on 2 threads.

The routine's address is looked up in the OpenBLAS that NumPy loaded and passed to the kernels
as an integer, so cached machine code stays valid across processes (a ctypes function object
inside a kernel would pin one process's address and disable Numba's cache). Whether the library
takes 32- or 64-bit integers is read from its build configuration (``USE64BITINT``), never
guessed, and a small product is checked against ``np.matmul`` before the routine is used.
Where no such OpenBLAS is found (another BLAS, another OS) :func:`routines` is ``None`` and
callers keep NumPy's ``matmul``.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from edgert.runtime._jit import njit, prange, serial_twin

_ROW_MAJOR, _NO_TRANS = 101, 111  # CBLAS enum values (fixed by the CBLAS standard)

# (sgemm, dgemm, get_config) symbol names by OpenBLAS build: NumPy >= 2 wheels (scipy-openblas,
# 64-bit and 32-bit integer builds), then plain OpenBLAS with and without a symbol suffix.
_SYMBOLS = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_get_config64_"),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", "scipy_openblas_get_config"),
    ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_get_config64_"),
    ("cblas_sgemm", "cblas_dgemm", "openblas_get_config"),
)


@dataclass(frozen=True)
class Routines:
    """Addresses of the GEMM routines and their integer width."""

    sgemm: int
    dgemm: int
    wide: bool  # True: BLAS integers are 64-bit (ILP64)

    def address(self, dtype: np.dtype) -> int:
        return self.sgemm if dtype == np.float32 else self.dgemm


def _make_call(bits: int):
    """An intrinsic that calls a row-major, non-transposed xGEMM at an address:
    ``C = A @ B + beta * C`` for ``(m, k) @ (k, n)`` with leading dimensions in elements."""
    int_t = ir.IntType(bits)

    @intrinsic
    def call(typingctx, fn, m, n, k, pa, lda, pb, ldb, beta, pc, ldc):
        sig = types.void(fn, m, n, k, pa, lda, pb, ldb, beta, pc, ldc)

        def codegen(context, builder, signature, args):
            fnv, mv, nv, kv, pav, ldav, pbv, ldbv, betav, pcv, ldcv = args
            i32 = ir.IntType(32)
            flt = context.get_value_type(signature.args[8])
            ptr = ir.IntType(8).as_pointer()
            fty = ir.FunctionType(
                ir.VoidType(),
                [i32, i32, i32, int_t, int_t, int_t, flt, ptr, int_t, ptr, int_t, flt, ptr, int_t],
            )

            def dim(v):
                width = v.type.width
                if width > bits:
                    return builder.trunc(v, int_t)
                return builder.sext(v, int_t) if width < bits else v

            f = builder.inttoptr(fnv, fty.as_pointer())
            builder.call(f, [
                i32(_ROW_MAJOR), i32(_NO_TRANS), i32(_NO_TRANS), dim(mv), dim(nv), dim(kv),
                ir.Constant(flt, 1.0), builder.inttoptr(pav, ptr), dim(ldav),
                builder.inttoptr(pbv, ptr), dim(ldbv), betav, builder.inttoptr(pcv, ptr), dim(ldcv),
            ])
            return context.get_dummy_value()

        return sig, codegen

    return call


_call32 = _make_call(32)
_call64 = _make_call(64)


@njit
def gemm_at(fn, wide, m, n, k, pa, lda, pb, ldb, beta, pc, ldc):
    """``C = A @ B + beta * C`` through the routine at ``fn`` (addresses and leading dimensions
    in elements; ``beta`` has the element type). The caller guarantees the extents."""
    if m <= 0 or n <= 0:
        return
    if wide:
        _call64(fn, m, n, k, pa, lda, pb, ldb, beta, pc, ldc)
    else:
        _call32(fn, m, n, k, pa, lda, pb, ldb, beta, pc, ldc)


@njit(parallel=True)
def _gemm_batched(fn, wide, a, b, c, parts, split_rows, beta):
    """``c[i] = a[i % len(a)] @ b[i]`` for 3-D arrays with unit inner strides; each product is
    cut into ``parts`` row or column blocks, all blocks of all products run in parallel."""
    nb, m, n = c.shape
    k = a.shape[2]
    isz = c.itemsize
    na = a.shape[0]
    lda, ldb, ldc = a.strides[1] // isz, b.strides[1] // isz, c.strides[1] // isz
    for u in prange(nb * parts):
        i = u // parts
        j = u - i * parts
        pa = a.ctypes.data + (i % na) * a.strides[0]
        pb = b.ctypes.data + i * b.strides[0]
        pc = c.ctypes.data + i * c.strides[0]
        if split_rows:
            step = (m + parts - 1) // parts
            r0 = j * step
            r1 = min(m, r0 + step)
            gemm_at(fn, wide, r1 - r0, n, k, pa + r0 * a.strides[1], lda, pb, ldb, beta,
                    pc + r0 * c.strides[1], ldc)
        else:
            # Column blocks rounded to 16 elements: each starts on a cache-line multiple.
            step = ((n + parts - 1) // parts + 15) // 16 * 16
            c0 = j * step
            c1 = min(n, c0 + step)
            gemm_at(fn, wide, m, c1 - c0, k, pa, lda, pb + c0 * isz, ldb, beta, pc + c0 * isz, ldc)


_gemm_batched_serial = serial_twin(_gemm_batched)


def _self_test(r: Routines) -> bool:
    """A small strided product through ``sgemm`` equals ``np.matmul``'s (bit for bit is not
    required: only that the address and the integer width are right; ``dgemm`` shares them).

    Called through ctypes with the argument list the kernels' intrinsic emits (``_make_call``),
    not through a compiled kernel: loading one from Numba's cache only for this check cost
    ~80 ms of every process's start-up (measured on ResNet-50).
    """
    int_t = ctypes.c_int64 if r.wide else ctypes.c_int32
    ptr = ctypes.c_void_p
    enum = ctypes.c_int32
    proto = ctypes.CFUNCTYPE(None, enum, enum, enum, int_t, int_t, int_t, ctypes.c_float, ptr,
                             int_t, ptr, int_t, ctypes.c_float, ptr, int_t)
    sgemm = proto(r.sgemm)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 40)).astype(np.float32)[:, 3:36]
    c = np.full((5, 40), 7.0, np.float32)[:, 2:35]
    isz = 4
    sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, 5, 33, 7, 1.0, a.ctypes.data, a.strides[0] // isz,
          b.ctypes.data, b.strides[0] // isz, 0.0, c.ctypes.data, c.strides[0] // isz)
    return bool(np.allclose(c, a @ b, rtol=1e-4, atol=1e-4))


@functools.cache
def routines() -> Routines | None:
    """NumPy's OpenBLAS GEMM routines, or None when they cannot be used safely."""
    found = find_openblas()
    if found is None:
        return None
    lib = found[0]
    for sname, dname, cname in _SYMBOLS:
        if not (hasattr(lib, sname) and hasattr(lib, dname) and hasattr(lib, cname)):
            continue
        get_config = getattr(lib, cname)
        get_config.restype = ctypes.c_char_p
        get_config.argtypes = []
        config = (get_config() or b"").decode("ascii", "replace")
        r = Routines(
            sgemm=ctypes.cast(getattr(lib, sname), ctypes.c_void_p).value,
            dgemm=ctypes.cast(getattr(lib, dname), ctypes.c_void_p).value,
            wide="USE64BITINT" in config,
        )
        try:
            ok = _self_test(r)
        except Exception:  # noqa: BLE001 (any failure means: do not use this path)
            ok = False
        return r if ok else None
    return None


def as3d(x: np.ndarray) -> np.ndarray | None:
    """``x`` as a 3-D view ``(batch, rows, cols)`` with unit inner stride, or None.

    2-D arrays may be views with any row stride (column blocks); higher ranks must be
    C-contiguous, so that merging the batch axes is a view (the output is written through it).
    """
    if x.ndim == 2:
        if x.strides[1] != x.itemsize or x.strides[0] % x.itemsize or x.strides[0] < 0:
            return None
        return x[None]
    if x.ndim > 2 and x.flags.c_contiguous:
        return x.reshape(-1, x.shape[-2], x.shape[-1])
    return None


def gemm3(r: Routines, a: np.ndarray, b: np.ndarray, c: np.ndarray, threads: int,
          split_min_macs: int) -> None:
    """``c[i] = a[i % len(a)] @ b[i]`` (3-D views from :func:`as3d`), over ``threads``."""
    nb, m, n = c.shape
    k = a.shape[2]
    parts, split_rows = 1, False
    if threads > 1 and nb * m * n * k >= split_min_macs and nb < threads:
        parts = -(-threads // nb)
        # Split the longer side; columns only when each block keeps a few vectors of width.
        split_rows = n < 32 * parts and m >= 2 * parts
        if not split_rows and n < 32 * parts:
            parts = 1
    fn = r.address(c.dtype)
    beta = c.dtype.type(0)
    if parts == 1 and (nb == 1 or threads == 1 or nb * m * n * k < split_min_macs):
        _gemm_batched_serial(fn, r.wide, a, b, c, 1, False, beta)
    else:
        _gemm_batched(fn, r.wide, a, b, c, parts, split_rows, beta)


# ----- BLAS threads -------------------------------------------------------------------------------
# OpenBLAS keeps its own thread pool, separate from Numba's. Left at its default (one thread per
# core) next to Numba's OpenMP pool, both pools spin-wait after each call and fight for the cores:
# measured on 2 cores, a 1x512 @ 512x1000 Gemm took 4.7 ms instead of 0.05 ms and a 3x3 Conv
# 8 ms instead of 2.8 ms. The interpreter can align the BLAS pool with ``num_threads`` through
# :func:`set_blas_threads` (and/or set ``OMP_WAIT_POLICY=PASSIVE`` before Numba starts its pool).
_OPENBLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",  # NumPy >= 2 wheels
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


@functools.cache
def find_openblas() -> tuple[ctypes.CDLL, str] | None:
    """NumPy's loaded OpenBLAS and the name suffix of its entry points (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _OPENBLAS_SETTERS:
            if hasattr(lib, name):
                return lib, name
    return None


def set_blas_threads(n: int) -> bool:
    """Limit the threads of NumPy's OpenBLAS to ``n`` (process-wide; best effort).

    Returns:
        True when an OpenBLAS was found and set; False otherwise (another BLAS, another OS).
    """
    found = find_openblas()
    if found is None or n < 1:
        return False
    lib, name = found
    setter = getattr(lib, name)
    setter.argtypes = [ctypes.c_int]
    setter.restype = None
    setter(int(n))
    return True
