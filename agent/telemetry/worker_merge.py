"""One agent to observe: the supervisor's and its workers' metric families as one scrape.

With ``workers: N`` (docs/workers.md) each worker counts what it served and the supervisor
what it owns. A scrape of the supervisor's ``/metrics`` merges them by family:

- what the supervisor alone decides (cluster membership, health, ejections, registries,
  rules, configuration) is its own samples; the workers' mirrors of it are left out, so
  an endpoint ejected once is counted once;
- what is about a process (CPU, memory, descriptors, event-loop lag, the connection
  budget from its open-file limit) and the connections each listener accepted, holds and
  refused keep one series per process, labelled ``worker="0"``... and
  ``worker="supervisor"``: how the kernel spread the clients is visible, and
  ``sum without (worker)`` gives the agent's;
- everything else (calls, connections, bytes, per-endpoint requests and failures,
  governance decisions, ...) is summed over every process: a counter of the agent, as if
  one process had served it all. Gauges of the same kind (connections open now, buffered
  bytes, in flight) sum the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.telemetry.exposition import Metric, Sample

SUPERVISOR = "supervisor"

# Families (as Metric.name: a counter without _total) the supervisor owns.
OWNED = frozenset(
    {
        "meshagent_cluster_endpoints",
        "meshagent_cluster_endpoints_available",
        "meshagent_upstream_healthy",
        "meshagent_upstream_ejections",
        "meshagent_upstream_priority",
        "meshagent_upstream_locality",
        "meshagent_cluster_priority_load",
        "meshagent_registry_connected",
        "meshagent_discovery_last_update_age_seconds",
        "meshagent_config_info",
        "meshagent_governance_rules",
        "meshagent_governance_rules_rejected",
        "meshagent_workers",
        "meshagent_worker_restarts",
    }
)

PER_PROCESS_PREFIXES = (
    "process_",
    "meshagent_event_loop_lag",
    "meshagent_connection_budget",
    "meshagent_listener_connections",
)


def per_process(name: str) -> bool:
    return name.startswith(PER_PROCESS_PREFIXES)


def merge(own: list[Metric], workers: Mapping[str, list[Metric]]) -> list[Metric]:
    """The families of one scrape, in the supervisor's order, then any only workers have."""
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], int]] = {}

    def family(metric: Metric) -> Metric:
        found = merged.get(metric.name)
        if found is None:
            found = merged[metric.name] = Metric(metric.name, metric.documentation, metric.type)
            sums[metric.name] = {}
        return found

    def add(metric: Metric, process: str, is_supervisor: bool) -> None:
        if metric.name in OWNED and not is_supervisor:
            return
        target = family(metric)
        if per_process(metric.name):
            for sample in metric.samples:
                labels = {**sample.labels, "worker": process}
                target.samples.append(Sample(sample.name, labels, sample.value))
            return
        index = sums[metric.name]
        for sample in metric.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            at = index.get(key)
            if at is None:
                index[key] = len(target.samples)
                target.samples.append(sample)
            else:
                previous = target.samples[at]
                target.samples[at] = Sample(
                    sample.name, previous.labels, previous.value + sample.value
                )

    for metric in own:
        add(metric, SUPERVISOR, True)
    for worker_id, metrics in sorted(workers.items()):
        for metric in metrics:
            add(metric, worker_id, False)
    return list(merged.values())
