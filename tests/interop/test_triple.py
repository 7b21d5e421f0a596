"""Dubbo 3 Triple: real Java Triple providers (Apache Dubbo 3.3, tests/interop/java/dubbo-peer
``triple-provider``), found in a real ZooKeeper, called through the agent's gRPC listener and
through ``POST /v1/invoke/grpc/...`` (messages by the provider's own server reflection).

Each provider exports the service twice, versions 1.0.0 and 2.0.0 (group blue), and picks
between them by the ``tri-service-version`` / ``tri-service-group`` headers (without them,
2.0.0). The agent is configured for 1.0.0: the gRPC client here never sends those headers,
the agent adds them from the registration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.cluster.host import Host
from agent.discovery.types import Instance
from agent.plugins import PluginKind, load
from agent.runtime.health import probe
from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.grpc_peer import generate_stubs
from tests.fixtures.java_dubbo import TRIPLE_INTERFACE, TRIPLE_PROTO, DubboProvider, start_provider
from tests.fixtures.processes import free_port
from tests.fixtures.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration

VERSION, OTHER_VERSION, GROUP = "1.0.0", "2.0.0", "blue"
IDS = ("tri-1", "tri-2")


@pytest.fixture(scope="module")
def triple_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stubs = generate_stubs(tmp_path_factory.mktemp("triple-stubs"), TRIPLE_PROTO)
    sys.path.insert(0, str(stubs))
    return stubs


@pytest.fixture(scope="module")
def triple_providers(
    zookeeper: ZooKeeperServer, dubbo_peer_jar: Path, interop_workdir: Path
) -> Iterator[list[DubboProvider]]:
    providers: list[DubboProvider] = []
    try:
        for provider_id in IDS:
            providers.append(
                start_provider(
                    interop_workdir,
                    command="triple-provider",
                    registry=zookeeper.url,
                    register_mode="interface",
                    app="meshagent-triple-provider",
                    provider_id=provider_id,
                    version=VERSION,
                    group=GROUP,
                    extra_args=("--also-version", OTHER_VERSION),
                    jar=dubbo_peer_jar,
                )
            )
        yield providers
    finally:
        for provider in providers:
            provider.stop()


@pytest.fixture(scope="module")
def triple_agent(
    tmp_path_factory: pytest.TempPathFactory,
    zookeeper: ZooKeeperServer,
    triple_providers: list[DubboProvider],
) -> Iterator[AgentProcess]:
    """The agent with a gRPC listener for the Triple interface: it adds the Triple headers."""
    config = {
        "registries": [{"name": "zk", "type": "zookeeper", "config": {"hosts": zookeeper.hosts}}],
        "services": [
            {
                "name": TRIPLE_INTERFACE,
                "registry": "zk",
                "protocol": "grpc",
                "attributes": {"version": VERSION, "group": GROUP},
                # grpc.health.v1, which Triple's built-in services offer.
                "health": {"checker": "grpc", "interval_s": 1, "config": {}},
            }
        ],
        "listeners": [{"port": free_port(), "service": TRIPLE_INTERFACE, "protocol": "grpc"}],
        "drain_timeout_s": 2,
    }
    agent = start_agent(tmp_path_factory.mktemp("triple-agent"), config)
    try:
        agent.wait_endpoints(TRIPLE_INTERFACE, len(triple_providers))
        yield agent
    finally:
        agent.stop()


def pb() -> Any:
    import triple_echo_pb2

    return triple_echo_pb2


@pytest.fixture
async def echo(triple_agent: AgentProcess, triple_stubs: Path) -> AsyncIterator[Any]:
    """A stub on one client channel to the agent's gRPC listener."""
    import triple_echo_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{triple_agent.listener_port()}") as channel:
        yield triple_echo_pb2_grpc.TripleEchoStub(channel)


def test_registered_as_triple_in_zookeeper(triple_agent: AgentProcess) -> None:
    endpoints = triple_agent.endpoints(TRIPLE_INTERFACE)
    assert {e["metadata"]["protocol"] for e in endpoints} == {"tri"}
    assert {e["metadata"]["version"] for e in endpoints} == {VERSION}


async def test_direct_call_without_triple_headers_gets_another_version(
    triple_providers: list[DubboProvider], triple_stubs: Path
) -> None:
    # What makes the agent's headers necessary: a plain gRPC call reaches 2.0.0.
    import triple_echo_pb2_grpc

    async with grpc.aio.insecure_channel(triple_providers[0].address) as channel:
        stub = triple_echo_pb2_grpc.TripleEchoStub(channel)
        reply = await stub.unary(pb().EchoRequest(message="direct"), timeout=10)
    assert reply.server == f"{IDS[0]}@{OTHER_VERSION}"


async def test_unary_through_the_listener_balanced_per_call(echo: Any) -> None:
    replies = [
        await echo.unary(pb().EchoRequest(message=f"m{i}"), metadata=(("x-echo", "e"),))
        for i in range(12)
    ]
    assert [r.message for r in replies] == [f"m{i}" for i in range(12)]
    assert {r.echoed for r in replies} == {"e"}
    # One client connection, both providers: the agent balances per call.
    assert {r.server for r in replies} == set(IDS)


