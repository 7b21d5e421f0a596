"""Locality-aware balancing: priority levels by distance, after Envoy's priority load.

An agent that knows where it runs (``locality: {dc, region, zone}``) sorts a cluster's
endpoints into four priority levels by the widest place it shares with each, read from the
endpoint's registry metadata (labels ``dc``, ``region``, ``zone``):

    0 zone    the agent's zone
    1 region  the agent's region, another zone
    2 dc      the agent's data center, another region
    3 remote  another data center (reached through a gateway)

A label the endpoint lacks, or the agent lacks, counts as the agent's own: a registry
without locality labels puts every endpoint in level 0, which is plain balancing.

Traffic goes to the levels as Envoy distributes it over priorities: a level's *health* is
``min(1, overprovisioning_factor * available / endpoints)`` (0 for an empty level); level 0
takes its health, each next level the smaller of its health and what is left, and when
the healths add up to less than 1 the loads are scaled to add up to 1. So with the default
factor 1.4 the local zone keeps all traffic while 72% or more of it is available, and
spills to the next level in proportion as it degrades, not only once it is empty. Within a
level the cluster's own policy (round robin, least request, ...) chooses. The level of
each call is chosen by smooth weighted round robin over the loads (nginx's), so the split
is exact over any window, not only on average.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, LoadBalancer, PickContext

LEVEL_NAMES = ("zone", "region", "dc", "remote")
REMOTE = 3
# Loads are kept in parts per LOAD_UNIT for the round robin between levels.
LOAD_UNIT = 10_000
DEFAULT_OVERPROVISIONING = 1.4


@dataclass(frozen=True)
class Locality:
    """Where an agent runs; empty parts are unknown."""

    dc: str = ""
    region: str = ""
    zone: str = ""

    def level_of(self, metadata: Mapping[str, str]) -> int:
        """The priority level of an endpoint with these registry labels (0 nearest)."""
        if _differs(self.dc, metadata.get("dc", "")):
            return REMOTE
        if _differs(self.region, metadata.get("region", "")):
            return 2
        if _differs(self.zone, metadata.get("zone", "")):
            return 1
        return 0


def _differs(own: str, other: str) -> bool:
    return bool(own) and bool(other) and own != other


def priority_loads(levels: Sequence[tuple[int, int]], overprovisioning: float) -> list[float]:
    """Each level's share of traffic, given (endpoints, available) per level, nearest
    first (Envoy's priority load). All zero when no level has an available endpoint."""
    healths = [
        min(1.0, overprovisioning * available / total) if total else 0.0
        for total, available in levels
    ]
    total_health = sum(healths)
    if total_health == 0:
        return [0.0] * len(levels)
    if total_health < 1:
        return [health / total_health for health in healths]
    loads: list[float] = []
    left = 1.0
    for health in healths:
        load = min(health, left)
        loads.append(load)
        left -= load
    return loads


class PriorityLevels:
    """A cluster's endpoints in priority levels, each level with its own balancer."""

    def __init__(
        self,
        locality: Locality,
        make_balancer: Callable[[], LoadBalancer],
        overprovisioning: float = DEFAULT_OVERPROVISIONING,
        cross_dc: bool = True,
    ) -> None:
        self.locality = locality
        self.overprovisioning = overprovisioning
        # False: endpoints in other data centers get no traffic at all (local only).
        self.cross_dc = cross_dc
        self._make_balancer = make_balancer
        self._balancers = [make_balancer() for _ in LEVEL_NAMES]
        self.loads: list[float] = [0.0] * len(LEVEL_NAMES)
        self.endpoints = [0] * len(LEVEL_NAMES)
        self.available = [0] * len(LEVEL_NAMES)
        self.panic = False
        # Smooth weighted round robin between the levels with a load.
        self._weights = [0] * len(LEVEL_NAMES)
        self._current = [0] * len(LEVEL_NAMES)
        self._levels: dict[str, int] = {}

    def set_balancer_factory(self, make_balancer: Callable[[], LoadBalancer]) -> None:
        self._make_balancer = make_balancer
        self._balancers = [make_balancer() for _ in LEVEL_NAMES]

    def level(self, host_id: str) -> int | None:
        """The level of an endpoint (None: unknown, or excluded as remote)."""
        return self._levels.get(host_id)

    def set_hosts(self, hosts: Sequence[Host], now: float) -> None:
        """Sort ``hosts`` into levels and share the traffic by their health. With no
        endpoint available anywhere (panic), every endpoint counts as available: the
        nearest level takes the traffic."""
        grouped: list[list[Host]] = [[] for _ in LEVEL_NAMES]
        levels: dict[str, int] = {}
        for host in hosts:
            level = self.locality.level_of(host.instance.metadata)
            if level == REMOTE and not self.cross_dc:
                continue
            grouped[level].append(host)
            levels[host.id] = level
        self._levels = levels
        usable = [[h for h in group if h.available(now)] for group in grouped]
        self.endpoints = [len(group) for group in grouped]
        self.available = [len(group) for group in usable]
        self.panic = bool(levels) and not any(usable)
        if self.panic:
            usable = grouped
        counts = [(len(group), len(chosen)) for group, chosen in zip(grouped, usable, strict=True)]
        self.loads = priority_loads(counts, self.overprovisioning)
        weights = [round(load * LOAD_UNIT) for load in self.loads]
        if weights != self._weights:
            self._weights = weights
            self._current = [0] * len(LEVEL_NAMES)
        for balancer, group in zip(self._balancers, usable, strict=True):
            balancer.set_hosts(group)

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None:
        first = self._next_level()
        if first < 0:
            return None
        host = self._balancers[first].choose(context)
        if host is not None:
            return host
        # Every endpoint of that level already tried (a retry): the others, nearest first.
        for level, balancer in enumerate(self._balancers):
            if level != first:
                host = balancer.choose(context)
                if host is not None:
                    return host
        return None

    def _next_level(self) -> int:
        """Smooth weighted round robin: each level gains its weight, the one ahead is
        chosen and pays the total back."""
        weights, current = self._weights, self._current
        best, total = -1, 0
        for level, weight in enumerate(weights):
            if weight == 0:
                continue
            total += weight
            current[level] += weight
            if best < 0 or current[level] > current[best]:
                best = level
        if best >= 0:
            current[best] -= total
        return best
