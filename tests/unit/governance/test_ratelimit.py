from __future__ import annotations

from agent.governance.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 3, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.11  # one token (and a bit)
    assert bucket.take() and not bucket.take()
    clock.now += 60  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def test_over_a_second_the_rate_holds() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, 1, clock)
    allowed = 0
    for _ in range(1000):  # 1000 attempts over one second
        clock.now += 0.001
        allowed += bucket.take()
    assert 99 <= allowed <= 101


def test_resize_counts_earned_tokens_at_the_old_rate_then_caps_at_the_new_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(10, 10, lambda: now[0])
    for _ in range(10):
        assert bucket.take()
    now[0] = 0.5  # 5 tokens earned at 10/s
    bucket.resize(2, 3)
    assert bucket.tokens == 3 and bucket.rate == 2 and bucket.capacity == 3
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 1.0  # 0.5 s at the new rate: one token
    assert bucket.take() and not bucket.take()
