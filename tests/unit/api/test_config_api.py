"""``/v1/config`` over the embedded registry's config source (agent/api/config_api.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.api.app import create_app
from agent.config import parse_config
from agent.runtime.agent import Agent


def config(**config_api: Any) -> dict[str, Any]:
    return {
        "admin": {"port": 0},
        "registries": [{"name": "local", "type": "local", "config": {}}],
        "config_api": config_api,
    }


async def started(raw: dict[str, Any]) -> Agent:
    agent = Agent(parse_config(raw))
    await agent.start()
    return agent


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    agent = await started(config(allow_writes=True, watch_max_s=1.5))
    yield agent
    await agent.stop()


def client(agent: Agent, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(agent), client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://agent")


def events(body: str) -> list[tuple[str, Any]]:
    found = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines["event"], json.loads(lines["data"])))
    return found


async def test_status_get_put_delete(agent: Agent) -> None:
    async with client(agent) as api:
        status = (await api.get("/v1/config")).json()
        assert status["source"] == "local" and status["writes_enabled"] is True
        assert (await api.get("/v1/config/app/rules")).status_code == 404
        put = await api.put("/v1/config/app/rules", json={"content": "timeout_ms: 300"})
        assert put.status_code == 200 and put.json()["content"] == "timeout_ms: 300"
        got = (await api.get("/v1/config/app/rules")).json()
        assert (got["group"], got["data_id"], got["version"]) == (
            "app",
            "rules",
            put.json()["version"],
        )
        assert (await api.delete("/v1/config/app/rules")).status_code == 204
        assert (await api.delete("/v1/config/app/rules")).status_code == 404
        bad = await api.get("/v1/config/app/no%20spaces")
        assert bad.status_code == 400 and "data_id" in bad.json()["detail"]


async def test_writes_refused_unless_enabled_and_from_loopback() -> None:
    agent = await started(config())
    try:
        async with client(agent) as api:
            refused = await api.put("/v1/config/app/rules", json={"content": "x"})
            assert refused.status_code == 403 and "allow_writes" in refused.json()["detail"]
            assert (await api.get("/v1/config")).json()["writes_enabled"] is False
    finally:
        await agent.stop()
    agent = await started(config(allow_writes=True))
    try:
        async with client(agent, peer="10.1.2.3") as api:
            remote = await api.put("/v1/config/app/rules", json={"content": "x"})
            assert remote.status_code == 403 and "loopback" in remote.json()["detail"]
    finally:
        await agent.stop()


async def test_watch_streams_current_value_then_changes_then_ends(agent: Agent) -> None:
    async with client(agent) as api:
        await api.put("/v1/config/app/rules", json={"content": "v1"})
        watching = asyncio.ensure_future(api.get("/v1/config/app/rules/watch"))
        await api.put("/v1/config/app/rules", json={"content": "v2"})
        reply = await asyncio.wait_for(watching, 10)
    assert reply.headers["content-type"].startswith("text/event-stream")
    seen = events(reply.text)
    assert seen[-1][0] == "end"
    values = [data["content"] for name, data in seen if name == "value"]
    assert values in (["v1", "v2"], ["v2"])  # current value first, then the change


def test_unknown_config_source_is_a_config_error() -> None:
    with pytest.raises(Exception, match="config_source: unknown registry 'nope'"):
        parse_config({**config(), "config_source": "nope"})
