"""Per-cluster circuit breaking, after Envoy's: limits on connections, pending and
in-flight requests; past one the call fails fast (no queueing, no timer).

The counts are kept by whoever sees the events (the governance policy counts calls, a
protocol's pool its connections); this module only holds them and answers "over?".
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.governance.rules import BreakerLimits


@dataclass(slots=True)
class ClusterLoad:
    """What is open toward one cluster now, and how often a limit refused a call."""

    in_flight: int = 0  # admitted calls not finished
    pending: int = 0  # admitted calls that have not begun an attempt (waiting for a host)
    connections: int = 0  # open upstream connections (counted by the protocol's pool)
    overflows: int = 0


def over_limit(limits: BreakerLimits | None, load: ClusterLoad) -> str | None:
    """Why a new call may not start now, or None."""
    if limits is None:
        return None
    if limits.max_in_flight is not None and load.in_flight >= limits.max_in_flight:
        return f"{load.in_flight} calls in flight (max_in_flight {limits.max_in_flight})"
    if limits.max_pending is not None and load.pending >= limits.max_pending:
        return f"{load.pending} calls pending (max_pending {limits.max_pending})"
    return None


def connection_allowed(limits: BreakerLimits | None, load: ClusterLoad) -> bool:
    """May the pool open one more connection to this cluster?"""
    if limits is None or limits.max_connections is None:
        return True
    return load.connections < limits.max_connections
