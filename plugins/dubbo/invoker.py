"""JSON invocation of a Dubbo service: ``POST /v1/invoke/dubbo/{interface}/{method}``.

The body (:class:`InvokeBody`) names the parameter types and the arguments; the call goes
out as a generic ``$invoke`` (plugins/dubbo/generic.py), through the service's cluster
strategy (plugins/dubbo/strategies.py) over the pooled, multiplexed upstream connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.calls import Call, Direction, Outcome, outcome_of
from agent.cluster.host import Host
from agent.config import ServiceConfig
from agent.errors import (
    InvalidRequest,
    LocalProtocolError,
    RemoteProtocolError,
    UpstreamError,
    UpstreamTimeout,
)
from agent.governance.policy import Degraded, decision_of
from agent.runtime.protocols import InvokeRequest, InvokeResult
from plugins.dubbo import strategies
from plugins.dubbo.body import Result, decode_result, encode_invocation, request_frame
from plugins.dubbo.frame import Status
from plugins.dubbo.generic import (
    ArgumentError,
    GenericCall,
    check_types,
    generic_invocation,
    remote_exception,
    to_json,
)
from plugins.dubbo.governance import failure_of
from plugins.dubbo.protocol import DubboConfig
from plugins.dubbo.strategies import DubboServiceOptions, ProviderStatusError, Settings
from plugins.dubbo.upstream import UpstreamPool
from plugins.zookeeper.matching import group_matches, version_matches

log = logging.getLogger(__name__)

AttachmentValue = str | int | float | bool


class InvokeBody(BaseModel):
    """The JSON body of a Dubbo invocation. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    # Java type names (``int``, ``java.lang.String``, ``com.acme.Person``, ``long[]``);
    # omitted: the provider finds the method by name (it must not be overloaded).
    types: list[Annotated[str, Field(min_length=1)]] | None = None
    args: list[Any] = Field(default_factory=list)
    # Which provider version/group; omitted: the service's ``attributes``. ``*``: any.
    version: str | None = None
    group: str | None = None
    attachments: dict[str, AttachmentValue] = Field(default_factory=dict)
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None

    @field_validator("attachments")
    @classmethod
    def _no_reserved(cls, value: dict[str, AttachmentValue]) -> dict[str, AttachmentValue]:
        reserved = sorted(value.keys() & _RESERVED_ATTACHMENTS)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} set by the agent (use version, group, timeout_ms)"
            )
        return value


_RESERVED_ATTACHMENTS = frozenset({"path", "interface", "version", "group", "timeout", "generic"})


def parse_body(body: dict[str, Any]) -> InvokeBody:
    try:
        parsed = InvokeBody.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            [
                (".".join(["body", *(str(part) for part in error["loc"])]), error["msg"])
                for error in exc.errors()
            ]
        ) from None
    try:
        check_types(parsed.types, parsed.args)
    except ArgumentError as exc:
        raise InvalidRequest([(f"body.{exc.path}", exc.message)]) from None
    return parsed


# Options are validated when the config loads; here they are only turned into the model,
# once per ServiceConfig object (a reload brings new objects).
_options_cache: dict[str, tuple[ServiceConfig, DubboServiceOptions]] = {}


def service_options(service: ServiceConfig) -> DubboServiceOptions:
    cached = _options_cache.get(service.name)
    if cached is not None and cached[0] is service:
        return cached[1]
    options = DubboServiceOptions.model_validate(service.options)
    _options_cache[service.name] = (service, options)
    return options


def _selected(host: Host, version: str, group: str) -> bool:
    metadata = host.instance.metadata
    return version_matches(version, metadata.get("version", "")) and group_matches(
        group, metadata.get("group", "")
    )


async def invoke(request: InvokeRequest, config: DubboConfig, pool: UpstreamPool) -> InvokeResult:
    body = parse_body(request.body)
    calls = request.calls
    route = calls.outbound_route(request.service.name, request.method)
    try:
        # No deadline from timeout_ms: in Dubbo it bounds each attempt, not the call. A
        # rule's timeout_ms sets the call's deadline, which then bounds the attempts too.
        record = calls.start("dubbo", Direction.INVOKE, route, request.incoming)
    except Degraded as degraded:
        if degraded.has_value:  # the rule's fallback value stands in for the provider's
            return InvokeResult(degraded.value, {}, "")
        raise
    try:
        result = await _invoke(request, body, record, config, pool)
    except BaseException as exc:
        record.fail(exc)
        raise
    record.finish(Outcome.OK)
    return result


