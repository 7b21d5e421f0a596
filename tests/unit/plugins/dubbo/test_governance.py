from __future__ import annotations

from agent.calls import CallRejected
from agent.errors import ConnectError, RemoteApplicationError, UpstreamError, UpstreamTimeout
from agent.governance.retry import Failure, FailureKind
from plugins.dubbo.frame import Status
from plugins.dubbo.governance import rejection_status
from plugins.dubbo.strategies import ProviderStatusError, failure_of, status_failure


def test_overload_is_thread_pool_exhausted_and_aborts_keep_a_dubbo_status() -> None:
    assert rejection_status(CallRejected("rate_limited", "x")) == 100
    assert rejection_status(CallRejected("overloaded", "x")) == 100
    assert rejection_status(CallRejected("fault", "x", 80)) == Status.SERVER_ERROR
    # 503 is an HTTP status, not a Dubbo one; 20 would be "OK"
    assert rejection_status(CallRejected("fault", "x", 503)) == Status.SERVICE_ERROR
    assert rejection_status(CallRejected("fault", "x", 20)) == Status.SERVICE_ERROR
    # A loop is the request's fault, not the provider's (observability's hop limit).
    assert rejection_status(CallRejected("loop", "x")) == Status.BAD_REQUEST


def test_failures_say_whether_the_provider_may_have_run_the_call() -> None:
    assert failure_of(ConnectError("x")) == Failure(FailureKind.CONNECT, sent=False)
    assert failure_of(UpstreamTimeout("x")) == Failure(FailureKind.TIMEOUT, sent=True)
    assert failure_of(UpstreamError("lost")) == Failure(FailureKind.RESET, sent=True)
    assert failure_of(RemoteApplicationError("x", "T")).kind == FailureKind.OTHER
    busy = ProviderStatusError("busy", Status.SERVER_THREADPOOL_EXHAUSTED_ERROR, alive=False)
    assert failure_of(busy) == Failure(FailureKind.STATUS, sent=False)
    assert failure_of(ProviderStatusError("e", Status.SERVER_ERROR, False)).sent
    assert failure_of(ProviderStatusError("bad", Status.BAD_REQUEST, True)).kind == "other"
    # SERVICE_ERROR is retried, unless the provider refused the request itself (issue 23:
    # an argument it could not convert was sent to every provider in turn).
    service_error = ProviderStatusError("e", Status.SERVICE_ERROR, True)
    assert failure_of(service_error).kind == FailureKind.STATUS
    refused = ProviderStatusError("e", Status.SERVICE_ERROR, True, refused=True)
    assert failure_of(refused).kind == FailureKind.OTHER
    assert status_failure(Status.SERVER_THREADPOOL_EXHAUSTED_ERROR) == Failure(
        FailureKind.STATUS, sent=False
    )
    assert status_failure(Status.BAD_REQUEST) is None
