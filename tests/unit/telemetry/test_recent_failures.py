"""agent/telemetry/recent_failures.py: failed calls kept with their chain, bounded."""

from __future__ import annotations

from agent.calls import Calls, Direction, Outcome
from agent.errors import UpstreamError
from agent.telemetry.call_metrics import CallMetrics
from agent.telemetry.recent_failures import RecentFailures


def _call(calls: Calls, ok: bool) -> None:
    call = calls.start("http", Direction.OUTBOUND, calls.outbound_route("orders", "GET"))
    if ok:
        call.finish(Outcome.OK, "200")
    else:
        call.fail(UpstreamError("broke"), "502")


def test_recent_failures_keeps_the_last_failed_calls() -> None:
    calls = Calls("shop", "c1")
    metrics = CallMetrics(16)  # records them: every call's end is seen there already
    metrics.failures = failures = RecentFailures(limit=2)
    _call(calls, ok=True)
    assert not failures.calls  # an ok call is not recorded
    calls.observers.append(metrics)
    for ok in (False, True, False, False):
        _call(calls, ok)
    assert len(failures.calls) == 2
    last = failures.calls[-1]
    assert (last.target, last.method, last.outcome, last.status) == (
        "orders",
        "GET",
        "upstream_error",
        "502",
    )
    assert last.chain and last.chain[-1]["service"] == "orders"
