"""Round trips through the `.edgert` writer and reader, file layout, and zero-copy loading.

Expected values come from the ModelDef the test builds and from independent decodings (NumPy
casts, the flatc-generated accessors), never from the reader itself.
"""

from __future__ import annotations

import gc
import mmap
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgert import dtypes
from edgert.errors import ModelFormatError
from edgert.format import (
    FILE_IDENTIFIER,
    SCHEMA_VERSION,
    ModelDef,
    OperatorDef,
    QuantParams,
    SubGraphDef,
    TensorDef,
    read_model,
    write_model,
)
from edgert.format import _generated as fb

STORABLE = [c for c in range(1, 32) if dtypes.is_known(c) and c != dtypes.STRING]


def _sample(code: int, shape: tuple[int, ...]) -> np.ndarray:
    holder = dtypes.to_numpy(code)
    values = np.arange(int(np.prod(shape)), dtype=np.int64) * 7 + 3
    if holder == np.bool_:
        return (values % 2 == 1).reshape(shape)
    if holder.kind == "c":
        return (values + 1j * values).astype(holder).reshape(shape)
    narrow = dtypes.value_range(code)  # int4/uint4/int2/uint2 values, float4 codes
    if narrow is not None:
        lo, hi = narrow
        return (lo + values % (hi - lo + 1)).astype(holder).reshape(shape)
    return (values % 100).astype(holder).reshape(shape)


