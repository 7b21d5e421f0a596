"""bench/workers.py's CPU quotas: what it writes for a quota of Q CPUs."""

from __future__ import annotations

import pytest

from bench.workers import CpuQuotas


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        (0.3, (3_000, 10_000)),
        (1.0, (10_000, 10_000)),
        (0.1, (1_000, 10_000)),
        # Under 1 ms per 10 ms the period grows instead: the kernel refuses a smaller quota.
        (0.06, (1_000, 16_667)),
        (0.01, (1_000, 100_000)),
    ],
)
def test_quota_and_period(cpus: float, expected: tuple[int, int]) -> None:
    quota, period = CpuQuotas.quota_and_period(cpus)
    assert (quota, period) == expected
    assert quota >= CpuQuotas.MIN_QUOTA_US
    assert quota / period == pytest.approx(cpus, rel=0.01)
