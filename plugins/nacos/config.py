"""The Nacos registry's configuration (validated before anything connects)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.discovery.backoff import Backoff

Mode = Literal["interface", "application", "plain"]
"""How a subscribed service is named in Nacos (see docs/nacos.md)."""

# Nacos' rule for names it stores (ParamUtils / NamingUtils): no "@@", sane length.
_MAX_NAME = 512


def _check_address(entry: str) -> str:
    host, colon, port = entry.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad host:port {entry!r}")
    if int(port) + 1000 > 65535:
        raise ValueError(f"{entry!r}: the gRPC port (HTTP port + 1000) would be past 65535")
    return entry


def _check_name(what: str, value: str) -> str:
    if not value or len(value) > _MAX_NAME or "@@" in value or value.strip() != value:
        raise ValueError(f"{what} {value!r}: 1 to {_MAX_NAME} characters, no '@@', no blanks")
    return value


class NacosConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    server_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1:8848"], min_length=1)
    """``host:port`` of the Nacos servers' HTTP port; the client speaks gRPC to port +
    ``grpc_port_offset``."""
    grpc_port_offset: int = Field(1000, ge=1, le=64510)
    """Where the gRPC port is, from the HTTP port. Nacos servers always listen 1000 above
    their HTTP port; a load balancer or port mapping in front of them may not keep that
    distance (the SDK's ``port_offset``)."""
    namespace: str = ""
    """Namespace id; empty is Nacos' ``public``. An unknown namespace is refused by Nacos 3:
    registrations fail with its error and status says so."""
    group: str = "DEFAULT_GROUP"
    """Nacos group of services and registrations (Dubbo's ``registry.group`` default)."""
    username: str | None = None
    password: str | None = None
    context_path: str = "/nacos"
    cluster: str = "DEFAULT"
    """Cluster of the instances this agent registers (a registration's ``nacos.cluster``
    metadata entry overrides it)."""
    clusters: list[str] = Field(default_factory=list)
    """Only see instances of these clusters (all when empty); a subscription's ``clusters``
    attribute (comma separated) overrides it."""
    ephemeral: bool = True
    """Ephemeral instances live as long as this agent's gRPC connection; persistent ones stay
    until deregistered (and are health-checked by the server). Per registration:
    ``nacos.ephemeral`` metadata entry."""
    default_mode: Mode = "interface"
    services: dict[str, Mode] = Field(default_factory=dict)
    """Mode per subscribed service name, overriding ``default_mode``."""
    application: str = "meshagent"
    """The ``application`` parameter of Dubbo providers the agent registers for the app."""
    dubbo_protocol: str = "dubbo"
    """The protocol whose endpoint an application-level instance is reached on."""
    connect_timeout_s: float = Field(10.0, ge=0)
    """How long ``start()`` waits for the first connection; past it the agent runs
    disconnected (and keeps trying)."""
    require_connection: bool = False
    """Fail ``start()`` instead of running disconnected when the first connect times out."""
    request_timeout_s: float = Field(5.0, gt=0)
    """Bound on every call to Nacos (register, query, publish)."""
    health_interval_s: float = Field(1.0, gt=0)
    """How often the connection is checked; a change re-sends registrations and re-reads
    subscriptions."""
    restart_grace_s: float = Field(10.0, ge=0)
    """After a reconnect, instances missing from Nacos' answers are kept this long: a restarted
    Nacos server knows no instances until their owners re-register, and consumers must not
    see an empty set meanwhile."""
    config_poll_s: float = Field(5.0, gt=0)
    """Config watches also re-read this often (see docs/nacos.md: the SDK can drop a change)."""
    reconnect: Backoff = Backoff(base_s=0.5, max_s=30.0)
    """Pacing of retries when the client cannot even be created (bad address, refused)."""
    work_dir: str | None = None
    """Where nacos-sdk-python keeps its logs and failover cache; a private temporary
    directory when unset (it would otherwise write to ~/logs and ~/nacos)."""

    @field_validator("server_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_check_address(entry.strip()) for entry in value]

    @field_validator("group", "application", "cluster")
    @classmethod
    def _names(cls, value: str) -> str:
        return _check_name("name", value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return value if value == "" else _check_name("namespace", value)

    def mode_of(self, service: str) -> Mode:
        return self.services.get(service, self.default_mode)
