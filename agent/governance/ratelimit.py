"""A local token bucket (calls a second and burst), clock injected."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second up to ``capacity``; starts full so a new rule (or a rule
    set reloaded under load) does not refuse the calls already allowed."""

    __slots__ = ("_clock", "_updated", "capacity", "rate", "tokens")

    def __init__(
        self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self._clock = clock
        self._updated = clock()

    def take(self) -> bool:
        now = self._clock()
        tokens = self.tokens + (now - self._updated) * self.rate
        self._updated = now
        if tokens > self.capacity:
            tokens = self.capacity
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def resize(self, rate: float, capacity: int) -> None:
        """A new rate and burst (a worker's share moved, docs/workers.md): the tokens
        earned so far are counted at the old rate, then kept within the new burst."""
        now = self._clock()
        tokens = self.tokens + (now - self._updated) * self.rate
        self._updated = now
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = min(tokens, self.capacity)
