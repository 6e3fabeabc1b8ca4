"""The edgert interpreter: load a `.edgert` model, plan its memory, run it.

Life of a model (TFLite's shape):

1. **load** — :func:`edgert.format.read_model` maps the file and verifies it; weights stay
   zero-copy views of the mapping. Every operator's kernel is resolved once here; all ops without
   a kernel are reported together.
2. **prepare** (:meth:`Interpreter.allocate_tensors`) — walk the operators in order calling each
   kernel's ``prepare`` with the input shapes/dtypes (and values, where known), which validates
   attributes and infers output shapes. Operators whose inputs are all known (shape arithmetic,
   constant subexpressions) are run right away and drop out of the run ("folded"). The remaining
   tensors are placed in one arena by :mod:`edgert.runtime.planner`, and each step gets its
   input/output arrays as views, so that invoking allocates nothing.
3. **invoke** — call each step's kernel on its pre-bound arrays. Steps whose shapes depend on
   data (NonZero, or anything downstream of it) are prepared and allocated on the fly.

A changed input shape (dynamic batch, ...) re-plans; the model never needs re-converting. Plans
are kept by input shapes (:class:`_PlanCache`): going back to shapes seen before (the batch
sizes of a server, the widths of OCR crops, a VAD's chunk sizes) re-plans nothing.

Limits (:mod:`edgert.runtime.limits`): the arena, every tensor and the scratch buffer are checked
against ``max_alloc_bytes`` from their shapes before anything is allocated (in step 2, and in
step 3 for dynamic steps); Loop/Scan count their iterations against ``max_loop_iterations``;
with ``timeout_s`` the clock is read between steps and between loop iterations.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgert import dtypes
from edgert.errors import (
    DTypeError,
    EdgeRTError,
    InputError,
    KernelError,
    ModelFormatError,
    ShapeError,
    UnsupportedOpError,
    describe_unsupported,
)
from edgert.format import ModelDef, SubGraphDef, read_model
from edgert.runtime import limits as _limits
from edgert.runtime import planner
from edgert.runtime.registry import Kernel, KernelOptions, KernelRegistry, OpContext, TensorInfo
from edgert.runtime.values import check_value, copy_value, value_info

# Kernels marked foldable are run at prepare time when all their inputs are known and their
# outputs hold at most this many elements (shape arithmetic, small constant subexpressions).
FOLD_LIMIT = 1 << 22


@dataclass
class _Step:
    """One operator in the execution plan."""

    op_index: int
    kernel: Kernel
    inputs: list[int]  # tensor indices, -1 = omitted
    outputs: list[int]
    dynamic: bool = False  # prepared and allocated at invoke time
    in_arrays: list[np.ndarray | None] = field(default_factory=list)
    out_arrays: list[np.ndarray | None] = field(default_factory=list)
    # A Concat with some inputs computed in place (Interpreter._alias_concats): those inputs,
    # and the invoke that copies the rest.
    aliased: set[int] = field(default_factory=set)
    kernel_invoke: Any = None


@dataclass
class PlanStats:
    """Facts about the current plan, for ``edgert bench`` and ``inspect``."""

    arena_bytes: int = 0
    planned_tensors: int = 0
    folded_ops: int = 0
    dynamic_ops: int = 0
    aliased_ops: int = 0  # Concats removed: their inputs are computed into the output
    prepare_seconds: float = 0.0
    reused: bool = False  # the plan came from the plan cache (shapes seen before)


# How many plans an interpreter keeps by input shapes, and how many bytes of arenas and scratch
# buffers the plans not in use may hold (the least recently used go first).
DEFAULT_PLAN_CACHE_SIZE = 8
PLAN_CACHE_BYTES = 256 << 20

# The interpreter attributes that make up a plan (set by _prepare).
_PLAN_ATTRS = ("_arrays", "_arena", "_steps", "_bound", "_in_views", "_out_views", "_infos",
               "stats")


@dataclass
class _Plan:
    """A plan set aside: the interpreter's plan attributes and every kernel's state."""

    state: dict[str, Any]
    kernels: list[dict[str, Any]]
    nbytes: int


class _PlanCache:
    """Plans by input shapes, least recently used first out.

    A plan is everything ``prepare`` decided for one set of input shapes: the arena and the
    arrays viewing it, the bound steps, and each kernel's prepared state (kernels keep what
    ``prepare`` chose in their own attributes: the conv path, packed operands, the scratch they
    were bound to). When the interpreter moves to other shapes the current plan is set aside
    with a shallow copy of every kernel's ``__dict__``; coming back puts them back. Sharing is
    by reference, so what a kernel computes once for all shapes (packed weights) is not copied;
    a kernel's ``prepare`` must therefore rebind its per-shape attributes rather than mutate
    objects in place (the alternating-shape tests check every model family for it).
    """

    def __init__(self, size: int, max_bytes: int):
        self.size = size
        self.max_bytes = max_bytes
        self._plans: dict[Any, _Plan] = {}  # insertion order = least recently used first

    def __len__(self) -> int:
        return len(self._plans)

    def put(self, key, plan: _Plan) -> None:
        self._plans.pop(key, None)
        self._plans[key] = plan
        total = sum(p.nbytes for p in self._plans.values())
        while self._plans and (len(self._plans) > self.size or total > self.max_bytes):
            oldest = next(iter(self._plans))
            total -= self._plans.pop(oldest).nbytes

    def take(self, key) -> _Plan | None:
        return self._plans.pop(key, None)


# Executors for other devices: name -> a function returning the executor class (a subclass of
# Interpreter). edgert.runtime registers "cuda" with a loader that imports numba.cuda only when
# a CUDA interpreter is asked for, so the CPU runtime never loads it.
_DEVICES: dict[str, Callable[[], type]] = {}


def register_device(name: str, loader: Callable[[], type]) -> None:
    """Make ``Interpreter(model, device=name)`` build ``loader()``'s executor."""
    _DEVICES[name] = loader


