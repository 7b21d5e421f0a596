"""One watched service: from etcd's range reads and watch events to ordered updates (sans-IO).

etcd hands out a range read at revision R (every key with its create/mod revision), then a
watch from R+1 whose events come in revision order. Each key ``{prefix}/{service}/{id}`` is
one registration of ``id``; its ``create_revision`` tells registrations apart (a provider that
deleted and re-created its key is a new registration), so that becomes ``Instance.revision``.

Everything is reduced to the set of valid instances and handed to the shared
:class:`~agent.discovery.view.InstanceView`, which emits the first ``Reset`` and then the
difference: a re-list after a compaction changes only what really changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.discovery.logonce import LogOnce
from agent.discovery.records import MalformedRecord, parse_record, to_instance
from agent.discovery.types import Instance, Reset, Update
from agent.discovery.view import InstanceView
from plugins.etcd.layout import KeyLayout, OutsideLayout


@dataclass(frozen=True)
class KeyValue:
    """The parts of etcd's ``mvccpb.KeyValue`` a service view needs."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


class ServiceState:
    def __init__(self, service: str, layout: KeyLayout, log_once: LogOnce) -> None:
        self.service = service
        self._layout = layout
        self._log_once = log_once
        self._view = InstanceView()
        self._instances: dict[str, Instance] = {}
        self.revision = 0
        """Every event up to this revision has been applied (the watch resumes after it)."""

    @property
    def listed(self) -> bool:
        """True once a range read was applied: a ``Reset`` went out, watches may resume."""
        return self._view.reset_sent

    @property
    def next_revision(self) -> int:
        return self.revision + 1

    def snapshot(self) -> Reset:
        """What a subscriber joining now is told first."""
        instances = tuple(self._instances[k] for k in sorted(self._instances))
        return Reset(self.revision, instances)

    def listed_at(self, kvs: Iterable[KeyValue], revision: int) -> list[Update]:
        """A range read of the whole service at ``revision`` (first, or after a compaction)."""
        fresh: dict[str, Instance] = {}
        for kv in kvs:
            instance = self._instance(kv)
            if instance is not None:
                fresh[instance.id] = instance
        self._instances = fresh
        self.revision = max(self.revision, revision)
        return self._view.update(fresh.values(), self.revision)

    def put(self, kv: KeyValue) -> list[Update]:
        if kv.mod_revision < self.revision:
            # Already applied (a watch never replays, but a re-list may have been ahead).
            # Equal is not older: one transaction (a lease revoke) is many events at one
            # revision.
            return []
        self.revision = kv.mod_revision
        instance_id = self._instance_id(kv.key)
        if instance_id is None:
            return []
        instance = self._instance(kv, instance_id)
        if instance is None:
            # The key no longer holds a usable record: as far as consumers go, it is gone.
            self._instances.pop(instance_id, None)
        else:
            self._instances[instance_id] = instance
        return self._view.update(self._instances.values(), self.revision)

    def delete(self, key: bytes, mod_revision: int, create_revision: int | None) -> list[Update]:
        """``create_revision``: of the deleted registration (the event's prev_kv), if known."""
        if mod_revision < self.revision:
            return []
        self.revision = mod_revision
        instance_id = self._instance_id(key)
        if instance_id is None:
            return []
        known = self._instances.get(instance_id)
        # Only the registration that was deleted goes; a newer one of the same id stays.
        if known is not None and (create_revision is None or known.revision <= create_revision):
            del self._instances[instance_id]
        return self._view.update(self._instances.values(), self.revision)

    def progress(self, revision: int) -> None:
        """The watch promised nothing older than ``revision`` is still to come."""
        self.revision = max(self.revision, revision)

    def _instance_id(self, key: bytes) -> str | None:
        try:
            service, instance_id = self._layout.parse(key)
        except OutsideLayout as exc:
            self._log_once.warn(_show(key), "key outside the layout, skipped: %s", exc)
            return None
        if service != self.service:  # cannot happen with a prefix watch; refuse, do not guess
            self._log_once.warn(_show(key), "key of another service, skipped")
            return None
        return instance_id

    def _instance(self, kv: KeyValue, instance_id: str | None = None) -> Instance | None:
        if instance_id is None:
            instance_id = self._instance_id(kv.key)
            if instance_id is None:
                return None
        try:
            record = parse_record(kv.value)
        except MalformedRecord as exc:
            self._log_once.warn(_show(kv.key), "not an instance record, skipped: %s", exc)
            return None
        return to_instance(instance_id, record, kv.create_revision)


def _show(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")
