"""Thrift messages as thriftpy2 writes them, for codec tests (thriftpy2 is the reference)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import thriftpy2
from thriftpy2.protocol import TBinaryProtocol, TCompactProtocol
from thriftpy2.thrift import TMessageType
from thriftpy2.transport import TMemoryBuffer

IDL = Path(__file__).resolve().parent / "thrift" / "echo.thrift"
echo_thrift: Any = thriftpy2.load(str(IDL), module_name="echo_thrift")


def protocol(buffer: TMemoryBuffer, proto: str, strict: bool = True) -> Any:
    if proto == "compact":
        return TCompactProtocol(buffer)
    return TBinaryProtocol(buffer, strict_read=strict, strict_write=strict)


def call_bytes(
    method: str,
    seqid: int,
    proto: str = "binary",
    *,
    strict: bool = True,
    framed: bool = False,
    oneway: bool = False,
    **kwargs: Any,
) -> bytes:
    """A call of ``Echo.method`` as thriftpy2's client writes it (unframed unless asked)."""
    buffer = TMemoryBuffer()
    writer = protocol(buffer, proto, strict)
    args = getattr(echo_thrift.Echo, f"{method}_args")(**kwargs)
    writer.write_message_begin(method, TMessageType.ONEWAY if oneway else TMessageType.CALL, seqid)
    args.write(writer)
    writer.write_message_end()
    data: bytes = buffer.getvalue()
    return struct.pack(">i", len(data)) + data if framed else data


def read_message(data: bytes, proto: str, strict: bool = True) -> tuple[str, int, int, Any]:
    """(name, type, seqid, reader) of unframed message bytes; the reader is at the body."""
    reader = protocol(TMemoryBuffer(data), proto, strict)
    name, mtype, seqid = reader.read_message_begin()
    return name, mtype, seqid, reader


def big_item(depth: int = 2) -> Any:
    """An Item with every field set, nested ``depth`` levels."""
    item = echo_thrift.Item
    children = [big_item(depth - 1)] if depth > 0 else []
    return item(
        name=f"n{depth}",
        id=2**62 + depth,
        blob=bytes(range(256)),
        numbers=[-1, 0, 1, 2**31 - 1],
        scores={"a": 1.5, "b": -0.25},
        tags=["x", "y"],  # thriftpy2 reads a set back as a list
        color=echo_thrift.Color.GREEN,
        flag=True,
        children=children,
        small=-3,
        tiny=7,
        flags={1: [True, False, True], -5: []},
    )
