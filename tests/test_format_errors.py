"""Malformed `.edgert` files: every one must raise ModelFormatError with a message saying what and
where, never another exception, a crash or a hang.

Malformed files are made by writing a valid model and patching bytes at positions found with the
flatc-generated accessors (the writer uses ForceDefaults, so every scalar field is present), or by
building a FlatBuffer directly with the generated builder functions.
"""

from __future__ import annotations

import random
import struct

import flatbuffers
import numpy as np
import pytest

from edgert import dtypes
from edgert.errors import ModelFormatError
from edgert.format import (
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

ANY_FORMAT_ERROR = r"malformed \.edgert file|not an \.edgert file|invalid \.edgert model"


def small_model() -> ModelDef:
    """x + w -> h; Relu(h) -> y (with a tensor attribute); If(cond) -> z with a body."""
    body = SubGraphDef("then", [TensorDef("b_in", dtypes.FLOAT, (2, 3)),
                                TensorDef("b_out", dtypes.FLOAT, (2, 3))],
                       [0], [1], [OperatorDef("Neg", [0], [1], version=13)])
    tensors = [
        TensorDef("x", dtypes.FLOAT, (2, 3)),                                          # 0
        TensorDef("w", dtypes.FLOAT, (2, 3), data=np.arange(6, dtype=np.float32).reshape(2, 3)),
        TensorDef("h", dtypes.FLOAT, (2, 3)),                                          # 2
        TensorDef("y", dtypes.FLOAT, (2, 3)),                                          # 3
        TensorDef("q", dtypes.INT8, (2, 3), data=np.ones((2, 3), np.int8),             # 4
                  quant=QuantParams(np.array([0.5, 0.25], np.float32), np.array([0, 1]), 0)),
        TensorDef("cond", dtypes.BOOL, ()),                                            # 5
        TensorDef("z", dtypes.FLOAT, (2, 3)),                                          # 6
        TensorDef("s", dtypes.STRING, (2,), data=np.array(["ab", "c"], dtype=object)),  # 7
    ]
    ops = [
        OperatorDef("Add", [0, 1], [2], name="add", version=14),
        OperatorDef("Relu", [2], [3], name="relu", version=14,
                    attrs={"t": np.array([7, 8], np.int64)}),
        OperatorDef("If", [5], [6], name="if", version=16, attrs={"then_branch": body}),
    ]
    return ModelDef([SubGraphDef("main", tensors, [0, 5], [3, 6], ops)])


DATA = write_model(small_model())


class Patch:
    """A writable copy of DATA plus positions of fields, found with the generated accessors."""

    def __init__(self, data: bytes = DATA):
        self.data = bytearray(data)
        self.root = fb.Model.GetRootAs(self.data, 0)
        self.main = self.root.Subgraphs(0)

    @staticmethod
    def field(obj, slot: int) -> int:
        rel = obj._tab.Offset(4 + 2 * slot)
        assert rel, "field absent"
        return obj._tab.Pos + rel

    @staticmethod
    def element(obj, slot: int, k: int = 0, size: int = 4) -> int:
        """Position of element ``k`` of a vector field."""
        return obj._tab.Vector(obj._tab.Offset(4 + 2 * slot)) + k * size

    def put(self, pos: int, fmt: str, value) -> bytes:
        struct.pack_into(fmt, self.data, pos, value)
        return bytes(self.data)

    def tensor(self, i: int):
        return self.main.Tensors(i)

    def op(self, i: int):
        return self.main.Operators(i)


def _raises(data, match: str, verify: bool = True) -> None:
    with pytest.raises(ModelFormatError, match=match):
        read_model(data, verify=verify)


def test_small_model_is_valid():
    model = read_model(DATA)
    assert [op.op_type for op in model.main.operators] == ["Add", "Relu", "If"]


# ---------------------------------------------------------------------------------------------
# Header


def test_empty_file(tmp_path):
    path = tmp_path / "empty.edgert"
    path.write_bytes(b"")
    _raises(path, "empty.edgert: the file is empty")
    _raises(b"", "0 bytes is too short")


def test_wrong_identifier():
    data = DATA[:4] + b"ABCD" + DATA[8:]
    _raises(data, r"expected the file identifier b'EDGR' at bytes 4\.\.8, found b'ABCD'")
    _raises(DATA[:4] + b"TFL3" + DATA[8:], "looks like a TensorFlow Lite model")


def test_future_version():
    p = Patch()
    data = p.put(p.field(p.root, 0), "<I", SCHEMA_VERSION + 1)
    _raises(data, f"format version {SCHEMA_VERSION + 1}, newer .*upgrade edgert")
    _raises(p.put(p.field(p.root, 0), "<I", 0), "bad format version 0")


def test_root_offset_out_of_range():
    p = Patch()
    _raises(p.put(0, "<I", 0xFFFFFFF0), r"root: reference at byte offset 0 points to byte")


def test_vtable_outside_the_buffer():
    p = Patch()
    _raises(p.put(p.root._tab.Pos, "<i", -(2**31)), "model: .*vtable|model: u16")


# ---------------------------------------------------------------------------------------------
# Truncation, random bytes, bit flips


def test_every_truncation_is_rejected():
    for n in range(len(DATA)):
        with pytest.raises(ModelFormatError, match=ANY_FORMAT_ERROR):
            read_model(DATA[:n])


def test_truncated_file_on_disk(tmp_path):
    path = tmp_path / "cut.edgert"
    path.write_bytes(DATA[: len(DATA) - 10])
    _raises(path, "cut.edgert: malformed .edgert file: .*extends past the end of the file")


@pytest.mark.parametrize("seed", range(100))
def test_random_bytes(seed):
    rng = random.Random(seed)
    junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 600)))
    _raises(junk, ANY_FORMAT_ERROR)
    # With the right identifier, the structural checks have to do the work.
    framed = bytearray(junk.ljust(8, b"\0"))
    framed[4:8] = b"EDGR"
    framed[0:4] = struct.pack("<I", rng.randrange(0, max(len(framed), 8)))
    _raises(bytes(framed), ANY_FORMAT_ERROR)


