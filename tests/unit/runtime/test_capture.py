"""The capture listener in one process: the original destination is stubbed (the netns
integration tests get it from the kernel), everything after it is real."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import pytest

from agent import plugins
from agent.config import parse_config
from agent.discovery.types import Instance, Reset
from agent.plugins import EmptyConfig, Plugin, PluginKind
from agent.runtime import capture as capture_module
from agent.runtime.agent import Agent
from agent.runtime.capture import CaptureListener, Route
from agent.runtime.protocols import ListenerContext, ProtocolSupport
from tests.fixtures.net import async_wait_until
from tests.unit.runtime.conftest import AgentFactory, EchoServer

Destination = tuple[str, int]


def config(upstreams: dict[str, list[int]], **capture: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        name: [{"host": "127.0.0.1", "port": p} for p in ports]
                        for name, ports in upstreams.items()
                    }
                },
            }
        ],
        "services": [
            {"name": "echo", "health": {"enabled": False}},
            {"name": "sniffed", "protocol": "dubbo", "health": {"enabled": False}},
        ],
        "capture": {
            "enabled": True,
            "port": 0,
            "sniff_timeout_s": 0.2,
            "services": [
                {"service": "echo", "addresses": ["10.96.0.1:80"]},
                {"service": "sniffed", "addresses": ["10.96.0.2"]},
            ],
            **capture,
        },
        "drain_timeout_s": 1,
    }


@pytest.fixture
def destination(monkeypatch: pytest.MonkeyPatch) -> list[Destination]:
    """What the next captured connections' SO_ORIGINAL_DST says (last one set wins)."""
    chosen: list[Destination] = []

    def original(_sock: Any) -> Destination:
        if not chosen:
            raise OSError(2, "No such file or directory")
        return chosen[-1]

    monkeypatch.setattr(capture_module, "original_destination", original)
    return chosen


async def dial(agent: Agent) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert agent.capture is not None
    host, port = agent.capture.addresses[0]
    return await asyncio.open_connection(host, port)


async def exchange(agent: Agent, payload: bytes) -> bytes:
    """Send, half-close, read to the end; ``<reset>`` when the agent cut the connection."""
    reader, writer = await dial(agent)
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)
    except OSError:  # reset, or closed before our EOF could be sent
        return b"<reset>"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_routes_virtual_addresses_then_endpoints_then_passthrough() -> None:
    agent = Agent(parse_config(config({"echo": [7000], "sniffed": [7001]})))
    capture = agent.capture
    assert capture is not None
    # Endpoints come from the clusters, as the registries' snapshots fill them.
    assert capture.route(("127.0.0.1", 7000)) == Route(None, ("127.0.0.1", 7000))
    for name, port in (("echo", 7000), ("sniffed", 7001)):
        instance = Instance(f"127.0.0.1:{port}", "127.0.0.1", port, revision=1)
        agent.clusters[name].apply(Reset(1, (instance,)))
    assert capture.route(("10.96.0.1", 80)) == Route("echo", ("10.96.0.1", 80))
    assert capture.route(("10.96.0.1", 81)) == Route(None, ("10.96.0.1", 81))
    assert capture.route(("10.96.0.2", 9)) == Route("sniffed", ("10.96.0.2", 9))
    assert capture.route(("127.0.0.1", 7000)) == Route("echo", ("127.0.0.1", 7000))
    assert capture.route(("::ffff:127.0.0.1", 7001)) == Route("sniffed", ("127.0.0.1", 7001))
    assert capture.route(("192.0.2.1", 7000)) == Route(None, ("192.0.2.1", 7000))
    assert capture.needs_sniff(Route("sniffed", ("10.96.0.2", 9)))
    assert not capture.needs_sniff(Route("echo", ("10.96.0.1", 80)))
    assert not capture.needs_sniff(Route(None, ("192.0.2.1", 1)))


def test_loop_guard() -> None:
    capture = CaptureListener(parse_config(config({})).capture, {}, {})
    capture.port = 15001
    assert capture.is_loop(("127.0.0.1", 15001), ("127.0.0.1", 15001))
    assert capture.is_loop(("10.0.0.5", 15001), ("10.0.0.5", 15001))  # not redirected
    assert capture.is_loop(("::1", 15001), ("127.0.0.1", 15001))
    assert not capture.is_loop(("10.96.0.1", 15001), ("127.0.0.1", 15001))  # a remote 15001
    assert not capture.is_loop(("10.96.0.1", 80), ("127.0.0.1", 15001))


async def test_relays_to_the_mapped_service_with_the_sniffed_bytes(
    start_agent: AgentFactory, destination: list[Destination]
) -> None:
    up = await EchoServer("u1").start()
    agent = await start_agent(config({"echo": [up.port], "sniffed": [up.port]}))
    destination.append(("10.96.0.2", 20880))
    # Sniffed (a Dubbo service), HTTP/1 bytes: no plugin carries HTTP there, so raw TCP,
    # and the bytes read while sniffing reach the upstream first and whole, with the EOF.
    assert await exchange(agent, b"GET / HTTP/1.1\r\n\r\n") == (
        b"u1:GET / HTTP/1.1\r\n\r\nbye from u1"
    )
    assert agent.capture is not None
    assert agent.capture.stats.protocols == {"http": 1}
    await up.stop()


async def test_eof_before_the_verdict_is_relayed_after_the_bytes(
    start_agent: AgentFactory, destination: list[Destination]
) -> None:
    up = await EchoServer("u1").start()
    agent = await start_agent(config({"echo": [up.port], "sniffed": [up.port]}))
    destination.append(("10.96.0.2", 20880))
    # "PO" could still be POST: the EOF decides (tcp), and both bytes still arrive.
    assert await exchange(agent, b"PO") == b"u1:PObye from u1"
    await up.stop()


