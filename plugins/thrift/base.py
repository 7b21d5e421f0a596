"""The Base struct at field 255 of a call's arguments, sans-IO: read, filled in, rewritten.

Many Thrift IDLs (CloudWeGo Kitex's ``base.thrift``, Xiaomi's and ByteDance's Go services
built on the same convention) end every request with ``255: base.Base Base``:

    struct Base { 1: string LogID, 2: string Caller, 3: string Addr, 4: string Client,
                  5: optional TrafficEnv TrafficEnv, 6: optional map<string, string> Extra }

The listener fills in what the calling app left empty, as Kitex's and soa-agent's
sidecars do: the app's own values always win. LogID gets the call's trace id, Caller the
calling app's name, Addr the app's address, and Extra gains ``timeout_ms`` and
``deadline_ms`` (absolute, Unix ms) unless the app set them. A call without a Base gets
one. Every other field (Client, TrafficEnv, unknown ones) passes through byte for byte.

Only the argument struct's top level is walked (every value skipped by its type id, as
the codec does for buffered messages) and only the Base field is re-encoded; the rest of
the body is copied. In compact, a rewritten or added Base is written with the long field
header (explicit id 255), so the next field's delta, relative to 255, still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import RemoteProtocolError
from plugins.thrift.codec import (
    _I32,
    Message,
    Proto,
    _need,
    _read_varint,
    _Short,
    _skip_binary,
    _skip_compact,
    _varint,
)

BASE_FIELD_ID = 255
_LOG_ID, _CALLER, _ADDR, _EXTRA = 1, 2, 3, 6
_STRING_FIELDS = (_LOG_ID, _CALLER, _ADDR, 4)

# Type ids: binary / compact.
_B_STRUCT, _B_STRING, _B_MAP = 12, 11, 13
_C_STRUCT, _C_BINARY, _C_MAP = 12, 8, 11


@dataclass(frozen=True)
class BaseValues:
    """What the agent puts where the app left a Base field empty."""

    log_id: str
    caller: str
    addr: str
    extra: dict[str, str] = field(default_factory=dict)
    # Set even over the app's own: the propagation fields of this hop (hop count, path,
    # trace context), computed from what the app's request brought in. Letting the app's
    # copy win would forward the previous hop's count and defeat loop protection.
    override: dict[str, str] = field(default_factory=dict)


@dataclass
class _Base:
    """A decoded Base: its string fields, Extra (when it is a map<string, string>), and
    every other field as (type id, raw value bytes) for passing through."""

    strings: dict[int, str] = field(default_factory=dict)
    extra: dict[str, str] | None = None
    raw: dict[int, tuple[int, bytes]] = field(default_factory=dict)


def with_base(message: Message, values: BaseValues) -> tuple[Message, str]:
    """The call with its Base filled in, and the LogID it carries. A body that cannot be
    walked is returned as it is (the provider will say what is wrong with it)."""
    data = message.data
    proto = message.header.proto
    try:
        if proto is Proto.COMPACT:
            span = _find_compact(data, message.body_start)
        else:
            span = _find_binary(data, message.body_start)
        start, value_start, end, stop = span
        base = _Base()
        if start >= 0:
            if proto is Proto.COMPACT:
                base = _read_base_compact(data, value_start, end)
            else:
                base = _read_base_binary(data, value_start, end)
    except (_Short, RemoteProtocolError):
        return message, ""
    _fill(base, values)
    encoded = _encode_compact(base) if proto is Proto.COMPACT else _encode_binary(base)
    if start >= 0:
        body = b"".join((data[:start], encoded, data[end:]))
    else:
        body = b"".join((data[:stop], encoded, data[stop:]))
    return Message(message.header, body, message.body_start), base.strings[_LOG_ID]


def read_extra(message: Message) -> dict[str, str]:
    """The call's Base.Extra (empty without a Base, or one that cannot be read): where the
    propagation fields of the previous hop arrive. Bounded by the message size limit."""
    data = message.data
    compact = message.header.proto is Proto.COMPACT
    try:
        if compact:
            start, value_start, end, _ = _find_compact(data, message.body_start)
        else:
            start, value_start, end, _ = _find_binary(data, message.body_start)
        if start < 0:
            return {}
        if compact:
            base = _read_base_compact(data, value_start, end)
        else:
            base = _read_base_binary(data, value_start, end)
    except (_Short, RemoteProtocolError, IndexError):
        return {}
    return base.extra or {}


def _fill(base: _Base, values: BaseValues) -> None:
    strings = base.strings
    for field_id, value in ((_LOG_ID, values.log_id), (_CALLER, values.caller)):
        if not strings.get(field_id):
            strings[field_id] = value
    if not strings.get(_ADDR) and values.addr:
        strings[_ADDR] = values.addr
    if _EXTRA in base.raw:
        return  # an Extra of another shape: the app's, untouched
    extra = base.extra if base.extra is not None else {}
    for key, value in values.extra.items():
        extra.setdefault(key, value)
    extra.update(values.override)
    base.extra = extra


# -- binary ---------------------------------------------------------------------------------


def _find_binary(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(field start, value start, value end) of a struct-typed field 255 (-1s if none),
    and where the argument struct's STOP byte is."""
    end = len(data)
    found = (-1, -1, -1)
    while True:
        field_type = _need(data, pos, end, 1)[0]
        if field_type == 0:
            return (*found, pos)
        field_id = int.from_bytes(_need(data, pos + 1, end, 2), "big", signed=True)
        value_end = _skip_binary(data, pos + 3, end, field_type, 1)
        if field_id == BASE_FIELD_ID and field_type == _B_STRUCT:
            found = (pos, pos + 3, value_end)
        pos = value_end


