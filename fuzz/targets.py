"""The fuzz targets, their seed corpus and their structure-aware mutators.

Both targets take a *case*: the name of a seed from the corpus plus a list of mutations, each a
tuple of small integers (``(kind, a, b, c, ...)``) that the mutator reads modulo the sizes of the
seed. Hypothesis draws and shrinks such tuples; a case is JSON-serializable, so a finding is saved
and replayed as ``{"target": ..., "seed": ..., "mutations": [...]}`` whatever the bytes are.

The oracle (:func:`check_edgert`, :func:`check_onnx`): the model either works or edgert raises an
:class:`~edgert.errors.EdgeRTError`. Any other exception escapes (a finding); a crash kills the
process (the long runner, ``python -m fuzz``, runs cases in a subprocess to catch that).
"""

from __future__ import annotations

import functools
import math
import pathlib
import struct

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The bundled models: the corpus both targets start from (small ones first).
ONNX_SEEDS = {
    "torch_cnn": ROOT / "tests" / "data" / "torch_cnn.onnx",
    "torch_transformer": ROOT / "tests" / "data" / "torch_transformer.onnx",
    "torch_decoder": ROOT / "tests" / "data" / "torch_decoder.onnx",
    "torch_mobilenet": ROOT / "tests" / "data" / "torch_mobilenet.onnx",
    "digits_edgert_mlp": ROOT / "models" / "digits_edgert_mlp.onnx",
    "digits_edgert_mobilenet": ROOT / "models" / "digits_edgert_mobilenet.onnx",
    "digits_edgert_cnn": ROOT / "models" / "digits_edgert_cnn.onnx",
    "digits_cnn": ROOT / "models" / "digits_cnn.onnx",
}

# Limits the harness runs interpreters with, so a mutated shape cannot take the host's memory.
MAX_ALLOC_BYTES = 256 << 20
MAX_LOOP_ITERATIONS = 10_000
TIMEOUT_S = 60.0  # generous: a cold Numba cache compiles kernels inside the run
MAX_FEED_ELEMENTS = 1 << 20

INTERESTING_INTS = [0, 1, -1, 2, -2, 3, 4, 7, 8, 16, 64, 255, 256, 1 << 16, 2**31 - 1, -(2**31),
                    2**32, 2**62, -(2**62), 2**63 - 1, -(2**63)]
INTERESTING_U32 = [0, 1, 2, 4, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                   0xFFFFFFFC, 0xFFFFFFF8]
INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x20, 0x40]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, math.inf, -math.inf, math.nan,
                      3.4e38, -3.4e38]


# ----- the corpus --------------------------------------------------------------------------------
@functools.cache
def onnx_seed(name: str):
    import onnx

    return onnx.load(str(ONNX_SEEDS[name]))


@functools.cache
def edgert_seed(name: str) -> bytes:
    """The seed ONNX model converted to `.edgert` bytes (cached for the process)."""
    from edgert.converter import convert

    return convert(onnx_seed(name))


@functools.cache
def _structure_positions(name: str) -> np.ndarray:
    """Byte positions of an `.edgert` seed outside its tensors' data buffers: the FlatBuffer
    tables, vtables, offsets, shapes, names and attributes, where mutations are interesting."""
    from edgert.format import read_model

    data = edgert_seed(name)
    mask = np.ones(len(data), dtype=bool)
    for sg in read_model(data).subgraphs:
        for t in sg.tensors:
            arr = getattr(t, "data", None)
            if not isinstance(arr, np.ndarray) or arr.dtype == object or arr.nbytes < 32:
                continue
            raw = np.ascontiguousarray(arr).tobytes()
            at = data.find(raw)
            if at >= 0:
                mask[at:at + len(raw)] = False
    return np.flatnonzero(mask)


