"""The API's fast path as an app meets it: raw HTTP/1.1 on the agent's API port, invoking
the real Java Dubbo provider (issue 19's tests). One agent process for the module, with a
short request timeout so a slow client is answered 408 within the test."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.dubbo_invoke_support import INVOKE, invoke_agent_config

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def agent(
    zookeeper: ZooKeeperServer, dubbo_provider: DubboProvider, interop_workdir: Path
) -> Iterator[AgentProcess]:
    config = invoke_agent_config(
        zookeeper.hosts,
        "interface",
        admin={"max_body_bytes": MAX_BODY, "request_timeout_s": 1.0},
    )
    process = start_agent(interop_workdir / "agent-fast-path", config, name="agent-fast-path")
    try:
        process.process.wait_for(
            lambda: any(i["id"] == dubbo_provider.address for i in process.instances(INTERFACE)),
            30,
            what="the agent to discover the session provider",
        )
        yield process
    finally:
        process.stop()


class Conn:
    """One raw keep-alive connection to the API, reading responses as HTTP/1.1 frames them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a response: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed inside a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split(" ")[1]), fields, body

    def closed(self) -> bool:
        """True when the peer has closed (reads until EOF; the socket's timeout bounds it)."""
        while self._fill():
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def greet(name: str) -> bytes:
    body = json.dumps({"types": ["java.lang.String"], "args": [name]}).encode()
    return (
        f"POST {INVOKE}/greet HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def result(response: tuple[int, dict[str, str], bytes]) -> str:
    status, _, body = response
    assert status == 200, body
    value = json.loads(body)["result"]
    assert isinstance(value, str)
    return value


def test_1000_sequential_invokes_on_one_connection(agent: AgentProcess) -> None:
    conn = Conn(agent.admin_port)
    try:
        for i in range(1000):
            conn.send(greet(f"n{i}"))
            assert result(conn.response()) == f"Hello, n{i}"
    finally:
        conn.close()


def test_pipelined_invokes_are_answered_in_order(agent: AgentProcess) -> None:
    conn = Conn(agent.admin_port)
    try:
        conn.send(b"".join(greet(f"p{i}") for i in range(50)))
        assert [result(conn.response()) for _ in range(50)] == [f"Hello, p{i}" for i in range(50)]
    finally:
        conn.close()


def test_bad_requests_close_only_their_own_connection(agent: AgentProcess) -> None:
    good = Conn(agent.admin_port)
    try:
        good.send(greet("before"))
        assert result(good.response()) == "Hello, before"
        for bad_bytes, status in [
            (
                f"POST {INVOKE}/greet HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
                413,
            ),
            (b"POST /v1/invoke HTTP/1.1\r\nNo-Colon-Here\r\n\r\n", 400),
        ]:
            bad = Conn(agent.admin_port)
            bad.send(bad_bytes)
            got, fields, body = bad.response()
            assert got == status, body
            assert json.loads(body)["status"] == status
            assert fields["connection"] == "close" and bad.closed()
            bad.close()
            good.send(greet("between"))
            assert result(good.response()) == "Hello, between"
    finally:
        good.close()


def test_slowloris_clients_do_not_delay_healthz(agent: AgentProcess) -> None:
    slow = [Conn(agent.admin_port) for _ in range(50)]
    try:
        for conn in slow:
            conn.send(b"POST /v1/invoke/dubbo/x/y HTTP/1.1\r\nHost: agent\r\nX-Slow: ")
        with httpx.Client(base_url=agent.base_url, timeout=5) as client:
            for _ in range(20):
                assert client.get("/healthz").json() == {"status": "ok"}
        # Past request_timeout_s each slow client is answered 408 and closed.
        for conn in slow:
            status, _, _ = conn.response()
            assert status == 408
            assert conn.closed()
    finally:
        for conn in slow:
            conn.close()


def test_management_still_works_after_10000_invokes(agent: AgentProcess) -> None:
    conn = Conn(agent.admin_port)
    try:
        for batch in range(200):
            conn.send(b"".join(greet(f"{batch}-{i}") for i in range(50)))
            for i in range(50):
                assert result(conn.response()) == f"Hello, {batch}-{i}"
    finally:
        conn.close()
    with httpx.Client(base_url=agent.base_url, timeout=10) as client:
        put = client.put(
            f"/v1/registrations/{INTERFACE}/fast-path-check",
            json={"host": "127.0.0.1", "port": 1, "weight": 0},
        )
        assert put.status_code == 201, put.text
        listed = client.get("/v1/registrations").json()
        assert any(r["instance_id"] == "fast-path-check" for r in listed)
        assert client.delete(f"/v1/registrations/{INTERFACE}/fast-path-check").status_code == 204
        assert client.get("/docs").status_code == 200