def full_model() -> tuple[ModelDef, list[SubGraphDef]]:
    """A model touching every field; returns it and the subgraph order the file must have."""
    tensors = [
        TensorDef("x", dtypes.FLOAT, (-1, 3), ("batch", "")),
        TensorDef("y", dtypes.FLOAT, (-1, 3), ("batch", "")),
        TensorDef("cond", dtypes.BOOL, ()),
        TensorDef("anything", dtypes.FLOAT, (), unknown_rank=True),
        TensorDef("qa", dtypes.INT8, (-1, 3),
                  quant=QuantParams(np.array([0.05], np.float32), np.array([-3]), 0)),
        TensorDef("qw", dtypes.INT8, (2, 3), data=np.array([[1, -2, 3], [4, 5, -128]], np.int8),
                  quant=QuantParams(np.array([0.5, 0.25], np.float32), np.array([0, 0]), 0)),
        TensorDef("qb", dtypes.INT32, (3,), data=np.array([1, 2, -3], np.int32),
                  quant=QuantParams(np.array([0.1, 0.2, 0.3], np.float32), np.zeros(3, np.int64))),
        TensorDef("words", dtypes.STRING, (2, 2),
                  data=np.array([["a", "bé"], ["", "日本"]], dtype=object)),
        TensorDef("no_words", dtypes.STRING, (0,), data=np.array([], dtype=object)),
        # Identical bytes: the writer stores them once.
        TensorDef("dup1", dtypes.FLOAT, (4,), data=np.full(4, 2.5, np.float32)),
        TensorDef("dup2", dtypes.FLOAT, (2, 2), data=np.full((2, 2), 2.5, np.float32)),
        TensorDef("h", dtypes.FLOAT, (-1, 3)),
        TensorDef("loop_out", dtypes.FLOAT, (-1, 3)),
    ]
    for code in STORABLE:
        name = dtypes.name(code)
        tensors.append(TensorDef(f"c_{name}", code, (2, 3), data=_sample(code, (2, 3))))
        tensors.append(TensorDef(f"s_{name}", code, (), data=_sample(code, ())))
        tensors.append(TensorDef(f"e_{name}", code, (0, 4), data=_sample(code, (0, 4))))
    idx = {t.name: i for i, t in enumerate(tensors)}

    then_g = SubGraphDef("then", [TensorDef("t_in", dtypes.FLOAT, (-1, 3)),
                                  TensorDef("t_out", dtypes.FLOAT, (-1, 3))],
                         [0], [1], [OperatorDef("Relu", [0], [1], version=14)])
    else_g = SubGraphDef("else", [TensorDef("e_in", dtypes.FLOAT, (-1, 3)),
                                  TensorDef("e_out", dtypes.FLOAT, (-1, 3))],
                         [0], [1], [OperatorDef("Neg", [0], [1], version=13)])
    loop_body = SubGraphDef(
        "loop_body",
        [TensorDef("i", dtypes.INT64, ()), TensorDef("c", dtypes.BOOL, ()),
         TensorDef("acc", dtypes.FLOAT, (-1, 3)), TensorDef("x", dtypes.FLOAT, (-1, 3)),
         TensorDef("acc_out", dtypes.FLOAT, (-1, 3)), TensorDef("c_out", dtypes.BOOL, ())],
        inputs=[0, 1, 2], outputs=[5, 4],
        operators=[OperatorDef("Add", [2, 3], [4], name="acc_add", version=14),
                   OperatorDef("Identity", [1], [5], version=16)],
        outer_inputs=["x"],
    )
    attrs = {
        "f": 0.1,
        "i": -(2**40),
        "b": True,
        "np_f": np.float32(2.5),
        "np_i": np.int64(7),
        "s": "héllo",
        "raw": b"\xff\x00\xfe",
        "ints": [1, -2, 3],
        "empty": [],
        "floats": [1, 2.5, np.float32(0.3)],
        "strings": ["a", "", "ünï", b"\xff"],
        "tensor": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar_tensor": np.array(3, np.int64),
        "tensors": [np.array([1, 2], np.int32), np.array(["p", "q"], dtype=object)],
        "graph": then_g,
        "graphs": [else_g, then_g],
    }
    ops = [
        OperatorDef("Custom", [idx["x"], -1, idx["qw"]], [idx["h"], -1], attrs=attrs,
                    name="custom0", domain="edgert", version=1),
        OperatorDef("If", [idx["cond"]], [idx["y"]], name="if0", version=16,
                    attrs={"then_branch": then_g, "else_branch": else_g}),
        OperatorDef("Loop", [-1, idx["cond"], idx["h"]], [idx["loop_out"]], name="loop0",
                    version=16, attrs={"body": loop_body}),
        # Same (domain, op_type, version) as above: one operator code.
        OperatorDef("If", [idx["cond"]], [idx["qa"]], name="if1", version=16,
                    attrs={"then_branch": then_g, "else_branch": else_g}),
    ]
    main = SubGraphDef("main", tensors, [idx["x"], idx["cond"]],
                       [idx["y"], idx["loop_out"], idx["c_float32"]], ops)
    # else_g is listed explicitly (referenced, not copied); the others come from attributes.
    model = ModelDef([main, else_g], metadata={"producer": "tests", "hash": "abc123"},
                     description="every field")
    return model, [main, else_g, then_g, loop_body]


