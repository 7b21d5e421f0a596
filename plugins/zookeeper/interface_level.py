"""Dubbo interface-level registration: one znode per provider URL (sans-IO).

``/dubbo/{interface}/providers/{URL-encoded dubbo URL}`` (ephemeral), consumers alike under
``/consumers``. The node's data is not used: Curator writes the writer's IP there by default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from agent.discovery.types import Instance, Registration, ServiceKey, frozen_mapping
from plugins.zookeeper.dubbo_url import DubboURL, MalformedURL, parse_node_name
from plugins.zookeeper.matching import enabled, group_matches, version_matches

DEFAULT_WEIGHT = 100


class NotAProvider(ValueError):
    """A node under providers/ that parses but cannot be called (no port, wrong interface)."""


def provider_instance(node_name: str, czxid: int) -> Instance:
    """The instance a provider node stands for; raises MalformedURL / NotAProvider."""
    url = parse_node_name(node_name)
    if not url.host or url.port <= 0:
        raise NotAProvider(f"provider URL without host:port: {url.to_string()!r}")
    metadata = dict(url.params)
    metadata["protocol"] = url.protocol
    return Instance(
        id=url.address,
        host=url.host,
        port=url.port,
        weight=parse_weight(url.params.get("weight")),
        metadata=frozen_mapping(metadata),
        revision=czxid,
    )


def parse_weight(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_WEIGHT
    try:
        weight = int(raw.strip())
    except ValueError:
        return DEFAULT_WEIGHT
    return max(weight, 0)


def key_matches(key: ServiceKey, values: Mapping[str, str]) -> bool:
    """Dubbo's UrlUtils.isMatch on the parts a ServiceKey can say."""
    attrs = key.attributes
    if values.get("category", "providers") != "providers":
        return False
    interface = values.get("interface")
    if interface is not None and key.name != "*" and interface != key.name:
        return False
    return (
        group_matches(attrs.get("group", ""), values.get("group", ""))
        and version_matches(attrs.get("version", ""), values.get("version", ""))
        and enabled(values.get("enabled"), attrs.get("enabled", ""))
    )


def matching_instance(key: ServiceKey, node_name: str, czxid: int) -> Instance | None:
    """The provider node as an instance if ``key`` selects it, else None (not an error)."""
    instance = provider_instance(node_name, czxid)
    return instance if key_matches(key, instance.metadata) else None


# Parameters the agent owns when it writes a provider URL for the local app.
_RESERVED = frozenset({"protocol"})


def consumer_url(
    key: ServiceKey, host: str, application: str, *, timestamp_ms: int | None = None
) -> DubboURL:
    """The URL a Dubbo consumer of ``key`` registers under ``consumers/``."""
    params = {k: v for k, v in key.attributes.items() if k in ("version", "group") and v}
    params.update(
        {
            "application": application,
            "category": "consumers",
            "check": "false",
            "interface": key.name,
            "side": "consumer",
            "timestamp": str(timestamp_ms or int(time.time() * 1000)),
        }
    )
    return DubboURL("consumer", host, 0, key.name, frozen_mapping(params))


def provider_url(
    registration: Registration, *, application: str = "meshagent", timestamp_ms: int | None = None
) -> DubboURL:
    """The URL a Dubbo provider would register for ``registration``.

    ``metadata`` becomes the URL parameters (version, group, methods, application, ...). The
    timestamp makes a restarted provider's node name differ from its predecessor's, exactly
    as Dubbo's does, so the new node exists before the old one is gone.
    """
    params = {k: v for k, v in registration.metadata.items() if k not in _RESERVED and v != ""}
    params.setdefault("interface", registration.service)
    params.setdefault("side", "provider")
    params.setdefault("dynamic", "true")
    params.setdefault("application", application)
    params.setdefault("timestamp", str(timestamp_ms or int(time.time() * 1000)))
    if registration.weight != DEFAULT_WEIGHT:
        params["weight"] = str(registration.weight)
    return DubboURL(
        protocol=registration.protocol,
        host=registration.host,
        port=registration.port,
        path=registration.service,
        params=frozen_mapping(params),
    )


__all__ = [
    "MalformedURL",
    "NotAProvider",
    "consumer_url",
    "key_matches",
    "matching_instance",
    "provider_instance",
    "provider_url",
]
