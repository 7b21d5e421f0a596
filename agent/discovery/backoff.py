"""Reconnect pacing shared by the registry plugins (config model + the delay it implies)."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Backoff(BaseModel):
    """Reconnect pacing: exponential from ``base_s`` up to ``max_s``, each delay ±``jitter``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_s: float = Field(0.1, gt=0)
    max_s: float = Field(10.0, gt=0)
    jitter: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max_s < self.base_s:
            raise ValueError("max_s must not be less than base_s")
        return self

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause before retry number ``attempt`` (0 for the first retry).

        Jitter spreads the reconnects of many agents that lost the same server at once, so
        they do not come back in lockstep.
        """
        # min() before the power keeps a long outage from overflowing the float.
        raw = min(self.max_s, self.base_s * 2.0 ** min(attempt, 64))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * (1.0 + spread))
