"""The agent's configuration: one YAML file, validated whole before anything starts.

Models forbid unknown fields, so a misspelt key is an error with its path rather than a
silently ignored setting. Plugin settings (``config:`` blocks) are validated by the model
the named plugin declares, once the plugin is loaded (see :func:`validate_plugins`).

Environment overrides: ``MESHAGENT_ADMIN__PORT=15001`` sets ``admin.port``; ``__``
separates path parts, numbers index lists, and the value is read as YAML
(``MESHAGENT_LISTENERS__0__PORT=9001``). Only a variable whose first part names a
top-level setting is an override; any other ``MESHAGENT_*`` variable is ignored, with one
warning line naming it (:func:`ignored_env_variables`): Kubernetes gives every pod
``MESHAGENT_SERVICE_HOST``, ``MESHAGENT_PORT`` and the like for a Service named
``meshagent``, and an agent must not refuse to start over them. An override whose deeper
path is wrong is a configuration error naming the variable.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from agent.addresses import parse_address
from agent.discovery.config_source import check_part
from agent.errors import ConfigError, PluginError
from agent.governance.rules import RuleSet
from agent.plugins import PluginKind, format_validation_errors, load

ENV_PREFIX = "MESHAGENT_"
# MESHAGENT_ variables that are not settings: the config file's path, and the switch that
# runs the compiled modules from source (agent/compiled.py).
NOT_SETTINGS = frozenset({"MESHAGENT_CONFIG", "MESHAGENT_PURE_PYTHON"})


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _check_bind_port(value: int) -> int:
    # 0 asks the kernel for a free port: useful for tests and for "let me see where".
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {value!r}; one of {', '.join(LOG_LEVELS)}")
    return level


Port = Annotated[int, AfterValidator(_check_port)]
BindPort = Annotated[int, AfterValidator(_check_bind_port)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminConfig(Strict):
    """The localhost OpenAPI. Bound to loopback unless the config says otherwise."""

    host: str = "127.0.0.1"
    port: BindPort = 15000
    # A request body over this is refused 413. 4 MiB, Dapr's default (and gRPC's message
    # limit): a Dubbo call the listener takes (frames up to 8 MiB) is smaller as hessian2
    # than as JSON, so some go through the listener and not here (docs/api.md).
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    # Requests that change state (registrations) from a non-loopback client are refused
    # unless this is set: binding to 0.0.0.0 for metrics must not open registration.
    allow_remote_writes: bool = False
    # Invocations (/v1/invoke/..., any method: the HTTP invocation passes GET through to
    # the provider) from a non-loopback client are refused unless this is set: the API
    # bound wide must not let the network call providers as the local app (issue 25).
    allow_remote_invoke: bool = False
    # A request not received whole this long after its first byte is answered 408 and
    # its connection closed (slowloris); a keep-alive connection idle this long is closed.
    request_timeout_s: PositiveSeconds = 10.0
    idle_timeout_s: PositiveSeconds = 75.0
    # Open API connections at most; more are closed as they are accepted (and counted,
    # and logged), as on every listener (agent/runtime/admission.py).
    max_connections: Annotated[int, Field(ge=1)] = 256


class RegistryConfig(Strict):
    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)


class LbConfig(Strict):
    policy: str = "round_robin"
    config: dict[str, Any] = Field(default_factory=dict)
    locality: bool = True
    """Balance by priority levels of locality (agent/cluster/locality.py) when the agent's
    ``locality`` is set: its zone first, then region, data center, other data centers."""
    overprovisioning_factor: Annotated[float, Field(ge=1, le=100)] = 1.4
    """A level keeps all its traffic while ``available / endpoints * factor ≥ 1`` (Envoy's
    default 1.4: 72% available), and spills the rest to the next level in proportion."""
    cross_dc: bool = True
    """False: endpoints of other data centers get no call (the service stays local)."""


class LocalityConfig(Strict):
    """Where this agent runs; endpoints carry the same as registry labels ``dc``,
    ``region``, ``zone``. Empty parts are unknown (they match anything)."""

    dc: str = Field(default="", max_length=128)
    region: str = Field(default="", max_length=128)
    zone: str = Field(default="", max_length=128)


class HealthCheckConfig(Strict):
    """Active checks, after Envoy: thresholds and jitter so checks do not synchronise."""

    enabled: bool = True
    checker: str = "tcp"
    interval_s: PositiveSeconds = 5.0
    timeout_s: PositiveSeconds = 1.0
    jitter_s: Annotated[float, Field(ge=0)] = 0.5
    healthy_threshold: Annotated[int, Field(ge=1)] = 2
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 3
    config: dict[str, Any] = Field(default_factory=dict)


class OutlierConfig(Strict):
    """Passive ejection, after Envoy's outlier detection (consecutive failures)."""

    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    base_ejection_s: PositiveSeconds = 30.0
    max_ejection_s: PositiveSeconds = 300.0
    # Envoy's semantics: at least one host may always be ejected, whatever the percent.
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] = 10


