"""Bounds-checked, read-only FlatBuffer access: layer 1 (structure) of reading a `.edgert` file.

Python's ``flatbuffers`` package has no verifier, and the accessors ``flatc`` generates read
whatever the offsets say (garbage, ``struct.error``, ``IndexError``...). The reader therefore
never calls them; it walks the tables it knows through this module, which checks every byte it
touches before it reads it, as the C++ ``flatbuffers::Verifier`` (TFLite's first line of defence)
does.

FlatBuffers layout, all little-endian:

* byte 0: ``uoffset`` (u32) from 0 to the root table; bytes 4..8: the file identifier.
* A table at position ``T`` starts with an ``soffset`` (i32); its vtable lies at ``T - soffset``.
  A vtable is ``[u16 vtable_size][u16 table_size][u16 field_offset] * n``. A field whose slot is
  past the end of the vtable, or whose field offset is 0, is absent: the reader uses the default.
* A reference field (table, vector, string) holds a u32 offset relative to its own position.
* A vector is ``[u32 count][elements]``; a vector of tables or strings holds u32 offsets, each
  relative to its own element. A string is a byte vector followed by a 0 terminator.

Checks made here (every failure is a :class:`~edgert.errors.ModelFormatError` that names the field
path, e.g. ``subgraphs[0].tensors[3].shape``, and the byte offset):

* every table, vtable, vector, string and scalar lies inside the region, written overflow-safe
  (``size > limit or off > limit - size``); Python ints cannot overflow, but the form keeps the
  intent obvious and matches the C++ verifier;
* tables, vectors and strings start at 4-byte boundaries, vector elements at their own size;
* vtables are sane (size even and >= 4, table size >= 4, every field inside the table);
* strings are 0-terminated and (where text is expected) valid UTF-8;
* a *decoding budget*: tables and vectors can be shared by offset, so a hostile file could make a
  small FlatBuffer decode into a huge object graph (the C++ verifier caps the table count for the
  same reason). Every table, vector and string charges its size to the budget, which is a small
  multiple of the region size; an unshared (normal) file charges at most the region size.

The region is the FlatBuffer part of the file only: the reader first finds where the constant
blobs start and then limits all structure to the bytes before them, so a vector "length" can
never drive an allocation proportional to the weights, and verification never touches a weight
page.
"""

from __future__ import annotations

import struct

from edgert.errors import ModelFormatError

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
# Scalar and vector element formats the reader uses, by struct code (little-endian).
_SCALARS = {code: struct.Struct("<" + code) for code in "bBhHiIqQfd?"}

_PREFIX = "malformed .edgert file"


def fail(where: str, message: str) -> ModelFormatError:
    """A structural error for ``where`` (a field path), ready to raise."""
    return ModelFormatError(f"{_PREFIX}: {where}: {message}")


class Region:
    """The bytes ``buf[0:limit]`` that hold the FlatBuffer, with checked reads.

    Args:
        buf: any object with the buffer protocol that ``struct.unpack_from`` accepts (``bytes``,
            ``mmap.mmap``, a 1-D byte ``memoryview``); slicing it must give bytes or a view.
        limit: structure must lie in ``[0, limit)``; ``limit <= len(buf)``.
        budget_factor: how many times the region size may be decoded (see module docstring).
    """

    def __init__(self, buf, limit: int, budget_factor: int = 4):
        self.buf = buf
        self.limit = limit
        self._factor = budget_factor
        self._budget = budget_factor * limit + 4096
        # How error messages name the region (the reader says where the constant data starts).
        self.describe = f"the FlatBuffer (bytes 0..{limit})"

    def check(self, off: int, size: int, where: str, what: str) -> None:
        """Raise unless ``size`` bytes at ``off`` lie inside the region."""
        if off < 0 or size < 0 or size > self.limit or off > self.limit - size:
            raise fail(
                where,
                f"{what} of {size} bytes at byte offset {off} lies outside {self.describe}",
            )

    def charge(self, nbytes: int, where: str) -> None:
        self._budget -= nbytes
        if self._budget < 0:
            raise fail(
                where,
                "the FlatBuffer references the same data too many times (decoding exceeded "
                f"{self._factor} x its {self.limit} bytes); the file is corrupt or hostile",
            )

    def target(self, ref_pos: int, where: str) -> int:
        """Target of the u32 reference at ``ref_pos``, which the caller has range-checked."""
        target = ref_pos + _U32.unpack_from(self.buf, ref_pos)[0]
        if target >= self.limit:
            raise fail(
                where,
                f"reference at byte offset {ref_pos} points to byte {target}, outside "
                f"{self.describe}",
            )
        return target

    def root(self) -> Table:
        """The root table (the u32 at byte 0 points to it)."""
        self.check(0, 4, "root", "root offset")
        return Table(self, self.target(0, "root"), "model")

    def vector_header(self, pos: int, elem_size: int, where: str) -> tuple[int, int]:
        """Check the vector at ``pos``; return ``(count, position of element 0)``."""
        if pos % 4:
            raise fail(where, f"vector at byte offset {pos} is not 4-byte aligned")
        self.check(pos, 4, where, "vector length")
        count = _U32.unpack_from(self.buf, pos)[0]
        start = pos + 4
        if elem_size > 4 and start % elem_size:
            raise fail(where, f"{elem_size}-byte elements at byte offset {start} are misaligned")
        # count * elem_size is compared with the bytes left, never used before this check.
        self.check(start, count * elem_size, where, f"vector of {count} elements")
        self.charge(4 + count * elem_size, where)
        return count, start

    def string_at(self, pos: int, where: str) -> bytes:
        """The raw bytes of the string at ``pos`` (terminator checked, not included)."""
        count, start = self.vector_header(pos, 1, where)
        self.check(start + count, 1, where, "string terminator")
        if self.buf[start + count] != 0:
            raise fail(where, f"string at byte offset {pos} is not 0-terminated")
        return bytes(self.buf[start : start + count])

    def references(self, pos: int, where: str) -> list[tuple[int, str]]:
        """Targets of the vector of u32 references at ``pos``, each with its field path."""
        count, start = self.vector_header(pos, 4, where)
        rel = struct.unpack_from(f"<{count}I", self.buf, start)
        out = []
        for i, r in enumerate(rel):
            target = start + 4 * i + r
            if target >= self.limit:
                raise fail(
                    f"{where}[{i}]",
                    f"reference at byte offset {start + 4 * i} points to byte {target}, outside "
                    f"{self.describe}",
                )
            out.append((target, f"{where}[{i}]"))
        return out


