from __future__ import annotations

import asyncio
import random

from agent.cluster.cluster import Cluster, HealthPolicy
from agent.cluster.host import Host
from agent.cluster.lb import RoundRobin
from agent.config import HealthCheckConfig
from agent.discovery.types import Instance, Reset
from agent.runtime.health import HealthChecker, HealthScheduler, probe
from agent.runtime.tcp_health import TcpConnectChecker
from tests.fixtures.net import free_port


class Hangs(HealthChecker):
    async def check(self, host: Host) -> bool:
        await asyncio.Event().wait()
        return True


class Breaks(HealthChecker):
    async def check(self, host: Host) -> bool:
        raise RuntimeError("bug in a checker")


def host(port: int) -> Host:
    return Host(Instance(f"127.0.0.1:{port}", "127.0.0.1", port))


async def test_tcp_check_passes_on_a_listening_port_and_fails_on_a_closed_one() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await probe(TcpConnectChecker(), host(port), 1.0)
    server.close()
    await server.wait_closed()
    assert not await probe(TcpConnectChecker(), host(free_port()), 1.0)


async def test_a_hanging_or_broken_checker_counts_as_a_failed_probe() -> None:
    assert not await probe(Hangs(), host(1), 0.05)
    assert not await probe(Breaks(), host(1), 1.0)


class Counts(HealthChecker):
    """Fails, recording the scheduler's wakeup each probe ran in; done after ``until``."""

    def __init__(self, scheduler: HealthScheduler, until: int) -> None:
        self.scheduler = scheduler
        self.wakeups: list[int] = []
        self.until = until
        self.done = asyncio.Event()

    async def check(self, host: Host) -> bool:
        self.wakeups.append(self.scheduler.wakeups)
        if len(self.wakeups) >= self.until:
            self.done.set()
        return False


async def test_one_scheduler_probes_every_cluster_in_shared_wakeups() -> None:
    rounds = 3
    scheduler = HealthScheduler(random.Random(7))
    checkers = [Counts(scheduler, rounds) for _ in range(4)]
    clusters = [Cluster(f"svc{i}", RoundRobin(), health=HealthPolicy(1, 1)) for i in range(4)]
    config = HealthCheckConfig(interval_s=0.02, jitter_s=0.01, timeout_s=1.0)
    for i, (cluster, checker) in enumerate(zip(clusters, checkers, strict=True)):
        cluster.apply(Reset(1, (Instance(f"h{i}", "127.0.0.1", 1000 + i),)))
        scheduler.add(cluster, checker, config)
    running = asyncio.create_task(scheduler.run())
    try:
        for checker in checkers:
            await asyncio.wait_for(checker.done.wait(), 5)
    finally:
        running.cancel()
    # Four services, one wakeup per round: each round probed all of them at once.
    assert scheduler.wakeups == rounds
    assert all(checker.wakeups == [1, 2, 3] for checker in checkers)
    # The verdicts reached the clusters (one failed probe marks a host unhealthy here).
    assert not any(host.healthy for cluster in clusters for host in cluster.hosts())
