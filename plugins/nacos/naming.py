"""Dubbo's and meshagent's naming conventions on Nacos (sans-IO).

- Dubbo interface level: one Nacos service per interface, version and group, named
  ``providers:{interface}:{version}:{group}`` (separators kept when a part is empty); each
  provider is an instance whose metadata are the provider URL's parameters.
- Dubbo 3 application level: one Nacos service per application; an instance's metadata carry
  ``dubbo.endpoints`` and ``dubbo.metadata.revision``. The interface → applications mapping is
  the config ``dataId={interface} group=mapping``; remotely stored app metadata is the config
  ``dataId={app} group={revision}``.
- Plain (meshagent) services: the Nacos service is the service name, the registration's
  instance id travels in the ``meshagent.instance_id`` metadata entry.

The instance as nacos-sdk-python hands it over is turned into :class:`NacosInstance` by the
client module, so everything here is testable without the SDK.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent.discovery.types import Instance, Registration, ServiceKey, frozen_mapping
from plugins.nacos.config import NacosConfig
from plugins.zookeeper.application_level import (
    ENDPOINTS_KEY,
    AppInstance,
    MetadataInfo,
    matching_service,
)
from plugins.zookeeper.application_level import to_instance as app_to_instance
from plugins.zookeeper.interface_level import key_matches, parse_weight, provider_url

INSTANCE_ID_KEY = "meshagent.instance_id"
PROTOCOL_KEY = "protocol"
# Registration metadata entries that steer the Nacos registration and are not published.
CLUSTER_KEY = "nacos.cluster"
EPHEMERAL_KEY = "nacos.ephemeral"
_STEERING = frozenset({CLUSTER_KEY, EPHEMERAL_KEY})
MAPPING_GROUP = "mapping"
# meshagent weights are integers around 100 (Dubbo's default); Nacos' are floats around 1.0.
WEIGHT_SCALE = 100


@dataclass(frozen=True)
class NacosInstance:
    """An instance as Nacos reports it."""

    ip: str
    port: int
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    ephemeral: bool = True
    cluster: str = "DEFAULT"
    metadata: Mapping[str, str] = field(default_factory=frozen_mapping)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class NacosRegistration:
    """What the agent asks Nacos to hold for one registration."""

    service: str
    group: str
    ip: str
    port: int
    weight: float
    cluster: str
    ephemeral: bool
    metadata: Mapping[str, str]

    @property
    def identity(self) -> tuple[str, str, str, int, str]:
        """Nacos keys an instance by service, group, ip, port and cluster."""
        return (self.service, self.group, self.ip, self.port, self.cluster)


# service names -------------------------------------------------------------------------------


def interface_service_name(interface: str, version: str = "", group: str = "") -> str:
    """Dubbo's NacosServiceName for providers (separators kept when a part is empty)."""
    return f"providers:{interface}:{version}:{group}"


def key_service_name(key: ServiceKey, mode: str) -> str:
    if mode == "interface":
        attrs = key.attributes
        return interface_service_name(key.name, attrs.get("version", ""), attrs.get("group", ""))
    return key.name


def wanted_clusters(key: ServiceKey, config: NacosConfig) -> frozenset[str]:
    raw = key.attributes.get("clusters")
    if raw is None:
        return frozenset(config.clusters)
    return frozenset(c.strip() for c in raw.split(",") if c.strip())


def parse_mapping(content: str) -> tuple[str, ...]:
    """The applications in a mapping config ("app1,app2"), in order, without duplicates."""
    return tuple(dict.fromkeys(app.strip() for app in content.split(",") if app.strip()))


# instances as the agent sees them ---------------------------------------------------------------


def routable(instance: NacosInstance, clusters: frozenset[str]) -> bool:
    """Nacos' own selection for consumers: enabled, healthy, in a wanted cluster."""
    if not instance.enabled or not instance.healthy:
        return False
    return not clusters or instance.cluster in clusters


def scaled_weight(weight: float) -> int:
    if weight != weight or weight < 0:  # NaN or negative: Nacos refuses both, be safe anyway
        return 0
    return round(weight * WEIGHT_SCALE)


def _base_metadata(instance: NacosInstance) -> dict[str, str]:
    metadata = dict(instance.metadata)
    metadata["nacos.cluster"] = instance.cluster
    metadata["nacos.ephemeral"] = "true" if instance.ephemeral else "false"
    return metadata


def plain_instance(instance: NacosInstance, revision: int) -> Instance:
    metadata = _base_metadata(instance)
    metadata.setdefault(PROTOCOL_KEY, "tcp")
    instance_id = metadata.pop(INSTANCE_ID_KEY, "") or instance.address
    return Instance(
        id=instance_id,
        host=instance.ip,
        port=instance.port,
        weight=scaled_weight(instance.weight),
        metadata=frozen_mapping(metadata),
        revision=revision,
    )


