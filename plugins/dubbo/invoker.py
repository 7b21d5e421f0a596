"""JSON invocation of a Dubbo service: ``POST /v1/invoke/dubbo/{interface}/{method}``.

The body (:class:`InvokeBody`) names the parameter types and the arguments; the call goes
out as a generic ``$invoke`` (plugins/dubbo/generic.py), through the service's cluster
strategy (plugins/dubbo/strategies.py) over the pooled, multiplexed upstream connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from agent.calls import Attempt, Call, CallRejected, Direction, Outcome, outcome_of
from agent.cluster.host import Host
from agent.errors import (
    InvalidRequest,
    LocalProtocolError,
    RemoteApplicationError,
    RemoteProtocolError,
    UpstreamError,
    UpstreamTimeout,
)
from agent.governance.policy import Degraded, decision_of
from agent.runtime.protocols import InvokeRequest, InvokeResult
from agent.telemetry.propagation import TIMEOUT_MS
from plugins.dubbo import provider_errors, strategies
from plugins.dubbo.body import (
    Result,
    decode_result,
    encode_invocation,
    request_frame,
    with_attachments,
)
from plugins.dubbo.config import DubboConfig
from plugins.dubbo.frame import Status
from plugins.dubbo.generic import (
    ArgumentError,
    GenericCall,
    generic_invocation,
    remote_exception,
    to_json,
)
from plugins.dubbo.governance import over_connection_limit
from plugins.dubbo.invoke_body import AttachmentValue, InvokeBody, parse_body
from plugins.dubbo.options import DubboServiceOptions
from plugins.dubbo.strategies import ProviderStatusError, Settings
from plugins.dubbo.upstream import UpstreamPool
from plugins.zookeeper.matching import group_matches, version_matches

log = logging.getLogger(__name__)


def _selected(host: Host, version: str, group: str) -> bool:
    metadata = host.instance.metadata
    return version_matches(version, metadata.get("version", "")) and group_matches(
        group, metadata.get("group", "")
    )


async def invoke(request: InvokeRequest, config: DubboConfig, pool: UpstreamPool) -> InvokeResult:
    body = parse_body(request.body)
    service = request.service
    # The call opens once the body is readable: a bad body is the caller's 400, not a call.
    calls = request.calls
    try:
        call = calls.start(
            "dubbo",
            Direction.INVOKE,
            calls.outbound_route(service.name, request.method),
            request.incoming,
            None if body.timeout_ms is None else body.timeout_ms / 1000,
        )
    except Degraded as fallback:
        if fallback.has_value:  # a governance rule's fallback value stands in (DEGRADED)
            return InvokeResult(fallback.value, {}, "")
        raise
    try:
        result, degraded = await _invoke(request, body, config, pool, call)
    except BaseException as exc:
        call.fail(exc, _status_of(exc))
        raise
    call.finish(Outcome.DEGRADED if degraded else Outcome.OK, "20")
    return result


def _status_of(error: BaseException) -> str:
    """The Dubbo response status a failure stands for (a metrics and span label)."""
    if isinstance(error, ProviderStatusError):
        return str(error.status)
    if isinstance(error, RemoteApplicationError):
        return str(Status.OK)  # an exception is a value in an OK response
    if isinstance(error, UpstreamTimeout):
        return str(Status.CLIENT_TIMEOUT)
    return ""


def _propagated(headers: dict[str, str]) -> dict[str, str]:
    # Dubbo carries the budget in its own ``timeout`` attachment (set per attempt).
    return {k: v for k, v in headers.items() if k != TIMEOUT_MS}


async def _invoke(
    request: InvokeRequest, body: InvokeBody, config: DubboConfig, pool: UpstreamPool, call: Call
) -> tuple[InvokeResult, bool]:
    """The result, and whether the agent answered instead of a provider (failsafe)."""
    service = request.service
    options = service.protocol_options(DubboServiceOptions)
    version = body.version if body.version is not None else service.attributes.get("version", "")
    group = body.group if body.group is not None else service.attributes.get("group", "")
    generic = GenericCall(
        interface=service.name,
        method=request.method,
        types=tuple(body.types) if body.types is not None else None,
        args=tuple(body.args),
        # A wildcard selects providers; on the wire each request names what it was sent to.
        version="" if version == "*" else version,
        group="" if group == "*" else group,
        attachments=body.attachments,
    )
    # The arguments are encoded once per wire version and group (a retry elsewhere does
    # not encode a large argument again); what varies per attempt (its timeout, the
    # propagation fields) is appended to the attachments map without re-encoding.
    encoded: dict[tuple[str, str], bytes] = {}

    def body_for(
        version_on_wire: str,
        group_on_wire: str,
        timeout_ms: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> bytes:
        key = (version_on_wire, group_on_wire)
        base = encoded.get(key)
        if base is None:
            wire = GenericCall(
                generic.interface,
                generic.method,
                generic.types,
                generic.args,
                version_on_wire,
                group_on_wire,
                generic.attachments,
            )
            base = encoded[key] = encode_invocation(generic_invocation(wire, None))
        if timeout_ms is None:
            return base
        per_attempt = {"timeout": str(timeout_ms), **(extra or {})}
        appended = with_attachments(base, per_attempt)
        assert appended is not None  # an invocation always ends with its attachments map
        return appended

    # Encode up front: a bad argument is the caller's error (400 with its path), found
    # before any provider is chosen or counted.
    try:
        body_for(generic.version, generic.group)
    except ArgumentError as exc:
        raise InvalidRequest([(f"body.{exc.path}", exc.message)]) from None
    except LocalProtocolError as encode_error:
        raise InvalidRequest([("body.args", str(encode_error))]) from None

    ineligible = frozenset(
        h.id for h in request.cluster.hosts() if not _selected(h, version, group)
    )
    # Governance (docs/governance.md): an injected delay, the rule's subset; its retries are
    # the call driver's (strategies.invoke, from the call record).
    decision = decision_of(call)
    if decision is not None:
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        attachments = body.attachments
        if decision.splits:
            ineligible |= decision.excluded(
                request.cluster.hosts(),
                lambda host: host.instance.metadata,
                lambda name: _attachment(attachments, name),
            )

    def settings_for(host: Host) -> Settings:
        return strategies.resolve(
            request.method, host.instance.metadata, options, body.timeout_ms, config.timeout_ms
        )

    async def send(host: Host, settings: Settings) -> Result:
        attempt = call.begin_attempt(host.id)
        try:
            result = await send_attempt(host, settings, attempt)
        except BaseException as exc:
            call.end_attempt(attempt, outcome_of(exc), _status_of(exc))
            raise
        call.end_attempt(attempt, Outcome.OK, str(result.status))
        return result

    async def send_attempt(host: Host, settings: Settings, attempt: Attempt) -> Result:
        # Never wait past the call's deadline: each attempt gets what is left of it, and
        # sends that as its timeout so the provider (or the next agent) stops in time too.
        timeout_ms = settings.timeout_ms
        remaining = call.remaining_s()
        if remaining is not None:
            if remaining <= 0:
                raise UpstreamTimeout(f"{request.method}: the call's deadline passed")
            timeout_ms = max(1, min(timeout_ms, int(remaining * 1000)))
            settings = dataclasses.replace(settings, timeout_ms=timeout_ms)
        version_on_wire = generic.version or host.instance.metadata.get("version", "")
        group_on_wire = generic.group or host.instance.metadata.get("group", "")
        extra = _propagated(call.outgoing(attempt))
        frame = request_frame(0, body_for(version_on_wire, group_on_wire, timeout_ms, extra))
        if pool.live(host) is None:
            refused = over_connection_limit(call, request.cluster, pool)
            if refused is not None:
                raise CallRejected("overloaded", refused)
        connection = await pool.get(host)
        response = await connection.request(frame, timeout_ms / 1000)
        try:
            result = decode_result(response.header, response.body)
        except RemoteProtocolError as exc:
            raise UpstreamError(f"{host.id} sent a response that cannot be read: {exc}") from None
        return check_status(result, host, generic.method, settings)

    started = time.monotonic()
    remaining = call.remaining_s()
    strategy_call = strategies.Call(request.method, settings_for, ineligible, record=call)
    try:
        if remaining is None:
            # No deadline: each attempt is bounded by its own timeout and connecting by the
            # pool's; a timeout scope here would cost a tenth of the call and bound nothing.
            result, host = await strategies.invoke(request.cluster, strategy_call, send)
        else:
            # The attempts bound themselves; this bounds what they do not (connecting, forking).
            async with asyncio.timeout(remaining):
                result, host = await strategies.invoke(request.cluster, strategy_call, send)
    except TimeoutError:
        raise UpstreamTimeout(
            f"{service.name}.{request.method}: no answer within the call's deadline "
            f"({round((remaining or 0) * 1000)} ms)"
        ) from None
    log.debug(
        "invoked",
        extra={
            "service": service.name,
            "method": request.method,
            "endpoint": host.id,
            "ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    if result is None:  # failsafe swallowed a failure
        return InvokeResult(None, {}, host.id), True
    return InvokeResult(to_json(result.value), to_json(result.attachments), host.id), False


def _attachment(attachments: dict[str, AttachmentValue], name: str) -> str | None:
    value = attachments.get(name)
    if value is None:
        # Headers are matched lower-case; attachments keep the caller's case.
        value = next((v for k, v in attachments.items() if k.lower() == name), None)
    return None if value is None else str(value)


def check_status(result: Result, host: Host, method: str, settings: Settings) -> Result:
    """A provider's answer as a value, or as the error it stands for."""
    if result.status == Status.OK:
        if result.exception is not None:
            raise remote_exception(result.exception)
        return result
    message = result.error_message or f"status {result.status}"
    if result.status in (Status.CLIENT_TIMEOUT, Status.SERVER_TIMEOUT):
        raise UpstreamTimeout(
            f"{host.id}: {method} timed out ({settings.timeout_ms} ms): {message}"
        )
    try:
        name = Status(result.status).name
    except ValueError:
        name = str(result.status)
    alive = result.status in _ALIVE_STATUSES
    # The exception and its causes, not the provider's Java stack (at DEBUG in the log).
    said = provider_errors.parse(message)
    if said.thrown_at:
        log.debug("provider error with its stack", extra={"endpoint": host.id, "error": message})
    refused = result.status == Status.SERVICE_ERROR and provider_errors.refused_the_request(said)
    raise ProviderStatusError(
        f"{host.id}: {name}: {provider_errors.describe(said)}", result.status, alive, refused
    )


# Answers about the request, not the provider's health (overload and server errors are).
_ALIVE_STATUSES = frozenset(
    {Status.BAD_REQUEST, Status.SERVICE_NOT_FOUND, Status.SERVICE_ERROR, Status.CLIENT_ERROR}
)
