"""The link's handshake over real loopback sockets (TLS is agent/tls.py's and the
integration test's: tests/integration/zookeeper/test_gateway.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.gateway.link import LinkHandshake, LinkStats
from agent.gateway.preamble import encode
from agent.runtime.protocols import ListenerContext


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def link(timeout_s: float = 5.0) -> tuple[asyncio.Server, int, LinkStats, asyncio.Server]:
    upstream, upstream_port = await echo_server()
    cluster = Cluster("orders", RoundRobin())
    cluster.apply(Reset(1, (Instance("e", "127.0.0.1", upstream_port, revision=1),)))
    context = ListenerContext(
        ListenerConfig(port=1, service="orders", protocol="tcp"),
        ServiceConfig(name="orders"),
        cluster,
    )
    stats = LinkStats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: LinkHandshake({"orders": context}, timeout_s, stats), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1], stats, upstream


async def closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """What arrives before the link closes the connection (aborted: a reset is fine)."""
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        data = b""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return data


async def test_the_line_then_every_byte_is_relayed_to_the_service() -> None:
    server, port, stats, upstream = await link()
    async with server, upstream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = encode("orders", "a")
        writer.write(line[:5])  # the line in pieces, with the first bytes after it
        await writer.drain()
        writer.write(line[5:] + b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.write(b" again")
        assert await reader.readexactly(6) == b" again"
        writer.write_eof()
        assert await closed(reader, writer) == b""
    assert stats.accepted == 1 and stats.refused == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode("secret", "a") + b"x", "service 'secret' is not exported"),
        (b"GET / HTTP/1.1\r\n\r\n", "not a meshagent link"),
    ],
)
async def test_anything_but_an_exported_service_is_closed_and_logged(
    data: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, port, stats, upstream = await link()
    async with server, upstream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        assert await closed(reader, writer) == b""
    assert stats.refused == 1
    assert any(reason in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_connection_that_never_names_its_service_is_closed() -> None:
    server, port, stats, upstream = await link(timeout_s=0.05)
    async with server, upstream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"MESHAGENT-LI")  # and then nothing
        assert await closed(reader, writer) == b""
    assert stats.refused == 1