def decode_text(raw: bytes, where: str) -> str:
    """UTF-8 text, or a ModelFormatError naming ``where``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(where, f"string is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


class Table:
    """One verified table. Field accessors take the field's slot number (declaration order in
    the schema) and return the schema default when the field is absent.

    The constructor range-checks the whole vtable and the whole table, so reading a vtable entry
    or a field that lies inside the table needs no further check.
    """

    __slots__ = ("region", "pos", "where", "_vt", "_vt_size", "_size")

    def __init__(self, region: Region, pos: int, where: str):
        self.region = region
        self.pos = pos
        self.where = where
        if pos % 4:
            raise fail(where, f"table at byte offset {pos} is not 4-byte aligned")
        region.check(pos, 4, where, "table offset")
        vt = pos - _I32.unpack_from(region.buf, pos)[0]
        if vt % 2:
            raise fail(where, f"vtable of the table at byte offset {pos} is misaligned ({vt})")
        region.check(vt, 4, where, "vtable header")
        self._vt = vt
        self._vt_size, self._size = struct.unpack_from("<HH", region.buf, vt)
        if self._vt_size < 4 or self._vt_size % 2:
            raise fail(where, f"vtable at byte offset {vt} has a bad size {self._vt_size}")
        region.check(vt, self._vt_size, where, "vtable")
        if self._size < 4:
            raise fail(where, f"table at byte offset {pos} has a bad size {self._size}")
        region.check(pos, self._size, where, "table")
        region.charge(self._size, where)

    def _field(self, slot: int, size: int, name: str) -> int | None:
        """Absolute position of a field of ``size`` bytes, or None when absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self._vt_size:
            return None
        rel = _U16.unpack_from(self.region.buf, self._vt + entry)[0]
        if rel == 0:
            return None
        if rel < 4 or rel > self._size - size:
            raise fail(
                f"{self.where}.{name}",
                f"field offset {rel} lies outside its table (byte offset {self.pos}, "
                f"{self._size} bytes)",
            )
        return self.pos + rel

    def scalar(self, slot: int, code: str, default, name: str):
        """A scalar field; ``code`` is a struct code such as ``'q'`` (read little-endian)."""
        fmt = _SCALARS[code]
        pos = self._field(slot, fmt.size, name)
        if pos is None:
            return default
        return fmt.unpack_from(self.region.buf, pos)[0]

    def _ref(self, slot: int, name: str) -> int | None:
        pos = self._field(slot, 4, name)
        if pos is None:
            return None
        return self.region.target(pos, f"{self.where}.{name}")

    def table(self, slot: int, name: str) -> Table | None:
        target = self._ref(slot, name)
        return None if target is None else Table(self.region, target, f"{self.where}.{name}")

    def raw_bytes(self, slot: int, name: str) -> bytes | None:
        """A ``[ubyte]`` vector as bytes (None when absent)."""
        target = self._ref(slot, name)
        if target is None:
            return None
        count, start = self.region.vector_header(target, 1, f"{self.where}.{name}")
        return bytes(self.region.buf[start : start + count])

    def string(self, slot: int, name: str, default: str = "") -> str:
        target = self._ref(slot, name)
        if target is None:
            return default
        where = f"{self.where}.{name}"
        return decode_text(self.region.string_at(target, where), where)

    def numbers(self, slot: int, code: str, name: str) -> list | None:
        """A numeric vector as a list of Python numbers (None when absent).

        ``code`` is the element's struct code (``'i'``, ``'q'``, ``'f'``), read little-endian.
        """
        target = self._ref(slot, name)
        if target is None:
            return None
        size = _SCALARS[code].size
        count, start = self.region.vector_header(target, size, f"{self.where}.{name}")
        return list(struct.unpack_from(f"<{count}{code}", self.region.buf, start))

    def tables(self, slot: int, name: str) -> list[Table]:
        """A vector of tables (empty when absent)."""
        target = self._ref(slot, name)
        if target is None:
            return []
        refs = self.region.references(target, f"{self.where}.{name}")
        return [Table(self.region, pos, where) for pos, where in refs]

    def raw_strings(self, slot: int, name: str) -> list[bytes] | None:
        """A vector of strings as raw bytes (None when absent)."""
        target = self._ref(slot, name)
        if target is None:
            return None
        refs = self.region.references(target, f"{self.where}.{name}")
        return [self.region.string_at(pos, where) for pos, where in refs]

    def strings(self, slot: int, name: str) -> list[str] | None:
        """A vector of UTF-8 strings (None when absent)."""
        raw = self.raw_strings(slot, name)
        if raw is None:
            return None
        return [decode_text(s, f"{self.where}.{name}[{i}]") for i, s in enumerate(raw)]
