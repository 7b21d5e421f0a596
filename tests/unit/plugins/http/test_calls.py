"""The HTTP plugin's call helpers: outcomes, outgoing headers, refusals. (Which
failures are retried, idempotent methods included: tests/unit/test_exchange.py.)"""

from __future__ import annotations

import json

from agent.calls import CallRejected, Outcome
from agent.governance.policy import Degraded
from agent.governance.rules import Degrade
from plugins.http.calls import (
    chain_of,
    header_lookup,
    outcome_of_status,
    refusal,
    with_outgoing,
)


def test_only_5xx_is_the_providers_failure() -> None:
    assert outcome_of_status(200) is Outcome.OK
    assert outcome_of_status(404) is Outcome.OK
    assert outcome_of_status(503) is Outcome.APP_ERROR


def test_outgoing_fields_replace_the_callers_of_the_same_name() -> None:
    fields = [(b"Traceparent", b"00-old"), (b"Accept", b"*/*")]
    sent = with_outgoing(fields, {"traceparent": "00-new", "x-meshagent-hops": "1"})
    assert sent == [
        (b"Accept", b"*/*"),
        (b"traceparent", b"00-new"),
        (b"x-meshagent-hops", b"1"),
    ]


def test_header_lookup_is_by_lower_case_name_first_value() -> None:
    lookup = header_lookup([(b"X-Canary", b"yes"), (b"x-canary", b"no")])
    assert lookup("x-canary") == "yes"
    assert lookup("missing") is None


def test_refusals_by_reason() -> None:
    status, content_type, body = refusal(CallRejected("rate_limited", "too fast"), "api")
    assert (status, content_type) == (429, b"application/problem+json")
    problem = json.loads(body)
    assert problem["reason"] == "rate_limited" and problem["service"] == "api"
    assert refusal(CallRejected("overloaded", "full"), "api")[0] == 503
    assert refusal(CallRejected("loop", "loop"), "api")[0] == 508
    # A rule's own status when it is an HTTP error status, else the reason's.
    assert refusal(CallRejected("fault", "x", 418), "api")[0] == 418
    assert refusal(CallRejected("fault", "x", 80), "api")[0] == 503


def test_a_fallback_value_is_answered_as_json_200() -> None:
    degraded = Degraded(Degrade(value={"ok": False}))
    status, content_type, body = refusal(degraded, "api")
    assert (status, content_type, json.loads(body)) == (200, b"application/json", {"ok": False})


def test_a_loop_refusal_carries_its_chain() -> None:
    rejected = CallRejected("loop", "loop")
    rejected.chain = ({"app": "a"}, {"app": "b", "service": "api"})
    assert json.loads(refusal(rejected, "api")[2])["chain"][0] == {"app": "a"}


def test_no_chain_without_a_failed_call() -> None:
    assert chain_of(None) == {}
