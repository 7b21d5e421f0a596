"""agent/telemetry/loop_lag.py: a blocked loop shows as lag; the histogram's buckets."""

from __future__ import annotations

import asyncio
import time

from agent.telemetry.exposition import Registry, render
from agent.telemetry.loop_lag import BUCKETS, LoopLag


def test_record_fills_the_buckets() -> None:
    lag = LoopLag()
    for value in (0.0, 0.002, 0.2, 100.0):
        lag.record(value)
    assert lag.samples == 4 and lag.last_s == 100.0
    assert lag.buckets[0] == 1 and lag.buckets[1] == 1 and lag.buckets[-1] == 1
    assert sum(lag.buckets) == 4 and len(lag.buckets) == len(BUCKETS) + 1


class _Watched(LoopLag):
    def __init__(self) -> None:
        super().__init__(interval_s=0.01)
        self.late = asyncio.Event()

    def record(self, lag_s: float) -> None:
        super().record(lag_s)
        if lag_s >= 0.15:
            self.late.set()


def test_a_blocked_loop_is_late_by_at_least_the_block() -> None:
    async def scenario() -> LoopLag:
        lag = _Watched()
        lag.start()
        # The loop held for 0.2 s, as a blocking call would: the next tick (due 0.01 s
        # after start) runs at least 0.19 s late.
        asyncio.get_running_loop().call_soon(time.sleep, 0.2)
        await asyncio.wait_for(lag.late.wait(), 10)
        lag.stop()
        return lag

    lag = asyncio.run(scenario())
    assert lag.last_s >= 0.15
    assert sum(lag.buckets[BUCKETS.index(0.1) + 1 :]) >= 1  # a tick over 100 ms late


def test_exposed_as_a_gauge_and_a_histogram() -> None:
    lag = LoopLag()
    lag.record(0.003)
    registry = Registry()
    registry.register(lag)
    text = render(registry).decode()
    assert "meshagent_event_loop_lag_last_seconds 0.003" in text
    assert 'meshagent_event_loop_lag_seconds_bucket{le="0.005"} 1.0' in text
    assert "meshagent_event_loop_lag_seconds_count 1.0" in text
