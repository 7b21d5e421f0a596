"""Request and response bodies of the OpenAPI (they are the contract in openapi.yaml)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.discovery.validate import checked_host


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(Model):
    status: str


class RegistryState(Model):
    name: str
    connected: bool
    since: float = Field(description="Seconds since the epoch of the last change of state")
    detail: str = ""


class WorkerState(Model):
    id: int
    pid: int
    serving: bool
    ready: bool


class Readiness(Model):
    ready: bool
    reasons: list[str]
    # A registry lost after the first snapshot does not make the agent unready (it serves
    # from the last known endpoints), but the probe says so, and since when.
    registries: list[RegistryState]
    # With ``workers: N`` (docs/workers.md): each worker process and whether it serves.
    workers: list[WorkerState] = []


class ServiceSummary(Model):
    name: str
    protocol: str
    registry: str
    endpoints: int
    available: int


class InstanceView(Model):
    id: str
    host: str
    port: int
    weight: int
    metadata: dict[str, str]
    revision: int
    healthy: bool = Field(description="The active health check's verdict")
    ejected: bool = Field(description="Ejected by outlier detection now")
    ejected_for_s: float = Field(description="Seconds until the ejection ends (0 if not ejected)")
    draining: bool = Field(
        description="The provider said it is going away (Dubbo READONLY): no new requests "
        "until that process is gone"
    )
    times_ejected: int
    active_requests: int


class EndpointStats(InstanceView):
    requests: int
    failures: int
    connect_failures: int
    ejections: int
    priority: int | None = Field(
        default=None,
        description="Locality priority level (0 the agent's zone, 1 its region, 2 its data "
        "center, 3 another data center); null without locality-aware balancing, or for an "
        "endpoint of another data center when the service is local-only",
    )


class PriorityLevelView(Model):
    priority: int
    locality: str = Field(description="zone, region, dc or remote: what it shares with the agent")
    endpoints: int
    available: int
    load: float = Field(description="The share of new calls this level gets now (0 to 1)")
    requests: int = Field(description="Requests its endpoints have served (the traffic it got)")


class ClusterView(Model):
    name: str
    lb_policy: str
    registry: RegistryState
    initialized: bool
    revision: int | None
    panic: bool = Field(description="No endpoint available: balancing over all of them")
    endpoints: list[EndpointStats]
    levels: list[PriorityLevelView] = Field(
        default_factory=list,
        description="Locality-aware balancing's priority levels; empty when it is off",
    )


class RegistrationRequest(Model):
    host: Annotated[str, AfterValidator(checked_host)] = Field(min_length=1, max_length=255)
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=0, le=10000)] = 100
    metadata: dict[str, str] = Field(default_factory=dict)
    ttl_s: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None,
        description="If set, renew (PUT again) within this many seconds or the agent "
        "withdraws the registration",
    )


class RegistrationView(Model):
    service: str
    instance_id: str
    host: str
    port: int
    weight: int
    metadata: dict[str, str]
    registry: str
    ttl_s: float | None


class InvokeResponse(Model):
    result: Any = Field(description="The provider's answer as JSON")
    attachments: dict[str, Any] = Field(default_factory=dict)
    endpoint: str = Field(description="host:port of the provider that answered")


class ClusterLoadView(Model):
    cluster: str
    in_flight: int
    pending: int
    overflows: int = Field(description="Calls refused by the cluster's circuit-breaker limits")


class RulesView(Model):
    """The governance rules in force (docs/governance.md)."""

    source: str = Field(description='"static" (the config file) or the config-source key')
    version: str | None = Field(description="The config source's version in force, if any")
    applied_at: float = Field(description="Seconds since the epoch when it was put in force")
    rejected_version: str | None = Field(
        None, description="The last version refused (the previous rules stayed in force)"
    )
    errors: list[str] = Field(default_factory=list, description="Why, one path: message each")
    watch_error: str = ""
    rules: dict[str, Any] = Field(description="The rule set in force, as written")
    counters: dict[str, int]
    clusters: list[ClusterLoadView]


class EffectiveRule(Model):
    route: dict[str, str] = Field(description="The five-tuple asked about (omitted: empty)")
    rule_index: int | None = Field(description="Position in ``rules``; null: no rule applies")
    rule: dict[str, Any] | None
    circuit_breaker: dict[str, Any] | None
