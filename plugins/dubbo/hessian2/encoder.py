"""Hessian 2.0 encoder that writes the same bytes as hessian-lite's ``Hessian2Output``.

One :class:`Hessian2Encoder` is one Hessian stream, as one ``Hessian2Output`` is for a
Dubbo body: Dubbo's ``Hessian2ObjectOutput`` creates a fresh ``Hessian2Output`` per
message and calls ``writeObject`` once per value without resetting it, so references,
class definitions and type names written by one :meth:`Hessian2Encoder.write_object`
call are reused by the next ones. A new message needs a new encoder.

Byte-for-byte conformance needs one more thing than the grammar: hessian-lite splits a
large ``byte[]`` into chunks whose size depends on how full its 8 KiB output buffer is,
and that buffer is flushed by size checks sprinkled through every write method. The
encoder therefore tracks where Java's buffer would stand (``_buffer_fill``) and applies
the same checks, in the same places, as ``Hessian2Output`` does. Nothing else depends
on that simulation; the checks only move an offset.
"""

from __future__ import annotations

import math
import re
import struct
from datetime import UTC, datetime
from decimal import Decimal

from .errors import HessianEncodeError
from .values import BIG_DECIMAL_CLASS, JavaEnum, JavaLong, JavaObject, TypedList, TypedMap

__all__ = ["Hessian2Encoder", "encode"]

# hessian-lite's Hessian2Output.SIZE: the buffer whose flushes decide binary chunk sizes.
_JAVA_BUFFER_SIZE = 8 * 1024
_STRING_CHUNK_UNITS = 0x8000

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")
_CANONICAL_NAN = struct.pack(">Q", 0x7FF8000000000000)

_PACK_INT = struct.Struct(">i").pack
_PACK_LONG = struct.Struct(">q").pack
_PACK_DOUBLE = struct.Struct(">d").pack


def _as_surrogate_pair(match: re.Match[str]) -> str:
    code = ord(match.group()) - 0x10000
    return chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF))


def _to_utf16_units(value: str) -> str:
    """Return ``value`` with every non-BMP character split into its surrogate pair.

    Java strings are UTF-16; Hessian counts string lengths in UTF-16 code units and
    hessian-lite writes each unit (surrogates included) as its own 1-3 byte sequence.
    After this split one Python character is one Java ``char``.
    """
    if value.isascii():
        return value
    return _NON_BMP.sub(_as_surrogate_pair, value)


def _java_double_to_int(value: float) -> int:
    """Java's ``(int) value``: truncates, saturates at the int range, NaN becomes 0."""
    if math.isnan(value):
        return 0
    if value >= _INT32_MAX:
        return _INT32_MAX
    if value <= _INT32_MIN:
        return _INT32_MIN
    return int(value)


# Containers inside containers, at most (the decoder's Limits.max_depth is 128 by default;
# Java itself has no bound, so ours is roomier).
MAX_DEPTH = 512


