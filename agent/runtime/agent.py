"""The agent: builds registries, clusters and listeners from the config and runs them.

Its public methods are what the API layer may call; nothing outside reaches into the
plugins it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.calls import Calls, Route
from agent.cluster.cluster import Cluster, HealthPolicy
from agent.cluster.lb import LoadBalancerFactory
from agent.cluster.locality import Locality, PriorityLevels
from agent.cluster.outlier import OutlierPolicy
from agent.config import AgentConfig, ListenerConfig, ServiceConfig
from agent.discovery.config_source import ConfigKey, ConfigSource
from agent.discovery.registry import Registry, Subscription
from agent.discovery.types import (
    Registration,
    RegistryStatus,
    ServiceKey,
    Update,
    frozen_mapping,
)
from agent.discovery.validate import screen
from agent.errors import (
    ConfigError,
    DrainingError,
    InvokeNotSupported,
    MeshAgentError,
    UnknownServiceError,
)
from agent.gateway.gateway import Gateway
from agent.governance.policy import GovernancePolicy
from agent.governance.rules import RuleSet
from agent.governance.table import CompiledRule
from agent.plugins import NamesServices, PluginKind, load
from agent.runtime.admission import (
    BufferBudget,
    ConnectionBudget,
    Refusals,
    default_budget,
    gated,
)
from agent.runtime.capture import CaptureListener
from agent.runtime.dynamic import DocumentStatus, WatchedDocument
from agent.runtime.health import HealthChecker, HealthScheduler
from agent.runtime.inbound import InboundListener
from agent.runtime.protocols import (
    HttpInvokeRequest,
    HttpInvokeResult,
    InvokeRequest,
    InvokeResult,
    ListenerContext,
    ListenerStats,
    ProtocolSupport,
)
from agent.runtime.registrations import Registrations
from agent.runtime.settings import DynamicSettings
from agent.telemetry import setup as telemetry
from agent.telemetry.call_window import CallWindow
from agent.telemetry.loop_lag import LoopLag
from agent.telemetry.recent_failures import RecentFailures

log = logging.getLogger(__name__)


class StartupError(MeshAgentError):
    """The agent cannot start as configured (a port in use, a plugin that fails to build)."""


class Role(enum.Enum):
    """What this process of the agent does (docs/workers.md)."""

    # Everything, in one process (``workers: 1``).
    SINGLE = "single"
    # Registries, registrations, health checks, rules, settings and the API; no listener.
    SUPERVISOR = "supervisor"
    # Listeners, capture and inbound; the mesh's state streamed from the supervisor.
    WORKER = "worker"


class MeshPublisher:
    """What the supervisor tells its workers as it happens (agent/runtime/supervisor.py);
    these no-ops in a single process."""

    def cluster_update(self, cluster: Cluster, update: Update) -> None:
        pass

    def rules(self, rules: RuleSet | None) -> None:
        pass

    def settings(self, settings: DynamicSettings | None) -> None:
        pass


@dataclass
class Listener:
    config: ListenerConfig
    context: ListenerContext
    server: asyncio.Server | None = None
    # Connections closed at accept, over this listener's or the agent's limit.
    refusals: Refusals | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        sockname = self.server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])


class Agent:
    def __init__(
        self, config: AgentConfig, role: Role = Role.SINGLE, worker: str = "", workers: int = 1
    ) -> None:
        """``worker``: this worker's id; ``workers``: how many serve (Role.WORKER)."""
        self.config = config
        self.role = role
        self.worker = worker
        self.started_at = time.time()
        self.loop_lag = LoopLag()
        self.calls = Calls(config.app.name, config.app.cluster)
        self.telemetry = telemetry.install(self.calls, config.telemetry, worker)
        # Set by the supervisor: its workers follow every change (agent/runtime/supervisor.py).
        self.publisher = MeshPublisher()
        # Set by the supervisor: why its workers are not ready (readiness), and what they are.
        self.workers_not_ready: Callable[[], list[str]] = list
        self.describe_workers: Callable[[], list[dict[str, Any]]] = list
        # Set by the supervisor: endpoint statistics summed over the workers (/v1/clusters).
        self.endpoint_stats: (
            Callable[[], Awaitable[dict[tuple[str, str], dict[str, int]]]] | None
        ) = None
        # The status page's data: the last minute's calls and the failed ones of late.
        metrics = self.telemetry.metrics
        self.call_window = CallWindow(metrics.collect if metrics is not None else None)
        self.recent_failures = metrics.failures if metrics is not None else RecentFailures()
        # Wall-clock time of each service's last discovery update (metrics: its age).
        self.last_update: dict[str, float] = {}
        # Identifies the config in force (metrics), so a rollout can be followed.
        self.config_version = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
        # Governance: the static rules now; a config-source key's, once started.
        governance = config.governance
        # A worker's part of agent-wide rate limits and retry floors (docs/workers.md).
        share = 1 / workers if role is Role.WORKER else 1.0
        own_dc = config.gateway.dc if config.gateway is not None else config.locality.dc
        self.governance = GovernancePolicy(
            governance.rules, governance.zone, self.calls.clock, share=share, local_dc=own_dc
        )
        self.calls.policies.append(self.governance)
        self.calls.observers.append(self.governance)
        self.rules_document: WatchedDocument[RuleSet] | None = None
        # A worker never talks to a registry: the supervisor streams it the clusters.
        self.registries: dict[str, Registry] = {
            r.name: load(PluginKind.REGISTRY, r.type).build(r.config, f"registries[{i}].config")
            for i, r in enumerate(config.registries)
            if role is not Role.WORKER
        }
        self.services: dict[str, ServiceConfig] = {s.name: s for s in config.services}
        self.clusters: dict[str, Cluster] = {}
        self._checkers: dict[str, HealthChecker] = {}
        place = config.locality
        gateway = config.gateway
        # A gateway is in its own data center, and its clusters never reach another one: a
        # gateway does not forward to a gateway, so calls cannot loop (docs/gateway.md).
        dc = gateway.dc if gateway is not None else place.dc
        # Not governance.zone: that one says where rules with zone_preference look; an agent
        # balances by locality only when its ``locality`` says where it is.
        self.locality = Locality(dc, place.region, place.zone)
        for i, service in enumerate(config.services):
            lb_factory: LoadBalancerFactory = load(PluginKind.LB_POLICY, service.lb.policy).build(
                service.lb.config, f"services[{i}].lb.config"
            )
            levels = None
            if service.lb.locality and self.locality != Locality():
                levels = PriorityLevels(
                    self.locality,
                    lb_factory,
                    service.lb.overprovisioning_factor,
                    cross_dc=service.lb.cross_dc and gateway is None,
                )
            outlier = service.outlier
            self.clusters[service.name] = Cluster(
                service.name,
                lb_factory(),
                OutlierPolicy(
                    enabled=outlier.enabled,
                    consecutive_failures=outlier.consecutive_failures,
                    base_ejection_s=outlier.base_ejection_s,
                    max_ejection_s=outlier.max_ejection_s,
                    max_ejection_percent=outlier.max_ejection_percent,
                ),
                HealthPolicy(service.health.healthy_threshold, service.health.unhealthy_threshold),
                lb_policy=service.lb.policy,
                levels=levels,
            )
            if service.health.enabled and role is not Role.WORKER:
                self._checkers[service.name] = load(
                    PluginKind.HEALTH_CHECKER, service.health.checker
                ).build(service.health.config, f"services[{i}].health.config")
        self.connection_budget = ConnectionBudget(
            config.max_connections or default_budget(reserved=config.admin.max_connections)
        )
        self.listeners: list[Listener] = []
        for i, listener_config in enumerate(config.listeners):
            plugin = load(PluginKind.PROTOCOL, listener_config.protocol)
            protocol_config = plugin.validate_config(
                listener_config.config, f"listeners[{i}].config"
            )
            if isinstance(protocol_config, NamesServices):
                unknown = [
                    f"listeners[{i}].config.{path}: unknown service {name!r}; "
                    f"configured: {', '.join(self.services) or 'none'}"
                    for path, name in protocol_config.service_references()
                    if name not in self.services
                ]
                if unknown:
                    raise ConfigError(unknown)
            context = ListenerContext(
                listener_config,
                self.services[listener_config.service],
                self.clusters[listener_config.service],
                protocol_config=protocol_config,
                services=self.services,
                clusters=self.clusters,
                calls=self.calls,
                budget=self.connection_budget,
                buffers=BufferBudget(
                    listener_config.max_buffered_bytes, listener_config.request_timeout_s
                ),
            )
            self.listeners.append(
                Listener(listener_config, context, refusals=Refusals(listener_config.display_name))
            )
        # One ProtocolSupport per listener (its own config) and one per protocol for JSON
        # invocations (default config), all closed when the agent stops.
        self._supports: list[ProtocolSupport] = []
        self._invokers: dict[str, ProtocolSupport] = {}
        self.registrations = Registrations()
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.settings_document: WatchedDocument[DynamicSettings] | None = None
        self.draining = False
        # The API server's open connections and refusals, once it serves (for /metrics).
        # (open now, refusals, accepted so far)
        self.api_connections: tuple[Callable[[], int], Refusals, Callable[[], int]] | None = None
        self.listening = False
        # Transparent capture and the inbound side (docs/capture.md); both off by default.
        self.capture: CaptureListener | None = None
        # The supervisor serves neither: its workers do.
        if config.capture.enabled and role is not Role.SUPERVISOR:
            self.capture = CaptureListener(config.capture, self.services, self.clusters, self.calls)
            self.capture.reuse_port = role is Role.WORKER
        self.gateway: Gateway | None = None
        if gateway is not None and role is Role.SINGLE:
            self.gateway = Gateway(gateway, self.services, self.clusters)
        self.inbound: InboundListener | None = None
        if config.inbound.enabled and role is not Role.SUPERVISOR:
            health = config.inbound.health
            checker: HealthChecker | None = None
            if health.enabled:
                checker = load(PluginKind.HEALTH_CHECKER, health.checker).build(
                    health.config, "inbound.health.config"
                )
            self.inbound = InboundListener(config.inbound, checker, self.calls)
            self.inbound.reuse_port = role is Role.WORKER

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.role is Role.WORKER:
            await self._start_worker()
            return
        # Bind first: a port in use is a startup error, before anything is published. The
        # supervisor binds nothing: its workers do, and it checked the ports (reserve_ports).
        if self.role is Role.SINGLE:
            await self._bind_listeners()
        # Protocols may hook into discovery (Dubbo's MetadataService for ZooKeeper's
        # application level), so their invokers exist before the first subscription.
        for service in self.config.services:
            self._invoker(service.protocol).attach_registry(self.registries[service.registry])
        for name, registry in self.registries.items():
            try:
                await registry.start()
            except Exception as exc:
                # An unreachable registry must not stop the agent: the plugin reconnects,
                # readiness waits for its first snapshot, and status() says why.
                log.error("registry start failed: %s", exc, extra={"registry": name})
        self._watch_rules()
        health = HealthScheduler()
        for service in self.config.services:
            registry = self.registries[service.registry]
            subscription = registry.subscribe(
                ServiceKey(service.name, frozen_mapping(service.attributes))
            )
            self._subscriptions.append(subscription)
            self._spawn(self._follow(self.clusters[service.name], subscription))
            checker = self._checkers.get(service.name)
            if checker is not None:
                health.add(self.clusters[service.name], checker, service.health)
        if health:
            self._spawn(health.run())
        if self.gateway is not None:
            await self.gateway.register_imports(self)
        self._spawn(self._expire_registrations())
        if self.role is Role.SINGLE:
            # The supervisor samples its lag on its watchdog's tick: one timer, not two
            # (agent/runtime/supervisor.py).
            self.loop_lag.start()
            # The supervisor feeds its window from every worker's metrics (supervisor.py).
            self.call_window.start()
        self._start_dynamic_settings()
        if self.inbound is not None and self.role is Role.SINGLE:
            self._spawn(self.inbound.run_health_checks())
        self.listening = True
        if self.role is Role.SINGLE:
            self._log_listeners()

    async def _start_worker(self) -> None:
        """Listeners, capture and inbound on SO_REUSEPORT sockets; clusters are fed by the
        supervisor's stream (agent/runtime/worker.py), nothing else is started here."""
        await self._bind_listeners()
        # Its loop-lag tick is also its heartbeat (agent/runtime/worker.py); the status
        # page's window is the supervisor's, read from the workers' metrics.
        self.loop_lag.start()
        if self.inbound is not None:
            self._spawn(self.inbound.run_health_checks())
        self.listening = True
        self._log_listeners()

    def _log_listeners(self) -> None:
        for listener in self.listeners:
            host, port = listener.address
            log.info(
                "listener up on %s:%d -> %s (%s)",
                host,
                port,
                listener.config.service,
                listener.config.protocol,
                extra={"listener": listener.config.display_name},
            )

    def _watch_rules(self) -> None:
        """Follow the rules key of the configured config source (after registries start:
        a source shares its registry's connection)."""
        source_config = self.config.governance.source
        if source_config is None:
            return
        source = self.registries[source_config.registry].config_source()
        if source is None:
            log.error(
                "governance rules not watched: registry %r offers no config source",
                source_config.registry,
            )
            return
        data_id = source_config.data_id or f"{self.config.app.name}.rules"
        key = ConfigKey(source_config.group, data_id)
        static = self.config.governance.rules

        def apply(rules: RuleSet | None) -> None:
            # None: the key is absent or was deleted; the static rules apply again. The
            # version in force is the document's status (set once this returns).
            if rules is None:
                self.governance.set_rules(static, "static", None)
            else:
                self.governance.set_rules(rules, str(key), None)
            self.publisher.rules(rules)

        self.rules_document = WatchedDocument(source, key, RuleSet, apply)
        self.rules_document.start()

    async def _bind_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            config = listener.config
            plugin = load(PluginKind.PROTOCOL, config.protocol)
            support: ProtocolSupport = plugin.factory(listener.context.protocol_config)
            self._supports.append(support)
            assert listener.refusals is not None
            try:
                listener.server = await loop.create_server(
                    gated(
                        listener.context.connections.__len__,
                        config.max_connections,
                        self.connection_budget,
                        listener.refusals,
                        support.outbound_listener(listener.context),
                    ),
                    config.host,
                    config.port,
                    reuse_address=True,
                    # Workers share each port; the kernel spreads connections among them.
                    reuse_port=self.role is Role.WORKER,
                    backlog=1024,
                )
            except OSError as exc:
                await self._close_servers()
                raise StartupError(
                    f"listener {config.display_name}: cannot listen on "
                    f"{config.host}:{config.port}: {os.strerror(exc.errno) if exc.errno else exc}"
                ) from None
        for name, start, where in self._side_listeners():
            try:
                await start()
            except OSError as exc:
                await self._close_servers()
                raise StartupError(
                    f"{name} listener: cannot listen on {where}: {exc.strerror or exc}"
                ) from None

    def _side_listeners(self) -> list[tuple[str, Callable[[], Awaitable[None]], str]]:
        found: list[tuple[str, Callable[[], Awaitable[None]], str]] = []
        if self.capture is not None:
            capture = self.config.capture
            found.append(("capture", self.capture.start, f"{capture.host}:{capture.port}"))
        if self.inbound is not None:
            inbound = self.config.inbound
            found.append(("inbound", self.inbound.start, f"{inbound.host}:{inbound.port}"))
        if self.gateway is not None:
            gateway = self.gateway.config
            found.append(("gateway", self.gateway.start, f"{gateway.host}:{gateway.port}"))
        return found

    async def publish_import(
        self,
        registry: str | None,
        service: str,
        instance_id: str,
        host: str,
        port: int,
        metadata: dict[str, str],
        protocol: str,
    ) -> None:
        """A gateway's import, registered like the app's own instances (agent/gateway)."""
        if registry is None:
            await self.register(service, instance_id, host, port, 100, metadata, None)
            return
        registration = Registration(
            service, instance_id, host, port, 100, frozen_mapping(metadata), protocol
        )
        await self.registrations.put(registration, self.registries[registry], None)

    async def withdraw_import(self, service: str, instance_id: str) -> None:
        await self.registrations.delete(service, instance_id)

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _follow(self, cluster: Cluster, subscription: Subscription) -> None:
        async for update in subscription:
            admitted, dropped = screen(update)
            for instance, problem in dropped:
                log.warning(
                    "registry instance ignored: %s",
                    problem,
                    extra={"cluster": cluster.name, "instance": instance.id},
                )
            if admitted is not None:
                cluster.apply(admitted)
                self.publisher.cluster_update(cluster, admitted)
            self.last_update[cluster.name] = time.time()

    async def _expire_registrations(self) -> None:
        while True:
            await self.registrations.until_expiry()
            await self.registrations.expire()

    async def drain_and_stop(self) -> None:
        """Stop accepting, deregister, wait up to drain_timeout for open connections."""
        self.draining = True
        log.info("draining", extra={"timeout_s": self.config.drain_timeout_s})
        # Inbound first: no new calls reach the app once the pod is going away.
        if self.inbound is not None:
            self.inbound.stop_accepting()
        if self.capture is not None:
            self.capture.stop_accepting()
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()
        # Protocols that can end their connections between requests do so now.
        supports = [*self._supports]
        if self.capture is not None:
            supports += self.capture.protocol_supports()
        if self.inbound is not None:
            supports += self.inbound.protocol_supports()
        for support in supports:
            try:
                support.drain()
            except Exception:
                log.exception("protocol drain failed", extra={"protocol": support.name})
        await self.registrations.delete_all()
        idle = [listener.context.idle.wait() for listener in self.listeners]
        if self.inbound is not None:
            idle.append(self.inbound.context.idle.wait())
        if self.capture is not None:
            idle.append(self.capture.idle.wait())
        try:
            async with asyncio.timeout(self.config.drain_timeout_s):
                await asyncio.gather(*idle)
        except TimeoutError:
            log.warning(
                "drain timeout: closing open connections", extra={"open": self.open_connections()}
            )
        for listener in self.listeners:
            for transport in list(listener.context.connections):
                transport.abort()
        for side in (self.inbound, self.capture):
            if side is not None:
                side.abort_all()
        await self.stop()

    async def stop(self) -> None:
        self.loop_lag.stop()
        self.call_window.stop()
        if self.settings_document is not None:
            await self.settings_document.close()
        if self.rules_document is not None:
            await self.rules_document.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for subscription in self._subscriptions:
            subscription.close()
        for support in [*self._supports, *self._invokers.values()]:
            try:
                await support.close()
            except Exception:
                log.exception("protocol close failed", extra={"protocol": support.name})
        if self.capture is not None:
            await self.capture.close()
        if self.inbound is not None:
            await self.inbound.close()
        if self.gateway is not None:
            await self.gateway.close()
        for registry in self.registries.values():
            try:
                await registry.close()
            except Exception:
                log.exception("registry close failed")
        await self._close_servers()
        # Off the loop: the span exporter flushes what is queued, bounded by its timeout.
        await asyncio.to_thread(self.telemetry.close)

    async def _close_servers(self) -> None:
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()
                # Server.wait_closed waits for every connection in 3.12+; drain handles that.
                listener.server = None
        if self.inbound is not None:
            self.inbound.stop_accepting()
        if self.capture is not None:
            self.capture.stop_accepting()
        if self.gateway is not None:
            self.gateway.stop_accepting()

    def open_connections(self) -> int:
        count = sum(len(listener.context.connections) for listener in self.listeners)
        if self.gateway is not None:
            count += self.gateway.connections()
        if self.inbound is not None:
            count += len(self.inbound.context.connections)
        if self.capture is not None:
            count += len(self.capture.connections)
        return count

    # -- what the API may ask ----------------------------------------------------------

    def ready(self) -> tuple[bool, list[str]]:
        """Ready once listeners are up and every service has its first snapshot."""
        reasons = []
        if not self.listening:
            reasons.append("listeners are not up")
        if self.draining:
            reasons.append("draining")
        for name, cluster in self.clusters.items():
            if not cluster.initialized:
                registry = self.services[name].registry
                reasons.append(f"service {name!r}: no snapshot yet from registry {registry!r}")
        reasons.extend(self.workers_not_ready())
        inbound = self.inbound
        if inbound is not None and not inbound.app_healthy:
            app = f"{self.config.inbound.app_host}:{self.config.inbound.app_port}"
            reasons.append(f"local app {app} not healthy ({inbound.app_detail})")
        return (not reasons, reasons)

    def _start_dynamic_settings(self) -> None:
        wanted = self.config.dynamic_settings
        found = self.config_source()
        if wanted is None:
            return
        if found is None:
            log.error("dynamic_settings: no registry offers a config source; not watched")
            return
        from agent.runtime.settings import SettingsApplier

        applier = SettingsApplier(self)

        def apply(settings: DynamicSettings | None) -> None:
            applier(settings)
            self.publisher.settings(settings)

        self.settings_document = WatchedDocument(
            found[1], ConfigKey(wanted.group, wanted.data_id), DynamicSettings, apply
        )
        self.settings_document.start()

    def config_source(self) -> tuple[str, ConfigSource] | None:
        """The registry serving configuration and its source: ``config_source`` if set, else
        the first registry that offers one; None when none does."""
        names = [self.config.config_source] if self.config.config_source else list(self.registries)
        for name in names:
            source = self.registries[name].config_source()
            if source is not None:
                return name, source
        return None

    def rules_status(self) -> DocumentStatus | None:
        """The rules document's status (version, last rejection), None without a source."""
        return self.rules_document.status if self.rules_document is not None else None

    def effective_rule(self, route: Route) -> CompiledRule | None:
        return self.governance.effective(route)

    def registry_statuses(self) -> dict[str, RegistryStatus]:
        return {name: registry.status() for name, registry in self.registries.items()}

    def service(self, name: str) -> ServiceConfig:
        service = self.services.get(name)
        if service is None:
            configured = ", ".join(sorted(self.services)) or "none"
            raise UnknownServiceError(f"unknown service {name!r}; configured: {configured}")
        return service

    async def register(
        self,
        service: str,
        instance_id: str,
        host: str,
        port: int,
        weight: int,
        metadata: dict[str, str],
        ttl_s: float | None,
    ) -> bool:
        config = self.service(service)
        if self.draining:
            # delete_all ran when the drain began: anything published now would stay
            # advertised (and take traffic) until the process exits.
            raise DrainingError(
                f"the agent is draining: registration of {instance_id!r} of {service!r} refused"
            )
        registration = Registration(
            service, instance_id, host, port, weight, frozen_mapping(metadata), config.protocol
        )
        return await self.registrations.put(registration, self.registries[config.registry], ttl_s)

    async def deregister(self, service: str, instance_id: str) -> bool:
        self.service(service)
        return await self.registrations.delete(service, instance_id)

    async def invoke(
        self,
        protocol: str,
        service: str,
        method: str,
        body: dict[str, Any],
        incoming: Mapping[str, str] | None = None,
    ) -> InvokeResult:
        """``incoming``: the propagation headers of the API request (lower-case names)."""
        config = self.service(service)
        if config.protocol != protocol:
            raise InvokeNotSupported(
                f"service {service!r} speaks {config.protocol!r}, not {protocol!r}"
            )
        request = InvokeRequest(
            config, self.clusters[service], method, body, self.calls, incoming or {}
        )
        return await self._invoker(protocol).invoke(request)

    async def invoke_http(
        self,
        service: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes],
    ) -> HttpInvokeResult:
        """Forward an HTTP request to ``service`` through its protocol's HTTP invocation."""
        config = self.service(service)
        request = HttpInvokeRequest(
            config, self.clusters[service], method, path, query, headers, body, self.calls
        )
        try:
            return await self._invoker(config.protocol).invoke_http(request)
        except InvokeNotSupported as exc:
            raise InvokeNotSupported(f"service {service!r}: {exc}") from None

    def _invoker(self, protocol: str) -> ProtocolSupport:
        support = self._invokers.get(protocol)
        if support is None:
            support = load(PluginKind.PROTOCOL, protocol).build({}, f"protocols.{protocol}")
            self._invokers[protocol] = support
        return support

    def side_listener_stats(self) -> list[tuple[str, str, ListenerStats]]:
        """(listener, service, stats) of the capture and inbound relays."""
        found: list[tuple[str, str, ListenerStats]] = []
        if self.inbound is not None:
            found.append(("inbound", "inbound", self.inbound.context.stats))
        if self.capture is not None:
            for service, stats in sorted(self.capture.relay_stats.items()):
                found.append(("capture", service, stats))
        return found

    def listener_addresses(self) -> list[tuple[Listener, str, int]]:
        return [(listener, *listener.address) for listener in self.listeners if listener.server]
