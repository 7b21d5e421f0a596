"""Apache Thrift Java ↔ the agent's Thrift listener (a real process) ↔ Java and thriftpy2 peers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from thriftpy2.thrift import TApplicationException

from tests.fixtures import java_thrift
from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port
from tests.fixtures.thrift_server import FORMS, ThriftServer, client, load_idl

pytestmark = pytest.mark.integration

echo_thrift = load_idl()


@pytest.fixture(scope="module")
def java_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[ThriftServer]]]:
    """Two Java servers per wire form."""
    if java_thrift.java_binary() is None:
        pytest.fail("JDK 17 and Maven are needed to build the Thrift Java peer (make test)")
    workdir: Path = tmp_path_factory.mktemp("thrift-java")
    java_thrift.build_peer()
    servers: dict[str, list[ThriftServer]] = {}
    try:
        for form in FORMS:
            servers[form] = [
                java_thrift.start_server(workdir, f"java-{form}-{i}", form) for i in "ab"
            ]
        yield servers
    finally:
        for group in servers.values():
            for server in group:
                server.stop()


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, java_servers: dict[str, list[ThriftServer]]
) -> Iterator[AgentProcess]:
    workdir: Path = tmp_path_factory.mktemp("thrift-java-agent")
    config = {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        f: [s.instance() for s in group] for f, group in java_servers.items()
                    }
                },
            }
        ],
        "services": [
            {
                "name": form,
                "protocol": "thrift",
                # The thrift checker calls ping() on each server, in the server's form.
                "health": {
                    "checker": "thrift",
                    "interval_s": 0.5,
                    "healthy_threshold": 1,
                    "config": {
                        "method": "ping",
                        "protocol": FORMS[form][0],
                        "transport": FORMS[form][1],
                    },
                },
            }
            for form in FORMS
        ],
        "listeners": [
            {"port": free_port(), "service": form, "protocol": "thrift"} for form in FORMS
        ],
        "drain_timeout_s": 2,
    }
    agent = start_agent(workdir, config)
    try:
        for form in FORMS:
            agent.wait_endpoints(form, 2)
        yield agent
    finally:
        agent.stop()


@pytest.mark.parametrize("form", list(FORMS))
def test_java_client_through_the_agent_to_java_servers(agent: AgentProcess, form: str) -> None:
    lines = java_thrift.run_client(agent.listener_port(list(FORMS).index(form)), form, 20)
    seen = Counter(line.split()[1] for line in lines if line.startswith("whoami "))
    assert set(seen) == {f"java-{form}-a", f"java-{form}-b"}, lines
    assert f"add {2**62 + 5}" in lines
    assert "find NotFound no missing 404" in lines
    # The provider's own TApplicationException (UNKNOWN_METHOD = 1) passes through unread.
    assert "nosuch TApplicationException 1 unknown method nosuch" in lines


@pytest.mark.parametrize("form", list(FORMS))
def test_thriftpy2_client_through_the_agent_to_java_servers(agent: AgentProcess, form: str) -> None:
    with client(agent.listener_port(list(FORMS).index(form)), form) as echo:
        assert echo.ping() == "pong"
        assert echo.add(2**62, -1) == 2**62 - 1
        with pytest.raises(echo_thrift.NotFound) as info:
            echo.find("missing")
        assert info.value.code == 404
        with pytest.raises(TApplicationException, match="unknown method slow"):
            echo.slow(1)
        assert {echo.whoami() for _ in range(10)} == {f"java-{form}-a", f"java-{form}-b"}
