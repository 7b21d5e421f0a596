"""Registry faults with the real Java Dubbo 3.3 provider and a real ZooKeeper.

Each test has a ZooKeeper of its own (``zookeeper_factory``): stopping or restarting it, or
waiting for a session to expire in it, disturbs no other module.

- A provider SIGKILLed and restarted on the same ip:port leaves its old ephemeral node until
  its session expires; the agent shows the newest registration all along, and the old node's
  deletion (a stale remove) takes nothing away.
- ZooKeeper down: the agent keeps its last known endpoints and keeps calling them.
- The agent's own registrations are ephemeral nodes of its session: a SIGKILLed agent's go
  when its session times out, a SIGTERMed agent's at once (drain deregisters, then the session
  is closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kazoo.client import KazooClient

from plugins.zookeeper.dubbo_url import parse_node_name
from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.java_dubbo import INTERFACE, DubboProvider
from tests.fixtures.processes import free_port, wait_until
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.interop.dubbo_invoke_support import INVOKE

pytestmark = pytest.mark.integration

PROVIDERS = f"/dubbo/{INTERFACE}/providers"


# helpers -----------------------------------------------------------------------------------


@contextmanager
def kazoo(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    """A test-side ZooKeeper client (its own session, a long one)."""
    client = KazooClient(hosts=zk.hosts, timeout=15)
    client.start(timeout=15)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def provider_nodes(client: KazooClient) -> dict[str, int]:
    """Provider node name → czxid, for the nodes registered under the interface now."""
    if client.exists(PROVIDERS) is None:
        return {}
    nodes = {}
    for name in client.get_children(PROVIDERS):
        stat = client.exists(f"{PROVIDERS}/{name}")
        if stat is not None:
            nodes[name] = stat.czxid
    return nodes


def zookeeper_registry(zk: ZooKeeperServer, **config: Any) -> dict[str, Any]:
    return {
        "name": "zk",
        "type": "zookeeper",
        "config": {
            "hosts": zk.hosts,
            "default_mode": "interface",
            "reconnect": {"base_s": 0.05, "max_s": 0.5},
            **config,
        },
    }


def dubbo_consumer_config(zk: ZooKeeperServer, **registry: Any) -> dict[str, Any]:
    """An agent that calls the GreetingService found in ``zk`` (interface level)."""
    return {
        "log_level": "INFO",
        "registries": [zookeeper_registry(zk, **registry)],
        "services": [
            {
                "name": INTERFACE,
                "registry": "zk",
                "protocol": "dubbo",
                # Membership is the registry's alone here: no probe ejects or restores.
                "health": {"enabled": False},
            }
        ],
        "drain_timeout_s": 2,
    }


def whoami(agent: AgentProcess) -> tuple[str, str]:
    """Call ``whoami`` through the agent: (provider id, endpoint that answered)."""
    with agent.client() as client:
        response = client.post(f"{INVOKE}/whoami")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["result"], body["endpoint"]


class EndpointWatcher:
    """Polls the agent's cluster in the background; records every endpoint set it sees."""

    def __init__(self, agent: AgentProcess, service: str) -> None:
        self.agent = agent
        self.service = service
        self.seen: list[dict[str, int]] = []  # endpoint id → revision, one entry per poll
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.agent.base_url, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    clusters = client.get("/v1/clusters").json()
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                else:
                    cluster = next(c for c in clusters if c["name"] == self.service)
                    self.seen.append({e["id"]: e["revision"] for e in cluster["endpoints"]})
                self._stop.wait(0.02)  # the poll interval, not a synchronisation

    def __enter__(self) -> EndpointWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# 1. stale event ----------------------------------------------------------------------------


