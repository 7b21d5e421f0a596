"""Prometheus metrics read from the agent's own counters at scrape time.

The hot path only adds to plain ints on hosts and listeners; this collector turns them
into metric families when /metrics is scraped, so metrics cost nothing per byte relayed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.cluster.locality import LEVEL_NAMES
from agent.telemetry.exposition import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    Registry,
)
from agent.telemetry.exposition import render as render_text
from agent.telemetry.governance_metrics import governance_metrics
from agent.telemetry.process_metrics import ProcessMetrics

if TYPE_CHECKING:
    from agent.runtime.agent import Agent
    from agent.telemetry.context import ContextStats


class AgentCollector:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        labels = ["listener", "service"]
        accepted = CounterMetricFamily(
            "meshagent_listener_connections", "Connections accepted", labels=labels
        )
        active = GaugeMetricFamily(
            "meshagent_listener_connections_active", "Connections open now", labels=labels
        )
        rejected = CounterMetricFamily(
            "meshagent_listener_connections_rejected",
            "Connections closed because no endpoint could be reached",
            labels=labels,
        )
        refused = CounterMetricFamily(
            "meshagent_listener_connections_refused",
            "Connections closed as accepted: the listener's max_connections or the agent's "
            "connection budget was reached",
            labels=labels,
        )
        buffered = GaugeMetricFamily(
            "meshagent_listener_buffered_bytes",
            "Bytes of partly received requests held now (Dubbo, Thrift listeners)",
            labels=labels,
        )
        buffer_pauses = CounterMetricFamily(
            "meshagent_listener_buffer_pauses",
            "Times a connection stopped being read: the listener's max_buffered_bytes held",
            labels=labels,
        )
        request_timeouts = CounterMetricFamily(
            "meshagent_listener_request_timeouts",
            "Connections closed with a request not received whole within request_timeout_s",
            labels=labels,
        )
        bytes_in = CounterMetricFamily(
            "meshagent_listener_received_bytes",
            "Bytes from clients (closed connections)",
            labels=labels,
        )
        bytes_out = CounterMetricFamily(
            "meshagent_listener_sent_bytes", "Bytes to clients (closed connections)", labels=labels
        )
        for listener in agent.listeners:
            values = [listener.config.display_name, listener.config.service]
            stats = listener.context.stats
            accepted.add_metric(values, stats.accepted)
            active.add_metric(values, stats.active)
            rejected.add_metric(values, stats.rejected)
            bytes_in.add_metric(values, stats.bytes_in)
            bytes_out.add_metric(values, stats.bytes_out)
            if listener.refusals is not None:
                refused.add_metric(values, listener.refusals.total)
            buffers = listener.context.buffers
            buffered.add_metric(values, buffers.held)
            buffer_pauses.add_metric(values, buffers.paused_total)
            request_timeouts.add_metric(values, buffers.timed_out_total)
        if agent.api_connections is not None:
            open_now, api_refusals, api_accepted = agent.api_connections
            accepted.add_metric(["api", ""], api_accepted())
            active.add_metric(["api", ""], open_now())
            refused.add_metric(["api", ""], api_refusals.total)
        # The capture and inbound listeners' relays, under the same families.
        for listener_name, service, stats in agent.side_listener_stats():
            values = [listener_name, service]
            accepted.add_metric(values, stats.accepted)
            active.add_metric(values, stats.active)
            rejected.add_metric(values, stats.rejected)
            bytes_in.add_metric(values, stats.bytes_in)
            bytes_out.add_metric(values, stats.bytes_out)
        yield from (accepted, active, rejected, refused, bytes_in, bytes_out)
        yield from (buffered, buffer_pauses, request_timeouts)
        budget = agent.connection_budget
        yield GaugeMetricFamily(
            "meshagent_connection_budget",
            "Client connections the agent keeps open at most, across its listeners",
            value=budget.limit,
        )
        yield GaugeMetricFamily(
            "meshagent_connection_budget_open",
            "Client connections open now, across the agent's listeners",
            value=budget.open,
        )
        yield from _route_metrics(agent)
        yield from _capture_metrics(agent)

        host_labels = ["cluster", "endpoint"]
        requests = CounterMetricFamily(
            "meshagent_upstream_requests",
            "Requests or connections sent to an endpoint",
            labels=host_labels,
        )
        failures = CounterMetricFamily(
            "meshagent_upstream_failures", "Failed requests or connects", labels=host_labels
        )
        connect_failures = CounterMetricFamily(
            "meshagent_upstream_connect_failures", "Failed connects", labels=host_labels
        )
        ejections = CounterMetricFamily(
            "meshagent_upstream_ejections", "Times ejected by outlier detection", labels=host_labels
        )
        drains = CounterMetricFamily(
            "meshagent_upstream_drains",
            "Times the endpoint said it is going away (Dubbo READONLY)",
            labels=host_labels,
        )
        draining = GaugeMetricFamily(
            "meshagent_upstream_draining",
            "1 while the endpoint's process is going away: no new requests",
            labels=host_labels,
        )
        healthy = GaugeMetricFamily(
            "meshagent_upstream_healthy",
            "1 when the active health check passes",
            labels=host_labels,
        )
        in_flight = GaugeMetricFamily(
            "meshagent_upstream_active_requests",
            "Requests or connections in flight",
            labels=host_labels,
        )
        members = GaugeMetricFamily(
            "meshagent_cluster_endpoints", "Endpoints known", labels=["cluster"]
        )
        available = GaugeMetricFamily(
            "meshagent_cluster_endpoints_available",
            "Endpoints healthy and not ejected",
            labels=["cluster"],
        )
        priority = GaugeMetricFamily(
            "meshagent_upstream_priority",
            "Locality priority level (0 the agent's zone, 1 its region, 2 its data center, "
            "3 another data center); only with locality-aware balancing",
            labels=host_labels,
        )
        place = GaugeMetricFamily(
            "meshagent_upstream_locality",
            "1 for each endpoint, labelled with its data center, region and zone (its registry "
            "labels, empty when absent): join on endpoint to split any upstream metric by dc",
            labels=[*host_labels, "dc", "region", "zone"],
        )
        level_load = GaugeMetricFamily(
            "meshagent_cluster_priority_load",
            "Share of new calls each locality level gets now (0 to 1)",
            labels=["cluster", "locality"],
        )
        for name, cluster in agent.clusters.items():
            hosts = cluster.hosts()
            members.add_metric([name], len(hosts))
            available.add_metric([name], cluster.available_count())
            levels = cluster.levels
            if levels is not None:
                for level, locality in enumerate(LEVEL_NAMES):
                    if levels.endpoints[level]:
                        level_load.add_metric([name, locality], levels.loads[level])
                for host in hosts:
                    level_of = levels.level(host.id)
                    if level_of is not None:
                        priority.add_metric([name, host.id], level_of)
                    registered = host.instance.metadata
                    place.add_metric(
                        [
                            name,
                            host.id,
                            registered.get("dc", ""),
                            registered.get("region", ""),
                            registered.get("zone", ""),
                        ],
                        1,
                    )
            for host in hosts:
                values = [name, host.id]
                requests.add_metric(values, host.stats.requests)
                failures.add_metric(values, host.stats.failures)
                connect_failures.add_metric(values, host.stats.connect_failures)
                ejections.add_metric(values, host.stats.ejections)
                healthy.add_metric(values, 1 if host.healthy else 0)
                drains.add_metric(values, host.stats.drains)
                draining.add_metric(values, 1 if host.draining else 0)
                in_flight.add_metric(values, host.active_requests)
        yield from (requests, failures, connect_failures, ejections, drains, draining)
        yield from (healthy, in_flight)
        yield from (members, available, priority, place, level_load)

        connected = GaugeMetricFamily(
            "meshagent_registry_connected", "1 when the registry is reachable", labels=["registry"]
        )
        for name, status in agent.registry_statuses().items():
            connected.add_metric([name], 1 if status.connected else 0)
        yield connected
        yield from _gateway_metrics(agent)
        yield from _call_metrics(agent)
        yield from governance_metrics(agent)


def _gateway_metrics(agent: Agent) -> Iterator[Metric]:
    """A gateway's tunnels (docs/gateway.md), by the data center on the other side."""
    gateway = agent.gateway
    if gateway is None:
        return
    tunnels = CounterMetricFamily(
        "meshagent_gateway_tunnels",
        "Connections through the gateway link: in (from dc) or out (to dc); opened, "
        "refused (not exported, no endpoint) or failed (no gateway of dc answered)",
        labels=["direction", "service", "dc", "outcome"],
    )
    for (direction, service, dc, outcome), count in sorted(gateway.stats.tunnels.items()):
        tunnels.add_metric([direction, service, dc, outcome], count)
    links = GaugeMetricFamily(
        "meshagent_gateway_links",
        "Links to (out) and from (in) peer gateways",
        labels=["direction"],
    )
    links.add_metric(["out"], sum(1 for link in gateway.links.values() if not link.closed))
    links.add_metric(["in"], len(gateway.inbound_links))
    imported = GaugeMetricFamily(
        "meshagent_gateway_imports", "Services imported from a data center", labels=["dc"]
    )
    for dc, imports in sorted(gateway.dynamic.items()):
        imported.add_metric([dc], len(imports))
    yield from (tunnels, links, imported)


