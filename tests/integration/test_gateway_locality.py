"""Locality-aware failover through gateways, as real processes (docs/gateway.md).

Data center A: five TCP providers (tests/fixtures/tcp_upstream.py, each answering
``NAME:line``) and the app's agent (``locality.dc: a``, active TCP health checks), whose
``orders`` also has gateway A's import of B's ``orders`` (labelled ``dc: b``). Data center
B: one provider behind gateway B. While A's providers are healthy every connection stays
in A; with four of the five down the local level's health is 1.4 x 1/5 = 28%, so 28% of
the connections stay and 72% go to B, and when they are back every connection is A's again.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures.agent_process import AgentProcess, start_agent
from tests.fixtures.gateways import start_gateways
from tests.fixtures.processes import LOOPBACK, free_port, wait_until
from tests.fixtures.upstreams import Upstream, start_upstreams

pytestmark = pytest.mark.integration


@dataclass
class World:
    app: AgentProcess
    local: list[Upstream]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("gateway-locality")
    upstreams = start_upstreams(["a0", "a1", "a2", "a3", "a4", "b0"], workdir)
    local, remote = upstreams[:5], upstreams[5]
    try:
        registry = {"orders": [{"host": LOOPBACK, "port": remote.port}]}
        gateways = start_gateways(
            workdir,
            [{"name": "local", "type": "local", "config": {"services": registry}}],
            [("orders", "tcp")],
        )
        try:
            instances = [
                {"host": LOOPBACK, "port": u.port, "metadata": {"dc": "a"}} for u in local
            ] + [{"host": LOOPBACK, "port": gateways.imports["orders"], "metadata": {"dc": "b"}}]
            app = start_agent(
                workdir / "app-a",
                {
                    "locality": {"dc": "a"},
                    "registries": [
                        {
                            "name": "local",
                            "type": "local",
                            "config": {"services": {"orders": instances}},
                        }
                    ],
                    "services": [
                        {
                            "name": "orders",
                            "protocol": "tcp",
                            "health": {
                                "checker": "tcp",
                                "interval_s": 0.2,
                                "timeout_s": 1,
                                "jitter_s": 0,
                                "healthy_threshold": 1,
                                "unhealthy_threshold": 1,
                            },
                            "outlier": {"enabled": False},
                        }
                    ],
                    "listeners": [{"host": LOOPBACK, "port": free_port(), "service": "orders"}],
                },
                name="app-a",
            )
            try:
                yield World(app, local)
            finally:
                app.stop()
        finally:
            gateways.stop()
    finally:
        for upstream in upstreams:
            upstream.stop()


def levels(app: AgentProcess) -> list[tuple[str, int, float]]:
    with app.client() as api:
        (orders,) = api.get("/v1/clusters").json()
    return [(v["locality"], v["available"], v["load"]) for v in orders["levels"]]


def served_by(app: AgentProcess, connections: int) -> Counter[str]:
    """Which provider answered each of ``connections`` new connections to the listener."""
    names = Counter[str]()
    for i in range(connections):
        with socket.create_connection((LOOPBACK, app.listener_port()), timeout=10) as sock:
            sock.sendall(f"call {i}\n".encode())
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        names[answer.decode().split(":", 1)[0]] += 1
    return names


def test_traffic_spills_to_b_in_proportion_and_comes_back(world: World) -> None:
    app = world.app
    wait_until(
        lambda: levels(app) == [("zone", 5, 1.0), ("remote", 1, 0.0)] or None,
        30,
        what="every level healthy",
    )
    healthy = served_by(app, 20)
    assert set(healthy) <= {"a0", "a1", "a2", "a3", "a4"} and sum(healthy.values()) == 20

    for upstream in world.local[1:]:  # 80% of A's providers go down
        upstream.kill()
    wait_until(
        lambda: levels(app) == [("zone", 1, 0.28), ("remote", 1, 0.72)] or None,
        30,
        what=f"the spill (levels now {json.dumps(levels(app))})",
    )
    spilled = served_by(app, 100)
    assert set(spilled) == {"a0", "b0"}, spilled
    assert abs(spilled["a0"] - 28) <= 3 and abs(spilled["b0"] - 72) <= 3, spilled

    for upstream in world.local[1:]:  # back on their ports
        upstream.start()
    wait_until(
        lambda: levels(app) == [("zone", 5, 1.0), ("remote", 1, 0.0)] or None,
        30,
        what="the recovery",
    )
    recovered = served_by(app, 20)
    assert "b0" not in recovered and sum(recovered.values()) == 20, recovered