class Interpreter:
    """Runs a `.edgert` model.

    Args:
        model: a path to a `.edgert` file, its bytes, or a :class:`~edgert.format.ModelDef`.
        num_threads: threads for the compute kernels (Numba's pool); None uses the physical
            cores this process may run on (as onnxruntime does).
        device: ``"cpu"`` or ``"cuda"`` (builds a
            :class:`~edgert.runtime.cuda_interpreter.CudaInterpreter`; a clear error where
            numba-cuda or a GPU is missing).
        kernel_options: per op type, a :class:`~edgert.runtime.registry.KernelOptions` that
            forces a kernel family's algorithm or replaces its measured thresholds, e.g.
            ``{"Conv": KernelOptions(path=ConvPath.IM2COL_GEMM)}`` (for benchmarks, and to work
            around a slow layer on a device); a forced path that cannot run a layer raises.
        max_alloc_bytes: the largest arena, single tensor or scratch buffer this interpreter
            allocates, checked from the shapes before allocating (at plan time, and at run time
            for shapes that depend on data). Default: half the physical memory (no limit where
            the OS does not tell); None: no limit.
        max_loop_iterations: iterations of one Loop/Scan node per run (default
            :data:`~edgert.runtime.limits.DEFAULT_MAX_LOOP_ITERATIONS`, one million); None: no
            limit.
        timeout_s: wall-clock budget of one :meth:`run` / :meth:`invoke`, checked between ops
            and between Loop/Scan iterations (an op already running is not interrupted);
            default None, no budget.
        plan_cache_size: how many plans (one per set of input shapes) to keep, so that shapes
            seen before re-plan nothing (default 8; the plans not in use also hold at most
            :data:`PLAN_CACHE_BYTES` of arenas, least recently used dropped first); 0 re-plans
            at every change of shape.

    Going past a limit raises :class:`~edgert.errors.ResourceLimitError` naming the op and the
    limit (see :mod:`edgert.runtime.limits`).

    Example:
        >>> interp = Interpreter("model.edgert")
        >>> outputs = interp.run({"input": x})            # dict name -> array
        >>> # or TFLite style:
        >>> interp.allocate_tensors()
        >>> interp.set_tensor(interp.get_input_details()[0]["index"], x)
        >>> interp.invoke()
        >>> y = interp.get_tensor(interp.get_output_details()[0]["index"])
    """

    device = "cpu"
    _caches_plans = True  # executors whose plans hold more than _PLAN_ATTRS say False

    def __new__(cls, model=None, num_threads=None, device: str = "cpu", **kwargs):
        # Interpreter(model, device="cuda") builds that device's executor (a subclass, whose
        # __init__ Python then runs with the same arguments).
        if cls is Interpreter and device != "cpu":
            loader = _DEVICES.get(device)
            if loader is None:
                known = ", ".join(repr(d) for d in ("cpu", *sorted(_DEVICES)))
                raise EdgeRTError(f"unknown device {device!r}; expected one of {known}")
            return super().__new__(loader())
        return super().__new__(cls)

    def __init__(
        self,
        model: str | os.PathLike | bytes | bytearray | memoryview | ModelDef,
        num_threads: int | None = None,
        device: str = "cpu",
        *,
        kernel_options: Mapping[str, KernelOptions] | None = None,
        max_alloc_bytes: int | None = _limits.DEFAULT,
        max_loop_iterations: int | None = _limits.DEFAULT,
        timeout_s: float | None = None,
        plan_cache_size: int = DEFAULT_PLAN_CACHE_SIZE,
    ):
        if device != self.device:
            raise EdgeRTError(f"{type(self).__name__} runs on device {self.device!r}, not "
                              f"{device!r}")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise EdgeRTError(
                f"num_threads must be a positive integer or None, got {num_threads!r}"
            )
        if isinstance(plan_cache_size, bool) or not isinstance(plan_cache_size, int) or \
                plan_cache_size < 0:
            raise EdgeRTError(f"plan_cache_size must be a non-negative integer, got "
                              f"{plan_cache_size!r}")
        self._plan_cache = _PlanCache(plan_cache_size if self._caches_plans else 0,
                                      PLAN_CACHE_BYTES)
        self._plan_key: Any = None  # the input shapes the current plan is for
        # run()/invoke() of one interpreter take turns (one arena): a second thread used to
        # corrupt the heap or get another run's results. Re-entrant: run() calls invoke().
        self._lock = threading.RLock()
        parent, self._scope = _limits.parent_limits()
        if (parent is not None and max_alloc_bytes is _limits.DEFAULT
                and max_loop_iterations is _limits.DEFAULT and timeout_s is None):
            # the interpreter of a control-flow body: its parent's limits and deadline
            self._limits = parent
        else:
            self._scope = ""
            self._limits = _limits.RunLimits.build(max_alloc_bytes, max_loop_iterations,
                                                   timeout_s)
        t0 = time.perf_counter()
        self._model = model if isinstance(model, ModelDef) else read_model(model)
        self.load_seconds = time.perf_counter() - t0
        self._graph: SubGraphDef = self._model.main
        self._num_threads = num_threads
        self._kernel_options = dict(kernel_options or {})
        for op_type, opts in self._kernel_options.items():
            if not isinstance(opts, KernelOptions):
                raise EdgeRTError(f"kernel_options[{op_type!r}] must be a KernelOptions, got "
                                  f"{type(opts).__name__}")
        # The count every kernel splits its work by (OpContext.num_threads), resolved once.
        self._threads = _resolve_threads(num_threads)
        self._registry = self._cpu_registry()
        self._kernels = self._resolve_kernels()

        g = self._graph
        self._input_index = {g.tensors[i].name: i for i in g.inputs}
        self._output_index = {g.tensors[i].name: i for i in g.outputs}
        # Current concrete shape of each model input; None while a dim is unknown.
        self._input_shapes: dict[int, tuple[int, ...] | None] = {}
        # Sequence / optional inputs and outputs (edgert/runtime/values.py): run-time objects,
        # never in the arena; their fed values are kept here across re-plans.
        self._special = {i for i in (*g.inputs, *g.outputs) if g.tensors[i].kind}
        self._special_values: dict[int, Any] = {}
        if self._special:  # run()'s fast path copies arrays into planned buffers: not for these
            self._fast_feeds = _no_fast_feeds
        for i in g.inputs:
            t = g.tensors[i]
            if t.kind:
                self._input_shapes[i] = ()  # nothing to plan
                continue
            if not dtypes.is_known(t.dtype):
                raise ModelFormatError(
                    f"model input '{t.name}' has no element type (dtype {t.dtype})"
                )
            known = not t.unknown_rank and all(d >= 0 for d in t.shape)
            self._input_shapes[i] = tuple(t.shape) if known else None
        self._arrays: list[np.ndarray | None] = [None] * len(g.tensors)
        self._steps: list[_Step] = []
        self._prepared = False
        self.stats = PlanStats()
        if all(s is not None for s in self._input_shapes.values()):
            self.allocate_tensors()

    # ----- set-up -------------------------------------------------------------------------------
    @staticmethod
    def _cpu_registry() -> KernelRegistry:
        from edgert.runtime.kernels.cpu import registry

        return registry()

    def _resolve_kernels(self) -> list[Kernel]:
        kernels: list[Kernel] = []
        missing: list[tuple[str, str, str]] = []
        for op in self._graph.operators:
            cls = self._registry.lookup(op.op_type, op.domain, op.version)
            if cls is None:
                dom = op.domain or "ai.onnx"
                missing.append((op.op_type, op.name, f"no CPU kernel for {dom}.{op.op_type}"
                                                     f" (opset {op.version})"))
                continue
            opts = self._kernel_options.get(op.op_type) or KernelOptions()
            ctx = OpContext(op.op_type, op.name, op.attrs, op.domain, op.version,
                            self._threads, opts.path, opts.tuning, self._limits)
            kernels.append(cls(ctx))
        if missing:
            raise UnsupportedOpError(_unsupported_message(missing), ops=missing)
        return kernels

    # ----- TFLite-style API ---------------------------------------------------------------------
    def get_input_details(self) -> list[dict[str, Any]]:
        """One dict per model input: name, index, shape, shape_signature, dtype, quantization."""
        return [self._details(i) for i in self._graph.inputs]

    def get_output_details(self) -> list[dict[str, Any]]:
        """One dict per model output (shapes are known after :meth:`allocate_tensors`)."""
        return [self._details(i) for i in self._graph.outputs]

    def _details(self, index: int) -> dict[str, Any]:
        t = self._graph.tensors[index]
        if index in self._input_shapes:
            shape = self._input_shapes[index]
        else:
            arr = self._arrays[index]
            shape = tuple(arr.shape) if isinstance(arr, np.ndarray) else None  # not a list
        if shape is None:  # TFLite shows 1 for an unresolved dynamic dim
            shape = tuple(1 if d < 0 else d for d in t.shape)
        q = t.quant
        scales = q.scale if q is not None else np.zeros(0, np.float32)
        zps = q.zero_point if q is not None else np.zeros(0, np.int64)
        return {
            "name": t.name,
            "index": index,
            "shape": np.array(shape, dtype=np.int64),
            "shape_signature": np.array(t.shape, dtype=np.int64),
            "dim_names": tuple(t.shape_signature or ()),
            "dtype": self._dtype_of(index).type,
            "quantization": (float(scales[0]), int(zps[0])) if len(scales) == 1 else (0.0, 0),
            "quantization_parameters": {
                "scales": np.asarray(scales, np.float32),
                "zero_points": np.asarray(zps, np.int64),
                "quantized_dimension": q.axis if q is not None else 0,
            },
        }

    def _dtype_of(self, index: int) -> np.dtype:
        code = self._graph.tensors[index].dtype
        if code:
            return dtypes.to_numpy(code)
        arr = self._arrays[index]  # dtype left undefined in the file: the kernel's inferred one
        return arr.dtype if isinstance(arr, np.ndarray) else np.dtype(np.float32)

    def resize_tensor_input(self, input_index: int | str, shape) -> None:
        """Set a model input's shape (e.g. a new batch size); the next call re-plans memory."""
        index = self._input_tensor(input_index)
        new = self._check_input_shape(index, shape)
        if self._input_shapes[index] != new:
            self._input_shapes[index] = new
            self._prepared = False

    def allocate_tensors(self) -> None:
        """Prepare every kernel for the current input shapes and plan the arena."""
        unknown = [self._graph.tensors[i].name for i, s in self._input_shapes.items() if s is None]
        if unknown:
            raise InputError(
                f"input(s) {', '.join(unknown)} have dynamic dimensions: call "
                "resize_tensor_input() with a concrete shape first, or use run(feeds)"
            )
        t0 = time.perf_counter()
        key = self._shapes_key()
        if self._plan_key is not None and key == self._plan_key and self._prepared:
            return  # planned for these shapes already
        if self._plan_key is not None and self._plan_cache.size:
            self._set_plan_aside()
        plan = self._plan_cache.take(key)
        self._plan_key = None  # (no plan while preparing: a failed prepare leaves none)
        if plan is not None:
            self._restore_plan(plan)
            self.stats.reused = True
        else:
            self._prepare()
            self.stats.reused = False
        self._plan_key = key
        self.stats.prepare_seconds = time.perf_counter() - t0
        self._prepared = True

    def _shapes_key(self):
        # (the limit is part of the key: a plan checked against a larger one is not reused)
        return (tuple(self._input_shapes.values()), self._limits.max_alloc_bytes)

    def _set_plan_aside(self) -> None:
        state = {name: getattr(self, name) for name in _PLAN_ATTRS}
        kernels = [dict(k.__dict__) for k in self._kernels]
        nbytes = int(getattr(self._arena, "nbytes", 0)) + max(
            (int(getattr(k, "scratch_nbytes", 0) or 0) for k in self._kernels), default=0)
        self._plan_cache.put(self._plan_key, _Plan(state, kernels, nbytes))

    def _restore_plan(self, plan: _Plan) -> None:
        for kernel, saved in zip(self._kernels, plan.kernels):
            kernel.__dict__.clear()
            kernel.__dict__.update(saved)
        for name, value in plan.state.items():
            setattr(self, name, value)
        self.stats = PlanStats(**{**self.stats.__dict__})  # (its own copy: timings differ)
        for idx, val in self._special_values.items():  # fed sequence / optional inputs
            self._arrays[idx] = val

    def set_tensor(self, tensor_index: int | str, value) -> None:
        """Copy ``value`` into a model input (its shape must equal the current input shape)."""
        index = self._input_tensor(tensor_index)
        if index in self._special:
            self._special_values[index] = check_value(self._graph.tensors[index], value)
            if not self._prepared:
                self.allocate_tensors()
            self._arrays[index] = self._special_values[index]
            return
        arr = self._check_input_array(index, value)
        if self._input_shapes[index] != arr.shape:
            raise ShapeError(
                f"input '{self._graph.tensors[index].name}': got shape {arr.shape}, the model is "
                f"allocated for {self._input_shapes[index]}; call resize_tensor_input() and "
                "allocate_tensors() first (run() does this for you)"
            )
        if not self._prepared:
            self.allocate_tensors()
        dst = self._arrays[index]
        assert dst is not None
        np.copyto(dst, arr)

    @property
    def limits(self) -> _limits.RunLimits:
        """The resource limits of this interpreter (``max_alloc_bytes``,
        ``max_loop_iterations``, ``timeout_s``)."""
        return self._limits

    def invoke(self) -> None:
        """Run the model on the inputs set with :meth:`set_tensor`."""
        with self._lock:
            if self._limits.timeout_s is None:
                self._invoke_locked()
                return
            with self._limits.running():
                self._invoke_locked()

    def _step_label(self, k: int) -> str:
        """Who used up the time when the clock is read before step ``k``: the step before it
        (or the planning before the first), inside its control-flow body if any."""
        here = (f"after {self._steps[k - 1].kernel.where()}" if k
                else f"before {self._steps[0].kernel.where()}" if self._steps else "planning")
        return f"{self._scope}, {here}" if self._scope else here

    def _invoke_locked(self) -> None:
        if not self._prepared:
            self.allocate_tensors()
        _set_threads(self._threads)
        # The hot loop: each static step is a pre-bound (invoke, inputs, outputs) triple, so a
        # step costs one Python call plus the kernel's own work (measured ~1 µs of dispatch).
        k = -1
        deadline = self._limits.deadline
        try:
            if deadline is None:
                for k, (fn, ins, outs) in enumerate(self._bound):
                    if fn is None:
                        self._invoke_dynamic(self._steps[k])
                    else:
                        fn(ins, outs)
            else:  # timeout_s: the clock is read between steps
                clock = time.monotonic
                for k, (fn, ins, outs) in enumerate(self._bound):
                    if clock() > deadline:
                        self._limits.timed_out(self._step_label(k))
                    if fn is None:
                        self._invoke_dynamic(self._steps[k])
                    else:
                        fn(ins, outs)
        except EdgeRTError:
            raise
        except Exception as exc:  # a kernel bug must still name the op
            raise KernelError(
                f"{self._steps[k].kernel.where()}: failed while running: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def get_tensor(self, tensor_index: int | str) -> np.ndarray:
        """A copy of a tensor's current value (outputs after :meth:`invoke`)."""
        index = self._tensor_index(tensor_index)
        arr = self._arrays[index]
        if index in self._special or type(arr) in (list, dict):  # a sequence or an optional value
            return copy_value(arr)
        if arr is None:
            raise self._no_value(index)
        return np.array(arr, copy=True)

    def _tensor_index(self, tensor_index: int | str) -> int:
        """The index of a tensor given by index or by input/output name, range-checked."""
        if isinstance(tensor_index, str):
            index = self._output_index.get(tensor_index, self._input_index.get(tensor_index))
            if index is None:
                raise InputError(f"no input or output named {tensor_index!r}")
        else:
            index = int(tensor_index)
        if not 0 <= index < len(self._arrays):
            raise InputError(f"tensor index {index} out of range (model has {len(self._arrays)})")
        return index

    def _no_value(self, index: int) -> InputError:
        return InputError(
            f"tensor {index} ('{self._graph.tensors[index].name}') has no value: it is an "
            "intermediate tensor whose memory is reused, or the model has not run yet"
        )

    # ----- plain API ----------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [self._graph.tensors[i].name for i in self._graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [self._graph.tensors[i].name for i in self._graph.outputs]

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._model.metadata)

    def run(self, feeds: dict[str, Any], copy: bool = True) -> dict[str, np.ndarray]:
        """Run the model: ``feeds`` maps every input name to an array; returns name -> array.

        A feed whose shape differs from the last one (another batch size...) re-plans memory.
        ``copy=False`` returns read-only views of the interpreter's own buffers instead of
        copies: no copying, but they change with the next run (calibration reads every
        activation this way).

        Safe to call from several threads: runs of one interpreter take turns (one set of
        buffers); for runs in parallel, give each thread its own Interpreter over the same
        file (the weights are mapped once by the OS and shared).
        """
        with self._lock:
            if self._limits.timeout_s is None:  # no budget to start: skip the context manager
                return self._run_locked(feeds, copy)
            with self._limits.running():
                return self._run_locked(feeds, copy)

    def _run_locked(self, feeds: dict[str, Any], copy: bool) -> dict[str, np.ndarray]:
        fast = self._fast_feeds(feeds)
        if fast is not None:
            for dst, arr in fast:
                np.copyto(dst, arr)
            self.invoke()
            if not copy:
                return {name: _read_only(arr) for name, arr in self._out_views}
            return {name: np.array(arr, copy=True) for name, arr in self._out_views}
        if not isinstance(feeds, dict):
            raise InputError(
                f"run() takes a dict of input name -> array, got {type(feeds).__name__}"
            )
        unknown = [k for k in feeds if k not in self._input_index]
        if unknown:
            raise InputError(
                f"unknown input name(s) {unknown}; the model's inputs are {self.input_names}"
            )
        missing = [k for k in self._input_index if k not in feeds]
        if missing:
            raise InputError(
                f"missing input(s) {missing}; the model's inputs are {self.input_names}"
            )
        checked = {}
        special = {}
        for name, value in feeds.items():
            index = self._input_index[name]
            if index in self._special:
                special[index] = check_value(self._graph.tensors[index], value)
                continue
            arr = self._check_input_array(index, value)
            new_shape = self._check_input_shape(index, arr.shape)
            if self._input_shapes[index] != new_shape:
                self._input_shapes[index] = new_shape
                self._prepared = False
            checked[index] = arr
        if not self._prepared:
            self.allocate_tensors()
        for index, arr in checked.items():
            dst = self._arrays[index]
            assert dst is not None
            np.copyto(dst, arr)
        for index, val in special.items():
            self._special_values[index] = self._arrays[index] = val
        self.invoke()
        if not copy:
            return {self._graph.tensors[i].name: self._view(i) for i in self._graph.outputs}
        return {self._graph.tensors[i].name: self.get_tensor(i) for i in self._graph.outputs}

    def _view(self, index: int):
        """A read-only view of a tensor (a copy for sequences and optional values)."""
        arr = self._arrays[index]
        if index in self._special or type(arr) in (list, dict) or arr is None:
            return self.get_tensor(index)
        return _read_only(arr)

    def _fast_feeds(self, feeds) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """(destination, array) pairs when ``feeds`` exactly fits the current plan, else None.

        The common case of a serving loop (same names, dtypes and shapes every call) then skips
        the general checks; anything else falls through to the checked path, which raises the
        precise error or re-plans.
        """
        if not self._prepared or type(feeds) is not dict or len(feeds) != len(self._in_views):
            return None
        narrow = getattr(self, "_has_narrow_inputs", None)
        if narrow is None:  # sub-byte inputs need the checked path's value-range check
            narrow = self._has_narrow_inputs = any(
                dtypes.value_range(int(self._graph.tensors[i].dtype)) is not None
                for i in self._input_index.values()
            )
        if narrow:
            return None
        pairs = []
        for name, dst in self._in_views:
            arr = feeds.get(name)
            if type(arr) is not np.ndarray or arr.dtype != dst.dtype or arr.shape != dst.shape:
                return None
            pairs.append((dst, arr))
        return pairs

    # ----- input checks -------------------------------------------------------------------------
    def _input_tensor(self, key: int | str) -> int:
        if isinstance(key, str):
            if key not in self._input_index:
                raise InputError(
                    f"no input named {key!r}; the model's inputs are {self.input_names}"
                )
            return self._input_index[key]
        if int(key) not in self._input_shapes:
            raise InputError(
                f"tensor index {key} is not a model input; inputs are "
                f"{ {n: i for n, i in self._input_index.items()} }"
            )
        return int(key)

    def _check_input_array(self, index: int, value) -> np.ndarray:
        t = self._graph.tensors[index]
        want = dtypes.to_numpy(t.dtype)
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype != want:
            raise DTypeError(
                f"input '{t.name}': expected dtype {dtypes.name(t.dtype)}, got {arr.dtype}"
                f" (convert with .astype(np.{want.name}))"
            )
        _check_narrow_range(t.name, int(t.dtype), arr)
        return arr

    def _check_input_shape(self, index: int, shape) -> tuple[int, ...]:
        t = self._graph.tensors[index]
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ShapeError(f"input '{t.name}': shape must be a sequence of ints, got {shape!r}")
        if any(d < 0 for d in shape):
            raise ShapeError(f"input '{t.name}': negative dimension in shape {shape}")
        if t.unknown_rank:
            return shape
        sig = tuple(t.shape)
        ok = len(shape) == len(sig) and all(s < 0 or s == d for s, d in zip(sig, shape))
        if not ok:
            shown = tuple(
                (t.shape_signature[k] if t.shape_signature and t.shape_signature[k] else "?")
                if s < 0 else s
                for k, s in enumerate(sig)
            )
            raise ShapeError(
                f"input '{t.name}': got shape {shape}, the model expects {shown}"
                " (only dimensions shown as names or ? may vary)"
            )
        return shape

    # ----- prepare & plan -----------------------------------------------------------------------
    def _shape_pass(self, new_step) -> tuple[list, list, list, int]:
        """Prepare every kernel for the current input shapes; fold what is known already.

        Shared by the CPU and CUDA interpreters. ``new_step(op_index, kernel, inputs, outputs,
        dynamic)`` builds the executor's step object for each operator that must run.

        Returns:
            ``(infos, values, steps, folded)``: a TensorInfo per tensor, the value of each
            constant or folded tensor (None elsewhere), the steps to run, the folded-op count.
        """
        g = self._graph
        n_tensors = len(g.tensors)
        infos: list[TensorInfo | None] = [None] * n_tensors
        values: list[np.ndarray | None] = [None] * n_tensors
        for idx, t in enumerate(g.tensors):
            if t.data is not None:
                infos[idx] = TensorInfo(tuple(t.data.shape), t.data.dtype, t.data)
                values[idx] = t.data
        for idx in g.inputs:
            if g.tensors[idx].kind:  # a sequence / optional value: known at run time only
                infos[idx] = TensorInfo(None, np.dtype(object))
                continue
            infos[idx] = TensorInfo(self._input_shapes[idx], dtypes.to_numpy(g.tensors[idx].dtype))

        steps: list = []
        folded = 0
        limits = self._limits
        for op_index, (op, kernel) in enumerate(zip(g.operators, self._kernels)):
            if limits.deadline is not None:
                limits.check_deadline(f"{self._scope}, planning {kernel.where()}"
                                      if self._scope else f"planning {kernel.where()}")
            ins = [infos[i] if i >= 0 else None for i in op.inputs]
            if any(x is not None and x.shape is None for x in ins):
                for o in op.outputs:
                    if o >= 0:
                        infos[o] = TensorInfo(None, dtypes.to_numpy(g.tensors[o].dtype or 1))
                steps.append(new_step(op_index, kernel, list(op.inputs), list(op.outputs), True))
                continue
            outs = self._prepare_kernel(kernel, ins, op.outputs)
            self._check_outputs(kernel, outs, op.outputs)
            for o, info in zip(op.outputs, outs):
                if o >= 0:
                    infos[o] = info
            live = [info for o, info in zip(op.outputs, outs) if o >= 0]
            if any(info.shape is None for info in live):
                steps.append(new_step(op_index, kernel, list(op.inputs), list(op.outputs), True))
                continue
            if all(info.value is not None for info in live):
                folded += 1  # the kernel computed its outputs from shapes alone (Shape, Size)
                for o, info in zip(op.outputs, outs):
                    if o >= 0:
                        values[o] = info.value
                continue
            inputs_known = all(x is None or x.value is not None for x in ins)
            small = sum(info.size for info in live) <= FOLD_LIMIT
            if kernel.foldable and inputs_known and small:
                results = self._run_now(kernel, ins, outs)
                for o, info, val in zip(op.outputs, outs, results):
                    if o >= 0:
                        info.value = val
                        values[o] = val
                folded += 1
                continue
            steps.append(new_step(op_index, kernel, list(op.inputs), list(op.outputs), False))
        return infos, values, steps, folded

    def _check_outputs(self, kernel: Kernel, outs: list[TensorInfo], outputs: list[int]) -> None:
        """``max_alloc_bytes``: each output with a known shape, before anything allocates it."""
        limit = self._limits.max_alloc_bytes
        if limit is None:
            return
        for k, (o, info) in enumerate(zip(outputs, outs)):
            if o < 0 or info.shape is None:
                continue
            nbytes = info.size * np.dtype(info.dtype).itemsize
            if nbytes > limit:
                name = self._graph.tensors[o].name if o < len(self._graph.tensors) else str(k)
                self._limits.check_alloc(kernel.where(), nbytes,
                                         f"output '{name}' of shape {tuple(info.shape)}")

    def _alias_concats(self, steps: list, infos: list, values: list) -> tuple[list, dict]:
        """Concats whose inputs can be written in place: the steps without them, and the aliases.

        A Concat whose output is split into contiguous blocks by its inputs (every dim before
        the axis is 1, e.g. channels of one image) needs no copy when each input is computed
        straight into its block: SqueezeNet's fire modules, GoogLeNet's inception blocks and each
        DenseNet layer's new features spent 3-5 % of the run copying (measured). An input takes
        its block when it is the output of a static step (not a model input or output, not a
        constant, not itself an aliased Concat's output) that nothing but this Concat reads, and
        it appears once. Returns ``(steps, {input tensor: (concat output, element offset)})``;
        the Concat's step is dropped when every input is aliased, else kept (it then copies only
        the inputs that are not: see :meth:`_bind_concat`). Models with control flow are left
        alone (their bodies may read outer tensors that are not listed as inputs).
        """
        g = self._graph
        ops = g.operators
        if any(op.op_type in ("If", "Loop", "Scan") for op in ops):
            return steps, {}
        reads: dict[int, int] = {}
        for st in steps:
            for i in st.inputs:
                if i >= 0:
                    reads[i] = reads.get(i, 0) + 1
        produced: dict[int, int] = {}  # tensor -> position of the static step writing it
        for pos, st in enumerate(steps):
            if not st.dynamic:
                for o in st.outputs:
                    if o >= 0:
                        produced[o] = pos
        pinned = set(g.inputs) | set(g.outputs)
        aliases: dict[int, tuple[int, int]] = {}
        dropped: set[int] = set()
        for pos, st in enumerate(steps):
            op = ops[st.op_index]
            # edgert.QConcat: the int8 Concat, a plain copy of the inputs whose quantization is
            # the output's (the quantizer gives them the same, TFLite's rule)
            quant = op.op_type == "QConcat" and op.domain == "edgert"
            if st.dynamic or not (quant or (op.op_type == "Concat"
                                             and op.domain in ("", "ai.onnx"))):
                continue
            out = st.outputs[0]
            info = infos[out]
            if out < 0 or values[out] is not None or info is None or info.shape is None:
                continue
            if out in aliases or np.dtype(info.dtype) == np.dtype(object):
                continue
            rank = len(info.shape)
            axis = int(op.attrs.get("axis", 0))
            axis = axis + rank if axis < 0 else axis
            if not 0 <= axis < rank or any(d != 1 for d in info.shape[:axis]):
                continue
            offset = 0
            mine: dict[int, tuple[int, int]] = {}
            for k, i in enumerate(st.inputs):
                size = infos[i].size if i >= 0 and infos[i] is not None else 0
                copied = not quant or st.kernel.params[k] is None
                if (copied and i >= 0 and i not in pinned and values[i] is None and i in produced
                        and produced[i] not in dropped and reads.get(i) == 1
                        and st.inputs.count(i) == 1 and i not in aliases
                        and np.dtype(infos[i].dtype) == np.dtype(info.dtype)):
                    mine[i] = (out, offset)
                offset += size
            if not mine:
                continue
            aliases.update(mine)
            if len(mine) == len(st.inputs):
                dropped.add(pos)
            elif not quant:
                st.aliased = set(mine)
            # (a QConcat that rescales some inputs runs as is: its copies of the in-place
            # inputs are onto themselves)
        return [st for pos, st in enumerate(steps) if pos not in dropped], aliases

    def _plan_tensors(self, steps: list, infos: list, values: list,
                      aliases: dict | None = None):
        """Lifetimes of the arena's tensors (model inputs, outputs of static steps) and the plan.

        ``aliases`` (from :meth:`_alias_concats`): tensors held inside another tensor's block,
        which is then alive from the first of them being written.

        Returns:
            ``(shapes, offsets, arena_size, planned)``: (shape, dtype) of every tensor to hold,
            arena offsets of those that go in the arena (not strings), its size, their count.
        """
        g = self._graph
        last_use: dict[int, int] = {}
        for pos, step in enumerate(steps):
            for i in step.inputs:
                if i >= 0:
                    last_use[i] = pos
        end = len(steps)
        # Model inputs live for the whole run like outputs: invoke() may be called again on the
        # same inputs (TFLite's contract), so no intermediate may reuse their memory.
        for i in list(g.outputs) + list(g.inputs):
            last_use[i] = end
        allocations: list[planner.Allocation] = []
        shapes: dict[int, tuple[tuple[int, ...], np.dtype]] = {}

        def want(idx: int, first: int) -> None:
            info = infos[idx]
            assert info is not None and info.shape is not None
            dt = np.dtype(info.dtype)
            shapes[idx] = (info.shape, dt)
            if dt == np.dtype(object):  # strings are held outside the arena
                return
            nbytes = info.size * dt.itemsize
            allocations.append(planner.Allocation(idx, nbytes, first, last_use.get(idx, first)))

        for idx in g.inputs:
            if not g.tensors[idx].kind:  # sequence / optional inputs are not in the arena
                info = infos[idx]
                self._limits.check_alloc(
                    "the model", info.size * np.dtype(info.dtype).itemsize,
                    f"input '{g.tensors[idx].name}' of shape {tuple(info.shape)}")
                want(idx, 0)
        aliases = aliases or {}
        starts: dict[int, int] = {}  # aliased concat output -> first step writing into it
        for pos, step in enumerate(steps):
            if step.dynamic:
                continue
            for o in step.outputs:
                if o >= 0 and o in aliases:
                    host = aliases[o][0]
                    starts[host] = min(starts.get(host, pos), pos)
        for pos, step in enumerate(steps):
            if step.dynamic:
                continue
            for o in step.outputs:
                if o >= 0 and values[o] is None and o not in aliases:
                    want(o, min(pos, starts.pop(o, pos)))
        for host, pos in starts.items():  # outputs of dropped concats
            want(host, pos)
        offsets, arena_size = planner.plan(allocations)
        return shapes, offsets, arena_size, len(allocations)

    def _prepare(self) -> None:
        g = self._graph
        infos, arrays, steps, folded = self._shape_pass(
            lambda i, kernel, ins, outs, dynamic: _Step(i, kernel, ins, outs, dynamic)
        )
        n_steps = len(steps)
        steps, aliases = self._alias_concats(steps, infos, arrays)
        shapes, offsets, arena_size, planned = self._plan_tensors(steps, infos, arrays, aliases)
        self._limits.check_alloc("the model", arena_size, "the arena of its tensors")
        try:
            raw = np.empty(arena_size + planner.ALIGNMENT, np.uint8)
        except (MemoryError, ValueError):  # a shape from the model or the feeds asks for TBs
            raise EdgeRTError(
                f"the tensors of this model need an arena of {arena_size} bytes, more than can "
                "be allocated (check the input shapes and the model's shape constants)"
            ) from None
        start = (-raw.ctypes.data) % planner.ALIGNMENT
        arena = raw[start : start + arena_size]
        for idx, (shape, dt) in shapes.items():
            if dt == np.dtype(object) or idx not in offsets:
                arrays[idx] = np.empty(shape, dt)
                continue
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            off = offsets[idx]
            arrays[idx] = arena[off : off + nbytes].view(dt).reshape(shape)
        for idx, (host, off) in aliases.items():  # blocks of concat outputs
            size = infos[idx].size
            arrays[idx] = arrays[host].reshape(-1)[off : off + size].reshape(infos[idx].shape)
        for idx, val in self._special_values.items():  # fed sequence / optional inputs
            arrays[idx] = val

        for step in steps:
            if not step.dynamic:
                step.in_arrays = [arrays[i] if i >= 0 else None for i in step.inputs]
                step.out_arrays = [arrays[o] if o >= 0 else None for o in step.outputs]
                if step.aliased:
                    self._bind_concat(step)
        # One scratch buffer shared by the kernels that ask for one (``scratch_nbytes`` and
        # ``bind_scratch``, e.g. Conv's column matrix): steps run one at a time.
        users = [st.kernel for st in steps
                 if not st.dynamic and getattr(st.kernel, "scratch_nbytes", 0) > 0]
        if users:
            need = max(k.scratch_nbytes for k in users)
            biggest = max(users, key=lambda k: k.scratch_nbytes)
            self._limits.check_alloc(biggest.where(), need, "the shared scratch buffer")
            try:
                raw_scratch = np.empty(need + planner.ALIGNMENT, np.uint8)
            except (MemoryError, ValueError):
                raise EdgeRTError(f"the kernels of this model need a scratch buffer of {need} "
                                  "bytes, more than can be allocated (check the input "
                                  "shapes)") from None
            first = (-raw_scratch.ctypes.data) % planner.ALIGNMENT
            scratch = raw_scratch[first : first + need]
            for k in users:
                k.bind_scratch(scratch)
        self._arrays = arrays
        self._arena = arena
        self._steps = steps
        self._bound = [
            (None, None, None) if st.dynamic else
            (st.kernel_invoke or st.kernel.invoke, st.in_arrays, st.out_arrays)
            for st in steps
        ]
        self._in_views = [(g.tensors[i].name, arrays[i]) for i in g.inputs]
        # Output arrays are fixed by the plan unless a dynamic step produces them.
        self._out_views = [(g.tensors[i].name, arrays[i]) for i in g.outputs]
        if any(st.dynamic for st in steps):
            self._out_views = _LiveOutputs(self, [g.tensors[i].name for i in g.outputs],
                                           list(g.outputs))
        self._infos = infos
        self.stats = PlanStats(
            arena_bytes=arena_size,
            planned_tensors=planned,
            folded_ops=folded,
            dynamic_ops=sum(s.dynamic for s in steps),
            aliased_ops=n_steps - len(steps),
        )

    @staticmethod
    def _bind_concat(step: _Step) -> None:
        """A Concat some of whose inputs are already in place: it copies only the others."""
        out = step.out_arrays[0].reshape(-1)
        blocks, off = [], 0
        for i, arr in zip(step.inputs, step.in_arrays):
            if i not in step.aliased:
                blocks.append((arr.reshape(-1), out[off : off + arr.size]))
            off += arr.size

        def copy_rest(inputs, outputs, blocks=blocks):
            for src, dst in blocks:
                dst[...] = src

        step.kernel_invoke = copy_rest

    def _prepare_kernel(
        self, kernel: Kernel, ins: list[TensorInfo | None], outputs: list[int]
    ) -> list[TensorInfo]:
        try:
            outs = kernel.prepare(ins)
        except EdgeRTError:
            raise
        except Exception as exc:
            raise KernelError(
                f"{kernel.where()}: failed while preparing: {type(exc).__name__}: {exc}"
            ) from exc
        n_live = max((k + 1 for k, o in enumerate(outputs) if o >= 0), default=0)
        if len(outs) < n_live:
            raise KernelError(
                f"{kernel.where()}: produces {len(outs)} output(s) but the model uses {n_live}"
            )
        return outs

    @staticmethod
    def _run_now(kernel: Kernel, ins: list[TensorInfo | None], outs: list[TensorInfo]):
        in_arrays = [None if x is None else x.value for x in ins]
        out_arrays = [np.empty(o.shape, o.dtype) for o in outs]
        ret = kernel.invoke(in_arrays, out_arrays)
        return list(ret) if ret is not None else out_arrays

    def _invoke_dynamic(self, step: _Step) -> None:
        arrays = self._arrays
        ins = [None if i < 0 else arrays[i] for i in step.inputs]
        infos = [None if a is None else value_info(a) for a in ins]
        outs = self._prepare_kernel(step.kernel, infos, step.outputs)
        self._check_outputs(step.kernel, outs, step.outputs)
        if all(o.value is not None for o, idx in zip(outs, step.outputs) if idx >= 0):
            results = [o.value for o in outs]
        elif any(o.shape is None for o in outs):
            results = step.kernel.invoke(ins, [None] * len(outs))
            # shapes only the kernel knew: checked once they exist (the kernels that size their
            # outputs from data check before allocating, e.g. Loop's stacked scan outputs)
            self._check_outputs(step.kernel, [value_info(r) if isinstance(r, np.ndarray)
                                              else TensorInfo(None, np.dtype(object))
                                              for r in results], step.outputs)
        else:
            results = [np.empty(o.shape, o.dtype) for o in outs]
            ret = step.kernel.invoke(ins, results)
            if ret is not None:
                results = list(ret)
        for idx, val in zip(step.outputs, results):
            if idx >= 0:
                arrays[idx] = val


