"""Dubbo's side of traffic governance: which Dubbo answer a refused call gets, and which
failures are which kind of retryable (agent/governance).

A Java consumer turns a non-OK response status into an RpcException; the status says why.
Rate limiting and circuit breaking answer SERVER_THREADPOOL_EXHAUSTED_ERROR (100), what a
Dubbo provider answers when its thread pool is full, so Dubbo clients already treat it as
overload. An injected abort answers the status the rule names when it is a Dubbo status,
else SERVICE_ERROR. A request refused as a loop (observability's hop limit) is BAD_REQUEST.
"""

from __future__ import annotations

from agent.calls import Call, CallRejected
from agent.cluster.cluster import Cluster
from agent.governance.policy import connection_refusal
from plugins.dubbo.frame import Status
from plugins.dubbo.upstream import UpstreamPool

_OVERLOAD = frozenset({"rate_limited", "overloaded"})
_DUBBO_STATUSES = frozenset(int(s) for s in Status) - {int(Status.OK)}


def rejection_status(rejected: CallRejected) -> Status:
    if rejected.reason in _OVERLOAD:
        return Status.SERVER_THREADPOOL_EXHAUSTED_ERROR
    if rejected.reason == "loop":
        # About the request, not the provider: must not count toward ejecting this agent.
        return Status.BAD_REQUEST
    if rejected.status is not None and rejected.status in _DUBBO_STATUSES:
        return Status(rejected.status)
    return Status.SERVICE_ERROR


def over_connection_limit(record: Call, cluster: Cluster, pool: UpstreamPool) -> str | None:
    """Why a new provider connection may not be opened for this call (the cluster's
    ``max_connections``), or None. The pool keeps one multiplexed connection per provider,
    so the open ones are counted over the cluster's hosts."""
    return connection_refusal(record, cluster.name, lambda: pool.open_to(cluster.hosts()))
