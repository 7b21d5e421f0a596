"""Event-loop lag: how late a timer set on the agent's loop fires (a metric, issue 28).

The agent is one event loop; anything that holds it (a long decode, a blocking call, CPU
saturation) delays every connection at once, and shows here first. Every ``interval_s`` a
timer is set for ``interval_s`` later; the lag is how much later than that it ran. Kept as a
histogram (for alerts on the share of slow ticks) and the last value (for a dashboard).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterator

from agent.telemetry.exposition import GaugeMetricFamily, HistogramMetricFamily, Metric

INTERVAL_S = 0.25
# Seconds: a healthy loop is well under a millisecond late; a second is an outage.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class LoopLag:
    """Samples the running loop's lag while started; a collector for /metrics."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.last_s = 0.0
        self.total_s = 0.0
        self.samples = 0
        self.buckets = [0] * (len(BUCKETS) + 1)
        self._handle: asyncio.TimerHandle | None = None
        # Also run on each tick: a worker's heartbeat (agent/runtime/heartbeat.py).
        self.on_tick: Callable[[], None] | None = None

    def start(self) -> None:
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + self.interval_s
        self._handle = loop.call_at(due, self._tick, loop, due)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.record(max(0.0, loop.time() - due))
        self._schedule(loop)
        if self.on_tick is not None:
            self.on_tick()

    def record(self, lag_s: float) -> None:
        self.last_s = lag_s
        self.total_s += lag_s
        self.samples += 1
        self.buckets[bisect_left(BUCKETS, lag_s)] += 1

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "meshagent_event_loop_lag_last_seconds",
            "How late the last event-loop timer tick ran",
        )
        last.add_metric([], self.last_s)
        lag = HistogramMetricFamily(
            "meshagent_event_loop_lag_seconds",
            f"How late event-loop timer ticks ran (one every {self.interval_s} s)",
        )
        cumulative = 0
        points: list[tuple[str, float]] = []
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            cumulative += count
            points.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        lag.add_metric([], points, self.total_s)
        yield from (last, lag)
