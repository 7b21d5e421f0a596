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
from tests.fixtures.grpc_peer import ECHO, EchoServer, echo_servers_named
from tests.fixtures.net import wait_until
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration

# A second name for the echo servers, plus an endpoint where nothing listens; its own
# listener. Outlier ejection is off so the dead endpoint stays in the rotation.
RETRY = "echo-retry"
# Two echo servers of its own (channels are shared by address across services), at most
# one provider connection.
LIMITED = "echo-limited"


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
            # On the listener: encoded by the reply type reflection describes.
            {
                "match": {"to": ECHO, "method": f"{ECHO}/Stats"},
                "degrade": {"value": {"calls": "7", "cancelled": 1}},
            },
            {
                # A unary request (a stream request could race the agent's answer).
                "match": {"to": LIMITED, "method": f"{ECHO}/ServerStream"},
                "degrade": {"value": {"nope": 1}},
            },
            {
                # Not idempotent: only failures before sending are retried.
                "match": {"to": RETRY, "method": f"{ECHO}/Unary"},
                "retry": {
                    "attempts": 2,
                    "retry_on": ["connect_failure", "retryable_status"],
                    "backoff_base_ms": 1,
                    "backoff_max_ms": 5,
                    "budget": {"ratio": 1.0},
                },
            },
            {
                # The same method through the JSON invocation (as named in its URL).
                "match": {"to": RETRY, "method": "Unary"},
                "retry": {
                    "attempts": 2,
                    "backoff_base_ms": 1,
                    "backoff_max_ms": 5,
                    "budget": {"ratio": 1.0},
                },
            },
            {
                "match": {"to": RETRY, "method": f"{ECHO}/Bidi"},
                "retry": {
                    "attempts": 5,
                    "retry_on": ["retryable_status"],
                    "idempotent": True,
                    "backoff_base_ms": 1,
                    "backoff_max_ms": 2,
                    "budget": {"ratio": 0.2},
                },
            },
        ],
        "circuit_breakers": {ECHO: {"max_in_flight": 2}, LIMITED: {"max_connections": 1}},
    }


@pytest.fixture(scope="module")
def limited_servers(
    tmp_path_factory: pytest.TempPathFactory, grpc_stubs: Path
) -> Iterator[list[EchoServer]]:
    workdir = tmp_path_factory.mktemp("limited")
    with echo_servers_named(workdir, grpc_stubs, "limited-a", "limited-b") as servers:
        yield servers


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    echo_servers: list[EchoServer],
    limited_servers: list[EchoServer],
) -> Iterator[AgentProcess]:
    retry_service = {
        "name": RETRY,
        "protocol": "grpc",
        "health": {"enabled": False},
        "outlier": {"enabled": False},
        "options": {"grpc_service": ECHO},
    }
    config = {
        "services": [
            {"name": ECHO, "protocol": "grpc", "health": {"enabled": False}},
            retry_service,
            {**retry_service, "name": LIMITED},
        ],
        "listeners": [
            {"port": free_port(), "service": name, "protocol": "grpc"}
            for name in (ECHO, RETRY, LIMITED)
        ],
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
            for server in echo_servers:
                client.put(
                    f"/v1/registrations/{RETRY}/{server.name}",
                    json={"host": "127.0.0.1", "port": server.port},
                ).raise_for_status()
            client.put(
                f"/v1/registrations/{RETRY}/dead",
                json={"host": "127.0.0.1", "port": free_port()},
            ).raise_for_status()
            for server in limited_servers:
                client.put(
                    f"/v1/registrations/{LIMITED}/{server.name}",
                    json={"host": "127.0.0.1", "port": server.port},
                ).raise_for_status()
        agent.wait_endpoints(LIMITED, len(limited_servers))
        agent.wait_endpoints(ECHO, len(echo_servers))
        agent.wait_endpoints(RETRY, len(echo_servers) + 1)
        yield agent
    finally:
        agent.stop()


@pytest.fixture
async def echo(agent: AgentProcess, grpc_stubs: Path) -> AsyncIterator[Any]:
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.listener_port(0)}") as channel:
        yield echo_pb2_grpc.EchoStub(channel)


@pytest.fixture
async def retry_echo(agent: AgentProcess, grpc_stubs: Path) -> AsyncIterator[Any]:
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.listener_port(1)}") as channel:
        yield echo_pb2_grpc.EchoStub(channel)


