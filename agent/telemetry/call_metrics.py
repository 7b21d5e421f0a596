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

from agent.calls import Attempt, Call, CallObserver, Direction, Outcome, Route
from agent.telemetry.exposition import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from agent.telemetry.recent_failures import RecentFailures

NAME = "metrics"
OTHER_METHOD = "_other"

# Seconds; a sidecar's calls run from sub-millisecond (local) to the default deadlines.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ["from", "from_cluster", "to", "to_cluster", "method", "protocol", "direction"]


class _Tally:
    """One outcome's count, duration sum and (non-cumulative) bucket counts, +Inf last."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


class _Series:
    """Everything counted for one label set (without the outcome)."""

    __slots__ = ("in_flight", "outcomes", "retries")

    def __init__(self) -> None:
        self.in_flight = 0
        self.retries = 0
        self.outcomes: dict[Outcome, _Tally] = {}


# Series found by (route, protocol, direction) without building the label tuple; bounded,
# since method names come from callers (past it, the labels are built per call).
_BY_ROUTE_MAX = 4096


class CallMetrics(CallObserver):
    name = NAME

    def __init__(self, max_methods: int = 50) -> None:
        self.max_methods = max_methods
        self.series: dict[tuple[str, ...], _Series] = {}
        # Methods admitted as labels, per (protocol, target).
        self.methods: dict[tuple[str, str], set[str]] = {}
        self._by_route: dict[tuple[Route, str, Direction], _Series] = {}
        # The last failed calls, for the status page: recorded here, where every call's
        # end is seen already (an observer of their own would cost every call).
        self.failures = RecentFailures()

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

    def _series(self, route: Route, protocol: str, direction: Direction) -> _Series:
        key = (
            route.source,
            route.source_cluster,
            route.target,
            route.target_cluster,
            self._method_label(protocol, route.target, route.method),
            protocol,
            direction.value,
        )
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series()
        return series

    # Its own no-ops: inherited, they would be the interpreted base's, a Python call each
    # on every attempt.
    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        return None

    def attempt_finished(self, call: Call, attempt: Attempt) -> None:
        return None

    def call_started(self, call: Call) -> None:
        by_route = (call.route, call.protocol, call.direction)
        series = self._by_route.get(by_route)
        if series is None:
            series = self._series(*by_route)
            if len(self._by_route) < _BY_ROUTE_MAX:
                self._by_route[by_route] = series
        series.in_flight += 1
        call.state[NAME] = series

    def call_finished(self, call: Call) -> None:
        series = call.state.pop(NAME, None)
        if series is None:
            return
        series.in_flight -= 1
        outcome = call.outcome or Outcome.CANCELLED
        if outcome is not Outcome.OK:
            self.failures.record(call)
        tally = series.outcomes.get(outcome)
        if tally is None:
            tally = series.outcomes[outcome] = _Tally()
        tally.count += 1
        attempts = len(call.attempts)
        if attempts > 1:
            series.retries += attempts - 1
        hub = call.hub
        elapsed = (hub.clock() if hub is not None else call.started) - call.started
        if elapsed < 0.0:
            elapsed = 0.0
        tally.sum += elapsed
        tally.buckets[bisect_left(BUCKETS, elapsed)] += 1

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
            for outcome, tally in list(series.outcomes.items()):
                labels = [*values, outcome.value]
                requests.add_metric(labels, tally.count)
                cumulative = 0
                points: list[tuple[str, float]] = []
                for bound, n in zip((*BUCKETS, float("inf")), list(tally.buckets), strict=True):
                    cumulative += n
                    points.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                latency.add_metric(labels, points, tally.sum)
        yield from (requests, latency, in_flight, retries)
