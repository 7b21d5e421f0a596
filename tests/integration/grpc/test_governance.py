"""Governance rules on the gRPC listener, against real grpcio echo servers, with the agent
as a process whose rules are in its config file."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.grpc_peer import ECHO, EchoServer
from tests.fixtures.net import wait_until
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


def rules() -> dict[str, Any]:
    return {
        "rules": [
            {
                "match": {"to": ECHO, "method": f"{ECHO}/ClientStream"},
                "rate_limit": {"per_s": 0.001, "burst": 3},
            },
            {
                "match": {"to": ECHO, "method": f"{ECHO}/Unary"},
                "traffic": {
                    "subsets": [
                        {"name": "a", "labels": {"tag": "echo-a"}, "weight": 100},
                        {"name": "b", "labels": {"tag": "echo-b"}, "weight": 0},
                    ],
                    "matches": [{"headers": {"x-canary": {"exact": "yes"}}, "subset": "b"}],
                },
            },
            {
                # The JSON invocation names methods as in its URL.
                "match": {"to": ECHO, "method": "Unary"},
                "traffic": {
                    "subsets": [
                        {"name": "a", "labels": {"tag": "echo-a"}, "weight": 100},
                        {"name": "b", "labels": {"tag": "echo-b"}, "weight": 0},
                    ],
                    "matches": [{"headers": {"x-canary": {"exact": "yes"}}, "subset": "b"}],
                },
            },
            {"match": {"to": ECHO, "method": "Fallback"}, "degrade": {"value": {"message": "f"}}},
        ],
        "circuit_breakers": {ECHO: {"max_in_flight": 2}},
    }


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, echo_servers: list[EchoServer]
) -> Iterator[AgentProcess]:
    config = {
        "services": [{"name": ECHO, "protocol": "grpc", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": ECHO, "protocol": "grpc"}],
        "governance": {"rules": rules()},
        "drain_timeout_s": 2,
    }
    agent = start_agent(tmp_path_factory.mktemp("agent-governance"), config)
    try:
        with agent.client() as client:
            for server in echo_servers:
                client.put(
                    f"/v1/registrations/{ECHO}/{server.name}",
                    json={
                        "host": "127.0.0.1",
                        "port": server.port,
                        "metadata": {"tag": server.name},
                    },
                ).raise_for_status()
        agent.wait_endpoints(ECHO, len(echo_servers))
        yield agent
    finally:
        agent.stop()


@pytest.fixture
async def echo(agent: AgentProcess, grpc_stubs: Path) -> AsyncIterator[Any]:
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.listener_port(0)}") as channel:
        yield echo_pb2_grpc.EchoStub(channel)


def pb() -> Any:
    import echo_pb2

    return echo_pb2


def counters(agent: AgentProcess) -> dict[str, int]:
    with agent.client() as client:
        body: dict[str, int] = client.get("/v1/rules").json()["counters"]
        return body


async def test_rate_limit_is_resource_exhausted(echo: Any, agent: AgentProcess) -> None:
    before = counters(agent)["rate_limited"]
    codes = []
    for _ in range(5):
        try:
            await echo.ClientStream(iter([pb().EchoRequest(message="x")]))
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            assert "rate_limited" in (exc.details() or "")
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert counters(agent)["rate_limited"] == before + 2


async def test_canary_by_metadata_and_weights(echo: Any) -> None:
    plain = Counter([(await echo.Unary(pb().EchoRequest(message="x"))).server for _ in range(10)])
    assert plain == {"echo-a": 10}
    canary = Counter(
        [
            (
                await echo.Unary(pb().EchoRequest(message="x"), metadata=(("x-canary", "yes"),))
            ).server
            for _ in range(10)
        ]
    )
    assert canary == {"echo-b": 10}


async def test_circuit_breaker_is_unavailable_at_once(echo: Any, agent: AgentProcess) -> None:
    async def one() -> tuple[grpc.StatusCode, float]:
        started = time.monotonic()
        try:
            await echo.ServerStream(pb().EchoRequest(message="x", count=1, delay_ms=500)).read()
            return grpc.StatusCode.OK, time.monotonic() - started
        except grpc.aio.AioRpcError as exc:
            return exc.code(), time.monotonic() - started

    results = await asyncio.gather(*(one() for _ in range(5)))
    ok = [t for code, t in results if code == grpc.StatusCode.OK]
    refused = [t for code, t in results if code == grpc.StatusCode.UNAVAILABLE]
    assert len(ok) == 2 and len(refused) == 3, results
    assert max(refused) < min(ok)

    def load() -> dict[str, int]:
        with agent.client() as client:
            loads = {c["cluster"]: c for c in client.get("/v1/rules").json()["clusters"]}
        return loads[ECHO]  # type: ignore[no-any-return]

    assert load()["overflows"] >= 3
    # Every call is released once it ends (the agent's side ends just after the client's).
    wait_until(lambda: load()["in_flight"] == 0, 5, "calls released")


def test_json_invocation_splits_by_metadata_and_degrades(agent: AgentProcess) -> None:
    url = f"/v1/invoke/grpc/{ECHO}"
    with agent.client() as client:
        plain = Counter(
            client.post(f"{url}/Unary", json={"message": {"message": "x"}}).json()["result"][
                "server"
            ]
            for _ in range(6)
        )
        canary_body = {"message": {"message": "x"}, "metadata": {"x-canary": "yes"}}
        canary = Counter(
            client.post(f"{url}/Unary", json=canary_body).json()["result"]["server"]
            for _ in range(6)
        )
        fallback = client.post(f"{url}/Fallback", json={})
    assert plain == {"echo-a": 6} and canary == {"echo-b": 6}
    assert fallback.status_code == 200 and fallback.json()["result"] == {"message": "f"}
