"""JSON invocation of a gRPC method: ``POST /v1/invoke/grpc/{service}/{method}``.

The method's messages are found by server reflection (plugins/grpc/reflection.py) and
converted with protobuf's JSON mapping. A server-streaming reply is handed to the API as a
stream (NDJSON); a gRPC status becomes an HTTP status with the code in the problem.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.calls import Call, CallRejected, Direction, Outcome, outcome_of
from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import NO_CONTEXT, PickContext
from agent.config import ServiceConfig
from agent.errors import InvalidRequest, NoEndpointError, RemoteApplicationError, UpstreamError
from agent.exchange import Action, Exchange
from agent.governance.policy import Degraded, connection_refusal
from agent.governance.retry import Failure, FailureKind
from agent.runtime.protocols import InvokeRequest, InvokeResult
from agent.telemetry.propagation import TIMEOUT_MS
from plugins.grpc import any_types, json_checks
from plugins.grpc.channels import ChannelPool, target
from plugins.grpc.config import GrpcServiceOptions
from plugins.grpc.governance import failure_of, subset_out
from plugins.grpc.reflection import (
    DescriptorCache,
    DescriptorSetError,
    MethodInfo,
    ReflectionError,
    UnknownService,
)
from plugins.grpc.triple import triple_headers

log = logging.getLogger(__name__)


class InvokeBody(BaseModel):
    """The JSON body of a gRPC invocation. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    # The request message in protobuf's JSON mapping (unary and server-streaming methods):
    # an object, or for a well-known type its own JSON (a Timestamp is a string).
    message: Any = Field(default_factory=dict)
    # The request messages of a client-streaming or bidirectional method.
    messages: list[Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None


# gRPC status → HTTP status, as grpc-gateway maps them.
HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def status_error(name: str, value: int, message: str, host: str) -> RemoteApplicationError:
    return RemoteApplicationError(
        f"{host}: {name}: {message}" if host else f"{name}: {message}",
        name,
        {"grpc_code": value, "grpc_status": name, "grpc_message": message},
        http_status=HTTP_STATUS.get(name, 500),
    )


def _unimplemented(message: str, address: str) -> RemoteApplicationError:
    return status_error("UNIMPLEMENTED", 12, message, address)


def parse_body(body: dict[str, Any]) -> InvokeBody:
    try:
        return InvokeBody.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            [
                (".".join(["body", *(str(part) for part in error["loc"])]), error["msg"])
                for error in exc.errors()
            ]
        ) from None


def split_method(service: ServiceConfig, method: str) -> tuple[str, str]:
    """(gRPC service, method) from ``Method`` or ``package.Service.Method``."""
    if "." in method:
        grpc_service, _, name = method.rpartition(".")
        return grpc_service, name
    return service.protocol_options(GrpcServiceOptions).grpc_service or service.name, method


async def resolve(
    cache: DescriptorCache,
    cluster: str,
    host: Host,
    grpc_service: str,
    method: str,
    descriptor_set: str | None = None,
) -> MethodInfo:
    address = target(host.instance.host, host.instance.port)
    for attempt in range(2):
        if attempt:
            # Not in what we had: the provider may have been upgraded since.
            cache.forget(cluster, grpc_service)
        try:
            methods = await cache.methods(cluster, address, grpc_service, descriptor_set)
        except UnknownService as exc:
            raise _unimplemented(str(exc), address) from None
        info = methods.get(method)
        if info is not None:
            return info
    raise _unimplemented(f"gRPC service {grpc_service!r} has no method {method!r}", address)


def encode(info: MethodInfo, body: InvokeBody) -> list[Any]:
    from google.protobuf import json_format  # type: ignore[import-untyped]

    items: list[tuple[str, int | None, Any]]
    if info.client_streaming:
        if "message" in body.model_fields_set:
            # It used to send zero messages and answer 200 (issue 23).
            raise InvalidRequest([("body.message", "the method takes a stream: use messages")])
        items = [("body.messages", i, m) for i, m in enumerate(body.messages or [])]
    elif body.messages is not None:
        raise InvalidRequest([("body.messages", "the method takes one message: use message")])
    else:
        items = [("body.message", None, body.message)]
    requests = []
    for path, index, item in items:
        where = path if index is None else f"{path}.{index}"
        if item is None:
            raise InvalidRequest([(where, "null is not a message (leave it out for an empty one)")])
        message = info.input()
        try:
            json_checks.check(item, message.DESCRIPTOR, where)
            # The reflection data's pool: an Any's type is found there.
            requests.append(
                json_format.ParseDict(item, message, descriptor_pool=message.DESCRIPTOR.file.pool)
            )
        except json_checks.JsonProblem as exc:
            raise InvalidRequest([(exc.path, exc.message)]) from None
        except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
            # json_format raises more than ParseError for JSON of the wrong shape (a list
            # where a message goes): the caller's input, never a 500.
            raise InvalidRequest([(where, str(exc) or type(exc).__name__)]) from None
    return requests


