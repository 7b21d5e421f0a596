"""The call context through the gRPC listener: hop count read from the
client's metadata (a loop is refused with the path named), garbage ignored, each call
counted and traced (a server span continuing the caller's trace, a client span whose
context reaches the provider)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.grpc_peer import ECHO, EchoServer
from tests.fixtures.otel_collector import Collector
from tests.integration.grpc.conftest import grpc_agent_config, register

pytestmark = pytest.mark.integration

PARENT = "00f067aa0ba902b7"


@pytest.fixture
async def echo(grpc_agent: AgentProcess, grpc_stubs: Path) -> AsyncIterator[Any]:
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_agent.listener_port(0)}") as channel:
        yield echo_pb2_grpc.EchoStub(channel)


def request() -> Any:
    import echo_pb2

    return echo_pb2.EchoRequest(message="hi")


async def test_loop_refused_with_the_path(echo: Any) -> None:
    metadata = (("x-meshagent-hops", "16"), ("x-meshagent-path", "app-x,app-y"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo.Unary(request(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "loop" in (caught.value.details() or "")
    assert "app-x → app-y" in (caught.value.details() or "")


async def test_garbage_context_is_not_an_error(echo: Any) -> None:
    metadata = (
        ("x-meshagent-hops", "many"),
        ("traceparent", "junk"),
        ("x-meshagent-timeout-ms", "-1"),
    )
    reply = await echo.Unary(request(), metadata=metadata, timeout=10)
    assert reply.message == "hi"


async def test_each_call_is_counted_with_its_outcome(echo: Any, grpc_agent: AgentProcess) -> None:
    import echo_pb2

    labels = {"protocol": "grpc", "direction": "outbound", "to": ECHO}
    ok = {**labels, "method": f"{ECHO}/Unary", "outcome": "ok"}
    failed = {**labels, "method": f"{ECHO}/Unary", "outcome": "app_error"}
    before_ok = grpc_agent.metric("meshagent_calls_total", **ok)
    before_failed = grpc_agent.metric("meshagent_calls_total", **failed)
    await echo.Unary(request(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        code = grpc.StatusCode.NOT_FOUND.value[0]
        await echo.Unary(echo_pb2.EchoRequest(message="no", code=code), timeout=10)
    assert grpc_agent.metric("meshagent_calls_total", **ok) == before_ok + 1
    assert grpc_agent.metric("meshagent_calls_total", **failed) == before_failed + 1


@pytest.fixture(scope="module")
def traced_agent(
    tmp_path_factory: pytest.TempPathFactory,
    echo_servers: list[EchoServer],
    collector: Collector,
) -> Iterator[AgentProcess]:
    config = grpc_agent_config()
    config["app"] = {"name": "app-g"}
    config["telemetry"] = {
        "tracing": {
            "enabled": True,
            "endpoint": collector.grpc_endpoint,
            "schedule_delay_s": 0.1,
            "export_timeout_s": 2,
        }
    }
    agent = start_agent(tmp_path_factory.mktemp("traced"), config)
    try:
        register(agent, ECHO, echo_servers[0])
        agent.wait_endpoints(ECHO, 1)
        yield agent
    finally:
        agent.stop()


async def test_a_call_is_traced_into_the_providers_metadata(
    traced_agent: AgentProcess, collector: Collector, grpc_stubs: Path
) -> None:
    import echo_pb2_grpc

    trace = secrets.token_hex(16)  # a trace of its own: the collector serves other tests
    metadata = (("traceparent", f"00-{trace}-{PARENT}-01"), ("x-echo-key", "traceparent"))
    address = f"127.0.0.1:{traced_agent.listener_port(0)}"
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await echo_pb2_grpc.EchoStub(channel).Unary(
            request(), metadata=metadata, timeout=10
        )
    sent = reply.echoed.split("-")  # the traceparent the provider received
    assert sent[1] == trace and sent[2] != PARENT and sent[3] == "01"

    server, _ = collector.wait_for_call(trace, PARENT, sent[2])
    assert server["attrs"]["rpc.system"] == "grpc"
    assert server["attrs"]["rpc.service"] == ECHO
    assert server["service"] == "app-g"
