from __future__ import annotations

import grpc

from agent.calls import CallRejected
from plugins.grpc.governance import status_code


def test_rate_limits_are_resource_exhausted_the_rest_unavailable() -> None:
    assert status_code(CallRejected("rate_limited", "x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code(CallRejected("overloaded", "x")) == grpc.StatusCode.UNAVAILABLE
    assert status_code(CallRejected("fault", "x", 503)) == grpc.StatusCode.UNAVAILABLE
    assert status_code(CallRejected("degraded", "x")) == grpc.StatusCode.UNAVAILABLE