def _decoded_attr(value):
    """What an attribute value reads back as (model.py's table), computed independently."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(np.float32(value))
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, list):
        if all(isinstance(v, (int, np.integer)) for v in value):
            return [int(v) for v in value]
        return [_decoded_attr(v) if not isinstance(v, (int, np.integer)) else float(v)
                for v in value]
    return value


def _assert_array_equal(expected: np.ndarray, got: np.ndarray) -> None:
    assert got.shape == expected.shape
    if expected.dtype == object or expected.dtype.kind in "US":
        assert got.dtype == object
        assert got.tolist() == expected.tolist()
        return
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def _assert_tensor(expected: TensorDef, got: TensorDef) -> None:
    where = expected.name
    assert got.name == expected.name
    assert got.dtype == expected.dtype, where
    assert got.shape == tuple(expected.shape), where
    assert got.shape_signature == (tuple(expected.shape_signature) if expected.shape_signature
                                   else None), where
    assert got.unknown_rank == expected.unknown_rank, where
    if expected.data is None:
        assert got.data is None, where
    else:
        _assert_array_equal(expected.data, got.data)
        assert not got.data.flags.writeable, where
    if expected.quant is None:
        assert got.quant is None
    else:
        np.testing.assert_array_equal(got.quant.scale, np.asarray(expected.quant.scale, np.float32))
        np.testing.assert_array_equal(got.quant.zero_point, expected.quant.zero_point)
        assert got.quant.axis == expected.quant.axis


def assert_models_equal(expected: ModelDef, order: list[SubGraphDef], got: ModelDef) -> None:
    assert got.version == SCHEMA_VERSION
    assert got.metadata == expected.metadata
    assert got.description == expected.description
    assert [sg.name for sg in got.subgraphs] == [sg.name for sg in order]
    position = {id(sg): k for k, sg in enumerate(order)}
    for exp_sg, got_sg in zip(order, got.subgraphs):
        assert got_sg.inputs == list(exp_sg.inputs)
        assert got_sg.outputs == list(exp_sg.outputs)
        assert got_sg.outer_inputs == list(exp_sg.outer_inputs)
        # Attribute-only tensors are not exposed: exactly the graph's own tensors come back.
        assert len(got_sg.tensors) == len(exp_sg.tensors)
        for t_exp, t_got in zip(exp_sg.tensors, got_sg.tensors):
            _assert_tensor(t_exp, t_got)
        assert len(got_sg.operators) == len(exp_sg.operators)
        for op_exp, op_got in zip(exp_sg.operators, got_sg.operators):
            assert (op_got.op_type, op_got.domain, op_got.version, op_got.name) == (
                op_exp.op_type, op_exp.domain, op_exp.version, op_exp.name)
            assert op_got.inputs == list(op_exp.inputs)
            assert op_got.outputs == list(op_exp.outputs)
            assert list(op_got.attrs) == list(op_exp.attrs)
            for name, value in op_exp.attrs.items():
                got_value = op_got.attrs[name]
                if isinstance(value, SubGraphDef):
                    assert got_value is got.subgraphs[position[id(value)]], name
                elif isinstance(value, list) and value and isinstance(value[0], SubGraphDef):
                    assert [got.subgraphs.index(g) for g in got_value] == [
                        position[id(g)] for g in value], name
                elif isinstance(value, np.ndarray):
                    _assert_array_equal(value, got_value)
                elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                    assert len(got_value) == len(value)
                    for a, b in zip(value, got_value):
                        _assert_array_equal(a, b)
                elif isinstance(value, list) and any(isinstance(v, (str, bytes)) for v in value):
                    assert got_value == [_decoded_attr(v) if isinstance(v, bytes) else v
                                         for v in value], name
                else:
                    expected_value = _decoded_attr(value)
                    assert got_value == expected_value, name
                    assert type(got_value) is type(expected_value), name


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("kind", ["path", "bytes", "bytearray", "memoryview", "pathlib"])
def test_round_trip_every_field(tmp_path, kind):
    model, order = full_model()
    path = tmp_path / "full.edgert"
    data = write_model(model, path)
    assert path.read_bytes() == data
    source = {
        "path": str(path),
        "pathlib": path,
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
    }[kind]
    assert_models_equal(model, order, read_model(source))


def test_rewrite_is_stable():
    model, _ = full_model()
    data = write_model(model)
    assert write_model(model) == data  # deterministic
    again = write_model(read_model(data))
    assert again == data


def test_scalar_and_zero_size_constants():
    t = [TensorDef("s", dtypes.FLOAT, (), data=np.array(1.5, np.float32)),
         TensorDef("z", dtypes.INT64, (3, 0), data=np.zeros((3, 0), np.int64)),
         TensorDef("out", dtypes.FLOAT, ())]
    model = ModelDef([SubGraphDef("g", t, [], [2], [OperatorDef("Identity", [0], [2])])])
    got = read_model(write_model(model)).main.tensors
    assert got[0].data.shape == () and got[0].data.dtype == np.float32
    assert float(got[0].data) == 1.5
    assert got[1].data.shape == (3, 0) and got[1].data.dtype == np.int64


def test_model_without_constants_or_operators():
    t = [TensorDef("x", dtypes.FLOAT, (1,))]
    model = ModelDef([SubGraphDef("passthrough", t, [0], [0], [])])
    got = read_model(write_model(model))
    assert got.main.inputs == [0] and got.main.outputs == [0]
    assert got.main.tensors[0].data is None


def test_bfloat16_and_float8_bits_round_trip():
    bits16 = np.array([0x3F80, 0xC000, 0x7F80], np.uint16)  # 1.0, -2.0, +inf in bfloat16
    bits8 = np.array([0x38, 0xFF], np.uint8)
    t = [TensorDef("bf", dtypes.BFLOAT16, (3,), data=bits16),
         TensorDef("f8", dtypes.FLOAT8E4M3FN, (2,), data=bits8),
         TensorDef("out", dtypes.BFLOAT16, (3,))]
    model = ModelDef([SubGraphDef("g", t, [], [2], [OperatorDef("Identity", [0], [2])])])
    got = read_model(write_model(model)).main.tensors
    assert got[0].dtype == dtypes.BFLOAT16 and got[0].data.dtype == np.uint16
    np.testing.assert_array_equal(got[0].data, bits16)
    np.testing.assert_array_equal(got[1].data, bits8)


# ---------------------------------------------------------------------------------------------
# File layout, checked with the flatc-generated accessors (independent of the reader)


def test_file_layout():
    model, order = full_model()
    data = write_model(model)
    assert data[4:8] == FILE_IDENTIFIER
    root = fb.Model.GetRootAs(data, 0)
    assert root.Version() == SCHEMA_VERSION
    assert root.SubgraphsLength() == len(order)

    codes = {(root.OperatorCodes(k).Domain(), root.OperatorCodes(k).OpType(),
              root.OperatorCodes(k).Version()) for k in range(root.OperatorCodesLength())}
    assert root.OperatorCodesLength() == len(codes)  # deduplicated
    assert (b"", b"If", 16) in codes and (b"edgert", b"Custom", 1) in codes

    assert root.Buffers(0).Offset() == 0 and root.Buffers(0).Size() == 0
    main = root.Subgraphs(0)
    by_name = {main.Tensors(k).Name().decode(): main.Tensors(k)
               for k in range(main.TensorsLength())}
    for k in range(1, root.BuffersLength()):
        buf = root.Buffers(k)
        if buf.Size():
            assert buf.Offset() % 64 == 0
            assert buf.Offset() + buf.Size() <= len(data)
    # Each constant's bytes are its little-endian array bytes, at the buffer's absolute offset.
    for t in model.main.tensors:
        if t.data is None or t.dtype == dtypes.STRING:
            continue
        buf = root.Buffers(by_name[t.name].Buffer())
        expected = np.ascontiguousarray(t.data).astype(t.data.dtype.newbyteorder("<")).tobytes()
        assert data[buf.Offset():buf.Offset() + buf.Size()] == expected, t.name
    # Identical blobs are stored once.
    assert by_name["dup1"].Buffer() == by_name["dup2"].Buffer() != 0
    # String tensors use string_data and buffer 0.
    assert by_name["words"].Buffer() == 0 and by_name["words"].StringDataLength() == 4

    sig = root.SignatureDefs(0)
    assert root.SignatureDefsLength() == 1
    assert sig.SignatureKey() == b"serving_default" and sig.SubgraphIndex() == 0
    assert [sig.Inputs(k).Name() for k in range(sig.InputsLength())] == [b"x", b"cond"]
    assert [sig.Outputs(k).TensorIndex() for k in range(sig.OutputsLength())] == list(
        model.main.outputs)
    meta = {root.Metadata(k).Name(): root.Metadata(k).Value() for k in range(root.MetadataLength())}
    assert meta == {b"producer": b"tests", b"hash": b"abc123"}


def test_attribute_tensors_live_at_the_end_of_the_subgraph():
    model, _ = full_model()
    root = fb.Model.GetRootAs(write_model(model), 0)
    # 4 attribute arrays in "custom0" (tensor, scalar_tensor, 2 x tensors) -> 4 extra tensors.
    assert root.Subgraphs(0).TensorsLength() == len(model.main.tensors) + 4


# ---------------------------------------------------------------------------------------------
# Zero-copy loading


def _owners(arr: np.ndarray) -> list:
    """The chain of objects that own ``arr``'s memory (``.base``, then ``memoryview.obj``)."""
    chain, x = [], arr
    while x is not None:
        chain.append(x)
        x = x.base if isinstance(x, np.ndarray) else getattr(x, "obj", None)
    return chain


