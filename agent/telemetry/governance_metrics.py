"""Governance as Prometheus metrics, read at scrape time from the policy's own counters
(agent/governance/policy.py): the hot path only adds to plain ints."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.telemetry.exposition import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from agent.runtime.agent import Agent


def governance_metrics(agent: Agent) -> Iterator[Metric]:
    policy = agent.governance
    decisions = CounterMetricFamily(
        "meshagent_governance_decisions",
        "Calls refused, degraded, faulted or retried by governance rules, by decision",
        labels=["decision"],
    )
    for name, value in dataclasses.asdict(policy.counters).items():
        decisions.add_metric([name], value)
    in_flight = GaugeMetricFamily(
        "meshagent_governance_in_flight",
        "Calls in flight toward a cluster with circuit-breaker limits",
        labels=["cluster"],
    )
    pending = GaugeMetricFamily(
        "meshagent_governance_pending",
        "Calls toward a cluster with circuit-breaker limits not yet sent",
        labels=["cluster"],
    )
    overflows = CounterMetricFamily(
        "meshagent_governance_breaker_overflows",
        "Calls refused by a cluster's circuit-breaker limits",
        labels=["cluster"],
    )
    for cluster, load in sorted(policy.loads.items()):
        in_flight.add_metric([cluster], load.in_flight)
        pending.add_metric([cluster], load.pending)
        overflows.add_metric([cluster], load.overflows)
    rules = GaugeMetricFamily(
        "meshagent_governance_rules", "Governance rules in force", labels=["source"]
    )
    rules.add_metric([policy.state.source], len(policy.state.rules.rules))
    rejected = GaugeMetricFamily(
        "meshagent_governance_rules_rejected",
        "1 while the latest rules version from the config source was rejected",
    )
    status = agent.rules_status()
    rejected.add_metric([], 1 if status is not None and status.rejected_version else 0)
    yield from (decisions, in_flight, pending, overflows, rules, rejected)
