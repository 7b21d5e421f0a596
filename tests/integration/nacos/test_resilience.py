"""Nacos unreachable at start, then restarted: a private server this test may stop and start.

The agent starts without Nacos (status says why), registers anyway, and everything arrives once
Nacos is up. Across a Nacos restart the registration is re-sent and the consumer's endpoint set
is never empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.discovery.types import Registration, Remove, ServiceKey
from plugins.nacos.config import NacosConfig
from plugins.nacos.registry import NacosRegistry
from tests.fixtures.agent_process import start_agent
from tests.fixtures.nacos import NacosServer, free_port_pair
from tests.support.discovery import Consumer, eventually

pytestmark = pytest.mark.integration


def registry(nacos: NacosServer) -> NacosRegistry:
    config = NacosConfig(
        server_addresses=[nacos.server_addr],
        group="resilience",
        default_mode="plain",
        connect_timeout_s=1,
        restart_grace_s=30,
    )
    return NacosRegistry(config)


async def test_unreachable_at_start_then_restarted(
    nacos_factory: Callable[..., NacosServer],
) -> None:
    nacos = nacos_factory(start=False)
    provider, consumer = registry(nacos), registry(nacos)
    try:
        await provider.start()  # returns after connect_timeout_s: running disconnected
        status = provider.status()
        assert status.connected is False
        assert nacos.server_addr in status.detail
        await provider.register(Registration("orders", "o-1", "10.3.0.1", 8080))
        await consumer.start()
        model = Consumer(consumer.subscribe(ServiceKey("orders")))

        await asyncio.to_thread(nacos.start)
        await eventually(lambda: provider.status().connected, 60, "provider connected")
        await model.until(lambda m: set(m.instances) == {"o-1"}, within_s=60)

        # Restart: the consumer must keep o-1 throughout, and the provider re-registers it.
        seen_empty: list[bool] = []

        def record(m: Consumer) -> bool:
            seen_empty.append(not m.instances)
            return False  # never done: it watches until cancelled

        watcher = asyncio.ensure_future(model.until(record, within_s=300))
        await asyncio.to_thread(nacos.restart)
        await eventually(lambda: provider.status().connected, 60, "provider reconnected")
        await eventually(lambda: consumer.status().connected, 60, "consumer reconnected")

        def listed() -> bool:
            params = {"serviceName": "orders", "groupName": "resilience"}
            hosts = nacos.http("GET", "/v3/client/ns/instance/list", params)
            return [h["ip"] for h in hosts] == ["10.3.0.1"]

        await eventually(lambda: _quiet(listed), 60, "o-1 re-registered in the new Nacos")
        watcher.cancel()
        assert set(model.instances) == {"o-1"}
        assert not any(seen_empty), "the consumer saw an empty endpoint set"
        assert not any(isinstance(u, Remove) for u in model.updates), "o-1 was removed"

        # Issue 27: a provider that registers after the restart reached the consumer 20-30 s
        # after Nacos listed it (the SDK re-subscribed only on its 30 s redo round). The
        # consumer re-subscribes as it reconnects now: the server's push brings it at once.
        await provider.register(Registration("orders", "o-2", "10.3.0.2", 8080))

        def both_listed() -> bool:
            params = {"serviceName": "orders", "groupName": "resilience"}
            hosts = nacos.http("GET", "/v3/client/ns/instance/list", params)
            return sorted(h["ip"] for h in hosts) == ["10.3.0.1", "10.3.0.2"]

        await eventually(lambda: _quiet(both_listed), 60, "o-2 listed by Nacos")
        # Generous against a push (milliseconds), well under the 30 s redo round.
        await model.until(lambda m: set(m.instances) == {"o-1", "o-2"}, within_s=10)
    finally:
        await provider.close()
        await consumer.close()


def _quiet(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:
        return False


def test_agent_process_starts_without_nacos_and_readyz_says_why(tmp_path: Path) -> None:
    port = free_port_pair()  # nothing listens there
    config = {
        "registries": [
            {
                "name": "nacos",
                "type": "nacos",
                "config": {"server_addresses": [f"127.0.0.1:{port}"], "connect_timeout_s": 1},
            }
        ],
        "services": [{"name": "orders", "registry": "nacos", "health": {"enabled": False}}],
    }
    agent = start_agent(tmp_path / "agent", config, name="agent-no-nacos")
    try:
        with agent.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert any("orders" in reason for reason in body["reasons"])
            (state,) = body["registries"]
            assert state["name"] == "nacos" and state["connected"] is False
            assert f"127.0.0.1:{port}" in state["detail"]
            assert client.get("/healthz").status_code == 200  # serving all the same
    finally:
        agent.stop()
