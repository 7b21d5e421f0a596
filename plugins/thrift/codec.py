"""Thrift messages, sans-IO: TBinaryProtocol (strict and old non-strict) and TCompactProtocol,
framed or buffered (unframed).

Only the message header is read (name, type, seqid); the body is passed on untouched. A
framed message's end is its frame length. A buffered message has no length anywhere, so
its end is found by *skipping* the argument struct without a schema: every Thrift value
carries its type id, and :class:`ValueSkipper` walks them with a depth limit. Each value
consumes at least one byte, so the walk costs O(bytes) whatever a container declares, and
it resumes where it stopped when a read ends mid-message.

Every length is checked here: thriftpy2's Cython binary protocol reads past the end of a
truncated buffer, so no peer bytes reach it unchecked. Seqids the agent writes are kept in
1..2**31-1 (thriftpy2's compact writer never returns on a negative one).
"""

from __future__ import annotations

import struct
from enum import IntEnum, StrEnum
from typing import NamedTuple

from agent.codec import NEED_DATA, NeedData
from agent.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError

# Apache Thrift's default maximum frame size (TConfiguration.DEFAULT_MAX_FRAME_SIZE).
DEFAULT_MAX_MESSAGE = 16_384_000
# Apache Thrift's default recursion limit (TConfiguration.DEFAULT_RECURSION_DEPTH).
MAX_DEPTH = 64
SEQID_MASK = 0x7FFFFFFF

_I32 = struct.Struct(">i")
_I32_PAIR = struct.Struct(">ii")
_BINARY_VERSION_1 = 0x80010000
_BINARY_VERSION_MASK = 0xFFFF0000
_COMPACT_ID = 0x82
_COMPACT_VERSION = 1


class Proto(StrEnum):
    BINARY = "binary"
    COMPACT = "compact"


class Transport(StrEnum):
    FRAMED = "framed"
    BUFFERED = "buffered"


class MessageType(IntEnum):
    CALL = 1
    REPLY = 2
    EXCEPTION = 3
    ONEWAY = 4


class AppError(IntEnum):
    """TApplicationException.type values, as every Thrift library numbers them."""

    UNKNOWN = 0
    UNKNOWN_METHOD = 1
    INVALID_MESSAGE_TYPE = 2
    WRONG_METHOD_NAME = 3
    BAD_SEQUENCE_ID = 4
    MISSING_RESULT = 5
    INTERNAL_ERROR = 6
    PROTOCOL_ERROR = 7


class Header(NamedTuple):
    """A message header. ``strict`` is the binary protocol's versioned form (always true
    for compact); a rewritten message keeps the form its sender used."""

    name: str
    type: int
    seqid: int
    proto: Proto
    strict: bool = True


class Message(NamedTuple):
    """One whole message: its header and its unframed bytes (header + body);
    ``body_start`` is where the argument/result struct begins in ``data``."""

    header: Header
    data: bytes
    body_start: int

    @property
    def body(self) -> bytes:
        return self.data[self.body_start :]


# Decoded headers and messages are built with tuple.__new__: a NamedTuple's own __new__ is
# a Python function, a frame per object on the proxy's hot path (four per call).
_new = tuple.__new__


class _Short(Exception):
    """Ran out of bytes: more may come (buffered), or the message is truncated (framed)."""


# -- headers ----------------------------------------------------------------------------


def encode_header(header: Header, seqid: int | None = None) -> bytes:
    seq = header.seqid if seqid is None else seqid
    if not -(2**31) <= seq < 2**31:
        raise LocalProtocolError(f"seqid {seq} is not an i32")
    name = header.name.encode()
    if header.proto is Proto.COMPACT:
        if not 1 <= header.type <= 7:
            raise LocalProtocolError(f"message type {header.type} does not fit compact")
        return (
            bytes((_COMPACT_ID, _COMPACT_VERSION | (header.type << 5)))
            + _varint(seq & 0xFFFFFFFF)
            + _varint(len(name))
            + name
        )
    if not 0 <= header.type <= 255:
        raise LocalProtocolError(f"message type {header.type} does not fit a byte")
    if header.strict:
        return (
            _I32.pack((_BINARY_VERSION_1 | header.type) - 2**32)
            + _I32.pack(len(name))
            + name
            + _I32.pack(seq)
        )
    return _I32.pack(len(name)) + name + bytes((header.type,)) + _I32.pack(seq)


