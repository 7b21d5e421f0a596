"""One endpoint of a cluster and everything the cluster knows about it."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.discovery.types import Instance


@dataclass
class HostStats:
    requests: int = 0
    failures: int = 0
    connect_failures: int = 0
    ejections: int = 0


@dataclass(eq=False)
class Host:
    """Mutable state of one endpoint. Identity is the object: a host replaced by a newer
    registration of the same id is a new ``Host`` sharing nothing with the old one.

    ``healthy`` is the active health checker's verdict, ``ejected_until`` the passive one's.
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
        return self.healthy and not self.ejected(now)
