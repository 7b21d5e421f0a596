"""The ``http`` health check against uvicorn-less small servers in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from agent.cluster.host import Host
from agent.discovery.types import Instance
from agent.plugins import PluginKind, load
from agent.runtime.health import probe
from plugins.http.health import HttpHealthChecker, HttpHealthConfig
from tests.fixtures.net import free_port

Reply = Callable[[bytes], bytes | None]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Reply], Any]]:
    servers: list[asyncio.Server] = []
    requests: list[bytes] = []

    async def start(reply: Reply) -> tuple[int, list[bytes]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                requests.append(head)
                answer = reply(head)
                if answer is None:
                    await reader.read()  # never answers; the probe's timeout ends it
                else:
                    writer.write(answer)
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(srv)
        return srv.sockets[0].getsockname()[1], requests

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def host(port: int) -> Host:
    return Host(Instance(f"127.0.0.1:{port}", "127.0.0.1", port, 100))


def status(code: int) -> Reply:
    return lambda _head: b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % code


async def test_expected_status_passes_and_others_fail(server: Any) -> None:
    checker = HttpHealthChecker(HttpHealthConfig(path="/ready", expected_statuses=[200, 204]))
    port, requests = await server(status(204))
    assert await probe(checker, host(port), 2)
    assert requests[0].startswith(b"GET /ready HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{port}".encode() in requests[0].lower()
    port, _ = await server(status(503))
    assert not await probe(checker, host(port), 2)


async def test_host_header_from_config(server: Any) -> None:
    port, requests = await server(status(200))
    checker = HttpHealthChecker(HttpHealthConfig(host="svc.internal"))
    assert await probe(checker, host(port), 2)
    assert b"host: svc.internal\r\n" in requests[0].lower()
    assert requests[0].startswith(b"GET /healthz ")


async def test_silence_garbage_and_closed_ports_fail(server: Any) -> None:
    checker = HttpHealthChecker(HttpHealthConfig())
    silent, _ = await server(lambda _head: None)
    assert not await probe(checker, host(silent), 0.2)
    garbage, _ = await server(lambda _head: b"SSH-2.0-OpenSSH\r\n\r\n")
    assert not await probe(checker, host(garbage), 2)
    closes, _ = await server(lambda _head: b"")
    assert not await probe(checker, host(closes), 2)
    assert not await probe(checker, host(free_port()), 2)


def test_config_is_validated_through_the_plugin() -> None:
    plugin = load(PluginKind.HEALTH_CHECKER, "http")
    assert isinstance(plugin.build({"path": "/h"}, "health.config"), HttpHealthChecker)
    with pytest.raises(ValidationError):
        HttpHealthConfig(path="no-slash")
    with pytest.raises(ValidationError):
        HttpHealthConfig(expected_statuses=[])
