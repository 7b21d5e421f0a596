"""Dubbo 2.0.2 framing, sans-IO: the 16-byte header and whole frames.

    0      2        3       4                 12            16
    +------+--------+-------+-----------------+-------------+------------
    | dabb | flags  |status | request id (i64)| body length | body ...
    +------+--------+-------+-----------------+-------------+------------
    flags: 0x80 request, 0x40 two-way, 0x20 event, low 5 bits serialization id

The decoder checks the magic and the declared body length against its limit before it
buffers anything for the body, so a hostile length costs nothing.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from agent.codec import NEED_DATA, NeedData
from agent.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError

MAGIC = 0xDABB
HEADER = struct.Struct(">HBBqi")
HEADER_SIZE = HEADER.size  # 16

FLAG_REQUEST = 0x80
FLAG_TWO_WAY = 0x40
FLAG_EVENT = 0x20
SERIALIZATION_MASK = 0x1F

HESSIAN2 = 2
# Dubbo's default payload limit (``payload``) is 8 MiB.
DEFAULT_MAX_BODY = 8 * 1024 * 1024


class Status(IntEnum):
    """Response status codes, as org.apache.dubbo.remoting.exchange.Response defines them."""

    OK = 20
    CLIENT_TIMEOUT = 30
    SERVER_TIMEOUT = 31
    CHANNEL_INACTIVE = 35
    BAD_REQUEST = 40
    BAD_RESPONSE = 50
    SERVICE_NOT_FOUND = 60
    SERVICE_ERROR = 70
    SERVER_ERROR = 80
    CLIENT_ERROR = 90
    SERVER_THREADPOOL_EXHAUSTED_ERROR = 100


class Header(NamedTuple):
    """Immutable; a NamedTuple rather than a frozen dataclass because one is built per
    frame on the proxy's hot path, and a frozen dataclass costs ~4x more to construct."""

    request: bool
    two_way: bool
    event: bool
    serialization: int
    status: int
    request_id: int
    body_length: int

    def pack(self) -> bytes:
        if not 0 <= self.serialization <= SERIALIZATION_MASK:
            raise LocalProtocolError(f"serialization id {self.serialization} out of range")
        flags = self.serialization
        if self.request:
            flags |= FLAG_REQUEST
            if self.two_way:
                flags |= FLAG_TWO_WAY
        if self.event:
            flags |= FLAG_EVENT
        return HEADER.pack(MAGIC, flags, self.status, self.request_id, self.body_length)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Header:
        """Read the header at the start of ``data`` (which may hold more than the header)."""
        if len(data) < HEADER_SIZE:
            raise RemoteProtocolError(f"a header is {HEADER_SIZE} bytes, got {len(data)}")
        magic, flags, status, request_id, body_length = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise RemoteProtocolError(f"bad magic 0x{magic:04x}, expected 0xdabb")
        if body_length < 0:
            raise RemoteProtocolError(f"negative body length {body_length}")
        request = bool(flags & FLAG_REQUEST)
        return cls(
            request=request,
            two_way=request and bool(flags & FLAG_TWO_WAY),
            event=bool(flags & FLAG_EVENT),
            serialization=flags & SERIALIZATION_MASK,
            status=status,
            request_id=request_id,
            body_length=body_length,
        )


class Frame(NamedTuple):
    """One whole frame: its header and its raw body (still serialized)."""

    header: Header
    body: bytes

    @property
    def heartbeat(self) -> bool:
        # Dubbo's only event is the heartbeat; its body is a serialized null (b"N").
        return self.header.event

    def to_bytes(self) -> bytes:
        return self.header.pack() + self.body


class BodyTooLarge(FrameTooLarge):
    """FrameTooLarge with the offending header, so a server can still answer that request id."""

    def __init__(self, message: str, header: Header) -> None:
        super().__init__(message)
        self.header = header