OptionsModel = TypeVar("OptionsModel", bound=BaseModel)


class ServiceConfig(Strict):
    name: str = Field(min_length=1)
    registry: str = "local"
    protocol: str = "tcp"
    # Registry selectors, e.g. Dubbo's version and group.
    attributes: dict[str, str] = Field(default_factory=dict)
    lb: LbConfig = Field(default_factory=LbConfig)
    health: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)
    connect_timeout_s: PositiveSeconds = 1.0
    # Connection attempts on distinct endpoints before the client sees an error.
    connect_attempts: Annotated[int, Field(ge=1, le=10)] = 2
    # The protocol's per-service settings (Dubbo: cluster strategy, timeouts, retries, per
    # method), validated by the protocol plugin's ``service_options_model``.
    options: dict[str, Any] = Field(default_factory=dict)
    # ``options`` through that model, kept: validate_plugins sets it, so that protocol
    # paths read validated options without validating them again per call.
    _protocol_options: BaseModel | None = PrivateAttr(default=None)

    def protocol_options(self, model: type[OptionsModel]) -> OptionsModel:
        """``options`` as ``model`` (the protocol plugin's ``service_options_model``):
        kept from validate_plugins, or validated now and kept (a config built in code)."""
        kept = self._protocol_options
        if type(kept) is not model:
            kept = model.model_validate(self.options)
            self._protocol_options = kept
        return kept


class ListenerConfig(Strict):
    name: str | None = None
    host: str = "127.0.0.1"
    port: Port
    service: str
    protocol: str = "tcp"
    config: dict[str, Any] = Field(default_factory=dict)
    # Open client connections at most; more are closed as they are accepted (and counted,
    # and logged). Every listener also draws on the agent-wide ``max_connections``.
    max_connections: Annotated[int, Field(ge=1)] = 1024
    # Request-aware listeners (Dubbo, Thrift): bytes of partly received requests held
    # across the listener's connections at most; past it, connections holding part of a
    # request are not read until others complete theirs (agent/runtime/admission.py).
    max_buffered_bytes: Annotated[int, Field(ge=64 * 1024)] = 64 * 1024 * 1024
    # ... and a request still arriving this long after its first byte closes its
    # connection (a client that starts requests and never finishes them).
    request_timeout_s: PositiveSeconds = 60.0

    @property
    def display_name(self) -> str:
        return self.name or f"{self.protocol}:{self.port}"


class CaptureServiceConfig(Strict):
    """Addresses an app dials that stand for a service: ``10.96.0.10`` (any port) or
    ``10.96.0.10:20880`` / ``[fd00::10]:20880`` (that port only)."""

    service: str
    addresses: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _addresses_parse(self) -> CaptureServiceConfig:
        for address in self.addresses:
            parse_address(address)  # raises ValueError with the reason
        return self


