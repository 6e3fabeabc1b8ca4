"""Test helpers: run one kernel directly, and the same op in onnxruntime as the reference."""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu import registry
from edgert.runtime.registry import OpContext, TensorInfo

# Tolerances for float32 results compared with a reference (STYLE: float within 1e-4).
RTOL = 1e-4
ATOL = 1e-5


def run_kernel(
    op_type: str,
    inputs: list[np.ndarray | None],
    attrs: dict | None = None,
    const_inputs: tuple[int, ...] | str = (),
    version: int = 21,
    domain: str = "",
    num_threads: int = 1,
    path=None,
    tuning=None,
) -> list[np.ndarray]:
    """Prepare and invoke one CPU kernel as the interpreter would.

    ``const_inputs`` lists the input indices whose values are known at prepare time (initializers
    or shape arithmetic), or ``"all"``. ``path`` forces a kernel family's algorithm (a
    ``ConvPath``) and ``tuning`` replaces its thresholds (a ``ConvTuning``).
    """
    cls = registry().lookup(op_type, domain, version)
    assert cls is not None, f"no CPU kernel for {op_type}"
    kernel = cls(OpContext(op_type, "test_node", dict(attrs or {}), domain, version, num_threads,
                           path, tuning))
    infos = []
    for i, x in enumerate(inputs):
        if x is None:
            infos.append(None)
            continue
        known = const_inputs == "all" or i in const_inputs
        infos.append(TensorInfo(tuple(x.shape), x.dtype, x if known else None))
    out_infos = kernel.prepare(infos)
    outs = []
    for info in out_infos:
        if info.value is not None:
            outs.append(np.array(info.value))
        elif info.shape is None:
            outs.append(None)
        else:
            # Garbage-filled, so a kernel that leaves elements unwritten fails the comparison.
            buf = np.empty(info.shape, info.dtype)
            if buf.dtype.kind == "f":
                buf.fill(np.nan)
            outs.append(buf)
    if all(info.value is not None for info in out_infos):
        return outs
    ret = kernel.invoke(inputs, outs)
    return list(ret) if ret is not None else outs


def ort_node(
    op_type: str,
    inputs: list[np.ndarray | None],
    attrs: dict | None = None,
    num_outputs: int = 1,
    opset: int = 21,
    domain: str = "",
) -> list[np.ndarray]:
    """Run a single-node ONNX model in onnxruntime (the independent reference)."""
    import onnxruntime as ort
    from onnx import helper

    names, graph_inputs, feeds = [], [], {}
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        elem = helper.np_dtype_to_tensor_dtype(x.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, x.shape))
        feeds[name] = x
    out_names = [f"out{i}" for i in range(num_outputs)]
    node = helper.make_node(op_type, names, out_names, domain=domain, **(attrs or {}))
    outputs = [helper.make_empty_tensor_value_info(n) for n in out_names]
    graph = helper.make_graph([node], "g", graph_inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 10
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
