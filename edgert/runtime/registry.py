"""The kernel contract and the per-device kernel registries.

A kernel follows TFLite's contract, split in two:

* ``prepare(inputs)`` — every check and every computation that depends only on shapes, dtypes,
  attributes and constant inputs: validate (axes in range, no zero divisors...), infer output
  shapes and dtypes, pre-pack weights. Re-run whenever an input shape changes. Raises
  :class:`~edgert.errors.KernelError` / :class:`~edgert.errors.ShapeError` /
  :class:`~edgert.errors.DTypeError` with the op's name in the message.
* ``invoke(inputs, outputs)`` — compute only, writing into the ``outputs`` arrays that the memory
  planner placed in the arena. No validation, no allocation.

A kernel instance belongs to one operator of one interpreter, so ``prepare`` may store whatever
``invoke`` needs on ``self``.

Data-dependent output shapes (NonZero, a Reshape whose shape is computed at run time...): when
``prepare`` cannot know a shape it returns ``TensorInfo(None, dtype)``. The interpreter then calls
``invoke(inputs, [None, ...])`` and the kernel returns the list of output arrays it allocated.

Values known at prepare time: ``TensorInfo.value`` carries the data of constant inputs and of
small tensors the interpreter could compute before running (shape arithmetic such as
Shape→Gather→Concat). A kernel may rely on it (e.g. Reshape's target shape) and a kernel whose
output depends only on input *shapes* (Shape, Size) sets ``value`` on its outputs.

Kernels are registered explicitly per op type, domain and opset-version range; a registry rejects
duplicates. Kernels are resolved once per operator at prepare, never per invoke.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgert.errors import EdgeRTError, KernelError, ShapeError
from edgert.runtime.limits import UNLIMITED, RunLimits

MAX_OPSET = 10_000


@dataclass
class TensorInfo:
    """What ``prepare`` knows about a tensor."""

    shape: tuple[int, ...] | None  # None: only known after invoke
    dtype: np.dtype
    value: np.ndarray | None = None  # data, when known at prepare time

    @property
    def size(self) -> int:
        if self.shape is None:
            raise ValueError("size of a tensor with unknown shape")
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class OpContext:
    """The operator a kernel instance serves."""

    op_type: str
    name: str
    attrs: dict[str, Any]
    domain: str = ""
    version: int = 0
    # Threads this op's kernel splits its work over: the interpreter's resolved count.
    num_threads: int = 1
    # A kernel family with several algorithms (Conv: ConvPath) runs this one instead of the one
    # it would choose, and takes its thresholds from ``tuning`` (Conv: ConvTuning); None: its
    # own choice and defaults. Set by tests, benchmarks and Interpreter(kernel_options=...).
    path: Any = None
    tuning: Any = None
    # The interpreter's resource limits (edgert.runtime.limits.RunLimits); None: no limits
    # (a kernel built outside an interpreter).
    limits: Any = None


@dataclass(frozen=True)
class OpTraits:
    """What the converter, importer, optimizer and quantizer need to know about an op, declared
    on its kernel class (``traits = OpTraits(...)``) and read through
    :meth:`KernelRegistry.traits`. Adding an op is then one kernel class with its traits.

    Attributes:
        moves_bits: outputs are input elements (or shapes) moved unchanged, never computed on:
            safe on the narrow types held as raw bits (bfloat16, float8, int4...).
        takes_sequences: accepts sequence / optional values (every other kernel: tensors only).
        makes_sequence: its first output is a sequence or optional value whatever shape
            inference says.
        tags_narrow_types: the importer records the real narrow type of its operands
            (``edgert_from_type`` / ``edgert_to_type``), which the kernel decodes or encodes.
        type_attr: the attribute naming the narrow type it may compute on (Q/DQ).
        int8: the quantizer's rule for it: "linear" (Conv/Gemm/MatMul: int8 weights),
            "binary" (Add/Mul), "concat", "pool", "move" (data movement with the input's
            scale), "lut" (a 256-entry table), "softmax"; None: it stays float.
        fusion: its ``edgert.FusedElementwise`` opcode (:mod:`edgert.runtime.ops.fusion`)
            when the elementwise fusion may take it.
    """

    moves_bits: bool = False
    takes_sequences: bool = False
    makes_sequence: bool = False
    tags_narrow_types: bool = False
    type_attr: str | None = None
    int8: str | None = None
    fusion: int | None = None


@dataclass(frozen=True)
class KernelOptions:
    """What ``Interpreter(kernel_options={op_type: KernelOptions(...)})`` hands the kernels of
    one op type: a forced ``path`` and a ``tuning`` (see :class:`OpContext`)."""

    path: Any = None
    tuning: Any = None


class Kernel:
    """Base class of CPU (and CUDA) kernels. Subclasses override ``prepare`` and ``invoke``."""

    # Set True on kernels whose invoke is cheap and that the interpreter may run at prepare time
    # when all their inputs are known (shape arithmetic). Heavy kernels leave it False.
    foldable: ClassVar[bool] = False
    # What other parts of edgert need to know about the op (see OpTraits).
    traits: ClassVar[OpTraits] = OpTraits()

    def __init__(self, op: OpContext):
        self.op = op
        self.attrs = op.attrs

    # ----- contract -----------------------------------------------------------------------------
    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        raise NotImplementedError

    def invoke(
        self, inputs: list[np.ndarray | None], outputs: list[np.ndarray | None]
    ) -> list[np.ndarray] | None:
        raise NotImplementedError

    # ----- helpers for subclasses ---------------------------------------------------------------
    @classmethod
    def pack_attributes(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        """The attributes as the converter writes them into a ``.edgert`` file.

        The default keeps them as they are. A kernel whose attributes can be large (a tree
        ensemble's node table: hundreds of thousands of entries per list) returns a compact form
        it also accepts in ``prepare``, typically NumPy arrays: they are stored as tensor data,
        memory-mapped at load instead of decoded element by element.
        """
        return attrs

    @property
    def limits(self) -> RunLimits:
        """The interpreter's resource limits (:mod:`edgert.runtime.limits`)."""
        return self.op.limits or UNLIMITED

    def check_alloc(self, shape: tuple[int, ...], dtype, what: str = "output") -> None:
        """Refuse a buffer of ``shape`` x ``dtype`` larger than the interpreter's
        ``max_alloc_bytes`` (:class:`~edgert.errors.ResourceLimitError`). Kernels that allocate
        in proportion to a size the model decides call it before allocating."""
        n = 1
        for d in shape:
            n *= int(d)
        self.limits.check_alloc(self.where(), n * np.dtype(dtype).itemsize,
                                f"{what} of shape {tuple(int(d) for d in shape)}")

    def where(self) -> str:
        return f"{self.op.op_type} '{self.op.name}'" if self.op.name else self.op.op_type

    def error(self, message: str, cls: type[EdgeRTError] = KernelError) -> EdgeRTError:
        """An error naming this op; ``raise self.error("axis 5 out of range for rank 4")``."""
        return cls(f"{self.where()}: {message}")

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def require_inputs(self, inputs: list[TensorInfo | None], min_count: int, max_count: int):
        present = len(inputs)
        if present < min_count or present > max_count:
            raise self.error(f"expects {min_count}..{max_count} inputs, got {present}")
        for i in range(min_count):
            if inputs[i] is None:
                raise self.error(f"required input {i} is missing")

    def normalize_axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < max(rank, 1):
            raise self.error(f"axis {axis} is out of range for rank {rank}")
        return axis + rank if axis < 0 else axis

    def const_input(self, inputs: list[TensorInfo | None], i: int, what: str) -> np.ndarray | None:
        """Value of optional input ``i`` that must be known at prepare (None if omitted)."""
        info = inputs[i] if i < len(inputs) else None
        if info is None:
            return None
        if info.value is None:
            raise self.error(f"{what} (input {i}) must be a constant or computable from shapes")
        return info.value


def broadcast_shapes(where: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy/ONNX multidirectional broadcasting, with an edgert error naming ``where``."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            f"{where}: shapes {', '.join(str(tuple(s)) for s in shapes)} cannot be broadcast"
        ) from None


class KernelRegistry:
    """Maps ``(domain, op_type)`` and an opset-version range to a kernel class.

    Kernels are added with :meth:`add`, or a whole family is declared with :meth:`add_family`:
    the family's ``register`` function (and so its module import) then runs on the first lookup
    of one of its ops, so that loading a model imports only the kernel families it uses.
    """

    def __init__(self, device: str):
        self.device = device
        self._table: dict[tuple[str, str], list[tuple[int, int, type[Kernel]]]] = {}
        # Lazily registered families: name -> register function, and op -> family names.
        self._families: set[str] = set()
        self._unloaded: dict[str, Callable[[KernelRegistry], None]] = {}
        self._declared: dict[tuple[str, str], list[str]] = {}
        self._loading: set[str] = set()
        self._load_lock = threading.RLock()

    def add_family(
        self, name: str, ops: Iterable[str], register: Callable[[KernelRegistry], None]
    ) -> None:
        """Declare a kernel family registered on first use.

        Args:
            name: the family's name (unique in this registry).
            ops: the ops that ``register`` adds, written ``"OpType"`` for the default ONNX
                domain and ``"domain.OpType"`` otherwise (as :meth:`op_types` lists them).
            register: adds the family's kernels to the registry it is given (usually the
                family module's ``register``, behind a function that imports the module).

        A lookup of a declared op runs the register functions of the families that declared
        it. A lookup that finds nothing runs every remaining one before answering, so an op
        left out of ``ops`` is still found (later); only start-up time depends on ``ops``.
        """
        if name in self._families:
            raise ValueError(f"{self.device} registry: kernel family {name!r} declared twice")
        self._families.add(name)
        self._unloaded[name] = register
        for op in ops:
            domain, _, op_type = op.rpartition(".")
            self._declared.setdefault((domain, op_type), []).append(name)

    def _load_families(self, names: Iterable[str]) -> None:
        # Interpreters may be built on several threads: a family leaves ``_unloaded`` only once
        # its kernels are all in the table, so a lookup that sees no unloaded family never sees a
        # half-registered one.
        with self._load_lock:
            for name in list(names):
                register = self._unloaded.get(name)
                if register is None or name in self._loading:
                    continue
                self._loading.add(name)
                try:
                    register(self)
                finally:
                    self._loading.discard(name)
                    del self._unloaded[name]  # also after a failure: it raises only once

    def load_all(self) -> None:
        """Register every declared family now (lists of ops, tests, ahead-of-time warm-up)."""
        self._load_families(list(self._unloaded))

    def add(
        self,
        op_type: str,
        kernel: type[Kernel],
        domain: str = "",
        since: int = 1,
        until: int = MAX_OPSET,
    ) -> None:
        """Register ``kernel`` for opset versions ``since..until`` (inclusive) of an op."""
        entries = self._table.setdefault((domain, op_type), [])
        for lo, hi, other in entries:
            if lo <= until and since <= hi:
                raise ValueError(
                    f"{self.device} registry: {domain or 'ai.onnx'}.{op_type} versions "
                    f"{since}..{until} overlap {other.__name__} ({lo}..{hi})"
                )
        entries.append((since, until, kernel))

    def lookup(
        self, op_type: str, domain: str = "", version: int = MAX_OPSET
    ) -> type[Kernel] | None:
        if self._unloaded:
            families = self._declared.get((domain, op_type))
            if families:
                self._load_families(families)
        kernel = self._find(op_type, domain, version)
        if kernel is None and self._unloaded:  # an op no declaration names: look everywhere
            self.load_all()
            kernel = self._find(op_type, domain, version)
        return kernel

    def _find(self, op_type: str, domain: str, version: int) -> type[Kernel] | None:
        for lo, hi, kernel in self._table.get((domain, op_type), ()):
            if lo <= (version or MAX_OPSET) <= hi:
                return kernel
        return None

    def traits(self, op_type: str, domain: str = "", version: int = MAX_OPSET) -> OpTraits:
        """The traits of the kernel for an op (:class:`OpTraits`; defaults where none)."""
        kernel = self.lookup(op_type, domain, version)
        return kernel.traits if kernel is not None else OpTraits()

    def supports(self, op_type: str, domain: str = "", version: int = MAX_OPSET) -> bool:
        return self.lookup(op_type, domain, version) is not None

    def op_types(self) -> list[str]:
        self.load_all()
        return sorted(f"{d}.{o}" if d else o for d, o in self._table)