def _weights(model: ModelDef) -> list[np.ndarray]:
    return [t.data for t in model.main.tensors
            if t.data is not None and t.data.size and t.dtype != dtypes.STRING]


def test_weights_are_views_of_the_mapped_file(tmp_path):
    model, _ = full_model()
    path = tmp_path / "m.edgert"
    write_model(model, path)
    got = read_model(path)
    for w in _weights(got):
        assert not w.flags.writeable
        assert any(isinstance(o, mmap.mmap) for o in _owners(w))


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_weights_share_memory_with_the_callers_buffer(kind):
    model, _ = full_model()
    data = write_model(model)
    source = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]
    whole = np.frombuffer(source, np.uint8)
    got = read_model(source)
    for w in _weights(got):
        assert not w.flags.writeable
        assert np.shares_memory(w, whole)


def test_mapping_outlives_the_model_object(tmp_path):
    w = np.linspace(-1, 1, 1000, dtype=np.float32)
    t = [TensorDef("w", dtypes.FLOAT, (1000,), data=w), TensorDef("y", dtypes.FLOAT, (1000,))]
    model = ModelDef([SubGraphDef("g", t, [], [1], [OperatorDef("Identity", [0], [1])])])
    path = tmp_path / "w.edgert"
    write_model(model, path)
    view = read_model(path).main.tensors[0].data
    gc.collect()  # the ModelDef is gone; the view alone keeps the mapping
    if os.name == "posix":
        os.remove(path)  # a mapped file stays readable after unlinking on POSIX
    np.testing.assert_array_equal(view, w)


