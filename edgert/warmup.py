"""``edgert warmup``, first-run compile progress, and Ctrl-C during compilation.

Numba compiles a kernel the first time it is called with a new combination of argument types and
stores the machine code in the on-disk cache (:func:`edgert.runtime._jit.cache_dir`). On a new
machine the first run of a model therefore spends seconds compiling. This module

* warms the cache ahead of time (``edgert warmup``): each given model (``.onnx`` converted,
  ``.edgert`` loaded) is run once on random inputs, so exactly the kernels, dtypes, layouts and
  serial/parallel builds that model needs get compiled; ``--all`` (no models) runs a built-in
  set of small float32 *and* int8 CNN/MLP graphs at two sizes (Conv paths, depthwise, pooling,
  Gemm/MatMul, Softmax, LayerNormalization, elementwise, Concat, QuantizeLinear...);
* shows compile progress (:func:`compile_progress`): a line on stderr that appears only once a
  kernel actually compiles (nothing when every kernel comes from the cache), counting the model's
  steps (``op 12/40``) and the kernels compiled; when stderr is not a terminal it prints one line
  in all;
* lets Ctrl-C stop a compile (:func:`install_interrupt_handler`). Numba's compiler calls back into
  Python from LLVM through ctypes, and a ``KeyboardInterrupt`` raised inside such a callback is
  printed as "Exception ignored on calling ctypes callback" and dropped while compilation goes
  on. The handler remembers the interrupt, and it is raised again at the next point that is not
  inside a callback: the start or end of a kernel's compilation, or the next step of the model;
  if none comes within :data:`FORCE_EXIT_S` the process exits (status 130). Numba writes each
  cache entry to a temporary file and renames it, so an interrupted compile leaves no broken
  cache entry.

Progress and the interrupt handler are used by the ``edgert`` command; an application embedding
the runtime sees neither. This module may import onnx (to build the built-in graphs); the runtime
itself never does.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# Seconds between a Ctrl-C and a forced exit when the compiler gives the interrupt no point at
# which to be raised (one long LLVM optimization).
FORCE_EXIT_S = 2.0
# The progress line appears only when compiling has gone on this long (a model needing one or
# two small kernels prints nothing on a terminal).
SHOW_AFTER_S = 0.3

_interrupt = {"pending": False, "timer": None}


# ----- Ctrl-C ---------------------------------------------------------------------------------
def _force_exit() -> None:
    try:
        os.write(2, b"\nedgert: interrupted\n")
    finally:
        os._exit(130)


def _in_llvm_callback(frame) -> bool:
    """Whether Python runs inside llvmlite (where LLVM calls back through ctypes, and an
    exception would be printed and dropped)."""
    marker = f"{os.sep}llvmlite{os.sep}"
    depth = 0
    while frame is not None and depth < 64:
        if marker in frame.f_code.co_filename:
            return True
        frame = frame.f_back
        depth += 1
    return False


def _on_sigint(signum, frame) -> None:
    _interrupt["pending"] = True
    if _interrupt["timer"] is None:
        timer = threading.Timer(FORCE_EXIT_S, _force_exit)
        timer.daemon = True
        timer.start()
        _interrupt["timer"] = timer
    if _in_llvm_callback(frame):
        return  # raised at the next kernel boundary (check_interrupt), or the timer exits
    raise KeyboardInterrupt


def install_interrupt_handler() -> Callable[[], None]:
    """Handle SIGINT as described in the module docstring; returns a function that cancels the
    forced exit (call it once the ``KeyboardInterrupt`` has been caught) and restores the
    previous handler. Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        return lambda: None

    def restore() -> None:
        timer = _interrupt["timer"]
        if timer is not None:
            timer.cancel()
        _interrupt["timer"] = None
        _interrupt["pending"] = False
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(signal.SIGINT, previous)

    return restore


def check_interrupt() -> None:
    """Raise the ``KeyboardInterrupt`` that a callback swallowed, if there was one."""
    if _interrupt["pending"]:
        raise KeyboardInterrupt


