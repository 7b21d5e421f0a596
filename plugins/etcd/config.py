"""The etcd registry's configuration (validated before anything connects)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.discovery.backoff import Backoff


def _check_endpoint(entry: str) -> str:
    host, colon, port = entry.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad host:port {entry!r}")
    return entry


class EtcdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[str] = Field(default_factory=lambda: ["127.0.0.1:2379"], min_length=1)
    """``host:port`` of the etcd members' client URLs (plain gRPC, no TLS); tried in turn."""
    prefix: str = "/meshagent/services"
    """Keys are ``{prefix}/{service}/{instance_id}`` (see docs/registries.md)."""
    config_prefix: str = "/dubbo/config"
    """Config source: key (group, data_id) is ``{config_prefix}/{group}/{data_id}`` (Dubbo's
    etcd config center layout)."""
    lease_ttl_s: int = Field(10, ge=2, le=3600)
    """TTL of the lease every registration of this agent is attached to. A partitioned agent's
    instances vanish this long after its last keepalive. etcd rounds up to its own minimum."""
    keepalive_interval_s: float | None = Field(None, gt=0)
    """How often the lease is refreshed; a third of the TTL when unset."""
    connect_timeout_s: float = Field(10.0, ge=0)
    """How long ``start()`` waits for the first connection; past it the agent runs
    disconnected (and keeps trying)."""
    require_connection: bool = False
    """Fail ``start()`` instead of running disconnected when the first connect times out."""
    request_timeout_s: float = Field(5.0, gt=0)
    """Bound on every unary call (range, txn, lease grant/keepalive/revoke)."""
    grpc_keepalive_s: float = Field(10.0, ge=5)
    """HTTP/2 ping interval on the connection, so a frozen or half-open server is noticed
    while only the watch stream is in use. etcd refuses pings more frequent than its
    ``--grpc-keepalive-min-time`` (5 s by default), hence the floor."""
    grpc_keepalive_timeout_s: float = Field(5.0, gt=0)
    reconnect: Backoff = Backoff()

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return [_check_endpoint(entry.strip()) for entry in value]

    @field_validator("prefix", "config_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError("must start with '/', without a trailing slash or empty component")
        return value

    @model_validator(mode="after")
    def _keepalive_within_ttl(self) -> EtcdConfig:
        if self.keepalive_interval_s is not None and self.keepalive_interval_s >= self.lease_ttl_s:
            raise ValueError("keepalive_interval_s must be less than lease_ttl_s")
        return self

    @property
    def keepalive_every_s(self) -> float:
        return self.keepalive_interval_s or self.lease_ttl_s / 3
