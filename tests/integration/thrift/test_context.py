"""The call context through the Thrift listener, in Base.Extra: a thriftpy2 client → the
agent (a real process, tracing on) → a thriftpy2 server whose ``context`` method answers
with the Base.Extra it received."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from thriftpy2.thrift import TApplicationException

from agent.telemetry.propagation import HOPS, PATH, TIMEOUT_MS, TRACEPARENT, parse_traceparent
from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port
from tests.fixtures.thrift_server import ThriftServer, client, load_idl
from tests.integration.thrift.conftest import options

pytestmark = pytest.mark.integration

echo_thrift = load_idl()
FORM = "framed-binary"
APP = "ctx-app"
TIMEOUT_MS_CONFIGURED = 3000
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def ctx_agent(
    tmp_path_factory: pytest.TempPathFactory, thrift_servers: dict[str, list[ThriftServer]]
) -> Iterator[AgentProcess]:
    """One provider (calls stay on it), tracing on (its exports go to a closed port and are
    dropped: the spans are not what is tested, the traceparent they give is)."""
    config = {
        "app": {"name": APP},
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {FORM: [thrift_servers[FORM][0].instance()]}},
            }
        ],
        "services": [
            {
                "name": FORM,
                "protocol": "thrift",
                "health": {"enabled": False},
                "options": options(FORM),
            }
        ],
        "listeners": [
            {
                "port": free_port(),
                "service": FORM,
                "protocol": "thrift",
                "config": {"timeout_ms": TIMEOUT_MS_CONFIGURED},
            }
        ],
        "telemetry": {
            "tracing": {
                "enabled": True,
                "exporter": "otlp_http",
                "endpoint": f"http://127.0.0.1:{free_port()}/v1/traces",
            },
            "context": {"max_hops": 5},
        },
        "drain_timeout_s": 2,
    }
    workdir: Path = tmp_path_factory.mktemp("thrift-context-agent")
    agent = start_agent(workdir, config)
    try:
        agent.wait_endpoints(FORM, 1)
        yield agent
    finally:
        agent.stop()


def call_context(agent: AgentProcess, extra: dict[str, str], note: str = "n") -> Any:
    with client(agent.listener_port(0), FORM) as echo:
        return echo.context(note, echo_thrift.base.Base(Extra=extra))


def test_trace_context_and_hop_count_arrive(ctx_agent: AgentProcess) -> None:
    seen = call_context(
        ctx_agent, {TRACEPARENT: INCOMING_TRACEPARENT, HOPS: "2", PATH: "app-a,app-b", "k": "v"}
    )
    parent = parse_traceparent(seen[TRACEPARENT])
    assert parent is not None
    # The same trace, continued from the agent's own span (not the caller's, passed through).
    assert parent.trace_id == TRACE_ID
    assert seen[TRACEPARENT] != INCOMING_TRACEPARENT
    assert seen[HOPS] == "3"
    assert seen[PATH] == f"app-a,app-b,{APP}"
    assert seen["k"] == "v"  # the app's other entries pass through
    assert 0 < int(seen[TIMEOUT_MS]) <= TIMEOUT_MS_CONFIGURED


def test_a_call_without_context_starts_one(ctx_agent: AgentProcess) -> None:
    seen = call_context(ctx_agent, {})
    assert parse_traceparent(seen[TRACEPARENT]) is not None
    assert seen[HOPS] == "1"
    assert seen[PATH] == APP


def test_a_loop_is_refused(ctx_agent: AgentProcess) -> None:
    with pytest.raises(TApplicationException) as info:
        call_context(ctx_agent, {HOPS: "5", PATH: "app-a,app-b"})
    assert "loop" in info.value.message
    assert "app-a → app-b" in info.value.message
    # One below the limit still goes through.
    assert call_context(ctx_agent, {HOPS: "4"})[HOPS] == "5"


def test_a_shorter_budget_is_sent_on(ctx_agent: AgentProcess) -> None:
    seen = call_context(ctx_agent, {TIMEOUT_MS: "400"})
    assert 0 < int(seen[TIMEOUT_MS]) <= 400
    assert 0 < int(seen["timeout_ms"]) <= 400
    assert int(seen["deadline_ms"]) <= int(time.time() * 1000) + 400


def invoke(agent: AgentProcess, headers: dict[str, str], note: str = "n") -> Any:
    with agent.client() as http:
        return http.post(
            f"/v1/invoke/thrift/{FORM}/context", json={"args": {"note": note}}, headers=headers
        )


def test_json_invocation_sends_the_context(ctx_agent: AgentProcess) -> None:
    headers = {TRACEPARENT: INCOMING_TRACEPARENT, HOPS: "1", PATH: "app-a"}
    response = invoke(ctx_agent, headers)
    assert response.status_code == 200, response.text
    seen = response.json()["result"]
    parent = parse_traceparent(seen[TRACEPARENT])
    assert parent is not None and parent.trace_id == TRACE_ID
    assert seen[TRACEPARENT] != INCOMING_TRACEPARENT
    assert (seen[HOPS], seen[PATH]) == ("2", f"app-a,{APP}")
    assert seen["Caller"] == "json-app"


def test_json_invocation_refuses_a_loop(ctx_agent: AgentProcess) -> None:
    response = invoke(ctx_agent, {HOPS: "5"})
    assert response.status_code == 508, response.text
    assert "loop" in response.text


def test_json_invocation_honours_a_shorter_budget(ctx_agent: AgentProcess) -> None:
    seen = invoke(ctx_agent, {TIMEOUT_MS: "400"}).json()["result"]
    assert 0 < int(seen["timeout_ms"]) <= 400
    assert 0 < int(seen[TIMEOUT_MS]) <= 400
    started = time.monotonic()
    response = invoke(ctx_agent, {TIMEOUT_MS: "300"}, note="sleep 1500")
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 1.2  # not the service's timeout


def test_a_shorter_budget_is_honoured(ctx_agent: AgentProcess) -> None:
    # Last in the module: the provider stays busy with the slow call for a while.
    started = time.monotonic()
    with pytest.raises(TApplicationException) as info:
        call_context(ctx_agent, {TIMEOUT_MS: "300"}, note="sleep 1500")
    # What was left of the 300 ms when the listener read the call.
    assert re.search(r"did not answer context within (2\d\d|300) ms", info.value.message)
    assert time.monotonic() - started < 1.2  # not the listener's 3000 ms