class FrameDecoder:
    """Bytes in, :class:`Frame` out. After a RemoteProtocolError the stream is unusable:
    Dubbo has no resynchronisation point, so the connection must be closed."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._header: Header | None = None
        self._broken: RemoteProtocolError | None = None
        # Fast path: a chunk received while nothing was buffered is read in place (frames
        # sliced straight out of it), and only an incomplete tail is copied to _buffer.
        self._chunk: bytes | None = None
        self._chunk_pos = 0

    def receive_data(self, data: bytes) -> None:
        if self._chunk is not None:
            self._spill()
        if self._buffer or self._header is not None:
            self._buffer += data
        elif data:
            self._chunk = bytes(data)
            self._chunk_pos = 0

    def _spill(self) -> None:
        """Move the unread rest of the chunk into the buffer (the slow path takes over)."""
        chunk, self._chunk = self._chunk, None
        if chunk is not None and self._chunk_pos < len(chunk):
            self._buffer += memoryview(chunk)[self._chunk_pos :]

    @property
    def buffered(self) -> int:
        chunk = self._chunk
        extra = len(chunk) - self._chunk_pos if chunk is not None else 0
        return len(self._buffer) + extra

    @property
    def pending_header(self) -> Header | None:
        """The header of a frame whose body has not fully arrived (for a truncation report)."""
        return self._header

    def next_event(self) -> Frame | NeedData:
        if self._broken is not None:
            raise self._broken
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._broken = exc
            raise

    def _next(self) -> Frame | NeedData:
        chunk = self._chunk
        if chunk is not None:
            pos = self._chunk_pos
            end = pos + HEADER_SIZE
            if len(chunk) >= end and chunk[pos] == 0xDA and chunk[pos + 1] == 0xBB:
                _magic, flags, status, request_id, length = HEADER.unpack_from(chunk, pos)
                if 0 <= length <= self.max_body and len(chunk) >= end + length:
                    request = bool(flags & FLAG_REQUEST)
                    fast = Header(
                        request,
                        request and bool(flags & FLAG_TWO_WAY),
                        bool(flags & FLAG_EVENT),
                        flags & SERIALIZATION_MASK,
                        status,
                        request_id,
                        length,
                    )
                    self._chunk_pos = end + length
                    if self._chunk_pos == len(chunk):
                        self._chunk = None
                    return Frame(fast, chunk[end : end + length])
            # A partial frame or anything to refuse: the general path below decides.
            self._spill()
        header = self._header
        if header is None:
            if len(self._buffer) < HEADER_SIZE:
                if len(self._buffer) >= 2 and self._buffer[:2] != b"\xda\xbb":
                    Header.unpack(bytes(self._buffer[:2]) + bytes(14))  # raises bad magic
                return NEED_DATA
            header = Header.unpack(memoryview(self._buffer)[:HEADER_SIZE])
            if header.body_length > self.max_body:
                raise BodyTooLarge(
                    f"frame {header.request_id} declares a body of {header.body_length} "
                    f"bytes, over the limit of {self.max_body}",
                    header,
                )
            del self._buffer[:HEADER_SIZE]
            self._header = header
        if len(self._buffer) < header.body_length:
            return NEED_DATA
        # One copy out of the buffer (slicing a bytearray and then bytes() would be two).
        with memoryview(self._buffer) as view:
            body = bytes(view[: header.body_length])
        del self._buffer[: header.body_length]
        self._header = None
        return Frame(header, body)


def with_request_id(frame: bytes, request_id: int) -> bytes:
    """The same frame bytes under another request id (the proxy's id rewriting)."""
    return frame[:4] + struct.pack(">q", request_id) + frame[12:]


def frame_with_id(frame: Frame, request_id: int) -> bytes:
    """A decoded frame's bytes under another request id, in one pack and one join."""
    header = frame.header
    flags = header.serialization
    if header.request:
        flags |= FLAG_REQUEST
        if header.two_way:
            flags |= FLAG_TWO_WAY
    if header.event:
        flags |= FLAG_EVENT
    body = frame.body
    return HEADER.pack(MAGIC, flags, header.status, request_id, len(body)) + body
