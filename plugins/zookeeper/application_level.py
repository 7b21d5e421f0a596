"""Dubbo 3 application-level discovery (sans-IO parts).

- ``/services/{app}/{ip:port}``: Curator's ServiceInstance JSON; Dubbo's payload metadata
  holds ``dubbo.endpoints`` (the port per protocol) and ``dubbo.metadata.revision``.
- ``/dubbo/mapping/{interface}``: "app1,app2", the applications providing an interface.
- ``/dubbo/metadata/{app}/{revision}``: the MetadataInfo JSON (services with their group,
  version, protocol and URL parameters) when the provider stores metadata remotely.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agent.discovery.types import Instance, ServiceKey, frozen_mapping
from plugins.zookeeper.interface_level import parse_weight
from plugins.zookeeper.matching import group_matches, version_matches

REVISION_KEY = "dubbo.metadata.revision"
ENDPOINTS_KEY = "dubbo.endpoints"
STORAGE_TYPE_KEY = "dubbo.metadata.storage-type"


class MalformedInstance(ValueError):
    """Node data that is not a Curator ServiceInstance JSON Dubbo could have written."""


@dataclass(frozen=True)
class AppInstance:
    app: str
    id: str
    host: str
    port: int
    metadata: Mapping[str, str]
    endpoints: Mapping[str, int]
    """Port per protocol, from ``dubbo.endpoints``."""

    @property
    def revision(self) -> str:
        return self.metadata.get(REVISION_KEY, "")

    @property
    def metadata_is_remote(self) -> bool:
        return self.metadata.get(STORAGE_TYPE_KEY, "local") == "remote"


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    group: str
    version: str
    protocol: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class MetadataInfo:
    app: str
    revision: str
    services: tuple[ServiceInfo, ...]


MetadataResolver = Callable[[AppInstance], Awaitable["MetadataInfo | None"]]
"""The hook for metadata stored locally by the provider: Dubbo's MetadataService call.

The Dubbo protocol plugin supplies one (it speaks Dubbo); without it, instances whose
metadata cannot be read are kept unfiltered (they may not serve the wanted group/version).
"""


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        body: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedInstance(f"{what} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedInstance(f"{what} is not a JSON object")
    return body


def parse_mapping(data: bytes) -> tuple[str, ...]:
    text = data.decode("utf-8", errors="replace")
    return tuple(dict.fromkeys(app.strip() for app in text.split(",") if app.strip()))


def parse_instance(data: bytes) -> AppInstance:
    body = _load_object(data, "instance")
    name, address, port = body.get("name"), body.get("address"), body.get("port")
    if not isinstance(name, str) or not isinstance(address, str) or not address:
        raise MalformedInstance("name or address missing")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise MalformedInstance("port missing or out of range")
    payload = body.get("payload")
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise MalformedInstance("payload is not an object")
    raw_metadata = payload.get("metadata")
    raw_metadata = {} if raw_metadata is None else raw_metadata
    if not isinstance(raw_metadata, dict):
        raise MalformedInstance("payload.metadata is not an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_metadata.items()}
    instance_id = body.get("id")
    return AppInstance(
        app=name,
        id=instance_id if isinstance(instance_id, str) and instance_id else f"{address}:{port}",
        host=address,
        port=port,
        metadata=frozen_mapping(metadata),
        endpoints=_endpoints(metadata.get(ENDPOINTS_KEY)),
    )


def _endpoints(raw: str | None) -> Mapping[str, int]:
    # A bad endpoints list only loses the per-protocol port: the instance port still works.
    if not raw:
        return MappingProxyType({})
    try:
        items: Any = json.loads(raw)
    except ValueError:
        return MappingProxyType({})
    found: dict[str, int] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            protocol, port = item.get("protocol"), item.get("port")
            if isinstance(protocol, str) and isinstance(port, int) and 0 < port < 65536:
                found.setdefault(protocol, port)
    return MappingProxyType(found)


def parse_metadata_info(data: bytes) -> MetadataInfo:
    body = _load_object(data, "metadata")
    services = body.get("services") or {}
    if not isinstance(services, dict):
        raise MalformedInstance("metadata services is not an object")
    infos = []
    for entry in services.values():
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        params = entry.get("params") or {}
        infos.append(
            ServiceInfo(
                name=entry["name"],
                group=str(entry.get("group") or ""),
                version=str(entry.get("version") or ""),
                protocol=str(entry.get("protocol") or ""),
                params=frozen_mapping(
                    {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}
                ),
            )
        )
    return MetadataInfo(str(body.get("app", "")), str(body.get("revision", "")), tuple(infos))


def matching_service(key: ServiceKey, info: MetadataInfo, protocol: str) -> ServiceInfo | None:
    attrs = key.attributes
    for service in info.services:
        if (
            service.name == key.name
            and group_matches(attrs.get("group", ""), service.group)
            and version_matches(attrs.get("version", ""), service.version)
            and service.protocol in ("", protocol)
        ):
            return service
    return None


def to_instance(
    app_instance: AppInstance,
    czxid: int,
    protocol: str,
    service: ServiceInfo | None = None,
) -> Instance:
    """One instance per app instance, on the port it serves ``protocol`` on."""
    metadata: dict[str, str] = dict(service.params) if service is not None else {}
    metadata.update(app_instance.metadata)
    metadata["application"] = app_instance.app
    metadata["protocol"] = protocol
    port = app_instance.endpoints.get(protocol, app_instance.port)
    return Instance(
        id=f"{app_instance.host}:{port}",
        host=app_instance.host,
        port=port,
        weight=parse_weight(metadata.get("weight")),
        metadata=frozen_mapping(metadata),
        revision=czxid,
    )
