"""GET /v1/rules and /v1/rules/effective over an agent whose rules come from the static
config and then from the local registry's config source (run-time changes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.api.app import create_app
from agent.config import parse_config
from agent.discovery.config_source import ConfigKey
from agent.runtime.agent import Agent

KEY = ConfigKey("meshagent", "shop.rules")
GREETER = "com.acme.Greeter"


def config() -> dict[str, Any]:
    return {
        "app": {"name": "shop"},
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                # Nothing listens on port 9: calls that are sent fail to connect.
                "config": {
                    "services": {
                        "echo": [{"host": "127.0.0.1", "port": 9}],
                        GREETER: [{"host": "127.0.0.1", "port": 9}],
                        "web": [{"host": "127.0.0.1", "port": 9}],
                    }
                },
            }
        ],
        "services": [
            {"name": "echo", "health": {"enabled": False}},
            {"name": GREETER, "protocol": "dubbo", "health": {"enabled": False}},
            {"name": "web", "protocol": "http", "health": {"enabled": False}},
        ],
        "governance": {
            "source": {"registry": "local"},
            "rules": {
                "rules": [{"match": {"to": "echo"}, "timeout_ms": 500}],
                "circuit_breakers": {"echo": {"max_in_flight": 3}},
            },
        },
    }


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    agent = Agent(parse_config(config()))
    await agent.start()
    document = agent.rules_document
    assert document is not None
    await asyncio.wait_for(document.changed.wait(), 5)  # the absent key: static rules
    yield agent
    await agent.stop()


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        yield client


async def publish(agent: Agent, content: str) -> str:
    document = agent.rules_document
    assert document is not None
    document.changed.clear()
    item = await agent.registries["local"].config_source().put(KEY, content)  # type: ignore[union-attr]
    await asyncio.wait_for(document.changed.wait(), 5)
    return item.version


async def test_static_rules_are_shown_and_effective(api: httpx.AsyncClient) -> None:
    rules = (await api.get("/v1/rules")).json()
    assert rules["source"] == "static" and rules["version"] is None
    assert rules["rules"]["rules"] == [{"match": {"to": "echo"}, "timeout_ms": 500}]
    effective = (await api.get("/v1/rules/effective", params={"to": "echo", "method": "m"})).json()
    assert effective["rule_index"] == 0 and effective["rule"]["timeout_ms"] == 500
    assert effective["route"]["from"] == "shop"
    assert effective["circuit_breaker"] == {"max_in_flight": 3}
    none = (await api.get("/v1/rules/effective", params={"to": "other"})).json()
    assert none["rule_index"] is None and none["rule"] is None


async def test_a_new_version_applies_a_bad_one_is_rejected_whole(
    agent: Agent, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    good = await publish(
        agent,
        "rules:\n"
        "  - {match: {to: echo}, timeout_ms: 100}\n"
        "  - {match: {to: echo, method: slow, from: shop}, timeout_ms: 900}\n",
    )
    rules = (await api.get("/v1/rules")).json()
    assert rules["source"] == "meshagent/shop.rules" and rules["version"] == good
    assert rules["rejected_version"] is None
    params = {"to": "echo", "method": "slow"}
    assert (await api.get("/v1/rules/effective", params=params)).json()["rule_index"] == 1
    params["from"] = "someone-else"
    assert (await api.get("/v1/rules/effective", params=params)).json()["rule_index"] == 0

    with caplog.at_level(logging.WARNING, logger="agent.runtime.dynamic"):
        bad = await publish(
            agent,
            "rules:\n"
            "  - {match: {to: echo}, timeout_ms: 100, retries: 3}\n"
            "  - traffic: {subsets: [{name: a, labels: {}, weight: 50}]}\n",
        )
    rules = (await api.get("/v1/rules")).json()
    assert rules["version"] == good and rules["rejected_version"] == bad
    assert any(e.startswith("rules.0.retries:") for e in rules["errors"])
    assert any(e.startswith("rules.1.traffic:") and "add up to 50" in e for e in rules["errors"])
    assert len(rules["rules"]["rules"]) == 2  # the previous set, whole
    assert any("rejected" in r.getMessage() for r in caplog.records)

    await agent.registries["local"].config_source().delete(KEY)  # type: ignore[union-attr]
    document = agent.rules_document
    assert document is not None
    document.changed.clear()
    await asyncio.wait_for(document.changed.wait(), 5)
    assert (await api.get("/v1/rules")).json()["source"] == "static"


async def test_invocations_are_limited_degraded_and_aborted(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    await publish(
        agent,
        f"""
        rules:
          - match: {{to: {GREETER}, method: limited}}
            rate_limit: {{per_s: 0.001, burst: 1}}
          - match: {{to: {GREETER}, method: fallback}}
            degrade: {{value: {{"name": "nobody", "n": 0}}}}
          - match: {{to: {GREETER}, method: broken}}
            fault: {{abort: {{percent: 100, status: 418, message: chaos}}}}
        """,
    )
    url = f"/v1/invoke/dubbo/{GREETER}"
    first = await api.post(f"{url}/limited", json={})
    assert first.status_code == 502  # admitted, sent, and the provider is not there
    second = await api.post(f"{url}/limited", json={})
    assert second.status_code == 429 and second.json()["reason"] == "rate_limited"
    degraded = await api.post(f"{url}/fallback", json={})
    assert degraded.status_code == 200
    assert degraded.json()["result"] == {"name": "nobody", "n": 0}
    aborted = await api.post(f"{url}/broken", json={})
    assert aborted.status_code == 418 and aborted.json()["detail"] == "chaos"
    counters = (await api.get("/v1/rules")).json()["counters"]
    assert counters["rate_limited"] == 1 and counters["degraded"] == 1
    assert counters["fault_aborts"] == 1


async def test_http_invocations_are_rate_limited_by_http_method(
    agent: Agent, api: httpx.AsyncClient
) -> None:
    # The HTTP invocation's calls are named by the HTTP method (agent/telemetry wiring).
    await publish(agent, "rules: [{match: {to: web, method: GET}, rate_limit: {per_s: 0.001}}]")
    first = await api.get("/v1/invoke/http/web/orders")
    assert first.status_code == 502  # admitted, and nothing listens on port 9
    second = await api.get("/v1/invoke/http/web/orders")
    assert second.status_code == 429 and second.json()["reason"] == "rate_limited"
    assert (await api.post("/v1/invoke/http/web/orders")).status_code == 502  # POST: no rule
