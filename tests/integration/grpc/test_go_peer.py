"""grpc-go on both sides of the agent: a grpc-go client through the listener to grpcio and
grpc-go servers, and the agent's health checks and JSON invocation against grpc-go."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.gateways import start_gateways
from tests.fixtures.grpc_peer import ECHO, EchoServer, GoPeer, build_go_peer
from tests.fixtures.processes import free_port, wait_until

pytestmark = pytest.mark.integration

GO = "go-peer"


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_peer(tmp_path_factory.mktemp("go-build"))


@pytest.fixture(scope="module")
def go_server(tmp_path_factory: pytest.TempPathFactory, go_binary: Path) -> Iterator[GoPeer]:
    with GoPeer(tmp_path_factory.mktemp("go-peer"), go_binary, "go-a") as peer:
        yield peer


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    go_server: GoPeer,
    echo_servers: list[EchoServer],
) -> Iterator[AgentProcess]:
    health = {
        "checker": "grpc",
        "interval_s": 0.2,
        "jitter_s": 0,
        "healthy_threshold": 1,
        "unhealthy_threshold": 1,
    }
    config = {
        "services": [
            {"name": GO, "protocol": "grpc", "health": health},
            {"name": ECHO, "protocol": "grpc", "health": health},
        ],
        "listeners": [
            {"port": free_port(), "service": GO, "protocol": "grpc"},
            {"port": free_port(), "service": ECHO, "protocol": "grpc"},
        ],
        "drain_timeout_s": 1,
    }
    agent = start_agent(tmp_path_factory.mktemp("go-agent"), config)
    try:
        with agent.client() as client:
            for service, name, port in [
                (GO, go_server.name, go_server.port),
                (ECHO, echo_servers[0].name, echo_servers[0].port),
            ]:
                body = {"host": "127.0.0.1", "port": port}
                client.put(f"/v1/registrations/{service}/{name}", json=body).raise_for_status()
        agent.wait_endpoints(GO, 1)
        agent.wait_endpoints(ECHO, 1)
        yield agent
    finally:
        agent.stop()


def go_client(binary: Path, port: int, *args: str) -> list[str]:
    done = subprocess.run(
        [binary, "client", "-target", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def test_go_client_bidi_to_go_server(agent: AgentProcess, go_binary: Path) -> None:
    lines = go_client(
        go_binary,
        agent.listener_port(0),
        "-method",
        "/any.Thing/Echo",
        "-hex",
        "0a026869",
        "-count",
        "3",
    )
    assert lines == [
        "reply 0a026869",
        "reply 0a026869",
        "reply 0a026869",
        "header x-server=[go-a]",
        "trailer x-trailer=[go]",
        "status OK",
    ]


def test_go_client_to_grpcio_server(agent: AgentProcess, go_binary: Path, grpc_stubs: Path) -> None:
    import echo_pb2

    request = echo_pb2.EchoRequest(message="hi").SerializeToString().hex()
    port = agent.listener_port(1)
    lines = go_client(go_binary, port, "-method", "/meshtest.Echo/Unary", "-hex", request)
    assert lines[0].startswith("reply ")
    reply = echo_pb2.EchoReply.FromString(bytes.fromhex(lines[0].removeprefix("reply ")))
    assert (reply.message, reply.echoed, reply.server) == ("hi", "from-go", "echo-a")
    assert lines[1:] == ["header x-server=[echo-a]", "trailer x-trailer=[unary]", "status OK"]
    assert go_client(go_binary, port, "-health") == ["health SERVING", "status OK"]
    unknown = go_client(go_binary, port, "-method", "/meshtest.Echo/Nope", "-hex", "")
    assert unknown[0].startswith("status Unimplemented")


def test_health_checks_of_go_server(agent: AgentProcess) -> None:
    agent.process.wait_for(
        lambda: [e["healthy"] for e in agent.endpoints(GO)] == [True], 10, what="go healthy"
    )


def test_json_invocation_by_go_server_reflection(agent: AgentProcess) -> None:
    with agent.client() as client:
        response = client.post(f"/v1/invoke/grpc/{GO}/grpc.health.v1.Health.Check", json={})
    assert response.status_code == 200, response.text
    outcome: dict[str, Any] = response.json()
    assert outcome["result"] == {"status": "SERVING"}
    assert outcome["endpoint"] == "go-a"


def test_a_provider_rolling_its_connections_loses_no_call(tmp_path: Path, go_binary: Path) -> None:
    """grpc-go's MaxConnectionAge: every 100 ms the provider sends GOAWAY on its connection
    and finishes what it has; calls go on, on new connections, without an error."""
    with GoPeer(tmp_path, go_binary, "go-rolling", "server", "-max-age", "100ms") as peer:
        agent = _agent_for(tmp_path, peer)
        try:
            done = _load(go_binary, agent.listener_port(), concurrency=8)
        finally:
            agent.stop()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Twenty GOAWAYs or so in two seconds, and thousands of calls across them.
    assert result["calls"] > 1000 and result["errors"] == 0, result


def _agent_for(tmp_path: Path, peer: GoPeer, **listener: Any) -> AgentProcess:
    config = {
        "services": [{"name": GO, "protocol": "grpc", "health": {"enabled": False}}],
        "listeners": [
            {
                "port": free_port(),
                "service": GO,
                "protocol": "grpc",
                "config": listener,
            }
        ],
    }
    agent = start_agent(tmp_path / "agent", config)
    _register(agent, peer)
    agent.wait_endpoints(GO, 1)
    return agent


def _register(agent: AgentProcess, peer: GoPeer) -> None:
    with agent.client() as client:
        client.put(
            f"/v1/registrations/{GO}/{peer.name}",
            json={"host": "127.0.0.1", "port": peer.port},
        ).raise_for_status()


def _load(binary: Path, port: int, concurrency: int) -> subprocess.CompletedProcess[str]:
    """The grpc-go load generator through the listener for 2 s: unary calls, ``concurrency``
    in flight on one connection; its last stdout line is the JSON result."""
    return subprocess.run(
        [
            binary,
            "load",
            "-target",
            f"127.0.0.1:{port}",
            "-duration",
            "2",
            "-concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _connections_to(port: int) -> int:
    """Established TCP connections whose remote end is 127.0.0.1:``port`` (/proc/net/tcp)."""
    remote = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == remote and row[3] == "01")


def test_a_provider_stream_limit_gets_the_relay_more_connections(
    tmp_path: Path, go_binary: Path
) -> None:
    """grpc-go allowing 2 concurrent streams per connection: 12 calls at once through the
    h2 relay get 0 errors, on as many provider connections as they need (one connection
    refused the third stream: UNAVAILABLE)."""
    with GoPeer(tmp_path, go_binary, "go-narrow", "server", "-max-streams", "2") as peer:
        agent = _agent_for(tmp_path, peer)
        try:
            done = _load(go_binary, agent.listener_port(), concurrency=12)
            opened = _connections_to(peer.port)
        finally:
            agent.stop()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] > 500 and result["errors"] == 0, (result, done.stderr)
    assert 2 <= opened <= 8, opened  # max_connections_per_endpoint (8)


def test_a_frozen_provider_is_found_by_ping_and_its_calls_end(
    tmp_path: Path, go_binary: Path
) -> None:
    """The provider's process stops (SIGSTOP: its kernel still holds the connection, so
    no reset comes): the relay's PING goes unanswered, the connection is closed after
    ping_timeout_s and the call on it ends UNAVAILABLE saying so, long before the client's
    own 10 s deadline; once the provider runs again, calls go to a new connection."""
    with GoPeer(tmp_path, go_binary, "go-frozen", "server") as peer:
        agent = _agent_for(tmp_path, peer, ping_interval_s=0.2, ping_timeout_s=0.4)
        port = agent.listener_port()
        call = ["-method", "/any.Thing/Echo", "-hex", "0a026869"]
        try:
            assert go_client(go_binary, port, *call)[-1] == "status OK"
            peer.process.freeze()
            try:
                frozen = go_client(go_binary, port, *call)
            finally:
                peer.process.thaw()
            assert go_client(go_binary, port, *call)[-1] == "status OK"
        finally:
            agent.stop()
    assert frozen[-1].startswith("status Unavailable"), frozen
    assert "no answer to a ping within 0.4s" in frozen[-1], frozen


def test_a_provider_stopping_gracefully_loses_no_call(tmp_path: Path, go_binary: Path) -> None:
    """Issue 27: one of two grpc-go providers is stopped with SIGTERM (GracefulStop: GOAWAY
    on its connections, the calls in flight finish, then it exits) under load; calls after
    its GOAWAY go to the other provider and none fails."""
    with (
        GoPeer(tmp_path / "a", go_binary, "go-stopping") as stopping,
        GoPeer(tmp_path / "b", go_binary, "go-staying") as staying,
    ):
        agent = _agent_for(tmp_path, stopping)
        try:
            _register(agent, staying)
            agent.wait_endpoints(GO, 2)
            target = f"127.0.0.1:{agent.listener_port()}"
            load = subprocess.Popen(
                [go_binary, "load", "-target", target, "-duration", "3", "-concurrency", "8"],
                stdout=subprocess.PIPE,
                text=True,
            )
            agent.process.wait_for(
                lambda: (
                    any(
                        e["id"] == stopping.name and e["requests"] > 500
                        for e in agent.endpoints(GO)
                    )
                    or None
                ),
                30,
                what="calls reaching the provider to stop",
            )
            stopping.process.send_signal(signal.SIGTERM)
            out, _ = load.communicate(timeout=60)
            wait_until(lambda: (not stopping.process.running) or None, 30, what="its exit")
            assert stopping.process.returncode == 0  # Serve returned: a graceful stop
        finally:
            agent.stop()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["calls"] > 1000 and result["errors"] == 0, result


def test_grpc_go_in_b_is_called_from_a_through_the_gateways(
    tmp_path: Path, go_binary: Path
) -> None:
    """A grpc-go server of data center B behind gateway B; grpc-go clients in A through the
    app's gRPC listener and gateway A's import (docs/gateway.md): a bidirectional stream
    and unary calls under load, all answered, the status and trailers the server's own."""
    with GoPeer(tmp_path / "b", go_binary, "go-b") as peer:
        registry = {"name": "local", "type": "local", "config": {"services": {GO: []}}}
        registry["config"]["services"][GO] = [{"host": "127.0.0.1", "port": peer.port}]
        gateways = start_gateways(tmp_path, [registry], [(GO, "grpc")])
        try:
            endpoint = {"host": "127.0.0.1", "port": gateways.imports[GO], "metadata": {"dc": "b"}}
            app = start_agent(
                tmp_path / "app-a",
                {
                    "locality": {"dc": "a"},
                    "registries": [
                        {"name": "local", "type": "local", "config": {"services": {GO: [endpoint]}}}
                    ],
                    "services": [{"name": GO, "protocol": "grpc", "health": {"enabled": False}}],
                    "listeners": [{"port": free_port(), "service": GO, "protocol": "grpc"}],
                },
                name="app-a",
            )
            try:
                call = ["-method", "/any.Thing/Echo", "-hex", "0a026869", "-count", "3"]
                lines = go_client(go_binary, app.listener_port(), *call)
                assert lines == [
                    *["reply 0a026869"] * 3,
                    "header x-server=[go-b]",
                    "trailer x-trailer=[go]",
                    "status OK",
                ]
                done = _load(go_binary, app.listener_port(), concurrency=8)
            finally:
                app.stop()
        finally:
            gateways.stop()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] >= 8 and result["errors"] == 0, (result, done.stderr)
