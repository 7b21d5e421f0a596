"""grpc-go's own interop suite (google.golang.org/grpc/interop: client and server, a
conformance check nobody here wrote) through the gRPC listener: every case that passes
between the client and the server directly must pass through the agent."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.grpc_peer import build_go_interop
from tests.fixtures.processes import ManagedProcess, free_port

pytestmark = pytest.mark.integration

SERVICE = "grpc.testing.TestService"
# The interop client's cases that need neither TLS, credentials, xDS nor a second server
# (the compressed_* cases are not in grpc-go's client: it answers them as unsupported).
CASES = (
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "status_code_and_message",
    "special_status_message",
    "custom_metadata",
    "unimplemented_method",
    "unimplemented_service",
)


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    workdir = tmp_path_factory.mktemp("go-interop")
    client, server = build_go_interop(workdir)
    port = free_port()
    process = ManagedProcess(
        [server, "-port", str(port), "-use_tls=false"],
        name="interop-server",
        log_path=workdir / "interop-server.log",
        term_timeout=5,
    )
    with process:
        process.wait_for_port(port, 30)
        yield client, port


def run_case(client: Path, port: int, case: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            client,
            "-server_host",
            "127.0.0.1",
            "-server_port",
            str(port),
            "-use_tls=false",
            "-test_case",
            case,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def passing_directly(interop: tuple[Path, int]) -> set[str]:
    client, port = interop
    passing = {case for case in CASES if run_case(client, port, case).returncode == 0}
    # All of them pass directly (were one not to, it would not be asked of the agent).
    assert passing == set(CASES), sorted(set(CASES) - passing)
    return passing


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, interop: tuple[Path, int]
) -> Iterator[AgentProcess]:
    _, port = interop
    config = {
        "services": [{"name": SERVICE, "protocol": "grpc", "health": {"enabled": False}}],
        "listeners": [{"port": free_port(), "service": SERVICE, "protocol": "grpc"}],
    }
    started = start_agent(tmp_path_factory.mktemp("agent-interop"), config)
    try:
        with started.client() as api:
            api.put(
                f"/v1/registrations/{SERVICE}/interop",
                json={"host": "127.0.0.1", "port": port},
            ).raise_for_status()
        started.wait_endpoints(SERVICE, 1)
        yield started
    finally:
        started.stop()


def test_every_case_passing_directly_passes_through_the_agent(
    interop: tuple[Path, int], passing_directly: set[str], agent: AgentProcess
) -> None:
    client, _ = interop
    failed = {}
    for case in sorted(passing_directly):
        done = run_case(client, agent.listener_port(), case)
        if done.returncode != 0:
            failed[case] = (done.stdout + done.stderr)[-600:]
    assert failed == {}