# Blob sizes of the "load cost does not depend on weight size" tests.
_SMALL_COUNT = 1000
_SIZES_MB = [1, 200]


def _big_model_parts(megabytes: int) -> tuple[bytes, int, int]:
    """A FlatBuffer declaring a ``megabytes`` MB float32 constant, without materializing it.

    Writes a model with a small constant, then patches (through the generated accessors) the
    constant's dim and its buffer size. ForceDefaults keeps the FlatBuffer layout unchanged.
    Returns (FlatBuffer bytes, blob offset, element count).
    """
    count = megabytes * 2**20 // 4
    t = [TensorDef("w", dtypes.FLOAT, (_SMALL_COUNT,), data=np.ones(_SMALL_COUNT, np.float32)),
         TensorDef("y", dtypes.FLOAT, (_SMALL_COUNT,))]
    model = ModelDef([SubGraphDef("g", t, [], [1], [OperatorDef("Identity", [0], [1])])])
    data = bytearray(write_model(model))
    root = fb.Model.GetRootAs(data, 0)
    tensor = root.Subgraphs(0).Tensors(0)
    shape = tensor._tab.Vector(tensor._tab.Offset(8))  # Tensor.shape, slot 2
    buf = root.Buffers(tensor.Buffer())
    size_pos = buf._tab.Pos + buf._tab.Offset(6)  # Buffer.size, slot 1
    offset = buf.Offset()
    data[shape:shape + 8] = count.to_bytes(8, "little")
    data[size_pos:size_pos + 8] = (count * 4).to_bytes(8, "little")
    return bytes(data[:offset]), offset, count


