"""The Thrift side of the shared multiplexing pool: seqids as ids, the wire form as kind."""

from __future__ import annotations

import pytest

from agent.codec import NEED_DATA
from plugins.thrift.codec import (
    SEQID_MASK,
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    encode_header,
    frame,
)
from plugins.thrift.upstream import ThriftCodec, UpstreamPool


def message(proto: Proto, seqid: int, mtype: int = MessageType.CALL) -> Message:
    data = encode_header(Header("ping", mtype, seqid, proto)) + b"\x00"
    decoder = MessageDecoder(proto, Transport.BUFFERED)
    decoder.receive_data(data)
    out = decoder.next_event()
    assert out is not NEED_DATA and isinstance(out, Message)
    return out


@pytest.mark.parametrize("proto", [Proto.BINARY, Proto.COMPACT])
@pytest.mark.parametrize("transport", [Transport.FRAMED, Transport.BUFFERED])
def test_calls_go_out_under_the_pools_seqid_in_the_kinds_wire_form(
    proto: Proto, transport: Transport
) -> None:
    codec = UpstreamPool(1.0, 65536).codec((proto, transport))
    assert isinstance(codec, ThriftCodec) and codec.max_id == SEQID_MASK
    wire = codec.encode(message(proto, -3), 2**31 - 1)
    decoder = codec.decoder()
    decoder.receive_data(wire)
    sent = decoder.next_event()
    assert isinstance(sent, Message)
    assert sent.header.seqid == 2**31 - 1
    assert codec.response_id(sent) == 2**31 - 1
    if transport is Transport.FRAMED:
        assert wire == frame(sent.data, transport)


def test_one_codec_per_wire_form() -> None:
    pool = UpstreamPool(1.0, 65536)
    binary = pool.codec((Proto.BINARY, Transport.FRAMED))
    assert pool.codec((Proto.BINARY, Transport.FRAMED)) is binary
    assert pool.codec((Proto.COMPACT, Transport.FRAMED)) is not binary