# ----- running a model ---------------------------------------------------------------------------
def _feeds(interp) -> dict:
    feeds = {}
    for d in interp.get_input_details():
        shape = tuple(int(s) for s in d["shape"])
        if any(s < 0 for s in shape) or math.prod(shape) > MAX_FEED_ELEMENTS:
            return {}  # a shape the harness will not allocate; loading was the test
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "O":
            arr = np.full(shape, "a", dtype=object)
        else:
            arr = np.ones(shape, dtype=dtype)
        feeds[d["name"]] = arr
    return feeds


def run_edgert_bytes(data: bytes) -> str:
    """Read, verify, load and run (once, on a feed of the declared shapes) a `.edgert` file.
    Returns how far it got; raises whatever edgert raises."""
    from edgert.format import read_model
    from edgert.runtime import Interpreter

    read_model(bytes(data))
    interp = Interpreter(bytes(data), num_threads=1, max_alloc_bytes=MAX_ALLOC_BYTES,
                         max_loop_iterations=MAX_LOOP_ITERATIONS, timeout_s=TIMEOUT_S)
    feeds = _feeds(interp)
    if not feeds and interp.get_input_details():
        return "loaded"
    interp.run(feeds)
    return "ran"


# ----- .edgert: byte-level mutations on real files ---------------------------------------------
EDGERT_KINDS = 10


def mutate_edgert(seed: str, mutations) -> bytes:
    """Apply ``mutations`` (tuples ``(kind, a, b, c, in_structure)``) to the seed's bytes."""
    buf = bytearray(edgert_seed(seed))
    struct_pos = _structure_positions(seed)

    for kind, a, b, c, in_structure in mutations:
        n = len(buf)
        if n == 0:
            break

        def pos(x, align=1, width=1, _n=n, _s=in_structure):
            if _s and len(struct_pos):
                p = int(struct_pos[x % len(struct_pos)])
            else:
                p = x % _n
            p -= p % align
            return min(p, max(0, _n - width))

        kind %= EDGERT_KINDS
        if kind == 0:  # flip one bit
            p = pos(a)
            buf[p] ^= 1 << (b % 8)
        elif kind == 1:  # overwrite a byte
            buf[pos(a)] = INTERESTING_BYTES[b % len(INTERESTING_BYTES)] if c % 2 else b % 256
        elif kind == 2 and n >= 4:  # overwrite an aligned uoffset/int32 with an interesting value
            p = pos(a, 4, 4)
            choices = INTERESTING_U32 + [n, n - 1, n - 4, n + 4, c % (n + 8)]
            buf[p:p + 4] = struct.pack("<I", choices[b % len(choices)] & 0xFFFFFFFF)
        elif kind == 3 and n >= 4:  # nudge an aligned uoffset/soffset (a FlatBuffer offset)
            p = pos(a, 4, 4)
            (v,) = struct.unpack_from("<I", buf, p)
            delta = [4, -4, 8, -8, 1, -1, 2, -2, 16, -16][b % 10] * (1 + c % 4)
            struct.pack_into("<I", buf, p, (v + delta) & 0xFFFFFFFF)
        elif kind == 4 and n >= 8:  # overwrite an aligned int64 (dims, shapes, attribute ints)
            p = pos(a, 8, 8)
            struct.pack_into("<q", buf, p, INTERESTING_INTS[b % len(INTERESTING_INTS)])
        elif kind == 5:  # truncate
            del buf[max(1, a % n):]
        elif kind == 6:  # splice: copy a range over another place
            src, dst, length = a % n, pos(b), 1 + c % 64
            chunk = bytes(buf[src:src + length])
            buf[dst:dst + len(chunk)] = chunk
        elif kind == 7:  # delete a range
            p = pos(a)
            del buf[p:p + 1 + b % 16]
        elif kind == 8:  # insert bytes (shifts every offset after it)
            p = pos(a)
            buf[p:p] = bytes([b % 256]) * (1 + c % 8)
        elif kind == 9 and n >= 2:  # overwrite an aligned int16 (vtable entries, enums)
            p = pos(a, 2, 2)
            struct.pack_into("<H", buf, p, [0, 4, 6, 0xFFFF, 0x7FFF, 0x8000, b][c % 7] & 0xFFFF)
    return bytes(buf)