def test_restarted_provider_survives_its_old_node_expiring(
    zookeeper_factory: Callable[..., ZooKeeperServer],
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    zk = zookeeper_factory()
    port = free_port()
    # The provider's ZooKeeper session ("session", ms, read by Dubbo's Curator5ZookeeperClient)
    # must outlive the restart below, so both nodes exist at once; short enough to wait for.
    # A JVM + Dubbo start takes 4-6 s on a busy 2-CPU machine: 12 s leaves twice that.
    session_ms = 12_000
    registry = f"{zk.url}?session={session_ms}"
    old = dubbo_provider_factory(
        registry=registry, port=port, provider_id="old", register_mode="interface"
    )
    agent = start_agent(tmp_path / "agent", dubbo_consumer_config(zk), name="agent-stale")
    try:
        agent.wait_endpoints(INTERFACE, 1)
        assert whoami(agent) == ("old", old.address)

        with kazoo(zk) as observer:
            (old_node, old_czxid), *others = provider_nodes(observer).items()
            assert not others
            assert agent.endpoints(INTERFACE)[0]["revision"] == old_czxid

            with EndpointWatcher(agent, INTERFACE) as watcher:
                old.kill()
                killed_at = time.monotonic()
                new = dubbo_provider_factory(
                    registry=registry, port=port, provider_id="new", register_mode="interface"
                )
                assert new.address == old.address
                nodes = provider_nodes(observer)
                # Both registrations at once: the old node waits for its session to expire.
                assert old_node in nodes, (
                    f"the old node expired before the new provider registered "
                    f"({time.monotonic() - killed_at:.1f}s); raise session_ms"
                )
                assert len(nodes) == 2, nodes
                (new_czxid,) = (czxid for name, czxid in nodes.items() if name != old_node)
                assert new_czxid > old_czxid
                assert (
                    parse_node_name(next(n for n in nodes if n != old_node)).address == old.address
                )

                # The agent switches to the newest registration while the old one is there.
                agent.process.wait_for(
                    lambda: [e["revision"] for e in agent.endpoints(INTERFACE)] == [new_czxid],
                    10,
                    what="the agent to show the new registration",
                )
                assert old_node in provider_nodes(observer)

                # The old session expires: its node goes (a remove of the old registration).
                wait_until(
                    lambda: old_node not in provider_nodes(observer),
                    session_ms / 1000 + 5,
                    what="the killed provider's node to expire",
                )
                assert set(provider_nodes(observer)) == {n for n in nodes if n != old_node}
                # Whatever the agent does with the deletion, it has done it within a few polls.
                seen_after = len(watcher.seen)
                wait_until(
                    lambda: len(watcher.seen) >= seen_after + 5, 10, what="more endpoint polls"
                )

        assert not watcher.errors, watcher.errors[:3]
        assert watcher.seen, "the watcher saw nothing"
        # Never without the endpoint, never two of it; the revision only ever moved forward.
        assert all(list(s) == [old.address] for s in watcher.seen), [
            s for s in watcher.seen if list(s) != [old.address]
        ][:3]
        revisions = [s[old.address] for s in watcher.seen]
        assert revisions == sorted(revisions)
        assert revisions[-1] == new_czxid
        assert set(revisions) <= {old_czxid, new_czxid}
        for _ in range(3):
            assert whoami(agent) == ("new", new.address)
        # Between the polls too: the cluster replaced the host, it never removed it.
        assert "endpoint removed" not in agent.process.output()
    finally:
        agent.stop()


# 2. cache on registry loss -----------------------------------------------------------------


def test_zookeeper_down_keeps_endpoints_and_calls(
    zookeeper_factory: Callable[..., ZooKeeperServer],
    dubbo_provider_factory: Callable[..., DubboProvider],
    tmp_path: Path,
) -> None:
    zk = zookeeper_factory()
    first = dubbo_provider_factory(registry=zk.url, provider_id="first", register_mode="interface")
    session_s = 2.0
    agent = start_agent(
        tmp_path / "agent",
        dubbo_consumer_config(zk, session_timeout_s=session_s),
        name="agent-cache",
    )
    try:
        agent.wait_endpoints(INTERFACE, 1)
        assert agent.cluster(INTERFACE)["registry"]["connected"] is True
        assert whoami(agent) == ("first", first.address)

        stopping_at = time.time()
        zk.stop()
        registry = agent.process.wait_for(
            lambda: (r := agent.cluster(INTERFACE)["registry"])["connected"] is False and r,
            10,
            what="the agent to see ZooKeeper gone",
        )
        assert registry["name"] == "zk"
        assert registry["since"] is not None
        # "since" is when the connection went, not when we looked (seconds, epoch).
        assert stopping_at <= registry["since"] <= time.time()

        # Calls keep going to the last known endpoint, past the agent's session timeout.
        down_at = time.monotonic()
        calls = 0
        while time.monotonic() - down_at < session_s + 1 or calls < 5:
            assert whoami(agent) == ("first", first.address)
            calls += 1
            cluster = agent.cluster(INTERFACE)
            assert [e["id"] for e in cluster["endpoints"]] == [first.address]
            assert cluster["registry"]["connected"] is False
            with agent.client() as client:
                ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text

        zk.start()
        agent.process.wait_for(
            lambda: agent.cluster(INTERFACE)["registry"]["connected"] is True,
            30,
            what="the agent to reconnect to ZooKeeper",
        )
        assert [e["id"] for e in agent.endpoints(INTERFACE)] == [first.address]
        second = dubbo_provider_factory(
            registry=zk.url, provider_id="second", register_mode="interface"
        )
        agent.process.wait_for(
            lambda: (
                {e["id"] for e in agent.endpoints(INTERFACE)} == {first.address, second.address}
            ),
            15,
            what="the agent to see the provider added after the outage",
        )
        answered = {whoami(agent)[0] for _ in range(6)}
        assert answered == {"first", "second"}
    finally:
        agent.stop()


# 3. the agent's own registrations ----------------------------------------------------------

ORDERS = "orders"


def registering_agent(zk: ZooKeeperServer, workdir: Path, session_s: float) -> AgentProcess:
    config = {
        "log_level": "INFO",
        "registries": [zookeeper_registry(zk, session_timeout_s=session_s)],
        "services": [
            {
                "name": INTERFACE,
                "registry": "zk",
                "protocol": "dubbo",
                "health": {"enabled": False},
            },
            {"name": ORDERS, "registry": "zk", "protocol": "tcp", "health": {"enabled": False}},
        ],
        "drain_timeout_s": 2,
    }
    return start_agent(workdir, config, name=workdir.name)


def register_both(agent: AgentProcess, port: int) -> None:
    with agent.client() as client:
        response = client.put(
            f"/v1/registrations/{INTERFACE}/local",
            json={"host": "127.0.0.1", "port": port, "metadata": {"methods": "whoami"}},
        )
        assert response.status_code == 201, response.text
        response = client.put(
            f"/v1/registrations/{ORDERS}/o-1", json={"host": "127.0.0.1", "port": port + 1}
        )
        assert response.status_code == 201, response.text


def agent_nodes(client: KazooClient, port: int) -> dict[str, int]:
    """The agent's registrations in ZooKeeper now: path → ephemeral owner (session)."""
    found = {}
    for name in provider_nodes(client):
        if parse_node_name(name).port == port:
            path = f"{PROVIDERS}/{name}"
            stat = client.exists(path)
            if stat is not None:
                found[path] = stat.ephemeralOwner
    plain = f"/meshagent/services/{ORDERS}/o-1"
    stat = client.exists(plain)
    if stat is not None:
        found[plain] = stat.ephemeralOwner
    return found


def test_killed_agent_registrations_vanish_within_the_session_timeout(
    zookeeper_factory: Callable[..., ZooKeeperServer], tmp_path: Path
) -> None:
    zk = zookeeper_factory()
    session_s = 2.0
    port = free_port()
    agent = registering_agent(zk, tmp_path / "agent-killed", session_s)
    with kazoo(zk) as observer:
        try:
            register_both(agent, port)
            nodes = wait_until(
                lambda: len(n := agent_nodes(observer, port)) == 2 and n,
                10,
                what="both registrations in ZooKeeper",
            )
            # Ephemeral nodes of the agent's own session (its status names the session).
            (owner,) = set(nodes.values())
            (status,) = agent.get("/v1/registries")
            assert status["connected"] and status["detail"] == f"session 0x{owner:x}"
            agent.process.kill()
            killed_at = time.monotonic()
            # Nobody withdrew them: they are there until the server expires the session.
            assert agent_nodes(observer, port) == nodes
            wait_until(
                lambda: not agent_nodes(observer, port),
                session_s + 5,
                what="the killed agent's nodes to expire",
            )
            # The server expires a session within its timeout plus a tick (200 ms) or two.
            assert time.monotonic() - killed_at < session_s + 2
        finally:
            agent.stop()


def test_terminated_agent_withdraws_its_registrations_at_once(
    zookeeper_factory: Callable[..., ZooKeeperServer], tmp_path: Path
) -> None:
    zk = zookeeper_factory()
    session_s = 20.0  # long: what goes, goes because the agent withdrew it, not by expiry
    port = free_port()
    agent = registering_agent(zk, tmp_path / "agent-terminated", session_s)
    with kazoo(zk) as observer:
        try:
            register_both(agent, port)
            wait_until(
                lambda: len(agent_nodes(observer, port)) == 2,
                10,
                what="both registrations in ZooKeeper",
            )
            terminated_at = time.monotonic()
            code = agent.process.stop()
            assert code == 0, agent.process.output()[-2000:]
            assert agent_nodes(observer, port) == {}
            assert time.monotonic() - terminated_at < 5
        finally:
            agent.stop()
