"""Calls on the HTTP listener: every request is a call, with metrics, a trace, the call
context and governance, against real uvicorn providers and a real OpenTelemetry Collector,
with the agent as a process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.otel_collector import Collector
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _rules() -> dict[str, Any]:
    return {
        "rules": [
            {
                "match": {"to": "api", "method": "GET"},
                "traffic": {
                    "subsets": [
                        {"name": "a", "labels": {"name": "a"}, "weight": 100},
                        {"name": "b", "labels": {"name": "b"}, "weight": 0},
                    ],
                    "matches": [{"headers": {"x-canary": {"exact": "yes"}}, "subset": "b"}],
                },
            },
            {
                "match": {"to": "api", "method": "DELETE"},
                "rate_limit": {"per_s": 0.001, "burst": 2},
            },
            {"match": {"to": "api", "method": "PATCH"}, "degrade": {"value": {"fallback": True}}},
            {
                "match": {"to": "api", "method": "OPTIONS"},
                "fault": {"abort": {"percent": 100, "status": 418, "message": "teapot drill"}},
            },
            {
                "match": {"to": "api", "method": "PUT"},
                "fault": {"delay": {"percent": 100, "ms": 300}},
            },
            {
                "match": {"to": "failing", "method": "GET"},
                "retry": {
                    "attempts": 2,
                    "retry_on": ["retryable_status"],
                    "backoff_base_ms": 0,
                    "backoff_max_ms": 0,
                    "budget": {"ratio": 0.2, "min_per_s": 0, "window_s": 60},
                },
            },
        ]
    }


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, providers: dict[str, int], collector: Collector
) -> Iterator[AgentProcess]:
    def service(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "protocol": "http", "health": {"enabled": False}, **extra}

    config = {
        "app": {"name": "app-h", "cluster": "c1"},
        "services": [service("api"), service("failing"), service("slow")],
        "listeners": [
            {
                "port": free_port(),
                "service": "api",
                "protocol": "http",
                "config": {
                    "routes": [
                        {"host": "failing.test", "service": "failing"},
                        {"host": "slow.test", "service": "slow"},
                    ]
                },
            }
        ],
        "telemetry": {
            "tracing": {
                "enabled": True,
                "exporter": "otlp_grpc",
                "endpoint": collector.grpc_endpoint,
                "schedule_delay_s": 0.1,
                "export_timeout_s": 2,
            }
        },
        "governance": {"rules": _rules()},
        "drain_timeout_s": 2,
    }
    agent = start_agent(tmp_path_factory.mktemp("agent-http-calls"), config)
    try:
        with agent.client() as client:
            for service_name in ("api", "failing", "slow"):
                for name, port in providers.items():
                    client.put(
                        f"/v1/registrations/{service_name}/{name}",
                        json={"host": "127.0.0.1", "port": port, "metadata": {"name": name}},
                    ).raise_for_status()
        for service_name in ("api", "failing", "slow"):
            agent.wait_endpoints(service_name, 2)
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{agent.listener_port(0)}", timeout=10) as c:
        yield c


def _counters(agent: AgentProcess) -> dict[str, int]:
    with agent.client() as admin:
        counters: dict[str, int] = admin.get("/v1/rules").json()["counters"]
    return counters


def test_a_request_is_a_traced_call_with_metrics(
    agent: AgentProcess, collector: Collector, client: httpx.Client
) -> None:
    labels = {"protocol": "http", "direction": "outbound", "to": "api", "method": "GET"}
    before = agent.metric("meshagent_calls_total", outcome="ok", **labels)
    response = client.get(
        "/echo", headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "x-meshagent-hops": "2"}
    )
    assert response.status_code == 200, response.text
    seen = dict(response.json()["headers"])
    sent = seen["traceparent"].split("-")
    # The provider's parent is the agent's client span, in the caller's trace.
    assert sent[1] == TRACE and sent[2] != PARENT
    assert seen["x-meshagent-hops"] == "3"
    assert seen["x-meshagent-path"] == "app-h"

    server, _ = collector.wait_for_call(TRACE, PARENT, sent[2])
    assert server["attrs"]["rpc.service"] == "api"
    assert server["attrs"]["rpc.method"] == "GET"
    assert server["service"] == "app-h"
    after = agent.metric(
        "meshagent_calls_total",
        outcome="ok",
        **labels,
        **{"from": "app-h", "from_cluster": "c1"},
    )
    assert after == before + 1


def test_the_budget_travels_and_bounds_the_wait(client: httpx.Client) -> None:
    response = client.get("/echo", headers={"x-meshagent-timeout-ms": "5000"})
    assert 0 < int(dict(response.json()["headers"])["x-meshagent-timeout-ms"]) <= 5000
    started = time.monotonic()
    response = client.get(
        "/slow?s=5", headers={"host": "slow.test", "x-meshagent-timeout-ms": "300"}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["service"] == "slow"
    assert response.json()["chain"][-1]["outcome"] == "timeout"
    assert elapsed < 4  # the provider would have taken 5 s


def test_a_loop_is_refused_with_508_and_its_path(client: httpx.Client) -> None:
    response = client.get(
        "/echo", headers={"x-meshagent-hops": "16", "x-meshagent-path": "app-x,app-y"}
    )
    assert response.status_code == 508, response.text
    problem = response.json()
    assert problem["reason"] == "loop"
    assert "app-x → app-y → app-h → api" in problem["detail"]
    assert problem["chain"][0] == {"app": "app-x"}
    # The connection stays usable after a refusal.
    assert client.get("/echo").status_code == 200


def test_traffic_split_and_header_canary(client: httpx.Client) -> None:
    names = {client.get("/echo").json()["name"] for _ in range(8)}
    assert names == {"a"}  # subset a takes 100%
    canary = {client.get("/echo", headers={"x-canary": "yes"}).json()["name"] for _ in range(4)}
    assert canary == {"b"}


def test_rate_limit_answers_429(agent: AgentProcess, client: httpx.Client) -> None:
    before = _counters(agent)["rate_limited"]
    statuses = [client.delete("/echo").status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]
    assert statuses[2:] == [429, 429]
    refused = client.delete("/echo")
    assert refused.json()["reason"] == "rate_limited"
    assert _counters(agent)["rate_limited"] == before + 3
    assert (
        agent.metric(
            "meshagent_calls_total",
            protocol="http",
            to="api",
            method="DELETE",
            outcome="rejected",
        )
        >= 3
    )


def test_degradation_answers_the_fallback_value(client: httpx.Client) -> None:
    response = client.patch("/echo", content=b"ignored")
    assert response.status_code == 200
    assert response.json() == {"fallback": True}
    assert "x-upstream" not in response.headers  # no provider was called


def test_fault_abort_and_delay(client: httpx.Client) -> None:
    aborted = client.options("/echo")
    assert aborted.status_code == 418
    assert aborted.json()["detail"] == "teapot drill"
    started = time.monotonic()
    delayed = client.put("/echo", content=b"x")
    assert delayed.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_retry_budget_bounds_the_attempts(agent: AgentProcess, client: httpx.Client) -> None:
    labels = {"protocol": "http", "to": "failing", "method": "GET"}
    calls_before = agent.metric("meshagent_calls_total", **labels)
    retries_before = agent.metric("meshagent_call_retries_total", **labels)
    over_before = _counters(agent)["retries_over_budget"]
    calls = 30
    for _ in range(calls):
        response = client.get("/status/503", headers={"host": "failing.test"})
        assert response.status_code == 503  # the provider's own answer, passed on
        assert response.headers["x-upstream"] in ("a", "b")
    assert agent.metric("meshagent_calls_total", **labels) == calls_before + calls
    retries = agent.metric("meshagent_call_retries_total", **labels) - retries_before
    # Budget 20%: at most 0.2 retries per call, and some were made.
    assert 1 <= retries <= 0.2 * calls
    assert _counters(agent)["retries_over_budget"] > over_before


def test_http2_streams_are_calls_too(agent: AgentProcess) -> None:
    labels = {"protocol": "http", "to": "api", "method": "GET", "outcome": "ok"}
    before = agent.metric("meshagent_calls_total", **labels)
    base = f"http://127.0.0.1:{agent.listener_port(0)}"
    with httpx.Client(base_url=base, http1=False, http2=True, timeout=10) as h2:
        seen = h2.get("/echo", headers={"x-meshagent-hops": "4"})
        assert seen.http_version == "HTTP/2"
        assert dict(seen.json()["headers"])["x-meshagent-hops"] == "5"
        # Governance applies per stream: the canary header picks subset b.
        assert h2.get("/echo", headers={"x-canary": "yes"}).json()["name"] == "b"
        degraded = h2.patch("/echo")
        assert (degraded.status_code, degraded.json()) == (200, {"fallback": True})
        loop = h2.get("/echo", headers={"x-meshagent-hops": "99"})
        assert loop.status_code == 508 and loop.json()["reason"] == "loop"
    assert agent.metric("meshagent_calls_total", **labels) == before + 2


def test_http_invocation_is_governed_the_same_way(agent: AgentProcess) -> None:
    with agent.client() as api:
        degraded = api.patch("/v1/invoke/http/api/echo", content=b"x")
        assert (degraded.status_code, degraded.json()) == (200, {"fallback": True})
        names = {api.get("/v1/invoke/http/api/echo").json()["name"] for _ in range(4)}
        assert names == {"a"}
        canary = api.get("/v1/invoke/http/api/echo", headers={"x-canary": "yes"})
        assert canary.json()["name"] == "b"
        started = time.monotonic()
        assert api.put("/v1/invoke/http/api/echo", content=b"x").status_code == 200
        assert time.monotonic() - started >= 0.3


def test_http2_streams_and_invocations_retry_under_the_rule(agent: AgentProcess) -> None:
    """The rule's retries (and its budget) apply to HTTP/2 streams and to the OpenAPI's
    HTTP invocation as to HTTP/1.1 requests."""
    labels = {"protocol": "http", "to": "failing", "method": "GET"}
    retries_before = agent.metric("meshagent_call_retries_total", **labels)
    calls = 20
    base = f"http://127.0.0.1:{agent.listener_port(0)}"
    with httpx.Client(base_url=base, http1=False, http2=True, timeout=10) as h2:
        for _ in range(calls // 2):
            response = h2.get("/status/503", headers={"host": "failing.test"})
            assert response.http_version == "HTTP/2" and response.status_code == 503
    with agent.client() as api:
        for _ in range(calls // 2):
            assert api.get("/v1/invoke/http/failing/status/503").status_code == 503
    retries = agent.metric("meshagent_call_retries_total", **labels) - retries_before
    assert 1 <= retries <= 0.2 * calls
