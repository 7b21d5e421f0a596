"""The hand-over from the listener's fast path to the h11 session: an upgrade request
(relayed, then spliced as raw TCP), also when it arrives pipelined behind a plain request
that is still being answered, and the HTTP/2 preface."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from agent.calls import Call, CallObserver
from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.support.http_providers import config


class UpgradeProvider:
    """``GET /plain`` -> 200 "plain"; an upgrade request -> 101, then upper-cases what it
    gets until the client half-closes, and says BYE."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> UpgradeProvider:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                if b"upgrade: echo" not in head.lower():
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                    continue
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                    b"Upgrade: echo\r\n\r\n"
                )
                while data := await reader.read(65536):
                    writer.write(data.upper())
                writer.write(b"BYE")
                await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Agent, UpgradeProvider]]:
    provider = await UpgradeProvider().start()
    started = Agent(parse_config(config([provider.port])))
    await started.start()
    yield started, provider
    await started.stop()
    await provider.stop()


async def test_upgrade_behind_a_pipelined_request_is_handed_over_after_it(
    agent: tuple[Agent, UpgradeProvider],
) -> None:
    started, _ = agent
    host, port = started.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly"
    )
    received = b""
    async with asyncio.timeout(10):
        while b"EARLY" not in received:
            received += await reader.read(65536)
        writer.write(b"more")
        while b"MORE" not in received:
            received += await reader.read(65536)
        writer.write_eof()
        while data := await reader.read(65536):
            received += data
    writer.close()
    plain, switched = received.split(b"HTTP/1.1 101 ", 1)
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and plain.endswith(b"plain")
    assert b"upgrade: echo" in switched.lower()
    assert switched.endswith(b"EARLYMOREBYE")
    stats = started.listeners[0].context.stats
    assert stats.requests == 2 and stats.routes["api"].requests == 2


async def test_http2_preface_is_handed_to_the_h2_session(
    agent: tuple[Agent, UpgradeProvider],
) -> None:
    started, _ = agent
    host, port = started.listeners[0].address
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        response = await client.get(f"http://{host}:{port}/plain")
    assert response.http_version == "HTTP/2" and response.text == "plain"
    assert started.listeners[0].context.stats.bytes_in > 24  # the preface and more: counted


class Finished(CallObserver):
    name = "finished"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int, str]] = []

    def call_finished(self, call: Call) -> None:
        outcome = call.outcome.value if call.outcome is not None else ""
        self.calls.append(
            (call.route.target, call.route.method, outcome, len(call.attempts), call.status)
        )


async def test_a_request_served_by_the_h11_session_is_a_governed_call() -> None:
    # Issue 21: requests handed over to the h11 session (here an upgrade the provider does
    # not take) skipped the call: no metrics, no trace, no rule. Now they open one like
    # the fast path's requests.
    provider = await UpgradeProvider().start()
    document = config([provider.port])
    document["governance"] = {
        "rules": {
            "rules": [
                {
                    "match": {"to": "api", "method": "DELETE"},
                    "rate_limit": {"per_s": 0.001, "burst": 1},
                }
            ]
        }
    }
    started = Agent(parse_config(document))
    finished = Finished()
    started.calls.observers.append(finished)
    await started.start()
    try:
        host, port = started.listeners[0].address
        upgrade = b"Connection: upgrade\r\nUpgrade: other\r\n"
        answers = []
        for path in (b"/a", b"/b"):
            # An upgrade not taken ends its connection (h11: the client may have switched).
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"DELETE " + path + b" HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answers.append((head.split(b" ")[1], await reader.readexactly(length)))
            writer.close()
    finally:
        await started.stop()
        await provider.stop()
    assert answers[0] == (b"200", b"plain")
    status, body = answers[1]
    assert status == b"429" and json.loads(body)["reason"] == "rate_limited"
    assert finished.calls == [
        ("api", "DELETE", "ok", 1, "200"),
        ("api", "DELETE", "rejected", 0, ""),
    ]
    assert started.governance.counters.rate_limited == 1
