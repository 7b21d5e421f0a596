"""Active health checking: one task per cluster probes every host on an interval with
jitter (so a fleet of sidecars does not probe in lockstep) and feeds the verdicts to the
cluster, whose thresholds decide."""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.config import HealthCheckConfig

log = logging.getLogger(__name__)


class HealthChecker(ABC):
    """A health checker plugin's product. ``check`` may raise or hang: the runner applies
    the timeout and counts either as a failed probe."""

    @abstractmethod
    async def check(self, host: Host) -> bool: ...


async def probe(checker: HealthChecker, host: Host, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            return await checker.check(host)
    except (OSError, TimeoutError):
        return False
    except Exception:  # a broken checker must not stop the loop; it counts as a failure
        log.exception("health checker raised", extra={"endpoint": host.id})
        return False


async def run_health_checks(
    cluster: Cluster,
    checker: HealthChecker,
    config: HealthCheckConfig,
    rng: random.Random | None = None,
) -> None:
    """Probe until cancelled."""
    rng = rng or random.Random()
    while True:
        hosts = cluster.hosts()
        if hosts:
            results = await asyncio.gather(
                *(probe(checker, host, config.timeout_s) for host in hosts)
            )
            for host, ok in zip(hosts, results, strict=True):
                cluster.report_probe(host, ok)
        await asyncio.sleep(config.interval_s + rng.uniform(0, config.jitter_s))
