"""Semantic checks of a :class:`~edgert.format.model.ModelDef`: layer 2 of reading a `.edgert` file.

Layer 1 (:mod:`edgert.format._flatview` and the decoding in :mod:`edgert.format.reader`) proves
that the bytes are a well-formed FlatBuffer and that every constant's bytes lie in the file. This
layer checks that what they describe is a model a runtime can execute without indexing out of
range or looping forever. The writer runs the same checks before writing, so ``write_model`` never
produces a file ``read_model`` would reject.

Checks, in the order they run (the first failure raises
:class:`~edgert.errors.ModelFormatError` naming the subgraph, operator and tensor by index and
name):

* the model has a main subgraph; every subgraph reachable through graph attributes is checked
  too, and those references form no cycle (a body that contains itself would recurse forever);
* tensors: known dtype code; rank <= 64 (NumPy's limit); every dim an int >= -1; the element
  count of the static dims times the item size fits in int64 (so no size computation overflows
  later); a non-empty ``shape_signature`` has one entry per dim; a constant is not unknown-rank,
  its dims are all >= 0 (-1 only marks a dynamic dim of a computed tensor), and its data has the
  declared shape and the NumPy dtype that holds the declared type;
* quantization: at least one scale, as many zero points as scales, scales finite and > 0, zero
  points inside the range of an integer tensor type; per axis (more than one scale):
  ``0 <= axis < rank`` and, where that dim is static, one scale per slice (for an unknown-rank
  tensor only ``axis >= 0`` can be checked);
* subgraph inputs and outputs are tensor indices in range (-1 is not allowed there), and every
  output is defined (an input, a constant, an outer input or produced by an operator);
* operators: a non-empty op type; input and output indices in ``[-1, n)`` (-1 = omitted optional
  input or output); each input is a subgraph input, a constant, an outer-scope tensor (its name is
  in ``outer_inputs``) or the output of an *earlier* operator (so the order is topological and
  there are no cycles); each tensor is produced at most once and never overwrites a subgraph
  input or a constant.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import ModelFormatError
from edgert.format.model import (
    KIND_MAP,
    KIND_NAMES,
    KIND_SEQUENCE_MAP,
    KIND_TENSOR,
    ModelDef,
    OperatorDef,
    QuantParams,
    SubGraphDef,
    TensorDef,
)

# NumPy cannot hold more dimensions (NPY_MAXDIMS in NumPy 2).
MAX_RANK = 64
_INT64_MAX = 2**63 - 1
# Key types of map values (ONNX allows any integer or string; the ai.onnx.ml operators use these).
_MAP_KEYS = (dtypes.INT64, dtypes.STRING)
# Integer tensor types whose zero points must fit the type (bfloat16/float8 also live in unsigned
# holders but are not integers).
_INTEGER_TYPES = (
    dtypes.UINT8, dtypes.INT8, dtypes.UINT16, dtypes.INT16, dtypes.INT32, dtypes.UINT32,
)


def all_subgraphs(model: ModelDef) -> list[SubGraphDef]:
    """``model.subgraphs`` followed by every other subgraph reachable through graph attributes.

    Breadth-first in operator and attribute order, each subgraph object once (by identity). The
    writer numbers subgraphs in this order, so a body's index in the file is its index here.
    """
    order = list(model.subgraphs)
    seen = {id(sg) for sg in order}
    k = 0
    while k < len(order):
        for op in order[k].operators:
            for value in op.attrs.values():
                for body in _graph_values(value):
                    if id(body) not in seen:
                        seen.add(id(body))
                        order.append(body)
        k += 1
    return order


def _graph_values(value) -> list[SubGraphDef]:
    if isinstance(value, SubGraphDef):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, SubGraphDef)]
    return []


def check_model(model: ModelDef, prefix: str = "invalid .edgert model") -> None:
    """Raise :class:`ModelFormatError` (message starting with ``prefix``) unless ``model`` is sound.

    See the module docstring for the list of checks.
    """
    if not model.subgraphs:
        raise ModelFormatError(
            f"{prefix}: the model has no subgraph (subgraph 0 is the main graph)"
        )
    graphs = all_subgraphs(model)
    _check_no_cycles(graphs, prefix)
    for si, sg in enumerate(graphs):
        _check_subgraph(sg, f"{prefix}: subgraph {si} ({sg.name!r})")


def _check_no_cycles(graphs: list[SubGraphDef], prefix: str) -> None:
    index = {id(sg): i for i, sg in reversed(list(enumerate(graphs)))}
    children = [
        sorted({index[id(b)] for op in sg.operators for v in op.attrs.values()
                for b in _graph_values(v)})
        for sg in graphs
    ]
    # Iterative depth-first search with colours: 0 = new, 1 = on the current path, 2 = done.
    colour = [0] * len(graphs)
    for start in range(len(graphs)):
        if colour[start]:
            continue
        path = [start]
        stack = [iter(children[start])]
        colour[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour[nxt] == 1:
                cycle = " -> ".join(str(i) for i in path[path.index(nxt):] + [nxt])
                raise ModelFormatError(
                    f"{prefix}: subgraph {nxt} ({graphs[nxt].name!r}) contains itself through "
                    f"graph attributes (cycle {cycle})"
                )
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(children[nxt]))


def _tensor_label(where: str, ti: int, t: TensorDef) -> str:
    return f"{where}, tensor {ti} ({t.name!r})"


def _op_label(where: str, oi: int, op: OperatorDef) -> str:
    kind = f"{op.domain}.{op.op_type}" if op.domain else op.op_type
    return f"{where}, operator {oi} ({op.name!r}, {kind})"


def _check_subgraph(sg: SubGraphDef, where: str) -> None:
    n = len(sg.tensors)
    for ti, t in enumerate(sg.tensors):
        _check_tensor(t, _tensor_label(where, ti, t))

    def tensor_name(i: int) -> str:
        return repr(sg.tensors[i].name)

    def check_index(i, what: str, allow_omitted: bool) -> None:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise ModelFormatError(f"{what}: tensor index {i!r} is not an int")
        low = -1 if allow_omitted else 0
        if not low <= i < n:
            allowed = "-1 (omitted) or " if allow_omitted else ""
            raise ModelFormatError(
                f"{what}: tensor index {i} out of range (expected {allowed}0..{n - 1}, the "
                f"subgraph has {n} tensors)"
            )

    for i in sg.inputs:
        check_index(i, f"{where}, input", allow_omitted=False)
    for i in sg.outputs:
        check_index(i, f"{where}, output", allow_omitted=False)

    outer = set(sg.outer_inputs)
    graph_inputs = set(int(i) for i in sg.inputs)
    constants = {ti for ti, t in enumerate(sg.tensors) if t.data is not None}
    defined = graph_inputs | constants | {ti for ti, t in enumerate(sg.tensors) if t.name in outer}
    producer: dict[int, int] = {}
    for oi, op in enumerate(sg.operators):
        label = _op_label(where, oi, op)
        if not isinstance(op.op_type, str) or not op.op_type:
            raise ModelFormatError(f"{label}: empty op type")
        for k, i in enumerate(op.inputs):
            check_index(i, f"{label}, input {k}", allow_omitted=True)
            if i >= 0 and i not in defined:
                later = [oj for oj in range(oi, len(sg.operators)) if i in sg.operators[oj].outputs]
                why = (f"it is produced later, by operator {later[0]} (operators are not in "
                       "topological order, or the graph has a cycle)") if later else (
                       "it is not a subgraph input, a constant, an outer input, or the output "
                       "of an earlier operator")
                raise ModelFormatError(
                    f"{label}, input {k}: tensor {i} ({tensor_name(i)}) is used before it is "
                    f"defined: {why}"
                )
        for k, i in enumerate(op.outputs):
            check_index(i, f"{label}, output {k}", allow_omitted=True)
            if i < 0:
                continue
            if i in producer:
                raise ModelFormatError(
                    f"{label}, output {k}: tensor {i} ({tensor_name(i)}) is already produced by "
                    f"operator {producer[i]}; a tensor may be produced only once"
                )
            if i in graph_inputs or i in constants:
                kind = "a subgraph input" if i in graph_inputs else "a constant"
                raise ModelFormatError(
                    f"{label}, output {k}: tensor {i} ({tensor_name(i)}) is {kind} and cannot "
                    "be produced by an operator"
                )
            producer[i] = oi
            defined.add(i)
    for k, i in enumerate(sg.outputs):
        if i not in defined:
            raise ModelFormatError(
                f"{where}, output {k}: tensor {i} ({tensor_name(i)}) is never produced"
            )


def _check_tensor(t: TensorDef, label: str) -> None:
    kind = t.kind
    if not isinstance(kind, (int, np.integer)) or isinstance(kind, bool) or \
            not 0 <= kind < len(KIND_NAMES):
        raise ModelFormatError(f"{label}: unknown value kind {kind!r}")
    if kind != KIND_TENSOR and (t.data is not None or t.quant is not None):
        raise ModelFormatError(
            f"{label}: a {KIND_NAMES[kind]} value cannot hold constant data or quantization"
        )
    key = t.key_dtype
    if not isinstance(key, (int, np.integer)) or isinstance(key, bool):
        raise ModelFormatError(f"{label}: key dtype {key!r} is not an int")
    if kind in (KIND_MAP, KIND_SEQUENCE_MAP):
        if int(key) not in _MAP_KEYS:
            raise ModelFormatError(f"{label}: a {KIND_NAMES[kind]} value needs an int64 or string "
                                   f"key dtype, got code {key}")
    elif key:
        raise ModelFormatError(f"{label}: a {KIND_NAMES[kind]} value has no key dtype, got "
                               f"code {key}")
    # dtype 0 (undefined) is allowed for computed tensors: the runtime's kernels infer every
    # intermediate dtype in prepare, and ONNX shape inference cannot always give one.
    undefined_ok = isinstance(t.dtype, (int, np.integer)) and int(t.dtype) == 0 and t.data is None
    if not undefined_ok and (
        not isinstance(t.dtype, (int, np.integer)) or not dtypes.is_known(int(t.dtype))
    ):
        raise ModelFormatError(f"{label}: unknown dtype code {t.dtype!r}")
    shape = tuple(t.shape)
    if len(shape) > MAX_RANK:
        raise ModelFormatError(f"{label}: rank {len(shape)} exceeds the maximum of {MAX_RANK}")
    count = 1
    for d in shape:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < -1:
            raise ModelFormatError(
                f"{label}: bad dimension {d!r} in shape {shape} (dims are ints >= 0, or -1 for "
                "a dynamic dim)"
            )
        if d > 0:
            count *= int(d)
    item = 8 if t.dtype in (dtypes.STRING, dtypes.UNDEFINED) else dtypes.itemsize(int(t.dtype))
    if count * item > _INT64_MAX:
        raise ModelFormatError(
            f"{label}: shape {shape} of {dtypes.name(int(t.dtype))} needs {count * item} bytes, "
            "which overflows a 64-bit size"
        )
    if t.shape_signature and len(t.shape_signature) != len(shape):
        raise ModelFormatError(
            f"{label}: shape_signature has {len(t.shape_signature)} entries for rank {len(shape)}"
        )
    if t.data is not None:
        _check_constant(t, shape, label)
    if t.quant is not None:
        _check_quant(t.quant, t, shape, label)


def _check_constant(t: TensorDef, shape: tuple, label: str) -> None:
    data = t.data
    if not isinstance(data, np.ndarray):
        raise ModelFormatError(f"{label}: constant data is a {type(data).__name__}, not an ndarray")
    if t.unknown_rank:
        raise ModelFormatError(f"{label}: a constant cannot have an unknown rank")
    if any(d < 0 for d in shape):
        raise ModelFormatError(f"{label}: a constant needs a static shape, got {shape}")
    if data.shape != tuple(int(d) for d in shape):
        raise ModelFormatError(
            f"{label}: constant data has shape {data.shape} but the tensor declares {shape}"
        )
    if t.dtype == dtypes.STRING:
        if data.dtype.kind not in "OUS":
            raise ModelFormatError(f"{label}: string tensor holds {data.dtype} data")
        return
    holder = dtypes.to_numpy(int(t.dtype))
    if data.dtype.newbyteorder("=") != holder:
        raise ModelFormatError(
            f"{label}: constant data is {data.dtype} but dtype {dtypes.name(int(t.dtype))} is "
            f"held as {holder}"
        )
    # int4/uint4/int2/uint2 (values) and float4e2m1 (codes) live one per byte: a byte outside
    # the type's range is corrupt data, which a kernel would otherwise take as a value.
    narrow = dtypes.value_range(int(t.dtype))
    if narrow is not None and data.size:
        flat = data.reshape(-1)
        bad = (flat < narrow[0]) | (flat > narrow[1])
        if bad.any():
            k = int(np.argmax(bad))
            raise ModelFormatError(
                f"{label}: element {k} holds {int(flat[k])}, outside the range of "
                f"{dtypes.name(int(t.dtype))} [{narrow[0]}, {narrow[1]}]"
            )


def _check_quant(q: QuantParams, t: TensorDef, shape: tuple, label: str) -> None:
    label = f"{label}, quantization"
    scale = np.asarray(q.scale)
    zp = np.asarray(q.zero_point)
    if scale.ndim != 1 or scale.size < 1:
        raise ModelFormatError(f"{label}: needs a 1-D scale with at least one entry, got shape "
                               f"{scale.shape}")
    if zp.ndim != 1 or zp.size != scale.size:
        raise ModelFormatError(
            f"{label}: {zp.size} zero points for {scale.size} scales (they must match)"
        )
    if scale.dtype.kind not in "fiu" or zp.dtype.kind not in "iu":
        raise ModelFormatError(f"{label}: scale must be float and zero_point integer, got "
                               f"{scale.dtype} and {zp.dtype}")
    bad = ~(np.isfinite(scale) & (scale > 0))
    if bad.any():
        k = int(np.argmax(bad))
        raise ModelFormatError(
            f"{label}: scale[{k}] = {float(scale[k])!r}; scales must be finite and > 0"
        )
    if t.dtype in _INTEGER_TYPES and zp.size:
        info = np.iinfo(dtypes.to_numpy(int(t.dtype)))
        out = (zp < info.min) | (zp > info.max)
        if out.any():
            k = int(np.argmax(out))
            raise ModelFormatError(
                f"{label}: zero_point[{k}] = {int(zp[k])} is outside the range of "
                f"{dtypes.name(int(t.dtype))} [{info.min}, {info.max}]"
            )
    if scale.size > 1:
        axis = q.axis
        # With an unknown rank only the sign can be checked; the kernel's prepare checks the rest.
        rank = MAX_RANK if t.unknown_rank else len(shape)
        if not 0 <= axis < rank:
            raise ModelFormatError(
                f"{label}: quantized dimension {axis} is out of range for shape {shape}"
            )
        if not t.unknown_rank and shape[axis] >= 0 and shape[axis] != scale.size:
            raise ModelFormatError(
                f"{label}: {scale.size} per-axis scales for dimension {axis} of size {shape[axis]}"
            )
