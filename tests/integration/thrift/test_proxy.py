"""thriftpy2 clients → the agent's Thrift listener (a real process) → thriftpy2 servers."""

from __future__ import annotations

import math
import re
import socket
import struct
import threading
import time
from collections import Counter

import pytest
from thriftpy2.thrift import TApplicationException

from plugins.thrift.codec import (
    AppError,
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    encode_header,
)
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.processes import LOOPBACK
from tests.fixtures.thrift_server import DOWN, EMPTY, FORMS, client, load_idl
from tests.integration.thrift.conftest import LISTENER_CALLER, ROUTED, ROUTED_TO

pytestmark = pytest.mark.integration

echo_thrift = load_idl()


def port(agent: AgentProcess, service: str) -> int:
    for listener in agent.config["listeners"]:
        if listener["service"] == service:
            return int(listener["port"])
    raise KeyError(service)


@pytest.mark.parametrize("form", list(FORMS))
def test_calls_through_the_listener(agent: AgentProcess, form: str) -> None:
    with client(port(agent, form), form) as echo:
        assert echo.ping() == "pong"
        item = echo_thrift.Item(
            name="n",
            id=2**62,
            blob=bytes(range(256)),
            numbers=[1, -2],
            scores={"a": 0.5},
            tags=["t"],
            color=echo_thrift.Color.BLUE,
            flag=False,
            children=[echo_thrift.Item(name="child")],
            flags={3: [True]},
        )
        assert echo.echo(item) == item
        assert echo.add(2**62, 2**62 - 1) == 2**63 - 1
        # A declared exception passes through as the provider wrote it.
        with pytest.raises(echo_thrift.NotFound) as info:
            echo.find("missing")
        assert (info.value.message, info.value.code) == ("no missing", 404)
        # One client connection, every call balanced on its own.
        seen = Counter(echo.whoami() for _ in range(20))
        assert set(seen) == {f"{form}-a", f"{form}-b"}
        assert all(count >= 5 for count in seen.values())


@pytest.mark.parametrize("form", list(FORMS))
def test_oneway_calls_arrive(agent: AgentProcess, form: str) -> None:
    with client(port(agent, form), form) as echo:
        before = sum(_recorded(agent, form))
        for i in range(10):
            echo.record(f"note {i}")
        # Oneway calls have no reply: wait until both servers together counted all ten.
        agent.process.wait_for(lambda: sum(_recorded(agent, form)) == before + 10 or None, 10)


def _recorded(agent: AgentProcess, form: str) -> list[int]:
    # Straight to each server (not through the agent), so the count is per server.
    counts = []
    for listener in agent.config["registries"][0]["config"]["services"][form]:
        with client(listener["port"], form) as echo:
            counts.append(echo.recorded())
    return counts


def test_timeout_answers_with_an_application_exception(agent: AgentProcess) -> None:
    form = "framed-binary"
    with client(port(agent, form), form) as echo:
        with pytest.raises(TApplicationException) as info:
            echo.slow(1500)
        assert info.value.type == AppError.INTERNAL_ERROR
        assert "did not answer slow within 500 ms" in info.value.message
        # The client's connection goes on; the late reply is dropped, not delivered.
        assert echo.add(1, 2) == 3

        # thriftpy2 answers a connection's calls one at a time, so calls multiplexed behind
        # the slow one on that provider's pooled connection wait for it: let it finish.
        def both_answer() -> bool:
            try:
                return {echo.whoami() for _ in range(4)} == {f"{form}-a", f"{form}-b"}
            except TApplicationException:
                return False

        agent.process.wait_for(lambda: both_answer() or None, 10)


@pytest.mark.parametrize(
    ("service", "text"), [(EMPTY, "no provider available"), (DOWN, "reachable")]
)
def test_no_provider(agent: AgentProcess, service: str, text: str) -> None:
    for form in FORMS:
        with client(port(agent, service), form) as echo:
            with pytest.raises(TApplicationException) as info:
                echo.ping()
            assert info.value.type == AppError.INTERNAL_ERROR
            assert text in info.value.message


