"""``workers: 2`` as real processes (docs/workers.md): a supervisor on ZooKeeper and the
embedded registry, two workers forked by its zygote, TCP and HTTP clients in parallel.
The Dubbo listener with the Java provider: tests/interop/test_workers_dubbo.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kazoo.client import KazooClient

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.processes import LOOPBACK, free_port, wait_until
from tests.fixtures.programs import require
from tests.fixtures.upstreams import Upstream
from tests.fixtures.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration


def workers_config(
    zookeeper: ZooKeeperServer, root: str, echo: list[int], web: int, **top: Any
) -> dict[str, Any]:
    """``echo`` (TCP, embedded registry), ``web`` (HTTP, embedded) and ``orders``
    (ZooKeeper, for registrations); a TCP and an HTTP listener."""
    config: dict[str, Any] = {
        "workers": 2,
        "registries": [
            {
                "name": "local",
                "type": "local",
                "config": {
                    "services": {
                        "echo": [{"host": LOOPBACK, "port": p} for p in echo],
                        "web": [{"host": LOOPBACK, "port": web}],
                    }
                },
            },
            {
                "name": "zk",
                "type": "zookeeper",
                "config": {
                    "hosts": zookeeper.hosts,
                    "root": f"{root}/dubbo",
                    "services_root": f"{root}/services",
                    "plain_root": f"{root}/plain",
                },
            },
        ],
        "services": [
            {
                "name": "echo",
                "registry": "local",
                "protocol": "tcp",
                "health": {"enabled": False},
                "outlier": {"consecutive_failures": 3, "max_ejection_percent": 50},
            },
            {"name": "web", "registry": "local", "protocol": "http", "health": {"enabled": False}},
            {"name": "orders", "registry": "zk", "protocol": "http", "health": {"enabled": False}},
        ],
        "listeners": [
            {"name": "tcp", "host": LOOPBACK, "port": free_port(), "service": "echo"},
            {
                "name": "http",
                "host": LOOPBACK,
                "port": free_port(),
                "service": "web",
                "protocol": "http",
            },
        ],
        "drain_timeout_s": 5,
        "log_level": "INFO",
    }
    config.update(top)
    return config


# The standard library's file server with a listen backlog for a load (its default is 5).
HTTP_PROVIDER = """
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
Server(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


@pytest.fixture
def web(tmp_path: Path) -> Iterator[int]:
    """A plain HTTP provider (the standard library's server, in its own process)."""
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.txt").write_text("hello\n")
    process = subprocess.Popen(
        [sys.executable, "-c", HTTP_PROVIDER, str(port), str(tmp_path / "www")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _connectable(port), 15, what="the HTTP provider")
    yield port
    process.kill()
    process.wait()


def _connectable(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        return True
    except OSError:
        return False


def worker_pids(agent: AgentProcess) -> dict[int, int]:
    with agent.client() as client:
        body = client.get("/readyz").json()
    return {w["id"]: w["pid"] for w in body.get("workers", []) if w["serving"]}


def echo_lines(connections: list[socket.socket], text: str) -> list[bool]:
    """Send a line on each connection; whether each got its echo back."""
    answered = []
    for sock in connections:
        try:
            sock.sendall(text.encode() + b"\n")
            answered.append(sock.recv(100).endswith(text.encode() + b"\n"))
        except OSError:
            answered.append(False)
    return answered


def open_connections(port: int, count: int) -> list[socket.socket]:
    connections = [socket.create_connection((LOOPBACK, port), timeout=5) for _ in range(count)]
    assert all(echo_lines(connections, "hello"))
    return connections


def test_both_workers_serve_tcp_and_http_clients_in_parallel(
    zookeeper: ZooKeeperServer,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    (echo,) = upstream_factory("e0")
    agent = agent_factory(workers_config(zookeeper, f"/w{uuid.uuid4().hex}", [echo.port], web))
    assert sorted(worker_pids(agent)) == [0, 1]
    tcp_port, http_port = agent.listener_ports
    errors: list[str] = []

    def http_client() -> None:
        with httpx.Client(base_url=f"http://{LOOPBACK}:{http_port}", timeout=10) as client:
            for _ in range(20):
                response = client.get("/index.txt")
                if response.text != "hello\n":
                    errors.append(f"{response.status_code} {response.text!r}")

    threads = [threading.Thread(target=http_client) for _ in range(8)]
    for thread in threads:
        thread.start()
    connections = open_connections(tcp_port, 24)
    for thread in threads:
        thread.join()
    assert errors == []
    # The kernel spread the clients: each worker accepted some, as /metrics shows.
    for worker in ("0", "1"):
        assert agent.metric("meshagent_listener_connections_total", listener="tcp", worker=worker)
        assert agent.metric("meshagent_listener_connections_total", listener="http", worker=worker)
    # Summed over the workers: the agent's totals.
    assert agent.metric("meshagent_listener_connections_total", listener="tcp") == 24
    assert agent.metric("meshagent_listener_connections_total", listener="http") == 8
    assert agent.metric("meshagent_workers", state="serving") == 2
    # The API port is every process's: probes and management over fresh connections are
    # answered whichever process the kernel gave them to (a worker passes the supervisor's
    # routes on).
    for _ in range(24):
        with agent.client() as client:
            assert client.get("/readyz").json()["ready"] is True
    for worker in ("0", "1"):
        assert agent.metric("meshagent_listener_connections_total", listener="api", worker=worker)
    # /v1/clusters sums what each worker sent to an endpoint.
    web_endpoint = agent.endpoint("web", f"{LOOPBACK}:{web}")
    assert web_endpoint["requests"] >= 160
    assert web_endpoint["requests"] == agent.metric(
        "meshagent_upstream_requests_total", cluster="web"
    )
    for sock in connections:
        sock.close()


def test_a_killed_provider_is_ejected_once_for_all_workers(
    zookeeper: ZooKeeperServer,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    live, doomed = upstream_factory("live", "doomed")
    dead = doomed.port
    config = workers_config(zookeeper, f"/w{uuid.uuid4().hex}", [live.port, dead], web)
    agent = agent_factory(config)
    tcp_port = agent.listener_ports[0]
    for sock in open_connections(tcp_port, 8):  # both providers serve
        sock.close()
    doomed.kill()  # SIGKILL: from now on every connect to it is refused
    # Connections through both workers; each failed connect to the dead one is retried on
    # the live one (the client sees no failure) and reported to the supervisor.
    connections = open_connections(tcp_port, 24)
    for sock in connections:
        sock.close()
    dead_id = f"{LOOPBACK}:{dead}"
    wait_until(
        lambda: agent.endpoint("echo", dead_id)["ejected"], 15, what="the dead provider ejected"
    )
    assert agent.metric("meshagent_upstream_ejections_total", endpoint=dead_id) == 1
    # Every worker stopped sending to it: new connections do not try it any more.
    failures = agent.metric("meshagent_upstream_connect_failures_total", endpoint=dead_id)
    for sock in open_connections(tcp_port, 24):
        sock.close()
    assert agent.metric("meshagent_upstream_connect_failures_total", endpoint=dead_id) == failures


def test_a_worker_killed_under_load_is_replaced_and_the_other_keeps_serving(
    zookeeper: ZooKeeperServer,
    kz: KazooClient,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    root = f"/w{uuid.uuid4().hex}"
    (echo,) = upstream_factory("e0")
    agent = agent_factory(workers_config(zookeeper, root, [echo.port], web))
    with agent.client() as client:
        response = client.put(
            "/v1/registrations/orders/orders-1", json={"host": "10.2.0.1", "port": 8080}
        )
        assert response.status_code == 201, response.text
    node = f"{root}/plain/orders/orders-1"
    assert kz.exists(node) is not None
    connections = open_connections(agent.listener_ports[0], 24)
    before = worker_pids(agent)
    os.kill(before[0], signal.SIGKILL)
    wait_until(
        lambda: (pids := worker_pids(agent)).get(0) not in (None, before[0]) and len(pids) == 2,
        15,
        what="worker 0 replaced",
    )
    answered = echo_lines(connections, "after")
    # Worker 0's clients lost their connections, worker 1's did not notice.
    assert 0 < sum(answered) < len(answered)
    assert worker_pids(agent)[1] == before[1]
    assert "worker exited; starting another" in agent.output()
    assert agent.metric("meshagent_worker_restarts_total", reason="exit") == 1
    # New clients reach both workers again; the registration never left ZooKeeper.
    fresh = open_connections(agent.listener_ports[0], 8)
    assert all(echo_lines(fresh, "again"))
    assert kz.exists(node) is not None
    for sock in connections + fresh:
        sock.close()


def test_sigterm_drains_every_worker_and_deregisters(
    zookeeper: ZooKeeperServer,
    kz: KazooClient,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    root = f"/w{uuid.uuid4().hex}"
    (echo,) = upstream_factory("e0")
    agent = agent_factory(workers_config(zookeeper, root, [echo.port], web))
    with agent.client() as client:
        assert (
            client.put(
                "/v1/registrations/orders/orders-1", json={"host": "10.2.0.1", "port": 8080}
            ).status_code
            == 201
        )
    pids = worker_pids(agent)
    agent.process.send_signal(signal.SIGTERM)
    assert agent.wait_exit(30) == 0
    assert kz.exists(f"{root}/plain/orders/orders-1") is None
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    output = agent.output()
    assert output.count("draining") >= 3  # the supervisor and each worker
    assert "worker exited" in output


def test_a_killed_supervisor_takes_its_workers(
    zookeeper: ZooKeeperServer,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    (echo,) = upstream_factory("e0")
    agent = agent_factory(workers_config(zookeeper, f"/w{uuid.uuid4().hex}", [echo.port], web))
    pids = list(worker_pids(agent).values())
    fds = [os.pidfd_open(pid) for pid in pids]
    agent.process.kill()
    # PR_SET_PDEATHSIG: the zygote dies with the supervisor, the workers with the zygote.
    import select

    for fd in fds:
        readable, _, _ = select.select([fd], [], [], 15)
        assert readable, "a worker outlived its supervisor"
        os.close(fd)


def test_rules_changed_at_run_time_apply_on_every_worker(
    zookeeper: ZooKeeperServer,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    (echo,) = upstream_factory("e0")
    config = workers_config(
        zookeeper,
        f"/w{uuid.uuid4().hex}",
        [echo.port],
        web,
        governance={"source": {"registry": "local", "data_id": "rules"}},
        config_api={"allow_writes": True},
    )
    agent = agent_factory(config)
    rules = "rules:\n  - match: {to: web}\n    fault: {abort: {percent: 100, status: 418}}\n"
    with agent.client() as client:
        response = client.put("/v1/config/meshagent/rules", json={"content": rules})
        assert response.status_code in (200, 201), response.text
    http_port = agent.listener_ports[1]

    def all_refused() -> bool:
        # New connections each time: the kernel spreads them over both workers.
        statuses = set()
        for _ in range(16):
            with httpx.Client(timeout=5) as client:
                statuses.add(client.get(f"http://{LOOPBACK}:{http_port}/index.txt").status_code)
        return statuses == {418}

    wait_until(all_refused, 15, what="the rule in force on every worker")
    for worker in ("0", "1"):
        assert agent.metric("meshagent_listener_connections_total", listener="http", worker=worker)


def test_a_rate_limit_follows_the_calls_to_the_worker_that_has_them(
    zookeeper: ZooKeeperServer,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
) -> None:
    (echo,) = upstream_factory("e0")
    limit = {"match": {"to": "web"}, "rate_limit": {"per_s": 20, "burst": 1}}
    config = workers_config(
        zookeeper,
        f"/w{uuid.uuid4().hex}",
        [echo.port],
        web,
        governance={"rules": {"rules": [limit]}},
    )
    agent = agent_factory(config)
    http_port = agent.listener_ports[1]
    refusals: list[str] = []

    def refused_at(rate: str) -> bool:
        # One keep-alive connection: its calls all meet one worker's part of the limit,
        # which the worker's 429 names. It starts at 10/s (half of 20) and must grow
        # to 19/s (all but the other worker's floor) once the calls are reported.
        for _ in range(50):
            response = client.get(f"http://{LOOPBACK}:{http_port}/index.txt")
            if response.status_code == 429:
                refusals.append(response.text)
                if f"rate limit of {rate}/s" in response.text:
                    return True
        return False

    with httpx.Client(timeout=5) as client:
        assert refused_at("10")
        wait_until(lambda: refused_at("19"), 20, what="the busy worker's share grown to 0.95")
    serving = {
        worker
        for worker in ("0", "1")
        if agent.metric("meshagent_governance_share", rule="0", worker=worker) > 0.9
    }
    assert len(serving) == 1
    (other,) = {"0", "1"} - serving
    assert agent.metric("meshagent_governance_share", rule="0", worker=other) == pytest.approx(0.05)


CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


@pytest.mark.parametrize(
    ("limit", "expected"),
    [("taskset 0", 1), ("taskset 0,1", 2), ("quota 1.5", 2), ("quota 0.5", 1)],
)
def test_workers_auto_follows_the_cpus_this_process_may_use(
    limit: str,
    expected: int,
    zookeeper: ZooKeeperServer,
    upstream_factory: Callable[..., list[Upstream]],
    web: int,
    tmp_path: Path,
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this test needs 2 CPUs (the suite's machine has them)")
    kind, value = limit.split()
    wrap: tuple[str, ...]
    group: Path | None = None
    if kind == "taskset":
        wrap = (require("taskset"), "-c", value)
    else:
        # A cgroup CPU quota, as a container limit sets it (cgroup v1 here, v2 read alike:
        # tests/unit/runtime/test_cpus.py). The agent starts inside the group.
        cgroup_root = CGROUP_V1_CPU if CGROUP_V1_CPU.is_dir() else Path("/sys/fs/cgroup")
        group = cgroup_root / f"meshagent-test-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        quota = int(float(value) * 100_000)
        if (group / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} 100000")
        join = (
            "import os, sys; "
            f"open({str(group / 'cgroup.procs')!r}, 'w').write(str(os.getpid())); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        wrap = (sys.executable, "-c", join)
    (echo,) = upstream_factory("e0")
    config = workers_config(zookeeper, f"/w{uuid.uuid4().hex}", [echo.port], web, workers="auto")
    agent = start_agent(tmp_path, config, wrap=wrap)
    try:
        agent.wait_ready()
        # One CPU: one process, as workers: 1 (no workers listed).
        assert len(worker_pids(agent)) == (expected if expected > 1 else 0)
        if expected > 1:
            assert f"workers: {expected}" in agent.output()
    finally:
        agent.stop()
        if group is not None:
            group.rmdir()