def _call_metrics(agent: Agent) -> Iterator[Metric]:
    """The per-call observers' counters (agent/telemetry), and what the agent runs on."""
    now = time.time()
    age = GaugeMetricFamily(
        "meshagent_discovery_last_update_age_seconds",
        "Seconds since the service's last update from its registry",
        labels=["service", "registry"],
    )
    for service, at in agent.last_update.items():
        age.add_metric([service, agent.services[service].registry], max(0.0, now - at))
    config = GaugeMetricFamily(
        "meshagent_config_info", "The config in force (version: a hash of it)", labels=["version"]
    )
    config.add_metric([agent.config_version], 1)
    yield from (age, config)
    telemetry = agent.telemetry
    if telemetry.context is not None:
        yield from _context_metrics(telemetry.context.stats)
    if telemetry.metrics is not None:
        yield from telemetry.metrics.collect()
    tracing = telemetry.tracing
    if tracing is not None:
        spans = CounterMetricFamily(
            "meshagent_tracing_spans", "Spans by what became of them", labels=["state"]
        )
        stats = tracing.stats
        spans.add_metric(["ended"], stats.started)
        spans.add_metric(["exported"], stats.exported)
        spans.add_metric(["export_failed"], stats.export_failed)
        spans.add_metric(["dropped"], stats.dropped)
        bad = CounterMetricFamily(
            "meshagent_tracing_invalid_context",
            "Trace headers that arrived unreadable (the call started a new trace)",
        )
        bad.add_metric([], stats.invalid_context)
        yield from (spans, bad)