_GUARD_SCRIPT = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    from edgert.format import read_model

    head_path, blob_offset, count, mode = sys.argv[1], *map(int, sys.argv[2:4]), sys.argv[4]
    head = open(head_path, "rb").read()
    total = blob_offset + 4 * count
    mm = mmap.mmap(-1, total)  # anonymous: untouched pages cost no memory
    mm[:len(head)] = head
    page = mmap.PAGESIZE
    guard = -(-blob_offset // page) * page  # first whole page of the blob
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    if libc.mprotect(addr + guard, total - guard, 0) != 0:  # PROT_NONE
        sys.exit("mprotect failed")
    if mode == "touch":  # control: reading a guarded page must crash the process
        print(mm[guard])
        sys.exit(0)
    model = read_model(memoryview(mm))
    w = model.main.tensors[0].data
    assert w.shape == (count,) and not w.flags.writeable
    assert np.shares_memory(w, np.frombuffer(mm, np.uint8))
    print("ok")
""")


@pytest.mark.skipif(os.name != "posix", reason="uses mmap + mprotect(PROT_NONE) through libc")
@pytest.mark.parametrize("megabytes", _SIZES_MB)
def test_loading_touches_no_weight_page(tmp_path, megabytes):
    """read_model reads nothing of the weights: every whole page of the blob is PROT_NONE.

    This is the structural form of "loading costs the same at 1 MB or 200 MB": the reader and
    its verifier never read a weight byte, so the cost cannot depend on the weights' size.
    """
    head, blob_offset, count = _big_model_parts(megabytes)
    head_path = tmp_path / "head.bin"
    head_path.write_bytes(head)
    args = [sys.executable, "-c", _GUARD_SCRIPT, str(head_path), str(blob_offset), str(count)]
    if megabytes == _SIZES_MB[0]:
        control = subprocess.run(args + ["touch"], capture_output=True, text=True, timeout=120)
        assert control.returncode < 0, "the guard page did not trap: the test would prove nothing"
    run = subprocess.run(args + ["read"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, (
        f"read_model touched a weight page or failed (rc {run.returncode}): {run.stderr[-2000:]}")


@pytest.mark.parametrize("megabytes", _SIZES_MB)
def test_large_model_from_path_is_zero_copy(tmp_path, megabytes):
    head, blob_offset, count = _big_model_parts(megabytes)
    path = tmp_path / "big.edgert"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(blob_offset + 4 * count)  # sparse: the weights take no disk space
    w = read_model(path).main.tensors[0].data
    assert w.shape == (count,) and w.dtype == np.float32 and not w.flags.writeable
    assert any(isinstance(o, mmap.mmap) for o in _owners(w))


# ---------------------------------------------------------------------------------------------
# Writer checks and API details


def _one_op_model(attrs=None, tensors=None, ops=None) -> ModelDef:
    tensors = tensors or [TensorDef("x", dtypes.FLOAT, (2,)), TensorDef("y", dtypes.FLOAT, (2,))]
    ops = ops if ops is not None else [OperatorDef("Op", [0], [1], attrs=attrs or {}, name="n")]
    return ModelDef([SubGraphDef("g", tensors, [0], [1], ops)])


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"bad": {"a": 1}}, "attribute 'bad'.*type dict cannot be stored"),
        ({"mixed": [1, "a"]}, "attribute 'mixed'.*list mixing int, str"),
        ({"big": 2**70}, "attribute 'big'.*does not fit in an int64"),
        ({"huge": 1e300}, "attribute 'huge'.*does not fit in a float32"),
    ],
)
def test_writer_rejects_unstorable_attributes(attrs, message):
    with pytest.raises(ModelFormatError, match=message):
        write_model(_one_op_model(attrs))


def test_writer_rejects_inconsistent_constants():
    bad_dtype = [TensorDef("x", dtypes.FLOAT, (2,), data=np.zeros(2, np.float64)),
                 TensorDef("y", dtypes.FLOAT, (2,))]
    with pytest.raises(ModelFormatError, match="tensor 0 \\('x'\\).*float64.*held as float32"):
        write_model(_one_op_model(tensors=bad_dtype))
    bad_shape = [TensorDef("x", dtypes.FLOAT, (3,), data=np.zeros(2, np.float32)),
                 TensorDef("y", dtypes.FLOAT, (2,))]
    with pytest.raises(ModelFormatError, match="data has shape \\(2,\\) but the tensor declares"):
        write_model(_one_op_model(tensors=bad_shape))


def test_writer_rejects_use_before_definition_and_graph_cycles():
    t = [TensorDef("x", dtypes.FLOAT, (2,)), TensorDef("h", dtypes.FLOAT, (2,)),
         TensorDef("y", dtypes.FLOAT, (2,))]
    ops = [OperatorDef("Relu", [1], [2], name="late"), OperatorDef("Neg", [0], [1], name="early")]
    model = ModelDef([SubGraphDef("g", t, [0], [2], ops)])
    with pytest.raises(ModelFormatError, match="operator 0 \\('late'.*tensor 1 \\('h'\\) is used "
                                               "before it is defined.*by operator 1"):
        write_model(model)

    body = SubGraphDef("body", [TensorDef("a", dtypes.FLOAT, (2,))], [0], [0], [])
    body.operators.append(OperatorDef("If", [0], [], attrs={"then_branch": body}))
    with pytest.raises(ModelFormatError, match="contains itself through graph attributes"):
        write_model(_one_op_model({"body": body}))


def test_write_to_path_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "m.edgert"
    path.write_bytes(b"old contents")
    data = write_model(_one_op_model(), path)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.edgert"]


def test_read_model_argument_types():
    data = write_model(_one_op_model())
    with pytest.raises(ModelFormatError, match="path, bytes"):
        read_model(12)
    strided = memoryview(np.frombuffer(data * 2, np.uint8)[::2])
    with pytest.raises(ModelFormatError, match="contiguous"):
        read_model(strided)
    with pytest.raises(ModelFormatError, match="no such file"):
        read_model("/nonexistent/model.edgert")


def test_verify_false_skips_only_semantic_checks():
    t = [TensorDef("x", dtypes.FLOAT, (2,)), TensorDef("y", dtypes.FLOAT, (2,))]
    data = bytearray(write_model(ModelDef([SubGraphDef("g", t, [0], [1],
                                                       [OperatorDef("Neg", [0], [1])])])))
    op = fb.Model.GetRootAs(data, 0).Subgraphs(0).Operators(0)
    inputs = op._tab.Vector(op._tab.Offset(6))  # Operator.inputs, slot 1
    data[inputs:inputs + 4] = (1).to_bytes(4, "little")  # Neg reads its own output
    assert read_model(bytes(data), verify=False).main.operators[0].inputs == [1]
    with pytest.raises(ModelFormatError, match="used before it is defined"):
        read_model(bytes(data))


def test_all_zero_zero_points_are_left_out_and_read_back_as_zeros():
    """Symmetric per-channel weights carry no zero-point vector in the file (8 bytes a channel),
    and read back with explicit zeros; a non-zero vector is kept as written."""
    def model(zp):
        t = TensorDef("w", dtypes.INT8, (64, 1), data=np.ones((64, 1), np.int8),
                      quant=QuantParams(np.full(64, 0.5, np.float32), zp, 0))
        o = TensorDef("y", dtypes.INT8, (64, 1))
        sg = SubGraphDef("main", [t, o], [], [1], [OperatorDef("Identity", [0], [1], version=16)])
        return write_model(ModelDef([sg]))

    zero, nonzero = model(np.zeros(64, np.int64)), model(np.arange(64, dtype=np.int64) - 32)
    assert len(zero) < len(nonzero)
    for blob, want in ((zero, np.zeros(64)), (nonzero, np.arange(64) - 32)):
        q = read_model(blob).main.tensors[0].quant
        np.testing.assert_array_equal(q.zero_point, want)
        assert q.zero_point.dtype == np.int64 and q.zero_point.size == q.scale.size
