"""Hessian 2.0 decoder over a complete byte string, hardened against hostile input.

Every read checks what is left before it takes bytes, so truncated input raises
:class:`HessianDecodeError` (never ``IndexError``/``struct.error``). A declared length is
trusted only after it is compared with the bytes that remain (every element, char or
byte takes at least one byte), so a list that claims 2**31 elements in a 3-byte body
fails at once instead of allocating; nothing is ever preallocated from a declared size.
Nesting is bounded by :attr:`Limits.max_depth`, far below Python's recursion limit.

State (references, class definitions, type names) is shared by successive
:meth:`Hessian2Decoder.read_object` calls, as in a Dubbo body where the arguments are
written one after another into one Hessian stream.
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from .errors import HessianDecodeError
from .limits import DEFAULT_LIMITS as DEFAULT_LIMITS
from .limits import Limits as Limits
from .values import BIG_DECIMAL_CLASS, JavaEnum, JavaLong, JavaObject, TypedList, TypedMap

__all__ = ["DEFAULT_LIMITS", "Hessian2Decoder", "Limits", "decode_all"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))
# hessian-lite's parseUTF8Char reads at most three bytes per UTF-16 unit and rejects
# longer sequences; accepting them here would decode text Java cannot.
_FOUR_BYTE_LEAD = re.compile(rb"[\xf0-\xff]")
# Built with chr(): mypyc cannot compile a surrogate in a string literal.
_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")

_UNPACK_INT = struct.Struct(">i").unpack_from
_UNPACK_LONG = struct.Struct(">q").unpack_from
_UNPACK_DOUBLE = struct.Struct(">d").unpack_from

_STRING_TAGS: Final = frozenset([*range(0x00, 0x20), *range(0x30, 0x34), 0x52, 0x53])
_BINARY_TAGS: Final = frozenset([*range(0x20, 0x30), *range(0x34, 0x38), 0x41, 0x42])
_INT_TAGS: Final = frozenset([*range(0x80, 0xD8), 0x49])
_END = 0x5A


class _Pending:
    """Holds a reference slot for a value built only after its fields are read."""

    __slots__ = ()


_PENDING: Final = _Pending()


class Hessian2Decoder:
    """Read values one at a time from one Hessian 2.0 stream held in ``data``."""

    def __init__(self, data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._limits = limits
        self._refs: list[object] = []
        self._classes: list[tuple[str, tuple[str, ...]]] = []
        self._types: list[str] = []
        self._elements = 0
        self._depth = 0
        self._failure: HessianDecodeError | None = None

    @property
    def position(self) -> int:
        """Offset of the next unread byte."""
        return self._pos

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self._pos >= len(self._data)

    def read_object(self) -> object:
        """Decode the next value. After an error the decoder stays failed."""
        if self._failure is not None:
            raise HessianDecodeError(f"decoder already failed: {self._failure}")
        if self.at_end():
            raise HessianDecodeError(f"no value left at offset {self._pos}")
        try:
            return self._read()
        except HessianDecodeError as exc:
            self._failure = exc
            raise
        except RecursionError:
            self._failure = HessianDecodeError(
                "value nests deeper than Python's recursion limit; lower Limits.max_depth"
            )
            raise self._failure from None

    # -- raw reads -----------------------------------------------------------------------

    def _fail(self, message: str) -> HessianDecodeError:
        return HessianDecodeError(f"{message} (at offset {self._pos})")

    def _remaining(self) -> int:
        return len(self._data) - self._pos

    def _need(self, count: int, what: str) -> None:
        if count > len(self._data) - self._pos:
            raise self._fail(f"truncated {what}: needs {count} bytes, {self._remaining()} remain")

    def _byte(self, what: str) -> int:
        if self._pos >= len(self._data):
            raise self._fail(f"truncated {what}: input ended")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def _take(self, count: int, what: str) -> bytes:
        self._need(count, what)
        start = self._pos
        self._pos += count
        return self._data[start : self._pos]

    def _int32(self, what: str) -> int:
        self._need(4, what)
        (value,) = _UNPACK_INT(self._data, self._pos)
        self._pos += 4
        return int(value)

    def _int64(self, what: str) -> int:
        self._need(8, what)
        (value,) = _UNPACK_LONG(self._data, self._pos)
        self._pos += 8
        return int(value)

    def _count(self, added: int) -> None:
        self._elements += added
        if self._elements > self._limits.max_elements:
            raise self._fail(
                f"stream holds more than Limits.max_elements={self._limits.max_elements} elements"
            )

    # -- dispatch ------------------------------------------------------------------------

    def _read(self) -> object:
        tag = self._byte("value")
        while tag == 0x43:  # a class definition precedes the value that uses it
            self._read_class_definition()
            tag = self._byte("value after class definition")
        return self._read_tagged(tag)

    def _read_tagged(self, tag: int) -> object:
        if 0x80 <= tag <= 0xBF:
            return tag - 0x90
        if 0xC0 <= tag <= 0xCF:
            return ((tag - 0xC8) << 8) + self._byte("int")
        if 0xD0 <= tag <= 0xD7:
            high = tag - 0xD4
            return (high << 16) + int.from_bytes(self._take(2, "int"), "big")
        if tag < 0x20 or 0x30 <= tag <= 0x33 or tag in (0x52, 0x53):
            return self._read_string_body(tag)
        if 0xD8 <= tag <= 0xEF:
            return JavaLong(tag - 0xE0)
        if tag >= 0xF0:
            return JavaLong(((tag - 0xF8) << 8) + self._byte("long"))
        if 0x38 <= tag <= 0x3F:
            return JavaLong(((tag - 0x3C) << 16) + int.from_bytes(self._take(2, "long"), "big"))
        if 0x20 <= tag <= 0x2F or 0x34 <= tag <= 0x37 or tag in (0x41, 0x42):
            return self._read_binary_body(tag)
        if 0x60 <= tag <= 0x6F:
            return self._read_instance(tag - 0x60)
        if 0x70 <= tag <= 0x77:
            return self._read_list(self._read_type(), tag - 0x70)
        if 0x78 <= tag <= 0x7F:
            return self._read_list(None, tag - 0x78)
        match tag:
            case 0x4E:
                return None
            case 0x54:
                return True
            case 0x46:
                return False
            case 0x49:
                return self._int32("int")
            case 0x59:
                return JavaLong(self._int32("long"))
            case 0x4C:
                return JavaLong(self._int64("long"))
            case 0x5B:
                return 0.0
            case 0x5C:
                return 1.0
            case 0x5D:
                return float(int.from_bytes(self._take(1, "double"), "big", signed=True))
            case 0x5E:
                return float(int.from_bytes(self._take(2, "double"), "big", signed=True))
            case 0x5F:
                return 0.001 * self._int32("double")
            case 0x44:
                self._need(8, "double")
                (value,) = _UNPACK_DOUBLE(self._data, self._pos)
                self._pos += 8
                return float(value)
            case 0x4A:
                return self._date(self._int64("date"))
            case 0x4B:
                return self._date(self._int32("date") * 60_000)
            case 0x48:
                return self._read_map(None)
            case 0x4D:
                return self._read_map(self._read_type())
            case 0x55:
                return self._read_list(self._read_type(), None)
            case 0x56:
                type_name = self._read_type()
                return self._read_list(type_name, self._read_length("list"))
            case 0x57:
                return self._read_list(None, None)
            case 0x58:
                return self._read_list(None, self._read_length("list"))
            case 0x4F:
                return self._read_instance(self._read_int("class reference"))
            case 0x51:
                return self._read_ref()
            case 0x5A:  # _END; a bare name here would be a capture pattern
                raise self._fail("unexpected end marker 'Z' where a value was expected")
        raise HessianDecodeError(f"unknown Hessian 2.0 tag 0x{tag:02x} at offset {self._pos - 1}")

    def _read_int(self, what: str) -> int:
        tag = self._byte(what)
        if tag not in _INT_TAGS:
            raise self._fail(f"{what} must be an int, found tag 0x{tag:02x}")
        value = self._read_tagged(tag)
        assert isinstance(value, int)
        return value

    def _read_length(self, what: str) -> int:
        length = self._read_int(f"{what} length")
        if length < 0:
            raise self._fail(f"negative {what} length {length}")
        return length

    def _read_string(self, what: str) -> str:
        tag = self._byte(what)
        if tag not in _STRING_TAGS:
            raise self._fail(f"{what} must be a string, found tag 0x{tag:02x}")
        return self._read_string_body(tag)

    # -- scalars -------------------------------------------------------------------------

    def _date(self, millis: int) -> datetime:
        try:
            return _EPOCH + timedelta(milliseconds=millis)
        except OverflowError:
            raise self._fail(f"date {millis} ms after the epoch is out of range") from None

    def _read_string_body(self, tag: int) -> str:
        limit = self._limits.max_string_length
        parts: list[bytes] = []
        units = 0
        while True:
            if tag < 0x20:
                length, final = tag, True
            elif tag <= 0x33:
                length, final = ((tag - 0x30) << 8) + self._byte("string length"), True
            else:
                length = int.from_bytes(self._take(2, "string length"), "big")
                final = tag == 0x53
            units += length
            if units > limit:
                raise self._fail(f"string longer than Limits.max_string_length={limit}")
            parts.append(self._utf8_units(length))
            if final:
                break
            tag = self._byte("string chunk")
            if tag not in _STRING_TAGS:
                raise self._fail(f"string chunk expected, found tag 0x{tag:02x}")
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        if raw.isascii():
            return raw.decode("ascii")
        if _FOUR_BYTE_LEAD.search(raw):
            raise self._fail("string holds a 4-byte UTF-8 sequence; Hessian sends surrogate pairs")
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise self._fail(f"string is not valid UTF-8: {exc.reason}") from None
        if _SURROGATE.search(text):
            # Pairs written as two 3-byte sequences become one character; a lone
            # surrogate (legal in a Java String) stays as it is.
            text = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")
        return text

    def _utf8_units(self, units: int) -> bytes:
        """Take the bytes of ``units`` UTF-16 units (1-3 bytes each) without a Python loop.

        Each unit starts with one non-continuation byte, so the span is grown until it
        holds ``units`` such lead bytes, then past the last unit's continuation bytes.
        """
        if units == 0:
            return b""
        data, start = self._data, self._pos
        self._need(units, "string")
        stop = start + units
        leads = len(data[start:stop].translate(None, _CONTINUATION_BYTES))
        while leads < units:
            missing = units - leads
            if stop + missing > len(data):
                if _FOUR_BYTE_LEAD.search(data, start, stop):
                    raise self._fail(
                        "string holds a 4-byte UTF-8 sequence; Hessian sends surrogate pairs"
                    )
                raise self._fail(f"truncated string: {units} characters declared")
            added = data[stop : stop + missing]
            leads += len(added.translate(None, _CONTINUATION_BYTES))
            stop += missing
        # The last unit may continue past `stop`: finish it, by its lead byte's length.
        last = stop - 1
        while last > start and 0x80 <= data[last] < 0xC0:
            last -= 1
        lead = data[last]
        if 0xF0 <= lead <= 0xF7:
            raise self._fail("string holds a 4-byte UTF-8 sequence; Hessian sends surrogate pairs")
        if 0x80 <= lead < 0xC0 or lead > 0xF7:
            raise self._fail(
                f"string is not valid UTF-8: byte 0x{lead:02x} cannot start a character"
            )
        end = last + (1 if lead < 0x80 else 2 if lead < 0xE0 else 3)
        if end > len(data):
            raise self._fail(f"truncated string: {units} characters declared")
        stop = max(stop, end)
        self._pos = stop
        return data[start:stop]

    def _read_binary_body(self, tag: int) -> bytes:
        limit = self._limits.max_binary_length
        parts: list[bytes] = []
        total = 0
        while True:
            if tag <= 0x2F:
                length, final = tag - 0x20, True
            elif tag <= 0x37:
                length, final = ((tag - 0x34) << 8) + self._byte("binary length"), True
            else:
                length = int.from_bytes(self._take(2, "binary length"), "big")
                final = tag == 0x42
            total += length
            if total > limit:
                raise self._fail(f"binary longer than Limits.max_binary_length={limit}")
            parts.append(self._take(length, "binary"))
            if final:
                break
            tag = self._byte("binary chunk")
            if tag not in _BINARY_TAGS:
                raise self._fail(f"binary chunk expected, found tag 0x{tag:02x}")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- references, types, class definitions --------------------------------------------

    def _new_ref(self, value: object) -> int:
        if len(self._refs) >= self._limits.max_refs:
            raise self._fail(f"more than Limits.max_refs={self._limits.max_refs} references")
        self._refs.append(value)
        return len(self._refs) - 1

    def _read_ref(self) -> object:
        index = self._read_int("reference")
        if not 0 <= index < len(self._refs):
            raise self._fail(f"reference {index} to an undefined value ({len(self._refs)} known)")
        value = self._refs[index]
        if value is _PENDING:
            raise self._fail(f"reference {index} to a value still being decoded")
        return value

    def _read_type(self) -> str:
        tag = self._byte("type")
        if tag in _STRING_TAGS:
            type_name = self._read_string_body(tag)
            if len(self._types) >= self._limits.max_types:
                raise self._fail(f"more than Limits.max_types={self._limits.max_types} types")
            self._types.append(type_name)
            return type_name
        if tag in _INT_TAGS:
            index = self._read_tagged(tag)
            assert isinstance(index, int)
            if not 0 <= index < len(self._types):
                raise self._fail(f"type reference {index} undefined ({len(self._types)} known)")
            return self._types[index]
        raise self._fail(f"type must be a string or an int, found tag 0x{tag:02x}")

    def _read_class_definition(self) -> None:
        if len(self._classes) >= self._limits.max_class_defs:
            raise self._fail(
                f"more than Limits.max_class_defs={self._limits.max_class_defs} class definitions"
            )
        name = self._read_string("class name")
        count = self._read_length("class field count")
        if count > self._remaining():
            raise self._fail(
                f"class {name} declares {count} fields but only {self._remaining()} bytes remain"
            )
        self._count(count)
        fields = tuple(self._read_string("field name") for _ in range(count))
        self._classes.append((name, fields))

    # -- compound values -----------------------------------------------------------------

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise self._fail(f"nesting deeper than Limits.max_depth={self._limits.max_depth}")

    def _read_list(self, type_name: str | None, length: int | None) -> object:
        if length is not None:
            # Every element takes at least one byte: refuse a length the input cannot hold.
            if length > self._remaining():
                raise self._fail(
                    f"list declares {length} elements but only {self._remaining()} bytes remain"
                )
            self._count(length)
        items: list[object] = []
        result: object = items if type_name is None else TypedList(type_name, items)
        self._new_ref(result)
        self._enter()
        if length is not None:
            for _ in range(length):
                items.append(self._read())
        else:
            while self._peek_not_end("list"):
                self._count(1)
                items.append(self._read())
        self._depth -= 1
        return result

    def _peek_not_end(self, what: str) -> bool:
        if self._pos >= len(self._data):
            raise self._fail(f"truncated {what}: no end marker")
        if self._data[self._pos] == _END:
            self._pos += 1
            return False
        return True

    def _read_map(self, type_name: str | None) -> object:
        entries: dict[object, object] = {}
        result: object = entries if type_name is None else TypedMap(type_name, entries)
        self._new_ref(result)
        self._enter()
        while self._peek_not_end("map"):
            self._count(1)
            key = self._read()
            value = self._read()
            try:
                entries[key] = value
            except TypeError:
                raise self._fail(
                    f"map key of type {type(key).__name__} cannot be a Python dict key"
                ) from None
        self._depth -= 1
        return result

    def _read_instance(self, class_index: int) -> object:
        if not 0 <= class_index < len(self._classes):
            raise self._fail(
                f"object of undefined class definition {class_index} ({len(self._classes)} known)"
            )
        class_name, field_names = self._classes[class_index]
        self._enter()
        if field_names == ("value",) and class_name == BIG_DECIMAL_CLASS:
            result = self._read_big_decimal()
        elif field_names == ("name",):
            result = self._read_enum_or_object(class_name)
        else:
            fields: dict[str, object] = {}
            result = JavaObject(class_name, fields)
            self._new_ref(result)
            for name in field_names:
                fields[name] = self._read()
        self._depth -= 1
        return result

    def _read_big_decimal(self) -> object:
        slot = self._new_ref(_PENDING)
        text = self._read()
        if not isinstance(text, str):
            raise self._fail("java.math.BigDecimal value must be a string")
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise self._fail(f"java.math.BigDecimal value {text[:40]!r} is not a number") from None
        if not value.is_finite():
            raise self._fail(f"java.math.BigDecimal value {text[:40]!r} is not finite")
        self._refs[slot] = value
        return value

    def _read_enum_or_object(self, class_name: str) -> object:
        # On the wire an enum constant is an object whose only field is "name"; hessian-lite
        # tells them apart by loading the class, which we cannot. A one-field "name" object
        # with a string value is taken as an enum: re-encoding it gives the same bytes.
        slot = self._new_ref(_PENDING)
        name = self._read()
        result: object
        if isinstance(name, str):
            result = JavaEnum(class_name, name)
        else:
            result = JavaObject(class_name, {"name": name})
        self._refs[slot] = result
        return result


def decode_all(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[object]:
    """Decode every value in ``data`` (one stream, shared references)."""
    decoder = Hessian2Decoder(data, limits)
    values: list[object] = []
    while not decoder.at_end():
        values.append(decoder.read_object())
    return values