def _read_or_error(data: bytes, verify: bool):
    """Either a model or a ModelFormatError; anything else fails the test."""
    try:
        return read_model(data, verify=verify)
    except ModelFormatError as exc:
        assert str(exc), "empty error message"
        return exc


@pytest.mark.parametrize("verify", [True, False])
def test_bit_flips(verify):
    rng = random.Random(1234)
    errors = 0
    for _ in range(400):
        data = bytearray(DATA)
        for _ in range(rng.randint(1, 3)):
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        errors += isinstance(_read_or_error(bytes(data), verify), ModelFormatError)
    assert errors > 50  # the flips do hit structure; not everything parses


@pytest.mark.parametrize("verify", [True, False])
def test_extreme_words(verify):
    """Overwrite aligned 32-bit words (offsets, lengths, indices) with boundary values."""
    rng = random.Random(99)
    values = [0, 1, 3, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 4096, len(DATA)]
    for _ in range(600):
        data = bytearray(DATA)
        pos = rng.randrange(0, len(data) - 4) & ~3
        struct.pack_into("<I", data, pos, rng.choice(values))
        _read_or_error(bytes(data), verify)


# ---------------------------------------------------------------------------------------------
# Buffers


def test_buffer_index_out_of_range():
    p = Patch()
    _raises(p.put(p.field(p.tensor(1), 4), "<I", 99),
            r"subgraph 0 \('main'\), tensor 1 \('w'\): buffer index 99 out of range "
            r"\(the file has 4 buffers\)")


def test_buffer_beyond_the_file():
    p = Patch()
    buf = p.root.Buffers(p.tensor(1).Buffer())
    _raises(p.put(p.field(buf, 1), "<Q", 2**40),
            r"model\.buffers\[1\]: blob of 1099511627776 bytes at byte offset \d+ extends past "
            r"the end of the file")
    p = Patch()
    buf = p.root.Buffers(p.tensor(1).Buffer())
    _raises(p.put(p.field(buf, 0), "<Q", 2**64 - 64), "extends past the end of the file")


def test_misaligned_buffer():
    p = Patch()
    buf = p.root.Buffers(p.tensor(1).Buffer())
    _raises(p.put(p.field(buf, 0), "<Q", buf.Offset() - 56),
            r"model\.buffers\[1\]: blob at byte offset \d+ is not aligned to 64 bytes")


def test_buffer_zero_must_be_empty():
    p = Patch()
    p.put(p.field(p.root.Buffers(0), 0), "<Q", 64)
    _raises(p.put(p.field(p.root.Buffers(0), 1), "<Q", 8), "buffer 0 must be the empty buffer")


def test_blob_overlapping_the_flatbuffer():
    p = Patch()
    buf = p.root.Buffers(p.tensor(1).Buffer())
    _raises(p.put(p.field(buf, 0), "<Q", 64), "outside the FlatBuffer .*constant data starts")


def test_shape_needs_more_bytes_than_the_buffer_holds():
    p = Patch()
    data = p.put(p.element(p.tensor(1), 2, 1, 8), "<q", 4)
    _raises(data, r"tensor 1 \('w'\): shape \(2, 4\) of float32 needs 32 bytes but buffer 1 "
                  r"\(byte offset \d+\) holds 24")


