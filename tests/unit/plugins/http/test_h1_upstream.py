"""The fast path's provider connections and their pool, against real sockets: an asyncio
server as the provider, a cluster of real endpoints (one of them a closed port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.errors import ConnectError, NoEndpointError
from plugins.http.h1_upstream import FastPool, UpstreamConnection
from tests.fixtures.net import async_wait_until, free_port

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Sink:
    """Records what the connection reports, as the listener's exchange would get it."""

    def __init__(self) -> None:
        self.heads: list[int] = []
        self.body = b""
        self.ended = asyncio.Event()
        self.failures: list[str] = []

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        self.heads.append(status)
        return False

    def response_body(self, data: bytes) -> None:
        self.body += data

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        pass

    def response_end(self) -> None:
        self.ended.set()

    def upstream_failed(self, reason: str) -> None:
        self.failures.append(reason)
        self.ended.set()

    def upstream_writable(self, writable: bool) -> None:
        pass

    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass


class Provider:
    """Answers every request head with RESPONSE; ``writers`` are its open connections."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def close_connections(self) -> None:
        for writer in self.writers:
            writer.close()


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    provider = Provider()
    server = await asyncio.start_server(provider.serve, "127.0.0.1", 0)
    provider.port = int(server.sockets[0].getsockname()[1])
    yield provider
    provider.close_connections()
    server.close()
    await server.wait_closed()


def cluster_of(*ports: int) -> Cluster:
    cluster = Cluster("svc", RoundRobin(), OutlierPolicy(enabled=False))
    instances = tuple(Instance(f"127.0.0.1:{p}", "127.0.0.1", p, revision=1) for p in ports)
    cluster.apply(Reset(1, instances))
    return cluster


async def get(connection: UpstreamConnection) -> Sink:
    sink = Sink()
    connection.start(sink, head_only=False)
    connection.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(sink.ended.wait(), 5)
    return sink


async def test_connection_is_reused_and_dropped_when_the_provider_closes_it(
    provider: Provider,
) -> None:
    port = provider.port
    pool = FastPool(max_idle_per_endpoint=4, idle_timeout_s=30)
    cluster = cluster_of(port)
    host = pool.choose(cluster, frozenset(), fresh=False)
    assert not isinstance(host, UpstreamConnection)  # nothing idle yet: connect
    connection = await pool.connect(cluster, ServiceConfig(name="svc"), host, frozenset())
    sink = await get(connection)
    assert sink.heads == [200] and sink.body == b"ok" and not sink.failures
    pool.release(connection)
    again = pool.choose(cluster, frozenset(), fresh=False)
    assert again is connection and connection.reused
    await get(connection)
    pool.release(connection)
    # The provider closes the idle connection: the pool learns it without a request.
    provider.close_connections()
    await async_wait_until(lambda: connection.closed, what="the idle connection to close")
    assert not isinstance(pool.choose(cluster, frozenset(), fresh=False), UpstreamConnection)


async def test_idle_connections_are_bounded(provider: Provider) -> None:
    port = provider.port
    pool = FastPool(max_idle_per_endpoint=1, idle_timeout_s=30)
    cluster = cluster_of(port)
    service = ServiceConfig(name="svc")
    host = pool.choose(cluster, frozenset(), fresh=True)
    assert not isinstance(host, UpstreamConnection)
    first = await pool.connect(cluster, service, host, frozenset())
    second = await pool.connect(cluster, service, host, frozenset())
    await get(first)
    await get(second)
    pool.release(first)
    pool.release(second)  # over the bound: closed
    assert second.closed and not first.closed
    pool.close()
    assert first.closed


async def test_connect_failure_moves_to_another_endpoint(
    provider: Provider,
) -> None:
    port = provider.port
    dead = free_port()
    pool = FastPool(max_idle_per_endpoint=4, idle_timeout_s=30)
    cluster = cluster_of(dead, port)
    service = ServiceConfig(name="svc", connect_attempts=2)
    dead_host = next(h for h in cluster.hosts() if h.instance.port == dead)
    connection = await pool.connect(cluster, service, dead_host, frozenset())
    assert connection.host.instance.port == port
    assert dead_host.stats.connect_failures == 1
    with pytest.raises(ConnectError, match="could not connect"):
        await pool.connect(cluster_of(dead), ServiceConfig(name="svc"), dead_host, frozenset())
    connection.close()


async def test_no_endpoint() -> None:
    pool = FastPool(max_idle_per_endpoint=4, idle_timeout_s=30)
    with pytest.raises(NoEndpointError):
        pool.choose(cluster_of(), frozenset(), fresh=False)


async def test_provider_closing_mid_response_reports_a_failure(
    provider: Provider,
) -> None:
    port = provider.port
    pool = FastPool(max_idle_per_endpoint=4, idle_timeout_s=30)
    cluster = cluster_of(port)
    host = pool.choose(cluster, frozenset(), fresh=False)
    assert not isinstance(host, UpstreamConnection)
    connection = await pool.connect(cluster, ServiceConfig(name="svc"), host, frozenset())
    sink = Sink()
    connection.start(sink, head_only=False)
    provider.close_connections()  # before any response
    connection.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(sink.ended.wait(), 5)
    assert sink.failures and not sink.heads
