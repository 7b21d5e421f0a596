"""The HTTP listener's HTTP/2 side (plugins/http/h2_listener.py) in-process, with python-h2
as the client (frames we choose) and small HTTP/1.1 providers: what is HTTP/2's own
(streams reset, windows, the h2c upgrade, header rules across the translation)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from agent.runtime.agent import Agent
from plugins.http.h2_listener import H2ClientConnection
from tests.fixtures.net import async_wait_until
from tests.support.http_providers import config


class Client:
    """A python-h2 client connection to the agent's listener."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[h2.events.Event] = []

    @classmethod
    async def open(cls, agent: Agent, window: int = 65535) -> Client:
        host, port = agent.listeners[0].address
        client = cls(*await asyncio.open_connection(host, port))
        client.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        client.conn.initiate_connection()
        client.send()
        return client

    def send(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def request(
        self, path: str, extra: list[tuple[str, str]] | None = None, end: bool = True
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
        self.conn.send_headers(stream_id, headers + (extra or []), end_stream=end)
        self.send()
        return stream_id

    async def read(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            return False
        self.events += self.conn.receive_data(data)
        self.send()
        return True

    async def response(self, stream_id: int, ack: bool = True) -> tuple[int, bytes]:
        """Status and body of ``stream_id`` (acknowledging its data when ``ack``)."""
        status, body = 0, b""
        async with asyncio.timeout(10):
            while True:
                for event in self.events:
                    if getattr(event, "stream_id", None) != stream_id:
                        continue
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        if ack:
                            self.conn.acknowledge_received_data(
                                event.flow_controlled_length, stream_id
                            )
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        self.events = [e for e in self.events if e is not event]
                        self.send()
                        return status, body
                self.events = [e for e in self.events if getattr(e, "stream_id", 0) != stream_id]
                self.send()
                assert await self.read(), "connection closed"

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def connections(agent: Agent) -> list[H2ClientConnection]:
    found: list[H2ClientConnection] = []
    for transport in agent.listeners[0].context.connections:
        protocol: object = transport.get_protocol()
        if isinstance(protocol, H2ClientConnection):
            found.append(protocol)
    return found


async def test_headers_are_translated_for_http1_providers(raw_provider: Any, agents: Any) -> None:
    provider = await raw_provider(
        {b"/h": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\nKeep-Alive: t=5\r\n\r\nok"}
    )
    agent = await agents(config([provider.port]))
    client = await Client.open(agent)
    stream = client.request("/h", [("cookie", "a=1"), ("cookie", "b=2"), ("x-app", "v")])
    status, body = await client.response(stream)
    client.close()
    assert (status, body) == (200, b"ok")
    head = provider.requests[0].decode()
    assert head.startswith("GET /h HTTP/1.1\r\n")
    # :authority becomes Host; the cookie fields become one (RFC 9113 §8.2.3).
    assert re.search(r"(?im)^host: x\r$", head)
    assert re.search(r"(?im)^cookie: a=1; b=2\r$", head)
    assert re.search(r"(?im)^x-app: v\r$", head)


async def test_a_body_without_length_goes_chunked_with_its_trailers(
    raw_provider: Any, agents: Any
) -> None:
    provider = await raw_provider({b"/up": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    agent = await agents(config([provider.port]))
    client = await Client.open(agent)
    stream = client.request("/up", end=False)
    client.conn.send_data(stream, b"hello")
    client.conn.send_headers(stream, [("x-sum", "5")], end_stream=True)
    client.send()
    status, _ = await client.response(stream)
    client.close()
    assert status == 200
    await async_wait_until(lambda: provider.requests, what="the request at the provider")
    assert b"transfer-encoding: chunked" in provider.requests[0].lower()


async def test_a_client_reset_closes_the_provider_side(agents: Any) -> None:
    """RST_STREAM from the client: the provider's connection (mid-request) is closed, not
    returned to the pool, and the client's other streams go on."""
    seen = asyncio.Event()
    closed = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        seen.set()
        await reader.read()  # until the agent closes its side
        closed.set()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        agent = await agents(config([server.sockets[0].getsockname()[1]]))
        client = await Client.open(agent)
        stream = client.request("/held")
        async with asyncio.timeout(5):
            await seen.wait()
        client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        client.send()
        async with asyncio.timeout(5):
            await closed.wait()
        await async_wait_until(
            lambda: all(not c.streams for c in connections(agent)), what="the stream to go"
        )
        client.close()
    finally:
        server.close()


async def test_a_slow_reader_holds_the_provider_back(raw_provider: Any, agents: Any) -> None:
    """8 MiB answered to a client that opens no window: the agent holds a bounded part of
    it and stops reading the provider; once the client reads, all of it arrives intact."""
    big = bytes(range(256)) * 4096 * 8
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big)
    provider = await raw_provider({b"/big": head + big})
    agent = await agents(config([provider.port]))
    client = await Client.open(agent)
    stream = client.request("/big")
    received = 0
    async with asyncio.timeout(10):
        while received < 65535:  # the client's initial window, then nothing more
            assert await client.read()
            received = sum(
                len(e.data) for e in client.events if isinstance(e, h2.events.DataReceived)
            )
    await async_wait_until(
        lambda: any(s.write_paused for c in connections(agent) for s in c.streams.values()),
        what="the provider's connection to be paused",
    )
    (connection,) = connections(agent)
    (held,) = connection.streams.values()
    assert held.out_size < 2 * 1024 * 1024, held.out_size
    status, body = await client.response(stream)
    client.close()
    assert status == 200 and body == big


async def test_oversized_header_list_is_answered_431(raw_provider: Any, agents: Any) -> None:
    provider = await raw_provider({b"/": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"})
    raw = config([provider.port], max_header_bytes=2048)
    agent = await agents(raw)
    client = await Client.open(agent)
    stream = client.request("/", [("x-big", "v" * 4000)])
    status, body = await client.response(stream)
    following = client.request("/")
    assert (await client.response(following))[0] == 200
    client.close()
    assert status == 431 and b"header list" in body
    assert len(provider.requests) == 1  # only the second request reached the provider


async def test_h2c_upgrade_answers_stream_one_then_serves_streams(
    raw_provider: Any, agents: Any
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    provider = await raw_provider({b"/first": ok, b"/second": ok})
    agent = await agents(config([provider.port]))
    host, port = agent.listeners[0].address
    reader, writer = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection()  # the header's value, base64url
    assert settings is not None
    writer.write(
        b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
    )
    switched = await reader.readuntil(b"\r\n\r\n")
    assert switched.startswith(b"HTTP/1.1 101 ")
    client = Client(reader, writer)
    client.conn = conn
    client.send()
    assert await client.response(1) == (200, b"ok")
    assert await client.response(client.request("/second")) == (200, b"ok")
    client.close()
    assert [r.split(b" ")[1] for r in provider.requests] == [b"/first", b"/second"]


async def test_idle_connections_get_goaway(raw_provider: Any, agents: Any) -> None:
    provider = await raw_provider({b"/": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"})
    agent = await agents(config([provider.port], client_idle_timeout_s=0.1))
    client = await Client.open(agent)
    assert (await client.response(client.request("/")))[0] == 200
    async with asyncio.timeout(5):
        while await client.read():
            pass
    client.close()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
