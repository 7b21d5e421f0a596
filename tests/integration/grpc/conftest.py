"""Real grpcio echo servers and meshagent as a process, with the ``local`` registry.

One agent per module: its listeners are the ones the tests need, the echo servers are
registered through the agent's own API.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.grpc_peer import (
    BARE,
    ECHO,
    MAX_MESSAGE,
    NOBODY,
    EchoServer,
    echo_servers_named,
    generate_stubs,
)
from tests.fixtures.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def grpc_stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stubs = generate_stubs(tmp_path_factory.mktemp("grpc-stubs"))
    sys.path.insert(0, str(stubs))
    return stubs


@pytest.fixture(scope="module")
def echo_servers(
    tmp_path_factory: pytest.TempPathFactory, grpc_stubs: Path
) -> Iterator[list[EchoServer]]:
    workdir = tmp_path_factory.mktemp("echo")
    with echo_servers_named(workdir, grpc_stubs, "echo-a", "echo-b") as servers:
        yield servers


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory, grpc_stubs: Path) -> Iterator[EchoServer]:
    """An echo server without server reflection."""
    with EchoServer(tmp_path_factory.mktemp("bare"), grpc_stubs, "bare", "--no-reflection") as s:
        yield s


def grpc_agent_config(**listener_config: Any) -> dict[str, Any]:
    service = {"protocol": "grpc", "health": {"enabled": False}}
    return {
        "services": [
            {"name": ECHO, **service},
            {"name": NOBODY, **service},
            # A provider without server reflection, under a name of our own.
            {"name": BARE, **service, "options": {"grpc_service": ECHO, "timeout_ms": 3000}},
        ],
        "listeners": [
            {
                "port": free_port(),
                "service": ECHO,
                "protocol": "grpc",
                "config": {"max_message_bytes": MAX_MESSAGE, **listener_config},
            },
            {"port": free_port(), "service": NOBODY, "protocol": "grpc"},
        ],
        "drain_timeout_s": 2,
    }


def register(agent: AgentProcess, service: str, server: EchoServer) -> None:
    with agent.client() as client:
        response = client.put(
            f"/v1/registrations/{service}/{server.name}",
            json={"host": "127.0.0.1", "port": server.port},
        )
        response.raise_for_status()


@pytest.fixture(scope="module")
def grpc_agent(
    tmp_path_factory: pytest.TempPathFactory,
    echo_servers: list[EchoServer],
    bare_server: EchoServer,
) -> Iterator[AgentProcess]:
    agent = start_agent(tmp_path_factory.mktemp("agent"), grpc_agent_config())
    try:
        for server in echo_servers:
            register(agent, ECHO, server)
        register(agent, BARE, bare_server)
        agent.wait_endpoints(ECHO, len(echo_servers))
        agent.wait_endpoints(BARE, 1)
        yield agent
    finally:
        agent.stop()
