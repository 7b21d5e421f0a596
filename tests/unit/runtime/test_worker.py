"""The worker's side of the stream: an agent in the worker role applying what the
supervisor sends (the supervisor's side: test_supervisor.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.calls import Direction
from agent.config import parse_config
from agent.discovery.types import Add, Instance, Remove, Reset, frozen_mapping
from agent.runtime.agent import Agent, Role
from agent.runtime.heartbeat import Heartbeats
from agent.runtime.mesh_stream import StreamError, decode, update_to_json
from agent.runtime.worker import SupervisorLink

CONFIG = {
    "registries": [{"name": "zk", "type": "zookeeper", "config": {"hosts": "127.0.0.1:1"}}],
    "services": [
        {"name": "svc", "registry": "zk", "protocol": "tcp"},
        {"name": "other", "registry": "zk", "protocol": "tcp"},
    ],
    "governance": {
        "rules": {"rules": [{"match": {"to": "svc"}, "rate_limit": {"per_s": 100, "burst": 10}}]}
    },
}
A = Instance("10.0.0.1:80", "10.0.0.1", 80, 100, frozen_mapping(), 3)
B = Instance("10.0.0.2:80", "10.0.0.2", 80, 100, frozen_mapping(), 4)


@pytest.fixture
async def link() -> AsyncIterator[tuple[SupervisorLink, asyncio.StreamReader]]:
    mine, theirs = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=mine)
    reader, their_writer = await asyncio.open_unix_connection(sock=theirs)
    agent = Agent(parse_config(CONFIG), Role.WORKER, "1", workers=4)
    yield SupervisorLink(agent, writer, Heartbeats(2), 1), reader
    writer.close()
    their_writer.close()
    await agent.stop()


async def receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return decode(await reader.readline())


def test_a_worker_builds_no_registry_and_takes_its_share_of_rate_limits() -> None:
    agent = Agent(parse_config(CONFIG), Role.WORKER, "0", workers=4)
    assert agent.registries == {}  # never talks to ZooKeeper
    (compiled,) = agent.governance.table.compiled
    assert compiled.bucket is not None
    assert compiled.bucket.rate == 25 and compiled.bucket.capacity == 3


async def test_updates_and_states_apply_in_order(link: Any) -> None:
    worker, _ = link
    cluster = worker.agent.clusters["svc"]
    assert not cluster.initialized
    worker.apply({"t": "update", "c": "svc", "u": update_to_json(Reset(4, (A, B)))})
    worker.apply({"t": "update", "c": "svc", "u": update_to_json(Remove(5, A.id, 3))})
    assert [h.id for h in cluster.hosts()] == [B.id]
    until = time.monotonic() + 30
    worker.apply(
        {"t": "hosts", "c": "svc", "h": {B.id: [True, until, True], "gone": [False, 0, False]}}
    )
    host = cluster.get(B.id)
    assert host is not None and host.ejected(time.monotonic())
    assert host.consecutive_failures == 1
    worker.apply({"t": "update", "c": "svc", "u": update_to_json(Add(6, A))})
    assert cluster.available_count() == 1  # B ejected, A back
    # A cluster this worker does not have is ignored (configs match: a newer supervisor).
    worker.apply({"t": "update", "c": "nope", "u": update_to_json(Add(6, A))})


async def test_outcomes_go_to_the_supervisor_and_nothing_is_ejected_here(link: Any) -> None:
    worker, reader = link
    cluster = worker.agent.clusters["svc"]
    cluster.remote = worker
    worker.apply({"t": "update", "c": "svc", "u": update_to_json(Reset(4, (A,)))})
    host = cluster.get(A.id)
    for _ in range(20):
        cluster.report_failure(host)
    assert not host.ejected(time.monotonic())
    assert host.stats.failures == 20 and host.stats.requests == 20
    assert await receive(reader) == {"t": "fail", "c": "svc", "e": A.id}
    # Successes are reported only while the supervisor says a streak is open.
    cluster.report_success(host)
    worker.apply({"t": "hosts", "c": "svc", "h": {A.id: [True, 0, True]}})
    cluster.report_success(host)
    messages = [await receive(reader) for _ in range(20)]
    assert messages[-1] == {"t": "ok", "c": "svc", "e": A.id}


async def test_rules_settings_pings_and_metrics(link: Any) -> None:
    worker, reader = link
    agent = worker.agent
    worker.apply({"t": "rules", "rules": {"rules": []}, "source": "zk:rules"})
    assert agent.governance.table.compiled == []
    worker.apply({"t": "rules", "rules": None, "source": "static"})
    assert len(agent.governance.table.compiled) == 1
    worker.apply(
        {"t": "settings", "settings": {"services": {"svc": {"lb_policy": "least_request"}}}}
    )
    assert agent.clusters["svc"].lb_policy == "least_request"
    before = time.monotonic()
    worker.tick()
    assert worker.heartbeats.last(1) >= before and worker.heartbeats.last(0) == 0
    readiness = await receive(reader)
    assert readiness["t"] == "readiness" and readiness["ready"] is False
    assert readiness["why"] == [
        "listeners are not up",
        "service 'svc': no snapshot yet from registry 'zk'",
        "service 'other': no snapshot yet from registry 'zk'",
    ]
    worker.tick()  # unchanged: nothing sent
    worker.apply({"t": "metrics", "n": 8})
    metrics = await receive(reader)
    names = {family[0] for family in metrics["families"]}
    assert "meshagent_listener_connections" in names and "process_cpu_seconds" in names
    with pytest.raises(StreamError):
        worker.apply({"t": "surprise"})


async def test_snapshot_end_and_drain(link: Any) -> None:
    worker, _ = link
    worker.apply({"t": "ready"})
    worker.apply({"t": "drain"})
    assert worker.synced.is_set() and worker.drain_requested.is_set()


async def test_demand_is_reported_when_there_were_calls_and_shares_applied(link: Any) -> None:
    worker, reader = link
    agent = worker.agent
    worker.apply({"t": "rules", "rules": CONFIG["governance"]["rules"], "source": "k", "g": 4})
    (compiled,) = agent.governance.table.limited
    assert compiled.bucket is not None and compiled.bucket.rate == 25  # 1/4 to start
    worker.report_demand()
    agent.calls.start("test", Direction.INVOKE, agent.calls.outbound_route("svc", "m"), None, 5)
    worker.report_demand()
    assert await receive(reader) == {"t": "demand", "g": 4, "d": {"0": 1}}
    # Shares for the rule set in force resize its bucket; older ones are dropped.
    worker.apply({"t": "shares", "g": 3, "s": {"0": 0.9}})
    assert compiled.bucket.rate == 25
    worker.apply({"t": "shares", "g": 4, "s": {"0": 0.9}})
    assert compiled.bucket.rate == pytest.approx(90) and compiled.bucket.capacity == 9
    with pytest.raises(StreamError):
        worker.apply({"t": "shares", "g": 4, "s": [0.9]})
