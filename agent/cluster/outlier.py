"""Passive outlier detection after Envoy's consecutive-failure ejection.

N consecutive failures eject a host for ``base_ejection * times_ejected`` (capped); never
more than ``max_ejection_percent`` of the cluster, but at least one host may always be
ejected (Envoy's rule). An ejected host returns by itself when its time is up, and a
success resets its count, so one failed request never blacklists a provider for good.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agent.cluster.host import Host


@dataclass(frozen=True)
class OutlierPolicy:
    enabled: bool = True
    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: int = 10


def record_success(host: Host) -> None:
    host.consecutive_failures = 0


def record_failure(
    host: Host, hosts: Sequence[Host], policy: OutlierPolicy, now: float
) -> float | None:
    """Count a failure; eject when the policy says so. Returns the ejection's end, if any."""
    host.consecutive_failures += 1
    if not policy.enabled or host.ejected(now):
        return None
    if host.consecutive_failures < policy.consecutive_failures:
        return None
    ejected = sum(1 for other in hosts if other.ejected(now))
    allowed = max(1, math.floor(len(hosts) * policy.max_ejection_percent / 100))
    if ejected >= allowed:
        return None
    host.times_ejected += 1
    host.stats.ejections += 1
    host.consecutive_failures = 0
    duration = min(policy.base_ejection_s * host.times_ejected, policy.max_ejection_s)
    host.ejected_until = now + duration
    return host.ejected_until
