"""The link's exporting side over real loopback sockets, driven by python-h2 (an HTTP/2
stack that is not ours); TLS is agent/tls.py's and the gateway tests'."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import h2.config
import h2.connection
import h2.events
import pytest

from agent.gateway.link import STREAM_WINDOW, LinkConnection, Pipe, TcpEnd
from tests.fixtures.net import async_wait_until


class Echo(asyncio.Protocol):
    """Writes back what it reads; closes after the peer's EOF (no task to outlive a test)."""

    def __init__(self, open_now: set[Echo]) -> None:
        self.open_now = open_now

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.open_now.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_now.discard(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.close()
        return False


async def echo_server() -> tuple[asyncio.Server, int, set[Echo]]:
    open_now: set[Echo] = set()
    server = await asyncio.get_running_loop().create_server(lambda: Echo(open_now), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], open_now


@contextlib.asynccontextmanager
async def exporting_link(timeout_s: float = 5.0) -> AsyncIterator[tuple[int, list[str]]]:
    """A link port whose one exported service, ``echo``, is an echo server."""
    upstream, upstream_port, echoes = await echo_server()
    asked: list[str] = []
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    def on_connect(link: LinkConnection, stream_id: int, service: str, source: str) -> None:
        asked.append(f"{service} from {source}")
        if service != "echo":
            link.answer(stream_id, 404)
            return
        pipe = Pipe(link, stream_id)
        link.pipes[stream_id] = pipe

        async def connect() -> None:
            await loop.create_connection(lambda: TcpEnd(pipe), "127.0.0.1", upstream_port)
            link.answer(stream_id, 200, end_stream=False)
            pipe.open = True
            pipe.flush()

        tasks.add(loop.create_task(connect()))

    server = await loop.create_server(
        lambda: LinkConnection(False, timeout_s, on_connect), "127.0.0.1", 0
    )
    async with server, upstream:
        yield server.sockets[0].getsockname()[1], asked
        # Every provider connection ends with its stream or its link.
        await async_wait_until(lambda: not echoes, what="the provider connections closed")


class Client:
    """python-h2 on an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def events(self) -> list[h2.events.Event]:
        data = await asyncio.wait_for(self.reader.read(65536), 5)
        if not data:
            raise ConnectionError("closed")
        events = self.h2.receive_data(data)
        self.flush()
        return events

    async def connect(self, service: str, method: str = "CONNECT") -> tuple[int, int]:
        stream = self.h2.get_next_available_stream_id()
        headers = [(":method", method), (":authority", service)]
        if method != "CONNECT":
            headers += [(":scheme", "https"), (":path", "/")]
        self.h2.send_headers(stream, [*headers, ("meshagent-source-dc", "a")])
        self.flush()
        while True:
            for event in await self.events():
                if isinstance(event, h2.events.ResponseReceived):
                    return stream, int(dict(event.headers)[b":status"])


async def client(port: int) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Client(reader, writer)


async def test_a_connect_stream_is_relayed_both_ways_with_flow_control() -> None:
    async with exporting_link() as (port, asked):
        peer = await client(port)
        stream, status = await peer.connect("echo")
        assert status == 200 and asked == ["echo from a"]
        # Four windows' worth: the relay gives the window back only as the echo takes it.
        payload = bytes(range(256)) * (4 * STREAM_WINDOW // 256)
        sent, received, ended = 0, bytearray(), False
        while len(received) < len(payload):
            window = min(peer.h2.local_flow_control_window(stream), 16384)
            if sent < len(payload) and window:
                peer.h2.send_data(stream, payload[sent : sent + window])
                sent += window
                peer.flush()
                if sent < len(payload):
                    continue
            for event in await peer.events():
                if isinstance(event, h2.events.DataReceived):
                    received += event.data
                    peer.h2.acknowledge_received_data(event.flow_controlled_length, stream)
            peer.flush()
        assert bytes(received) == payload
        peer.h2.end_stream(stream)  # half-close: the echo server closes, the stream ends
        peer.flush()
        while not ended:
            ended = any(isinstance(e, h2.events.StreamEnded) for e in await peer.events())
        await peer.close()


async def test_a_service_not_exported_is_answered_404_and_other_methods_405() -> None:
    async with exporting_link() as (port, asked):
        peer = await client(port)
        assert (await peer.connect("secret"))[1] == 404
        assert (await peer.connect("echo", method="GET"))[1] == 405
        assert asked == ["secret from a"]
        await peer.close()


async def test_a_link_that_never_speaks_http2_is_closed() -> None:
    async with exporting_link(timeout_s=0.05) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PRI * HTTP/2.0\r\n")  # and then nothing
        with contextlib.suppress(ConnectionResetError):
            while await asyncio.wait_for(reader.read(65536), 5):
                pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_reset_stream_closes_its_provider_connection() -> None:
    async with exporting_link() as (port, _):
        peer = await client(port)
        stream, status = await peer.connect("echo")
        assert status == 200
        peer.h2.reset_stream(stream)
        peer.flush()
        # The link stays usable for the next stream.
        assert (await peer.connect("echo"))[1] == 200
        await peer.close()


@pytest.mark.parametrize("service", ["echo"])
async def test_many_streams_share_one_link(service: str) -> None:
    async with exporting_link() as (port, asked):
        peer = await client(port)
        streams = [await peer.connect(service) for _ in range(20)]
        assert [status for _, status in streams] == [200] * 20 and len(asked) == 20
        for stream, _ in streams:
            peer.h2.send_data(stream, f"{stream};".encode())
        peer.flush()
        echoed: dict[int, bytes] = {}
        while len(echoed) < 20:
            for event in await peer.events():
                if isinstance(event, h2.events.DataReceived):
                    echoed[event.stream_id] = echoed.get(event.stream_id, b"") + event.data
        assert echoed == {stream: f"{stream};".encode() for stream, _ in streams}
        await peer.close()


async def test_a_link_whose_peer_stops_reading_is_pinged_then_closed() -> None:
    """Our link to a peer that froze (it stopped reading: no ACK comes, no reset either):
    a PING after ``ping_interval_s`` of silence, closed ``timeout_s`` later. A peer that
    answers keeps the link however long it is idle."""
    loop = asyncio.get_running_loop()
    peers: list[LinkConnection] = []

    def accept() -> LinkConnection:
        peers.append(LinkConnection(False, 5.0))
        return peers[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, lively = await loop.create_connection(
            lambda: LinkConnection(True, 0.2, ping_interval_s=0.05), "127.0.0.1", port
        )
        await lively.ready
        _, doomed = await loop.create_connection(
            lambda: LinkConnection(True, 0.2, ping_interval_s=0.05), "127.0.0.1", port
        )
        await doomed.ready
        frozen = peers[1].transport
        assert frozen is not None
        frozen.pause_reading()  # the peer's process froze: it reads (and answers) nothing
        await asyncio.wait_for(asyncio.shield(doomed.lost), 5)
        assert not lively.closed and lively.pings > 0  # pinged, answered, kept
        assert lively.transport is not None
        lively.transport.close()
        frozen.close()
        await asyncio.wait_for(asyncio.shield(lively.lost), 5)
