"""What a registry tells the agent: instances, and ordered updates to a service's set of them.

A registry plugin turns its registry's data into a stream of :data:`Update` values per
subscribed service, in the registry's own order (linkerd2-proxy's Reset/Add/Remove). Each
carries the registry's revision (ZooKeeper czxid/mzxid, etcd create/mod revision, a counter
for the embedded registry) so that the cluster can refuse stale events: a ``Remove`` whose
registration is older than the live one never drops the live endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


def frozen_mapping(values: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class ServiceKey:
    """A service as consumers name it: a name plus the attributes a registry matches on.

    ``attributes`` holds protocol-specific selectors, e.g. Dubbo's version and group.
    """

    name: str
    attributes: Mapping[str, str] = field(default_factory=frozen_mapping)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.attributes.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServiceKey):
            return NotImplemented
        return self.name == other.name and dict(self.attributes) == dict(other.attributes)


@dataclass(frozen=True)
class Instance:
    """One endpoint of a service as its registry knows it.

    ``revision`` is the registry's revision at which *this registration* was created. Two
    registrations of the same ``id`` (a provider restarted on the same ip:port) are told
    apart by it.
    """

    id: str
    host: str
    port: int
    weight: int = 100
    metadata: Mapping[str, str] = field(default_factory=frozen_mapping)
    revision: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Reset:
    """The whole set of instances as of ``revision``; replaces whatever was known."""

    revision: int
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Add:
    """An instance appeared or changed (same id: replaces the known one if not older)."""

    revision: int
    instance: Instance


@dataclass(frozen=True)
class Remove:
    """The registration of ``instance_id`` created at ``registration_revision`` is gone.

    A live instance of the same id with a newer registration is kept: the remove is stale.
    """

    revision: int
    instance_id: str
    registration_revision: int


Update = Reset | Add | Remove


@dataclass(frozen=True)
class Registration:
    """An instance the local app publishes through the agent."""

    service: str
    instance_id: str
    host: str
    port: int
    weight: int = 100
    metadata: Mapping[str, str] = field(default_factory=frozen_mapping)
    protocol: str = "tcp"


@dataclass(frozen=True)
class RegistryStatus:
    """Whether the registry is reachable, and since when (seconds since the epoch)."""

    connected: bool
    since: float
    detail: str = ""