def check_edgert(seed: str, mutations) -> str:
    """The `.edgert` target: works, or raises EdgeRTError (caught here)."""
    from edgert.errors import EdgeRTError

    data = mutate_edgert(seed, mutations)
    try:
        return run_edgert_bytes(data)
    except EdgeRTError:
        return "error"


# ----- ONNX: structural mutations with onnx.helper ---------------------------------------------
ONNX_KINDS = 16
OP_TYPES = ["Conv", "Relu", "Add", "MatMul", "Gemm", "Reshape", "Transpose", "Concat", "Slice",
            "Gather", "Softmax", "MaxPool", "AveragePool", "BatchNormalization", "Flatten",
            "Unsqueeze", "Squeeze", "Expand", "Where", "Cast", "Resize", "Pad", "ReduceMean",
            "Split", "ConvTranspose", "LayerNormalization", "TopK", "If", "Loop", "NoSuchOp"]
ATTR_NAMES = ["axis", "axes", "perm", "kernel_shape", "pads", "strides", "dilations", "group",
              "to", "keepdims", "transA", "transB", "alpha", "epsilon", "mode", "auto_pad",
              "allowzero", "split", "k", "largest"]


def _interesting_dim(x: int):
    dims = [0, 1, 2, 3, -1, -2, 7, 64, 2**31 - 1, 2**40, -(2**31), "N"]
    return dims[x % len(dims)]


def _set_dim(dim, value) -> None:
    if isinstance(value, str):
        dim.dim_param = value
    else:
        dim.dim_value = value


