"""The fast routes answer exactly as the FastAPI app (the contract) does: the same statuses
and bodies for the same requests, and the same loopback-only rule for invocations."""

from __future__ import annotations

import inspect
import json
from typing import Any

import httpx
import pytest

from agent.api.app import create_app
from agent.api.asgi_bridge import AsgiBridge
from agent.api.fast_routes import FastRoutes
from agent.api.http1 import ApiRequest, Reply
from agent.config import AgentConfig
from agent.runtime.agent import Agent


class _Peer:
    def __init__(self, client: tuple[str, int]) -> None:
        self.peer = client


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 40000),
) -> ApiRequest:
    made = ApiRequest(_Peer(client))  # type: ignore[arg-type]
    made.method = method
    made.path = path.encode()
    made.body = body
    made.headers = headers or []
    return made


async def answer(routes: FastRoutes, made: ApiRequest) -> Reply:
    reply = routes(made)
    if inspect.isawaitable(reply):
        reply = await reply
    assert isinstance(reply, Reply)
    return reply


def routes_for(agent: Agent, allow_remote_invoke: bool = False) -> FastRoutes:
    def unexpected() -> Any:
        raise AssertionError("a hot route reached the management app")

    return FastRoutes(agent, AsgiBridge(unexpected, ("127.0.0.1", 0)), allow_remote_invoke)


JSON_HEADER = [(b"content-type", b"application/json")]
BODIES: list[tuple[bytes, list[tuple[bytes, bytes]]]] = [
    (b"", []),
    (b"{bad", JSON_HEADER),
    (b"[1]", JSON_HEADER),
    (b'"s"', JSON_HEADER),
    (b"{}", [(b"content-type", b"text/plain")]),
    (b"{}", []),
    (b"null", JSON_HEADER),
    (b'{"args": []}', [(b"content-type", b"application/vnd.x+json; charset=utf-8")]),
    (b'{"args": [1, 2]}', JSON_HEADER),
]


@pytest.mark.parametrize(("body", "headers"), BODIES)
async def test_invoke_answers_as_the_contract_app_does(
    body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    agent = Agent(AgentConfig())
    fast = await answer(
        routes_for(agent), request("POST", "/v1/invoke/dubbo/nosuch/m", body, headers)
    )
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        slow = await client.post(
            "/v1/invoke/dubbo/nosuch/m",
            content=body,
            headers=[(k.decode(), v.decode()) for k, v in headers],
        )
    assert fast.status == slow.status_code
    assert fast.content_type.decode() == slow.headers["content-type"]
    assert json.loads(fast.body) == slow.json()


async def test_probes_answer_as_the_contract_app_does() -> None:
    agent = Agent(AgentConfig())
    routes = routes_for(agent)
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        for path in ("/healthz", "/readyz"):
            fast = await answer(routes, request("GET", path))
            slow = await client.get(path)
            assert fast.status == slow.status_code
            assert json.loads(fast.body).keys() == slow.json().keys()
        metrics = await answer(routes, request("GET", "/metrics"))
        assert metrics.status == 200
        assert metrics.content_type == b"text/plain; version=0.0.4; charset=utf-8"
        assert b"meshagent_" in metrics.body


async def test_a_remote_client_may_not_invoke_unless_configured() -> None:
    agent = Agent(AgentConfig())
    remote = ("192.0.2.7", 5555)  # documentation range: never dialled, only a peer name
    made = request("POST", "/v1/invoke/dubbo/nosuch/m", client=remote)
    refused = await answer(routes_for(agent), made)
    assert refused.status == 403
    assert "allow_remote_invoke" in json.loads(refused.body)["detail"]
    allowed = await answer(routes_for(agent, allow_remote_invoke=True), made)
    assert allowed.status == 404  # past the guard: the service is unknown


async def test_other_routes_go_to_the_management_app() -> None:
    agent = Agent(AgentConfig())
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    routes = FastRoutes(agent, AsgiBridge(lambda: app, ("127.0.0.1", 0)), False)
    for method, path in [
        ("GET", "/v1/services"),
        ("POST", "/v1/invoke/http/svc/path"),  # the HTTP invocation has routes of its own
        ("GET", "/v1/invoke/dubbo/s/m"),  # not POST: the app answers 405
        ("POST", "/v1/invoke/dubbo/s/m/extra"),
        ("HEAD", "/healthz"),
        ("GET", "/healthz/"),
    ]:
        reply = await answer(routes, request(method, path))
        assert reply.status == 204
    assert seen == [
        "GET /v1/services",
        "POST /v1/invoke/http/svc/path",
        "GET /v1/invoke/dubbo/s/m",
        "POST /v1/invoke/dubbo/s/m/extra",
        "HEAD /healthz",
        "GET /healthz/",
    ]