def read_header(data: bytes | bytearray, pos: int, end: int, proto: Proto) -> tuple[Header, int]:
    """The header at ``data[pos:end]`` and where the body starts; raises _Short."""
    if proto is Proto.COMPACT:
        if end - pos < 2:
            raise _Short
        first = data[pos]
        second = data[pos + 1]
        if first != _COMPACT_ID:
            raise RemoteProtocolError(f"bad compact protocol id 0x{first:02x}")
        if second & 0x1F != _COMPACT_VERSION:
            raise RemoteProtocolError(f"unsupported compact version {second & 0x1F}")
        mtype = second >> 5
        seq, pos = _read_varint(data, pos + 2, end, 32)
        if seq >= 2**31:
            seq -= 2**32
        size, pos = _read_varint(data, pos, end, 32)
        name, pos = _read_name(data, pos, end, size)
        return _new(Header, (name, mtype, seq, proto, True)), pos
    if end - pos >= 12:
        # The common case first, in one unpack: strict binary with a whole header here.
        word, size = _I32_PAIR.unpack_from(data, pos)
        if word < 0 and (word + 2**32) & _BINARY_VERSION_MASK == _BINARY_VERSION_1:
            name_end = pos + 8 + size
            if 0 <= size <= _MAX_NAME and name_end + 4 <= end:
                try:
                    name = data[pos + 8 : name_end].decode()
                except UnicodeDecodeError:
                    raise RemoteProtocolError("message name is not UTF-8") from None
                (seq,) = _I32.unpack_from(data, name_end)
                return _new(Header, (name, word & 0xFF, seq, proto, True)), name_end + 4
    (word,) = _I32.unpack(_need(data, pos, end, 4))
    if word < 0:
        version = (word + 2**32) & _BINARY_VERSION_MASK
        if version != _BINARY_VERSION_1:
            raise RemoteProtocolError(f"bad binary protocol version 0x{version:08x}")
        mtype = word & 0xFF
        (size,) = _I32.unpack(_need(data, pos + 4, end, 4))
        name, pos = _read_name(data, pos + 8, end, size)
        (seq,) = _I32.unpack(_need(data, pos, end, 4))
        return Header(name, mtype, seq, proto, True), pos + 4
    name, pos = _read_name(data, pos + 4, end, word)
    mtype = _need(data, pos, end, 1)[0]
    (seq,) = _I32.unpack(_need(data, pos + 1, end, 4))
    return Header(name, mtype, seq, proto, False), pos + 5


def _read_name(data: bytes | bytearray, pos: int, end: int, size: int) -> tuple[str, int]:
    # Method names are identifiers; a long one is garbage, not a method.
    if not 0 <= size <= _MAX_NAME:
        raise RemoteProtocolError(f"message name length {size} out of range")
    raw = _need(data, pos, end, size)
    try:
        return bytes(raw).decode(), pos + size
    except UnicodeDecodeError:
        raise RemoteProtocolError("message name is not UTF-8") from None


_MAX_NAME = 4096
_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def _need(data: bytes | bytearray, pos: int, end: int, size: int) -> bytes | bytearray:
    if pos + size > end:
        raise _Short
    return data[pos : pos + size]


def _varint(value: int) -> bytes:
    # One and two bytes without a loop: seqids and lengths are mostly that short.
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes | bytearray, pos: int, end: int, bits: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Short
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> bits:
                raise RemoteProtocolError(f"varint over {bits} bits")
            return result, pos
        shift += 7
        if shift >= bits + 7:
            raise RemoteProtocolError(f"varint over {bits} bits")


# -- skipping values --------------------------------------------------------------------

# Binary type ids and their fixed sizes (None: variable).
_B_STOP, _B_STRUCT, _B_MAP, _B_SET, _B_LIST, _B_STRING = 0, 12, 13, 14, 15, 11
_B_FIXED = {2: 1, 3: 1, 4: 8, 6: 2, 8: 4, 10: 8, 16: 16}
# Compact type ids.
_C_FIXED = {1: 0, 2: 0, 3: 1, 7: 8, 13: 16}  # bools in a field header carry their value
_C_VARINT = {4: 16, 5: 32, 6: 64}
_C_BINARY, _C_LIST, _C_SET, _C_MAP, _C_STRUCT = 8, 9, 10, 11, 12


