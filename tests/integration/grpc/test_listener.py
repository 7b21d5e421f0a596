"""The gRPC listener inside an in-process agent: binding errors and draining."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.config import parse_config
from agent.runtime.agent import Agent, StartupError
from tests.fixtures.grpc_peer import ECHO, EchoServer
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


def make_agent(port: int) -> Agent:
    return Agent(
        parse_config(
            {
                "admin": {"port": 0},
                "services": [{"name": ECHO, "protocol": "grpc", "health": {"enabled": False}}],
                "listeners": [{"port": port, "service": ECHO, "protocol": "grpc"}],
                "drain_timeout_s": 5,
            }
        )
    )


async def test_port_in_use_is_a_startup_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = make_agent(port)
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            await agent.start()
        await agent.stop()


@pytest.fixture
async def agent(
    tmp_path: Path, echo_servers: list[EchoServer], grpc_stubs: Path
) -> AsyncIterator[Agent]:
    agent = make_agent(free_port())
    await agent.start()
    try:
        await agent.register(ECHO, "a", "127.0.0.1", echo_servers[0].port, 100, {}, None)
        yield agent
    finally:
        await agent.stop()


async def test_drain_lets_open_calls_finish_and_refuses_new_ones(agent: Agent) -> None:
    import echo_pb2
    import echo_pb2_grpc

    _, host, port = agent.listener_addresses()[0]
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        slow = stub.Unary(echo_pb2.EchoRequest(message="slow", delay_ms=500), timeout=10)
        # The call is in the agent (its headers came back) before the drain starts.
        await slow.initial_metadata()
        drain = asyncio.get_running_loop().create_task(agent.drain_and_stop())
        assert (await slow).message == "slow"
        await asyncio.wait_for(drain, 10)
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
