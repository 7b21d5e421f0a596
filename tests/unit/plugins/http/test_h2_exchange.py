"""Requests to HTTP/2 providers (plugins/http/h2_exchange.py, ``upstream_protocol: h2``)
in-process, against a provider on the agent's own engine that fails in HTTP/2's ways on
demand; nginx as the provider is in tests/integration/http/test_upstream_h2.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest

from agent.h2.connection import CANCEL
from tests.fixtures.net import async_wait_until
from tests.support.h2_provider import H2Provider
from tests.support.http_providers import config, url


@pytest.fixture
async def h2_providers() -> AsyncIterator[Callable[..., Any]]:
    started: list[H2Provider] = []

    async def start(name: str, **behaviour: Any) -> H2Provider:
        provider = await H2Provider(name, **behaviour).start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        await provider.stop()


def h2_config(ports: list[int], **service_options: Any) -> dict[str, Any]:
    raw = config(ports)
    raw["services"][0]["options"] = {"upstream_protocol": "h2", **service_options}
    return raw


async def test_a_refused_stream_is_sent_again(h2_providers: Any, agents: Any) -> None:
    provider = await h2_providers("a", refuse=1)
    agent = await agents(h2_config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        answer = await client.get("/x")
    assert answer.status_code == 200 and answer.json()["path"] == "/x"
    # The provider did not process the first stream (REFUSED_STREAM): it came again.
    assert len(provider.seen) == 2


async def test_fields_become_http2_headers(h2_providers: Any, agents: Any) -> None:
    provider = await h2_providers("a")
    agent = await agents(h2_config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        answer = await client.post(
            "/up?q=1", content=b"hello", headers={"Host": "svc.test", "X-App": "v"}
        )
    assert answer.status_code == 200 and answer.json()["size"] == 5
    (seen,) = provider.seen
    headers = seen.headers
    assert headers[b":method"] == b"POST" and headers[b":path"] == b"/up?q=1"
    assert headers[b":authority"] == b"svc.test" and headers[b":scheme"] == b"http"
    assert headers[b"x-app"] == b"v"  # lower-cased
    assert b"host" not in headers and b"connection" not in headers
    assert bytes(seen.body) == b"hello"


async def test_an_http1_client_gets_a_chunked_answer_with_its_trailers(
    h2_providers: Any, agents: Any
) -> None:
    provider = await h2_providers("a")
    agent = await agents(h2_config([provider.port]))
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /chunked HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    received = b""
    async with asyncio.timeout(5):
        while not received.endswith(b"\r\n\r\n") or b"0\r\n" not in received:
            received += await reader.read(65536)
    writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"x-upstream: a" in head
    assert body.endswith(b"0\r\nx-checksum: abc\r\n\r\n")


async def test_a_retry_rule_resets_the_answer_and_tries_elsewhere(
    h2_providers: Any, agents: Any
) -> None:
    busy = await h2_providers("busy", status=503)
    good = await h2_providers("good")
    raw = h2_config([busy.port, good.port])
    raw["governance"] = {
        "rules": {
            "rules": [
                {
                    "match": {"to": "api"},
                    "retry": {"attempts": 2, "budget": {"ratio": 1.0, "min_per_s": 10}},
                }
            ]
        }
    }
    agent = await agents(raw)
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        answers = [await client.get("/r") for _ in range(4)]
    assert [a.json()["name"] for a in answers] == ["good"] * 4
    assert len(busy.seen) >= 1


async def test_a_client_reset_cancels_the_provider_stream(h2_providers: Any, agents: Any) -> None:
    provider = await h2_providers("a")
    agent = await agents(h2_config([provider.port]))
    host, port = agent.listeners[0].address
    _reader, writer = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":path", "/hold"), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(1, headers, end_stream=True)
    writer.write(conn.data_to_send())
    await async_wait_until(lambda: provider.seen, what="the stream at the provider")
    conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    writer.write(conn.data_to_send())
    async with asyncio.timeout(5):
        await provider.resets.wait()
    writer.close()
    assert provider.seen[0].reset == CANCEL
    # The provider's connection stays for the next request.
    async with httpx.AsyncClient(base_url=url(agent), http1=False, http2=True) as client:
        assert (await client.get("/after")).status_code == 200
    assert provider.connections == 1


async def test_the_response_deadline_resets_the_provider_stream(
    h2_providers: Any, agents: Any
) -> None:
    provider = await h2_providers("a")
    agent = await agents(h2_config([provider.port], timeout_ms=200))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        slow = await client.get("/hold")
        fast = await client.get("/fast")
    assert slow.status_code == 504 and fast.status_code == 200
    async with asyncio.timeout(5):
        await provider.resets.wait()
    assert provider.seen[0].reset == CANCEL
