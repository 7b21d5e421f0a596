"""Fixtures of the Thrift integration tests: thriftpy2 servers and the plugin's entry point."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.thrift_server import (
    DOWN,
    EMPTY,
    FORMS,
    IDL,
    ThriftServer,
    start_server,
)


@pytest.fixture(scope="session")
def thrift_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[ThriftServer]]]:
    """Two thriftpy2 servers per wire form, for the session."""
    workdir: Path = tmp_path_factory.mktemp("thrift-servers")
    servers: dict[str, list[ThriftServer]] = {}
    try:
        for form in FORMS:
            servers[form] = [start_server(workdir, f"{form}-{i}", form) for i in "ab"]
        yield servers
    finally:
        for group in servers.values():
            for server in group:
                server.stop()


ROUTED = "routed"  # the listener with per-method routes
ROUTED_TO = "framed-binary-b-only"
LISTENER_CALLER = "listener-app"


def agent_config(servers: dict[str, list[ThriftServer]]) -> dict[str, Any]:
    closed_port = free_port()
    instances = {form: [s.instance() for s in group] for form, group in servers.items()}
    instances[DOWN] = [{"host": LOOPBACK, "port": closed_port}]
    # One framed-binary provider alone, for per-method routing.
    instances[ROUTED_TO] = [servers["framed-binary"][1].instance()]
    names = [*FORMS, DOWN, EMPTY, ROUTED_TO]
    return {
        "registries": [{"name": "local", "type": "local", "config": {"services": instances}}],
        "services": [
            {
                "name": name,
                "protocol": "thrift",
                "health": {"enabled": False},
                "options": options(name),
            }
            for name in names
        ],
        "listeners": [
            {
                "port": free_port(),
                "service": name,
                "protocol": "thrift",
                "config": {
                    "timeout_ms": 500,
                    "max_message_bytes": 65536,
                    "caller": LISTENER_CALLER,
                },
            }
            for name in names
        ]
        + [
            # Calls go to the unreachable service unless routed: whoami and slow go to
            # ROUTED_TO, over up to two connections to its provider.
            {
                "name": ROUTED,
                "port": free_port(),
                "service": DOWN,
                "protocol": "thrift",
                "config": {
                    "timeout_ms": 3000,
                    "routes": {"whoami": ROUTED_TO, "slow": ROUTED_TO},
                    "connections_per_endpoint": 2,
                },
            }
        ],
        "drain_timeout_s": 2,
    }


@pytest.fixture(scope="session")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    thrift_servers: dict[str, list[ThriftServer]],
) -> Iterator[AgentProcess]:
    workdir: Path = tmp_path_factory.mktemp("thrift-agent")
    agent = start_agent(workdir, agent_config(thrift_servers))
    try:
        for form in FORMS:
            agent.wait_endpoints(form, 2)
        agent.wait_endpoints(ROUTED_TO, 1)
        yield agent
    finally:
        agent.stop()


def options(service: str) -> dict[str, Any]:
    """JSON invocation settings: the IDL, and the wire form the service's providers speak."""
    proto, transport = FORMS.get(service, ("binary", "framed"))
    return {"idl": str(IDL), "protocol": proto, "transport": transport, "caller": "json-app"}
