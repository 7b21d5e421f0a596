"""Our Dubbo codec against the real Java peer: frames captured from Java consumer → provider
are read by our decoder; our encoder's requests are answered by the Java provider; our
heartbeat health check passes on the provider and fails on a server that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.cluster.host import Host
from agent.discovery.types import Instance
from agent.runtime.health import probe
from plugins.dubbo.body import (
    Invocation,
    decode_invocation,
    decode_result,
    encode_invocation,
    heartbeat_request,
    request_frame,
    timeout_attachment,
)
from plugins.dubbo.frame import Frame, FrameDecoder, Status
from plugins.dubbo.health import PLUGIN as DUBBO_HEALTH
from plugins.dubbo.health import DubboHeartbeatChecker
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, run_calls

pytestmark = pytest.mark.integration


class Recorder:
    """A TCP relay keeping every byte each way (one client connection at a time)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.data = {"req": bytearray(), "resp": bytearray()}
        self._sockets: list[socket.socket] = [self.listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for src, dst, key in ((client, server, "req"), (server, client, "resp")):
                thread = threading.Thread(target=self._pump, args=(src, dst, key), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, key: str) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            self.data[key] += data
            dst.sendall(data)

    def frames(self, key: str) -> list[Frame]:
        decoder = FrameDecoder()
        decoder.receive_data(bytes(self.data[key]))
        frames = []
        while isinstance(frame := decoder.next_event(), Frame):
            frames.append(frame)
        assert decoder.buffered == 0
        return frames

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def captured(dubbo_provider: DubboProvider) -> Iterator[tuple[Recorder, dict[str, Any]]]:
    recorder = Recorder((dubbo_provider.host, dubbo_provider.port))
    try:
        outcomes = run_calls(url=f"dubbo://127.0.0.1:{recorder.port}")
    finally:
        recorder.close()
    yield recorder, outcomes


def exchange(provider: DubboProvider, data: bytes) -> Frame:
    with socket.create_connection((provider.host, provider.port), timeout=10) as sock:
        sock.sendall(data)
        decoder = FrameDecoder()
        while True:
            frame = decoder.next_event()
            if isinstance(frame, Frame):
                return frame
            chunk = sock.recv(65536)
            assert chunk, "provider closed without answering"
            decoder.receive_data(chunk)


def test_decoder_reads_every_captured_frame(captured: tuple[Recorder, dict[str, Any]]) -> None:
    recorder, outcomes = captured
    requests = [f for f in recorder.frames("req") if not f.header.event]
    responses = {f.header.request_id: f for f in recorder.frames("resp") if not f.header.event}
    assert len(requests) == len(outcomes)
    for frame in requests:
        invocation = decode_invocation(frame.body)
        assert invocation.path == INTERFACE and invocation.attachments["interface"] == INTERFACE
        # What the proxy reads without decoding the arguments, checked against the full decode.
        expected_timeout = int(invocation.attachments["timeout"])
        assert timeout_attachment(frame.body) == expected_timeout
        # Re-encoding the decoded invocation gives Java's bytes back.
        assert encode_invocation(invocation) == frame.body, invocation.method
        response = responses.get(frame.header.request_id)
        if invocation.method == "slow" and invocation.arguments == (1500,):
            continue  # the consumer gave up at 500 ms and closed before the answer
        assert response is not None, invocation.method
        result = decode_result(response.header, response.body)
        assert result.status == Status.OK
    echo = next(f for f in requests if decode_invocation(f.body).arguments == ("hello",))
    result = decode_result(
        responses[echo.header.request_id].header, responses[echo.header.request_id].body
    )
    assert result.value == "hello"


def test_java_provider_answers_our_encoder(dubbo_provider: DubboProvider) -> None:
    attachments = {"path": INTERFACE, "interface": INTERFACE, "version": "0.0.0"}
    cases: list[tuple[str, tuple[str, ...], tuple[Any, ...], Any]] = [
        ("echo", ("java.lang.String",), ("héllo 🚀",), "héllo 🚀"),
        ("addInt", ("int", "int"), (40, 2), 42),
        ("describe", ("java.lang.String", "int"), ("x", 3), "string:x*3"),
        ("whoami", (), (), dubbo_provider.provider_id),
    ]
    for request_id, (method, types, args, expected) in enumerate(cases, start=-3):
        body = encode_invocation(Invocation(INTERFACE, "0.0.0", method, types, args, attachments))
        frame = exchange(dubbo_provider, request_frame(request_id, body))
        assert frame.header.request_id == request_id  # negative ids too, as Java uses
        result = decode_result(frame.header, frame.body)
        assert result.ok and result.value == expected, (method, result)


def test_java_provider_answers_our_heartbeat(dubbo_provider: DubboProvider) -> None:
    frame = exchange(dubbo_provider, heartbeat_request(99))
    assert frame.heartbeat and not frame.header.request
    assert (frame.header.request_id, frame.header.status) == (99, Status.OK)


def host_at(port: int) -> Host:
    return Host(Instance(f"127.0.0.1:{port}", "127.0.0.1", port))


async def test_heartbeat_checker_on_the_java_provider(dubbo_provider: DubboProvider) -> None:
    checker = DUBBO_HEALTH.build({}, "health.config")
    assert isinstance(checker, DubboHeartbeatChecker)
    assert await probe(checker, host_at(dubbo_provider.port), 5.0) is True


async def test_heartbeat_checker_on_a_silent_server() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe(DubboHeartbeatChecker(), host_at(port), 0.3) is False
        assert accepted  # the connect itself succeeded: a TCP check would have passed
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_heartbeat_checker_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await probe(DubboHeartbeatChecker(), host_at(port), 1.0) is False
