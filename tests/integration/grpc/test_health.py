"""The ``grpc`` health checker against real grpcio servers, alone and inside the agent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.cluster.host import Host
from agent.discovery.types import Instance
from agent.plugins import PluginKind, load
from agent.runtime.health import probe
from tests.fixtures.agent_process import start_agent
from tests.fixtures.grpc_peer import ECHO, EchoServer
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, grpc_stubs: Path
) -> Iterator[dict[str, EchoServer]]:
    workdir = tmp_path_factory.mktemp("health")
    servers = {
        "serving": EchoServer(workdir, grpc_stubs, "serving"),
        "not-serving": EchoServer(
            workdir, grpc_stubs, "not-serving", "--health-status", "NOT_SERVING"
        ),
        "no-health": EchoServer(workdir, grpc_stubs, "no-health", "--no-health"),
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def host_of(port: int) -> Host:
    return Host(Instance(id=f"h{port}", host="127.0.0.1", port=port))


@pytest.mark.parametrize(
    ("server", "config", "expected"),
    [
        ("serving", {}, True),
        ("serving", {"service": ECHO}, True),
        ("not-serving", {}, False),
        ("no-health", {}, True),
        ("no-health", {"require_health_service": True}, False),
    ],
)
async def test_checker(
    servers: dict[str, EchoServer], server: str, config: dict[str, object], expected: bool
) -> None:
    checker = load(PluginKind.HEALTH_CHECKER, "grpc").build(config, "health.config")
    assert await probe(checker, host_of(servers[server].port), 5.0) is expected


async def test_unknown_service_fails(servers: dict[str, EchoServer]) -> None:
    checker = load(PluginKind.HEALTH_CHECKER, "grpc").build({"service": "no.Such"}, "c")
    assert await probe(checker, host_of(servers["serving"].port), 5.0) is False


async def test_closed_port_fails() -> None:
    checker = load(PluginKind.HEALTH_CHECKER, "grpc").build({}, "c")
    assert await probe(checker, host_of(free_port()), 5.0) is False


async def test_agent_sends_calls_to_serving_endpoints_only(
    tmp_path: Path, servers: dict[str, EchoServer], grpc_stubs: Path
) -> None:
    import echo_pb2
    import echo_pb2_grpc

    config = {
        "services": [
            {
                "name": ECHO,
                "protocol": "grpc",
                "health": {
                    "checker": "grpc",
                    "interval_s": 0.2,
                    "jitter_s": 0,
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 1,
                },
            }
        ],
        "listeners": [{"port": free_port(), "service": ECHO, "protocol": "grpc"}],
        "drain_timeout_s": 1,
    }
    agent = start_agent(tmp_path, config)
    try:
        with agent.client() as client:
            for name in ("serving", "not-serving"):
                body = {"host": "127.0.0.1", "port": servers[name].port}
                client.put(f"/v1/registrations/{ECHO}/{name}", json=body).raise_for_status()
        agent.process.wait_for(
            lambda: (
                {e["id"]: e["healthy"] for e in agent.endpoints(ECHO)}
                == {"serving": True, "not-serving": False}
            ),
            20,
            what="health verdicts",
        )
        address = f"127.0.0.1:{agent.listener_port()}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            answered = {
                (await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)).server
                for _ in range(10)
            }
        assert answered == {"serving"}
    finally:
        agent.stop()