class GatewayTlsConfig(Strict):
    """The link's mutual TLS: this gateway's certificate (served to peers and presented
    to them) and the CA whose certificates peers must have. Read again when the files
    change (agent/tls.py)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class GatewayPeerConfig(Strict):
    """The gateways of another data center."""

    dc: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    addresses: list[Annotated[str, AfterValidator(_host_port)]] = Field(min_length=1)
    # The name their certificates carry (checked like any TLS server name).
    server_name: str = Field(default="meshagent-gateway", min_length=1)


class GatewayImportConfig(Strict):
    """A service of another data center, served here: a port that relays each connection
    to that data center's gateways, registered in this gateway's registry as an endpoint
    of ``service`` labelled ``dc``."""

    service: str = Field(min_length=1)
    dc: str = Field(min_length=1, max_length=128)
    host: str = "127.0.0.1"
    port: Annotated[int, AfterValidator(_check_port)]
    # The address this data center's agents reach the port on (default: ``host``).
    advertise_host: str = ""


class GatewayImportFromConfig(Strict):
    """Import what a peer data center exports, as it changes: each exported service (that
    ``services`` matches) gets a port here (``host``, chosen by the kernel) and a
    registration in ``registry`` labelled ``dc``, removed when the peer stops exporting it
    or has no endpoint of it left; while no gateway of that data center can be reached,
    the imports stay for ``grace_s``, then are withdrawn."""

    dc: str = Field(min_length=1, max_length=128)
    registry: str = Field(min_length=1)
    services: list[str] = Field(default_factory=lambda: ["*"])
    host: str = "127.0.0.1"
    advertise_host: str = ""
    grace_s: Annotated[float, Field(ge=0, le=86400)] = 60.0


class GatewayConfig(Strict):
    """Gateway role (docs/gateway.md): this process links its data center to others."""

    dc: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    """The link port peer gateways connect to (mutual TLS)."""
    tls: GatewayTlsConfig
    export: list[str] = Field(default_factory=list)
    """Services (names or fnmatch patterns of configured services) peers may call here;
    none by default."""
    peers: list[GatewayPeerConfig] = Field(default_factory=list)
    imports: list[GatewayImportConfig] = Field(default_factory=list)
    import_from: list[GatewayImportFromConfig] = Field(default_factory=list)
    handshake_timeout_s: PositiveSeconds = 5.0
    """A link's TLS handshake and HTTP/2 settings must be done within this; a CONNECT is
    answered within it, and a PING."""
    link_ping_s: Annotated[float, Field(ge=0, le=3600)] = 15.0
    """A link silent this long gets a PING (both sides); 0: never."""


class CaptureConfig(Strict):
    """The transparent capture listener (iptables REDIRECT target, docs/capture.md)."""

    enabled: bool = False
    # REDIRECT from OUTPUT delivers to 127.0.0.1 (and ::1): loopback is enough.
    host: str = "127.0.0.1"
    port: BindPort = 15001
    # Also listen on ::1 for ip6tables-redirected connections.
    ipv6: bool = False
    # How long to wait for a client's first bytes before treating it as raw TCP: short,
    # because server-first protocols (MySQL, SMTP) send nothing until the server speaks.
    sniff_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.25
    # Destination ports never sniffed (always raw TCP, no wait).
    opaque_ports: list[Port] = Field(default_factory=list)
    # Destinations that are neither a virtual address nor a known endpoint: relay them to
    # the original address (true) or close them (false).
    passthrough: bool = True
    services: list[CaptureServiceConfig] = Field(default_factory=list)


class AppHealthConfig(Strict):
    """The local app's health check: a TCP connect to the app (or ``port``)."""

    enabled: bool = True
    checker: str = "tcp"
    port: Port | None = None
    interval_s: PositiveSeconds = 2.0
    timeout_s: PositiveSeconds = 1.0
    healthy_threshold: Annotated[int, Field(ge=1)] = 1
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 3
    config: dict[str, Any] = Field(default_factory=dict)


InboundProtocol = Literal["dubbo", "http"]


def _inbound_protocols() -> list[InboundProtocol]:
    return ["dubbo", "http"]


class InboundConfig(Strict):
    """The inbound listener in front of the local app."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: BindPort = 15006
    app_host: str = "127.0.0.1"
    app_port: Port | None = None
    # Open connections at most; more are closed at once (and counted).
    max_connections: Annotated[int, Field(ge=1)] = 1024
    connect_timeout_s: PositiveSeconds = 1.0
    health: AppHealthConfig = Field(default_factory=AppHealthConfig)
    # Protocols whose calls the inbound listener reads (per-call metrics, a server span
    # continuing the caller's trace, the call context, the access log), told from a
    # connection's first bytes; anything else (HTTP/2 and gRPC among them, for now), or a
    # client that sends nothing within ``sniff_timeout_s`` (a server-first protocol), is
    # relayed as TCP. Empty: relay everything.
    protocols: list[InboundProtocol] = Field(default_factory=_inbound_protocols)
    sniff_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.25

    @model_validator(mode="after")
    def _app_port_when_enabled(self) -> InboundConfig:
        if self.enabled and self.app_port is None:
            raise ValueError("app_port is required when inbound is enabled")
        return self


def _default_registries() -> list[RegistryConfig]:
    return [RegistryConfig(name="local", type="local")]


class AppConfig(Strict):
    """The local app's identity: the ``from``/``from_cluster`` of its outbound calls (the
    five-tuple that metrics and governance rules address) and the ``to`` of inbound ones."""

    name: str = ""
    cluster: str = ""


class ConfigApiConfig(Strict):
    """``/v1/config``: the local app's view of the config source."""

    allow_writes: bool = False
    """PUT and DELETE are refused (403) unless set; like every state-changing route they
    are also accepted from loopback only unless ``admin.allow_remote_writes``."""
    watch_max_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """A watch stream ends after this long (the client reconnects): nothing is held forever."""


