"""JSON invocation of a Thrift service by its IDL: ``POST /v1/invoke/thrift/{service}/{method}``.

The body is ``{"args": {"name": value, ...}, "timeout_ms": n}``; arguments are named as in
the IDL. JSON maps onto Thrift by the argument's declared type:

- struct: an object by field name; list, set: an array; map: an object (keys in JSON are
  strings, so ``"3"`` is read as an i32 key of 3);
- enum: its name (``"GREEN"``) or number; binary: base64;
- i64: a number, or a string of digits for values past 2**53 (JavaScript's safe range).
  Results use the same forms; an i64 past 2**53 comes back as a string.

A declared exception is an HTTP 502 naming its type with its fields as details, a
TApplicationException from the provider likewise; a method the IDL does not have is a 404
listing the ones it has. The IDL is loaded with thriftpy2 (which resolves includes), once
per file; the call itself goes over the same pooled, multiplexed connections as the
listener, with the agent's own codec doing every length check before thriftpy2 reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import math
import secrets
import time
from collections.abc import Mapping
from typing import Annotated, Any

import thriftpy2
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from thriftpy2 import protocol as _protocols
from thriftpy2 import transport as _transports
from thriftpy2.thrift import TApplicationException, TMessageType, TType

from agent.calls import Call, CallRejected, Direction, Outcome, outcome_of
from agent.cluster.lb import PickContext
from agent.errors import (
    ConnectError,
    InvalidRequest,
    InvokeNotSupported,
    NoEndpointError,
    RemoteApplicationError,
    RemoteProtocolError,
    UnknownMethodError,
    UpstreamError,
    UpstreamTimeout,
)
from agent.exchange import Action, Exchange
from agent.governance.policy import Degraded, connection_refusal
from agent.governance.retry import Failure, FailureKind
from agent.integer_text import parse_integer_text
from agent.runtime.protocols import InvokeRequest, InvokeResult
from plugins.thrift import governance
from plugins.thrift.codec import (
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    check_body,
    encode_header,
    frame,
)
from plugins.thrift.config import ThriftConfig, ThriftServiceOptions
from plugins.thrift.upstream import UpstreamPool

# thriftpy2's constructors are untyped; Any keeps mypy --strict quiet about each call.
TBinaryProtocol: Any = _protocols.TBinaryProtocol
TCompactProtocol: Any = _protocols.TCompactProtocol
TMemoryBuffer: Any = _transports.TMemoryBuffer

SAFE_INTEGER = 2**53 - 1
_RANGES = {TType.BYTE: 7, TType.I16: 15, TType.I32: 31, TType.I64: 63}


class InvokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None


# -- IDL --------------------------------------------------------------------------------

_modules: dict[tuple[str, tuple[str, ...]], Any] = {}
_names = itertools.count()


def load_service(options: ThriftServiceOptions, service_name: str) -> Any:
    """The thriftpy2 service class the options name (the IDL's only service by default)."""
    if options.idl is None:
        raise InvokeNotSupported(
            f"service {service_name!r} names no Thrift IDL (services[].options.idl)"
        )
    key = (options.idl, tuple(options.include_dirs))
    module = _modules.get(key)
    if module is None:
        try:
            module = thriftpy2.load(
                options.idl,
                # thriftpy2 wants a unique name ending in _thrift per loaded IDL.
                module_name=f"meshagent_{next(_names)}_thrift",
                include_dirs=list(options.include_dirs) or None,
            )
        except Exception as exc:  # a missing file or a parse error: the config's fault
            raise InvokeNotSupported(f"cannot load Thrift IDL {options.idl}: {exc}") from None
        _modules[key] = module
        _unions.update(_union_classes(module, set()))
    services = {
        name: value for name, value in vars(module).items() if hasattr(value, "thrift_services")
    }
    wanted = options.idl_service
    if wanted is None and len(services) == 1:
        return next(iter(services.values()))
    if wanted is not None and wanted in services:
        return services[wanted]
    raise InvokeNotSupported(
        f"IDL {options.idl} has services {', '.join(sorted(services)) or 'none'}; "
        "name one in services[].options.idl_service"
    )


def _union_classes(module: Any, seen: set[int]) -> set[Any]:
    """The unions an IDL and its includes declare: thriftpy2 makes a union the same kind
    of class as a struct, and records it only in the module's ``__thrift_meta__``."""
    if id(module) in seen:
        return set()
    seen.add(id(module))
    meta = getattr(module, "__thrift_meta__", {})
    found = set(meta.get("unions", ()))
    for included in meta.get("includes", ()):
        found |= _union_classes(included, seen)
    return found


# Union classes of every loaded IDL (a thrift union takes exactly one field: a Java or Go
# peer refuses a union with none or two set, after the call was sent).
_unions: set[Any] = set()


# -- JSON → thriftpy2 values ------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message


def _spec_parts(spec: tuple[Any, ...]) -> tuple[int, str, Any, bool]:
    """(ttype, name, extra, required) of a thriftpy2 field spec (extra None for scalars)."""
    if len(spec) == 3:
        return spec[0], spec[1], None, bool(spec[2])
    return spec[0], spec[1], spec[2], bool(spec[3])


def _split(type_spec: Any) -> tuple[int, Any]:
    return (type_spec[0], type_spec[1]) if isinstance(type_spec, tuple) else (type_spec, None)


def _enum_value(extra: Any, name: object) -> int | None:
    """An enum constant by its name: only the enum's own names (``mro`` or ``__class__``
    are attributes of the generated class, not constants)."""
    names = getattr(extra, "_NAMES_TO_VALUES", None)
    if isinstance(names, dict) and isinstance(name, str):
        value = names.get(name)
        return value if isinstance(value, int) else None
    return None


# JSON has no NaN or infinities: they travel as these strings (protobuf's JSON mapping and
# Thrift's own TJSONProtocol write the same).
_FLOAT_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def from_json(value: Any, ttype: int, extra: Any, path: str) -> Any:
    if value is None:
        raise _Bad(path, "null is not a Thrift value (leave the field out)")
    if ttype == TType.BOOL:
        if not isinstance(value, bool):
            raise _Bad(path, "expected a boolean")
        return value
    if ttype in _RANGES:
        constant = _enum_value(extra, value)
        if constant is not None:
            return constant  # an enum by name
        if isinstance(value, str) and ttype == TType.I64:
            parsed = parse_integer_text(value, 20)
            if parsed is None:
                raise _Bad(path, "expected an integer or a string of digits")
            value = parsed
        if isinstance(value, bool) or not isinstance(value, int):
            names = getattr(extra, "_NAMES_TO_VALUES", None)
            if names:
                raise _Bad(path, f"expected one of {', '.join(names)} or an integer")
            raise _Bad(path, "expected an integer")
        bits = _RANGES[ttype]
        if not -(2**bits) <= value < 2**bits:
            raise _Bad(path, f"{value} is out of range for a {bits + 1}-bit integer")
        return value
    if ttype == TType.DOUBLE:
        if isinstance(value, str) and value in _FLOAT_NAMES:
            return _FLOAT_NAMES[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(path, 'expected a number (or "NaN", "Infinity", "-Infinity")')
        try:
            return float(value)
        except OverflowError:
            raise _Bad(path, "out of range for a double") from None
    if ttype == TType.STRING:
        if not isinstance(value, str):
            raise _Bad(path, "expected a string")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                # A lone UTF-16 surrogate (JSON can say "\ud800"): no UTF-8 for it.
                raise _Bad(path, "holds a lone surrogate, which UTF-8 cannot carry") from None
        return value
    if ttype == TType.BINARY:
        if not isinstance(value, str):
            raise _Bad(path, "expected base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _Bad(path, "expected base64 text") from None
    if ttype == TType.STRUCT:
        if not isinstance(value, dict):
            raise _Bad(path, f"expected an object ({extra.__name__})")
        return struct_from_json(extra, value, path)
    if ttype in (TType.LIST, TType.SET):
        if not isinstance(value, list):
            raise _Bad(path, "expected an array")
        element, element_extra = _split(extra)
        items = [from_json(v, element, element_extra, f"{path}[{i}]") for i, v in enumerate(value)]
        if ttype == TType.SET:
            _check_distinct(items, path)
        return items
    if ttype == TType.MAP:
        if not isinstance(value, dict):
            raise _Bad(path, "expected an object")
        (key_type, key_extra), (value_type, value_extra) = _split(extra[0]), _split(extra[1])
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}"
            out[_key_from_json(key, key_type, key_extra, where)] = from_json(
                item, value_type, value_extra, where
            )
        return out
    raise _Bad(path, f"Thrift type {ttype} is not supported")


def _key_from_json(key: str, ttype: int, extra: Any, path: str) -> Any:
    """A map key: JSON keys are text, so numbers, booleans and (for struct, list or set
    keys) JSON values come as their text, as :func:`to_json` writes them."""
    if ttype in _RANGES and _enum_value(extra, key) is None:
        number = parse_integer_text(key, 20)
        if number is None:
            raise _Bad(path, "expected an integer key")
        return from_json(number, ttype, extra, path)
    if ttype == TType.BOOL:
        if key not in ("true", "false"):
            raise _Bad(path, 'expected "true" or "false"')
        return key == "true"
    if ttype == TType.DOUBLE:
        real = _FLOAT_NAMES.get(key)
        if real is None:
            try:
                real = float(key)
            except ValueError:
                raise _Bad(path, "expected a number key") from None
        return real
    if ttype in (TType.STRUCT, TType.LIST, TType.SET, TType.MAP):
        try:
            parsed = json.loads(key)
        except ValueError:
            raise _Bad(path, "a struct or collection key is given as its JSON text") from None
        value = from_json(parsed, ttype, extra, path)
        # Hashable, to be a key: thriftpy2 structs are; lists and sets as tuples.
        return tuple(value) if isinstance(value, list) else value
    return from_json(key, ttype, extra, path)


def _check_distinct(items: list[Any], path: str) -> None:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        try:
            if item in seen:
                raise _Bad(f"{path}[{i}]", f"a set holds each element once; {item!r} repeats")
            seen.add(item)
        except TypeError:
            return  # elements that cannot be hashed are not compared


def struct_from_json(cls: Any, value: dict[str, Any], path: str) -> Any:
    fields = {}
    known = {}
    for spec in cls.thrift_spec.values():
        ttype, name, extra, required = _spec_parts(spec)
        known[name] = (ttype, extra, required)
    for name in value:
        if name not in known:
            raise _Bad(f"{path}.{name}", f"{cls.__name__} has no field {name!r}")
    if cls in _unions and sum(value.get(name) is not None for name in known) != 1:
        raise _Bad(
            path,
            f"{cls.__name__} is a union: give exactly one of its fields "
            f"({', '.join(known)}), not null",
        )
    for name, (ttype, extra, required) in known.items():
        if name in value:
            fields[name] = from_json(value[name], ttype, extra, f"{path}.{name}")
        elif required:
            raise _Bad(f"{path}.{name}", "required")
    return cls(**fields)


# -- thriftpy2 values → JSON ------------------------------------------------------------


def to_json(value: Any, ttype: int, extra: Any) -> Any:
    if value is None:
        return None
    if ttype in _RANGES:
        names = getattr(extra, "_VALUES_TO_NAMES", None)
        if names and value in names:
            return names[value]
        return str(value) if abs(value) > SAFE_INTEGER else value
    if ttype == TType.DOUBLE:
        # JSON has no NaN or infinity: said as protobuf's and TJSONProtocol's strings.
        return value if math.isfinite(value) else _float_name(value)
    if ttype == TType.BINARY:
        return base64.b64encode(value).decode()
    if ttype == TType.STRING and isinstance(value, bytes):
        # thriftpy2 hands over the bytes of a string that is not UTF-8.
        raise UpstreamError(
            f"the provider's reply holds a string that is not UTF-8: {value[:40]!r}"
        )
    if ttype == TType.STRUCT:
        return struct_to_json(value)
    if ttype in (TType.LIST, TType.SET):
        element, element_extra = _split(extra)
        return [to_json(v, element, element_extra) for v in value]
    if ttype == TType.MAP:
        (key_type, key_extra), (value_type, value_extra) = _split(extra[0]), _split(extra[1])
        return {
            _key_text(to_json(k, key_type, key_extra)): to_json(v, value_type, value_extra)
            for k, v in value.items()
        }
    return value


def _float_name(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _key_text(key: Any) -> str:
    """A map key as JSON text: strings as they are, booleans ``true``/``false``, structs
    and collections their compact JSON (which :func:`_key_from_json` reads back)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return str(key)
    return json.dumps(key, separators=(",", ":"), sort_keys=True)


def struct_to_json(struct: Any) -> dict[str, Any]:
    out = {}
    for spec in struct.thrift_spec.values():
        ttype, name, extra, _required = _spec_parts(spec)
        field = getattr(struct, name, None)
        if field is not None:
            out[name] = to_json(field, ttype, extra)
    return out


# -- context: the Base struct at field 255 ---------------------------------------------

BASE_FIELD_ID = 255


def base_field(args_cls: Any) -> tuple[str, set[str]] | None:
    """The name of the argument struct's Base at field 255 and Base's field names, if the
    method takes the common Base (a struct with at least LogID and Caller)."""
    spec = args_cls.thrift_spec.get(BASE_FIELD_ID)
    if spec is None or spec[0] != TType.STRUCT or len(spec) < 4:
        return None
    fields = {field[1] for field in spec[2].thrift_spec.values()}
    if not {"LogID", "Caller"} <= fields:
        return None
    return spec[1], fields


def base_methods(service: Any) -> frozenset[str]:
    """The methods of an IDL service (thriftpy2) whose arguments end with the common Base."""
    return frozenset(
        method
        for method in service.thrift_services
        if base_field(getattr(service, f"{method}_args")) is not None
    )


def with_base(
    args_cls: Any,
    args: dict[str, Any],
    caller: str,
    timeout_ms: int,
    outgoing: Mapping[str, str] | None = None,
    log_id: str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """``args`` with a Base filled in, when the method takes the common Base struct at field
    255 and the caller left it out; and the LogID given (the trace id), if any.

    LogID is ``log_id`` or a fresh 128-bit hex id, Caller the service's ``caller`` option,
    and Extra holds the attempt's propagation fields (``outgoing``: trace context, hop
    count, path) and the deadline: ``timeout_ms`` (relative) and ``deadline_ms`` (absolute,
    Unix ms). A Base the caller gave is sent as given: it is the caller's to fill.
    """
    found = base_field(args_cls)
    if found is None:
        return args, None
    name, fields = found
    if name in args:
        return args, None
    log_id = log_id or secrets.token_hex(16)
    base: dict[str, Any] = {"LogID": log_id, "Caller": caller}
    if "Extra" in fields:
        deadline = int(time.time() * 1000) + timeout_ms
        base["Extra"] = {
            **(outgoing or {}),
            "timeout_ms": str(timeout_ms),
            "deadline_ms": str(deadline),
        }
    return {**args, name: base}, log_id


# -- the call ---------------------------------------------------------------------------


def _protocol(buffer: Any, proto: Proto) -> Any:
    return TCompactProtocol(buffer) if proto is Proto.COMPACT else TBinaryProtocol(buffer)


def encode_call(service: Any, method: str, args: Any, proto: Proto, oneway: bool) -> Message:
    buffer = TMemoryBuffer()
    writer = _protocol(buffer, proto)
    writer.write_message_begin(method, TMessageType.ONEWAY if oneway else TMessageType.CALL, 1)
    args.write(writer)
    writer.write_message_end()
    decoder = MessageDecoder(proto, Transport.BUFFERED)
    decoder.receive_data(buffer.getvalue())
    message = decoder.next_event()
    assert isinstance(message, Message)
    return message


def encode_reply(
    service: Any, method: str, value: Any, call: Header, transport: Transport
) -> bytes:
    """The wire bytes of a REPLY to ``call`` whose result is ``value`` (JSON, converted by
    the IDL's result type: a governance rule's fallback value). Raises InvalidRequest when
    the value does not fit the method's result type."""
    result = getattr(service, f"{method}_result")()
    success = result.thrift_spec.get(0)
    if success is not None:
        ttype, _name, extra, _required = _spec_parts(success)
        try:
            result.success = from_json(value, ttype, extra, "degrade.value")
        except _Bad as exc:
            raise InvalidRequest([(exc.path, exc.message)]) from None
    buffer = TMemoryBuffer()
    result.write(_protocol(buffer, call.proto))
    head = encode_header(Header(call.name, MessageType.REPLY, call.seqid, call.proto, call.strict))
    return frame(head + buffer.getvalue(), transport)


def decode_reply(service: Any, method: str, reply: Message) -> Any:
    """The result value of ``reply``, or the error it stands for."""
    try:
        check_body(reply)
    except RemoteProtocolError as exc:
        raise UpstreamError(f"the provider's reply to {method} cannot be read: {exc}") from None
    reader = _protocol(TMemoryBuffer(reply.data[reply.body_start :]), reply.header.proto)
    if reply.header.type == MessageType.EXCEPTION:
        error = TApplicationException()
        error.read(reader)
        raise RemoteApplicationError(
            f"{method}: {error.message}", "TApplicationException", {"type": error.type}
        )
    if reply.header.type != MessageType.REPLY:
        raise UpstreamError(f"the provider answered {method} with message type {reply.header.type}")
    result = getattr(service, f"{method}_result")()
    try:
        result.read(reader)
    except UnicodeDecodeError:
        raise UpstreamError(
            f"the provider's reply to {method} holds a string that is not UTF-8"
        ) from None
    except Exception as exc:  # thriftpy2 on bytes that do not fit the IDL: a bad answer
        raise UpstreamError(
            f"the provider's reply to {method} does not fit the IDL: {exc!r}"
        ) from None
    for spec_id, spec in result.thrift_spec.items():
        if spec_id == 0:
            continue
        _ttype, name, _extra, _required = _spec_parts(spec)
        raised = getattr(result, name, None)
        if raised is not None:
            details = struct_to_json(raised)
            raise RemoteApplicationError(
                f"{method} raised {type(raised).__name__}: {details}",
                type(raised).__name__,
                details,
            )
    success = result.thrift_spec.get(0)
    if success is None:
        return None  # a void method
    ttype, _name, extra, _required = _spec_parts(success)
    if result.success is None:
        raise UpstreamError(f"the provider's reply to {method} has no result")
    return to_json(result.success, ttype, extra)


async def invoke(request: InvokeRequest, config: ThriftConfig, pool: UpstreamPool) -> InvokeResult:
    try:
        body = InvokeBody.model_validate(request.body)
    except ValidationError as exc:
        raise InvalidRequest(
            [(".".join(["body", *map(str, e["loc"])]), e["msg"]) for e in exc.errors()]
        ) from None
    options = request.service.protocol_options(ThriftServiceOptions)
    service = load_service(options, request.service.name)
    method = request.method
    if method not in service.thrift_services:
        raise UnknownMethodError(
            f"{service.__name__} has no method {method!r}; it has: "
            f"{', '.join(service.thrift_services)}"
        )
    timeout_ms = body.timeout_ms or options.timeout_ms or config.timeout_ms
    args_cls = getattr(service, f"{method}_args")
    values, log_id = with_base(args_cls, body.args, options.caller, timeout_ms)
    # Bad arguments are the caller's 400, found before a call opens or a provider is chosen.
    try:
        struct_from_json(args_cls, values, "body.args")
    except _Bad as exc:
        raise InvalidRequest([(exc.path, exc.message)]) from None
    calls = request.calls
    try:
        call = calls.start(
            "thrift",
            Direction.INVOKE,
            calls.outbound_route(request.service.name, method),
            request.incoming,
            timeout_ms / 1000,
        )
    except Degraded as fallback:
        if fallback.has_value:  # a governance rule's fallback value stands in
            return InvokeResult(fallback.value, {}, "")
        raise
    try:
        result = await _invoke(request, service, options, pool, call, body.args, log_id, timeout_ms)
    except BaseException as exc:
        call.fail(exc)
        raise
    call.finish(Outcome.OK)
    return result


async def _invoke(
    request: InvokeRequest,
    service: Any,
    options: ThriftServiceOptions,
    pool: UpstreamPool,
    call: Call,
    given: dict[str, Any],
    log_id: str | None,
    budget_ms: int,
) -> InvokeResult:
    method = request.method
    args_cls = getattr(service, f"{method}_args")
    oneway = bool(getattr(service, f"{method}_result").oneway)
    proto, transport = Proto(options.protocol), Transport(options.transport)
    # The LogID goes back to the caller, so its logs and the provider's can be joined.
    attachments = {"log_id": log_id} if log_id is not None else {}

    cluster = request.cluster
    # The call's attempts (agent/exchange.py). Without a rule, the service's
    # connect_attempts move the call on when connecting fails; a call sent is sent again
    # only under a retry rule (``idempotent``: the provider may have run it).
    exchange = Exchange(
        call,
        retries=request.service.connect_attempts - 1,
        retry_on=frozenset({FailureKind.CONNECT}),
    )
    exchange.exclude_subset(governance.excluded(cluster, call))
    step = exchange.begin()  # an injected delay, or attempt now
    errors: list[str] = []
    while True:
        if step.action is Action.WAIT:
            await asyncio.sleep(step.delay_s)
        host = cluster.choose(PickContext(exclude=exchange.excluded))
        if host is None:
            break
        attempt = call.begin_attempt(host.id)
        # Each attempt gets what is left of the call's budget (a shorter one may have
        # arrived with the request), and sends it on with its own propagation fields.
        remaining = call.remaining_s()
        timeout_ms = budget_ms if remaining is None else max(1, round(remaining * 1000))
        if pool.live(host, (proto, transport)) is None:
            refused = connection_refusal(call, cluster.name, lambda: pool.open_to(cluster.hosts()))
            if refused is not None and not pool.usable(host, (proto, transport)):
                call.end_attempt(attempt, Outcome.REJECTED)
                raise CallRejected("overloaded", refused)
        try:
            connection = await pool.get(host, (proto, transport))
        except ConnectError as exc:
            call.end_attempt(attempt, outcome_of(exc))
            cluster.report_failure(host, connect=True)
            errors.append(str(exc))
            step = exchange.failed(host.id, Failure(FailureKind.CONNECT, sent=False))
            if step.action is Action.GIVE_UP:
                break
            continue
        values, _ = with_base(
            args_cls, given, options.caller, timeout_ms, call.outgoing(attempt), log_id
        )
        message = encode_call(
            service, method, struct_from_json(args_cls, values, "body.args"), proto, oneway
        )
        if oneway:
            connection.send_oneway(message)
            call.end_attempt(attempt, Outcome.OK)
            return InvokeResult(None, attachments, host.id)
        host.active_requests += 1
        try:
            reply = await connection.request(message, timeout_ms / 1000)
        except UpstreamError as exc:
            call.end_attempt(attempt, outcome_of(exc))
            cluster.report_failure(host)
            # Sent: the provider may have run it (a retry rule's ``idempotent``).
            kind = FailureKind.TIMEOUT if isinstance(exc, UpstreamTimeout) else FailureKind.RESET
            step = exchange.failed(host.id, Failure(kind, sent=True))
            if step.action is Action.GIVE_UP:
                raise
            errors.append(str(exc))
            continue
        except BaseException as exc:
            call.end_attempt(attempt, outcome_of(exc))
            raise
        finally:
            host.active_requests -= 1
        cluster.report_success(host)  # it answered; what it answered is the caller's
        try:
            result = decode_reply(service, method, reply)
        except BaseException as exc:
            call.end_attempt(attempt, outcome_of(exc))
            raise
        call.end_attempt(attempt, Outcome.OK)
        return InvokeResult(result, attachments, host.id)
    if not errors:
        raise NoEndpointError(f"no provider available for {request.service.name!r}")
    raise ConnectError(f"no provider of {request.service.name!r} reachable: {'; '.join(errors)}")
