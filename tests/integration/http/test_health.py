"""The ``http`` health checker in a running agent, against uvicorn and nginx."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess

pytestmark = pytest.mark.integration


def test_only_endpoints_answering_the_expected_status_take_traffic(
    http_agent: AgentProcess, nginx: int
) -> None:
    def verdicts() -> dict[int, bool] | None:
        endpoints = http_agent.endpoints("checked")
        healthy = {e["port"]: e["healthy"] for e in endpoints}
        return healthy if len(healthy) == 2 and sum(healthy.values()) == 1 else None

    healthy = http_agent.process.wait_for(verdicts, 20, what="one healthy endpoint")
    assert healthy[nginx] is True
    port = http_agent.listener_port()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Host": "checked.test"}) as c:
        assert {c.get("/hello").text for _ in range(6)} == {"hello from nginx\n"}