async def test_silent_client_is_relayed_after_the_sniff_timeout(
    start_agent: AgentFactory, destination: list[Destination]
) -> None:
    up = await EchoServer("u1").start()
    agent = await start_agent(config({"echo": [up.port], "sniffed": [up.port]}))
    destination.append(("10.96.0.2", 20880))
    reader, writer = await dial(agent)
    assert agent.capture is not None
    capture = agent.capture
    await async_wait_until(lambda: capture.stats.sniff_timeouts == 1, within=2)
    await async_wait_until(lambda: up.connections == 1, within=2)
    writer.write(b"late")
    assert await reader.readexactly(7) == b"u1:late"
    writer.close()
    await up.stop()


async def test_opaque_ports_and_tcp_services_are_not_sniffed(
    start_agent: AgentFactory, destination: list[Destination]
) -> None:
    up = await EchoServer("u1").start()
    # A long sniff timeout: a connection handed over within a second was never sniffed.
    raw = config({"echo": [up.port], "sniffed": [up.port]}, opaque_ports=[3306])
    raw["capture"]["sniff_timeout_s"] = 5
    agent = await start_agent(raw)
    assert agent.capture is not None
    capture = agent.capture
    for i, target in enumerate((("10.96.0.2", 3306), ("10.96.0.1", 80)), start=1):
        destination.append(target)
        _reader, writer = await dial(agent)
        # Connected upstream at once: nothing waits for bytes that may never come.
        await async_wait_until(lambda i=i: up.connections == i, within=1)  # type: ignore[misc]
        writer.close()
    assert capture.stats.protocols == {"tcp": 2}
    assert capture.stats.sniff_timeouts == 0
    await up.stop()


async def test_passthrough_and_its_refusal(
    start_agent: AgentFactory, destination: list[Destination]
) -> None:
    up = await EchoServer("direct").start()
    agent = await start_agent(config({}))
    destination.append(("127.0.0.1", up.port))
    assert await exchange(agent, b"x") == b"direct:xbye from direct"
    await up.stop()

    closed = await start_agent(config({}, passthrough=False))
    destination.append(("192.0.2.1", 80))
    assert await exchange(closed, b"x") in (b"", b"<reset>")
    assert closed.capture is not None and closed.capture.stats.unroutable == 1


async def test_no_original_destination_and_loops_are_closed(
    start_agent: AgentFactory, destination: list[Destination], caplog: pytest.LogCaptureFixture
) -> None:
    agent = await start_agent(config({}))
    assert agent.capture is not None
    assert await exchange(agent, b"x") in (b"", b"<reset>")  # no destination at all
    destination.append(agent.capture.addresses[0])
    assert await exchange(agent, b"x") in (b"", b"<reset>")
    assert agent.capture.stats.unroutable == 1 and agent.capture.stats.loops == 1
    assert "connection to the capture port itself" in caplog.text
    await async_wait_until(lambda: agent.open_connections() == 0, within=2)


class Recording(asyncio.Protocol):
    """A protocol plugin's connection: records what the capture listener hands it."""

    seen: list[Recording] = []

    def __init__(self, context: ListenerContext) -> None:
        self.context = context
        self.events: list[tuple[str, object]] = []
        Recording.seen.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append(("connection_made", transport.get_extra_info("peername") is not None))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))
        if data.endswith(b"\r\n\r\n"):  # the end of the request head: answer it
            cast(asyncio.Transport, self.transport).write(b"HTTP/1.1 204 No Content\r\n\r\n")

    def eof_received(self) -> bool:
        self.events.append(("eof", None))
        return False


class RecordingSupport(ProtocolSupport):
    name = "http"

    def outbound_listener(self, context: ListenerContext) -> Callable[[], asyncio.Protocol]:
        return lambda: Recording(context)


async def test_sniffed_connections_go_to_the_services_protocol_plugin(
    start_agent: AgentFactory, destination: list[Destination], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An "http" protocol plugin, as an installed one would be found by name.
    plugin: Plugin[ProtocolSupport] = Plugin(
        PluginKind.PROTOCOL, "http", EmptyConfig, lambda _config: RecordingSupport()
    )
    monkeypatch.setitem(plugins._loaded, (PluginKind.PROTOCOL, "http"), plugin)
    Recording.seen.clear()
    raw = config({"web": [9]})
    raw["services"].append({"name": "web", "protocol": "http", "health": {"enabled": False}})
    raw["capture"]["services"].append({"service": "web", "addresses": ["10.96.0.3:80"]})
    agent = await start_agent(raw)
    destination.append(("10.96.0.3", 80))
    reader, writer = await dial(agent)
    writer.write(b"GET /x HTTP/1.1\r\n")  # enough for the verdict...
    await async_wait_until(lambda: Recording.seen, within=2)
    writer.write(b"Host: a\r\n\r\n")  # ...the rest goes straight to the plugin
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 204 No Content\r\n\r\n"
    writer.write_eof()
    (connection,) = Recording.seen
    await async_wait_until(lambda: ("eof", None) in connection.events, within=2)
    assert connection.events == [
        ("connection_made", True),
        ("data", b"GET /x HTTP/1.1\r\n"),
        ("data", b"Host: a\r\n\r\n"),
        ("eof", None),
    ]
    assert connection.context.service.name == "web"
    assert connection.context.listener.protocol == "http"
    writer.close()