async def _invoke(
    request: InvokeRequest,
    body: InvokeBody,
    record: Call,
    config: DubboConfig,
    pool: UpstreamPool,
) -> InvokeResult:
    service = request.service
    options = service_options(service)
    version = body.version if body.version is not None else service.attributes.get("version", "")
    group = body.group if body.group is not None else service.attributes.get("group", "")
    call = GenericCall(
        interface=service.name,
        method=request.method,
        types=tuple(body.types) if body.types is not None else None,
        args=tuple(body.args),
        # A wildcard selects providers; on the wire each request names what it was sent to.
        version="" if version == "*" else version,
        group="" if group == "*" else group,
        attachments=body.attachments,
    )
    # Encoded bodies by what varies between attempts (wire version, group, timeout), so a
    # retry with the same settings does not encode a large argument again.
    encoded: dict[tuple[str, str, int], bytes] = {}

    def body_for(version_on_wire: str, group_on_wire: str, timeout_ms: int) -> bytes:
        key = (version_on_wire, group_on_wire, timeout_ms)
        cached = encoded.get(key)
        if cached is None:
            wire = GenericCall(
                call.interface,
                call.method,
                call.types,
                call.args,
                version_on_wire,
                group_on_wire,
                call.attachments,
            )
            cached = encoded[key] = encode_invocation(generic_invocation(wire, timeout_ms))
        return cached

    # Encode up front: a bad argument is the caller's error (400 with its path), found
    # before any provider is chosen or counted.
    try:
        body_for(call.version, call.group, config.timeout_ms)
    except ArgumentError as exc:
        raise InvalidRequest([(f"body.{exc.path}", exc.message)]) from None
    except LocalProtocolError as exc:
        raise InvalidRequest([("body.args", str(exc))]) from None

    ineligible = frozenset(
        h.id for h in request.cluster.hosts() if not _selected(h, version, group)
    )
    decision = decision_of(record)
    retry_after = None
    max_attempts = None
    if decision is not None:
        if decision.delay_s > 0:  # an injected delay
            await asyncio.sleep(decision.delay_s)
        attachments = body.attachments
        ineligible |= decision.excluded(
            request.cluster.hosts(),
            lambda host: host.instance.metadata,
            lambda name: _attachment(attachments, name),
        )
        if decision.retry_attempts is not None:
            max_attempts = decision.retry_attempts + 1

            def retry_after(error: BaseException) -> float | None:
                return decision.retry_after(failure_of(error))

    def settings_for(host: Host) -> Settings:
        settings = strategies.resolve(
            request.method, host.instance.metadata, options, body.timeout_ms, config.timeout_ms
        )
        remaining = record.remaining_s()
        if remaining is not None and remaining * 1000 < settings.timeout_ms:
            # A rule's timeout (the call's deadline) bounds each attempt.
            return replace(settings, timeout_ms=max(1, int(remaining * 1000)))
        return settings

    async def send(host: Host, settings: Settings) -> Result:
        attempt = record.begin_attempt(host.id)
        try:
            result = await _send(host, settings)
        except BaseException as exc:
            record.end_attempt(attempt, outcome_of(exc))
            raise
        record.end_attempt(attempt, Outcome.OK)
        return result

    async def _send(host: Host, settings: Settings) -> Result:
        version_on_wire = call.version or host.instance.metadata.get("version", "")
        group_on_wire = call.group or host.instance.metadata.get("group", "")
        frame = request_frame(0, body_for(version_on_wire, group_on_wire, settings.timeout_ms))
        connection = await pool.get(host)
        response = await connection.request(frame, settings.timeout_ms / 1000)
        try:
            result = decode_result(response.header, response.body)
        except RemoteProtocolError as exc:
            raise UpstreamError(f"{host.id} sent a response that cannot be read: {exc}") from None
        return check_status(result, host, call.method, settings)

    started = time.monotonic()
    result, host = await strategies.invoke(
        request.cluster,
        strategies.Call(
            request.method,
            settings_for,
            ineligible,
            retry_after=retry_after,
            max_attempts=max_attempts,
        ),
        send,
    )
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
        return InvokeResult(None, {}, host.id)
    return InvokeResult(to_json(result.value), to_json(result.attachments), host.id)


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
    raise ProviderStatusError(f"{host.id}: {name}: {message}", result.status, alive)


# Answers about the request, not the provider's health (overload and server errors are).
_ALIVE_STATUSES = frozenset(
    {Status.BAD_REQUEST, Status.SERVICE_NOT_FOUND, Status.SERVICE_ERROR, Status.CLIENT_ERROR}
)