def skip_struct(data: bytes | bytearray, pos: int, end: int, proto: Proto) -> int:
    """The position just past the struct at ``pos``; raises _Short or RemoteProtocolError."""
    struct_type = _C_STRUCT if proto is Proto.COMPACT else _B_STRUCT
    return ValueSkipper(proto, struct_type, pos).advance(data, end)


def _skip_binary(data: bytes | bytearray, pos: int, end: int, ttype: int, depth: int) -> int:
    return ValueSkipper(Proto.BINARY, ttype, pos, depth).advance(data, end)


def _skip_compact(
    data: bytes | bytearray, pos: int, end: int, ttype: int, depth: int, *, in_container: bool
) -> int:
    return ValueSkipper(Proto.COMPACT, ttype, pos, depth, in_container).advance(data, end)


def _count(size: int) -> int:
    # No bound beyond sign is needed: every element consumes at least one byte, so a huge
    # count runs out of bytes (framed: truncated; buffered: the decoder's size limit)
    # after as many steps as there are bytes.
    if size < 0:
        raise RemoteProtocolError(f"negative container size {size}")
    return size


# What a container being walked is (the first item of its frame).
_K_STRUCT, _K_LIST, _K_MAP = 0, 1, 2


class ValueSkipper:
    """Skips one value without a schema, and resumes where it stopped when the bytes ran
    out: a buffered message arriving in many reads is walked once in all, not once per
    read (which cost the square of its size; issue 25).

    The walk is iterative: ``_frames`` holds the containers entered, each
    ``[kind, element or key type, value type, elements left, 1 if a map's value is next]``,
    and ``_pending`` the type of the value to read next (-1: the next item comes from the
    innermost frame). Everything up to ``pos`` is consumed; a value cut short is read
    again from its start next time, which is O(1) (a fixed size, a varint of at most ten
    bytes, or a length to compare). ``steps`` counts items looked at, for the tests that
    guard linearity.
    """

    def __init__(
        self, proto: Proto, ttype: int, pos: int, depth: int = 0, in_container: bool = False
    ) -> None:
        self.compact = proto is Proto.COMPACT
        self.pos = pos
        self.steps = 0
        self._depth = depth
        self._frames: list[list[int]] = []
        self._pending = ttype
        self._in_container = in_container

    def advance(self, data: bytes | bytearray, end: int) -> int:
        """The position just past the value, or _Short (resume with more bytes, the same
        ``data`` up to a larger ``end``); RemoteProtocolError for bytes that are no value."""
        frames = self._frames
        while True:
            self.steps += 1
            ttype = self._pending
            if ttype >= 0:
                if self.compact:
                    self.pos = self._compact_value(data, self.pos, end, ttype)
                else:
                    self.pos = self._binary_value(data, self.pos, end, ttype)
                self._pending = -1
                continue
            if not frames:
                return self.pos
            frame = frames[-1]
            kind = frame[0]
            if kind == _K_STRUCT:
                self._next_field(data, end)
            elif kind == _K_LIST:
                if frame[3] == 0:
                    frames.pop()
                    continue
                frame[3] -= 1
                self._pending = frame[1]
                self._in_container = True
            else:  # a map: its key, then its value
                if frame[4]:
                    frame[4] = 0
                    frame[3] -= 1
                    self._pending = frame[2]
                else:
                    if frame[3] == 0:
                        frames.pop()
                        continue
                    frame[4] = 1
                    self._pending = frame[1]
                self._in_container = True

    def _next_field(self, data: bytes | bytearray, end: int) -> None:
        """A struct's next field header (its value becomes pending), or its stop byte."""
        pos = self.pos
        if pos >= end:
            raise _Short
        byte = data[pos]
        if byte == 0:  # the stop byte, in both protocols
            self._frames.pop()
            self.pos = pos + 1
            return
        if self.compact:
            pos += 1
            if byte >> 4 == 0:  # long form: the field id follows as a zigzag varint
                pos = _read_varint(data, pos, end, 16)[1]
            self._pending = byte & 0x0F
        else:
            if pos + 3 > end:  # the type byte and the i16 field id
                raise _Short
            pos += 3
            self._pending = byte
        self._in_container = False
        self.pos = pos

    def _enter(self, kind: int, first: int, second: int, count: int) -> None:
        if self._depth + len(self._frames) >= MAX_DEPTH:
            raise RemoteProtocolError(f"values nested deeper than {MAX_DEPTH}")
        self._frames.append([kind, first, second, count, 0])

    def _binary_value(self, data: bytes | bytearray, pos: int, end: int, ttype: int) -> int:
        fixed = _B_FIXED.get(ttype)
        if fixed is not None:
            if pos + fixed > end:
                raise _Short
            return pos + fixed
        if ttype == _B_STRING:
            size: int = _I32.unpack(_need(data, pos, end, 4))[0]
            if size < 0:
                raise RemoteProtocolError(f"negative string length {size}")
            if pos + 4 + size > end:
                raise _Short
            return pos + 4 + size
        if ttype == _B_STRUCT:
            self._enter(_K_STRUCT, 0, 0, 0)
            return pos
        if ttype == _B_MAP:
            key_type, value_type = _need(data, pos, end, 2)
            (size,) = _I32.unpack(_need(data, pos + 2, end, 4))
            self._enter(_K_MAP, key_type, value_type, _count(size))
            return pos + 6
        if ttype in (_B_SET, _B_LIST):
            element_type = _need(data, pos, end, 1)[0]
            (size,) = _I32.unpack(_need(data, pos + 1, end, 4))
            self._enter(_K_LIST, element_type, 0, _count(size))
            return pos + 5
        raise RemoteProtocolError(f"unknown binary type id {ttype}")

    def _compact_value(self, data: bytes | bytearray, pos: int, end: int, ttype: int) -> int:
        fixed = _C_FIXED.get(ttype)
        if fixed is not None:
            # A bool inside a list/set/map is one byte; as a field its value is the type id.
            size = 1 if self._in_container and ttype in (1, 2) else fixed
            if pos + size > end:
                raise _Short
            return pos + size
        bits = _C_VARINT.get(ttype)
        if bits is not None:
            return _read_varint(data, pos, end, bits)[1]
        if ttype == _C_BINARY:
            size, pos = _read_varint(data, pos, end, 32)
            if size >= 2**31:
                raise RemoteProtocolError(f"binary length {size} out of range")
            if pos + size > end:
                raise _Short
            return pos + size
        if ttype == _C_STRUCT:
            self._enter(_K_STRUCT, 0, 0, 0)
            return pos
        if ttype in (_C_LIST, _C_SET):
            byte = _need(data, pos, end, 1)[0]
            pos += 1
            size = byte >> 4
            if size == 15:
                size, pos = _read_varint(data, pos, end, 32)
            self._enter(_K_LIST, byte & 0x0F, 0, _count(size))
            return pos
        if ttype == _C_MAP:
            size, pos = _read_varint(data, pos, end, 32)
            if size == 0:
                return pos
            types = _need(data, pos, end, 1)[0]
            self._enter(_K_MAP, types >> 4, types & 0x0F, _count(size))
            return pos + 1
        raise RemoteProtocolError(f"unknown compact type id {ttype}")