async def test_server_streaming_through_the_listener(echo: Any) -> None:
    replies = [r async for r in echo.serverStream(pb().EchoRequest(message="s", count=4))]
    assert [r.index for r in replies] == [0, 1, 2, 3]
    assert len({r.server for r in replies}) == 1


async def test_bidi_streaming_through_the_listener(echo: Any) -> None:
    call = echo.bidiStream()
    for index in range(3):
        await call.write(pb().EchoRequest(message=f"b{index}"))
        reply = await call.read()
        assert (reply.message, reply.index) == (f"b{index}", index)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_provider_status_passes_through(echo: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo.unary(pb().EchoRequest(message="no such thing", code=5))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no such thing" in (caught.value.details() or "")


async def test_grpc_health_checker_on_triple(triple_providers: list[DubboProvider]) -> None:
    # Triple's built-in grpc.health.v1: the server passes, a service it does not know fails
    # (so the pass is the provider's answer, not a default).
    provider = triple_providers[0]
    host = Host(Instance(id="t", host=provider.host, port=provider.port))
    checker = load(PluginKind.HEALTH_CHECKER, "grpc").build({"require_health_service": True}, "c")
    assert await probe(checker, host, 10.0) is True
    unknown = load(PluginKind.HEALTH_CHECKER, "grpc").build({"service": "no.Such"}, "c")
    assert await probe(unknown, host, 10.0) is False


def invoke(agent: AgentProcess, method: str, body: Any) -> Any:
    with agent.client(timeout=30) as client:
        return client.post(f"/v1/invoke/grpc/{TRIPLE_INTERFACE}/{method}", json=body)


def test_json_invoke_by_the_providers_reflection(triple_agent: AgentProcess) -> None:
    response = invoke(
        triple_agent, "unary", {"message": {"message": "json"}, "metadata": {"x-echo": "j"}}
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["result"]["server"] in IDS  # version 1.0.0: the agent's Triple headers
    assert outcome["result"] == {
        "message": "json",
        "server": outcome["result"]["server"],
        "index": 0,
        "echoed": "j",
    }


def test_json_invoke_server_streaming_is_ndjson(triple_agent: AgentProcess) -> None:
    response = invoke(triple_agent, "serverStream", {"message": {"message": "n", "count": 3}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line)["index"] for line in response.text.splitlines()] == [0, 1, 2]


def test_json_invoke_bidi_with_messages(triple_agent: AgentProcess) -> None:
    body = {"messages": [{"message": "x"}, {"message": "y"}]}
    response = invoke(triple_agent, "bidiStream", body)
    assert response.status_code == 200, response.text
    assert [json.loads(line)["message"] for line in response.text.splitlines()] == ["x", "y"]


def test_json_invoke_status_maps_to_http(triple_agent: AgentProcess) -> None:
    response = invoke(triple_agent, "unary", {"message": {"message": "gone", "code": 5}})
    assert response.status_code == 404, response.text
    details = response.json()["exception"]["details"]
    assert details["grpc_status"] == "NOT_FOUND"
    assert "gone" in details["grpc_message"]


def test_json_invoke_unknown_method_is_501(triple_agent: AgentProcess) -> None:
    response = invoke(triple_agent, "nope", {"message": {}})
    assert response.status_code == 501, response.text


async def test_application_level_discovery_sends_the_configured_version(
    tmp_path: Path, zookeeper: ZooKeeperServer, dubbo_peer_jar: Path, triple_stubs: Path
) -> None:
    # Dubbo 3 application-level registration (/services/<app>): the instance names its
    # tri port but not the interface's version, so the agent sends the version it was
    # configured to call; without it this provider answers 2.0.0.
    import triple_echo_pb2_grpc

    provider = start_provider(
        tmp_path,
        command="triple-provider",
        registry=zookeeper.url,
        register_mode="instance",
        app="meshagent-triple-app",
        provider_id="app-1",
        version=VERSION,
        group=GROUP,
        extra_args=("--also-version", OTHER_VERSION),
        jar=dubbo_peer_jar,
    )
    zk = {"hosts": zookeeper.hosts, "services": {TRIPLE_INTERFACE: "application"}}
    config = {
        "registries": [{"name": "zk", "type": "zookeeper", "config": zk}],
        "services": [
            {
                "name": TRIPLE_INTERFACE,
                "registry": "zk",
                "protocol": "grpc",
                # protocol: which of the instance's dubbo.endpoints to call.
                "attributes": {"version": VERSION, "group": GROUP, "protocol": "tri"},
                "health": {"enabled": False},
            }
        ],
        "listeners": [{"port": free_port(), "service": TRIPLE_INTERFACE, "protocol": "grpc"}],
        "drain_timeout_s": 1,
    }
    agent = start_agent(tmp_path / "agent", config)
    try:
        agent.wait_endpoints(TRIPLE_INTERFACE, 1)
        [endpoint] = agent.endpoints(TRIPLE_INTERFACE)
        assert (endpoint["port"], endpoint["metadata"]["protocol"]) == (provider.port, "tri")
        assert "version" not in endpoint["metadata"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.listener_port()}") as channel:
            stub = triple_echo_pb2_grpc.TripleEchoStub(channel)
            reply = await stub.unary(pb().EchoRequest(message="app"), timeout=10)
        assert reply.server == "app-1"
    finally:
        agent.stop()
        provider.stop()
