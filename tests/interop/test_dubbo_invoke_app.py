"""The same calls, with the provider found at *application* level (Dubbo 3 instance discovery).

The session provider registers with ``metadata-type=local``: ZooKeeper holds only its
instance and metadata revision, so which services it has, and their URL parameters
(``slow.timeout=500``), come from asking the instance itself: Dubbo's MetadataService,
called by the Dubbo plugin through the ZooKeeper plugin's local-metadata hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider, load_suite, mismatch
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.dubbo_invoke_support import (
    agent_expectation,
    call,
    invoke_agent_config,
    outcome,
    suite_body,
)

pytestmark = pytest.mark.integration

SUITE = load_suite()


def _resolved(agent: AgentProcess, address: str) -> dict[str, str] | None:
    for instance in agent.instances(INTERFACE):
        if instance["id"] == address and "slow.timeout" in instance["metadata"]:
            metadata: dict[str, str] = instance["metadata"]
            return metadata
    return None


@pytest.fixture(scope="module")
def agent(
    zookeeper: ZooKeeperServer, dubbo_provider: DubboProvider, interop_workdir: Path
) -> Iterator[AgentProcess]:
    config = invoke_agent_config(zookeeper.hosts, "application")
    process = start_agent(interop_workdir / "agent-invoke-app", config, name="agent-invoke-app")
    try:
        yield process
    finally:
        process.stop()


def test_metadata_comes_from_the_metadata_service(
    agent: AgentProcess, dubbo_provider: DubboProvider
) -> None:
    metadata = agent.process.wait_for(
        lambda: _resolved(agent, dubbo_provider.address),
        30,
        what="the provider's service parameters (MetadataService) in the agent's cluster",
    )
    # Stored locally: nothing in ZooKeeper says these; only the instance could.
    assert metadata["dubbo.metadata.storage-type"] == "local"
    assert metadata["slow.timeout"] == "500"
    assert metadata["application"] == dubbo_provider.app
    assert "whoami" in metadata["methods"].split(",")


@pytest.mark.parametrize("case", SUITE, ids=[c["case"] for c in SUITE])
def test_suite_case(
    agent: AgentProcess, dubbo_provider: DubboProvider, case: dict[str, Any]
) -> None:
    agent.process.wait_for(
        lambda: _resolved(agent, dubbo_provider.address), 30, what="application-level discovery"
    )
    with agent.client() as client:
        response, elapsed = call(client, case["method"], suite_body(case))
    problem = mismatch(
        {**case, "expect": agent_expectation(case)}, outcome(response), dubbo_provider.provider_id
    )
    assert problem is None, f"{problem}; HTTP {response.status_code} {response.text[:500]}"
    if case["expect"].get("timeout"):
        # The per-method timeout reached the agent through MetadataService's params; Dubbo's
        # own consumer did not apply it with instance discovery (see the peer's README).
        assert response.status_code == 504
        assert 0.45 <= elapsed < 1.2, elapsed
