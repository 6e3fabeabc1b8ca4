"""The native layer under the CPU kernels: what talks to LLVM, to NumPy's OpenBLAS and to Numba's
thread pool, and the window geometry the compiled kernels take.

* :mod:`.llvm` — IR helpers for the kernels that emit their own vector code (array pointers,
  type checks, the ``MR x NR`` micro-tile).
* :mod:`.openblas` — NumPy's OpenBLAS GEMM called from compiled kernels, and its own pool.
* :mod:`.threads` — the thread count of a run: resolved once per interpreter and carried by each
  kernel's ``OpContext.num_threads``; nothing here is a process-wide setting of edgert's.
* :mod:`.geometry` — sliding-window geometry as a named structure (:class:`.geometry.Geo`).

Nothing in this package imports a kernel module, so every kernel may import it.
"""
