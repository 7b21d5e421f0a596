"""The Java Dubbo provider of data center B called from data center A through two gateways
(docs/gateway.md): the Java consumer's whole suite through the app's Dubbo listener in A,
gateway A's import, the mutual-TLS link and gateway B, which finds the provider in B's
ZooKeeper. What the consumer gets is what it gets direct (load_suite's expectations)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.gateways import start_gateways
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, load_suite, mismatch, run_calls
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.test_workers_dubbo import echo

pytestmark = pytest.mark.integration


@pytest.fixture
def app(
    zookeeper: ZooKeeperServer, dubbo_provider: DubboProvider, tmp_path: Path
) -> Iterator[AgentProcess]:
    zk = {"name": "zk", "type": "zookeeper", "config": {"hosts": zookeeper.hosts}}
    gateways = start_gateways(tmp_path, [zk], [(INTERFACE, "dubbo")], b_registry="zk")
    try:
        gateways.b.wait_endpoints(INTERFACE, 1)
        # A's registry holds B's provider only as gateway A's import (the embedded
        # registry here: gateway A's registration in a shared one is another test's).
        endpoint = {"host": LOOPBACK, "port": gateways.imports[INTERFACE], "metadata": {"dc": "b"}}
        app = start_agent(
            tmp_path / "app-a",
            {
                "locality": {"dc": "a"},
                "registries": [
                    {
                        "name": "local",
                        "type": "local",
                        "config": {"services": {INTERFACE: [endpoint]}},
                    }
                ],
                "services": [
                    {"name": INTERFACE, "protocol": "dubbo", "health": {"enabled": False}}
                ],
                "listeners": [{"port": free_port(), "service": INTERFACE, "protocol": "dubbo"}],
            },
            name="app-a",
        )
        try:
            yield app
        finally:
            app.stop()
    finally:
        gateways.stop()


def test_the_java_consumer_gets_through_the_gateways_what_it_gets_direct(
    app: AgentProcess, dubbo_provider: DubboProvider
) -> None:
    assert [echo(app.listener_port(), f"via b {i}", i + 1) for i in range(4)] == [
        f"via b {i}" for i in range(4)
    ]
    outcomes = run_calls(url=f"dubbo://127.0.0.1:{app.listener_port()}")
    problems = [
        p
        for case in load_suite()
        if (p := mismatch(case, outcomes.get(case["case"]), dubbo_provider.provider_id))
    ]
    assert not problems, "\n".join(problems)
    with app.client() as api:
        (cluster,) = api.get("/v1/clusters").json()
    (endpoint,) = cluster["endpoints"]
    assert endpoint["priority"] == 3 and endpoint["requests"] > 0