def interface_instance(key: ServiceKey, instance: NacosInstance, revision: int) -> Instance | None:
    """A Dubbo provider instance if ``key`` selects it (Dubbo's UrlUtils.isMatch), else None."""
    metadata = _base_metadata(instance)
    if not key_matches(key, metadata):
        return None
    metadata.setdefault(PROTOCOL_KEY, "dubbo")
    # Nacos' weight when it is not the default (an operator set it in the console or API, or
    # meshagent registered it), else Dubbo's weight parameter (default 100).
    if instance.weight != 1.0:
        weight = scaled_weight(instance.weight)
    else:
        weight = parse_weight(metadata.get("weight"))
    return Instance(
        id=instance.address,
        host=instance.ip,
        port=instance.port,
        weight=weight,
        metadata=frozen_mapping(metadata),
        revision=revision,
    )


def endpoints_of(raw: str | None) -> dict[str, int]:
    """``dubbo.endpoints`` ([{"port": 20880, "protocol": "dubbo"}]) as port per protocol;
    anything malformed only loses the per-protocol port (the instance port still works)."""
    if not raw:
        return {}
    try:
        items: Any = json.loads(raw)
    except ValueError:
        return {}
    found: dict[str, int] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            protocol, port = item.get("protocol"), item.get("port")
            if isinstance(protocol, str) and isinstance(port, int) and 0 < port < 65536:
                found.setdefault(protocol, port)
    return found


def app_instance(app: str, instance: NacosInstance) -> AppInstance:
    metadata = _base_metadata(instance)
    return AppInstance(
        app=app,
        id=instance.address,
        host=instance.ip,
        port=instance.port,
        metadata=frozen_mapping(metadata),
        endpoints=MappingProxyType(endpoints_of(metadata.get(ENDPOINTS_KEY))),
    )


def application_instance(
    key: ServiceKey,
    app: AppInstance,
    info: MetadataInfo | None,
    protocol: str,
    weight: float,
    revision: int,
) -> Instance | None:
    """The endpoint an app instance serves ``key`` on; None when its metadata says it does
    not serve it. Without metadata it is kept (the mapping says the app provides it)."""
    service = None
    if info is not None:
        service = matching_service(key, info, protocol)
        if service is None:
            return None
    found = app_to_instance(app, revision, protocol, service)
    if "weight" not in found.metadata:
        found = Instance(
            found.id, found.host, found.port, scaled_weight(weight), found.metadata, revision
        )
    return found


# registrations ----------------------------------------------------------------------------------


def _flag(raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(f"{EPHEMERAL_KEY}={raw!r}: expected true or false")


def registration_of(
    registration: Registration, config: NacosConfig, *, timestamp_ms: int | None = None
) -> NacosRegistration:
    """The Nacos instance for a registration of the local app.

    A Dubbo registration (protocol ``dubbo``) is written the way Dubbo's NacosRegistry writes
    a provider: the provider URL's parameters plus ``category``, ``protocol`` and ``path``.
    Raises ValueError for metadata Nacos would misread.
    """
    steering = {k: v for k, v in registration.metadata.items() if k in _STEERING}
    cluster = steering.get(CLUSTER_KEY, config.cluster)
    if not cluster or "@@" in cluster or "," in cluster:
        raise ValueError(f"{CLUSTER_KEY}={cluster!r}: not a Nacos cluster name")
    ephemeral = _flag(steering.get(EPHEMERAL_KEY), config.ephemeral)
    published = {k: v for k, v in registration.metadata.items() if k not in _STEERING}
    stripped = Registration(
        registration.service,
        registration.instance_id,
        registration.host,
        registration.port,
        registration.weight,
        frozen_mapping(published),
        registration.protocol,
    )
    weight = registration.weight / WEIGHT_SCALE
    if registration.protocol == "dubbo":
        url = provider_url(
            stripped,
            application=config.application,
            timestamp_ms=timestamp_ms or int(time.time() * 1000),
        )
        metadata = dict(url.params)
        metadata.update(category="providers", protocol=url.protocol, path=url.path)
        service = interface_service_name(
            registration.service, metadata.get("version", ""), metadata.get("group", "")
        )
    else:
        metadata = dict(published)
        metadata[PROTOCOL_KEY] = registration.protocol
        metadata[INSTANCE_ID_KEY] = registration.instance_id
        service = registration.service
    return NacosRegistration(
        service=service,
        group=config.group,
        ip=registration.host,
        port=registration.port,
        weight=weight,
        cluster=cluster,
        ephemeral=ephemeral,
        metadata=frozen_mapping(metadata),
    )


__all__ = [
    "MAPPING_GROUP",
    "NacosInstance",
    "NacosRegistration",
    "app_instance",
    "application_instance",
    "interface_instance",
    "interface_service_name",
    "key_service_name",
    "parse_mapping",
    "plain_instance",
    "registration_of",
    "routable",
    "wanted_clusters",
]
