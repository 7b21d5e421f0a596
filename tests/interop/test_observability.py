"""Traces, deadlines, hop counts and error chains across two agents and the Java provider.

app --OpenAPI--> agent A (app-a; dubbo invoke) --dubbo--> agent B (app-b; dubbo listener)
--dubbo--> the Java Dubbo 3.3 provider, whose ``attachments()`` returns the attachments it
received (and echoes them back as response attachments). Spans go to a real OpenTelemetry
Collector (OTLP): agent A exports over HTTP, agent B over gRPC. One collector, one provider
and two agents for the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, start_provider
from tests.fixtures.otel_collector import Collector, start_collector
from tests.fixtures.processes import LOOPBACK, free_port, wait_until

pytestmark = pytest.mark.integration

INVOKE = f"/v1/invoke/dubbo/{INTERFACE}"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP span kinds


@dataclass
class Mesh:
    collector: Collector
    provider: DubboProvider
    a: AgentProcess
    b: AgentProcess
    access_log: Path


def _service(**extra: Any) -> dict[str, Any]:
    return {
        "name": INTERFACE,
        "registry": "local",
        "protocol": "dubbo",
        "health": {"enabled": False},
        **extra,
    }


def _register(agent: AgentProcess, host: str, port: int) -> None:
    with agent.client() as client:
        response = client.put(
            f"/v1/registrations/{INTERFACE}/{host}:{port}", json={"host": host, "port": port}
        )
        assert response.status_code in (200, 201), response.text
    agent.wait_endpoints(INTERFACE, 1)


@pytest.fixture(scope="module")
def mesh(dubbo_peer_jar: Path, interop_workdir: Path) -> Iterator[Mesh]:
    workdir = interop_workdir / "observability"
    collector = start_collector(workdir / "otelcol")
    provider = start_provider(workdir, jar=dubbo_peer_jar, provider_id="obs")
    access_log = workdir / "access-b.log"
    b_port = free_port()
    tracing = {"schedule_delay_s": 0.1, "export_timeout_s": 2}
    b = start_agent(
        workdir,
        {
            "app": {"name": "app-b"},
            "services": [_service()],
            "listeners": [{"port": b_port, "service": INTERFACE, "protocol": "dubbo"}],
            "telemetry": {
                "tracing": {
                    "enabled": True,
                    "exporter": "otlp_grpc",
                    "endpoint": collector.grpc_endpoint,
                    **tracing,
                },
                "access_log": {"enabled": True, "path": str(access_log)},
            },
        },
        name="agent-b",
    )
    a = start_agent(
        workdir,
        {
            "app": {"name": "app-a", "cluster": "c1"},
            "services": [_service()],
            "telemetry": {
                "tracing": {
                    "enabled": True,
                    "exporter": "otlp_http",
                    "endpoint": collector.http_endpoint,
                    **tracing,
                }
            },
        },
        name="agent-a",
    )
    try:
        _register(b, LOOPBACK, int(provider.address.rsplit(":", 1)[1]))
        _register(a, LOOPBACK, b_port)
        yield Mesh(collector, provider, a, b, access_log)
    finally:
        a.stop()
        b.stop()
        provider.stop()
        collector.stop()


def _invoke(
    agent: AgentProcess, method: str, headers: dict[str, str], body: dict[str, Any] | None = None
) -> httpx.Response:
    with agent.client() as client:
        return client.post(
            f"{INVOKE}/{method}", json=body or {"types": [], "args": []}, headers=headers
        )


def _samples(agent: AgentProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(agent.metrics()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _value(agent: AgentProcess, name: str, **labels: str) -> float:
    return sum(
        value
        for got, value in _samples(agent).get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


def test_trace_crosses_both_agents_into_the_java_provider(mesh: Mesh) -> None:
    response = _invoke(
        mesh.a, "attachments", {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "v=1"}
    )
    assert response.status_code == 200, response.text
    seen = response.json()["result"]
    # What the Java provider received from agent B: our trace, B's client span as parent,
    # the hop count and path of both agents. (Dubbo's ContextFilter keeps ``timeout`` from
    # the provider's attachments: the budget is checked in B's access log below.)
    sent = seen["traceparent"].split("-")
    assert sent[1] == TRACE and sent[3] == "01"
    assert seen["tracestate"] == "v=1"
    assert seen["x-meshagent-hops"] == "2"
    assert seen["x-meshagent-path"] == "app-a,app-b"
    # ... and returned them as response attachments, through agent B back to A's caller.
    assert response.json()["attachments"]["seen.traceparent"] == seen["traceparent"]

    spans = mesh.collector.wait_for_trace(TRACE, 4)
    by = {(s["service"], s["kind"]): s for s in spans}
    a_server, a_client = by[("app-a", SERVER)], by[("app-a", CLIENT)]
    b_server, b_client = by[("app-b", SERVER)], by[("app-b", CLIENT)]
    assert a_server["parentSpanId"] == PARENT
    assert a_client["parentSpanId"] == a_server["spanId"]
    assert b_server["parentSpanId"] == a_client["spanId"]
    assert b_client["parentSpanId"] == b_server["spanId"]
    assert sent[2] == b_client["spanId"]  # the provider's parent is B's attempt
    assert b_server["attrs"]["rpc.system"] == "apache_dubbo"
    assert b_server["attrs"]["rpc.service"] == INTERFACE
    assert b_server["attrs"]["rpc.method"] == "attachments"
    assert b_client["attrs"]["server.address"] == LOOPBACK
    # OTLP/JSON writes 64-bit ints as strings.
    assert int(b_client["attrs"]["server.port"]) == int(mesh.provider.address.rsplit(":", 1)[1])

    # B's access log has the call under the same trace id, with A's budget (1 s default).
    line = _logged(mesh, TRACE)
    assert 0 < line["budget_ms"] <= 1000
    assert (line["from"], line["to"], line["method"], line["outcome"]) == (
        "app-b",
        INTERFACE,
        "attachments",
        "ok",
    )
    # Metrics by five-tuple on both sides, parsed with prometheus_client's parser.
    assert (
        _value(
            mesh.a,
            "meshagent_calls_total",
            **{"from": "app-a", "from_cluster": "c1", "to": INTERFACE},
            method="attachments",
            protocol="dubbo",
            direction="invoke",
            outcome="ok",
        )
        >= 1
    )
    assert (
        _value(
            mesh.b,
            "meshagent_calls_total",
            method="attachments",
            direction="outbound",
            outcome="ok",
        )
        >= 1
    )
    assert _value(mesh.b, "meshagent_tracing_spans_total", state="exported") >= 2


def _logged(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    def line() -> dict[str, Any] | None:
        if not mesh.access_log.exists():
            return None
        lines = [json.loads(text) for text in mesh.access_log.read_text().splitlines()]
        return next((entry for entry in lines if entry["trace_id"] == trace_id), None)

    return wait_until(line, 5, what=f"B's access log line of trace {trace_id}")


def test_budget_from_the_caller_travels_and_bounds_the_wait(mesh: Mesh) -> None:
    trace = "11111111111111111111111111111111"
    headers = {"x-meshagent-timeout-ms": "700", "traceparent": f"00-{trace}-{PARENT}-01"}
    response = _invoke(mesh.a, "attachments", headers)
    assert response.status_code == 200, response.text
    # A sends what is left of 700 ms as Dubbo's timeout; B's call has that budget.
    assert 300 < _logged(mesh, trace)["budget_ms"] <= 700
    started = time.monotonic()
    slow = _invoke(
        mesh.a, "slow", {"x-meshagent-timeout-ms": "300"}, {"types": ["int"], "args": [1500]}
    )
    elapsed = time.monotonic() - started
    assert slow.status_code == 504, slow.text
    assert elapsed < 1.2, elapsed  # not the provider's 1.5 s nor the 1 s default


def test_loop_refused_downstream_with_the_path_in_the_error_chain(mesh: Mesh) -> None:
    before = _value(mesh.b, "meshagent_call_loops_total")
    # A admits hop 15 (the limit is 16) and sends 16; B refuses and names the path.
    response = _invoke(mesh.a, "whoami", {"x-meshagent-hops": "15", "x-meshagent-path": "app-x"})
    assert response.status_code == 502, response.text
    problem = response.json()
    assert "loop protection" in problem["detail"]
    assert "app-x → app-a → app-b" in problem["detail"]
    chain = problem["chain"]
    assert chain[0] == {"app": "app-x"}
    assert chain[-1]["app"] == "app-a" and chain[-1]["method"] == "whoami"
    assert "loop protection" in chain[-1]["error"]
    # Failover may try again (Dubbo retries a provider's error status): bounded by retries.
    assert before + 1 <= _value(mesh.b, "meshagent_call_loops_total") <= before + 3


def test_bad_propagation_input_is_ignored_and_counted_never_an_error(mesh: Mesh) -> None:
    before_timeout = _value(mesh.a, "meshagent_call_context_ignored_total", kind="timeout")
    before_clamped = _value(mesh.a, "meshagent_call_context_ignored_total", kind="timeout_clamped")
    before_hops = _value(mesh.a, "meshagent_call_context_ignored_total", kind="hops")
    before_trace = _value(mesh.a, "meshagent_tracing_invalid_context_total")
    for headers in (
        {"traceparent": "00-nothex-00f067aa0ba902b7-01", "x-meshagent-timeout-ms": "-5"},
        {"x-meshagent-timeout-ms": str(10 * 365 * 86400 * 1000)},  # ten years
        {"x-meshagent-hops": "a lot", "b3": "garbage"},
    ):
        response = _invoke(mesh.a, "attachments", headers)
        assert response.status_code == 200, (headers, response.text)
        seen = response.json()["result"]
        assert seen["x-meshagent-hops"] == "2"  # counted from zero
        assert len(seen["traceparent"]) == 55  # a new, valid trace
    timeout_ms = "x-meshagent-timeout-ms"
    assert _value(mesh.a, "meshagent_call_context_ignored_total", kind="timeout") == (
        before_timeout + 1
    ), timeout_ms
    assert (
        _value(mesh.a, "meshagent_call_context_ignored_total", kind="timeout_clamped")
        == before_clamped + 1
    )
    assert _value(mesh.a, "meshagent_call_context_ignored_total", kind="hops") == before_hops + 1
    assert _value(mesh.a, "meshagent_tracing_invalid_context_total") == before_trace + 2
