"""A cluster: the endpoints of one service, their state, and the choice among them.

Membership follows the registry's ordered updates with one rule against stale events: a
registration is identified by (id, revision), and a ``Remove`` of an older registration
than the live one is ignored. The balancer sees only available hosts (healthy and not
ejected); when none is available it sees all of them (Envoy's panic mode), because
sending to a maybe-dead host beats refusing every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.cluster.health import record_probe
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, LoadBalancer, LoadBalancerFactory, PickContext
from agent.cluster.locality import PriorityLevels
from agent.cluster.outlier import OutlierPolicy, record_failure, record_success
from agent.discovery.types import Add, Remove, Reset, Update

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class OutcomeSink(Protocol):
    """Where a worker's cluster sends its passive outlier signals: the supervisor decides
    ejections for every worker (agent/runtime/worker.py)."""

    def failure(self, cluster: str, endpoint: str) -> None: ...

    def success(self, cluster: str, endpoint: str) -> None: ...


@dataclass(frozen=True)
class HealthPolicy:
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


class Cluster:
    def __init__(
        self,
        name: str,
        balancer: LoadBalancer,
        outlier: OutlierPolicy | None = None,
        health: HealthPolicy | None = None,
        clock: Clock = time.monotonic,
        lb_policy: str = "",
        levels: PriorityLevels | None = None,
    ) -> None:
        self.name = name
        self.lb_policy = lb_policy
        self.outlier = outlier or OutlierPolicy()
        self.health = health or HealthPolicy()
        self._balancer = balancer
        # Locality-aware: the endpoints in priority levels, each with its own balancer
        # (agent/cluster/locality.py); None: one balancer over every endpoint.
        self.levels = levels
        self._clock = clock
        self._hosts: dict[str, Host] = {}
        self.revision: int | None = None  # registry revision of the last applied update
        self.panic = False
        # Earliest ejection end: until then the available set cannot change by time alone.
        self._next_return = float("inf")
        self._ejected: set[str] = set()
        self.listeners: list[Callable[[Cluster], None]] = []
        # Endpoint id -> weight, from the agent's dynamic settings (survives re-registration).
        self.weight_overrides: dict[str, int] = {}
        # In a worker process: outcomes go to the supervisor, which sends back the
        # endpoints' health and ejections (set_host_states); nothing is ejected here.
        self.remote: OutcomeSink | None = None

    # -- membership --------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        """True once the first snapshot (a Reset) from the registry is in."""
        return self.revision is not None

    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def get(self, host_id: str) -> Host | None:
        return self._hosts.get(host_id)

    def apply(self, update: Update) -> None:
        if isinstance(update, Reset):
            fresh: dict[str, Host] = {}
            for instance in update.instances:
                old = self._hosts.get(instance.id)
                if old is not None and old.instance.revision == instance.revision:
                    old.instance = instance  # same registration: keep its state
                    fresh[instance.id] = old
                else:
                    fresh[instance.id] = Host(instance, changed=self._host_changed)
            for gone in self._hosts.keys() - fresh.keys():
                log.info("endpoint removed", extra={"cluster": self.name, "endpoint": gone})
            for added in fresh.keys() - self._hosts.keys():
                log.info("endpoint added", extra={"cluster": self.name, "endpoint": added})
            self._hosts = fresh
        elif isinstance(update, Add):
            instance = update.instance
            old = self._hosts.get(instance.id)
            if old is not None and old.instance.revision > instance.revision:
                log.info("stale add ignored", extra={"cluster": self.name, "endpoint": instance.id})
            elif old is not None and old.instance.revision == instance.revision:
                old.instance = instance  # metadata or weight changed, same registration
            else:
                self._hosts[instance.id] = Host(instance, changed=self._host_changed)
                log.info("endpoint added", extra={"cluster": self.name, "endpoint": instance.id})
        elif isinstance(update, Remove):
            old = self._hosts.get(update.instance_id)
            if old is None:
                pass
            elif old.instance.revision > update.registration_revision:
                log.info(
                    "stale remove ignored: a newer registration is live",
                    extra={"cluster": self.name, "endpoint": update.instance_id},
                )
            else:
                del self._hosts[update.instance_id]
                log.info("endpoint removed", extra={"cluster": self.name, "endpoint": old.id})
        self.revision = max(self.revision or 0, update.revision)
        self._rebalance()

    # -- choosing ----------------------------------------------------------------------

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None:
        if self._clock() >= self._next_return:
            self._rebalance()
        levels = self.levels
        if levels is not None:
            return levels.choose(context)
        return self._balancer.choose(context)

    def _host_changed(self, host: Host) -> None:
        if self._hosts.get(host.id) is not host:
            return  # replaced or removed meanwhile
        log.info(
            "endpoint draining: no new requests"
            if host.draining
            else "endpoint back from draining",
            extra={"cluster": self.name, "endpoint": host.id},
        )
        self._rebalance()

    def set_balancer(self, make_balancer: LoadBalancerFactory, policy: str) -> None:
        """Switch the LB policy at run time (dynamic settings); hosts keep their state."""
        self._balancer = make_balancer()
        if self.levels is not None:
            self.levels.set_balancer_factory(make_balancer)
        self.lb_policy = policy
        self._rebalance()

    def set_weight_overrides(self, overrides: dict[str, int]) -> None:
        self.weight_overrides = dict(overrides)
        self._rebalance()

    def _rebalance(self) -> None:
        now = self._clock()
        hosts = list(self._hosts.values())
        for host in hosts:
            host.weight_override = self.weight_overrides.get(host.id)
        levels = self.levels
        if levels is not None:
            levels.set_hosts(hosts, now)
            self.panic = levels.panic
        else:
            available = [h for h in hosts if h.available(now)]
            self.panic = bool(hosts) and not available
            self._balancer.set_hosts(hosts if self.panic else available)
        if self.panic:
            log.warning("no available endpoint, balancing over all", extra={"cluster": self.name})
        ejected = {h.id for h in hosts if h.ejected(now)}
        for returned in self._ejected - ejected:
            if returned in self._hosts:
                log.info(
                    "endpoint back from ejection",
                    extra={"cluster": self.name, "endpoint": returned},
                )
        self._ejected = ejected
        ejection_ends = [h.ejected_until for h in hosts if h.id in ejected]
        self._next_return = min(ejection_ends, default=float("inf"))
        for listener in self.listeners:
            listener(self)

    # -- outcomes ----------------------------------------------------------------------

    def report_success(self, host: Host) -> None:
        host.stats.requests += 1
        remote = self.remote
        if remote is not None:
            # Only a streak the supervisor knows of needs ending: one line per success
            # would cost every call.
            if host.consecutive_failures:
                remote.success(self.name, host.id)
            return
        record_success(host)

    def report_failure(self, host: Host, connect: bool = False) -> None:
        host.stats.requests += 1
        host.stats.failures += 1
        if connect:
            host.stats.connect_failures += 1
        if self._hosts.get(host.id) is not host:
            return  # replaced or removed meanwhile: its failures say nothing now
        remote = self.remote
        if remote is not None:
            remote.failure(self.name, host.id)
            return
        self._record_failure(host)

    def record_outcome(self, host_id: str, ok: bool) -> None:
        """A worker's outcome on ``host_id`` (the supervisor's side): outlier detection
        only; the worker counted the request in its own statistics."""
        host = self._hosts.get(host_id)
        if host is None:
            return
        if ok:
            record_success(host)
        else:
            self._record_failure(host)

    def _record_failure(self, host: Host) -> None:
        now = self._clock()
        until = record_failure(host, list(self._hosts.values()), self.outlier, now)
        if until is not None:
            log.warning(
                "endpoint ejected",
                extra={
                    "cluster": self.name,
                    "endpoint": host.id,
                    "seconds": round(until - now, 3),
                    "times": host.times_ejected,
                },
            )
            self._rebalance()

    def report_probe(self, host: Host, ok: bool) -> None:
        if self._hosts.get(host.id) is not host:
            return
        policy = self.health
        if record_probe(host, ok, policy.healthy_threshold, policy.unhealthy_threshold):
            log.warning(
                "endpoint %s",
                "healthy" if ok else "unhealthy",
                extra={"cluster": self.name, "endpoint": host.id},
            )
            self._rebalance()

    def host_states(self) -> dict[str, tuple[bool, float, bool]]:
        """Each endpoint's (healthy, ejected_until, failure streak open): what workers
        mirror (agent/runtime/mesh_stream.py)."""
        return {
            host.id: (host.healthy, host.ejected_until, host.consecutive_failures > 0)
            for host in self._hosts.values()
        }

    def set_host_states(self, states: dict[str, tuple[bool, float, bool]]) -> None:
        """The supervisor's verdicts on endpoints this worker knows (the worker's side)."""
        changed = False
        for host_id, (healthy, ejected_until, failing) in states.items():
            host = self._hosts.get(host_id)
            if host is None:
                continue
            if host.healthy != healthy or host.ejected_until != ejected_until:
                host.healthy = healthy
                if ejected_until > host.ejected_until:
                    host.times_ejected += 1
                host.ejected_until = ejected_until
                changed = True
            host.consecutive_failures = 1 if failing else 0
        if changed:
            self._rebalance()

    def available_count(self) -> int:
        now = self._clock()
        return sum(1 for h in self._hosts.values() if h.available(now))
