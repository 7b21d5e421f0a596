"""The agent's dynamic settings (agent/runtime/settings.py), from the embedded config source:
applied without restart, a bad document rejected whole with the previous settings kept."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from agent.api.app import create_app
from agent.config import parse_config
from agent.discovery.config_source import ConfigKey
from agent.runtime.agent import Agent

KEY = ConfigKey("meshagent", "settings")


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    raw = {
        "admin": {"port": 0},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        "orders": [
                            {"host": "10.0.0.1", "port": 80},
                            {"host": "10.0.0.2", "port": 80},
                        ]
                    }
                },
            }
        ],
        "services": [
            {"name": "orders", "lb": {"policy": "round_robin"}, "health": {"enabled": False}}
        ],
        "dynamic_settings": {},
    }
    agent = Agent(parse_config(raw))
    await agent.start()
    yield agent
    await agent.stop()


async def publish(agent: Agent, content: str | None) -> None:
    document = agent.settings_document
    assert document is not None
    found = agent.config_source()
    assert found is not None
    document.changed.clear()
    if content is None:
        await found[1].delete(KEY)
    else:
        await found[1].put(KEY, content)
    await asyncio.wait_for(document.changed.wait(), 5)


def picks(agent: Agent, n: int = 100) -> Counter[str]:
    cluster = agent.clusters["orders"]
    return Counter(cluster.choose().id for _ in range(n))  # type: ignore[union-attr]


async def test_settings_apply_without_restart_and_a_bad_document_changes_nothing(
    agent: Agent,
) -> None:
    cluster = agent.clusters["orders"]
    assert cluster.lb_policy == "round_robin"
    assert picks(agent) == {"10.0.0.1:80": 50, "10.0.0.2:80": 50}

    await publish(
        agent,
        "services:\n  orders:\n    lb_policy: weighted_random\n    weights: {'10.0.0.2:80': 0}\n",
    )
    assert cluster.lb_policy == "weighted_random"
    assert picks(agent) == {"10.0.0.1:80": 100}  # weight 0 takes no traffic
    good = agent.settings_document.status.version  # type: ignore[union-attr]

    await publish(
        agent,
        "services:\n  orders: {lb_policy: no_such_policy}\n  ghost: {weights: {a: 1}}\n",
    )
    status = agent.settings_document.status  # type: ignore[union-attr]
    assert status.version == good and status.rejected_version is not None
    assert any(e.startswith("services.orders.lb_policy") for e in status.errors)
    assert any(e.startswith("services.ghost") for e in status.errors)
    assert cluster.lb_policy == "weighted_random"  # the previous settings stay
    assert picks(agent) == {"10.0.0.1:80": 100}

    await publish(agent, "services: {orders: {weights: {'10.0.0.1:80': -1}}}")
    assert agent.settings_document.status.errors[0].startswith(  # type: ignore[union-attr]
        "services.orders.weights.10.0.0.1:80"
    )

    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
        shown = (await api.get("/v1/config")).json()["settings"]
    assert shown["version"] == good and shown["errors"]

    await publish(agent, None)  # deleted: the static config again
    assert cluster.lb_policy == "round_robin"
    assert picks(agent) == {"10.0.0.1:80": 50, "10.0.0.2:80": 50}