class DynamicSettingsConfig(Strict):
    """Where the agent's own run-time settings live in the config source."""

    group: str = "meshagent"
    data_id: str = "settings"


class GovernanceSourceConfig(Strict):
    """Where run-time rules live: a key of a registry's config source (docs/governance.md)."""

    registry: str = Field(min_length=1)
    group: str = "meshagent"
    # Default: "{app.name}.rules".
    data_id: str | None = None

    @model_validator(mode="after")
    def _key_parts(self) -> GovernanceSourceConfig:
        check_part("group", self.group)  # ValueError with the rule
        if self.data_id is not None:
            check_part("data_id", self.data_id)
        return self


class GovernanceConfig(Strict):
    """Traffic governance: the static rules, and optionally a config-source key whose
    rule set, while present and valid, replaces them."""

    # The agent's own zone, for rules that prefer endpoints in the same zone.
    zone: str = ""
    rules: RuleSet = Field(default_factory=RuleSet)
    source: GovernanceSourceConfig | None = None


class MetricsConfig(Strict):
    """Per-call metrics (agent/telemetry/call_metrics.py); on by default, cheap."""

    enabled: bool = True
    # Method labels per service; later methods are counted as method="_other".
    max_methods: Annotated[int, Field(ge=1, le=10_000)] = 50


class TracingConfig(Strict):
    """OpenTelemetry spans exported over OTLP (agent/telemetry/tracing.py); needs the
    ``tracing`` extra. Off by default."""

    enabled: bool = False
    exporter: Literal["otlp_grpc", "otlp_http"] = "otlp_grpc"
    # Default: the collector on this host (4317 for gRPC, 4318/v1/traces for HTTP).
    endpoint: str = ""
    # For traces that start here; a caller's sampled flag is kept (parent-based).
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    # Spans waiting for export; past it new spans are dropped and counted.
    max_queue: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 512
    schedule_delay_s: PositiveSeconds = 1.0
    export_timeout_s: PositiveSeconds = 5.0


class AccessLogConfig(Strict):
    """One JSON line per call (agent/telemetry/access_log.py). Off by default."""

    enabled: bool = False
    path: str = "-"  # "-": stdout
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0


class CallContextConfig(Strict):
    """Deadlines and loop protection (agent/telemetry/context.py)."""

    # Off: no hop count, path or budget is read or sent (a Dubbo listener then forwards
    # request bodies untouched unless tracing adds a traceparent).
    enabled: bool = True
    # A call that already went through this many agents is refused (a loop).
    max_hops: Annotated[int, Field(ge=1, le=1000)] = 16
    # Longer budgets (from a header, a Dubbo timeout attachment) are clamped to this.
    max_timeout_s: PositiveSeconds = 300.0


class TelemetryConfig(Strict):
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)
    context: CallContextConfig = Field(default_factory=CallContextConfig)


