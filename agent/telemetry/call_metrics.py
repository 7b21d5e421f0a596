"""Per-call Prometheus metrics: requests, latency, in flight, retries, by five-tuple.

An observer on the :class:`agent.calls.Calls` hub that only adds to plain ints and lists
(one dict lookup and a few additions per call); :meth:`CallMetrics.collect` turns them into
metric families when /metrics is scraped, like the rest of agent/telemetry/metrics.py.

Labels: ``from``, ``from_cluster``, ``to``, ``to_cluster``, ``method`` (the five-tuple),
``protocol``, ``direction`` and, on counters and the histogram, ``outcome``. Method names
come from callers and are unbounded: each service keeps the first ``max_methods`` it sees,
and any later one is counted under ``method="_other"``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from agent.calls import Call, CallObserver, Outcome

NAME = "metrics"
OTHER_METHOD = "_other"

# Seconds; a sidecar's calls run from sub-millisecond (local) to the default deadlines.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ["from", "from_cluster", "to", "to_cluster", "method", "protocol", "direction"]


class _Series:
    """Everything counted for one label set (without the outcome)."""

    __slots__ = ("buckets", "counts", "in_flight", "retries", "sums")

    def __init__(self) -> None:
        self.in_flight = 0
        self.retries = 0
        self.counts: dict[Outcome, int] = {}
        self.sums: dict[Outcome, float] = {}
        # Per outcome: non-cumulative counts per bucket, the last one for +Inf.
        self.buckets: dict[Outcome, list[int]] = {}


class CallMetrics(CallObserver):
    name = NAME

    def __init__(self, max_methods: int = 50) -> None:
        self.max_methods = max_methods
        self.series: dict[tuple[str, ...], _Series] = {}
        # Methods admitted as labels, per (protocol, target).
        self.methods: dict[tuple[str, str], set[str]] = {}

    def _method_label(self, protocol: str, target: str, method: str) -> str:
        known = self.methods.get((protocol, target))
        if known is None:
            known = self.methods[(protocol, target)] = set()
        if method in known:
            return method
        if len(known) < self.max_methods:
            known.add(method)
            return method
        return OTHER_METHOD

    def call_started(self, call: Call) -> None:
        route = call.route
        key = (
            route.source,
            route.source_cluster,
            route.target,
            route.target_cluster,
            self._method_label(call.protocol, route.target, route.method),
            call.protocol,
            call.direction.value,
        )
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series()
        series.in_flight += 1
        call.state[NAME] = series

    def call_finished(self, call: Call) -> None:
        series = call.state.pop(NAME, None)
        if not isinstance(series, _Series):
            return
        series.in_flight -= 1
        outcome = call.outcome or Outcome.CANCELLED
        series.counts[outcome] = series.counts.get(outcome, 0) + 1
        if len(call.attempts) > 1:
            series.retries += len(call.attempts) - 1
        hub = call.hub
        now = hub.clock() if hub is not None else call.started
        elapsed = max(0.0, now - call.started)
        series.sums[outcome] = series.sums.get(outcome, 0.0) + elapsed
        buckets = series.buckets.get(outcome)
        if buckets is None:
            buckets = series.buckets[outcome] = [0] * (len(BUCKETS) + 1)
        buckets[bisect_left(BUCKETS, elapsed)] += 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "meshagent_calls",
            "Calls by five-tuple, protocol and outcome",
            labels=[*_LABELS, "outcome"],
        )
        latency = HistogramMetricFamily(
            "meshagent_call_duration_seconds",
            "Call duration, from the request read to the answer",
            labels=[*_LABELS, "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "meshagent_calls_in_flight", "Calls started and not finished", labels=_LABELS
        )
        retries = CounterMetricFamily(
            "meshagent_call_retries", "Attempts after the first, summed over calls", labels=_LABELS
        )
        for key, series in list(self.series.items()):
            values = list(key)
            in_flight.add_metric(values, series.in_flight)
            retries.add_metric(values, series.retries)
            for outcome, count in list(series.counts.items()):
                labels = [*values, outcome.value]
                requests.add_metric(labels, count)
                cumulative = 0
                points: list[tuple[str, float]] = []
                raw = series.buckets[outcome]
                for bound, n in zip((*BUCKETS, float("inf")), raw, strict=True):
                    cumulative += n
                    points.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                latency.add_metric(labels, points, series.sums[outcome])
        yield from (requests, latency, in_flight, retries)
