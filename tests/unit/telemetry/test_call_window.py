"""agent/telemetry/call_window.py: readings kept for the span; failed calls kept, bounded."""

from __future__ import annotations

from agent.calls import Calls, Direction, Outcome
from agent.errors import UpstreamError
from agent.telemetry.call_metrics import CallMetrics
from agent.telemetry.call_window import CallWindow


def _hub() -> tuple[Calls, CallMetrics]:
    calls = Calls("shop", "c1")
    metrics = CallMetrics(16)
    calls.observers.append(metrics)
    return calls, metrics


def _call(calls: Calls, ok: bool) -> None:
    call = calls.start("http", Direction.OUTBOUND, calls.outbound_route("orders", "GET"))
    if ok:
        call.finish(Outcome.OK, "200")
    else:
        call.fail(UpstreamError("broke"), "502")


def test_the_window_is_the_difference_from_the_oldest_reading_kept() -> None:
    now = [100.0]
    calls, metrics = _hub()
    window = CallWindow(metrics.collect, interval_s=10, span_s=60, clock=lambda: now[0])
    for _ in range(5):
        _call(calls, ok=True)
    window.sample()  # at 100: 5 calls before it
    now[0] = 130.0
    for _ in range(3):
        _call(calls, ok=True)
    _call(calls, ok=False)
    (row,), span = window.rows()
    assert span == 30.0 and row.requests_per_s == round(4 / 30, 3) and row.success_rate == 0.75
    now[0] = 200.0
    window.sample()  # the reading at 100 is now older than the span: dropped
    assert [at for at, _ in window.readings] == [200.0]


def test_no_metrics_no_rows() -> None:
    window = CallWindow(None)
    assert window.rows() == ([], 0.0)
