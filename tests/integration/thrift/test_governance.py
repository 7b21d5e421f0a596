"""Governance rules on the Thrift listener: thriftpy2 clients → the agent (a process, rules
in its config) → thriftpy2 servers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from thriftpy2.thrift import TApplicationException

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import free_port
from tests.fixtures.thrift_server import ThriftServer, client

pytestmark = pytest.mark.integration

FORM = "framed-binary"


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory, thrift_servers: dict[str, list[ThriftServer]]
) -> Iterator[AgentProcess]:
    servers = thrift_servers[FORM]
    instances = [{**s.instance(), "metadata": {"tag": s.server_id}} for s in servers]
    config = {
        "registries": [
            {"name": "local", "type": "local", "config": {"services": {FORM: instances}}}
        ],
        "services": [{"name": FORM, "protocol": "thrift", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": FORM, "protocol": "thrift"}],
        "governance": {
            "rules": {
                "rules": [
                    {
                        "match": {"to": FORM, "method": "add"},
                        "rate_limit": {"per_s": 0.001, "burst": 2},
                    },
                    {
                        "match": {"to": FORM, "method": "whoami"},
                        "traffic": {
                            "subsets": [
                                {
                                    "name": "b",
                                    "labels": {"tag": servers[1].server_id},
                                    "weight": 100,
                                }
                            ]
                        },
                    },
                    {
                        "match": {"to": FORM, "method": "ping"},
                        "fault": {"abort": {"percent": 100, "message": "chaos"}},
                    },
                ]
            }
        },
        "drain_timeout_s": 2,
    }
    workdir: Path = tmp_path_factory.mktemp("thrift-governed")
    agent = start_agent(workdir, config)
    try:
        agent.wait_endpoints(FORM, 2)
        yield agent
    finally:
        agent.stop()


def listener_port(agent: AgentProcess) -> int:
    return int(agent.config["listeners"][0]["port"])


def test_rate_limit_and_abort_are_application_exceptions(governed: AgentProcess) -> None:
    outcomes: list[object] = []
    with client(listener_port(governed), FORM) as echo:
        for _ in range(4):
            try:
                outcomes.append(echo.add(1, 2))
            except TApplicationException as exc:
                assert exc.type == TApplicationException.INTERNAL_ERROR
                outcomes.append(exc.message)
        with pytest.raises(TApplicationException, match="chaos"):
            echo.ping()
        assert echo.whoami()  # the connection serves on after the refusals
    assert outcomes[:2] == [3, 3]
    assert all("rate_limited" in str(o) for o in outcomes[2:]), outcomes
    with governed.client() as api:
        counters = api.get("/v1/rules").json()["counters"]
    assert counters["rate_limited"] == 2 and counters["fault_aborts"] == 1


def test_subset_by_endpoint_metadata(
    governed: AgentProcess, thrift_servers: dict[str, list[ThriftServer]]
) -> None:
    with client(listener_port(governed), FORM) as echo:
        answered = Counter(echo.whoami() for _ in range(10))
    assert answered == {thrift_servers[FORM][1].server_id: 10}
