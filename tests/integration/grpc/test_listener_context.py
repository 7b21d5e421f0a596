"""The call context through the gRPC listener: hop count read from the client's metadata
(a loop is refused with the path named), garbage ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.grpc_peer import ECHO

pytestmark = pytest.mark.integration


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
