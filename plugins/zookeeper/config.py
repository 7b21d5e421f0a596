"""The ZooKeeper registry's configuration (validated before anything connects)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.discovery.backoff import Backoff

__all__ = ["Backoff", "Mode", "ZooKeeperConfig"]

Mode = Literal["interface", "application", "plain"]
"""How a subscribed service is laid out in ZooKeeper (see docs/registries.md)."""


def _check_path(value: str) -> str:
    if not value.startswith("/") or (len(value) > 1 and value.endswith("/")) or "//" in value:
        raise ValueError("must be an absolute znode path without a trailing slash")
    return value


class ZooKeeperConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: str = "127.0.0.1:2181"
    """Comma-separated ``host:port`` list, optionally followed by a chroot (``/chroot``)."""
    root: str = "/dubbo"
    """Dubbo's interface-level root (``dubbo.registry.group``); also holds mapping/metadata."""
    services_root: str = "/services"
    """Dubbo 3 application-level root (ZookeeperServiceDiscovery's ``rootPath``)."""
    plain_root: str = "/meshagent/services"
    """Where services that are not Dubbo's are published and found."""
    config_root: str = "/dubbo/config"
    """Config source: key (group, data_id) is the node ``{config_root}/{group}/{data_id}``
    (Dubbo's ZooKeeper config center layout)."""
    session_timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, ge=0)
    """How long ``start()`` waits for the first session; past it the agent runs disconnected."""
    require_connection: bool = False
    """Fail ``start()`` instead of running disconnected when the first connect times out."""
    reconnect: Backoff = Backoff()
    default_mode: Mode = "interface"
    services: dict[str, Mode] = {}
    """Mode per subscribed service name, overriding ``default_mode``."""
    consumer_host: str | None = None
    """When set, each interface-level subscription is published as a Dubbo consumer URL under
    ``/dubbo/{interface}/consumers`` (what dubbo-admin lists), with this address."""
    application: str = "meshagent"
    """The ``application`` parameter of URLs the agent writes when the caller gives none."""
    dubbo_protocol: str = "dubbo"
    """The protocol whose endpoint an application-level instance is reached on."""

    @field_validator("root", "services_root", "plain_root", "config_root")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _check_path(value)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        servers, slash, chroot = value.partition("/")
        if slash:
            _check_path("/" + chroot)
        entries = [entry.strip() for entry in servers.split(",")]
        if not entries or any(not entry for entry in entries):
            raise ValueError("must list at least one host:port, comma separated")
        for entry in entries:
            host, colon, port = entry.rpartition(":")
            if colon and (not host or not port.isdigit() or not 0 < int(port) < 65536):
                raise ValueError(f"bad host:port {entry!r}")
        return value

    def mode_of(self, service: str) -> Mode:
        return self.services.get(service, self.default_mode)
