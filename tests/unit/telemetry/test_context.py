from __future__ import annotations

import pytest

from agent.calls import CallRejected, Calls, Direction, Outcome
from agent.errors import UpstreamTimeout
from agent.telemetry import propagation as p
from agent.telemetry.context import CallContext, chain_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hub(max_hops: int = 3, max_timeout_s: float = 60.0) -> tuple[Calls, CallContext, Clock]:
    clock = Clock()
    calls = Calls("app-a", "c1", clock=clock)
    context = CallContext(max_hops, max_timeout_s)
    calls.policies.append(context)
    calls.observers.append(context)
    return calls, context, clock


def start(calls: Calls, incoming: dict[str, str], timeout_s: float | None = None):  # type: ignore[no-untyped-def]
    return calls.start(
        "dubbo", Direction.INVOKE, calls.outbound_route("svc", "m"), incoming, timeout_s
    )


def test_attempt_sends_hops_path_and_what_is_left_of_the_budget() -> None:
    calls, _, clock = hub()
    call = start(calls, {p.HOPS: "1", p.PATH: "app-x", p.TIMEOUT_MS: "500"})
    clock.now += 0.2
    attempt = call.begin_attempt("10.0.0.1:20880")
    assert call.outgoing(attempt) == {
        p.HOPS: "2",
        p.PATH: "app-x,app-a",
        p.TIMEOUT_MS: "300",
    }


def test_shorter_of_protocol_timeout_and_header_wins() -> None:
    calls, _, _ = hub()
    assert start(calls, {p.TIMEOUT_MS: "200"}, timeout_s=1.0).remaining_s() == pytest.approx(0.2)
    assert start(calls, {p.TIMEOUT_MS: "5000"}, timeout_s=1.0).remaining_s() == pytest.approx(1.0)


def test_loop_refused_with_the_path_named() -> None:
    calls, context, _ = hub(max_hops=3)
    with pytest.raises(CallRejected) as info:
        start(calls, {p.HOPS: "3", p.PATH: "app-a,app-b,app-a"})
    assert info.value.reason == "loop"
    assert "app-a → app-b → app-a → app-a → svc" in str(info.value)
    assert context.stats.loops == 1
    start(calls, {p.HOPS: "2"})  # under the limit: admitted


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({p.HOPS: "lots"}, "hops"),
        ({p.HOPS: "-1"}, "hops"),
        ({p.HOPS: "1" * 50}, "hops"),
        ({p.TIMEOUT_MS: "-5"}, "timeout"),
        ({p.TIMEOUT_MS: "soon"}, "timeout"),
        ({p.TIMEOUT_MS: str(10 * 365 * 86400 * 1000)}, "timeout_clamped"),
    ],
)
def test_bad_input_is_ignored_or_clamped_and_counted(headers: dict[str, str], kind: str) -> None:
    calls, context, _ = hub(max_timeout_s=60.0)
    call = start(calls, headers)  # never an error
    assert context.stats.invalid == {kind: 1}
    remaining = call.remaining_s()
    assert remaining is None or remaining <= 60.0
    assert call.outgoing(call.begin_attempt("h:1"))[p.HOPS] == "1"


def test_failed_call_error_gets_its_chain() -> None:
    calls, _, _ = hub()
    call = start(calls, {p.PATH: "app-x,app-y", p.HOPS: "2"})
    call.end_attempt(call.begin_attempt("10.0.0.1:20880"), Outcome.TIMEOUT)
    error = UpstreamTimeout("no answer")
    call.fail(error)
    assert error.chain == (
        {"app": "app-x"},
        {"app": "app-y"},
        {
            "app": "app-a",
            "service": "svc",
            "method": "m",
            "protocol": "dubbo",
            "endpoint": "10.0.0.1:20880",
            "outcome": "timeout",
            "error": "no answer",
        },
    )
    assert chain_of(call) == error.chain


def test_a_first_hop_sends_hop_one_and_its_own_app() -> None:
    calls, context, _ = hub(max_timeout_s=60.0)
    call = start(calls, {}, timeout_s=5.0)
    attempt = call.begin_attempt("10.0.0.1:20880")
    assert call.outgoing(attempt) == {p.HOPS: "1", p.PATH: "app-a", p.TIMEOUT_MS: "5000"}
    # With nothing read from the caller, a protocol timeout of years is still clamped.
    years = start(calls, {}, timeout_s=10 * 365 * 86400.0)
    assert years.remaining_s() == 60.0
    assert context.stats.invalid == {"timeout_clamped": 1}


def test_hop_counts_past_the_precomputed_ones_are_formatted() -> None:
    calls, _, _ = hub(max_hops=1000)
    call = start(calls, {p.HOPS: "70"})
    assert call.outgoing(call.begin_attempt("10.0.0.1:1"))[p.HOPS] == "71"
