"""A worker's API passing requests on to its supervisor: two real API servers, the
worker's on loopback TCP and the supervisor's on a Unix socket (agent/api/forward.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import httpx

from agent.api.forward import SupervisorForward
from agent.api.http1 import ApiRequest, ApiServer, Http1Limits, Reply
from agent.runtime.admin import bind


def supervisor(request: ApiRequest) -> Reply | Awaitable[Reply]:
    """Echoes what it was given, the client as the supervisor judges it included."""
    if request.path == b"/stream":

        async def lines() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"event %d\n" % i

        return Reply(200, b"", b"text/event-stream", [(b"cache-control", b"no-cache")], lines())
    if request.path == b"/empty":
        return Reply(204, b"", b"")
    body = {
        "method": request.method,
        "path": request.path.decode(),
        "query": request.query.decode(),
        "body": request.body.decode(),
        "client": list(request.client) if request.client else None,
        "headers": {k.decode(): v.decode() for k, v in request.headers},
    }
    return Reply(201, json.dumps(body).encode(), b"application/json", [(b"location", b"/x/1")])


async def servers(tmp_path: Path, trust: bool = True) -> tuple[ApiServer, ApiServer, int]:
    path = str(tmp_path / "api.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(16)
    unix.setblocking(False)
    behind = ApiServer(supervisor, unix, Http1Limits(trust_forwarded_client=trust))
    await behind.start()
    sock = bind("127.0.0.1", 0)
    front = ApiServer(SupervisorForward(path), sock, Http1Limits())
    await front.start()
    return front, behind, sock.getsockname()[1]


async def test_a_request_goes_through_with_its_client_and_comes_back_whole(
    tmp_path: Path,
) -> None:
    front, behind, port = await servers(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.put(
                "/v1/registrations/a/b?x=1",
                content=b'{"host": "h"}',
                headers={"x-meshagent-client": "6.6.6.6 1", "x-other": "kept"},
            )
        assert response.status_code == 201
        assert response.headers["location"] == "/x/1"
        assert response.headers["content-type"] == "application/json"
        seen = response.json()
        assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
            "PUT",
            "/v1/registrations/a/b",
            "x=1",
            '{"host": "h"}',
        )
        # The supervisor judges the real client: the worker's peer, not a forged header.
        host, client_port = seen["client"]
        assert host == "127.0.0.1" and client_port != 1
        assert seen["headers"]["x-other"] == "kept"
    finally:
        await front.stop(0.1)
        await behind.stop(0.1)


async def test_streams_are_streamed_and_empty_answers_stay_empty(tmp_path: Path) -> None:
    front, behind, port = await servers(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with client.stream("GET", "/stream") as response:
                assert response.headers["content-type"] == "text/event-stream"
                assert response.headers["cache-control"] == "no-cache"
                assert [line async for line in response.aiter_lines()] == [
                    "event 0",
                    "event 1",
                    "event 2",
                ]
            empty = await client.delete("/empty")
            assert (empty.status_code, empty.content) == (204, b"")
    finally:
        await front.stop(0.1)
        await behind.stop(0.1)


async def test_an_untrusting_server_ignores_the_client_header(tmp_path: Path) -> None:
    front, behind, port = await servers(tmp_path, trust=False)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            seen = (await client.post("/x", content=b"")).json()
        assert seen["client"] is None  # a Unix peer has no address: not loopback
    finally:
        await front.stop(0.1)
        await behind.stop(0.1)


async def test_a_supervisor_away_is_a_503_problem(tmp_path: Path) -> None:
    sock = bind("127.0.0.1", 0)
    front = ApiServer(SupervisorForward(str(tmp_path / "none.sock")), sock, Http1Limits())
    await front.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as c:
            response = await c.get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"] == "the agent's supervisor is not reachable"
    finally:
        await front.stop(0.1)