def _read_base_binary(data: bytes, pos: int, end: int) -> _Base:
    base = _Base()
    while True:
        field_type = _need(data, pos, end, 1)[0]
        if field_type == 0:
            return base
        field_id = int.from_bytes(_need(data, pos + 1, end, 2), "big", signed=True)
        value_end = _skip_binary(data, pos + 3, end, field_type, 2)
        value = data[pos + 3 : value_end]
        if field_id in _STRING_FIELDS and field_type == _B_STRING:
            base.strings[field_id] = value[4:].decode("utf-8", "replace")
        elif field_id == _EXTRA and field_type == _B_MAP and _string_map_binary(value):
            base.extra = _read_map_binary(value)
        else:
            base.raw[field_id] = (field_type, value)
        pos = value_end


def _string_map_binary(value: bytes) -> bool:
    return value[0] == _B_STRING and value[1] == _B_STRING


def _read_map_binary(value: bytes) -> dict[str, str]:
    (size,) = _I32.unpack_from(value, 2)
    pos, out = 6, {}
    for _ in range(size):
        key, pos = _binary_string(value, pos)
        item, pos = _binary_string(value, pos)
        out[key] = item
    return out


def _binary_string(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = _I32.unpack_from(data, pos)
    return data[pos + 4 : pos + 4 + size].decode("utf-8", "replace"), pos + 4 + size


def _encode_binary(base: _Base) -> bytes:
    out = [bytes((_B_STRUCT,)), BASE_FIELD_ID.to_bytes(2, "big")]
    fields: dict[int, bytes] = {}
    for field_id, text in base.strings.items():
        fields[field_id] = bytes((_B_STRING,)) + field_id.to_bytes(2, "big") + _bstr(text)
    for field_id, (field_type, value) in base.raw.items():
        fields[field_id] = bytes((field_type,)) + field_id.to_bytes(2, "big", signed=True) + value
    if base.extra is not None:
        entries = b"".join(_bstr(k) + _bstr(v) for k, v in base.extra.items())
        fields[_EXTRA] = (
            bytes((_B_MAP,))
            + _EXTRA.to_bytes(2, "big")
            + bytes((_B_STRING, _B_STRING))
            + _I32.pack(len(base.extra))
            + entries
        )
    out.extend(fields[field_id] for field_id in sorted(fields))
    out.append(b"\x00")
    return b"".join(out)


def _bstr(text: str) -> bytes:
    raw = text.encode()
    return _I32.pack(len(raw)) + raw


# -- compact --------------------------------------------------------------------------------


def _compact_field(data: bytes, pos: int, end: int, last: int) -> tuple[int, int, int]:
    """(type, id, value start) of the field header at ``pos`` (not STOP)."""
    byte = data[pos]
    delta = byte >> 4
    if delta:
        return byte & 0x0F, last + delta, pos + 1
    zigzag, value_start = _read_varint(data, pos + 1, end, 16)
    return byte & 0x0F, (zigzag >> 1) ^ -(zigzag & 1), value_start


def _compact_skip(data: bytes, pos: int, end: int, ctype: int, depth: int) -> int:
    if ctype in (1, 2):
        return pos  # a bool field's value is its type id
    return _skip_compact(data, pos, end, ctype, depth, in_container=False)


def _find_compact(data: bytes, pos: int) -> tuple[int, int, int, int]:
    end = len(data)
    found = (-1, -1, -1)
    last = 0
    while True:
        if _need(data, pos, end, 1)[0] == 0:
            return (*found, pos)
        ctype, field_id, value_start = _compact_field(data, pos, end, last)
        value_end = _compact_skip(data, value_start, end, ctype, 1)
        if field_id == BASE_FIELD_ID and ctype == _C_STRUCT:
            found = (pos, value_start, value_end)
        last = field_id
        pos = value_end


def _read_base_compact(data: bytes, pos: int, end: int) -> _Base:
    base = _Base()
    last = 0
    while True:
        if _need(data, pos, end, 1)[0] == 0:
            return base
        ctype, field_id, value_start = _compact_field(data, pos, end, last)
        value_end = _compact_skip(data, value_start, end, ctype, 2)
        value = data[value_start:value_end]
        if field_id in _STRING_FIELDS and ctype == _C_BINARY:
            base.strings[field_id] = _compact_string(value, 0)[0]
        elif field_id == _EXTRA and ctype == _C_MAP and _string_map_compact(value):
            base.extra = _read_map_compact(value)
        else:
            base.raw[field_id] = (ctype, value)
        last = field_id
        pos = value_end


def _string_map_compact(value: bytes) -> bool:
    size, pos = _read_varint(value, 0, len(value), 32)
    return size == 0 or value[pos] == (_C_BINARY << 4) | _C_BINARY


def _read_map_compact(value: bytes) -> dict[str, str]:
    size, pos = _read_varint(value, 0, len(value), 32)
    out: dict[str, str] = {}
    if size == 0:
        return out
    pos += 1  # the key and value types, checked by _string_map_compact
    for _ in range(size):
        key, pos = _compact_string(value, pos)
        item, pos = _compact_string(value, pos)
        out[key] = item
    return out


def _compact_string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _read_varint(data, pos, len(data), 32)
    return data[pos : pos + size].decode("utf-8", "replace"), pos + size


def _cstr(text: str) -> bytes:
    raw = text.encode()
    return _varint(len(raw)) + raw


def _encode_compact(base: _Base) -> bytes:
    fields: dict[int, tuple[int, bytes]] = {}
    for field_id, text in base.strings.items():
        fields[field_id] = (_C_BINARY, _cstr(text))
    fields.update(base.raw)
    if base.extra is not None:
        entries = b"".join(_cstr(k) + _cstr(v) for k, v in base.extra.items())
        head = _varint(len(base.extra))
        if base.extra:
            head += bytes(((_C_BINARY << 4) | _C_BINARY,))
        fields[_EXTRA] = (_C_MAP, head + entries)
    # The long header for 255 itself: type with delta 0, then the zigzag i16 id.
    out = [bytes((_C_STRUCT,)), _varint(BASE_FIELD_ID << 1)]
    last = 0
    for field_id in sorted(fields):
        ctype, value = fields[field_id]
        delta = field_id - last
        if 0 < delta <= 15:
            out.append(bytes(((delta << 4) | ctype,)))
        else:
            out.append(bytes((ctype,)) + _varint(((field_id << 1) ^ (field_id >> 15)) & 0xFFFF))
        out.append(value)
        last = field_id
    out.append(b"\x00")
    return b"".join(out)
