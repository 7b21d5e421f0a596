"""Config put/watch round trip through the OpenAPI, with Nacos as the config source."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from agent.api.app import create_app
from agent.config import parse_config
from agent.runtime.agent import Agent
from tests.fixtures.nacos import NacosServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def agent(nacos_server: NacosServer) -> AsyncIterator[Agent]:
    raw = {
        "admin": {"port": 0},
        "registries": [
            {"name": "local", "type": "local", "config": {}},
            {
                "name": "nacos",
                "type": "nacos",
                "config": {
                    "server_addresses": [nacos_server.server_addr],
                    "require_connection": True,
                    "connect_timeout_s": 30,
                },
            },
        ],
        "config_source": "nacos",
        "config_api": {"allow_writes": True, "watch_max_s": 12},
    }
    agent = Agent(parse_config(raw))
    await agent.start()
    yield agent
    await agent.stop()


async def test_put_then_watch_sees_the_change_through_the_api(
    agent: Agent, nacos_server: NacosServer
) -> None:
    transport = httpx.ASGITransport(app=create_app(agent), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
        assert (await api.get("/v1/config")).json()["source"] == "nacos"
        put = await api.put("/v1/config/api-test/rules", json={"content": "weight: 1"})
        assert put.status_code == 200
        # Nacos' own HTTP API sees what the agent wrote.
        stored = nacos_server.http(
            "GET", "/v3/admin/cs/config", {"dataId": "rules", "groupName": "api-test"}
        )
        assert stored["content"] == "weight: 1"

        # httpx's ASGI transport hands over a response once it is complete: the watch runs
        # (for watch_max_s) while an operator changes the document in Nacos.
        watching = asyncio.ensure_future(api.get("/v1/config/api-test/rules/watch"))
        await asyncio.to_thread(
            nacos_server.http,
            "POST",
            "/v3/admin/cs/config",
            {"dataId": "rules", "groupName": "api-test", "content": "weight: 2"},
        )
        reply = await asyncio.wait_for(watching, 60)
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in reply.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    assert events[-1][0] == "end"
    values = [data["content"] for name, data in events if name == "value"]
    # The value when the watch began, then the operator's change (or only the change when
    # it landed first); never anything else, never out of order.
    assert values in (["weight: 1", "weight: 2"], ["weight: 2"]), values