class AgentConfig(Strict):
    app: AppConfig = Field(default_factory=AppConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    registries: list[RegistryConfig] = Field(default_factory=_default_registries)
    services: list[ServiceConfig] = Field(default_factory=list)
    listeners: list[ListenerConfig] = Field(default_factory=list)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    inbound: InboundConfig = Field(default_factory=InboundConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    locality: LocalityConfig = Field(default_factory=LocalityConfig)
    gateway: GatewayConfig | None = None

    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    drain_timeout_s: Annotated[float, Field(ge=0)] = 15.0
    max_connections: Annotated[int, Field(ge=1)] | None = None
    """Client connections open at once across every listener; unset: half of the
    open-file limit left after a headroom for the agent's own descriptors and the API's
    ``admin.max_connections`` (agent/runtime/admission.py)."""
    log_level: Annotated[str, AfterValidator(_check_log_level)] = "INFO"
    config_source: str | None = None
    """The registry whose config source serves ``/v1/config`` and dynamic settings; by
    default the first registry that has one."""
    config_api: ConfigApiConfig = Field(default_factory=ConfigApiConfig)
    dynamic_settings: DynamicSettingsConfig | None = None
    """Watch this document and apply it (LB policy, endpoint weights per service); off when
    unset. See agent/runtime/settings.py for its shape."""
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = 1
    """Worker processes serving the data plane (docs/workers.md). 1: one process does
    everything, as always. N > 1: a supervisor keeps the registries, registrations, health
    checks, rules and the API, and N workers serve every listener on SO_REUSEPORT sockets.
    ``auto``: the CPUs this process may use (cgroup quota and affinity)."""
    worker_watchdog_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """A worker whose event loop does not answer the supervisor's ping this long is killed
    and replaced."""

    @model_validator(mode="after")
    def _references_resolve(self) -> AgentConfig:
        errors: list[str] = []
        registry_names = [r.name for r in self.registries]
        _duplicates("registries", "name", registry_names, errors)
        if self.config_source is not None and self.config_source not in registry_names:
            errors.append(
                f"config_source: unknown registry {self.config_source!r}; "
                f"configured: {', '.join(registry_names) or 'none'}"
            )
        service_names = [s.name for s in self.services]
        _duplicates("services", "name", service_names, errors)
        for i, service in enumerate(self.services):
            if service.registry not in registry_names:
                errors.append(
                    f"services[{i}].registry: unknown registry {service.registry!r}; "
                    f"configured: {', '.join(registry_names) or 'none'}"
                )
        for i, listener in enumerate(self.listeners):
            if listener.service not in service_names:
                errors.append(
                    f"listeners[{i}].service: unknown service {listener.service!r}; "
                    f"configured: {', '.join(service_names) or 'none'}"
                )
        _port_clashes(self._bound_sockets(), errors)
        if self.gateway is not None:
            _gateway_references(self, service_names, errors)
        _relay_loops(self, errors)
        for i, captured in enumerate(self.capture.services):
            if captured.service not in service_names:
                errors.append(
                    f"capture.services[{i}].service: unknown service {captured.service!r}; "
                    f"configured: {', '.join(service_names) or 'none'}"
                )
        source = self.governance.source
        if source is not None:
            if source.registry not in registry_names:
                errors.append(
                    f"governance.source.registry: unknown registry {source.registry!r}; "
                    f"configured: {', '.join(registry_names) or 'none'}"
                )
            if source.data_id is None and not self.app.name:
                errors.append("governance.source.data_id: required when app.name is not set")
        if errors:
            # A ValueError inside a validator would be flattened into one message; the
            # caller unpacks this one into lines with their own paths.
            raise ValueError("\n".join(errors))
        return self

    def _bound_sockets(self) -> list[tuple[str, str, int]]:
        """(config path, host, port) of every socket the agent listens on."""
        bound = [("admin.port", self.admin.host, self.admin.port)]
        bound += [
            (f"listeners[{i}].port", listener.host, listener.port)
            for i, listener in enumerate(self.listeners)
        ]
        if self.capture.enabled:
            bound.append(("capture.port", self.capture.host, self.capture.port))
        if self.inbound.enabled:
            bound.append(("inbound.port", self.inbound.host, self.inbound.port))
        if self.gateway is not None:
            bound.append(("gateway.port", self.gateway.host, self.gateway.port))
            bound += [
                (f"gateway.imports[{i}].port", imported.host, imported.port)
                for i, imported in enumerate(self.gateway.imports)
            ]
        return bound


def _gateway_references(config: AgentConfig, services: list[str], errors: list[str]) -> None:
    gateway = config.gateway
    assert gateway is not None
    for i, pattern in enumerate(gateway.export):
        if not fnmatch.filter(services, pattern):
            errors.append(f"gateway.export[{i}]: {pattern!r} matches no configured service")
    peers = [peer.dc for peer in gateway.peers]
    _duplicates("gateway.peers", "dc", peers, errors)
    if gateway.dc in peers:
        errors.append(f"gateway.peers: {gateway.dc!r} is this gateway's own data center")
    for i, imported in enumerate(gateway.imports):
        if imported.service not in services:
            errors.append(
                f"gateway.imports[{i}].service: unknown service {imported.service!r} (it is "
                "registered in that service's registry)"
            )
        if imported.dc not in peers:
            errors.append(f"gateway.imports[{i}].dc: no peer for data center {imported.dc!r}")
    registries = [r.name for r in config.registries]
    for i, source in enumerate(gateway.import_from):
        if source.dc not in peers:
            errors.append(f"gateway.import_from[{i}].dc: no peer for data center {source.dc!r}")
        if source.registry not in registries:
            errors.append(
                f"gateway.import_from[{i}].registry: unknown registry {source.registry!r}; "
                f"configured: {', '.join(registries) or 'none'}"
            )
    if config.workers != 1:
        errors.append("gateway: a gateway runs as one process (workers: 1)")


_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def _port_clashes(bound: list[tuple[str, str, int]], errors: list[str]) -> None:
    # Port 0 is the kernel's choice, never a clash; a wildcard host takes the port on
    # every address, so it clashes with any host on the same port.
    for i, (path, host, port) in enumerate(bound):
        if port == 0:
            continue
        for other_path, other_host, other_port in bound[:i]:
            if port == other_port and (
                host == other_host or host in _WILDCARDS or other_host in _WILDCARDS
            ):
                errors.append(f"{path}: {port} is also {other_path} ({other_host}:{port})")
                break


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _same_socket(host: str, port: int, bound_host: str, bound_port: int) -> bool:
    if port != bound_port:
        return False
    if bound_host in _WILDCARDS:
        return _is_loopback(host) or host in _WILDCARDS
    return host == bound_host or (_is_loopback(host) and _is_loopback(bound_host))


def _relay_loops(config: AgentConfig, errors: list[str]) -> None:
    """Listeners whose configured endpoints are the listener itself (a connection would
    relay to itself until the agent runs out of descriptors), or the agent's own API
    from a listener bound beyond loopback (remote clients would reach the API as if they
    were local, past the loopback-only rules). Only the embedded registry's endpoints are
    known before the agent runs."""
    statics: dict[str, list[tuple[str, int]]] = {}
    for registry in config.registries:
        if registry.type != "local":
            continue
        for name, instances in (registry.config.get("services") or {}).items():
            for instance in instances if isinstance(instances, list) else []:
                if isinstance(instance, dict) and isinstance(instance.get("port"), int):
                    statics.setdefault(str(name), []).append(
                        (str(instance.get("host", "")), instance["port"])
                    )
    registry_of = {s.name: s.registry for s in config.services}
    local = {r.name for r in config.registries if r.type == "local"}
    admin = config.admin
    for i, listener in enumerate(config.listeners):
        if registry_of.get(listener.service) not in local:
            continue
        for host, port in statics.get(listener.service, []):
            if _same_socket(host, port, listener.host, listener.port):
                errors.append(
                    f"listeners[{i}].service: endpoint {host}:{port} of "
                    f"{listener.service!r} is this listener itself"
                )
            elif _same_socket(host, port, admin.host, admin.port) and not _is_loopback(
                listener.host
            ):
                errors.append(
                    f"listeners[{i}].service: endpoint {host}:{port} of {listener.service!r} "
                    f"is the agent's own API, relayed from {listener.host}: remote clients "
                    "would reach it as loopback; bind the listener to 127.0.0.1"
                )


def _duplicates(section: str, field: str, names: list[str], errors: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            errors.append(f"{section}[{i}].{field}: duplicate {name!r}")
        seen.add(name)


def _env_path(key: str) -> list[str]:
    return [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]


def _overrides(environ: Mapping[str, str]) -> list[str]:
    """The variables that are overrides: ``MESHAGENT_*`` naming a top-level setting."""
    return sorted(
        key
        for key in environ
        if key.startswith(ENV_PREFIX)
        and key not in NOT_SETTINGS
        and _env_path(key)[0] in AgentConfig.model_fields
    )


def ignored_env_variables(environ: Mapping[str, str]) -> list[str]:
    """``MESHAGENT_*`` variables that name no setting (and are not the config path or
    the interpreted-build switch): left alone, for the caller to warn about."""
    overrides = set(_overrides(environ))
    return sorted(
        key
        for key in environ
        if key.startswith(ENV_PREFIX) and key not in NOT_SETTINGS and key not in overrides
    )


def _display(path: list[str]) -> str:
    """An override's path as validation errors write it: ``listeners[1].port``."""
    text = ""
    for part in path:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return ``raw`` with ``MESHAGENT_A__B__0__C=value`` overrides applied."""
    for key in _overrides(environ):
        text = environ[key]
        path = _env_path(key)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _set_path(raw, path, value, key)
    return raw


def _set_path(node: Any, path: list[str], value: object, key: str) -> None:
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError([f"{key}: no list item {part!r} to override"])
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError([f"{key}: cannot override inside a scalar"])


def parse_config(raw: object) -> AgentConfig:
    """Validate a parsed document (structure and cross-references; not plugin settings)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["<root>: the configuration must be a mapping"])
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        lines: list[str] = []
        for line in format_validation_errors(exc):
            # Our model validator joins path-bearing lines into one message (one line
            # alone too: it carries its own path, so "<root>: " would only mislead).
            head, _, rest = line.partition(": ")
            lines.extend(rest.split("\n") if head == "<root>" and ": " in rest else [line])
        raise ConfigError(lines) from None


def validate_plugins(config: AgentConfig) -> None:
    """Load every plugin the config names and validate its settings; all errors at once."""
    errors: list[str] = []

    def check(
        kind: PluginKind,
        name: str,
        name_path: str,
        raw: object,
        path: str,
        options: ServiceConfig | None = None,
        options_path: str = "",
    ) -> None:
        try:
            plugin = load(kind, name)
        except PluginError as exc:
            errors.append(f"{name_path}: {exc}")
            return
        try:
            if raw is not None:
                plugin.validate_config(raw, path)
            if options is not None:
                validated = plugin.validate_service_options(options.options, options_path)
                options._protocol_options = validated
        except ConfigError as exc:
            errors.extend(exc.errors)

    for i, registry in enumerate(config.registries):
        at = f"registries[{i}]"
        check(PluginKind.REGISTRY, registry.type, f"{at}.type", registry.config, f"{at}.config")
    for i, service in enumerate(config.services):
        at = f"services[{i}]"
        lb = service.lb
        check(PluginKind.LB_POLICY, lb.policy, f"{at}.lb.policy", lb.config, f"{at}.lb.config")
        if service.health.enabled:
            health = service.health
            check(
                PluginKind.HEALTH_CHECKER,
                health.checker,
                f"{at}.health.checker",
                health.config,
                f"{at}.health.config",
            )
        check(
            PluginKind.PROTOCOL,
            service.protocol,
            f"{at}.protocol",
            None,
            "",
            service,
            f"{at}.options",
        )
    for i, listener in enumerate(config.listeners):
        at = f"listeners[{i}]"
        check(
            PluginKind.PROTOCOL,
            listener.protocol,
            f"{at}.protocol",
            listener.config,
            f"{at}.config",
        )
    if config.inbound.enabled and config.inbound.health.enabled:
        app_health = config.inbound.health
        check(
            PluginKind.HEALTH_CHECKER,
            app_health.checker,
            "inbound.health.checker",
            app_health.config,
            "inbound.health.config",
        )
    if errors:
        raise ConfigError(errors)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read, override from the environment, validate structure and plugin settings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: invalid YAML at {where}: {problem}"]) from None
    environ = os.environ if environ is None else environ
    if isinstance(raw, dict):
        raw = apply_env_overrides(raw, environ)
    try:
        config = parse_config(raw)
        validate_plugins(config)
    except ConfigError as exc:
        raise ConfigError(_blame_overrides(exc.errors, environ)) from None
    return config


def _blame_overrides(errors: list[str], environ: Mapping[str, str]) -> list[str]:
    """Each error under a path an environment variable set, with the variable named."""
    paths = [(_display(_env_path(key)), key) for key in _overrides(environ)]
    blamed = []
    for line in errors:
        for path, key in paths:
            if line.startswith((f"{path}:", f"{path}.", f"{path}[")):
                line = f"{line} (set by {key})"
                break
        blamed.append(line)
    return blamed
