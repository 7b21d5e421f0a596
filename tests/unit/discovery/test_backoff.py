"""Reconnect pacing shared by the registry plugins."""

from __future__ import annotations

import random

import pytest

from agent.discovery.backoff import Backoff


def test_exponential_capped_without_jitter() -> None:
    backoff = Backoff(base_s=0.1, max_s=1.0, jitter=0)
    assert [backoff.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay(10_000) == 1.0


def test_jitter_stays_within_bounds_and_spreads() -> None:
    backoff = Backoff(base_s=1.0, max_s=1.0, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100