def raw(agent: AgentProcess, data: bytes, service: str = "framed-binary") -> bytes:
    """Send ``data``, return everything the agent sends before it closes (bounded wait)."""
    with socket.create_connection((LOOPBACK, port(agent, service)), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def decode_one(data: bytes, transport: Transport) -> Message:
    decoder = MessageDecoder(None, transport)
    decoder.receive_data(data)
    message = decoder.next_event()
    assert isinstance(message, Message)
    return message


def test_bad_input_is_refused_and_others_go_on(agent: AgentProcess) -> None:
    form = "framed-binary"
    with client(port(agent, form), form) as bystander:
        assert bystander.ping() == "pong"
        # Garbage, and a frame over the listener's 64 KiB limit: closed without a word.
        assert raw(agent, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        assert raw(agent, struct.pack(">i", 65537) + b"\x80\x01\x00\x01") == b""
        # A REPLY sent as if it were a call: the client hears why, then the close.
        reply = encode_header(Header("ping", MessageType.REPLY, 9, Proto.BINARY)) + b"\x00"
        answer = decode_one(raw(agent, struct.pack(">i", len(reply)) + reply), Transport.FRAMED)
        assert answer.header[:3] == ("ping", MessageType.EXCEPTION, 9)
        assert b"not CALL or ONEWAY" in answer.body
        # A buffered call cut short by EOF: its header was read, so it is answered.
        call = encode_header(Header("echo", MessageType.CALL, 5, Proto.COMPACT)) + b"\x1c"
        answer = decode_one(raw(agent, call, "buffered-binary"), Transport.BUFFERED)
        assert answer.header[:3] == ("echo", MessageType.EXCEPTION, 5)
        assert answer.header.proto is Proto.COMPACT
        assert bystander.ping() == "pong"


def routed_port(agent: AgentProcess) -> int:
    for listener in agent.config["listeners"]:
        if listener.get("name") == ROUTED:
            return int(listener["port"])
    raise KeyError(ROUTED)


def test_per_method_routing(agent: AgentProcess) -> None:
    with client(routed_port(agent), "framed-binary") as echo:
        # Routed: the one provider of ROUTED_TO answers, never the other framed-binary one.
        assert {echo.whoami() for _ in range(4)} == {"framed-binary-b"}
        # Not routed: the listener's own service, whose only provider is down.
        with pytest.raises(TApplicationException) as info:
            echo.add(1, 2)
        assert f"no provider of {DOWN} reachable" in info.value.message
        assert echo.whoami() == "framed-binary-b"  # the connection goes on


def test_a_second_connection_keeps_a_slow_call_from_holding_up_others(
    agent: AgentProcess,
) -> None:
    form = "framed-binary"
    port = routed_port(agent)
    outcome: dict[str, object] = {}

    def call_slow() -> None:
        with client(port, form) as slow_client:
            outcome["slow"] = slow_client.slow(2000)

    slow = threading.Thread(target=call_slow)
    slow.start()
    try:
        # The slow call is at the provider once the agent counts it as active there.
        agent.process.wait_for(
            lambda: agent.endpoint(ROUTED_TO, "framed-binary-b")["active_requests"] == 1 or None,
            10,
            what="the slow call in flight",
        )
        started = time.monotonic()
        # thriftpy2 answers a connection's calls one at a time: on the slow call's
        # connection whoami would wait ~2 s (past this client's 1 s timeout). The pool
        # opens a second connection instead.
        with client(port, form, timeout_ms=1000) as echo:
            assert echo.whoami() == "framed-binary-b"
        assert time.monotonic() - started < 1.0
        assert slow.is_alive()  # answered while the slow call was still running
    finally:
        slow.join(10)
    assert outcome["slow"] == "slept 2000"


@pytest.mark.parametrize("form", list(FORMS))
def test_base_is_filled_in_for_methods_whose_idl_has_it(agent: AgentProcess, form: str) -> None:
    before_ms = int(time.time() * 1000)
    started = time.monotonic()
    with client(port(agent, form), form) as echo:
        seen = echo.context("note", None)
        # Rounded up: the agent floors what is left to whole milliseconds, so 0.3 ms spent
        # already shows as 499.
        spent_ms = math.ceil((time.monotonic() - started) * 1000)
        assert re.fullmatch("[0-9a-f]{32}", seen["LogID"])
        assert seen["Caller"] == LISTENER_CALLER
        # The budget left when the request was sent: the listener's 500 ms less what the
        # call had spent by then (a connect, on the first call), never more.
        assert 500 - spent_ms <= int(seen["timeout_ms"]) <= 500
        # The absolute deadline, in wall-clock milliseconds, loses up to 1 ms to rounding.
        assert before_ms + 499 <= int(seen["deadline_ms"]) <= int(time.time() * 1000) + 500
        # What the app sets wins; what it leaves empty is filled in.
        given = echo_thrift.base.Base(LogID="app-log-id", Extra={"k": "v", "timeout_ms": "77"})
        seen = echo.context("note", given)
        assert seen["LogID"] == "app-log-id"
        assert seen["Caller"] == LISTENER_CALLER
        assert (seen["k"], seen["timeout_ms"]) == ("v", "77")
        assert "deadline_ms" in seen
