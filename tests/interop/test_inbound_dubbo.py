"""The inbound listener reads Dubbo calls: per-call metrics marked inbound, with the caller
its context names, and a server span continuing the caller's trace, in front of the real
Java Dubbo provider.

app --OpenAPI--> agent A (app-a; dubbo invoke) --dubbo--> agent B's inbound port (app-b)
--dubbo--> the Java Dubbo 3.3 provider (B's local app). Spans go to a real OpenTelemetry
Collector.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import INTERFACE, start_provider
from tests.fixtures.otel_collector import Collector, start_collector
from tests.fixtures.processes import LOOPBACK, free_port

pytestmark = pytest.mark.integration

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "10f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP span kinds


@dataclass
class Pair:
    collector: Collector
    a: AgentProcess
    b: AgentProcess
    inbound_port: int


@pytest.fixture(scope="module")
def pair(dubbo_peer_jar: Path, interop_workdir: Path) -> Iterator[Pair]:
    workdir = interop_workdir / "inbound"
    collector = start_collector(workdir / "otelcol")
    provider = start_provider(workdir, jar=dubbo_peer_jar, provider_id="inbound")
    provider_port = int(provider.address.rsplit(":", 1)[1])
    inbound_port = free_port()
    tracing = {
        "enabled": True,
        "exporter": "otlp_grpc",
        "endpoint": collector.grpc_endpoint,
        "schedule_delay_s": 0.1,
        "export_timeout_s": 2,
    }
    b = start_agent(
        workdir,
        {
            "app": {"name": "app-b"},
            "inbound": {
                "enabled": True,
                "host": LOOPBACK,
                "port": inbound_port,
                "app_port": provider_port,
                "health": {"enabled": False},
            },
            "telemetry": {"tracing": tracing},
        },
        name="agent-b",
    )
    a = start_agent(
        workdir,
        {
            "app": {"name": "app-a"},
            "services": [
                {
                    "name": INTERFACE,
                    "registry": "local",
                    "protocol": "dubbo",
                    "health": {"enabled": False},
                }
            ],
            "telemetry": {"tracing": tracing},
        },
        name="agent-a",
    )
    try:
        with a.client() as client:
            client.put(
                f"/v1/registrations/{INTERFACE}/b",
                json={"host": LOOPBACK, "port": inbound_port},
            ).raise_for_status()
        a.wait_endpoints(INTERFACE, 1)
        yield Pair(collector, a, b, inbound_port)
    finally:
        a.stop()
        b.stop()
        provider.stop()
        collector.stop()


def test_an_inbound_dubbo_call_is_counted_and_traced(pair: Pair) -> None:
    labels: dict[str, Any] = {
        "from": "app-a",
        "to": "app-b",
        "method": f"{INTERFACE}.attachments",
        "protocol": "dubbo",
        "direction": "inbound",
        "outcome": "ok",
    }
    before = pair.b.metric("meshagent_calls_total", **labels)
    with pair.a.client() as client:
        response = client.post(
            f"/v1/invoke/dubbo/{INTERFACE}/attachments",
            json={"types": [], "args": []},
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
    assert response.status_code == 200, response.text
    seen = response.json()["result"]
    # Through B's inbound pipeline, the provider sees B's attempt as the parent, one more
    # hop, and both apps on the path.
    assert seen["x-meshagent-hops"] == "2"
    assert seen["x-meshagent-path"] == "app-a,app-b"
    assert pair.b.metric("meshagent_calls_total", **labels) == before + 1

    spans = pair.collector.wait_for_trace(TRACE, 4)
    by = {(s["service"], s["kind"]): s for s in spans}
    a_client = by[("app-a", CLIENT)]
    b_server, b_client = by[("app-b", SERVER)], by[("app-b", CLIENT)]
    assert b_server["parentSpanId"] == a_client["spanId"]
    assert b_client["parentSpanId"] == b_server["spanId"]
    assert seen["traceparent"].split("-")[2] == b_client["spanId"]


def test_other_bytes_are_still_relayed_as_tcp(pair: Pair) -> None:
    before = pair.b.metric("meshagent_inbound_pipelines_total", pipeline="tcp")
    dubbo_before = pair.b.metric("meshagent_inbound_pipelines_total", pipeline="dubbo")
    # Not Dubbo, not HTTP: relayed to the provider's port as bytes (the Java provider
    # closes a connection that sends garbage; the relay passes the close on).
    with socket.create_connection((LOOPBACK, pair.inbound_port), timeout=10) as sock:
        sock.sendall(b"\x00\x01garbage\r\n")
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    assert pair.b.metric("meshagent_inbound_pipelines_total", pipeline="tcp") == before + 1
    assert pair.b.metric("meshagent_inbound_pipelines_total", pipeline="dubbo") == dubbo_before
