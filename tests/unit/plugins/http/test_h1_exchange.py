"""The exchange (plugins/http/h1_exchange.py) behind both doors of the HTTP listener: the
same request gets the same retries, deadlines and answers whether its client speaks
HTTP/1.1 or HTTP/2 (httpx, prior knowledge), against small h11 providers in-process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.http_providers import config, url

DOORS = ["http1", "http2"]


def client(agent: Any, door: str, timeout: float = 10) -> httpx.AsyncClient:
    http2 = door == "http2"
    return httpx.AsyncClient(base_url=url(agent), http1=not http2, http2=http2, timeout=timeout)


@pytest.mark.parametrize("door", DOORS)
async def test_requests_are_balanced_and_connections_pooled(
    providers: Any, agents: Any, door: str
) -> None:
    a, b = await providers("a"), await providers("b")
    agent = await agents(config([a.port, b.port]))
    async with client(agent, door) as http:
        answers = [await http.get(f"/n/{i}") for i in range(6)]
    assert {r.http_version for r in answers} == {"HTTP/2" if door == "http2" else "HTTP/1.1"}
    assert sorted(r.json()["name"] for r in answers) == ["a"] * 3 + ["b"] * 3
    assert [r.json()["path"] for r in answers] == [f"/n/{i}" for i in range(6)]
    # One kept-alive provider connection each: sequential requests reuse it.
    assert a.connections == 1 and b.connections == 1
    stats = agent.listeners[0].context.stats
    assert stats.requests == 6 and stats.request_errors == 0


@pytest.mark.parametrize("door", DOORS)
async def test_a_reused_connection_the_provider_closed_is_sent_again(
    providers: Any, agents: Any, door: str
) -> None:
    provider = await providers("a", mode="close_after")
    agent = await agents(config([provider.port]))
    async with client(agent, door) as http:
        for i in range(4):
            assert (await http.get(f"/{i}")).status_code == 200
    assert provider.connections == 4


@pytest.mark.parametrize("door", DOORS)
async def test_no_endpoint_is_the_agents_503_problem(agents: Any, door: str) -> None:
    agent = await agents(config([]))
    async with client(agent, door) as http:
        answer = await http.get("/x")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["service"] == "api"
    assert agent.listeners[0].context.stats.request_errors == 1


@pytest.mark.parametrize("door", DOORS)
async def test_a_body_cut_by_the_provider_is_cut_for_the_client(
    providers: Any, agents: Any, door: str
) -> None:
    provider = await providers("a", mode="short_body")
    agent = await agents(config([provider.port]))
    async with client(agent, door) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/x")
        if door == "http2":
            # Only that stream was reset: the connection serves the next request.
            provider.mode = "ok"
            assert (await http.get("/y")).status_code == 200


@pytest.mark.parametrize("door", DOORS)
async def test_each_request_has_its_own_response_deadline(
    raw_provider: Any, agents: Any, door: str
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    provider = await raw_provider({b"/slow": ok, b"/fast": ok})
    provider.gated.add(b"/slow")  # never answered: the gate stays shut
    raw = config([provider.port])
    raw["services"][0]["options"] = {"timeout_ms": 300}
    agent = await agents(raw)
    async with client(agent, door) as http:
        if door == "http2":
            # On one connection at once: the quick streams are not held by the slow one.
            slow, *fast = await asyncio.gather(
                http.get("/slow"), *(http.get("/fast") for _ in range(3))
            )
        else:
            slow = await http.get("/slow")
            fast = [await http.get("/fast") for _ in range(3)]
    assert slow.status_code == 504 and slow.json()["service"] == "api"
    assert [r.status_code for r in fast] == [200, 200, 200]


@pytest.mark.parametrize("door", DOORS)
async def test_a_retry_rule_retries_a_gateway_error_elsewhere(
    raw_provider: Any, agents: Any, door: str
) -> None:
    bad = await raw_provider({b"/r": b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"})
    good = await raw_provider({b"/r": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    raw = config([bad.port, good.port])
    raw["governance"] = {
        "rules": {
            "rules": [
                {
                    "match": {"to": "api"},
                    "retry": {"attempts": 2, "budget": {"ratio": 1.0, "min_per_s": 10}},
                }
            ]
        }
    }
    agent = await agents(raw)
    async with client(agent, door) as http:
        answers = [await http.get("/r") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert len(bad.requests) >= 1 and len(good.requests) == 4
