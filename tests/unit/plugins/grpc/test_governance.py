from __future__ import annotations

import grpc

from agent.governance.retry import Failure, FailureKind
from plugins.grpc.governance import failure_of


def test_failures_by_status_and_transport_words() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    refused = "failed to connect to all addresses; last error: UNKNOWN: Connection refused"
    assert failure_of(unavailable, refused) == Failure(FailureKind.CONNECT, sent=False)
    assert failure_of(unavailable, "Socket closed") == Failure(FailureKind.RESET, sent=True)
    assert failure_of(unavailable, "busy") == Failure(FailureKind.STATUS, sent=True)
    assert failure_of(unavailable, None) == Failure(FailureKind.STATUS, sent=True)
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure_of(exhausted, "x") == Failure(FailureKind.STATUS, sent=True)
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED
    assert failure_of(deadline, "x") == Failure(FailureKind.TIMEOUT, sent=True)
    # The provider's own answer: never retried.
    assert failure_of(grpc.StatusCode.NOT_FOUND, "x").kind is FailureKind.OTHER
