"""The observer and policy bases, and the refusal a policy raises."""

from __future__ import annotations

import pytest

from agent.call_hooks import CallObserver, CallPolicy, CallRejected
from agent.errors import MeshAgentError


def test_every_hook_is_optional() -> None:
    class Quiet(CallObserver):
        pass

    class Lenient(CallPolicy):
        pass

    observer, policy = Quiet(), Lenient()
    # No hook raises or needs overriding; the arguments are never looked at.
    assert observer.call_started(None) is None  # type: ignore[arg-type]
    assert observer.attempt_started(None, None) is None  # type: ignore[arg-type]
    assert observer.attempt_finished(None, None) is None  # type: ignore[arg-type]
    assert observer.call_finished(None) is None  # type: ignore[arg-type]
    assert policy.admit(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "status", "http"),
    [
        ("rate_limited", None, 429),
        ("loop", None, 508),
        ("overloaded", None, 503),
        ("fault", None, 503),
        ("fault", 418, 418),  # an injected abort's own HTTP status
        ("fault", 80, 503),  # a Dubbo status is no HTTP status: by reason
        ("something_new", None, 503),
    ],
)
def test_a_refusal_answers_http_by_its_status_or_reason(
    reason: str, status: int | None, http: int
) -> None:
    refused = CallRejected(reason, "no", status)
    assert isinstance(refused, MeshAgentError)
    assert (refused.reason, str(refused)) == (reason, "no")
    assert refused.http_status() == http
