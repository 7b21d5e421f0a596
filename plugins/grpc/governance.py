"""gRPC's side of traffic governance (agent/governance) for calls made through grpcio
channels: the JSON invocation and transcoded HTTP/1.1 requests (plugins/grpc/invoker.py).
The listener's relay (plugins/grpc/h2relay.py) applies the same rules on its own frames.

Rules see the method as written in the URL on the JSON invocation
(``/v1/invoke/grpc/{service}/{method}``: ``Method`` or ``package.Service.Method``), where a
degradation's fallback value is the JSON result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc  # type: ignore[import-untyped]

from agent.calls import Call
from agent.cluster.cluster import Cluster
from agent.governance.policy import decision_of
from agent.governance.retry import Failure, FailureKind


def subset_out(record: Call, cluster: Cluster, metadata: Mapping[str, str]) -> frozenset[str]:
    """For the JSON invocation: the endpoints the rule's traffic split leaves out of the
    call (the request's ``metadata`` as headers); none without a split."""
    decision = decision_of(record)
    if decision is None or not decision.splits:
        return frozenset()
    lowered = {key.lower(): value for key, value in metadata.items()}
    return decision.excluded(cluster.hosts(), lambda h: h.instance.metadata, lowered.get)


# What grpc reports when no HTTP/2 connection to the endpoint could be made: nothing
# was sent.
_NOT_CONNECTED = "failed to connect"
# grpc's words for a connection lost under a call (anything else UNAVAILABLE is the
# provider's own status).
_TRANSPORT_LOST = ("socket closed", "connection reset", "broken pipe", "goaway", "stream removed")


def failure_of(code: Any, details: str | None) -> Failure:
    """What kind of failure an upstream call's status is, for a retry rule. UNAVAILABLE
    and RESOURCE_EXHAUSTED are gRPC's retryable statuses (gRFC A6, Envoy's ``retry-on``);
    the provider may have run the method unless grpc never connected."""
    text = (details or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        if text.startswith(_NOT_CONNECTED):
            return Failure(FailureKind.CONNECT, sent=False)
        if any(words in text for words in _TRANSPORT_LOST):
            return Failure(FailureKind.RESET, sent=True)
        return Failure(FailureKind.STATUS, sent=True)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Failure(FailureKind.STATUS, sent=True)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure(FailureKind.TIMEOUT, sent=True)
    return Failure(FailureKind.OTHER, sent=True)
