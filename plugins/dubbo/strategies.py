"""Dubbo's cluster strategies (failover, failfast, failsafe, forking) and their settings.

Pure policy: which endpoint to try next, how long to wait, when to give up. The I/O is a
``send(host, timeout_s)`` coroutine the caller supplies, so the policy is tested with a fake
one. Outcomes are reported to the cluster (passive outlier detection) as they happen.

Settings, lowest precedence first, each read method-first as Dubbo's
``URL.getMethodParameter`` does on its merged URL:

1. the provider's URL parameters (``timeout``, ``retries``, ``cluster``, ``forks``,
   ``{method}.timeout``...), as registries put them into ``Instance.metadata``;
2. the agent's ``services[].options`` (:class:`DubboServiceOptions`), service level and
   ``methods.{method}``;
3. the request's ``timeout_ms``.

So ``{method}.timeout`` from the provider beats a service-level ``timeout_ms`` in the
agent's config, as in Dubbo (the consumer's reference-level timeout does not hide a
provider's method-level one), while the agent's method-level setting beats both. For a
generic call the *real* method's settings are used, never ``$invoke``'s (dubbo-go #1336).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from agent.calls import Call as CallRecord
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.errors import (
    ConnectError,
    NoEndpointError,
    RemoteApplicationError,
    UpstreamError,
    UpstreamTimeout,
)
from agent.exchange import Action, Exchange
from agent.governance.retry import Failure, FailureKind
from plugins.dubbo.frame import Status
from plugins.dubbo.options import CLUSTERS, ClusterName, DubboServiceOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")


# Dubbo's defaults (CommonConstants / ClusterConstants).
DEFAULT_TIMEOUT_MS = 1000
DEFAULT_RETRIES = 2
DEFAULT_FORKS = 2
DEFAULT_CLUSTER: ClusterName = "failover"


NO_OPTIONS = DubboServiceOptions()


@dataclass(frozen=True)
class Settings:
    cluster: ClusterName
    timeout_ms: int
    retries: int
    forks: int
    retry_on_timeout: bool


def _int(raw: str | None, minimum: int) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None  # a provider's garbage must not break calls: fall back to the default
    return value if value >= minimum else None


def _layered_int(
    method_value: int | None,
    service_value: int | None,
    provider: Mapping[str, str],
    method: str,
    key: str,
    minimum: int,
) -> int | None:
    if method_value is not None:
        return method_value
    from_provider = _int(provider.get(f"{method}.{key}"), minimum)
    if from_provider is not None:
        return from_provider
    if service_value is not None:
        return service_value
    return _int(provider.get(key), minimum)


def _cluster_name(raw: str | None) -> ClusterName | None:
    for name in CLUSTERS:
        if raw == name:
            return name
    return None


def resolve(
    method: str,
    provider: Mapping[str, str],
    options: DubboServiceOptions = NO_OPTIONS,
    request_timeout_ms: int | None = None,
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Settings:
    """The settings of one call of ``method`` on a provider with URL parameters ``provider``."""
    mine = options.methods.get(method)
    # Each option: method level (the agent's, then the provider's), then service level
    # (likewise). Written out, not looked up by name: this runs on every call.
    timeout = _layered_int(
        mine.timeout_ms if mine is not None else None,
        options.timeout_ms,
        provider,
        method,
        "timeout",
        1,
    )
    retries = _layered_int(
        mine.retries if mine is not None else None, options.retries, provider, method, "retries", 0
    )
    forks = _layered_int(
        mine.forks if mine is not None else None, options.forks, provider, method, "forks", 1
    )
    cluster = mine.cluster if mine is not None else None
    if cluster is None:
        cluster = _cluster_name(provider.get(f"{method}.cluster"))
        if cluster is None:
            cluster = options.cluster
            if cluster is None:
                cluster = _cluster_name(provider.get("cluster"))
    # Only the agent's config can declare a method safe to repeat: no Dubbo URL says so.
    on_timeout = mine.retry_on_timeout if mine is not None else None
    if on_timeout is None:
        on_timeout = options.retry_on_timeout
    return Settings(
        cluster=cluster or DEFAULT_CLUSTER,
        timeout_ms=request_timeout_ms or timeout or default_timeout_ms,
        retries=DEFAULT_RETRIES if retries is None else retries,
        forks=forks or DEFAULT_FORKS,
        retry_on_timeout=bool(on_timeout),
    )


class ProviderStatusError(UpstreamError):
    """The provider answered with an error status (service not found, server error...).

    ``alive``: the answer says the provider is fine and only this request is not (no such
    method, a request it cannot read), so it must not count toward ejecting the provider.
    ``refused``: the provider failed before running the method, on this request itself
    (plugins/dubbo/provider_errors.py): every provider would answer the same.
    """

    def __init__(self, message: str, status: int, alive: bool, refused: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.alive = alive
        self.refused = refused


class Balancer(Protocol):
    """What the strategies need from a cluster (agent.cluster.Cluster is one)."""

    def choose(self, context: PickContext = NO_CONTEXT) -> Host | None: ...

    def report_success(self, host: Host) -> None: ...

    def report_failure(self, host: Host, connect: bool = False) -> None: ...


Send = Callable[[Host, Settings], Awaitable[T]]
"""One attempt on one host, within ``settings.timeout_ms``; raises a MeshAgentError."""


@dataclass(frozen=True)
class Call:
    """One logical call: how to choose a host, and its settings once a host is known."""

    method: str
    settings_for: Callable[[Host], Settings]
    # Hosts that may not serve this call at all (another version or group).
    ineligible: frozenset[str] = frozenset()
    hash_key: bytes | None = None
    # The call's record (agent/calls.py), whose governance rule (retries, budget, backoff)
    # replaces Dubbo's retries for failover, and whose deadline bounds them.
    record: CallRecord | None = None


# Statuses a provider (or Dubbo's transport) answers without running the method.
_NOT_RUN = frozenset(
    {Status.SERVER_THREADPOOL_EXHAUSTED_ERROR, Status.SERVICE_NOT_FOUND, Status.CHANNEL_INACTIVE}
)
# Statuses worth another provider: overload and the provider's own trouble.
_RETRYABLE = _NOT_RUN | {Status.SERVER_ERROR, Status.SERVICE_ERROR}
# What failover retries under Dubbo's ``retries`` (no governance rule): what may succeed
# on another provider. A timeout may mean the call is running: only when the method is
# declared safe to repeat (``retry_on_timeout``).
_FAILOVER_RETRIES = frozenset({FailureKind.CONNECT, FailureKind.RESET, FailureKind.STATUS})
_RETRY_ON_TIMEOUT = _FAILOVER_RETRIES | {FailureKind.TIMEOUT}


def failure_of(error: BaseException) -> Failure:
    """What kind of failure ``error`` is, for failover and for a retry rule.

    Connect failures never reached a provider; an overload or unavailable status, a
    provider's server error or a dropped connection may succeed elsewhere. A provider's own
    exception is an answer, and a status about the request (bad request, client error, a
    generic call's arguments the provider could not convert) would fail the same way on
    every provider: neither is retried."""
    if isinstance(error, ConnectError):
        return Failure(FailureKind.CONNECT, sent=False)
    if isinstance(error, RemoteApplicationError | NoEndpointError):
        return Failure(FailureKind.OTHER, sent=True)
    if isinstance(error, UpstreamTimeout):
        return Failure(FailureKind.TIMEOUT, sent=True)
    if isinstance(error, ProviderStatusError):
        if error.refused:
            return Failure(FailureKind.OTHER, sent=True)
        return status_failure(error.status) or Failure(FailureKind.OTHER, sent=True)
    # Sent, then the connection broke or the answer could not be read.
    return Failure(FailureKind.RESET, sent=True)


def status_failure(status: int) -> Failure | None:
    """A provider's non-OK response status as a retryable failure, or None when it is not."""
    if status in _RETRYABLE:
        return Failure(FailureKind.STATUS, sent=status not in _NOT_RUN)
    return None


def _report(cluster: Balancer, host: Host, error: BaseException | None) -> None:
    if (
        error is None
        or isinstance(error, RemoteApplicationError)
        or (isinstance(error, ProviderStatusError) and error.alive)
    ):
        cluster.report_success(host)  # the provider answered: it is alive
    elif isinstance(error, UpstreamError):
        cluster.report_failure(host, connect=isinstance(error, ConnectError))


def _choose(cluster: Balancer, call: Call, tried: frozenset[str]) -> Host | None:
    host = cluster.choose(PickContext(call.hash_key, call.ineligible | tried))
    if host is None and tried:
        # Dubbo's reselect: every provider was tried once; go round again rather than fail.
        host = cluster.choose(PickContext(call.hash_key, call.ineligible))
    return host


async def _attempt(cluster: Balancer, host: Host, settings: Settings, send: Send[T]) -> T:
    host.active_requests += 1
    try:
        result = await send(host, settings)
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            _report(cluster, host, exc)
        raise
    finally:
        host.active_requests -= 1
    _report(cluster, host, None)
    return result


def _no_endpoint(call: Call) -> NoEndpointError:
    return NoEndpointError(f"no provider available for {call.method!r}")


async def invoke(cluster: Balancer, call: Call, send: Send[T]) -> tuple[T | None, Host]:
    """Run ``call`` with the strategy its settings name; returns (result, host that answered).

    For failsafe the result is None when the call failed (the host is the one tried).
    """
    first = _choose(cluster, call, frozenset())
    if first is None:
        raise _no_endpoint(call)
    settings = call.settings_for(first)
    if settings.cluster == "forking":
        return await _forking(cluster, call, send, first, settings)
    if settings.cluster == "failsafe":
        try:
            return await _attempt(cluster, first, settings, send), first
        except RemoteApplicationError:
            raise
        except UpstreamError as exc:
            log.warning(
                "failsafe call failed; returning null: %s",
                exc,
                extra={"method": call.method, "endpoint": first.id},
            )
            return None, first
    if settings.cluster == "failfast":
        return await _attempt(cluster, first, settings, send), first
    # Failover: the call driver (agent/exchange.py) decides each retry: Dubbo's
    # ``retries`` for what may succeed on another provider, or a governance rule.
    retry_on = _RETRY_ON_TIMEOUT if settings.retry_on_timeout else _FAILOVER_RETRIES
    exchange = Exchange(call.record, settings.retries, retry_on=retry_on, own_retries_resend=True)
    return await _failover(cluster, call, send, first, settings, exchange)


async def _failover(
    cluster: Balancer, call: Call, send: Send[T], host: Host, settings: Settings, exchange: Exchange
) -> tuple[T, Host]:
    host_settings = settings
    while True:
        try:
            return await _attempt(cluster, host, host_settings, send), host
        except UpstreamError as exc:
            step = exchange.failed(host.id, failure_of(exc))
            if step.action is Action.GIVE_UP:
                raise
            log.info(
                "failover: attempt %d on %s failed, trying another provider: %s",
                exchange.attempts,
                host.id,
                exc,
                extra={"method": call.method, "endpoint": host.id},
            )
            if step.action is Action.WAIT:
                await asyncio.sleep(step.delay_s)
            nxt = _choose(cluster, call, exchange.tried)
            if nxt is None:
                raise
            host = nxt
            host_settings = call.settings_for(host)


async def _forking(
    cluster: Balancer, call: Call, send: Send[T], first: Host, settings: Settings
) -> tuple[T, Host]:
    hosts = [first]
    while len(hosts) < settings.forks:
        more = cluster.choose(PickContext(call.hash_key, call.ineligible | {h.id for h in hosts}))
        if more is None:
            break
        hosts.append(more)
    tasks = {
        asyncio.ensure_future(_attempt(cluster, host, call.settings_for(host), send)): host
        for host in hosts
    }
    # No ``await`` in a ``finally``: compiled by mypyc, the exception pending there is lost
    # when the coroutine suspends (the forking deadline test caught it).
    failure: BaseException | None = None
    try:
        answer = await _first_answer(call, settings, tasks)
    except BaseException as exc:
        failure = exc
    for task in tasks:
        if not task.done():
            task.cancel()
    # The losers' outcomes (cancelled or failed) are collected, never raised.
    await asyncio.gather(*tasks, return_exceptions=True)
    if failure is not None:
        raise failure
    return answer


async def _first_answer(
    call: Call, settings: Settings, tasks: dict[asyncio.Task[T], Host]
) -> tuple[T, Host]:
    last_error: BaseException | None = None
    try:
        async with asyncio.timeout(settings.timeout_ms / 1000):
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    # First answer wins, a provider's own exception included (as Dubbo's
                    # ForkingClusterInvoker: a Result with an exception is a result).
                    if error is None:
                        return task.result(), tasks[task]
                    if isinstance(error, RemoteApplicationError):
                        raise error
                    last_error = error
    except TimeoutError:
        raise UpstreamTimeout(
            f"no provider of {call.method!r} answered within {settings.timeout_ms} ms "
            f"(forking to {len(tasks)})"
        ) from None
    assert last_error is not None
    raise last_error