# -- detection --------------------------------------------------------------------------


def detect(data: bytes | bytearray) -> tuple[Proto, Transport] | None:
    """Protocol and transport from a connection's first bytes (None: need more).

    Buffered strict binary starts 0x80, buffered compact 0x82. A frame length under 16 MiB
    starts 0x00, and so does an old non-strict binary message (its name length); the fifth
    byte tells them apart: a framed message's own first byte (0x80, 0x82, or 0x00 for
    framed non-strict), where a non-strict name has its first character.
    """
    if not data:
        return None
    first = data[0]
    if first == 0x80:
        return Proto.BINARY, Transport.BUFFERED
    if first == _COMPACT_ID:
        return Proto.COMPACT, Transport.BUFFERED
    if first != 0x00:
        raise RemoteProtocolError(f"not a Thrift message: first byte 0x{first:02x}")
    if len(data) < 5:
        return None
    fifth = data[4]
    if fifth == _COMPACT_ID:
        return Proto.COMPACT, Transport.FRAMED
    if fifth in (0x80, 0x00):
        return Proto.BINARY, Transport.FRAMED
    return Proto.BINARY, Transport.BUFFERED


# -- the decoder --------------------------------------------------------------------------


class MessageDecoder:
    """Bytes in, :class:`Message` out. ``proto``/``transport`` None means detect them from
    the first bytes; once known they hold for the connection. After a RemoteProtocolError
    the stream is unusable (Thrift has no resynchronisation point)."""

    def __init__(
        self,
        proto: Proto | None = None,
        transport: Transport | None = None,
        max_size: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.proto = proto
        self.transport = transport
        self.max_size = max_size
        self._buffer = bytearray()
        # Framed fast path: a read's bytes are kept as they came and whole frames are
        # sliced straight out of them (one copy per message, where the bytearray costs an
        # append, a slice, a bytes() and a memmove). Only a partial frame's bytes go to
        # the buffer. Invariant: while ``_chunk`` holds bytes, the buffer is empty.
        self._chunk = b""
        self._chunk_pos = 0
        self._broken: RemoteProtocolError | None = None
        # A header already read from the buffer, so that a partial body does not
        # re-read it (and a report on truncation can name the call).
        self.pending: Header | None = None
        # Buffered transport: the walk of a message's body so far, and where it began.
        self._skipper: ValueSkipper | None = None
        self._body_start = 0
        # Items the buffered walk has looked at, over the connection (tests count them).
        self.steps = 0

    def receive_data(self, data: bytes) -> None:
        if self._chunk:
            self._spill()
        elif (
            not self._buffer
            and self.transport is Transport.FRAMED
            and self.proto is not None
            and type(data) is bytes
        ):
            self._chunk = data
            self._chunk_pos = 0
            return
        self._buffer += data

    def _spill(self) -> None:
        """Move what is left of the current chunk to the (empty) buffer."""
        self._buffer += memoryview(self._chunk)[self._chunk_pos :]
        self._chunk = b""
        self._chunk_pos = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._chunk) - self._chunk_pos

    def next_event(self) -> Message | NeedData:
        if self._broken is not None:
            raise self._broken
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._broken = exc
            raise

    def _next(self) -> Message | NeedData:
        buffer = self._buffer
        if self.proto is None or self.transport is None:
            found = detect(buffer)
            if found is None:
                return NEED_DATA
            self.proto, self.transport = found
        if self.transport is Transport.FRAMED:
            chunk = self._chunk
            if chunk:
                pos = self._chunk_pos
                available = len(chunk) - pos
                if available >= 4:
                    (length,) = _I32.unpack_from(chunk, pos)
                    if 0 < length <= self.max_size and available >= 4 + length:
                        start = pos + 4
                        end = start + length
                        if end == len(chunk):
                            self._chunk = b""
                            self._chunk_pos = 0
                        else:
                            self._chunk_pos = end
                        data = chunk[start:end]
                        try:
                            header, body_start = read_header(data, 0, length, self.proto)
                        except _Short:
                            raise RemoteProtocolError(
                                "message header runs past its frame"
                            ) from None
                        return _new(Message, (header, data, body_start))
                # A partial frame or a bad length: the general path, on the buffer.
                self._spill()
            if len(buffer) < 4:
                return NEED_DATA
            (length,) = _I32.unpack_from(buffer)
            if length <= 0:
                raise RemoteProtocolError(f"frame length {length}")
            if length > self.max_size:
                raise FrameTooLarge(f"frame of {length} bytes, over the limit of {self.max_size}")
            if len(buffer) < 4 + length:
                # Read the header of an incomplete frame once, early: garbage is refused
                # before its body is awaited, and a truncation can name the call.
                if self.pending is None and len(buffer) >= 4 + min(length, 64):
                    self.pending = self._peek_header(4, 4 + length)
                return NEED_DATA
            data = bytes(buffer[4 : 4 + length])
            del buffer[: 4 + length]
            self.pending = None
            try:
                header, body_start = read_header(data, 0, length, self.proto)
            except _Short:
                raise RemoteProtocolError("message header runs past its frame") from None
            return _new(Message, (header, data, body_start))
        # Buffered: the header once, then the body walked on from where the last read
        # left it (a ValueSkipper), so a message in many reads costs O(its size) in all.
        try:
            skipper = self._skipper
            if skipper is None:
                header, body_start = read_header(buffer, 0, len(buffer), self.proto)
                self.pending = header
                self._body_start = body_start
                struct_type = _C_STRUCT if self.proto is Proto.COMPACT else _B_STRUCT
                skipper = self._skipper = ValueSkipper(self.proto, struct_type, body_start)
            try:
                end = skipper.advance(buffer, len(buffer))
            finally:
                self.steps += skipper.steps
                skipper.steps = 0
        except _Short:
            if len(buffer) > self.max_size:
                raise FrameTooLarge(
                    f"message over the limit of {self.max_size} bytes and not yet complete"
                ) from None
            return NEED_DATA
        if end > self.max_size:
            raise FrameTooLarge(f"message of {end} bytes, over the limit of {self.max_size}")
        read = self.pending
        assert read is not None
        data = bytes(buffer[:end])
        del buffer[:end]
        self.pending = None
        self._skipper = None
        return Message(read, data, self._body_start)

    def _peek_header(self, pos: int, end: int) -> Header | None:
        assert self.proto is not None
        try:
            return read_header(self._buffer, pos, min(end, len(self._buffer)), self.proto)[0]
        except _Short:
            return None


