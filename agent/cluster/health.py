"""The active health verdict of a host: thresholds decide, one probe never flips it alone
(unless the threshold is 1). The probes themselves are I/O and live in the runtime."""

from __future__ import annotations

from agent.cluster.host import Host


def record_probe(host: Host, ok: bool, healthy_threshold: int, unhealthy_threshold: int) -> bool:
    """Apply one probe result; return True when the host's ``healthy`` flag flipped."""
    if ok == host.healthy:
        host.health_streak = 0
        return False
    host.health_streak += 1
    needed = healthy_threshold if ok else unhealthy_threshold
    if host.health_streak < needed:
        return False
    host.healthy = ok
    host.health_streak = 0
    return True
