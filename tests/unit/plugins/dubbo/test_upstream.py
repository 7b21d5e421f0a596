"""The Dubbo side of the shared multiplexing pool: ids, heartbeats, READONLY, keep-alives.

Bytes only (the pool itself is tested against a real process in tests/unit/runtime, and
with the Java provider in tests/interop); a connection over a recording transport shows
what the codec makes it write.
"""

from __future__ import annotations

from typing import Any

from agent.cluster.host import Host
from agent.codec import NEED_DATA
from agent.discovery.types import Instance
from plugins.dubbo.body import heartbeat_request, request_frame, value_response_frame
from plugins.dubbo.frame import Frame, FrameDecoder
from plugins.dubbo.upstream import DubboCodec, UpstreamConnection, UpstreamPool

HOST = Host(Instance("p", "127.0.0.1", 20880))


class Recorder:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, chunks: list[bytes]) -> None:
        self.data += b"".join(chunks)

    def is_closing(self) -> bool:
        return False

    def frames(self) -> list[Frame]:
        decoder = FrameDecoder()
        decoder.receive_data(self.data)
        out = []
        while (frame := decoder.next_event()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            out.append(frame)
        return out


def connected() -> tuple[UpstreamConnection, Recorder]:
    connection = UpstreamConnection(HOST, DubboCodec())
    transport = Recorder()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def decode(data: bytes) -> Frame:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    frame = decoder.next_event()
    assert isinstance(frame, Frame)
    return frame


def test_requests_get_fresh_ids_whatever_id_they_carried() -> None:
    codec = DubboCodec()
    assert codec.max_id == 2**63 - 1
    raw = request_frame(99, b"N")
    assert decode(codec.encode(raw, 5)).header.request_id == 5
    assert decode(codec.encode(decode(raw), 6)).header.request_id == 6
    answer = decode(value_response_frame(7, "x"))
    assert codec.response_id(answer) == 7
    assert codec.response_id(decode(heartbeat_request(8))) is None  # the provider's event


async def test_a_providers_heartbeat_is_answered_and_matches_no_request() -> None:
    connection, transport = connected()
    got: list[Any] = []
    request_id = connection.send(request_frame(0, b"N"), got.append)
    connection.data_received(heartbeat_request(request_id))  # same id, but a request
    assert got == []  # not taken for the answer
    heartbeat_answer = transport.frames()[-1]
    assert heartbeat_answer.header.event and not heartbeat_answer.header.request
    assert heartbeat_answer.header.request_id == request_id
    connection.data_received(value_response_frame(request_id, "ok"))
    assert len(got) == 1 and isinstance(got[0], Frame)


async def test_readonly_drains_the_connection_in_flight_requests_still_answered() -> None:
    pool = UpstreamPool()
    connection, _transport = connected()
    pool.add(connection)
    got: list[Any] = []
    request_id = connection.send(request_frame(0, b"N"), got.append)
    readonly = bytearray(heartbeat_request(0))
    readonly[-1:] = b"R"  # an event whose data is not null: READONLY
    connection.data_received(bytes(readonly))
    assert connection.draining
    assert pool.live(HOST) is None  # new requests go to another connection
    connection.data_received(value_response_frame(request_id, "late but fine"))
    assert len(got) == 1 and isinstance(got[0], Frame)


async def test_the_keepalive_is_a_heartbeat_request() -> None:
    connection, transport = connected()
    connection.send_keepalive()
    (frame,) = transport.frames()
    assert frame.header.event and frame.header.request and frame.header.two_way


async def test_readonly_drains_the_host_past_the_connection_that_said_it() -> None:
    host = Host(Instance("q", "127.0.0.1", 20881))
    connection = UpstreamConnection(host, DubboCodec())
    connection.connection_made(Recorder())  # type: ignore[arg-type]
    readonly = bytearray(heartbeat_request(0))
    readonly[-1:] = b"R"
    connection.data_received(bytes(readonly))
    assert host.draining and host.stats.drains == 1
    connection.connection_lost(None)  # the provider closes it: its process is exiting
    assert host.draining  # a new connection now would reach the exiting process
