from __future__ import annotations

import asyncio

import pytest

from agent.calls import (
    Attempt,
    Call,
    CallObserver,
    CallPolicy,
    CallRejected,
    Calls,
    Direction,
    Outcome,
    outcome_of,
)
from agent.errors import (
    ConnectError,
    InvalidRequest,
    NoEndpointError,
    RemoteApplicationError,
    UpstreamError,
    UpstreamTimeout,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder(CallObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def call_started(self, call: Call) -> None:
        self.events.append(("call_started", call.route.method))

    def attempt_started(self, call: Call, attempt: Attempt) -> None:
        attempt.headers["traceparent"] = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        self.events.append(("attempt_started", attempt.endpoint))

    def attempt_finished(self, call: Call, attempt: Attempt) -> None:
        self.events.append(("attempt_finished", attempt.outcome))

    def call_finished(self, call: Call) -> None:
        self.events.append(("call_finished", call.outcome))


def test_a_call_tells_observers_in_order_and_counts_retries() -> None:
    clock = Clock()
    calls = Calls("shop", "bj", clock=clock)
    recorder = Recorder()
    calls.observers.append(recorder)
    route = calls.outbound_route("com.acme.Api", "hello")
    assert (route.source, route.source_cluster, route.target) == ("shop", "bj", "com.acme.Api")
    call = calls.start("dubbo", Direction.OUTBOUND, route, timeout_s=2.0)
    first = call.begin_attempt("10.0.0.1:20880")
    clock.now += 0.5
    call.end_attempt(first, Outcome.CONNECT_ERROR)
    second = call.begin_attempt("10.0.0.2:20880")
    assert call.outgoing(second)["traceparent"].startswith("00-")
    call.end_attempt(second, Outcome.OK, "20")
    call.end_attempt(second, Outcome.TIMEOUT)  # a second end is ignored
    call.finish(Outcome.OK, "20")
    call.finish(Outcome.TIMEOUT)  # the first outcome stands
    assert call.retries == 1
    assert call.remaining_s() == pytest.approx(1.5)
    assert second.outcome is Outcome.OK and first.ended == 100.5
    assert recorder.events == [
        ("call_started", "hello"),
        ("attempt_started", "10.0.0.1:20880"),
        ("attempt_finished", Outcome.CONNECT_ERROR),
        ("attempt_started", "10.0.0.2:20880"),
        ("attempt_finished", Outcome.OK),
        ("call_finished", Outcome.OK),
    ]


def test_remaining_time_never_goes_negative_and_is_none_without_deadline() -> None:
    clock = Clock()
    calls = Calls(clock=clock)
    call = calls.start("http", Direction.INVOKE, calls.outbound_route("svc", "GET"), timeout_s=1)
    clock.now += 5
    assert call.remaining_s() == 0.0
    assert calls.start("http", Direction.INVOKE, call.route).remaining_s() is None


def test_a_policy_refusal_finishes_the_call_as_rejected() -> None:
    class Refuse(CallPolicy):
        def admit(self, call: Call) -> None:
            raise CallRejected("rate_limited", "over 10 calls/s")

    calls = Calls()
    recorder = Recorder()
    calls.observers.append(recorder)
    calls.policies.append(Refuse())
    with pytest.raises(CallRejected) as caught:
        calls.start("grpc", Direction.INVOKE, calls.outbound_route("svc", "Get"))
    assert caught.value.reason == "rate_limited"
    assert recorder.events[-1] == ("call_finished", Outcome.REJECTED)


def test_a_policy_may_shorten_the_deadline() -> None:
    class Bound(CallPolicy):
        def admit(self, call: Call) -> None:
            call.deadline = call.started + 0.25

    clock = Clock()
    calls = Calls(clock=clock)
    calls.policies.append(Bound())
    call = calls.start("thrift", Direction.OUTBOUND, calls.outbound_route("s", "m"), timeout_s=9)
    assert call.remaining_s() == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (CallRejected("loop", "A -> B -> A"), Outcome.REJECTED),
        (UpstreamTimeout("slow"), Outcome.TIMEOUT),
        (TimeoutError(), Outcome.TIMEOUT),
        (NoEndpointError("none"), Outcome.NO_ENDPOINT),
        (ConnectError("refused"), Outcome.CONNECT_ERROR),
        (RemoteApplicationError("boom", "java.lang.IllegalStateException"), Outcome.APP_ERROR),
        (InvalidRequest([("body.args", "bad")]), Outcome.INVALID),
        (UpstreamError("reset"), Outcome.UPSTREAM_ERROR),
        (ConnectionResetError(), Outcome.UPSTREAM_ERROR),
        (asyncio.CancelledError(), Outcome.CANCELLED),
    ],
)
def test_outcome_of_errors(error: BaseException, outcome: Outcome) -> None:
    assert outcome_of(error) is outcome


def test_fail_records_the_error() -> None:
    calls = Calls()
    call = calls.start("dubbo", Direction.INVOKE, calls.outbound_route("s", "m"))
    error = UpstreamTimeout("3000 ms")
    call.fail(error, "31")
    assert (call.outcome, call.status, call.error) == (Outcome.TIMEOUT, "31", error)
