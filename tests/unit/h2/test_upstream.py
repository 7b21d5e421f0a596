"""The pool of HTTP/2 provider connections (agent/h2/upstream.py) against a provider made of
the agent's own engine in the server role, in-process: stream limits, GOAWAY, liveness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.h2.connection import Connection, Handler, Settings
from agent.h2.upstream import EndpointBusy, H2Pool, H2Upstream, StreamSink
from tests.fixtures.net import async_wait_until


class Provider(Handler):
    """One provider connection: counts the streams it is asked to open and the PINGs
    that reach it; answers nothing (the tests decide what it sends)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn = Connection(
            self, client=False, settings=Settings(max_concurrent_streams=server.max_streams)
        )
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.append(self)
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.server.pings += data.count(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00")
        self.conn.receive(data)
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())

    def headers_received(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], kind: int, end_stream: bool
    ) -> None:
        self.server.requests += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.closed += 1

    def eof_received(self) -> None:
        return None


class Server:
    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.connections: list[Provider] = []
        self.requests = 0
        self.pings = 0
        self.closed = 0
        self.port = 0

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Provider(self), "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        return self

    def close(self) -> None:
        self._server.close()
        for provider in self.connections:
            if provider.transport is not None:
                provider.transport.close()


class Sink(StreamSink):
    """Records what the pool tells a stream's owner."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def response_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.events.append("headers")

    def response_data(self, data: bytes, flow: int) -> None:
        self.events.append("data")

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.events.append("end")

    def upstream_reset(self, code: int) -> None:
        self.events.append(f"reset {code}")

    def upstream_writable(self) -> None:
        pass

    def upstream_unprocessed(self) -> None:
        self.events.append("unprocessed")

    def upstream_lost(self, why: str) -> None:
        self.events.append(f"lost: {why}")

    def flush_downstream(self) -> None:
        pass


@pytest.fixture
async def pools() -> AsyncIterator[list[Any]]:
    """Pools and servers, closed after the test."""
    made: list[Any] = []
    yield made
    for each in made:
        each.close()
    await asyncio.sleep(0)  # the transports' close callbacks run


def open_stream(upstream: H2Upstream, sink: StreamSink) -> int:
    stream_id = upstream.conn.open_stream()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"x"),
    ]
    upstream.conn.send_headers(stream_id, headers)
    upstream.streams[stream_id] = sink
    upstream.flush()
    return stream_id


async def test_another_connection_when_the_provider_stream_limit_is_reached(
    pools: list[Any],
) -> None:
    server = await Server(max_streams=2).start()
    pool = H2Pool(Settings(), max_connections_per_endpoint=2)
    pools += [pool, server]
    address = f"127.0.0.1:{server.port}"
    sinks = [Sink() for _ in range(4)]
    upstreams = []
    for sink in sinks:
        upstream = await pool.connect("127.0.0.1", server.port, address)
        open_stream(upstream, sink)
        upstreams.append(upstream)
    # Used only once the provider's SETTINGS said 2: two streams on each of two.
    assert upstreams[0] is upstreams[1] and upstreams[2] is upstreams[3]
    assert upstreams[0] is not upstreams[2]
    assert pool.open_to([address]) == 2 and pool.ready(address) is None
    with pytest.raises(EndpointBusy):
        await pool.connect("127.0.0.1", server.port, address)
    await async_wait_until(lambda: server.requests == 4, what="four streams at the provider")
    assert len(server.connections) == 2


async def test_goaway_tells_the_streams_it_did_not_process(pools: list[Any]) -> None:
    server = await Server(max_streams=10).start()
    pool = H2Pool(Settings())
    pools += [pool, server]
    address = f"127.0.0.1:{server.port}"
    upstream = await pool.connect("127.0.0.1", server.port, address)
    first, second = Sink(), Sink()
    open_stream(upstream, first)
    open_stream(upstream, second)
    await async_wait_until(lambda: server.requests == 2, what="both streams at the provider")
    provider = server.connections[0]
    provider.conn.last_remote_id = 1  # GOAWAY naming the first stream as the last processed
    provider.conn.goaway()
    assert provider.transport is not None
    provider.transport.write(provider.conn.data_to_send())
    await async_wait_until(lambda: second.events, what="the second stream to hear")
    assert second.events == ["unprocessed"] and first.events == []
    assert pool.ready(address) is None  # no new streams on a connection going away


async def test_a_silent_provider_is_pinged_then_dropped(pools: list[Any]) -> None:
    server = await Server(max_streams=10).start()
    pool = H2Pool(Settings(), ping_interval_s=0.05, ping_timeout_s=0.1)
    pools += [pool, server]
    address = f"127.0.0.1:{server.port}"
    upstream = await pool.connect("127.0.0.1", server.port, address)
    # Idle: no pings (gRPC servers count them against the client).
    loop = asyncio.get_running_loop()
    idle_until = loop.time() + 0.3
    await async_wait_until(lambda: loop.time() > idle_until, what="a few ping intervals")
    assert server.pings == 0
    sink = Sink()
    open_stream(upstream, sink)
    await async_wait_until(lambda: server.pings >= 1, what="a ping while a stream is open")
    provider: Any = server.connections[0]
    provider.transport.pause_reading()  # frozen: the next ping goes unanswered
    await async_wait_until(lambda: sink.events, what="the stream to hear of the loss")
    assert sink.events == ["lost: meshagent: no answer to a ping within 0.1s"]
    assert upstream.closed and pool.ready(address) is None


async def test_a_finished_dial_not_yet_forgotten_is_not_awaited_again(
    pools: list[Any],
) -> None:
    """The window the relay met under load (issue 25's class: one call stalled the whole
    event loop): a dial has finished, others have filled its connection, and the callback
    that forgets it has not run yet. A caller in that window must make another connection;
    awaiting the finished dial again never yields, so the loop would spin for good."""
    server = await Server(max_streams=2).start()
    pool = H2Pool(Settings(), max_connections_per_endpoint=8)
    pools += [pool, server]
    address = f"127.0.0.1:{server.port}"
    first = await pool.connect("127.0.0.1", server.port, address)
    open_stream(first, Sink())
    open_stream(first, Sink())  # full: the provider allows 2
    finished: asyncio.Future[H2Upstream] = asyncio.get_running_loop().create_future()
    finished.set_result(first)
    pool._connecting[address] = finished  # made, filled, not yet forgotten
    second = await pool.connect("127.0.0.1", server.port, address)
    assert second is not first and second.available
    assert pool.open_to([address]) == 2