def check_body(message: Message) -> None:
    """Raise RemoteProtocolError unless the body is exactly one well-formed struct (a framed
    body is passed on unread by the proxy; the invoker checks it before thriftpy2 reads)."""
    data = message.data
    try:
        end = skip_struct(data, message.body_start, len(data), message.header.proto)
    except _Short:
        raise RemoteProtocolError("message body is truncated") from None
    if end != len(data):
        raise RemoteProtocolError(f"{len(data) - end} bytes after the message body")


# -- encoding -------------------------------------------------------------------------------


def frame(data: bytes, transport: Transport) -> bytes:
    return _I32.pack(len(data)) + data if transport is Transport.FRAMED else data


def with_seqid(message: Message, seqid: int, transport: Transport) -> bytes:
    """The message's wire bytes under another seqid, everything else untouched.

    Only the seqid's own bytes are replaced (the header is not re-encoded: this runs twice
    per proxied call). Binary, strict or not, ends its header with the i32 seqid; compact
    has it as a varint right after its two leading bytes.
    """
    data = message.data
    if message.header.proto is Proto.COMPACT:
        start = end = 2
        while data[end] & 0x80:
            end += 1
        end += 1
        new = _varint(seqid & 0xFFFFFFFF)
    else:
        end = message.body_start
        start = end - 4
        new = _I32.pack(seqid)
    # Big bodies are not copied once more on their way to the join.
    rest = data[end:] if len(data) < 4096 else memoryview(data)[end:]
    if transport is Transport.FRAMED:
        length = len(data) - (end - start) + len(new)
        return b"".join((_I32.pack(length), data[:start], new, rest))
    return b"".join((data[:start], new, rest))


def next_seqid(seqid: int) -> int:
    """The seqid after ``seqid`` in 1..2**31-1 (never negative, never 0)."""
    return seqid + 1 if seqid < SEQID_MASK else 1


def application_exception(
    name: str,
    seqid: int,
    kind: AppError,
    message: str,
    proto: Proto,
    transport: Transport,
    strict: bool = True,
) -> bytes:
    """A TApplicationException reply: struct {1: string message, 2: i32 type}."""
    head = encode_header(Header(name, MessageType.EXCEPTION, seqid, proto, strict))
    text = message.encode()
    if proto is Proto.COMPACT:
        # Field 1 string (delta 1, type 8), field 2 i32 (delta 1, type 5, zigzag), stop.
        zigzag = (int(kind) << 1) ^ (int(kind) >> 31)
        body = b"\x18" + _varint(len(text)) + text + b"\x15" + _varint(zigzag) + b"\x00"
    else:
        body = (
            b"\x0b\x00\x01"
            + _I32.pack(len(text))
            + text
            + b"\x08\x00\x02"
            + _I32.pack(int(kind))
            + b"\x00"
        )
    return frame(head + body, transport)
