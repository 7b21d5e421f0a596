"""Active health checking: one scheduler probes every cluster's hosts on its interval with
jitter (so a fleet of sidecars does not probe in lockstep) and feeds the verdicts to the
clusters, whose thresholds decide."""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

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


# Probes due within this long of the earliest run in the same wakeup: an idle agent wakes
# once per round for all its services, not once per service (each wakeup of an idle
# Python process costs hundreds of microseconds of cold caches; issue 20, idle cost).
COALESCE_S = 1.0


@dataclass(eq=False)
class _Checked:
    cluster: Cluster
    checker: HealthChecker
    config: HealthCheckConfig
    due: float = 0.0  # loop time of the next round; 0: at once


class HealthScheduler:
    """Every cluster's active checks, on one timer.

    Each cluster is probed every ``interval_s`` plus a random jitter (so a fleet of
    sidecars does not probe in lockstep); within one agent, rounds due close together
    share a wakeup. Add clusters before :meth:`run`."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._checked: list[_Checked] = []
        self.wakeups = 0  # rounds run, for the tests that count them

    def add(self, cluster: Cluster, checker: HealthChecker, config: HealthCheckConfig) -> None:
        self._checked.append(_Checked(cluster, checker, config))

    def __len__(self) -> int:
        return len(self._checked)

    async def run(self) -> None:
        """Probe until cancelled."""
        loop = asyncio.get_running_loop()
        while self._checked:
            now = loop.time()
            earliest = min(checked.due for checked in self._checked)
            if earliest > now:
                await asyncio.sleep(earliest - now)
                now = loop.time()
            due = [checked for checked in self._checked if checked.due <= now + COALESCE_S]
            self.wakeups += 1
            await asyncio.gather(*(self._round(checked) for checked in due))
            finished = loop.time()
            for checked in due:
                jitter = self._rng.uniform(0, checked.config.jitter_s)
                checked.due = finished + checked.config.interval_s + jitter

    @staticmethod
    async def _round(checked: _Checked) -> None:
        hosts = checked.cluster.hosts()
        if not hosts:
            return
        results = await asyncio.gather(
            *(probe(checked.checker, host, checked.config.timeout_s) for host in hosts)
        )
        for host, ok in zip(hosts, results, strict=True):
            checked.cluster.report_probe(host, ok)