# ----- progress ---------------------------------------------------------------------------------
class CompileProgress:
    """Counts Numba compilations (cache misses) and shows them on stderr (see
    :func:`compile_progress`). ``step(k, n)`` reports that step ``k`` of ``n`` of a model runs."""

    LABEL = "compiling kernels for this CPU, once"

    def __init__(self, show: bool, tty: bool, what: str = ""):
        self.show = show
        self.tty = tty
        self.what = what
        self.compiled = 0
        self.compiling = 0  # nesting depth (a kernel compiles the kernels it calls)
        self.seconds = 0.0
        self.current = ""
        self.k = 0
        self.n: int | None = None
        self._t0: float | None = None
        self._bar: float | None = None
        self._announced = False

    # numba event listener interface (see numba.core.event.Listener)
    def notify(self, event) -> None:
        disp = (event.data or {}).get("dispatcher")
        py_func = getattr(disp, "py_func", None)
        # edgert's own kernels are counted; Numba's overloads they use (np.max's...) are not
        ours = str(getattr(py_func, "__module__", "")).startswith("edgert")
        if event.is_start:
            if self.compiling == 0:
                self._t0 = time.perf_counter()
            self.compiling += 1
            if ours:
                self.current = py_func.__qualname__
        else:
            self.compiling = max(self.compiling - 1, 0)
            self.compiled += ours
            if self.compiling == 0 and self._t0 is not None:
                self.seconds += time.perf_counter() - self._t0
                self._t0 = None
        check_interrupt()
        self._refresh()

    def step(self, k: int, n: int) -> None:
        check_interrupt()
        self.k, self.n = k, n
        if self._bar is not None:
            self._refresh()

    def _elapsed(self) -> float:
        running = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.seconds + running

    def _refresh(self) -> None:
        if not self.show or not (self.compiled or self.compiling):
            return
        if not self.tty:
            if not self._announced:
                self._announced = True
                from edgert.runtime._jit import cache_dir

                print(f"edgert: {self.LABEL} (cached in {cache_dir()})...", file=sys.stderr,
                      flush=True)
            return
        now = time.perf_counter()
        if self._bar is None:  # (the time the line was last drawn)
            if self._elapsed() < SHOW_AFTER_S and self.compiled < 2:
                return
        elif now - self._bar < 0.05:
            return
        self._bar = now
        where = ", ".join(w for w in (self.what, f"op {self.k + 1}/{self.n}" if self.n else "")
                          if w)
        text = (f"{self.LABEL}{': ' + where if where else ''}: {_kernels(self.compiled)}, "
                f"{self._elapsed():.0f} s ({self.current})")
        import shutil

        cols = shutil.get_terminal_size((100, 24)).columns
        _write_stderr("\r" + text[: max(cols - 1, 20)] + "\x1b[K")

    def close(self) -> None:
        if self._bar is not None:
            _write_stderr("\r\x1b[K")
            self._bar = None
            from edgert.runtime._jit import cache_dir

            print(f"edgert: compiled {_kernels(self.compiled)} in {self.seconds:.1f} s, cached "
                  f"in {cache_dir()}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def compile_progress(show: bool | None = None, what: str = "") -> Iterator[CompileProgress]:
    """Count (and, with ``show``, display) the kernels Numba compiles inside the block.

    ``show=None`` shows it when stderr is a terminal. On a terminal the line is redrawn in place
    and replaced at the end by one summary line; otherwise one line is printed, at the first
    compile. Nothing is printed when nothing compiles. Ctrl-C (with
    :func:`install_interrupt_handler`) is raised at the next kernel boundary."""
    tty = _stderr_is_tty()
    prog = CompileProgress(tty if show is None else show, tty, what)
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - another Numba
        yield prog
        return

    class _Listener(event.Listener):
        def on_start(self, ev) -> None:
            prog.notify(ev)

        def on_end(self, ev) -> None:
            prog.notify(ev)

    listener = _Listener()
    event.register("numba:compile", listener)
    try:
        yield prog
    finally:
        event.unregister("numba:compile", listener)
        prog.close()


def _kernels(n: int) -> str:
    return f"{n} kernel" if n == 1 else f"{n} kernels"


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def step_hook(interp: Any, progress: CompileProgress) -> Iterator[None]:
    """Report each step of ``interp``'s runs inside the block to ``progress`` (so that the
    progress line says which op compiles, and Ctrl-C is raised between ops).

    Wraps the interpreter's bound steps for the duration of the block, plans made in it
    included; an interpreter without them (another executor) runs unhooked.
    """
    cls_prepare = getattr(type(interp), "_prepare", None)
    if cls_prepare is None or "_prepare" in vars(interp) or getattr(interp, "device",
                                                                     "cpu") != "cpu":
        yield
        return
    hooked: list[list] = []

    def wrap() -> None:
        bound = getattr(interp, "_bound", None)
        if not isinstance(bound, list) or any(bound is h for h in hooked):
            return
        n = len(bound)
        new = []
        for k, (fn, ins, outs) in enumerate(bound):
            if fn is not None:
                def fn(ins, outs, _fn=fn, _k=k):  # noqa: PLR0913
                    progress.step(_k, n)
                    return _fn(ins, outs)
            new.append((fn, ins, outs))
        hooked.append(new)
        originals.append(bound)
        interp._bound = new

    def prepare() -> None:
        cls_prepare(interp)
        wrap()

    originals: list[list] = []
    if getattr(interp, "_prepared", False):
        wrap()
    interp._prepare = prepare
    try:
        yield
    finally:
        del interp._prepare
        for h, orig in zip(hooked, originals):
            if interp._bound is h:
                interp._bound = orig


# ----- warmup -----------------------------------------------------------------------------------
def _builtin_models(all_kinds: bool = False) -> list[tuple[str, bytes]]:
    """Small float32 graphs covering the common CNN kernels, at a small and a large size; with
    ``all_kinds``, also a one-channel CNN, an MLP and an attention block, at two sizes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    def c(name: str, value) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    def model(graph) -> bytes:
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()

    out = []
    sizes = [("small", 8, 8), ("large", 64, 8)]
    if all_kinds:  # one input channel (grayscale): other Conv paths for the first layer
        sizes.append(("one-channel", 8, 1))
    for tag, hw, ch in sizes:
        nodes = [
            helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c0"], ["r0"]),
            helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Conv", ["c1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=16),
            helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
            helper.make_node("Conv", ["r2", "wp", "bp"], ["c3"]),
            helper.make_node("Add", ["c3", "c1"], ["a3"]),
            helper.make_node("BatchNormalization", ["a3", "g", "be", "mu", "va"], ["bn"]),
            helper.make_node("HardSwish", ["bn"], ["hs"]),
            helper.make_node("Conv", ["hs", "wd2", "bd2"], ["c4"], pads=[1, 1, 1, 1],
                             strides=[2, 2], group=16),
            helper.make_node("HardSwish", ["c4"], ["r4"]),  # (fused into the Conv)
            helper.make_node("MaxPool", ["r4"], ["m0"], kernel_shape=[3, 3], strides=[1, 1],
                             pads=[1, 1, 1, 1]),
            helper.make_node("AveragePool", ["r4"], ["m1"], kernel_shape=[3, 3], strides=[1, 1],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Concat", ["m0", "m1"], ["cat"], axis=1),
            helper.make_node("Sigmoid", ["cat"], ["sg"]),
            helper.make_node("Mul", ["cat", "sg"], ["sw"]),
            helper.make_node("GlobalAveragePool", ["sw"], ["gp"]),
            helper.make_node("Flatten", ["gp"], ["fl"]),
            helper.make_node("Gemm", ["fl", "wf", "bf"], ["fc"], transB=1),
            helper.make_node("Softmax", ["fc"], ["y"], axis=-1),
        ]
        inits = [
            w("w0", 16, ch, 3, 3), w("b0", 16), w("w1", 16, 16, 3, 3), w("wd", 16, 1, 3, 3),
            w("bd", 16), w("wp", 16, 16, 1, 1), w("bp", 16), w("wd2", 16, 1, 3, 3), w("bd2", 16),
            w("wf", 10, 32), w("bf", 10), c("lo", 0.0), c("hi", 6.0),
            c("g", np.ones(16)), c("be", np.zeros(16)), c("mu", np.zeros(16)),
            c("va", np.ones(16)),
        ]
        graph = helper.make_graph(
            nodes, f"warmup_{tag}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ch, hw, hw])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
            inits,
        )
        out.append((f"built-in {tag} CNN", model(graph)))
    if all_kinds:
        for tag, rows in (("small", 4), ("large", 256)):
            d = 64
            nodes = [
                helper.make_node("MatMul", ["x", "w0"], ["h0"]),
                helper.make_node("Add", ["h0", "b0"], ["a0"]),
                helper.make_node("LayerNormalization", ["a0", "g", "be"], ["ln"], axis=-1),
                helper.make_node("Tanh", ["ln"], ["ge"]),
                helper.make_node("MatMul", ["ge", "w1"], ["h1"]),
                helper.make_node("Relu", ["h1"], ["r1"]),
                helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"]),
                helper.make_node("ReduceMean", ["h2"], ["y"], axes=[-1], keepdims=1),
            ]
            inits = [w("w0", d, d), w("b0", d), c("g", np.ones(d)), c("be", np.zeros(d)),
                     w("w1", d, d), w("w2", d, 10), w("b2", 10)]
            graph = helper.make_graph(
                nodes, f"warmup_mlp_{tag}",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, d])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 1])],
                inits,
            )
            out.append((f"built-in {tag} MLP", model(graph)))
        for tag, seq in (("small", 4), ("large", 128)):
            out.append((f"built-in {tag} attention block", _attention_block(seq, w, c, model)))
    return out


def _attention_block(seq: int, w, c, model) -> bytes:
    """One self-attention block (batched MatMul, Softmax over the last axis, Transpose, Erf-GELU,
    LayerNormalization, residual Add) and a few data-movement ops (Slice, Gather, Concat, Pad,
    Resize, ReduceMax) at sequence length ``seq``."""
    from onnx import TensorProto, helper, numpy_helper

    d, heads = 32, 4
    hd = d // heads

    def i64(name: str, *values: int):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q"]), n("MatMul", ["x", "wk"], ["k"]),
        n("MatMul", ["x", "wv"], ["v"]),
        n("Reshape", ["q", "heads"], ["q4"]), n("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        n("Reshape", ["k", "heads"], ["k4"]), n("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        n("Reshape", ["v", "heads"], ["v4"]), n("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qh", "kt"], ["s"]), n("Mul", ["s", "scale"], ["ss"]),
        n("Softmax", ["ss"], ["p"], axis=-1), n("MatMul", ["p", "vh"], ["o"]),
        n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), n("Reshape", ["ot", "flat"], ["o3"]),
        n("Add", ["o3", "x"], ["res"]),
        n("LayerNormalization", ["res", "g", "be"], ["ln"], axis=-1),
        n("Div", ["ln", "sqrt2"], ["e0"]), n("Erf", ["e0"], ["e1"]),
        n("Add", ["e1", "one"], ["e2"]),
        n("Mul", ["ln", "e2"], ["e3"]), n("Mul", ["e3", "half"], ["gelu"]),
        n("Slice", ["gelu", "s0", "s1", "s2"], ["sl"]),
        n("Gather", ["gelu", "idx"], ["ga"], axis=1),
        n("Concat", ["sl", "ga"], ["cat"], axis=1),
        n("Unsqueeze", ["cat", "ax0"], ["c4"]),
        n("Pad", ["c4", "pads"], ["pd"], mode="reflect"),
        n("Resize", ["pd", "", "rscale"], ["rs"], mode="linear"),
        n("ReduceMax", ["rs"], ["y"], axes=[-1], keepdims=0),
    ]
    inits = [
        w("wq", d, d), w("wk", d, d), w("wv", d, d), c("scale", 1 / np.sqrt(hd)),
        i64("heads", 1, seq, heads, hd), i64("flat", 1, seq, d),
        c("g", np.ones(d)), c("be", np.zeros(d)), c("sqrt2", np.sqrt(2)), c("one", 1.0),
        c("half", 0.5), i64("s0", 0), i64("s1", seq // 2), i64("s2", 1), i64("idx", 0, seq - 1),
        i64("ax0", 0), i64("pads", 0, 0, 1, 1, 0, 0, 1, 1),
        c("rscale", [1.0, 1.0, 2.0, 2.0]),
    ]
    graph = helper.make_graph(
        nodes, f"warmup_attention_{seq}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return model(graph)


def _random_feeds(interp: Any, seed: int = 0,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Random feeds for every input: ``shapes[name]`` where given, else the model's shape with
    dynamic dims 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for d in interp.get_input_details():
        shape = tuple(max(int(s), 1) for s in d["shape"])
        if shapes and d["name"] in shapes:
            shape = tuple(shapes[d["name"]])
        dt = np.dtype(d["dtype"])
        if dt.kind == "f":
            feeds[d["name"]] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu" and np.dtype(dt).itemsize == 1:  # int8/uint8 data (quantized io)
            feeds[d["name"]] = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, shape, dtype=dt)
        else:
            feeds[d["name"]] = np.zeros(shape, dt)  # indices: 0 is always in range
    return feeds


def _check_shape_names(shapes: dict[str, tuple[int, ...]], models: list[Any]) -> None:
    """An InputError for a name in ``shapes`` that is an input of none of ``models``."""
    from edgert.errors import InputError
    from edgert.format import read_model

    names: set[str] = set()
    for data in models:
        main = read_model(data).main
        names.update(main.tensors[i].name for i in main.inputs)
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise InputError(f"no model has an input named {', '.join(map(repr, unknown))}; their "
                         f"inputs: {', '.join(sorted(names))}")


def _run_once(data: Any, threads: int | None, progress: CompileProgress | None = None,
              shapes: dict[str, tuple[int, ...]] | None = None) -> set[str]:
    """Run a model once on random inputs; returns its input names."""
    from edgert.runtime import Interpreter

    interp = Interpreter(data, num_threads=threads)
    feeds = _random_feeds(interp, shapes=shapes)
    if progress is None:
        interp.run(feeds)
    else:
        with step_hook(interp, progress):
            interp.run(feeds)
    return set(feeds)


def _int8_models(models: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The int8 versions of the built-in float models (random calibration data)."""
    import onnx

    from edgert.quantization import quantize

    out = []
    rng = np.random.default_rng(1)
    for name, data in models:
        m = onnx.load_from_string(data)
        feeds = []
        for _ in range(2):
            feed = {}
            for vi in m.graph.input:
                shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
                feed[vi.name] = rng.standard_normal(shape).astype(np.float32)
            feeds.append(feed)
        q, _ = quantize(data, calibration=feeds)
        out.append((name.replace("built-in ", "built-in int8 "), q))
    return out


def warmup(models: list[str] | None = None, threads: int | None = None,
           verbose: bool = True, all_kinds: bool = False,
           progress: bool | None = None,
           shapes: dict[str, tuple[int, ...]] | None = None) -> list[tuple[str, float]]:
    """Run each model (or the built-in set) once; return (what, seconds) per model.

    Args:
        models: ``.onnx`` or ``.edgert`` paths; None or empty runs the built-in set.
        threads: the interpreter's ``num_threads``.
        verbose: print one line per model (on stdout).
        all_kinds: with no models: the float32 *and* int8 built-in sets, MLP graphs included.
        progress: show compile progress on stderr (None: when stderr is a terminal).
        shapes: input name -> the shape to run it at (the shapes the application will run:
            the serial and parallel builds of a kernel are chosen by size); inputs not named
            run at the model's shape, dynamic dims 1.

    Raises:
        InputError: a name in ``shapes`` is an input of none of the models.
    """
    from edgert.runtime._jit import cache_dir

    done = []
    items: list[tuple[str, Any]]
    builtin: list[tuple[str, bytes]] = []
    if models:
        items = []
        for m in models:
            p = pathlib.Path(m)
            if p.suffix == ".onnx":
                from edgert.converter import convert

                items.append((m, convert(str(p))))
            else:
                items.append((m, str(p)))
    else:
        from edgert.converter import convert

        builtin = _builtin_models(all_kinds)
        items = [(name, convert(data)) for name, data in builtin]

    def run(name: str, data: Any) -> None:
        t0 = time.perf_counter()
        with compile_progress(progress, what=name) as prog:
            _run_once(data, threads, prog, shapes)
        dt = time.perf_counter() - t0
        done.append((name, dt))
        if verbose:
            print(f"warmed {name}: {dt:.2f} s ({_kernels(prog.compiled)} compiled)", flush=True)

    if shapes:
        _check_shape_names(shapes, [data for _, data in items])
    for name, data in items:
        run(name, data)
    if all_kinds and not models:  # (calibration runs the float models: compiled by now)
        for name, data in _int8_models(builtin):
            run(name, data)
    if verbose:
        print(f"Numba cache: {cache_dir()}")
    return done
