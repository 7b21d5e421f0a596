"""The call context through ``ANY /v1/invoke/http/...``: hop count, path, budget, the
caller's trace context passed on, loops refused, the error chain in problem details."""

from __future__ import annotations

import pytest

from tests.fixtures.agent_process import AgentProcess

pytestmark = pytest.mark.integration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_context_headers_reach_the_provider(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        response = client.get(
            "/v1/invoke/http/api/echo",
            headers={
                "traceparent": TRACEPARENT,
                "x-meshagent-hops": "3",
                "x-meshagent-path": "app-x",
                "x-meshagent-timeout-ms": "4000",
            },
        )
    assert response.status_code == 200, response.text
    headers = dict(response.json()["headers"])
    # Tracing is off on this agent: the caller's trace context passes through untouched.
    assert headers["traceparent"] == TRACEPARENT
    assert headers["x-meshagent-hops"] == "4"
    assert headers["x-meshagent-path"].startswith("app-x,")
    assert 0 < int(headers["x-meshagent-timeout-ms"]) <= 4000


def test_loop_refused_with_508_and_path(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        response = client.get(
            "/v1/invoke/http/api/echo",
            headers={"x-meshagent-hops": "16", "x-meshagent-path": "app-x,app-y"},
        )
    assert response.status_code == 508, response.text
    problem = response.json()
    assert problem["reason"] == "loop"
    assert "app-x → app-y" in problem["detail"]


def test_failed_call_has_its_chain(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        response = client.get("/v1/invoke/http/dead/x", headers={"x-meshagent-path": "app-x"})
    assert response.status_code == 502, response.text
    chain = response.json()["chain"]
    assert chain[0] == {"app": "app-x"}
    assert chain[-1]["service"] == "dead" and chain[-1]["outcome"] == "connect_error"


def test_garbage_context_is_not_an_error(http_agent: AgentProcess) -> None:
    with http_agent.client() as client:
        response = client.get(
            "/v1/invoke/http/api/echo",
            headers={"x-meshagent-hops": "-1", "x-meshagent-timeout-ms": "1e99"},
        )
    assert response.status_code == 200, response.text
    assert dict(response.json()["headers"])["x-meshagent-hops"] == "1"