def test_huge_dims_overflow():
    p = Patch()
    p.put(p.element(p.tensor(1), 2, 0, 8), "<q", 2**62)
    data = p.put(p.element(p.tensor(1), 2, 1, 8), "<q", 2**62)
    _raises(data, r"tensor 1 \('w'\): shape \(4611686018427387904, 4611686018427387904\) "
                  r"overflows a 64-bit size")
    p = Patch()  # a zero-size constant whose other dims overflow: NumPy would refuse it too
    p.put(p.element(p.tensor(1), 2, 0, 8), "<q", 0)
    data = p.put(p.element(p.tensor(1), 2, 1, 8), "<q", 2**62)
    _raises(data, r"tensor 1 \('w'\): shape \(0, 4611686018427387904\) overflows a 64-bit size")
    p = Patch()
    p.put(p.element(p.tensor(2), 2, 0, 8), "<q", 2**62)
    data = p.put(p.element(p.tensor(2), 2, 1, 8), "<q", 2**62)
    _raises(data, r"tensor 2 \('h'\): shape .* needs \d+ bytes, which overflows a 64-bit size")


def test_bad_dimension():
    p = Patch()
    _raises(p.put(p.element(p.tensor(2), 2, 0, 8), "<q", -5),
            r"tensor 2 \('h'\): bad dimension -5 in shape \(-5, 3\)")


def test_huge_vector_length():
    p = Patch()
    length_pos = p.element(p.tensor(2), 2) - 4
    _raises(p.put(length_pos, "<I", 2**31),
            r"subgraphs\[0\]\.tensors\[2\]\.shape: vector of 2147483648 elements of "
            r"17179869184 bytes at byte offset \d+ lies outside")


def test_unknown_dtype():
    p = Patch()
    _raises(p.put(p.field(p.tensor(2), 1), "<i", 99), r"tensor 2 \('h'\): unknown dtype code 99")
    p = Patch()
    _raises(p.put(p.field(p.tensor(1), 1), "<i", 99), r"tensor 1 \('w'\): unknown dtype code 99")


def test_string_count_mismatch():
    p = Patch()
    _raises(p.put(p.element(p.tensor(7), 2, 0, 8), "<q", 3),
            r"tensor 7 \('s'\): shape \(3,\) needs 3 strings but string_data has 2")


def test_name_not_utf8():
    p = Patch()
    name = p.tensor(3)._tab.Vector(p.tensor(3)._tab.Offset(4))  # string bytes of "y"
    _raises(p.put(name, "<B", 0xFF),
            r"subgraphs\[0\]\.tensors\[3\]\.name: string is not valid UTF-8")


# ---------------------------------------------------------------------------------------------
# Operators and graph semantics


def test_opcode_index_out_of_range():
    p = Patch()
    _raises(p.put(p.field(p.op(1), 0), "<I", 9),
            r"operator 1 \('relu'\): operator code index 9 out of range")


def test_operator_tensor_index_out_of_range():
    p = Patch()
    _raises(p.put(p.element(p.op(0), 1, 0), "<i", 50),
            r"operator 0 \('add', Add\), input 0: tensor index 50 out of range")
    p = Patch()
    _raises(p.put(p.element(p.op(0), 2, 0), "<i", -2),
            r"operator 0 \('add', Add\), output 0: tensor index -2 out of range")


def test_subgraph_io_index_out_of_range():
    p = Patch()
    _raises(p.put(p.element(p.main, 3, 0), "<i", -1),
            r"subgraph 0 \('main'\), output: tensor index -1 out of range")


def test_use_before_definition():
    p = Patch()
    _raises(p.put(p.element(p.op(0), 1, 0), "<i", 3),
            r"operator 0 \('add', Add\), input 0: tensor 3 \('y'\) is used before it is defined: "
            r"it is produced later, by operator 1")
    p = Patch()
    _raises(p.put(p.element(p.op(1), 1, 0), "<i", 6),
            r"operator 1 \('relu', Relu\), input 0: tensor 6 \('z'\) is used before it is "
            r"defined: it is produced later, by operator 2")
    p = Patch()
    p.put(p.element(p.op(1), 2, 0), "<i", -1)  # nobody produces y any more
    _raises(p.put(p.element(p.op(0), 1, 0), "<i", 3),
            r"tensor 3 \('y'\) is used before it is defined: it is not a subgraph input, a "
            r"constant, an outer input, or the output of an earlier operator")


