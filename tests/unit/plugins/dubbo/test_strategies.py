"""The cluster strategies' policy, with a scripted ``send`` in place of the network.

The cluster is the real one (agent.cluster): its balancer and outlier detection are what the
strategies drive, so they are part of what is tested here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.discovery.types import Instance, Reset, frozen_mapping
from agent.errors import (
    ConnectError,
    NoEndpointError,
    RemoteApplicationError,
    UpstreamError,
    UpstreamTimeout,
)
from plugins.dubbo import strategies
from plugins.dubbo.options import DubboServiceOptions
from plugins.dubbo.strategies import (
    ProviderStatusError,
    Settings,
    resolve,
)


def make_cluster(*ids: str, params: dict[str, str] | None = None) -> Cluster:
    cluster = Cluster("svc", RoundRobin(), OutlierPolicy(consecutive_failures=3))
    instances = tuple(
        Instance(i, "127.0.0.1", 20000 + n, metadata=frozen_mapping(params or {}))
        for n, i in enumerate(ids)
    )
    cluster.apply(Reset(1, instances))
    return cluster


class Script:
    """``send``: per host id, what to do (a value, an exception, or a coroutine factory)."""

    def __init__(self, **by_host: Any) -> None:
        self.by_host = by_host
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: Host, settings: Settings) -> Any:
        self.calls.append((host.id, settings.timeout_ms))
        outcome = self.by_host[host.id]
        if callable(outcome):
            outcome = await outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def call(method: str = "m", **options: Any) -> strategies.Call:
    parsed = DubboServiceOptions.model_validate(options)
    return strategies.Call(
        method, lambda host: resolve(method, host.instance.metadata, parsed, None, 1000)
    )


# -- settings ----------------------------------------------------------------------------


def test_defaults_are_dubbos() -> None:
    assert resolve("m", {}) == Settings("failover", 1000, 2, 2, False)


def test_method_settings_beat_service_settings_at_every_layer() -> None:
    provider = {"timeout": "3000", "slow.timeout": "500", "retries": "1", "slow.retries": "0"}
    agent = DubboServiceOptions.model_validate({"timeout_ms": 2000, "retries": 4})
    # the provider's method-level beats the agent's service level (Dubbo's merged URL)
    assert resolve("slow", provider, agent).timeout_ms == 500
    assert resolve("slow", provider, agent).retries == 0
    # the agent's service level beats the provider's service level
    assert resolve("echo", provider, agent).timeout_ms == 2000
    assert resolve("echo", provider, agent).retries == 4
    # the agent's method level beats everything but the request
    mine = DubboServiceOptions.model_validate({"methods": {"slow": {"timeout_ms": 50}}})
    assert resolve("slow", provider, mine).timeout_ms == 50
    assert resolve("slow", provider, mine, request_timeout_ms=7).timeout_ms == 7


def test_provider_garbage_falls_back_to_defaults() -> None:
    provider = {"timeout": "soon", "retries": "-1", "cluster": "mergeable", "forks": "0"}
    assert resolve("m", provider) == Settings("failover", 1000, 2, 2, False)


def test_cluster_and_forks_from_the_provider_url() -> None:
    settings = resolve("m", {"cluster": "forking", "m.forks": "3"})
    assert (settings.cluster, settings.forks) == ("forking", 3)


# -- failover ----------------------------------------------------------------------------


async def test_failover_retries_connect_failures_on_other_providers() -> None:
    cluster = make_cluster("a", "b", "c")
    send = Script(a=ConnectError("refused"), b=ConnectError("refused"), c="ok")
    result, host = await strategies.invoke(cluster, call(), send)
    assert (result, host.id) == ("ok", "c")
    assert [h for h, _ in send.calls] == ["a", "b", "c"]
    a = cluster.get("a")
    assert a is not None and a.stats.connect_failures == 1


async def test_failover_gives_up_after_retries_plus_one_attempts() -> None:
    cluster = make_cluster("a", "b", "c", "d")
    send = Script(a=UpstreamError("lost"), b=UpstreamError("lost"), c=UpstreamError("lost"), d="ok")
    with pytest.raises(UpstreamError, match="lost"):
        await strategies.invoke(cluster, call(retries=2), send)
    assert len(send.calls) == 3


async def test_failover_goes_round_again_when_every_provider_was_tried() -> None:
    cluster = make_cluster("a")
    attempts = iter([ProviderStatusError("busy", 100, alive=False), "ok"])
    send = Script(a=lambda: _next(attempts))
    result, _ = await strategies.invoke(cluster, call(), send)
    assert result == "ok" and [h for h, _ in send.calls] == ["a", "a"]


async def _next(attempts: Any) -> Any:
    return next(attempts)


async def test_a_providers_exception_is_an_answer_never_retried() -> None:
    cluster = make_cluster("a", "b")
    send = Script(a=RemoteApplicationError("boom", "com.acme.Boom"), b="ok")
    with pytest.raises(RemoteApplicationError):
        await strategies.invoke(cluster, call(), send)
    assert len(send.calls) == 1
    a = cluster.get("a")
    assert a is not None and a.consecutive_failures == 0  # it answered: not an outlier


async def test_timeouts_are_retried_only_when_declared_safe() -> None:
    cluster = make_cluster("a", "b")
    send = Script(a=UpstreamTimeout("slow"), b="ok")
    with pytest.raises(UpstreamTimeout):
        await strategies.invoke(cluster, call(), send)
    assert len(send.calls) == 1

    cluster = make_cluster("a", "b")
    send = Script(a=UpstreamTimeout("slow"), b="ok")
    declared = call(methods={"m": {"retry_on_timeout": True}})
    result, host = await strategies.invoke(cluster, declared, send)
    assert (result, host.id) == ("ok", "b")


async def test_each_attempt_uses_its_providers_timeout() -> None:
    cluster = Cluster("svc", RoundRobin())
    cluster.apply(
        Reset(
            1,
            (
                Instance("a", "h", 1, metadata=frozen_mapping({"m.timeout": "100"})),
                Instance("b", "h", 2, metadata=frozen_mapping({"timeout": "250"})),
            ),
        )
    )
    send = Script(a=ConnectError("refused"), b="ok")
    await strategies.invoke(cluster, call(), send)
    assert send.calls == [("a", 100), ("b", 250)]


async def test_failures_eject_a_provider_and_stop_choosing_it() -> None:
    cluster = make_cluster("dead", "live")
    send = Script(dead=ConnectError("refused"), live="ok")
    for _ in range(6):
        result, host = await strategies.invoke(cluster, call(), send)
        assert (result, host.id) == ("ok", "live")
    tried_dead = [h for h, _ in send.calls if h == "dead"]
    assert len(tried_dead) == 3  # consecutive_failures=3 ejects it; then never again
    dead = cluster.get("dead")
    assert dead is not None and dead.times_ejected == 1


async def test_answered_error_statuses_do_not_eject() -> None:
    cluster = make_cluster("a")
    send = Script(a=ProviderStatusError("no such method", 70, alive=True))
    for _ in range(3):
        with pytest.raises(ProviderStatusError):
            await strategies.invoke(cluster, call(retries=0), send)
    a = cluster.get("a")
    assert a is not None and a.times_ejected == 0


async def test_no_endpoint() -> None:
    cluster = make_cluster()
    with pytest.raises(NoEndpointError):
        await strategies.invoke(cluster, call(), Script())


async def test_ineligible_hosts_are_never_chosen() -> None:
    cluster = make_cluster("v1", "v2")
    send = Script(v1="one", v2="two")
    only_v2 = strategies.Call("m", lambda h: resolve("m", {}), frozenset({"v1"}))
    for _ in range(3):
        result, _ = await strategies.invoke(cluster, only_v2, send)
        assert result == "two"
    send = Script(v1="one", v2=ConnectError("refused"))
    with pytest.raises(ConnectError):  # not even as a retry target
        await strategies.invoke(cluster, only_v2, send)


# -- failfast, failsafe, forking ------------------------------------------------------------


async def test_failfast_makes_one_attempt() -> None:
    cluster = make_cluster("a", "b")
    send = Script(a=ConnectError("refused"), b="ok")
    with pytest.raises(ConnectError):
        await strategies.invoke(cluster, call(cluster="failfast"), send)
    assert len(send.calls) == 1


async def test_failsafe_returns_null_on_failure_but_not_on_an_exception() -> None:
    cluster = make_cluster("a", "b")
    send = Script(a=UpstreamTimeout("slow"), b="ok")
    result, host = await strategies.invoke(cluster, call(cluster="failsafe"), send)
    assert (result, host.id) == (None, "a")
    send = Script(a=RemoteApplicationError("boom", "X"), b="ok")
    cluster = make_cluster("a", "b")
    with pytest.raises(RemoteApplicationError):
        await strategies.invoke(cluster, call(cluster="failsafe"), send)


async def test_forking_first_answer_wins_and_the_rest_are_cancelled() -> None:
    cluster = make_cluster("slow", "fast", "spare")
    cancelled = asyncio.Event()

    async def never() -> Any:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def soon() -> Any:
        return "fast answer"

    send = Script(slow=never, fast=soon, spare="unused")
    result, host = await strategies.invoke(cluster, call(cluster="forking", forks=2), send)
    assert (result, host.id) == ("fast answer", "fast")
    assert cancelled.is_set()
    assert sorted(h for h, _ in send.calls) == ["fast", "slow"]
    slow = cluster.get("slow")
    assert slow is not None and slow.active_requests == 0 and slow.consecutive_failures == 0


async def test_forking_fails_only_when_every_fork_failed() -> None:
    cluster = make_cluster("a", "b")
    send = Script(a=ConnectError("refused a"), b=UpstreamError("lost b"))
    with pytest.raises(UpstreamError):
        await strategies.invoke(cluster, call(cluster="forking"), send)
    assert len(send.calls) == 2


async def test_forking_has_one_deadline() -> None:
    cluster = make_cluster("a", "b")

    async def never() -> Any:
        await asyncio.Event().wait()

    send = Script(a=never, b=never)
    with pytest.raises(UpstreamTimeout, match="forking to 2"):
        await strategies.invoke(cluster, call(cluster="forking", timeout_ms=20), send)