def mutate_onnx(seed: str, mutations):
    """A copy of the seed ModelProto with ``mutations`` (tuples ``(kind, a, b, c)``) applied."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(onnx_seed(seed))
    g = model.graph

    def names():
        out = [i.name for i in g.input] + [i.name for i in g.initializer]
        for nd in g.node:
            out.extend(nd.output)
        return out + ["", "no_such_value"]

    for kind, a, b, c in mutations:
        kind %= ONNX_KINDS
        nodes = g.node
        node = nodes[a % len(nodes)] if len(nodes) else None
        if kind == 0 and node is not None and len(node.input):  # rewire an input
            pool = names()
            node.input[b % len(node.input)] = pool[c % len(pool)]
        elif kind == 1 and node is not None and len(node.input):  # drop an input
            del node.input[b % len(node.input)]
        elif kind == 2 and node is not None and len(node.input):  # duplicate an input
            node.input.append(node.input[b % len(node.input)])
        elif kind == 3 and node is not None:  # drop a node
            del nodes[a % len(nodes)]
        elif kind == 4 and node is not None and len(node.attribute):  # change an attribute value
            at = node.attribute[b % len(node.attribute)]
            if at.type == onnx.AttributeProto.INT:
                at.i = INTERESTING_INTS[c % len(INTERESTING_INTS)]
            elif at.type == onnx.AttributeProto.INTS:
                if len(at.ints) and c % 3:
                    at.ints[c % len(at.ints)] = INTERESTING_INTS[(c // 3) % len(INTERESTING_INTS)]
                elif c % 2:
                    at.ints.append(INTERESTING_INTS[(c // 3) % len(INTERESTING_INTS)])
                else:
                    del at.ints[:]
            elif at.type == onnx.AttributeProto.FLOAT:
                at.f = INTERESTING_FLOATS[c % len(INTERESTING_FLOATS)]
            elif at.type == onnx.AttributeProto.STRING:
                at.s = [b"", b"NOTSET", b"SAME_UPPER", b"VALID", b"\xff\xfe", b"x" * 300][c % 6]
            elif at.type == onnx.AttributeProto.TENSOR:
                at.t.data_type = c % 30
        elif kind == 5 and node is not None and len(node.attribute):  # change an attribute type
            at = node.attribute[b % len(node.attribute)]
            at.type = [1, 2, 3, 4, 5, 6, 7, 8, 0, 11, 13][c % 11]
        elif kind == 6 and node is not None:  # remove an attribute / add a stray one
            if len(node.attribute) and c % 2:
                del node.attribute[b % len(node.attribute)]
            else:
                val = INTERESTING_INTS[c % len(INTERESTING_INTS)]
                name = ATTR_NAMES[b % len(ATTR_NAMES)]
                if c % 3 == 0:
                    attr = helper.make_attribute(name, [val, val])
                else:
                    attr = helper.make_attribute(name, val)
                node.attribute.append(attr)
        elif kind == 7 and len(g.input):  # a graph input's dims
            t = g.input[a % len(g.input)].type.tensor_type
            dims = t.shape.dim
            if len(dims) and c % 4:
                _set_dim(dims[b % len(dims)], _interesting_dim(c))
            elif c % 8 == 0 and len(dims):
                del dims[b % len(dims)]
            else:
                _set_dim(dims.add(), _interesting_dim(b))
        elif kind == 8 and len(g.initializer):  # an initializer's dims (data unchanged)
            init = g.initializer[a % len(g.initializer)]
            if len(init.dims) and c % 3:
                v = _interesting_dim(c)
                init.dims[b % len(init.dims)] = v if isinstance(v, int) else 5
            elif c % 3 == 1 or not len(init.dims):
                init.dims.append(1 + b % 3)
            else:
                del init.dims[b % len(init.dims)]
        elif kind == 9 and len(g.initializer):  # an initializer's dtype (incl. invalid enums)
            g.initializer[a % len(g.initializer)].data_type = c % 30
        elif kind == 10 and len(g.input):  # a graph input's elem type
            g.input[a % len(g.input)].type.tensor_type.elem_type = c % 30
        elif kind == 11 and len(model.opset_import):  # an opset version
            model.opset_import[a % len(model.opset_import)].version = (
                [0, 1, 6, 7, 9, 11, 13, 17, 18, 21, 22, 23, 99, -1][c % 14])
        elif kind == 12 and node is not None:  # change the op type
            node.op_type = OP_TYPES[c % len(OP_TYPES)]
        elif kind == 13 and node is not None and len(node.output):  # rename/duplicate an output
            pool = names()
            node.output[b % len(node.output)] = pool[c % len(pool)]
        elif kind == 14 and len(g.output):  # graph outputs: rename or drop
            if c % 2 and len(g.output) > 0:
                g.output[a % len(g.output)].name = names()[c % len(names())]
            else:
                del g.output[a % len(g.output)]
        elif kind == 15 and len(g.initializer):  # truncate an initializer's raw data
            init = g.initializer[a % len(g.initializer)]
            if init.raw_data:
                init.raw_data = init.raw_data[: b % max(1, len(init.raw_data))]
            else:
                init.dims.append(2)
    return model


def check_onnx(seed: str, mutations) -> str:
    """The ONNX importer target: convert, load and run; works or raises EdgeRTError."""
    from edgert.converter import convert
    from edgert.errors import EdgeRTError

    model = mutate_onnx(seed, mutations)
    try:
        data = convert(model)
    except EdgeRTError:
        return "convert error"
    try:
        return run_edgert_bytes(data)
    except EdgeRTError:
        return "error"


TARGETS = {"edgert": check_edgert, "onnx": check_onnx}


def signature(exc: BaseException) -> str:
    """What tells two findings apart: the exception type and the innermost frame in edgert
    (``"IndexError at edgert/optimizer/layout.py:merge_reshapes"``)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "/edgert/" in f.filename.replace("\\", "/")] or frames
    where = "?"
    if inner:
        f = inner[-1]
        path = f.filename.replace("\\", "/")
        where = f"{path[path.rfind('/edgert/') + 1:] if '/edgert/' in path else path}:{f.name}"
    return f"{type(exc).__name__} at {where}"
