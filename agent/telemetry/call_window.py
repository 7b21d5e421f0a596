"""The agent's calls over the last minute, for the status page (agent/api/status_page.py).

Every ``interval_s`` the agent reads its own call metrics (the families /metrics shows) and
keeps the readings of the last ``span_s``; the window's statistics are the difference
between now and the oldest reading (agent/telemetry/call_stats.py), as ``meshagent stat``
computes them between two scrapes. The failed calls of late are kept too, with their error
chain, a bounded number: the page shows "why does my call to orders fail?" at a glance.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from agent.telemetry.call_stats import Row, Samples, parse_samples, rows
from agent.telemetry.exposition import Metric, Registry, render

INTERVAL_S = 10.0
SPAN_S = 60.0


class _Families:
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect


class CallWindow:
    """Readings of the call metrics, the last ``span_s`` of them."""

    def __init__(
        self,
        collect: Callable[[], Iterable[Metric]] | None,
        interval_s: float = INTERVAL_S,
        span_s: float = SPAN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = Registry()
        if collect is not None:
            self._registry.register(_Families(collect))
        self.interval_s = interval_s
        self.span_s = span_s
        self.clock = clock
        self.readings: deque[tuple[float, Samples]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        # With workers, the supervisor feeds readings (``add``); the last one is "now".
        self._fed: Samples | None = None

    def read(self) -> Samples:
        return parse_samples(render(self._registry).decode())

    def sample(self) -> None:
        now = self.clock()
        self.readings.append((now, self.read()))
        while self.readings and now - self.readings[0][0] > self.span_s:
            self.readings.popleft()

    def add(self, samples: Samples) -> None:
        """A reading made elsewhere: the supervisor's merge of its workers' and its own
        call metrics (docs/workers.md), every ``interval_s`` on its watchdog's tick."""
        now = self.clock()
        self._fed = samples
        self.readings.append((now, samples))
        while self.readings and now - self.readings[0][0] > self.span_s:
            self.readings.popleft()

    def start(self) -> None:
        self.sample()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.interval_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sample()
        self._handle = loop.call_later(self.interval_s, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def rows(self) -> tuple[list[Row], float]:
        """The statistics by five-tuple from the oldest reading kept to now, and the
        seconds they span."""
        now = self.clock()
        current = self.read() if self._fed is None else self._fed
        if not self.readings:
            return rows({}, current, 0.0, by_caller=True), 0.0
        started, oldest = self.readings[0]
        return rows(oldest, current, now - started, by_caller=True), now - started