class Hessian2Encoder:
    """Write Python values as one Hessian 2.0 stream; see the module docstring."""

    def __init__(self) -> None:
        self._out = bytearray()
        # len(self._out) when Java's buffer was last flushed; the difference is its fill.
        self._flushed_at = 0
        self._ref_count = 0
        self._refs_by_id: dict[int, int] = {}
        self._enum_refs: dict[JavaEnum, int] = {}
        # Identity references are only sound while the objects live: keep them alive.
        self._referenced: list[object] = []
        self._class_refs: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._class_count = 0
        self._type_refs: dict[str, int] = {}
        self._depth = 0

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return bytes(self._out)

    def write_object(self, value: object) -> None:
        """Append one value; references and class definitions carry over to later calls."""
        try:
            self._write(value)
        except RecursionError:
            raise HessianEncodeError("value nests too deeply to encode") from None
        finally:
            self._depth = 0

    # -- Java buffer simulation -------------------------------------------------------

    @property
    def _buffer_fill(self) -> int:
        return len(self._out) - self._flushed_at

    def _flush(self) -> None:
        self._flushed_at = len(self._out)

    def _flush_unless_room(self, room: int, *, inclusive: bool) -> None:
        # hessian-lite checks both `SIZE < offset + n` and `SIZE <= offset + n`; which one
        # a method uses decides a flush at exactly one offset, so keep both.
        fill = self._buffer_fill + room
        if fill > _JAVA_BUFFER_SIZE or (inclusive and fill == _JAVA_BUFFER_SIZE):
            self._flush()

    # -- dispatch ------------------------------------------------------------------------

    def _write(self, value: object) -> None:
        if value is None:
            self._write_null()
        elif isinstance(value, bool):
            self._write_bool(value)
        elif isinstance(value, JavaLong):
            self._write_long(value)
        elif isinstance(value, int):
            if _INT32_MIN <= value <= _INT32_MAX:
                self._write_int(value)
            else:
                self._write_long(value)
        elif isinstance(value, float):
            self._write_double(value)
        elif isinstance(value, str):
            self._write_string(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self._write_binary(bytes(value))
        elif isinstance(value, datetime):
            self._write_date(value)
        elif isinstance(value, JavaEnum):
            self._write_enum(value)
        elif isinstance(value, (list, tuple, dict, JavaObject, TypedList, TypedMap)):
            self._write_container(value)
        elif isinstance(value, Decimal):
            self._write_big_decimal(value)
        else:
            raise HessianEncodeError(
                f"cannot encode a {type(value).__module__}.{type(value).__qualname__} "
                "as Hessian 2.0"
            )

    def _write_container(
        self,
        value: list[object]
        | tuple[object, ...]
        | dict[object, object]
        | JavaObject
        | TypedList
        | TypedMap,
    ) -> None:
        # An explicit bound: compiled by mypyc, recursion has no RecursionError to stop it,
        # and a value nested deep enough would overflow the C stack.
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise HessianEncodeError("value nests too deeply to encode")
        if isinstance(value, (list, tuple)):
            self._write_list(value, None)
        elif isinstance(value, dict):
            self._write_map(value, None, value)
        elif isinstance(value, JavaObject):
            self._write_java_object(value)
        elif isinstance(value, TypedList):
            self._write_list(value.items, value.type_name, value)
        else:
            self._write_map(value.entries, value.type_name, value)
        self._depth -= 1

    # -- scalars -------------------------------------------------------------------------

    def _write_null(self) -> None:
        self._flush_unless_room(16, inclusive=True)
        self._out.append(0x4E)

    def _write_bool(self, value: bool) -> None:
        self._flush_unless_room(16, inclusive=False)
        self._out.append(0x54 if value else 0x46)

    def _write_int(self, value: int) -> None:
        self._flush_unless_room(16, inclusive=True)
        out = self._out
        if -0x10 <= value <= 0x2F:
            out.append(0x90 + value)
        elif -0x800 <= value <= 0x7FF:
            out += bytes(((0xC8 + (value >> 8)), value & 0xFF))
        elif -0x40000 <= value <= 0x3FFFF:
            out += bytes((0xD4 + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
        else:
            out.append(0x49)
            out += _PACK_INT(value)

    def _write_long(self, value: int) -> None:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise HessianEncodeError(f"integer {value} does not fit a Java long")
        self._flush_unless_room(16, inclusive=True)
        out = self._out
        if -0x08 <= value <= 0x0F:
            out.append(0xE0 + value)
        elif -0x800 <= value <= 0x7FF:
            out += bytes((0xF8 + (value >> 8), value & 0xFF))
        elif -0x40000 <= value <= 0x3FFFF:
            out += bytes((0x3C + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
        elif _INT32_MIN <= value <= _INT32_MAX:
            out.append(0x59)
            out += _PACK_INT(value)
        else:
            out.append(0x4C)
            out += _PACK_LONG(value)

    def _write_double(self, value: float) -> None:
        self._flush_unless_room(16, inclusive=True)
        out = self._out
        as_int = _java_double_to_int(value)
        # Same order of tests as hessian-lite, including its quirks: -0.0 compares equal
        # to 0 and is sent as 0.0; the "mill" form 0x5f carries value*1000 as an int32
        # (not the spec's float32) and is used whenever 0.001*mills gives the value back.
        if as_int == value:
            if as_int == 0:
                out.append(0x5B)
                return
            if as_int == 1:
                out.append(0x5C)
                return
            if -0x80 <= as_int < 0x80:
                out += bytes((0x5D, as_int & 0xFF))
                return
            if -0x8000 <= as_int < 0x8000:
                out += bytes((0x5E, (as_int >> 8) & 0xFF, as_int & 0xFF))
                return
        mills = _java_double_to_int(value * 1000)
        if 0.001 * mills == value:
            out.append(0x5F)
            out += _PACK_INT(mills)
            return
        out.append(0x44)
        # Java's doubleToLongBits folds every NaN into one bit pattern.
        out += _CANONICAL_NAN if math.isnan(value) else _PACK_DOUBLE(value)

    def _write_date(self, value: datetime) -> None:
        if value.tzinfo is None or value.utcoffset() is None:
            raise HessianEncodeError(
                "a naive datetime has no instant; give it a timezone (java.util.Date is UTC)"
            )
        delta = value - _EPOCH
        # timedelta keeps microseconds non-negative, so // floors sub-millisecond parts.
        millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        self._flush_unless_room(32, inclusive=False)
        out = self._out
        if millis % 60_000 == 0 and _INT32_MIN <= millis // 60_000 <= _INT32_MAX:
            out.append(0x4B)
            out += _PACK_INT(millis // 60_000)
        else:
            out.append(0x4A)
            out += _PACK_LONG(millis)

    def _write_string(self, value: str) -> None:
        units = _to_utf16_units(value)
        self._flush_unless_room(16, inclusive=True)
        length = len(units)
        start = 0
        while length > _STRING_CHUNK_UNITS:
            chunk = _STRING_CHUNK_UNITS
            # A chunk must not end between the two halves of a surrogate pair.
            if 0xD800 <= ord(units[start + chunk - 1]) <= 0xDBFF:
                chunk -= 1
            self._flush_unless_room(16, inclusive=True)
            self._out += bytes((0x52, chunk >> 8, chunk & 0xFF))
            self._print_units(units[start : start + chunk])
            length -= chunk
            start += chunk
        self._flush_unless_room(16, inclusive=True)
        if length <= 0x1F:
            self._out.append(length)
        elif length <= 0x3FF:
            self._out += bytes((0x30 + (length >> 8), length & 0xFF))
        else:
            self._out += bytes((0x53, length >> 8, length & 0xFF))
        self._print_units(units[start:])

    def _print_units(self, units: str) -> None:
        encoded = units.encode("utf-8", "surrogatepass")
        # Java checks the buffer before each char and flushes when fewer than 16 bytes
        # are free; a char starts at every byte that is not a UTF-8 continuation byte.
        pos, end = 0, len(encoded)
        while pos < end:
            if self._buffer_fill + 16 >= _JAVA_BUFFER_SIZE:
                self._flush()
            stop = pos + (_JAVA_BUFFER_SIZE - 16 - self._buffer_fill)
            while stop < end and 0x80 <= encoded[stop] < 0xC0:
                stop += 1
            stop = min(stop, end)
            self._out += encoded[pos:stop]
            pos = stop

    def _write_binary(self, data: bytes) -> None:
        out = self._out
        offset, length = 0, len(data)
        # Chunk sizes follow hessian-lite's writeBytes: fill the rest of its buffer.
        while _JAVA_BUFFER_SIZE - self._buffer_fill - 3 < length:
            chunk = _JAVA_BUFFER_SIZE - self._buffer_fill - 3
            if chunk < 16:
                self._flush()
                chunk = min(_JAVA_BUFFER_SIZE - 3, length)
            out += bytes((0x41, chunk >> 8, chunk & 0xFF))
            out += data[offset : offset + chunk]
            offset += chunk
            length -= chunk
            self._flush()
        self._flush_unless_room(16, inclusive=False)
        if length <= 0x0F:
            out.append(0x20 + length)
        elif length <= 0x3FF:
            out += bytes((0x34 + (length >> 8), length & 0xFF))
        else:
            out += bytes((0x42, length >> 8, length & 0xFF))
        out += data[offset:]

    # -- references, types, class definitions --------------------------------------------

    def _add_ref(self, value: object) -> bool:
        """hessian-lite's addRef: write ``0x51`` and return True if already written."""
        if isinstance(value, JavaEnum):
            known = self._enum_refs.get(value)
        else:
            known = self._refs_by_id.get(id(value))
        if known is not None:
            self._flush_unless_room(16, inclusive=False)
            self._out.append(0x51)
            self._write_int(known)
            return True
        if isinstance(value, JavaEnum):
            self._enum_refs[value] = self._ref_count
        else:
            self._refs_by_id[id(value)] = self._ref_count
            self._referenced.append(value)
        self._ref_count += 1
        return False

    def _write_type(self, type_name: str) -> None:
        if not type_name:
            raise HessianEncodeError("a Java type name cannot be empty")
        self._flush_unless_room(32, inclusive=False)
        known = self._type_refs.get(type_name)
        if known is not None:
            self._write_int(known)
        else:
            self._type_refs[type_name] = len(self._type_refs)
            self._write_string(type_name)

    def _write_object_begin(self, class_name: str, field_names: tuple[str, ...]) -> None:
        """Write the class definition once, then the instance tag (``0x60+n`` or ``O``)."""
        known = self._class_refs.get(class_name)
        if known is None or known[1] != field_names:
            # A redefinition (same name, other fields) cannot come from Java, but a new
            # definition keeps the stream valid rather than mislabelling the fields.
            self._flush_unless_room(32, inclusive=False)
            self._out.append(0x43)
            self._write_string(class_name)
            known = (self._class_count, field_names)
            self._class_count += 1
            self._class_refs[class_name] = known
            self._write_int(len(field_names))
            for name in field_names:
                self._write_string(name)
        self._flush_unless_room(32, inclusive=False)
        index = known[0]
        if index <= 0x0F:
            self._out.append(0x60 + index)
        else:
            self._out.append(0x4F)
            self._write_int(index)

    # -- compound values -----------------------------------------------------------------

    def _write_list(
        self,
        items: list[object] | tuple[object, ...],
        type_name: str | None,
        identity: object = None,
    ) -> None:
        if self._add_ref(items if identity is None else identity):
            return
        self._flush_unless_room(32, inclusive=False)
        length = len(items)
        out = self._out
        if length <= 7:
            if type_name is not None:
                out.append(0x70 + length)
                self._write_type(type_name)
            else:
                out.append(0x78 + length)
        else:
            if type_name is not None:
                out.append(0x56)
                self._write_type(type_name)
            else:
                out.append(0x58)
            self._write_int(length)
        # Java primitive arrays write their elements with writeLong/writeDouble, so a
        # plain int in a "[long" list must still go out in a long form.
        if type_name == "[long":
            for item in items:
                if isinstance(item, int) and not isinstance(item, bool):
                    self._write_long(item)
                else:
                    self._write(item)
        elif type_name in ("[double", "[float"):
            for item in items:
                if isinstance(item, int) and not isinstance(item, bool):
                    self._write_double(float(item))
                else:
                    self._write(item)
        else:
            for item in items:
                self._write(item)

    def _write_map(
        self, entries: dict[object, object], type_name: str | None, identity: object
    ) -> None:
        if self._add_ref(identity):
            return
        self._flush_unless_room(32, inclusive=False)
        if type_name is not None:
            self._out.append(0x4D)
            self._write_type(type_name)
        else:
            self._out.append(0x48)
        for key, item in entries.items():
            self._write(key)
            self._write(item)
        self._flush_unless_room(32, inclusive=False)
        self._out.append(0x5A)

    def _write_java_object(self, value: JavaObject) -> None:
        if not value.class_name:
            raise HessianEncodeError("a Java class name cannot be empty")
        if self._add_ref(value):
            return
        self._write_object_begin(value.class_name, tuple(value.fields))
        for item in value.fields.values():
            self._write(item)

    def _write_enum(self, value: JavaEnum) -> None:
        if self._add_ref(value):
            return
        self._write_object_begin(value.class_name, ("name",))
        self._write_string(value.name)

    def _write_big_decimal(self, value: Decimal) -> None:
        if not value.is_finite():
            raise HessianEncodeError(f"java.math.BigDecimal has no form for {value}")
        if self._add_ref(value):
            return
        self._write_object_begin(BIG_DECIMAL_CLASS, ("value",))
        # BigDecimal.toString and str(Decimal) follow the same scientific-notation rule;
        # Java has no negative zero.
        self._write_string(str(value.copy_abs() if value.is_zero() else value))


def encode(*values: object) -> bytes:
    """Encode ``values`` as one Hessian stream (shared references and class definitions)."""
    encoder = Hessian2Encoder()
    for value in values:
        encoder.write_object(value)
    return encoder.getvalue()