def _context_metrics(context: ContextStats) -> Iterator[Metric]:
    invalid = CounterMetricFamily(
        "meshagent_call_context_ignored",
        "Propagation values from callers that were ignored or clamped, by kind",
        labels=["kind"],
    )
    for kind, count in list(context.invalid.items()):
        invalid.add_metric([kind], count)
    loops = CounterMetricFamily(
        "meshagent_call_loops", "Calls refused by loop protection (too many hops)"
    )
    loops.add_metric([], context.loops)
    yield from (invalid, loops)


def _capture_metrics(agent: Agent) -> Iterator[Metric]:
    if agent.inbound is not None:
        over_limit = CounterMetricFamily(
            "meshagent_inbound_connections_over_limit",
            "Inbound connections closed because max_connections were open",
        )
        over_limit.add_metric([], agent.inbound.over_limit)
        app_healthy = GaugeMetricFamily(
            "meshagent_inbound_app_healthy", "1 when the local app passes its health check"
        )
        app_healthy.add_metric([], 1 if agent.inbound.app_healthy else 0)
        pipelines = CounterMetricFamily(
            "meshagent_inbound_pipelines",
            "Inbound connections by the pipeline that served them (tcp: the relay)",
            labels=["pipeline"],
        )
        for pipeline, count in sorted(agent.inbound.pipelines.items()):
            pipelines.add_metric([pipeline], count)
        sniff_timeouts = CounterMetricFamily(
            "meshagent_inbound_sniff_timeouts",
            "Inbound connections that sent nothing within sniff_timeout_s (relayed as TCP)",
        )
        sniff_timeouts.add_metric([], agent.inbound.sniff_timeouts)
        yield from (over_limit, app_healthy, pipelines, sniff_timeouts)
    capture = agent.capture
    if capture is None:
        return
    stats = capture.stats
    outcomes = CounterMetricFamily(
        "meshagent_capture_connections",
        "Captured connections by outcome of the capture step",
        labels=["outcome"],
    )
    outcomes.add_metric(["accepted"], stats.accepted)
    outcomes.add_metric(["loop"], stats.loops)
    outcomes.add_metric(["unroutable"], stats.unroutable)
    outcomes.add_metric(["sniff_timeout"], stats.sniff_timeouts)
    protocols = CounterMetricFamily(
        "meshagent_capture_protocols",
        "Captured connections by sniffed protocol (tcp: not sniffed or not recognised)",
        labels=["protocol"],
    )
    for protocol, count in sorted(stats.protocols.items()):
        protocols.add_metric([protocol], count)
    yield from (outcomes, protocols)


def metrics_registry(agent: Agent) -> Registry:
    registry = Registry()
    registry.register(AgentCollector(agent))
    registry.register(agent.loop_lag)
    registry.register(ProcessMetrics())
    return registry


def render(registry: Registry) -> bytes:
    return render_text(registry)


def _route_metrics(agent: Agent) -> Iterator[Metric]:
    """Per listener and the service each request was routed to (http listeners)."""
    labels = ["listener", "route"]
    requests = CounterMetricFamily(
        "meshagent_listener_route_requests", "Requests routed to a service", labels=labels
    )
    bytes_in = CounterMetricFamily(
        "meshagent_listener_route_received_bytes",
        "Request bytes forwarded to a service's providers",
        labels=labels,
    )
    bytes_out = CounterMetricFamily(
        "meshagent_listener_route_sent_bytes",
        "Response bytes written to clients for a service",
        labels=labels,
    )
    listeners = [(item.config.display_name, item.context.stats) for item in agent.listeners]
    listeners += [(name, stats) for name, _service, stats in agent.side_listener_stats()]
    for name, stats in listeners:
        for route, counters in list(stats.routes.items()):
            requests.add_metric([name, route], counters.requests)
            bytes_in.add_metric([name, route], counters.bytes_in)
            bytes_out.add_metric([name, route], counters.bytes_out)
    yield from (requests, bytes_in, bytes_out)
