"""``edgert warmup``: compile the CPU kernels ahead of first use.

Numba compiles a kernel the first time it is called with a new combination of argument types and
stores the machine code in the on-disk cache (:func:`edgert.runtime._jit.cache_dir`). Warming up
runs models once so that a later process (a service starting, a device booting) only loads
compiled code:

* with model files, each is converted (``.onnx``) or loaded (``.edgert``) and run once on random
  inputs: exactly the kernels, dtypes and layouts that model needs get compiled;
* without, a built-in set of small float32 CNN/MLP graphs is run at two sizes, so that both the
  serial and the parallel build of the common kernels (Conv paths, pooling, Gemm, Softmax,
  elementwise, Concat) are compiled.

This module may import onnx (to build the built-in graphs); the runtime itself never does.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import numpy as np


def _builtin_models() -> list[tuple[str, bytes]]:
    """Small float32 graphs covering the common CNN/MLP kernels, at a small and a large size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    out = []
    for tag, hw in (("small", 8), ("large", 64)):
        c = 8
        nodes = [
            helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c0"], ["r0"]),
            helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Conv", ["c1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=16),
            helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
            helper.make_node("Conv", ["r2", "wp", "bp"], ["c3"]),
            helper.make_node("Add", ["c3", "c1"], ["a3"]),
            helper.make_node("BatchNormalization", ["a3", "g", "be", "mu", "va"], ["bn"]),
            helper.make_node("MaxPool", ["bn"], ["m0"], kernel_shape=[3, 3], strides=[1, 1],
                             pads=[1, 1, 1, 1]),
            helper.make_node("AveragePool", ["bn"], ["m1"], kernel_shape=[3, 3], strides=[1, 1],
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
            w("w0", 16, c, 3, 3), w("b0", 16), w("w1", 16, 16, 3, 3), w("wd", 16, 1, 3, 3),
            w("bd", 16), w("wp", 16, 16, 1, 1), w("bp", 16), w("wf", 10, 32), w("bf", 10),
            numpy_helper.from_array(np.float32(0.0), "lo"),
            numpy_helper.from_array(np.float32(6.0), "hi"),
            numpy_helper.from_array(np.ones(16, np.float32), "g"),
            numpy_helper.from_array(np.zeros(16, np.float32), "be"),
            numpy_helper.from_array(np.zeros(16, np.float32), "mu"),
            numpy_helper.from_array(np.ones(16, np.float32), "va"),
        ]
        graph = helper.make_graph(
            nodes, f"warmup_{tag}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        out.append((f"built-in {tag} CNN", model.SerializeToString()))
    return out


def _run_once(data: Any, threads: int | None) -> None:
    from edgert.runtime import Interpreter

    interp = Interpreter(data, num_threads=threads)
    rng = np.random.default_rng(0)
    feeds = {}
    for d in interp.get_input_details():
        shape = tuple(int(s) for s in d["shape"])
        dt = np.dtype(d["dtype"])
        if dt.kind == "f":
            feeds[d["name"]] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[d["name"]] = np.zeros(shape, dt)
        else:
            feeds[d["name"]] = np.zeros(shape, dt)  # indices: 0 is always in range
    interp.run(feeds)


def warmup(models: list[str] | None = None, threads: int | None = None,
           verbose: bool = True) -> list[tuple[str, float]]:
    """Run each model (or the built-in set) once; return (what, seconds) per model.

    Args:
        models: ``.onnx`` or ``.edgert`` paths; None or empty runs the built-in set.
        threads: the interpreter's ``num_threads``.
        verbose: print one line per model.
    """
    from edgert.runtime._jit import cache_dir

    done = []
    items: list[tuple[str, Any]]
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

        items = [(name, convert(data)) for name, data in _builtin_models()]
    for name, data in items:
        t0 = time.perf_counter()
        _run_once(data, threads)
        dt = time.perf_counter() - t0
        done.append((name, dt))
        if verbose:
            print(f"warmed {name}: {dt:.2f} s")
    if verbose:
        print(f"Numba cache: {cache_dir()}")
    return done