def to_json(message: Any) -> Any:
    """A reply in protobuf's JSON mapping; an Any whose type the provider's reflection data
    does not hold cannot be written (a 502 saying so, not a 500)."""
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(
            message,
            always_print_fields_with_no_presence=True,
            descriptor_pool=message.DESCRIPTOR.file.pool,
        )
    except (TypeError, KeyError, ValueError, json_format.Error) as exc:
        # json_format.Error: a field it cannot write (an Any it has no type for)
        raise UpstreamError(f"the reply cannot be written as JSON: {exc}") from None


async def invoke(request: InvokeRequest, pool: ChannelPool, cache: DescriptorCache) -> InvokeResult:
    body = parse_body(request.body)
    options = request.service.protocol_options(GrpcServiceOptions)
    calls = request.calls
    try:
        call = calls.start(
            "grpc",
            Direction.INVOKE,
            calls.outbound_route(request.service.name, request.method),
            request.incoming,
            (body.timeout_ms or options.timeout_ms) / 1000,
        )
    except Degraded as fallback:
        if fallback.has_value:  # a governance rule's fallback value stands in
            return InvokeResult(fallback.value, {}, "")
        raise
    try:
        result = await _invoke(request, body, options, pool, cache, call)
    except BaseException as exc:
        _fail(call, exc)
        raise
    if result.stream is None:
        _succeed(call)
        return result
    return dataclasses.replace(result, stream=_recorded(result.stream, call))


def _status_name(error: BaseException) -> str:
    return error.exception_type if isinstance(error, RemoteApplicationError) else ""


def _fail(call: Call, error: BaseException) -> None:
    status = _status_name(error)
    # A transport status is not the provider's answer: count it as what it is.
    outcome = _TRANSPORT_OUTCOMES.get(status) or outcome_of(error)
    for attempt in call.attempts:
        call.end_attempt(attempt, outcome, status)
    call.finish(outcome, status, error)


def _succeed(call: Call) -> None:
    for attempt in call.attempts:
        call.end_attempt(attempt, Outcome.OK, "OK")
    call.finish(Outcome.OK, "OK")


_TRANSPORT_OUTCOMES = {"DEADLINE_EXCEEDED": Outcome.TIMEOUT, "UNAVAILABLE": Outcome.UPSTREAM_ERROR}


async def _recorded(stream: AsyncGenerator[Any, None], call: Call) -> AsyncGenerator[Any, None]:
    """A server stream whose end (or failure, or the caller leaving) ends the call."""
    try:
        async for item in stream:
            yield item
    except BaseException as exc:
        _fail(call, exc)
        raise
    finally:
        await stream.aclose()
        _succeed(call)  # no-op when _fail ran (a call's first outcome stands)


async def _invoke(
    request: InvokeRequest,
    body: InvokeBody,
    options: GrpcServiceOptions,
    pool: ChannelPool,
    cache: DescriptorCache,
    call: Call,
) -> InvokeResult:
    grpc_service, method = split_method(request.service, request.method)
    cluster = request.cluster
    # The call's attempts (agent/exchange.py). gRPC has no retries of its own: a rule's
    # only, for a failure before the first reply.
    exchange = Exchange(call)
    exchange.exclude_subset(subset_out(call, cluster, body.metadata))
    step = exchange.begin()  # an injected delay, or attempt now
    while True:
        if step.action is Action.WAIT:
            await asyncio.sleep(step.delay_s)
        excluded = exchange.excluded
        host = cluster.choose(PickContext(exclude=excluded) if excluded else NO_CONTEXT)
        if host is None:
            raise NoEndpointError(f"no provider of {request.service.name} is available")
        try:
            return await _invoke_on(
                host, grpc_service, method, request, body, options, pool, cache, call
            )
        except (RemoteApplicationError, ReflectionError) as exc:
            # A failure before the first reply may go to another provider, under the
            # call's retry rule. Reflection is not the method: it never ran.
            failure = (
                Failure(FailureKind.CONNECT, sent=False)
                if isinstance(exc, ReflectionError)
                else _failure(exc)
            )
            if isinstance(exc, DescriptorSetError):
                raise
            step = exchange.failed(host.id, failure)
            if step.action is Action.GIVE_UP:
                raise
            if call.attempts and call.attempts[-1].ended is None:
                status = _status_name(exc)
                outcome = _TRANSPORT_OUTCOMES.get(status) or outcome_of(exc)
                call.end_attempt(call.attempts[-1], outcome, status)


def _failure(error: RemoteApplicationError) -> Failure:
    import grpc  # type: ignore[import-untyped]

    code = getattr(grpc.StatusCode, error.exception_type, grpc.StatusCode.UNKNOWN)
    details = error.details if isinstance(error.details, dict) else {}
    return failure_of(code, str(details.get("grpc_message", "")))