def test_tensor_produced_twice():
    p = Patch()
    _raises(p.put(p.element(p.op(1), 2, 0), "<i", 2),
            r"operator 1 \('relu', Relu\), output 0: tensor 2 \('h'\) is already produced by "
            r"operator 0")
    p = Patch()
    _raises(p.put(p.element(p.op(0), 2, 0), "<i", 0),
            r"tensor 0 \('x'\) is a subgraph input and cannot be produced")
    p = Patch()
    _raises(p.put(p.element(p.op(0), 2, 0), "<i", 1),
            r"tensor 1 \('w'\) is a constant and cannot be produced")


def test_output_never_produced():
    p = Patch()
    p.put(p.element(p.op(1), 2, 0), "<i", -1)  # Relu's output omitted: y is never produced
    _raises(bytes(p.data), r"subgraph 0 \('main'\), output 0: tensor 3 \('y'\) is never produced")


def test_bad_quantization():
    def quant():
        p = Patch()
        return p, p.tensor(4).Quantization()

    p, q = quant()
    _raises(p.put(p.element(q, 0, 0), "<f", -1.0),
            r"tensor 4 \('q'\), quantization: scale\[0\] = -1\.0; scales must be finite and > 0")
    p, q = quant()
    _raises(p.put(p.element(q, 0, 1), "<f", float("nan")), r"scale\[1\] = nan")
    p, q = quant()
    _raises(p.put(p.element(q, 0, 0), "<f", 0.0), r"scale\[0\] = 0\.0")
    p, q = quant()
    _raises(p.put(p.field(q, 2), "<i", 7), "quantized dimension 7 is out of range for shape")
    p, q = quant()
    _raises(p.put(p.field(q, 2), "<i", 1), "2 per-axis scales for dimension 1 of size 3")
    p, q = quant()
    _raises(p.put(p.element(q, 1) - 4, "<I", 1), "1 zero points for 2 scales")
    p, q = quant()
    _raises(p.put(p.element(q, 1, 1, 8), "<q", 300),
            r"zero_point\[1\] = 300 is outside the range of int8")


# ---------------------------------------------------------------------------------------------
# Attributes and signatures


def _attribute(p: Patch, op: int, k: int = 0):
    return p.op(op).Attributes(k)


def test_attribute_tensor_index():
    p = Patch()
    _raises(p.put(p.element(_attribute(p, 1), 8, 0), "<i", 99),
            r"operator 1 \('relu', Relu\), attribute 't': tensor index 99 out of range")
    p = Patch()
    _raises(p.put(p.element(_attribute(p, 1), 8, 0), "<i", 0),
            r"attribute 't': tensor 0 \('x'\) has no constant data")


def test_attribute_subgraph_index_and_cycles():
    p = Patch()
    _raises(p.put(p.element(_attribute(p, 2), 9, 0), "<i", 9),
            r"operator 2 \('if', If\), attribute 'then_branch': subgraph index 9 out of range")
    p = Patch()
    _raises(p.put(p.element(_attribute(p, 2), 9, 0), "<i", 0),
            r"subgraph 0 \('main'\) contains itself through graph attributes \(cycle 0 -> 0\)")


def test_unknown_attribute_type():
    p = Patch()
    _raises(p.put(p.field(_attribute(p, 1), 1), "<b", 42), "attribute 't' has unknown type 42")


def test_signature_index_out_of_range():
    p = Patch()
    tensor_map = p.root.SignatureDefs(0).Inputs(0)
    _raises(p.put(p.field(tensor_map, 1), "<I", 1000),
            r"signature_defs\[0\]\.inputs\[0\]: tensor index 1000 out of range")


# ---------------------------------------------------------------------------------------------
# A FlatBuffer built directly: shared tables that would decode into a huge object graph


def test_shared_tables_cannot_blow_up_decoding():
    b = flatbuffers.Builder(0)
    tensors = []
    for k in range(200):
        name = b.CreateString(f"t{k}")
        fb.TensorStart(b)
        fb.TensorAddName(b, name)
        fb.TensorAddDtype(b, dtypes.FLOAT)
        tensors.append(fb.TensorEnd(b))
    b.StartVector(4, len(tensors), 4)
    for t in reversed(tensors):
        b.PrependUOffsetTRelative(t)
    tensors_vec = b.EndVector()
    fb.SubGraphStart(b)
    fb.SubGraphAddTensors(b, tensors_vec)
    sg = fb.SubGraphEnd(b)
    b.StartVector(4, 2000, 4)
    for _ in range(2000):  # the same subgraph 2,000 times: ~20 MB to decode from ~20 kB
        b.PrependUOffsetTRelative(sg)
    subgraphs = b.EndVector()
    fb.ModelStart(b)
    fb.ModelAddVersion(b, SCHEMA_VERSION)
    fb.ModelAddSubgraphs(b, subgraphs)
    b.Finish(fb.ModelEnd(b), file_identifier=b"EDGR")
    _raises(bytes(b.Output()), "references the same data too many times")
