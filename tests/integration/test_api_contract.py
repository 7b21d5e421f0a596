"""The OpenAPI contract is the behaviour: Schemathesis (the contract's own fuzzer, from
PyPI) runs against a real agent process with the agent's generated openapi.json, seeded
and bounded so CI is repeatable: every operation, its coverage and fuzzing phases and a
stateful phase that follows the links between operations (registrations: PUT, then GET
and DELETE of what was made).

Checks: no 5xx; every status, content type, header and body as the contract documents
it; a method a path does not take answered 405 with the right ``Allow``. Left out:
``positive_data_acceptance`` (a schema-valid request must not get 400), because path
parameters (service names, instance ids, config keys) carry rules the contract states in
words, not as JSON Schema patterns yet.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import LOOPBACK, free_port
from tests.fixtures.programs import require

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "unsupported_method",
    ]
)


@pytest.fixture(scope="module")
def contract_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    config = {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"echo": [{"host": LOOPBACK, "port": free_port()}]}},
            }
        ],
        "services": [{"name": "echo", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": "echo"}],
    }
    agent = start_agent(tmp_path_factory.mktemp("contract"), config)
    try:
        yield agent
    finally:
        agent.stop()


def test_the_agent_answers_as_its_openapi_says(
    contract_agent: AgentProcess, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            require("schemathesis"),
            "run",
            f"{contract_agent.base_url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "15",
            "--seed",
            "7",
            "--generation-deterministic",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # Every operation of the contract was exercised.
    selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert selected is not None and tested is not None, result.stdout[-2000:]
    assert int(tested.group(1)) == int(selected.group(2)) >= 20
    assert contract_agent.process.running
