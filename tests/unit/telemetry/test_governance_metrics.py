"""Governance counters on /metrics, scraped from an agent whose rules refuse calls."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.api.app import create_app
from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.fixtures.net import async_wait_until

GREETER = "com.acme.Greeter"


def config() -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {GREETER: [{"host": "127.0.0.1", "port": 9}]}},
            }
        ],
        "services": [{"name": GREETER, "protocol": "dubbo", "health": {"enabled": False}}],
        "governance": {
            "rules": {
                "rules": [
                    {"match": {"method": "limited"}, "rate_limit": {"per_s": 0.001, "burst": 1}},
                    {"match": {"method": "fallback"}, "degrade": {"value": 1}},
                ],
                "circuit_breakers": {GREETER: {"max_in_flight": 10}},
            }
        },
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_decisions_loads_and_rules_are_metrics() -> None:
    agent = Agent(parse_config(config()))
    await agent.start()
    await async_wait_until(lambda: agent.ready()[0], 5, "the first discovery snapshot")
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
            url = f"/v1/invoke/dubbo/{GREETER}"
            assert (await api.post(f"{url}/limited", json={})).status_code == 502  # sent
            assert (await api.post(f"{url}/limited", json={})).status_code == 429
            assert (await api.post(f"{url}/fallback", json={})).json()["result"] == 1
            found = samples((await api.get("/metrics")).text)
    finally:
        await agent.stop()
    decision = "meshagent_governance_decisions_total"
    assert found[(decision, (("decision", "rate_limited"),))] == 1
    assert found[(decision, (("decision", "degraded"),))] == 1
    cluster = (("cluster", GREETER),)
    assert found[("meshagent_governance_in_flight", cluster)] == 0
    assert found[("meshagent_governance_breaker_overflows_total", cluster)] == 0
    assert found[("meshagent_governance_rules", (("source", "static"),))] == 2
    assert found[("meshagent_governance_rules_rejected", ())] == 0
