"""Thrift messages in bytes alone, checked against what thriftpy2 writes and reads."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from thriftpy2.thrift import TApplicationException

from agent.codec import NEED_DATA
from agent.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from plugins.thrift.codec import (
    MAX_DEPTH,
    AppError,
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    application_exception,
    check_body,
    detect,
    encode_header,
    next_seqid,
    with_seqid,
)
from tests.support.thrift_messages import big_item, call_bytes, echo_thrift, read_message

# (protocol, strict binary, framed): every wire form the codec reads.
FORMS = [
    ("binary", True, True),
    ("binary", True, False),
    ("binary", False, True),
    ("binary", False, False),
    ("compact", True, True),
    ("compact", True, False),
]
FORM_IDS = [f"{p}{'' if s else '-nonstrict'}-{'framed' if f else 'buffered'}" for p, s, f in FORMS]


def drain(decoder: MessageDecoder) -> list[Message]:
    out = []
    while (event := decoder.next_event()) is not NEED_DATA:
        assert isinstance(event, Message)
        out.append(event)
    return out


def sample(proto: str, strict: bool, framed: bool) -> list[bytes]:
    return [
        call_bytes("ping", 1, proto, strict=strict, framed=framed),
        call_bytes("echo", 2, proto, strict=strict, framed=framed, item=big_item()),
        call_bytes("add", 2**31 - 1, proto, strict=strict, framed=framed, a=-(2**63), b=2**63 - 1),
        call_bytes("record", 4, proto, strict=strict, framed=framed, oneway=True, note="é" * 300),
    ]


def check(messages: list[Message], proto: str, strict: bool) -> None:
    assert [(m.header.name, m.header.seqid) for m in messages] == [
        ("ping", 1),
        ("echo", 2),
        ("add", 2**31 - 1),
        ("record", 4),
    ]
    assert [m.header.type for m in messages] == [1, 1, 1, MessageType.ONEWAY]
    for m in messages:
        assert m.header.proto == proto and m.header.strict == (strict or proto == "compact")
        check_body(m)
    # The body is the argument struct exactly as written: thriftpy2 reads it back.
    _name, _type, _seq, reader = read_message(messages[1].data, proto, strict)
    args = echo_thrift.Echo.echo_args()
    args.read(reader)
    assert args.item == big_item()


@pytest.mark.parametrize(("proto", "strict", "framed"), FORMS, ids=FORM_IDS)
def test_whole_and_byte_by_byte(proto: str, strict: bool, framed: bool) -> None:
    wire = b"".join(sample(proto, strict, framed))
    decoder = MessageDecoder(Proto(proto), Transport.FRAMED if framed else Transport.BUFFERED)
    decoder.receive_data(wire)
    check(drain(decoder), proto, strict)
    # Byte by byte, and with the protocol and transport detected from the first bytes.
    decoder = MessageDecoder()
    messages: list[Message] = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i : i + 1])
        messages += drain(decoder)
    check(messages, proto, strict)
    assert decoder.buffered == 0
    assert (decoder.proto, decoder.transport) == (
        Proto(proto),
        Transport.FRAMED if framed else Transport.BUFFERED,
    )


@settings(max_examples=60, deadline=None)
@given(form=st.sampled_from(FORMS), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_random_splits(form: tuple[str, bool, bool], cuts: list[int]) -> None:
    proto, strict, framed = form
    wire = b"".join(sample(proto, strict, framed))
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    # Detected, and given: a known framed form takes whole frames straight from each read.
    transport = Transport.FRAMED if framed else Transport.BUFFERED
    for decoder in (MessageDecoder(), MessageDecoder(Proto(proto), transport)):
        messages: list[Message] = []
        for start, end in itertools.pairwise(points):
            decoder.receive_data(wire[start:end])
            messages += drain(decoder)
        check(messages, proto, strict)
        assert decoder.buffered == 0


@pytest.mark.parametrize(("proto", "strict", "framed"), FORMS, ids=FORM_IDS)
def test_seqid_rewrite_keeps_the_body(proto: str, strict: bool, framed: bool) -> None:
    transport = Transport.FRAMED if framed else Transport.BUFFERED
    decoder = MessageDecoder(Proto(proto), transport)
    # A client's negative seqid (thriftpy2's compact writer never returns on one, so the
    # message is made by rewriting its seqid: the same path under test).
    first = call_bytes("echo", 7, proto, strict=strict, framed=framed, item=big_item())
    decoder.receive_data(first)
    (positive,) = drain(decoder)
    decoder.receive_data(with_seqid(positive, -7, transport))
    (message,) = drain(decoder)
    assert message.header.seqid == -7 and message.body == positive.body
    for seqid in (1, 300, 2**31 - 1):
        wire = with_seqid(message, seqid, transport)
        again = MessageDecoder(Proto(proto), transport)
        again.receive_data(wire)
        (rewritten,) = drain(again)
        assert rewritten.header == message.header._replace(seqid=seqid)
        assert rewritten.body == message.body
        name, mtype, seq, _reader = read_message(rewritten.data, proto, strict)
        assert (name, mtype, seq) == ("echo", 1, seqid)


def test_seqids_stay_positive() -> None:
    assert next_seqid(1) == 2
    assert next_seqid(2**31 - 1) == 1


def test_compact_negative_seqid_is_read() -> None:
    # Other compact writers send a negative seqid as a 5-byte varint.
    header = Header("ping", MessageType.CALL, -1, Proto.COMPACT)
    data = encode_header(header) + b"\x00"
    decoder = MessageDecoder(Proto.COMPACT, Transport.BUFFERED)
    decoder.receive_data(data)
    (message,) = drain(decoder)
    assert message.header == header


@pytest.mark.parametrize(("proto", "strict", "framed"), FORMS, ids=FORM_IDS)
def test_application_exception_reads_in_thriftpy2(proto: str, strict: bool, framed: bool) -> None:
    transport = Transport.FRAMED if framed else Transport.BUFFERED
    wire = application_exception(
        "echo", 42, AppError.INTERNAL_ERROR, "no provider ✗", Proto(proto), transport, strict
    )
    if framed:
        assert struct.unpack(">i", wire[:4])[0] == len(wire) - 4
        wire = wire[4:]
    name, mtype, seqid, reader = read_message(wire, proto, strict)
    assert (name, mtype, seqid) == ("echo", MessageType.EXCEPTION, 42)
    exc = TApplicationException()
    exc.read(reader)
    assert (exc.type, exc.message) == (AppError.INTERNAL_ERROR, "no provider ✗")


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"\x80\x01", (Proto.BINARY, Transport.BUFFERED)),
        (b"\x82\x21", (Proto.COMPACT, Transport.BUFFERED)),
        (b"\x00\x00\x00\x10\x80", (Proto.BINARY, Transport.FRAMED)),
        (b"\x00\x00\x00\x10\x82", (Proto.COMPACT, Transport.FRAMED)),
        (b"\x00\x00\x00\x10\x00", (Proto.BINARY, Transport.FRAMED)),
        (b"\x00\x00\x00\x04p", (Proto.BINARY, Transport.BUFFERED)),
        (b"\x00\x00\x00", None),
        (b"", None),
    ],
)
def test_detect(first: bytes, expected: Any) -> None:
    assert detect(first) == expected


def refused(data: bytes, proto: Proto | None = None, transport: Transport | None = None) -> str:
    decoder = MessageDecoder(proto, transport, max_size=4096)
    decoder.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        drain(decoder)
    # Broken for good: the next call says so again.
    with pytest.raises(RemoteProtocolError):
        decoder.next_event()
    return str(info.value)


def test_garbage_is_refused() -> None:
    assert "first byte 0x47" in refused(b"GET / HTTP/1.1\r\n")
    assert "version" in refused(b"\x80\x02\x00\x01", Proto.BINARY, Transport.BUFFERED)
    assert "compact protocol id" in refused(b"\x81\x21", Proto.COMPACT, Transport.BUFFERED)
    assert "compact version" in refused(b"\x82\x22", Proto.COMPACT, Transport.BUFFERED)
    assert "frame length -1" in refused(b"\xff\xff\xff\xff", Proto.BINARY, Transport.FRAMED)
    assert "frame length 0" in refused(b"\x00\x00\x00\x00", Proto.BINARY, Transport.FRAMED)
    name = b"\x80\x01\x00\x01\x7f\xff\xff\xff"
    assert "name length" in refused(name, Proto.BINARY, Transport.BUFFERED)


def test_frame_over_the_limit_is_refused_unread() -> None:
    with pytest.raises(FrameTooLarge):
        d = MessageDecoder(Proto.BINARY, Transport.FRAMED, max_size=4096)
        d.receive_data(struct.pack(">i", 4097))
        d.next_event()


def test_buffered_message_over_the_limit() -> None:
    wire = call_bytes("record", 1, note="x" * 5000)
    decoder = MessageDecoder(max_size=4096)
    decoder.receive_data(wire[:4000])
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(wire[4000:4200])
    with pytest.raises(FrameTooLarge):
        decoder.next_event()
    # Complete at once, but still too large.
    decoder = MessageDecoder(max_size=4096)
    decoder.receive_data(wire)
    with pytest.raises(FrameTooLarge):
        decoder.next_event()


def test_truncated_frame() -> None:
    whole = call_bytes("echo", 1, framed=True, item=big_item())
    decoder = MessageDecoder()
    decoder.receive_data(whole[:-1])
    assert decoder.next_event() is NEED_DATA
    assert decoder.pending is not None and decoder.pending.name == "echo"
    # A frame whose length ends inside the header: a frame that lies.
    header_only = call_bytes("ping", 1)[:6]
    assert "past its frame" in refused(struct.pack(">i", 6) + header_only)
    # A framed body is not read by the decoder, but check_body finds a short one.
    body_short = call_bytes("echo", 1, item=big_item())[:-3]
    decoder = MessageDecoder(Proto.BINARY, Transport.FRAMED)
    decoder.receive_data(struct.pack(">i", len(body_short)) + body_short)
    (message,) = drain(decoder)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        check_body(message)
    trailing = call_bytes("ping", 1) + b"\x00"
    decoder = MessageDecoder(Proto.BINARY, Transport.FRAMED)
    decoder.receive_data(struct.pack(">i", len(trailing)) + trailing)
    with pytest.raises(RemoteProtocolError, match="after the message body"):
        check_body(drain(decoder)[0])


def nested_lists(proto: Proto, depth: int) -> bytes:
    head = encode_header(Header("m", 1, 1, proto))
    if proto is Proto.BINARY:
        # field 1: list<list<...>> of one element each, innermost an empty list of i32
        body = b"\x0f\x00\x01" + b"\x0f\x00\x00\x00\x01" * depth + b"\x08\x00\x00\x00\x00" + b"\x00"
    else:
        body = b"\x19" + b"\x19" * depth + b"\x05" + b"\x00"
    return head + body


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_depth_limit(proto: Proto) -> None:
    decoder = MessageDecoder(proto, Transport.BUFFERED)
    decoder.receive_data(nested_lists(proto, MAX_DEPTH - 3))
    assert len(drain(decoder)) == 1
    assert "deeper" in refused(nested_lists(proto, MAX_DEPTH + 1), proto, Transport.BUFFERED)


def test_bad_values() -> None:
    head = encode_header(Header("m", 1, 1, Proto.BINARY))
    assert "unknown binary type id 1" in refused(head + b"\x01\x00\x01", Proto.BINARY)
    negative = head + b"\x0f\x00\x01\x08\xff\xff\xff\xff"
    assert "negative container size" in refused(negative, Proto.BINARY, Transport.BUFFERED)
    string = head + b"\x0b\x00\x01\xff\xff\xff\xfe"
    assert "negative string length" in refused(string, Proto.BINARY, Transport.BUFFERED)
    chead = encode_header(Header("m", 1, 1, Proto.COMPACT))
    assert "unknown compact type id 14" in refused(chead + b"\x1e", Proto.COMPACT)
    overlong = chead + b"\x15" + b"\xff" * 6 + b"\x01"
    assert "varint" in refused(overlong, Proto.COMPACT, Transport.BUFFERED)


def test_huge_declared_count_costs_only_the_bytes_present() -> None:
    # list<i32> of 2**31-1 elements, 8 present: buffered waits for more, then hits the limit.
    head = encode_header(Header("m", 1, 1, Proto.BINARY))
    wire = head + b"\x0f\x00\x01\x08\x7f\xff\xff\xff" + b"\x00" * 32
    decoder = MessageDecoder(Proto.BINARY, Transport.BUFFERED, max_size=4096)
    decoder.receive_data(wire)
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"\x00" * 5000)
    with pytest.raises(FrameTooLarge):
        decoder.next_event()


def byte_list_call(proto: Proto, count: int) -> bytes:
    """A buffered CALL whose field 1 is a list<byte> of ``count`` elements."""
    head = encode_header(Header("m", 1, 1, proto))
    if proto is Proto.BINARY:
        return head + b"\x0f\x00\x01\x03" + struct.pack(">i", count) + b"\x07" * count + b"\x00"
    return head + b"\x19\xf3" + varint(count) + b"\x07" * count + b"\x00"


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def steps_to_decode(proto: Proto, count: int, piece: int) -> int:
    wire = byte_list_call(proto, count)
    decoder = MessageDecoder(proto, Transport.BUFFERED)
    messages: list[Message] = []
    for at in range(0, len(wire), piece):
        decoder.receive_data(wire[at : at + piece])
        messages += drain(decoder)
    assert [m.data for m in messages] == [wire]
    return decoder.steps


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
def test_a_buffered_message_in_many_reads_is_walked_once(proto: Proto) -> None:
    # Issue 25: each read re-walked the message from its start, so a 16M-element list in
    # 64 KiB reads took a minute of the loop. Now the walk resumes: the items looked at
    # are the elements plus one retry per read, whatever the pieces.
    small = steps_to_decode(proto, 4_000, 64)
    large = steps_to_decode(proto, 40_000, 64)
    assert large <= 10 * small * 1.05  # linear: ten times the bytes, ten times the work
    whole = steps_to_decode(proto, 40_000, 1 << 20)
    pieces = len(byte_list_call(proto, 40_000)) // 64 + 1
    assert large <= whole + 2 * pieces


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(LocalProtocolError):
        encode_header(Header("m", 1, 2**31, Proto.BINARY))
    with pytest.raises(LocalProtocolError):
        encode_header(Header("m", 8, 1, Proto.COMPACT))
