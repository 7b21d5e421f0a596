"""HTTP calls on the inbound listener: read as calls (metrics marked inbound, the caller
its context names, the call context passed on to the app), in front of a real uvicorn
app, with the agent as a process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, providers: dict[str, int]
) -> Iterator[AgentProcess]:
    port = free_port()
    agent = start_agent(
        tmp_path_factory.mktemp("agent-inbound-http"),
        {
            "app": {"name": "orders", "cluster": "c2"},
            "inbound": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": port,
                "app_port": providers["a"],
                "health": {"enabled": False},
            },
            "drain_timeout_s": 2,
        },
    )
    agent.inbound_port = port  # type: ignore[attr-defined]
    try:
        yield agent
    finally:
        agent.stop()


def test_inbound_http_requests_are_calls(agent: AgentProcess) -> None:
    labels = {
        "from": "checkout",
        "to": "orders",
        "to_cluster": "c2",
        "method": "POST",
        "protocol": "http",
        "direction": "inbound",
        "outcome": "ok",
    }
    before = agent.metric("meshagent_calls_total", **labels)
    port = agent.inbound_port  # type: ignore[attr-defined]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(3):
            response = client.post(
                "/orders",
                content=b"{}",
                headers={"x-meshagent-path": "web,checkout", "x-meshagent-hops": "2"},
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-upstream"] == "a"
            seen = dict(response.json()["headers"])
            assert seen["x-meshagent-hops"] == "3"
            assert seen["x-meshagent-path"] == "web,checkout,orders"
    assert agent.metric("meshagent_calls_total", **labels) == before + 3
    assert agent.metric("meshagent_inbound_pipelines_total", pipeline="http") >= 1
