"""From "the instances the registry holds now" to ordered updates (sans-IO).

Shared by the registry plugins: each reduces a subscription to a set of candidate instances,
each carrying the revision at which its registration was created (ZooKeeper czxid, etcd
create_revision), and lets :class:`InstanceView` turn successive sets into Reset/Add/Remove.
Diffing whole sets (rather than forwarding raw events) is what makes a re-list after a
reconnect or a compaction flap-free: only what really changed is emitted.

A provider restarted on the same ip:port may briefly have two registrations (Dubbo's
timestamp parameter makes the ZooKeeper node names differ): of candidates sharing an id the
newest registration (highest revision) is the one shown, so the old one's deletion changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.discovery.types import Add, Instance, Remove, Reset, Update


def newest_per_id(candidates: Iterable[Instance]) -> dict[str, Instance]:
    chosen: dict[str, Instance] = {}
    for instance in candidates:
        known = chosen.get(instance.id)
        if known is None or instance.revision > known.revision:
            chosen[instance.id] = instance
    return chosen


class InstanceView:
    """What a subscription has told its consumer, and the updates that bring it up to date."""

    def __init__(self) -> None:
        self._shown: dict[str, Instance] | None = None
        self._revision = 0

    @property
    def reset_sent(self) -> bool:
        return self._shown is not None

    def update(self, candidates: Iterable[Instance], revision: int) -> list[Update]:
        # Revisions only move forward, whatever order reads completed in.
        self._revision = max(self._revision, revision)
        rev = self._revision
        now = newest_per_id(candidates)
        before, self._shown = self._shown, now
        if before is None:
            return [Reset(rev, tuple(now[k] for k in sorted(now)))]
        updates: list[Update] = []
        for key in sorted(before.keys() - now.keys()):
            updates.append(Remove(rev, key, before[key].revision))
        for key in sorted(now):
            new, old = now[key], before.get(key)
            if old is None:
                updates.append(Add(rev, new))
            elif new.revision < old.revision:
                # The newer registration went and an older one of the same id is still
                # there: the consumer would refuse an Add older than what it holds, so the
                # newer one is removed first, explicitly.
                updates.append(Remove(rev, key, old.revision))
                updates.append(Add(rev, new))
            elif new != old:
                updates.append(Add(rev, new))
        return updates