async def _invoke_on(
    host: Host,
    grpc_service: str,
    method: str,
    request: InvokeRequest,
    body: InvokeBody,
    options: GrpcServiceOptions,
    pool: ChannelPool,
    cache: DescriptorCache,
    call: Call,
) -> InvokeResult:
    """One attempt on ``host``: the reply of a unary call, or a stream from its first reply."""
    cluster = request.cluster
    if not pool.has(host):
        refused = connection_refusal(call, cluster.name, lambda: pool.open_to(cluster.hosts()))
        if refused is not None:
            raise CallRejected("overloaded", refused)
    info = await resolve(cache, cluster.name, host, grpc_service, method, options.descriptor_set)
    requests = encode(info, body)
    attempt = call.begin_attempt(host.id)
    # What is left of the call's deadline (grpc sends it as grpc-timeout), and what
    # observers add (trace context, hop count) as metadata.
    remaining = call.remaining_s()
    timeout_s = (
        remaining if remaining is not None else (body.timeout_ms or options.timeout_ms) / 1000
    )
    propagated = [(k, v) for k, v in call.outgoing(attempt).items() if k != TIMEOUT_MS]
    channel = pool.get(host, cluster)
    kwargs = {
        "request_serializer": info.input.SerializeToString,
        "response_deserializer": info.output.FromString,
    }
    metadata = [*body.metadata.items(), *propagated]
    metadata += triple_headers(host.instance.metadata, metadata, request.service.attributes)
    call_options = {"metadata": metadata, "timeout": timeout_s}
    if info.client_streaming:
        rpc = channel.stream_stream(info.path, **kwargs)(iter(requests), **call_options)
    else:
        rpc = channel.unary_stream(info.path, **kwargs)(requests[0], **call_options)
    host.active_requests += 1
    # Types an Any holds may be fetched from the provider's reflection (not with a
    # descriptor set: the config is the only source then).
    fetch = (
        None
        if info.files is None
        else _Fetch(target(host.instance.host, host.instance.port), info.files, cache.timeout_s)
    )
    reply = _replies(
        rpc, host, cluster, cache, grpc_service, info.output.DESCRIPTOR.file.pool, fetch
    )
    try:
        # The first reply (or the status) before the HTTP answer starts: an error here
        # is still a problem response with its HTTP status.
        first = await anext(reply, _END)
    except BaseException:
        await reply.aclose()
        raise
    if info.server_streaming:
        return InvokeResult(None, {}, host.id, stream=_prepend(first, reply))
    # Read on to the status: a reply followed by an error status is an error.
    try:
        extra = await anext(reply, _END)
    finally:
        await reply.aclose()
    if first is _END or extra is not _END:
        raise status_error("INTERNAL", 13, "not exactly one reply to a unary call", host.id)
    return InvokeResult(first, {}, host.id)


_END: Any = object()


@dataclasses.dataclass(frozen=True)
class _Fetch:
    """Where the types of an attempt's Anys are fetched from: its provider's reflection,
    into the database behind the method's pool."""

    address: str
    files: Any
    timeout_s: float

    async def __call__(self, pool: Any, names: list[str]) -> list[str]:
        return await any_types.fetch_types(self.address, pool, self.files, names, self.timeout_s)


async def _reply_json(message: Any, pool: Any, fetch: _Fetch | None) -> Any:
    """``to_json``, after fetching from the provider's reflection the types of Anys the
    method's files do not define (plugins/grpc/any_types.py)."""
    try:
        return to_json(message)
    except UpstreamError:
        if fetch is None:
            raise
        names = [n for n in any_types.any_type_names(message) if not any_types.knows(pool, n)]
        if not names or not await fetch(pool, names):
            raise
    return to_json(message)


def _status_details(metadata: Any) -> bytes | None:
    for key, value in metadata or ():
        if key == any_types.STATUS_DETAILS and isinstance(value, bytes):
            return value
    return None


async def _prepend(first: Any, rest: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    try:
        if first is not _END:
            yield first
            async for item in rest:
                yield item
    finally:
        await rest.aclose()


async def _replies(
    call: Any,
    host: Host,
    cluster: Cluster,
    cache: DescriptorCache,
    grpc_service: str,
    pool: Any,
    fetch: _Fetch | None,
) -> AsyncGenerator[Any, None]:
    import grpc

    failed = False
    try:
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                yield await _reply_json(message, pool, fetch)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            failed = code == grpc.StatusCode.UNAVAILABLE
            if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL):
                # Possibly descriptors of another version: read them again next time.
                cache.forget(cluster.name, grpc_service)
            error = status_error(code.name, code.value[0], exc.details() or "", host.id)
            trailer = _status_details(exc.trailing_metadata())
            if trailer is not None and isinstance(error.details, dict):
                if fetch is not None:
                    await fetch(pool, any_types.detail_type_names(trailer))
                details = any_types.status_details(trailer, pool)
                if details is not None:
                    error.details["grpc_status_details"] = details
            raise error from None
    finally:
        call.cancel()
        host.active_requests -= 1
        if failed:
            cluster.report_failure(host)
        else:
            cluster.report_success(host)
