from __future__ import annotations

from agent.calls import CallRejected, Calls
from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.governance.policy import GovernancePolicy
from agent.governance.rules import RuleSet
from agent.runtime.protocols import ListenerContext
from plugins.thrift.governance import excluded, start


def context(rules: dict[str, object] | None) -> ListenerContext:
    calls = Calls("app")
    if rules is not None:
        policy = GovernancePolicy(RuleSet.model_validate(rules))
        calls.policies.append(policy)
        calls.observers.append(policy)
    return ListenerContext(
        ListenerConfig(port=1, service="svc", protocol="thrift"),
        ServiceConfig(name="svc", protocol="thrift"),
        Cluster("svc", RoundRobin()),
        calls=calls,
    )


def test_nothing_plugged_in_opens_no_call() -> None:
    bare = context(None)
    assert start(bare, "svc", "m", 100) is None
    assert excluded(bare.cluster, None) == frozenset()


def test_a_refusal_is_returned_not_raised() -> None:
    limited = context({"rules": [{"match": {"method": "m"}, "fault": {"abort": {"percent": 100}}}]})
    refused = start(limited, "svc", "m", 100)
    assert isinstance(refused, CallRejected) and refused.reason == "fault"
    admitted = start(limited, "svc", "other", 100)
    assert admitted is not None and not isinstance(admitted, CallRejected)
    assert admitted.deadline is not None


def test_the_incoming_context_reaches_the_call() -> None:
    admitted = start(context({"rules": []}), "svc", "m", 100, {"x-meshagent-hops": "2"})
    assert admitted is not None and not isinstance(admitted, CallRejected)
    assert admitted.incoming == {"x-meshagent-hops": "2"}