def _read_only(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _check_narrow_range(name: str, code: int, arr: np.ndarray) -> None:
    """int4/uint4/int2/uint2 (and float4e2m1 codes) ride in a wider NumPy integer: a value outside
    the type's range would reach the kernels as if it were a valid element."""
    narrow = dtypes.value_range(code)
    if narrow is None or not arr.size:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < narrow[0] or hi > narrow[1]:
        raise InputError(
            f"input '{name}': values {lo}..{hi} lie outside the range of {dtypes.name(code)} "
            f"[{narrow[0]}, {narrow[1]}]"
        )


def _no_fast_feeds(feeds) -> None:
    """``_fast_feeds`` of a model with sequence / optional inputs or outputs: never fast."""
    return None


class _LiveOutputs:
    """(name, array) pairs of the outputs read at iteration time (dynamic steps rebind them)."""

    def __init__(self, interp: Interpreter, names: list[str], indices: list[int]):
        self._interp, self._pairs = interp, list(zip(names, indices))

    def __iter__(self):
        arrays = self._interp._arrays
        return iter([(name, arrays[i]) for name, i in self._pairs])


def _resolve_threads(requested: int | None) -> int:
    from edgert.runtime.kernels.cpu._native import threads

    return threads.resolve(requested)


def _set_threads(n: int) -> None:
    """Size Numba's pool for the calling thread to the interpreter's resolved count."""
    from edgert.runtime.kernels.cpu._native import threads

    threads.enter(n)


def _unsupported_message(missing: list[tuple[str, str, str]]) -> str:
    return describe_unsupported(missing, "{count} operator(s) have no kernel in this runtime "
                                "({summary})", "See the README's supported-operator list.")
