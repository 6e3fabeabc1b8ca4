"""The CUDA executor: the same `.edgert` model, run with device-resident tensors.

``Interpreter(model, device="cuda")`` builds a :class:`CudaInterpreter` (through the device
factory that ``edgert.runtime`` registers; a subclass: the TFLite-style API, input checks and
shape handling are the CPU interpreter's). What differs:

* **kernels** come from :func:`edgert.runtime.kernels.cuda.registry`; each CUDA kernel shares
  the op's checks and shapes with the CPU kernel it holds and runs device code in ``invoke``.
  Ops without a CUDA kernel, or whose ``prepare`` cleared ``on_device`` (a dtype or case the
  device code does not cover), run their CPU kernel on host copies of their inputs:
  :attr:`CudaInterpreter.host_ops` lists them, so a model that runs entirely on the GPU shows
  an empty list.
* **memory**: weights are uploaded once, at the first prepare (CUDA kernels upload what their
  ``prepare`` packed; other constants that a device op reads are uploaded by the interpreter
  and kept across re-plans). Every intermediate tensor lives in one device arena laid out by
  the same planner as on the CPU (:mod:`edgert.runtime.planner`). Host<->device copies happen
  for model inputs and outputs only (and around host ops).
* **execution** is asynchronous on one CUDA stream; :meth:`invoke` synchronizes before
  returning, so timings taken around it are honest.
* ``run`` takes NumPy arrays or device arrays (anything with ``__cuda_array_interface__``:
  Numba, CuPy, PyTorch CUDA tensors; read without a host round trip) and returns NumPy arrays,
  or device arrays with ``device_outputs=True`` (the default when any feed was a device array).

Shape arithmetic and small constant subexpressions are folded at prepare time on the host, as on
the CPU. Steps whose output shapes depend on data (NonZero...) run on the host.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, EdgeRTError, InputError, KernelError, ShapeError
from edgert.format import ModelDef
from edgert.runtime.interpreter import Interpreter, PlanStats, _set_threads
from edgert.runtime.kernels.cuda._common import (
    as_device_array,
    is_device_array,
    require_cuda,
)
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo


def cuda_available() -> bool:
    """True when ``device="cuda"`` can work here (numba-cuda and a GPU, or the simulator)."""
    try:
        require_cuda()
    except EdgeRTError:
        return False
    return True


@dataclass
class _DevStep:
    op_index: int
    kernel: Kernel
    inputs: list[int]
    outputs: list[int]
    on_device: bool = True
    dynamic: bool = False
    in_arrays: list[Any] = field(default_factory=list)  # device arrays (or host constants)
    out_arrays: list[Any] = field(default_factory=list)
    # Host steps: host buffers mirroring the inputs/outputs that live on the device.
    host_in: list[np.ndarray | None] = field(default_factory=list)
    host_out: list[np.ndarray | None] = field(default_factory=list)


def _is_cuda_kernel(kernel: Kernel) -> bool:
    return getattr(kernel, "device", "cpu") == "cuda"


class CudaInterpreter(Interpreter):
    """Runs a `.edgert` model on an NVIDIA GPU through numba.cuda (see the module docstring).

    Args:
        model: a path to a `.edgert` file, its bytes, or a :class:`~edgert.format.ModelDef`.
        num_threads: threads for the CPU kernels of host ops (Numba's pool).

    Raises:
        EdgeRTError: numba-cuda is not installed or no GPU (nor the simulator) is available.
    """

    device = "cuda"
    _caches_plans = False  # (a plan also holds device buffers and host mirrors)

    def __init__(
        self,
        model: str | os.PathLike | bytes | bytearray | memoryview | ModelDef,
        num_threads: int | None = None,
        device: str = "cuda",
        *,
        kernel_options=None,
        **limits,
    ):
        if device != "cuda":
            raise EdgeRTError(f"CudaInterpreter runs on device 'cuda', not {device!r}")
        cuda = require_cuda()
        self._cuda = cuda
        self._stream = cuda.stream()
        self._const_dev: dict[int, Any] = {}  # model constants uploaded once, by tensor index
        self.host_ops: list[str] = []
        # limits: max_alloc_bytes, max_loop_iterations, timeout_s (see Interpreter)
        super().__init__(model, num_threads=num_threads, device="cuda",
                         kernel_options=kernel_options, **limits)

    # ----- set-up -------------------------------------------------------------------------------
    @staticmethod
    def _cpu_registry() -> KernelRegistry:  # the name is the base class's hook
        from edgert.runtime.kernels.cuda import registry

        return registry()

    # ----- prepare & plan -----------------------------------------------------------------------
    def _prepare(self) -> None:
        cuda = self._cuda
        for kernel in self._kernels:
            kernel.stream = self._stream

        def new_step(op_index, kernel, ins, outs, dynamic):
            # Dynamic steps run on the host; others on the device when a CUDA kernel serves them.
            on_device = (not dynamic and _is_cuda_kernel(kernel)
                         and bool(getattr(kernel, "on_device", False)))
            return _DevStep(op_index, kernel, ins, outs, on_device=on_device, dynamic=dynamic)

        infos, host, steps, folded = self._shape_pass(new_step)
        shapes, offsets, arena_size, planned = self._plan_tensors(steps, infos, host)
        host_only = {idx for idx, (_, dt) in shapes.items() if dt == np.dtype(object)}
        self._limits.check_alloc("the model", arena_size, "the device arena of its tensors")
        arena = cuda.device_array(max(arena_size, 1), np.uint8, stream=self._stream)
        arrays: list[Any] = list(host)
        for idx, (shape, dt) in shapes.items():
            if idx in host_only or idx not in offsets:
                arrays[idx] = np.empty(shape, dt)
                continue
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            off = offsets[idx]
            if nbytes == 0:
                arrays[idx] = cuda.device_array(shape, dt)
            else:
                arrays[idx] = arena[off : off + nbytes].view(dt).reshape(shape)

        host_ops: list[str] = []
        for step in steps:
            if not step.on_device:
                host_ops.append(step.kernel.where())
            if step.dynamic:
                continue
            if step.on_device:
                step.in_arrays = [self._device_input(i, arrays) for i in step.inputs]
                step.out_arrays = [arrays[o] if o >= 0 else None for o in step.outputs]
            else:
                step.in_arrays = [arrays[i] if i >= 0 else None for i in step.inputs]
                step.out_arrays = [arrays[o] if o >= 0 else None for o in step.outputs]
                step.host_in = [_host_mirror(a) for a in step.in_arrays]
                step.host_out = [_host_mirror(a) for a in step.out_arrays]
        # Kernels that validate run-time data on the device (Gather's indices) report after the
        # stream has synchronized: a kernel cannot raise.
        self._post_checks = [s.kernel for s in steps if s.on_device and not s.dynamic
                             and hasattr(s.kernel, "after_invoke")]
        self._arrays = arrays
        self._arena = arena
        self._steps = steps  # type: ignore[assignment]
        self._infos = infos
        self.host_ops = host_ops
        self.stats = PlanStats(
            arena_bytes=arena_size,
            planned_tensors=planned,
            folded_ops=folded,
            dynamic_ops=sum(s.dynamic for s in steps),
        )

    def _device_input(self, idx: int, arrays: list[Any]):
        """The device array a device step reads for tensor ``idx`` (uploading constants)."""
        if idx < 0:
            return None
        a = arrays[idx]
        if not isinstance(a, np.ndarray):
            return a
        if self._graph.tensors[idx].data is not None:  # a weight: once per interpreter
            dev = self._const_dev.get(idx)
            if dev is None:
                dev = self._cuda.to_device(np.ascontiguousarray(a), stream=self._stream)
                self._const_dev[idx] = dev
            return dev
        # A value folded at prepare (it may change with input shapes): uploaded per plan.
        return self._cuda.to_device(np.ascontiguousarray(a), stream=self._stream)

    @staticmethod
    def _run_now(kernel: Kernel, ins: list[TensorInfo | None], outs: list[TensorInfo]):
        # Folding at prepare runs on the host (the base class's hook).
        in_arrays = [None if x is None else x.value for x in ins]
        out_arrays = [np.empty(o.shape, o.dtype) for o in outs]
        run = kernel.host_invoke if _is_cuda_kernel(kernel) else kernel.invoke
        ret = run(in_arrays, out_arrays)
        return list(ret) if ret is not None else out_arrays

    # ----- running ------------------------------------------------------------------------------
    def _invoke_locked(self) -> None:
        """Run the model on the inputs set with :meth:`set_tensor`; returns when it is done."""
        if not self._prepared:
            self.allocate_tensors()
        _set_threads(self._threads)  # for the CPU kernels of host ops
        stream = self._stream
        limits = self._limits
        last = "planning"
        for step in self._steps:
            if limits.deadline is not None:  # timeout_s, checked between steps
                limits.check_deadline(last)
                last = step.kernel.where()
            try:
                if step.dynamic:
                    self._invoke_dynamic_host(step)
                elif step.on_device:
                    step.kernel.invoke(step.in_arrays, step.out_arrays)
                else:
                    self._invoke_host(step)
            except EdgeRTError:
                raise
            except Exception as exc:
                raise KernelError(
                    f"{step.kernel.where()}: failed while running on cuda: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        stream.synchronize()
        for kernel in self._post_checks:
            kernel.after_invoke()

    def _invoke_host(self, step: _DevStep) -> None:
        stream = self._stream
        ins = []
        for a, h in zip(step.in_arrays, step.host_in):
            if h is not None:
                a.copy_to_host(h, stream=stream)
                ins.append(h)
            else:
                ins.append(a)
        stream.synchronize()
        outs = [h if h is not None else a for a, h in zip(step.out_arrays, step.host_out)]
        run = step.kernel.host_invoke if _is_cuda_kernel(step.kernel) else step.kernel.invoke
        run(ins, outs)
        for a, h in zip(step.out_arrays, step.host_out):
            if h is not None:
                a.copy_to_device(h, stream=stream)
        stream.synchronize()  # h is reused by the next call: the copy must have read it

    def _invoke_dynamic_host(self, step: _DevStep) -> None:
        arrays = self._arrays
        stream = self._stream
        ins = []
        for i in step.inputs:
            a = None if i < 0 else arrays[i]
            ins.append(a.copy_to_host(stream=stream) if a is not None and
                       not isinstance(a, np.ndarray) else a)
        stream.synchronize()
        infos = [None if a is None else TensorInfo(tuple(a.shape), a.dtype, a) for a in ins]
        outs = self._prepare_kernel(step.kernel, infos, step.outputs)
        self._check_outputs(step.kernel, outs, step.outputs)
        run = step.kernel.host_invoke if _is_cuda_kernel(step.kernel) else step.kernel.invoke
        if all(o.value is not None for o, idx in zip(outs, step.outputs) if idx >= 0):
            results = [o.value for o in outs]
        elif any(o.shape is None for o in outs):
            results = run(ins, [None] * len(outs))
        else:
            results = [np.empty(o.shape, o.dtype) for o in outs]
            ret = run(ins, results)
            if ret is not None:
                results = list(ret)
        for idx, val in zip(step.outputs, results):
            if idx >= 0:
                arrays[idx] = self._cuda.to_device(np.ascontiguousarray(val), stream=stream)

    # ----- inputs and outputs -------------------------------------------------------------------
    def _check_input_array(self, index: int, value):
        if is_device_array(value):
            arr = as_device_array(value)
            t = self._graph.tensors[index]
            want = dtypes.to_numpy(t.dtype)
            if np.dtype(arr.dtype) != want:
                raise DTypeError(
                    f"input '{t.name}': expected dtype {dtypes.name(t.dtype)}, got {arr.dtype}"
                )
            return arr
        return super()._check_input_array(index, value)

    def _write_input(self, index: int, arr) -> None:
        dst = self._arrays[index]
        if isinstance(dst, np.ndarray):  # a string input: host only
            np.copyto(dst, arr)
        elif is_device_array(arr):
            if not arr.is_c_contiguous():
                raise ShapeError(
                    f"input '{self._graph.tensors[index].name}': device arrays must be "
                    "C-contiguous"
                )
            if dst.size:
                dst.copy_to_device(arr, stream=self._stream)
        elif dst.size:  # an empty batch: nothing to copy (zero-size strides differ)
            dst.copy_to_device(np.ascontiguousarray(arr), stream=self._stream)

    def set_tensor(self, tensor_index: int | str, value) -> None:
        """Copy ``value`` (NumPy or device array) into a model input on the device."""
        index = self._input_tensor(tensor_index)
        arr = self._check_input_array(index, value)
        if self._input_shapes[index] != tuple(arr.shape):
            raise ShapeError(
                f"input '{self._graph.tensors[index].name}': got shape {tuple(arr.shape)}, the "
                f"model is allocated for {self._input_shapes[index]}; call resize_tensor_input() "
                "and allocate_tensors() first (run() does this for you)"
            )
        if not self._prepared:
            self.allocate_tensors()
        self._write_input(index, arr)

    def get_tensor(self, tensor_index: int | str) -> np.ndarray:
        """A host copy of a tensor's current value (outputs after :meth:`invoke`)."""
        arr = self._tensor_array(tensor_index)
        if isinstance(arr, np.ndarray):
            return np.array(arr, copy=True)
        return arr.copy_to_host(stream=self._stream)

    def get_device_tensor(self, tensor_index: int | str):
        """A device copy (a Numba device array) of a tensor's current value."""
        arr = self._tensor_array(tensor_index)
        if isinstance(arr, np.ndarray):
            return self._cuda.to_device(np.ascontiguousarray(arr), stream=self._stream)
        out = self._cuda.device_array(arr.shape, arr.dtype, stream=self._stream)
        if arr.size:
            out.copy_to_device(arr, stream=self._stream)
        self._stream.synchronize()
        return out

    def _tensor_array(self, tensor_index: int | str):
        index = self._tensor_index(tensor_index)
        arr = self._arrays[index]
        if arr is None:
            raise self._no_value(index)
        return arr

    def run(self, feeds: dict[str, Any], device_outputs: bool | None = None) -> dict[str, Any]:
        """Run the model; ``feeds`` maps every input name to a NumPy or device array.

        Args:
            feeds: input name -> array. Device arrays (``__cuda_array_interface__``) are read
                on the device.
            device_outputs: return device arrays (True) or NumPy arrays (False); None returns
                device arrays when any feed was one.
        """
        with self._lock, self._limits.running():  # runs take turns, as on the CPU
            return self._run_device(feeds, device_outputs)

    def _run_device(self, feeds: dict[str, Any], device_outputs: bool | None) -> dict[str, Any]:
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
        if device_outputs is None:
            device_outputs = any(is_device_array(v) for v in feeds.values())
        checked = {}
        for name, value in feeds.items():
            index = self._input_index[name]
            arr = self._check_input_array(index, value)
            new_shape = self._check_input_shape(index, arr.shape)
            if self._input_shapes[index] != new_shape:
                self._input_shapes[index] = new_shape
                self._prepared = False
            checked[index] = arr
        if not self._prepared:
            self.allocate_tensors()
        for index, arr in checked.items():
            self._write_input(index, arr)
        self.invoke()
        get = self.get_device_tensor if device_outputs else self.get_tensor
        return {self._graph.tensors[i].name: get(i) for i in self._graph.outputs}

    def benchmark_invoke(self, repeats: int) -> list[float]:
        """Seconds per :meth:`invoke` (each synchronized), on the inputs already set."""
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.invoke()
            times.append(time.perf_counter() - t0)
        return times


def _host_mirror(a) -> np.ndarray | None:
    """A host buffer for a device array a host step reads or writes (None for host arrays)."""
    if a is None or isinstance(a, np.ndarray):
        return None
    return np.empty(a.shape, a.dtype)
