"""The HTTP listener in-process, against small h11 providers: what is awkward to provoke
with uvicorn or nginx (connections closed at odd moments, pool reuse, stop)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import httpx
import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.runtime.agent import Agent
from plugins.http.config import HttpRoute
from plugins.http.routing import Router, service_target
from tests.fixtures.net import async_wait_until
from tests.support.http_providers import config, url


async def test_upstream_connections_are_pooled(providers: Any, agents: Any) -> None:
    provider = await providers("a")
    agent = await agents(config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        for i in range(5):
            response = await client.get(f"/n/{i}")
            assert response.json() == {"name": "a", "path": f"/n/{i}"}
    assert provider.connections == 1
    stats = agent.listeners[0].context.stats
    assert stats.requests == 5 and stats.request_errors == 0


async def test_provider_closing_kept_alive_connections(providers: Any, agents: Any) -> None:
    provider = await providers("a", mode="close_after")
    agent = await agents(config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        for i in range(5):
            assert (await client.get(f"/{i}")).status_code == 200
    assert provider.connections == 5


async def test_short_body_from_provider_cuts_the_client(providers: Any, agents: Any) -> None:
    provider = await providers("a", mode="short_body")
    agent = await agents(config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/x")


async def test_client_gone_mid_upload_closes_the_provider_side(providers: Any, agents: Any) -> None:
    provider = await providers("a")
    agent = await agents(config([provider.port]))
    host, port = agent.listeners[0].address
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    await async_wait_until(lambda: provider.open == 1, what="the upload to reach the provider")
    writer.close()
    await writer.wait_closed()
    await async_wait_until(lambda: provider.open == 0, what="the provider side to close")
    await async_wait_until(lambda: agent.open_connections() == 0, what="the client side to go")
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        assert (await client.get("/after")).status_code == 200


async def test_no_endpoint_counts_as_an_agent_error(agents: Any) -> None:
    agent = await agents(config([], routes=[{"path_prefix": "/e/", "service": "empty"}]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        response = await client.get("/e/x")
    assert response.status_code == 503
    assert response.json()["service"] == "empty"
    assert agent.listeners[0].context.stats.request_errors == 1


async def test_stop_ends_idle_keep_alive_clients(providers: Any) -> None:
    provider = await providers("a")
    agent = Agent(parse_config(config([provider.port])))
    await agent.start()
    client = httpx.AsyncClient(base_url=url(agent))
    try:
        assert (await client.get("/x")).status_code == 200
        assert agent.open_connections() == 1
        await agent.drain_and_stop()
        assert agent.open_connections() == 0
    finally:
        await client.aclose()


async def test_routes_naming_unknown_services_are_refused_with_their_path() -> None:
    # When the agent is built, so check-config refuses them too (it builds the agent).
    with pytest.raises(ConfigError, match=r"routes\[0\]\.service: unknown service 'nope'"):
        Agent(parse_config(config([1], routes=[{"service": "nope"}])))


async def test_router_matches_host_without_port_and_path_prefix() -> None:
    agent = Agent(parse_config(config([1])))
    context = agent.listeners[0].context
    routes = [
        HttpRoute(host="Svc.Example", path_prefix="/v2/", service="empty"),
        HttpRoute(host="[::1]", service="empty"),
    ]
    router = Router(context, routes)
    empty = router.targets["empty"]
    assert router.route(b"svc.example:8080", b"/v2/items?x=1") is empty
    assert router.route(b"SVC.EXAMPLE", b"/v2/") is empty
    assert router.route(b"svc.example", b"/v1/items") is router.default
    assert router.route(b"[::1]:80", b"/") is empty
    assert router.route(None, b"/v2/") is router.default
    assert service_target(context.service, context.cluster).timeout_s == 15.0
    with contextlib.suppress(Exception):
        await agent.stop()


async def exchange_raw(agent: Agent, data: bytes, responses: int) -> bytes:
    """Send ``data`` on one connection and read until ``responses`` complete responses
    (each ending its body, by Content-Length or the last chunk) have come back."""
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(10):
            while received.count(b"HTTP/1.1 ") < responses or not _complete(received):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
    finally:
        writer.close()
    return received


def _complete(received: bytes) -> bool:
    last = received[received.rfind(b"HTTP/1.1 ") :]
    if b"\r\n\r\n" not in last:
        return False
    head, body = last.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    if length:
        return len(body) >= int(length.group(1))
    return body.endswith(b"\r\n\r\n")  # the last chunk (and trailers) ends so


async def test_head_response_does_not_wait_for_a_body(raw_provider: Any, agents: Any) -> None:
    # llhttp cannot be told a response answers HEAD: the connection must still serve the
    # next request (the provider's one connection), not take its response for a body.
    provider = await raw_provider(
        {
            b"/h": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"/g": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        }
    )
    agent = await agents(config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent)) as client:
        head = await client.head("/h")
        assert head.headers["content-length"] == "5" and head.content == b""
        assert (await client.get("/g")).content == b"hello"
    assert provider.connections == 1


async def test_close_delimited_body_is_chunked_for_the_client(
    raw_provider: Any, agents: Any
) -> None:
    provider = await raw_provider(
        {
            b"/c": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
            b"until close",
            b"/n": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
        }
    )
    agent = await agents(config([provider.port]))
    answer = await exchange_raw(
        agent, b"GET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /n HTTP/1.1\r\nHost: x\r\n\r\n", 2
    )
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert b"transfer-encoding: chunked" in first.lower()
    assert b"connection: close" not in first.lower()
    assert first.endswith(b"b\r\nuntil close\r\n0\r\n\r\n")
    assert second.endswith(b"\r\n\r\nnext")
    assert provider.connections == 2


async def test_chunked_trailers_pass_both_ways(raw_provider: Any, agents: Any) -> None:
    provider = await raw_provider(
        {
            b"/t": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
        }
    )
    agent = await agents(config([provider.port]))
    answer = await exchange_raw(agent, b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert answer.endswith(b"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")
    assert b"trailer:" not in answer.lower()  # hop-by-hop, dropped


async def test_http10_client_gets_its_answer_and_the_close(raw_provider: Any, agents: Any) -> None:
    provider = await raw_provider({b"/a": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    agent = await agents(config([provider.port]))
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /a HTTP/1.0\r\n\r\n")
    async with asyncio.timeout(10):
        answer = await reader.read(-1)  # to the agent's close
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in answer and answer.endswith(b"\r\n\r\nok")


async def test_pipelined_uploads_are_answered_in_order(raw_provider: Any, agents: Any) -> None:
    provider = await raw_provider(
        {b"/%d" % i: b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i for i in range(4)}
    )
    agent = await agents(config([provider.port]))
    requests = b"".join(
        b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nb%02d" % (i, i) for i in range(4)
    )
    answer = await exchange_raw(agent, requests, 4)
    assert [part[-1:] for part in answer.split(b"HTTP/1.1 ")[1:]] == [b"0", b"1", b"2", b"3"]
    assert [r.split(b" ")[1] for r in provider.requests] == [b"/0", b"/1", b"/2", b"/3"]
    assert agent.listeners[0].context.stats.requests == 4


async def test_bytes_are_counted_per_listener_and_route(raw_provider: Any, agents: Any) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    provider = await raw_provider({b"/a": answer, b"/e/x": answer})
    agent = await agents(
        config([provider.port], routes=[{"path_prefix": "/e/", "service": "empty"}])
    )
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    second = b"GET /e/x HTTP/1.1\r\nHost: x\r\n\r\n"  # "empty" has no endpoint: 503
    received = await exchange_raw(agent, first + second, 2)
    await async_wait_until(lambda: agent.open_connections() == 0, what="the client to go")
    stats = agent.listeners[0].context.stats
    assert stats.bytes_in == len(first + second)
    assert stats.bytes_out == len(received)
    api, empty = stats.routes["api"], stats.routes["empty"]
    assert (api.requests, empty.requests) == (1, 1)
    assert api.bytes_in == len(provider.requests[0]) + 3  # the head as forwarded, the body
    assert api.bytes_out == len(answer)
    assert empty.bytes_in == 0 and empty.bytes_out == len(received) - len(answer)


def drain_config(port: int) -> dict[str, Any]:
    raw = config([port])
    raw["drain_timeout_s"] = 30  # a drain that waited for idle clients would fail the test
    return raw


async def test_drain_closes_idle_keep_alive_clients_at_once(raw_provider: Any) -> None:
    provider = await raw_provider({b"/a": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    agent = Agent(parse_config(drain_config(provider.port)))
    await agent.start()
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 OK")
    async with asyncio.timeout(5):
        await agent.drain_and_stop()
        assert await reader.read() == b""  # closed by the agent, not by the drain timeout
    writer.close()


async def test_drain_lets_a_busy_response_finish_with_connection_close(
    raw_provider: Any,
) -> None:
    provider = await raw_provider({b"/slow": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"})
    provider.gated.add(b"/slow")
    agent = Agent(parse_config(drain_config(provider.port)))
    await agent.start()
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await async_wait_until(lambda: provider.requests, what="the request to reach the provider")
    drain = asyncio.create_task(agent.drain_and_stop())
    await async_wait_until(lambda: agent.draining, what="the drain to start")
    assert not drain.done()
    provider.gate.set()
    async with asyncio.timeout(5):
        answer = await reader.read()  # to the agent's close, after the response
        await drain
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\ndone")
    assert b"Connection: close\r\n" in answer


async def test_drain_sends_http2_clients_goaway_and_finishes_their_streams(
    raw_provider: Any,
) -> None:
    import h2.config
    import h2.connection
    import hyperframe.frame

    provider = await raw_provider({b"/slow": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"})
    provider.gated.add(b"/slow")
    agent = Agent(parse_config(drain_config(provider.port)))
    await agent.start()
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [(":method", "GET"), (":path", "/slow"), (":scheme", "http"), (":authority", "x")]
    client.send_headers(1, headers, end_stream=True)
    writer.write(client.data_to_send())
    await async_wait_until(lambda: provider.requests, what="the stream to reach the provider")
    drain = asyncio.create_task(agent.drain_and_stop())
    # Frames read with hyperframe: h2's own state machine closes on GOAWAY, refusing the
    # stream's frames that still follow it.
    buffer = b""

    async def next_frame() -> hyperframe.frame.Frame | None:
        nonlocal buffer
        while True:
            if len(buffer) >= 9:
                frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) >= 9 + length:
                    frame.parse_body(memoryview(buffer[9 : 9 + length]))
                    buffer = buffer[9 + length :]
                    return frame
            data = await reader.read(65536)
            if not data:
                return None
            buffer += data

    body = b""
    async with asyncio.timeout(5):
        while not isinstance(frame := await next_frame(), hyperframe.frame.GoAwayFrame):
            assert frame is not None
        assert frame.error_code == 0 and frame.last_stream_id == 1
        provider.gate.set()
        while (frame := await next_frame()) is not None:
            if isinstance(frame, hyperframe.frame.DataFrame) and frame.stream_id == 1:
                body += frame.data
        await drain
    writer.close()
    assert body == b"done"


async def test_response_deadline_per_request_on_one_connection(
    raw_provider: Any, agents: Any
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    provider = await raw_provider({b"/slow": ok, b"/fast": ok})
    provider.gated.add(b"/slow")  # never answered: the gate stays shut
    raw = config([provider.port])
    raw["services"][0]["options"] = {"timeout_ms": 300}
    agent = await agents(raw)
    async with httpx.AsyncClient(base_url=url(agent), timeout=10) as client:
        for _ in range(2):
            started = asyncio.get_running_loop().time()
            slow = await client.get("/slow")
            elapsed = asyncio.get_running_loop().time() - started
            assert slow.status_code == 504 and slow.json()["service"] == "api"
            assert 0.25 <= elapsed < 5
            # Each request has its own deadline: quick ones after a timeout are not cut.
            for _ in range(3):
                assert (await client.get("/fast")).status_code == 200


async def test_sizes_read_are_bounded_both_ways(raw_provider: Any, agents: Any) -> None:
    huge = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    provider = await raw_provider(
        {
            b"/big-head": b"HTTP/1.1 200 OK\r\n" + huge * 70 + b"Content-Length: 0\r\n\r\n",
            b"/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"/held": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        }
    )
    provider.gated.add(b"/held")  # no answer while the request is still coming
    agent = await agents(config([provider.port]))
    async with httpx.AsyncClient(base_url=url(agent), timeout=10) as client:
        # A provider's response head over 64 KiB: the agent's 502, not unbounded memory.
        response = await client.get("/big-head")
        assert response.status_code == 502 and "over 65536 bytes" in response.json()["detail"]
        assert (await client.get("/ok")).status_code == 200
    # Trailers count against the client's head limit (16 KiB by default): cut.
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
    )
    writer.write(huge * 20)
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # closed, nothing answered mid-body
    writer.close()
    assert agent.listeners[0].context.stats.requests == 3


async def test_bad_input_pipelined_behind_a_request_is_refused_after_its_answer(
    raw_provider: Any, agents: Any
) -> None:
    provider = await raw_provider({b"/a": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    provider.gated.add(b"/a")  # the answer comes after the bad bytes were read
    agent = await agents(config([provider.port]))
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nNOT A REQUEST\r\n\r\n")
    await async_wait_until(lambda: provider.requests, what="the request to reach the provider")
    provider.gate.set()
    async with asyncio.timeout(10):
        answer = await reader.read()  # to the agent's close
    writer.close()
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK") and first.endswith(b"ok")
    assert second.startswith(b"400 Bad Request") and b"Connection: close" in second
    assert agent.listeners[0].context.stats.rejected == 1
