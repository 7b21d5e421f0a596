"""The HTTP listener between real clients (httpx, curl, raw sockets) and real providers
(uvicorn, nginx), with meshagent running as its own process."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.programs import require

pytestmark = pytest.mark.integration


def base(agent: AgentProcess) -> str:
    return f"http://127.0.0.1:{agent.listener_port()}"


def raw_exchange(agent: AgentProcess, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, read until the agent closes the connection."""
    with socket.create_connection(("127.0.0.1", agent.listener_port()), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_client_is_balanced_per_request(http_agent: AgentProcess) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=base(http_agent), limits=limits, timeout=5) as client:
        names = [client.get("/echo").json()["name"] for _ in range(10)]
    assert set(names) == {"a", "b"}
    assert names.count("a") == 5


def test_route_by_path_prefix_and_query_pass_through(http_agent: AgentProcess) -> None:
    with httpx.Client(base_url=base(http_agent), timeout=5) as client:
        for _ in range(4):
            body = client.get("/only-a/x%20y?q=1&r=%2F").json()
            assert body["name"] == "a"
            assert body["raw_path"] == "/only-a/x%20y"
            assert body["query"] == "q=1&r=%2F"


def test_streamed_chunked_upload_and_download(http_agent: AgentProcess) -> None:
    block = bytes(range(256)) * 256  # 64 KiB

    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB, sent chunked
            yield block

    with httpx.Client(base_url=base(http_agent), timeout=10) as client:
        body = client.post("/upload", content=chunks()).json()
        assert body["size"] == 64 * len(block)
        assert body["sha256"] == hashlib.sha256(block * 64).hexdigest()
        headers = dict(body["headers"])
        assert headers["transfer-encoding"] == "chunked"
        response = client.get("/stream?n=2000")
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        lines = response.content.splitlines()
        assert len(lines) == 2000 and lines[-1].endswith(b"1999")


def test_hop_by_hop_dropped_and_forwarded_headers_set(http_agent: AgentProcess) -> None:
    headers = {
        "Connection": "keep-alive, X-Private",
        "X-Private": "secret",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "X-End-To-End": "kept",
        "X-Forwarded-For": "10.0.0.1",
        "Forwarded": "for=10.0.0.1",
    }
    with httpx.Client(base_url=base(http_agent), timeout=5) as client:
        response = client.get("/echo", headers=headers)
    seen = {k: v for k, v in response.json()["headers"]}
    assert "x-private" not in seen and "keep-alive" not in seen and "te" not in seen
    assert seen["x-end-to-end"] == "kept"
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{http_agent.listener_port()}"
    host = f"127.0.0.1:{http_agent.listener_port()}"
    assert seen["forwarded"] == f'for=10.0.0.1, for=127.0.0.1;host="{host}";proto=http'
    # The provider's own headers come back.
    assert response.headers["x-upstream"] in ("a", "b")


def test_upstream_responses_pass_through(http_agent: AgentProcess) -> None:
    with httpx.Client(base_url=base(http_agent), timeout=5) as client:
        response = client.delete("/status/418")
        assert response.status_code == 418
        assert response.json()["method"] == "DELETE"
        assert response.headers["content-type"] == "application/json"


def test_nginx_provider(http_agent: AgentProcess) -> None:
    with httpx.Client(base_url=base(http_agent), timeout=5, headers={"Host": "nginx.test"}) as c:
        assert c.get("/hello").text == "hello from nginx\n"
        assert c.get("/teapot").status_code == 418
        big = c.get("/big.bin")
        assert big.content == bytes(range(256)) * 4096
        head = c.head("/big.bin")
        assert head.headers["content-length"] == str(256 * 4096) and head.content == b""


@pytest.mark.parametrize(
    ("host", "status", "title"),
    [
        ("none.test", 503, "Service Unavailable"),
        ("dead.test", 502, "Bad Gateway"),
        ("slow.test", 504, "Gateway Timeout"),
    ],
)
def test_agent_errors_are_problem_details(
    http_agent: AgentProcess, host: str, status: int, title: str
) -> None:
    with httpx.Client(base_url=base(http_agent), timeout=5, headers={"Host": host}) as client:
        response = client.get("/slow?s=2")
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == status and problem["title"] == title
        assert problem["service"] == host.removesuffix(".test")
        # The connection is still good for the next request.
        assert client.get("/echo", headers={"Host": "api"}).status_code == 200


def test_curl_expect_100_continue(http_agent: AgentProcess, tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"z" * 300_000)
    result = subprocess.run(
        [
            require("curl"),
            "-sS",
            "-v",
            "--expect100-timeout",
            "10",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{payload}",
            f"{base(http_agent)}/upload",
        ],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert b"< HTTP/1.1 100 Continue" in result.stderr
    body = json.loads(result.stdout)
    assert body["size"] == 300_000
    assert body["sha256"] == hashlib.sha256(b"z" * 300_000).hexdigest()


def test_pipelined_requests_answered_in_order(http_agent: AgentProcess) -> None:
    requests = (
        b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        + b"GET /echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(http_agent, requests)
    assert answer.count(b"HTTP/1.1 200 OK") == 6
    queries = re.findall(rb'"query": "([^"]*)"', answer)
    assert queries == [b"n=%d" % i for i in range(5)] + [b"n=last"]


def test_websocket_style_upgrade_becomes_a_tcp_relay(http_agent: AgentProcess) -> None:
    with socket.create_connection(("127.0.0.1", http_agent.listener_port()), timeout=5) as sock:
        sock.sendall(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: echo\r\n\r\nearly"
        )
        received = b""
        while b"EARLY" not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 101 ")
        assert b"upgrade: echo" in received.lower()
        sock.sendall(b"hello")
        received = b""
        while b"HELLO" not in received:
            received += sock.recv(4096)
        sock.shutdown(socket.SHUT_WR)  # half-close reaches the provider, which says BYE
        while chunk := sock.recv(4096):
            received += chunk
        assert received.endswith(b"BYE")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /echo HTTP/1.1 extra junk\r\nHost: x\r\n\r\n", 400),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n", 431),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        ),
        (b"GET /echo HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        # HTTP/0.9: no version, no headers; was forwarded to the provider (issue 25).
        (b"GET /echo\r\n\r\n", 400),
    ],
)
def test_bad_input_is_refused_and_others_unaffected(
    http_agent: AgentProcess, request_bytes: bytes, status: int
) -> None:
    with httpx.Client(base_url=base(http_agent), timeout=5) as client:
        assert client.get("/echo").status_code == 200
        answer = raw_exchange(http_agent, request_bytes)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
        assert b"smuggled" not in answer
        # The same keep-alive connection carries on.
        assert client.get("/echo").status_code == 200
    assert "bad request from client" in http_agent.process.output()


def test_idempotent_requests_retried_on_another_endpoint(http_agent: AgentProcess) -> None:
    # flaky: one endpoint resets every connection, the other (b) answers; retries: 1.
    with httpx.Client(base_url=base(http_agent), timeout=5, headers={"Host": "flaky.test"}) as c:
        for _ in range(6):
            response = c.get("/echo")
            assert response.status_code == 200 and response.json()["name"] == "b"
        # A body cannot be sent twice: some POSTs meet the resetting endpoint.
        statuses = {c.post("/echo", content=b"body").status_code for _ in range(6)}
    assert statuses == {200, 502}
