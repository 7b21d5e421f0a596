"""The gRPC listener relays any method, without its protos, to real grpcio servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.grpc_peer import MAX_MESSAGE, EchoServer, cancelled_calls, wait_cancelled

pytestmark = pytest.mark.integration


@pytest.fixture
async def echo(grpc_agent: AgentProcess, grpc_stubs: Path) -> AsyncIterator[Any]:
    """A stub on one client channel to the agent's echo listener."""
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_agent.listener_port(0)}") as channel:
        yield echo_pb2_grpc.EchoStub(channel)


def pb() -> Any:
    import echo_pb2

    return echo_pb2


async def test_unary_with_metadata_and_trailers(echo: Any) -> None:
    call = echo.Unary(pb().EchoRequest(message="hi"), metadata=(("x-echo", "abc"),))
    reply = await call
    assert reply.message == "hi"
    assert reply.echoed == "abc"
    headers = dict(await call.initial_metadata())
    assert headers["x-server"] == reply.server
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-trailer"] == "unary"
    assert trailers["x-trailer-bin"] == b"\x00\x01\xff"
    assert await call.code() == grpc.StatusCode.OK


async def test_balanced_per_call_over_one_client_connection(
    echo: Any, echo_servers: list[EchoServer]
) -> None:
    servers = [(await echo.Unary(pb().EchoRequest(message="x"))).server for _ in range(20)]
    assert set(servers) == {server.name for server in echo_servers}


async def test_server_streaming(echo: Any) -> None:
    call = echo.ServerStream(pb().EchoRequest(message="s", count=5))
    replies = [reply async for reply in call]
    assert [r.index for r in replies] == [0, 1, 2, 3, 4]
    assert len({r.server for r in replies}) == 1
    assert dict(await call.trailing_metadata())["x-trailer"] == "stream"


async def test_client_streaming(echo: Any) -> None:
    async def requests() -> AsyncIterator[Any]:
        for word in ("a", "b", "c"):
            yield pb().EchoRequest(message=word)

    reply = await echo.ClientStream(requests())
    assert reply.message == "a,b,c"


async def test_bidi_streaming_interleaved(echo: Any) -> None:
    call = echo.Bidi()
    for index in range(3):
        await call.write(pb().EchoRequest(message=f"m{index}"))
        reply = await call.read()
        assert (reply.message, reply.index) == (f"m{index}", index)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_status_details_and_trailers_pass_through(echo: Any) -> None:
    call = echo.Unary(pb().EchoRequest(message="no such thing", code=5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing"
    assert dict(caught.value.trailing_metadata())["x-trailer"] == "failed"


async def test_deadline_is_propagated(echo: Any) -> None:
    reply = await echo.Unary(pb().EchoRequest(message="d"), timeout=5.0)
    # The server sees what is left of the client's 5 s, not "no deadline".
    # (grpc-timeout is sent in whole units, rounded up: a few ms over is expected.)
    assert 3000 < reply.deadline_ms <= 5100
    reply = await echo.Unary(pb().EchoRequest(message="d"))
    assert reply.deadline_ms == -1


async def test_deadline_is_honoured(echo: Any) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo.Unary(pb().EchoRequest(message="slow", delay_ms=5000), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0


async def test_no_provider_is_unavailable(grpc_agent: AgentProcess, grpc_stubs: Path) -> None:
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_agent.listener_port(1)}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo_pb2_grpc.EchoStub(channel).Unary(pb().EchoRequest(message="x"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no provider" in (caught.value.details() or "")


async def test_unknown_method_is_unimplemented(grpc_agent: AgentProcess) -> None:
    address = f"127.0.0.1:{grpc_agent.listener_port(0)}"
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/meshtest.Echo/Nope")(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/no.Such/Service")(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # A provider's immediate status must not lose a race with the request message
        # (grpc reports INTERNAL then; 4% of calls before the one-batch path and the
        # retry): many calls at once, every one UNIMPLEMENTED.
        async def code_of(method: str) -> grpc.StatusCode:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method)(b"", timeout=5)
            return caught.value.code()

        codes = set(await asyncio.gather(*(code_of("/meshtest.Echo/Nope") for _ in range(200))))
        assert codes == {grpc.StatusCode.UNIMPLEMENTED}


async def test_message_over_the_limit_is_resource_exhausted(echo: Any) -> None:
    big = pb().EchoRequest(message="big", payload=b"\0" * (MAX_MESSAGE + 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo.Unary(big, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same client connection goes on.
    reply = await echo.Unary(pb().EchoRequest(message="after", payload=b"\0" * 1000), timeout=5)
    assert reply.payload_size == 1000


async def test_client_reset_mid_stream_cancels_upstream(
    echo: Any, echo_servers: list[EchoServer]
) -> None:
    before = await cancelled_calls(echo_servers)
    call = echo.ServerStream(pb().EchoRequest(message="long", count=100_000, delay_ms=10))
    assert (await call.read()).index == 0
    assert (await call.read()).index == 1
    call.cancel()
    await wait_cancelled(echo_servers, before)
    reply = await echo.Unary(pb().EchoRequest(message="still here"), timeout=5)
    assert reply.message == "still here"