async def served_calls(servers: list[EchoServer]) -> int:
    """Calls of the echo methods the servers have seen (Stats calls are not counted)."""
    import echo_pb2_grpc

    total = 0
    for server in servers:
        async with grpc.aio.insecure_channel(server.address) as channel:
            reply = await echo_pb2_grpc.EchoStub(channel).Stats(pb().StatsRequest())
            total += reply.calls
    return total


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


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_connect_failures_are_retried_on_another_provider(
    retry_echo: Any, agent: AgentProcess
) -> None:
    """A third of the picks land on an endpoint where nothing listens. Under the retry
    rule every call still succeeds. Without a rule (ServerStream) the relay moves on to
    another provider while the service's ``connect_attempts`` last, as the HTTP, Dubbo
    and Thrift listeners do."""
    before = counters(agent)["retries"]
    codes = [await code_of(retry_echo.Unary(pb().EchoRequest(message="x"))) for _ in range(9)]
    assert codes == [grpc.StatusCode.OK] * 9
    assert counters(agent)["retries"] - before >= 3

    async def stream() -> grpc.StatusCode:
        try:
            async for _ in retry_echo.ServerStream(pb().EchoRequest(message="x", count=1)):
                pass
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    unruled = Counter([await stream() for _ in range(9)])
    assert unruled == {grpc.StatusCode.OK: 9}


async def test_provider_status_not_retried_unless_idempotent(
    retry_echo: Any, agent: AgentProcess, echo_servers: list[EchoServer]
) -> None:
    """UNAVAILABLE from the provider may have run the method: the non-idempotent rule on
    Unary passes it on after one call upstream."""
    served = await served_calls(echo_servers)
    before = counters(agent)
    failing = pb().EchoRequest(message="busy", code=grpc.StatusCode.UNAVAILABLE.value[0])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        # Two echo servers and a dead endpoint: at most one connect failure before a
        # provider answers; the provider's own status is not retried.
        await retry_echo.Unary(failing)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "busy"
    assert await served_calls(echo_servers) - served == 1
    assert counters(agent)["retries"] - before["retries"] <= 1


async def test_retry_budget_bounds_attempts_when_every_call_fails(
    retry_echo: Any, agent: AgentProcess, echo_servers: list[EchoServer]
) -> None:
    """Providers failing every call with UNAVAILABLE, a rule allowing 5 retries with a 20%
    budget: upstream attempts stay at most 1.2x the calls."""
    served = await served_calls(echo_servers)
    before = counters(agent)
    calls = 30
    failing = pb().EchoRequest(message="down", code=grpc.StatusCode.UNAVAILABLE.value[0])
    for _ in range(calls):
        # One message and the end of the stream: a request the agent can send again.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _reply in retry_echo.Bidi(iter([failing])):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    after = counters(agent)
    retries = after["retries"] - before["retries"]
    assert 1 <= retries <= 0.2 * calls
    assert after["retries_over_budget"] > before["retries_over_budget"]
    # Attempts that reached a provider (a pick of the dead endpoint is a connect failure,
    # not retried under this rule, and reaches nobody).
    assert calls / 2 <= await served_calls(echo_servers) - served <= 1.2 * calls


def test_json_invocation_retries_connect_failures(agent: AgentProcess) -> None:
    before = counters(agent)["retries"]
    with agent.client() as client:
        results = [
            client.post(f"/v1/invoke/grpc/{RETRY}/Unary", json={"message": {"message": "x"}})
            for _ in range(9)
        ]
    assert [r.status_code for r in results] == [200] * 9, [r.text for r in results]
    assert counters(agent)["retries"] - before >= 3


async def test_listener_answers_fallback_values_as_the_reply(
    echo: Any, agent: AgentProcess, grpc_stubs: Path
) -> None:
    import echo_pb2_grpc

    before = counters(agent)["degraded"]
    reply = await echo.Stats(pb().StatsRequest())
    assert (reply.calls, reply.cancelled) == (7, 1)
    # A value the reply type has no field for: UNAVAILABLE, saying why.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.listener_port(2)}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            stub = echo_pb2_grpc.EchoStub(channel)
            async for _reply in stub.ServerStream(pb().EchoRequest(message="x")):
                pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nope" in (caught.value.details() or "")
    assert counters(agent)["degraded"] == before + 2


async def test_max_connections_refuses_a_new_provider_connection(
    agent: AgentProcess, grpc_stubs: Path
) -> None:
    """At most one provider connection for the service: round robin over its two
    providers, the calls to the provider without a channel are refused at once."""
    import echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.listener_port(2)}") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        codes = [await code_of(stub.Unary(pb().EchoRequest(message="x"))) for _ in range(4)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            for _ in range(2):
                await stub.Unary(pb().EchoRequest(message="x"))
    assert Counter(codes) == {grpc.StatusCode.OK: 2, grpc.StatusCode.UNAVAILABLE: 2}, codes
    assert "max_connections 1" in (caught.value.details() or "")
    with agent.client() as client:
        loads = {c["cluster"]: c for c in client.get("/v1/rules").json()["clusters"]}
    assert loads[LIMITED]["overflows"] >= 3
