"""A transcoding listener's connections: the HTTP/2 preface hands the connection, with every
byte read, to the h2 relay; anything else is served as HTTP/1.1; a connection that says
nothing is closed. On a real loopback socket; the relay here records what it was given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.h2.connection import PREFACE
from agent.runtime.protocols import ListenerContext
from plugins.grpc import front
from plugins.grpc.channels import ChannelPool
from plugins.grpc.reflection import DescriptorCache


class _Relay(asyncio.Protocol):
    """Stands in for the h2 relay's protocol: keeps what it is given."""

    def __init__(self, made: list[_Relay], changed: asyncio.Event) -> None:
        made.append(self)
        self.changed = changed
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.changed.set()


class _Listener:
    def __init__(
        self, context: ListenerContext, port: int, relays: list[_Relay], changed: asyncio.Event
    ) -> None:
        self.context = context
        self.port = port
        self.relays = relays
        self.changed = changed

    async def relayed(self) -> bytes:
        """What the (first) relay has been given so far, once there is one."""
        while not self.relays:
            await self.changed.wait()
            self.changed.clear()
        return self.relays[0].data


@pytest.fixture
async def listener() -> AsyncIterator[_Listener]:
    service = ServiceConfig(name="library", protocol="grpc")
    cluster = Cluster("library", RoundRobin())  # no provider: transcoded calls get 503
    context = ListenerContext(
        ListenerConfig(port=1, service="library", protocol="grpc"), service, cluster
    )
    relays: list[_Relay] = []
    changed = asyncio.Event()
    pool = ChannelPool(1 << 20)
    factory = front.protocol_factory(
        context, pool, DescriptorCache(5.0), 1 << 20, lambda: _Relay(relays, changed)
    )
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield _Listener(context, server.sockets[0].getsockname()[1], relays, changed)
    finally:
        server.close()
        await pool.close()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize("split", [1, 5, 23, 24])
async def test_http2_preface_in_pieces_goes_to_the_relay_whole(
    listener: _Listener, split: int
) -> None:
    _reader, writer = await _connect(listener.port)
    frames = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
    writer.write(PREFACE[:split])
    await writer.drain()
    writer.write(PREFACE[split:] + frames)
    async with asyncio.timeout(5):
        while await listener.relayed() != PREFACE + frames:
            await listener.changed.wait()
            listener.changed.clear()
    assert len(listener.relays) == 1
    # The relay counts the connection in itself; the sniffer counted it out.
    assert len(listener.context.connections) == 0
    writer.close()


async def test_http1_is_served_as_http1(listener: _Listener) -> None:
    reader, writer = await _connect(listener.port)
    writer.write(b"GET /v1/shelves/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    # No provider: the API's problem details, from the transcoding path.
    assert head.startswith(b"HTTP/1.1 503 ")
    assert listener.relays == []
    assert len(listener.context.connections) == 1  # counted in while it is served
    writer.close()
    async with asyncio.timeout(5):
        await listener.context.idle.wait()


async def test_a_cut_preface_is_http1_and_refused(listener: _Listener) -> None:
    reader, writer = await _connect(listener.port)
    writer.write(PREFACE[:10])
    writer.write_eof()
    async with asyncio.timeout(5):
        answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert listener.relays == []
    writer.close()


async def test_closed_before_a_byte_is_counted_out(listener: _Listener) -> None:
    reader, writer = await _connect(listener.port)
    writer.write_eof()
    async with asyncio.timeout(5):
        assert await reader.read() == b""
        await listener.context.idle.wait()
    assert listener.relays == []
    writer.close()


async def test_a_silent_connection_is_closed(
    listener: _Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front, "_SNIFF_TIMEOUT_S", 0.05)
    reader, writer = await _connect(listener.port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""
        await listener.context.idle.wait()
    assert listener.relays == []
    writer.close()
