"""Load-balancing policies, each a plugin of kind ``meshagent.lb_policies``.

A policy's plugin factory takes its validated config and returns a ``LoadBalancer`` class
instance maker: one balancer per cluster. The cluster hands the balancer its *available*
hosts whenever that set changes (``set_hosts``), so ``choose`` does no filtering beyond the
caller's ``exclude`` (hosts already tried for this request).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.cluster.host import Host
from agent.cluster.lb_config import ConsistentHashConfig
from agent.plugins import EmptyConfig, Plugin, PluginKind


@dataclass(frozen=True)
class PickContext:
    """What a policy may look at for one choice."""

    # Key for consistent hashing (the configured value for this request or connection).
    hash_key: bytes | None = None
    # Host ids already tried for this request: retries go elsewhere.
    exclude: frozenset[str] = field(default_factory=frozenset)


NO_CONTEXT = PickContext()


class LoadBalancer(ABC):
    @abstractmethod
    def set_hosts(self, hosts: Sequence[Host]) -> None:
        """The hosts that may take traffic now, in a stable order."""

    @abstractmethod
    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None: ...


LoadBalancerFactory = Callable[[], LoadBalancer]


def _first_not_excluded(hosts: Sequence[Host], start: int, exclude: frozenset[str]) -> Host | None:
    count = len(hosts)
    for offset in range(count):
        host = hosts[(start + offset) % count]
        if host.id not in exclude:
            return host
    return None


class RoundRobin(LoadBalancer):
    def __init__(self) -> None:
        self._hosts: Sequence[Host] = ()
        self._counter = itertools.count()

    def set_hosts(self, hosts: Sequence[Host]) -> None:
        self._hosts = tuple(hosts)

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None:
        hosts = self._hosts
        if not hosts:
            return None
        start = next(self._counter) % len(hosts)
        if not context.exclude:
            return hosts[start]
        return _first_not_excluded(hosts, start, context.exclude)


class WeightedRandom(LoadBalancer):
    """Picks proportionally to weight (Dubbo's default ``random`` balancing)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._hosts: tuple[Host, ...] = ()
        self._cumulative: list[int] = []
        self._random = rng or random.Random()

    def set_hosts(self, hosts: Sequence[Host]) -> None:
        # Weight 0 means "registered but takes no traffic" (Dubbo warm-up / drain).
        self._hosts = tuple(h for h in hosts if h.weight > 0)
        self._cumulative = list(itertools.accumulate(h.weight for h in self._hosts))

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None:
        if not self._hosts:
            return None
        point = self._random.randrange(self._cumulative[-1])
        index = bisect.bisect_right(self._cumulative, point)
        if not context.exclude:
            return self._hosts[index]
        return _first_not_excluded(self._hosts, index, context.exclude)


class LeastRequest(LoadBalancer):
    """Power of two choices on active requests, weighted as Envoy does (active / weight)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._hosts: tuple[Host, ...] = ()
        self._random = rng or random.Random()

    def set_hosts(self, hosts: Sequence[Host]) -> None:
        self._hosts = tuple(hosts)

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None:
        hosts = self._hosts
        if context.exclude:
            hosts = tuple(h for h in hosts if h.id not in context.exclude)
        if len(hosts) < 2:
            return hosts[0] if hosts else None
        first, second = self._random.sample(hosts, 2)
        return first if _load(first) <= _load(second) else second


def _load(host: Host) -> float:
    return (host.active_requests + 1) / max(host.weight, 1)


class ConsistentHash(LoadBalancer):
    """A ketama-style ring: adding or removing a host moves only that host's share of keys."""

    def __init__(self, config: ConsistentHashConfig) -> None:
        self.config = config
        self._points: list[int] = []
        self._owners: list[Host] = []
        self._members: frozenset[str] = frozenset()

    def set_hosts(self, hosts: Sequence[Host]) -> None:
        ring: list[tuple[int, Host]] = []
        for host in hosts:
            count = max(1, round(self.config.virtual_nodes * host.weight / 100))
            for replica in range(count):
                ring.append((_hash64(f"{host.id}#{replica}".encode()), host))
        ring.sort(key=lambda point: point[0])
        self._points = [point for point, _ in ring]
        self._owners = [host for _, host in ring]
        self._members = frozenset(h.id for h in hosts)

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None:
        if not self._owners:
            return None
        key = context.hash_key if context.hash_key is not None else b""
        start = bisect.bisect_left(self._points, _hash64(key)) % len(self._points)
        if not context.exclude:
            return self._owners[start]
        if self._members <= context.exclude:
            return None
        return _first_not_excluded(self._owners, start, context.exclude)


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


ROUND_ROBIN: Plugin[LoadBalancerFactory] = Plugin(
    PluginKind.LB_POLICY, "round_robin", EmptyConfig, lambda _config: RoundRobin
)
WEIGHTED_RANDOM: Plugin[LoadBalancerFactory] = Plugin(
    PluginKind.LB_POLICY, "weighted_random", EmptyConfig, lambda _config: WeightedRandom
)
LEAST_REQUEST: Plugin[LoadBalancerFactory] = Plugin(
    PluginKind.LB_POLICY, "least_request", EmptyConfig, lambda _config: LeastRequest
)


def _consistent_hash(config: ConsistentHashConfig) -> LoadBalancerFactory:
    # A named function, not nested lambdas: mypyc cannot compile a lambda in a lambda.
    def factory() -> LoadBalancer:
        return ConsistentHash(config)

    return factory


CONSISTENT_HASH: Plugin[LoadBalancerFactory] = Plugin(
    PluginKind.LB_POLICY, "consistent_hash", ConsistentHashConfig, _consistent_hash
)
