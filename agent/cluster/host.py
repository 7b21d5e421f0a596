"""One endpoint of a cluster and everything the cluster knows about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agent.discovery.types import Instance


@dataclass
class HostStats:
    requests: int = 0
    failures: int = 0
    connect_failures: int = 0
    ejections: int = 0
    # Times the provider said it is going away (Dubbo READONLY).
    drains: int = 0


@dataclass(eq=False)
class Host:
    """Mutable state of one endpoint. Identity is the object: a host replaced by a newer
    registration of the same id is a new ``Host`` sharing nothing with the old one.

    ``healthy`` is the active health checker's verdict, ``ejected_until`` the passive one's,
    ``draining`` the provider's own word that it is going away (Dubbo's READONLY event):
    it gets no new requests until that process is gone.
    """

    instance: Instance
    healthy: bool = True
    ejected_until: float = 0.0
    times_ejected: int = 0
    consecutive_failures: int = 0
    # Active checks in a row that disagree with ``healthy`` (toward a flip).
    health_streak: int = 0
    active_requests: int = 0
    stats: HostStats = field(default_factory=HostStats)
    # An operator's weight from the dynamic settings; it wins over the registry's.
    weight_override: int | None = None
    draining: bool = False
    # Set by the cluster: told when ``draining`` changes (it rebalances).
    changed: Callable[[Host], None] | None = None

    @property
    def id(self) -> str:
        return self.instance.id

    @property
    def weight(self) -> int:
        if self.weight_override is not None:
            return self.weight_override
        return self.instance.weight

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def available(self, now: float) -> bool:
        return self.healthy and not self.draining and not self.ejected(now)

    def set_draining(self, draining: bool) -> None:
        """The provider said it is going away (True), or the process that said so is gone
        (False: whatever answers on its address next starts fresh)."""
        if draining == self.draining:
            return
        self.draining = draining
        if draining:
            self.stats.drains += 1
        if self.changed is not None:
            self.changed(self)
