"""``meshagent run`` as a real process, real TCP through its listeners to upstream processes.

Upstreams answer each line with ``NAME:line`` (tests/fixtures/tcp_upstream.py), so every
answer says which endpoint served it. Every wait is bounded and polls a condition.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from plugins.dubbo.body import heartbeat_request
from plugins.dubbo.frame import Header
from tests.fixtures.agent_process import APP_SERVICE, AgentProcess, run_cli, tcp_agent_config
from tests.fixtures.agent_process import TCP_SERVICE as SERVICE
from tests.fixtures.processes import LOOPBACK, free_port, wait_until
from tests.fixtures.upstreams import Upstream, answered_by, exchange, read_line, refused

pytestmark = pytest.mark.integration

AgentFactory = Callable[[dict[str, Any]], AgentProcess]
UpstreamFactory = Callable[..., list[Upstream]]
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def shared_http(shared_agent: AgentProcess) -> Iterator[httpx.Client]:
    with shared_agent.client() as client:
        yield client


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None if it is not there."""
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    series = re.escape(f"{name}{{{label_text}}}" if labels else name)
    match = re.search(rf"^{series} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


class ClientLoop:
    """Opens one connection after another through a listener (in a thread) and records
    when each started and who answered, or the error the client saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[float, str | BaseException]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-loop", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            outcome: str | BaseException
            try:
                outcome = answered_by(self.port)
            except (OSError, EOFError) as exc:
                outcome = exc
            self.results.append((started, outcome))

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "client loop did not stop"

    def since(self, moment: float) -> list[str | BaseException]:
        return [outcome for started, outcome in list(self.results) if started >= moment]


# -- 1. traffic --------------------------------------------------------------------------


def test_traffic_reaches_every_upstream_round_robin(
    shared_agent: AgentProcess, upstreams: list[Upstream]
) -> None:
    names = sorted(u.name for u in upstreams)
    answers = [exchange(shared_agent.listener_port(), f"ping-{i}".encode()) for i in range(6)]
    served = sorted(answer.split(b":", 1)[0].decode() for answer in answers)
    assert served == sorted(names * 2), answers
    for i, answer in enumerate(answers):
        assert answer.endswith(f":ping-{i}".encode())
    # One connection stays on its endpoint for every exchange on it.
    with socket.create_connection((LOOPBACK, shared_agent.listener_port()), timeout=5) as sock:
        lines = []
        for i in range(3):
            sock.sendall(f"line-{i}\n".encode())
            lines.append(read_line(sock).decode())
    owner = lines[0].split(":")[0]
    assert lines == [f"{owner}:line-{i}" for i in range(3)]
    metrics = shared_agent.metrics()
    accepted = metric(
        metrics, "meshagent_listener_connections_total", listener="out0", service=SERVICE
    )
    assert accepted is not None and accepted >= 7


# -- 2 and 3. a dead upstream: retried, ejected, back ------------------------------------


def test_killed_upstream_is_hidden_ejected_and_comes_back(
    agent_factory: AgentFactory, upstream_factory: UpstreamFactory
) -> None:
    ups = upstream_factory("u0", "u1", "u2")
    victim = ups[1]
    agent = agent_factory(
        tcp_agent_config(
            [u.port for u in ups],
            service={
                "health": {"enabled": False},
                "connect_attempts": 2,
                "outlier": {
                    "consecutive_failures": 1,
                    # 1.5 s, then 3 s: the second ejection leaves time to look at it.
                    "base_ejection_s": 1.5,
                    "max_ejection_s": 10,
                },
            },
        )
    )
    with ClientLoop(agent.listener_port()) as clients:
        wait_until(lambda: len(clients.results) >= 20, 10, what="traffic before the kill")
        victim.kill()
        killed_at = time.monotonic()
        # Until it was ejected twice: its first ejection ended while it was still dead, it
        # took a connect again, failed it, and the retry hid that from the client too.

        def ejected_twice() -> dict[str, Any] | None:
            if len(clients.since(killed_at)) < 30:
                return None
            endpoint = agent.endpoint(SERVICE, victim.endpoint)
            return endpoint if endpoint["ejections"] >= 2 and endpoint["ejected"] else None

        dead = wait_until(ejected_twice, 15, what="traffic after the kill, a second ejection")
    after = clients.since(killed_at)
    failures = [outcome for outcome in after if isinstance(outcome, BaseException)]
    assert not failures, f"{len(failures)} of {len(after)} clients failed: {failures[:3]}"
    assert set(after) == {"u0", "u2"}
    before = {outcome for started, outcome in clients.results if started < killed_at}
    assert "u1" in before  # it did take traffic until it died

    assert dead["ejected_for_s"] > 0
    assert dead["connect_failures"] >= 2 and dead["ejections"] >= 2
    assert dead["healthy"]  # active checks are off: this is the passive verdict alone
    metrics = agent.metrics()
    labels = {"cluster": SERVICE, "endpoint": victim.endpoint}
    assert (metric(metrics, "meshagent_upstream_ejections_total", **labels) or 0) >= 2
    assert (metric(metrics, "meshagent_upstream_connect_failures_total", **labels) or 0) >= 2
    assert metric(metrics, "meshagent_cluster_endpoints_available", cluster=SERVICE) == 2
    rejected = metric(
        metrics, "meshagent_listener_connections_rejected_total", listener="out0", service=SERVICE
    )
    assert rejected == 0

    # Back on the same port: once the ejection is over, it takes its share again.
    victim.start()
    wait_until(
        lambda: not agent.endpoint(SERVICE, victim.endpoint)["ejected"],
        10,
        what="the ejection to end",
    )
    assert {answered_by(agent.listener_port()) for _ in range(3)} == {"u0", "u1", "u2"}
    back = agent.endpoint(SERVICE, victim.endpoint)
    assert back["times_ejected"] == dead["times_ejected"]
    metrics = agent.metrics()
    assert metric(metrics, "meshagent_cluster_endpoints_available", cluster=SERVICE) == 3


def test_active_health_checks_mark_a_dead_endpoint_unhealthy_then_healthy(
    agent_factory: AgentFactory, upstream_factory: UpstreamFactory
) -> None:
    ups = upstream_factory("h0", "h1")
    victim = ups[1]
    agent = agent_factory(
        tcp_agent_config(
            [u.port for u in ups],
            service={
                # One attempt and no outlier detection: only the health verdict can keep
                # traffic off the dead endpoint.
                "connect_attempts": 1,
                "outlier": {"enabled": False},
                "health": {
                    "interval_s": 0.1,
                    "timeout_s": 0.5,
                    "jitter_s": 0,
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 2,
                },
            },
        )
    )
    assert {answered_by(agent.listener_port()) for _ in range(2)} == {"h0", "h1"}
    victim.kill()
    wait_until(
        lambda: not agent.endpoint(SERVICE, victim.endpoint)["healthy"],
        10,
        what="unhealthy verdict",
    )
    assert [answered_by(agent.listener_port()) for _ in range(6)] == ["h0"] * 6
    labels = {"cluster": SERVICE, "endpoint": victim.endpoint}
    assert metric(agent.metrics(), "meshagent_upstream_healthy", **labels) == 0
    assert agent.endpoint(SERVICE, victim.endpoint)["connect_failures"] == 0

    victim.start()
    wait_until(
        lambda: agent.endpoint(SERVICE, victim.endpoint)["healthy"], 10, what="healthy verdict"
    )
    assert {answered_by(agent.listener_port()) for _ in range(2)} == {"h0", "h1"}
    assert metric(agent.metrics(), "meshagent_upstream_healthy", **labels) == 1
    output = agent.output()
    assert re.search(rf"endpoint unhealthy .*endpoint={re.escape(victim.endpoint)}", output)
    assert re.search(rf"endpoint healthy .*endpoint={re.escape(victim.endpoint)}", output)


# -- 4. SIGTERM drains --------------------------------------------------------------------


def test_sigterm_drains_open_connections_deregisters_and_exits_zero(
    agent_factory: AgentFactory, upstream_factory: UpstreamFactory
) -> None:
    (upstream,) = upstream_factory("d0")
    agent = agent_factory(
        tcp_agent_config([upstream.port], service={"health": {"enabled": False}}, drain_timeout_s=8)
    )
    with agent.client() as http:
        registered = http.put(
            f"/v1/registrations/{SERVICE}/app-1", json={"host": LOOPBACK, "port": free_port()}
        )
    assert registered.status_code == 201
    with socket.create_connection((LOOPBACK, agent.listener_port()), timeout=5) as sock:
        sock.sendall(b"before\n")
        assert read_line(sock) == b"d0:before"
        signalled_at = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(agent.listener_port()), 5, what="the listener to stop accepting")
        # The open connection is still served while the agent drains.
        sock.sendall(b"during\n")
        assert read_line(sock) == b"d0:during"
        assert agent.process.running
        with agent.client() as http:
            readiness = http.get("/readyz")
            # Withdrawn for good: a registration now would advertise a pod going away.
            late = http.put(
                f"/v1/registrations/{SERVICE}/app-2", json={"host": LOOPBACK, "port": free_port()}
            )
        assert readiness.status_code == 503 and "draining" in readiness.json()["reasons"]
        assert late.status_code == 503, late.text
        assert agent.registrations() == set()
        agent.process.wait_for_line(
            rf"deregistered .*service={SERVICE} instance=app-1", 5, since=agent.process.run_offset
        )
    # Our close is the last open connection: the drain ends now, not at its timeout.
    assert agent.wait_exit(8) == 0
    assert time.monotonic() - signalled_at < 8
    assert "drain timeout" not in agent.output()
    assert re.search(r"meshagent stopped", agent.output())


def test_sigterm_drain_timeout_cuts_what_is_still_open_and_exits_zero(
    agent_factory: AgentFactory, upstream_factory: UpstreamFactory
) -> None:
    (upstream,) = upstream_factory("t0")
    agent = agent_factory(
        tcp_agent_config([upstream.port], service={"health": {"enabled": False}}, drain_timeout_s=1)
    )
    with socket.create_connection((LOOPBACK, agent.listener_port()), timeout=5) as sock:
        sock.sendall(b"hold\n")
        assert read_line(sock) == b"t0:hold"
        signalled_at = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        assert agent.wait_exit(6) == 0
        elapsed = time.monotonic() - signalled_at
        # The connection was cut by the agent (EOF or reset), not left hanging.
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    assert 0.9 <= elapsed < 6, elapsed
    assert "drain timeout: closing open connections" in agent.output()


# -- 5. bad input on the command line -----------------------------------------------------


def _valid_config() -> dict[str, Any]:
    return tcp_agent_config([free_port()])


def _bad_plugin() -> dict[str, Any]:
    config = _valid_config()
    config["services"][0]["lb"] = {"policy": "round_robbin"}
    return config


def _bad_port() -> dict[str, Any]:
    config = _valid_config()
    config["listeners"][0]["port"] = 70000
    return config


CLI_CASES: dict[str, tuple[Callable[[], str], str]] = {
    "malformed-yaml": (
        lambda: "admin:\n  port: [15000\nlisteners: []\n",
        r"invalid YAML at line \d+, column \d+",
    ),
    "unknown-plugin": (
        lambda: yaml.safe_dump(_bad_plugin()),
        r"services\[0\]\.lb\.policy: unknown meshagent\.lb_policies plugin 'round_robbin'; "
        r"installed: .*round_robin",
    ),
    "port-out-of-range": (
        lambda: yaml.safe_dump(_bad_port()),
        r"listeners\[0\]\.port: must be between 1 and 65535",
    ),
}


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_config_is_reported_with_its_path_and_exit_2(
    tmp_path: Path, case: str, command: str
) -> None:
    text, expected = CLI_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text(), encoding="utf-8")
    argv = [command, str(path)] if command == "check-config" else [command, "-c", str(path)]
    result = run_cli(*argv)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert f"{path}: invalid configuration" in result.stderr
    assert re.search(expected, result.stderr), result.stderr


@pytest.mark.parametrize("which", ["listener", "admin"])
def test_port_in_use_is_a_clear_startup_error(tmp_path: Path, which: str) -> None:
    config = tcp_agent_config([free_port()], admin={"host": LOOPBACK, "port": 0})
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        if which == "listener":
            config["listeners"][0]["port"] = port
        else:
            config["admin"]["port"] = port
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        result = run_cli("run", "-c", str(path))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    # uvloop words the listener's error its own way; both name the address and the cause.
    assert re.search(rf"cannot listen on 127\.0\.0\.1:{port}: .*in use", result.stderr, re.I)
    if which == "listener":
        assert "listener out0" in result.stderr


# -- 6. bad input on the API --------------------------------------------------------------


def test_bad_api_input_is_refused_and_the_agent_keeps_serving(
    shared_agent: AgentProcess, shared_http: httpx.Client
) -> None:
    http = shared_http
    for instance in ("keep-1", "keep-2"):
        response = http.put(
            f"/v1/registrations/{APP_SERVICE}/{instance}",
            json={"host": LOOPBACK, "port": free_port(), "metadata": {"v": "1"}},
        )
        assert response.status_code in (200, 201), response.text
    before = shared_agent.registrations()
    assert {(APP_SERVICE, "keep-1"), (APP_SERVICE, "keep-2")} <= before

    def problem(response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        body: dict[str, Any] = response.json()
        assert body["status"] == status and body["detail"]
        return body

    url = f"/v1/registrations/{APP_SERVICE}/bad"
    invalid_json = http.put(
        url, content=b'{"host": "127.0.0.1", "port": ', headers={"content-type": "application/json"}
    )
    assert "JSON" in problem(invalid_json, 400)["detail"]
    invalid_field = problem(http.put(url, json={"host": LOOPBACK, "port": 0}), 400)
    assert "body.port" in invalid_field["detail"]

    big = {"host": LOOPBACK, "port": 1, "metadata": {"pad": "x" * 4096}}
    # The answer names the setting that raises the limit (issue 23).
    assert "limit of 2048 (admin.max_body_bytes)" in problem(http.put(url, json=big), 413)["detail"]
    # Streamed without a Content-Length: the limit holds as the body is read.
    streamed = http.put(
        url,
        content=iter([b'{"host": "127.0.0.1", "port": 1, "metadata": {"pad": "', b"y" * 4096]),
        headers={"content-type": "application/json"},
    )
    assert "limit of 2048" in problem(streamed, 413)["detail"]

    unknown = http.put("/v1/registrations/nosuch/x", json={"host": LOOPBACK, "port": 1})
    assert "unknown service 'nosuch'" in problem(unknown, 404)["detail"]
    assert problem(http.delete("/v1/registrations/nosuch/x"), 404)
    assert problem(http.delete(f"/v1/registrations/{APP_SERVICE}/never"), 404)

    # Still serving, still holding every registration it had.
    assert shared_agent.registrations() == before
    assert exchange(shared_agent.listener_port(), b"still").endswith(b":still")
    assert http.get("/readyz").status_code == 200
    assert shared_agent.process.running
    for instance in ("keep-1", "keep-2"):
        assert http.delete(f"/v1/registrations/{APP_SERVICE}/{instance}").status_code == 204


# -- 7. registration TTL ------------------------------------------------------------------


def test_registration_not_renewed_within_its_ttl_is_withdrawn(
    shared_agent: AgentProcess, shared_http: httpx.Client
) -> None:
    http = shared_http

    # The renewed one gets more slack (2 s) so that a renewal delayed by a loaded machine
    # does not let it lapse; the test still renews it past its TTL before checking it.
    ttls = {"renewed": 2.0, "lapsed": 1.0}

    def put(instance: str) -> int:
        body = {"host": LOOPBACK, "port": 4000 + len(instance), "ttl_s": ttls[instance]}
        return http.put(f"/v1/registrations/{APP_SERVICE}/{instance}", json=body).status_code

    def instances() -> set[str]:
        response = http.get(f"/v1/services/{APP_SERVICE}/instances")
        response.raise_for_status()
        return {instance["id"] for instance in response.json()}

    assert put("renewed") == 201
    assert put("lapsed") == 201
    assert {"renewed", "lapsed"} <= instances()
    registered_at = time.monotonic()

    def lapsed_gone_while_renewing() -> bool:
        assert put("renewed") == 200  # a renewal, not a new registration
        return (APP_SERVICE, "lapsed") not in shared_agent.registrations()

    wait_until(lapsed_gone_while_renewing, 8, interval=0.2, what="the lapsed registration")
    assert time.monotonic() - registered_at >= 1.0

    def renewed_past_its_ttl() -> bool:
        assert put("renewed") == 200
        return time.monotonic() - registered_at > 2.5

    wait_until(renewed_past_its_ttl, 8, interval=0.2, what="renewals past the TTL")
    assert (APP_SERVICE, "renewed") in shared_agent.registrations()
    # Withdrawn from the registry too: the cluster no longer has the endpoint.
    wait_until(lambda: "lapsed" not in instances(), 5, what="the endpoint to be removed")
    assert "renewed" in instances()
    assert shared_agent.process.wait_for_line(
        r"registration expired.* instance=lapsed", 5, since=shared_agent.process.run_offset
    )
    assert http.delete(f"/v1/registrations/{APP_SERVICE}/renewed").status_code == 204


# -- connection budgets (issue 25) ------------------------------------------------------


def test_silent_connections_cannot_exhaust_descriptors_or_starve_the_api(
    agent_factory: AgentFactory, upstreams: list[Upstream]
) -> None:
    # Issue 25: 1,124 silent connections at an open-file limit of 1,024 failed every
    # listener and /healthz for the whole hold, with nothing logged. Here the limit is 256
    # (set on the running agent), the listeners' budget 40 and the API's own 16.
    ports = [u.port for u in upstreams]
    agent = agent_factory(
        tcp_agent_config(ports, max_connections=40, admin={"max_connections": 16})
    )
    resource.prlimit(agent.pid, resource.RLIMIT_NOFILE, (256, 256))
    held: list[socket.socket] = []
    try:
        for _ in range(300):  # more than the descriptors the agent may open
            held.append(socket.create_connection((LOOPBACK, agent.listener_port()), timeout=5))
        # Probes and management still answer: the API's connections are not the budget's.
        with agent.client() as http:
            assert http.get("/healthz").status_code == 200
            metrics = http.get("/metrics").text
        refused = metric(
            metrics,
            "meshagent_listener_connections_refused_total",
            listener="out0",
            service=SERVICE,
        )
        assert refused is not None and refused >= 300 - 40
        assert metric(metrics, "meshagent_connection_budget_open") == 40
        refusal = "connection refused: the agent's connection budget is spent"
        assert refusal in agent.process.output()
    finally:
        for sock in held:
            sock.close()
    # The slots free as the clients go: traffic flows again, the agent never stopped.
    wait_until(
        lambda: metric(agent.metrics(), "meshagent_connection_budget_open") == 0,
        timeout=10,
        what="held connections closed",
    )
    assert exchange(agent.listener_port(), b"after").endswith(b":after")
    assert "Too many open files" not in agent.process.output()


def test_partly_sent_requests_are_bounded_per_listener_and_timed_out(
    agent_factory: AgentFactory,
) -> None:
    # Issue 25: 30 Dubbo clients each holding a maximal declared body added 240 MB RSS;
    # nothing bounded the sum. Here 8 clients each declare a 1 MiB body and send all
    # but its last byte; the listener may hold 256 KiB of partial requests.
    limit = 256 * 1024
    config = {
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {"services": {"slow": [{"host": LOOPBACK, "port": free_port()}]}},
            }
        ],
        "services": [{"name": "slow", "protocol": "dubbo", "health": {"enabled": False}}],
        "listeners": [
            {
                "name": "dubbo0",
                "port": free_port(),
                "service": "slow",
                "protocol": "dubbo",
                "max_buffered_bytes": limit,
                "request_timeout_s": 3,
            }
        ],
    }
    agent = agent_factory(config)
    port = agent.listener_port()
    body_length = 1024 * 1024
    header = Header(True, True, False, 2, 0, 1, body_length).pack()
    clients = []
    for _ in range(8):
        sock = socket.create_connection((LOOPBACK, port), timeout=5)
        sock.setblocking(False)
        pending = memoryview(header + b"\0" * (body_length - 1))
        clients.append((sock, pending))

    def push() -> bool:
        """Send what each client's socket takes now; True once every one is stuck."""
        stuck = 0
        for i, (sock, pending) in enumerate(clients):
            try:
                sent = sock.send(pending[:65536])
                clients[i] = (sock, pending[sent:])
            except BlockingIOError:
                stuck += 1
            if not clients[i][1]:
                stuck += 1
        return stuck == len(clients)

    labels = {"listener": "dubbo0", "service": "slow"}
    try:
        wait_until(lambda: push() or None, timeout=20, what="clients blocked by the agent")
        text = agent.metrics()
        held = metric(text, "meshagent_listener_buffered_bytes", **labels)
        pauses = metric(text, "meshagent_listener_buffer_pauses_total", **labels)
        # Bounded: the limit plus at most one read (256 KiB) per paused connection, not
        # the 8 MiB the clients tried to hand over.
        assert held is not None and limit < held <= limit + 8 * 256 * 1024, held
        assert pauses is not None and pauses >= 1
        # Another client on the same listener is served meanwhile (a heartbeat).
        with socket.create_connection((LOOPBACK, port), timeout=5) as other:
            other.sendall(heartbeat_request(7))
            answer = Header.unpack(other.recv(16))
            assert answer.event and answer.request_id == 7 and not answer.request
        # None of the 8 finishes: after request_timeout_s each is closed, and counted.
        wait_until(
            lambda: (
                (
                    metric(agent.metrics(), "meshagent_listener_request_timeouts_total", **labels)
                    or 0
                )
                >= 8
                or None
            ),
            timeout=20,
            what="the partly sent requests timed out",
        )
        assert metric(agent.metrics(), "meshagent_listener_buffered_bytes", **labels) == 0
        assert "frame not received whole within 3 s" in agent.process.output()
    finally:
        for sock, _ in clients:
            sock.close()
