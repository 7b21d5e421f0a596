"""HTTP/JSON → gRPC transcoding by ``google.api.http`` rules (no I/O).

A request is matched to a method by its HTTP method and path (plugins/grpc/httprule.py);
its message, in protobuf's JSON mapping, is put together from three parts, in the order
the rule's documentation gives them precedence:

1. the body: with ``body: "*"`` the whole message, with ``body: "field"`` that field,
   without ``body`` none (a request that sends one is refused);
2. query parameters (``?page_size=2&tags=a&tags=b&book.author=x``), for every field not
   already bound by the path or the body, and never with ``body: "*"``;
3. the path's variables (``{book.name=shelves/*/books/*}``), which win.

Values from the path and the query are text; each is converted by its field's type
(``true``/``false`` for bools, numbers checked), so a typo is a 400 that names it. The
reply is the whole message, or its ``response_body`` field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import InvalidRequest
from plugins.grpc.httprule import Binding, PathTemplate, RuleError, compile_template
from plugins.grpc.reflection import MethodInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    binding: Binding
    template: PathTemplate
    method: str  # the gRPC method's name
    info: MethodInfo


class NoRoute(Exception):
    """No route for the request: 404, or 405 when only the HTTP method is wrong."""

    def __init__(self, status: int, detail: str, allowed: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.allowed = tuple(allowed)


def routes(methods: Mapping[str, MethodInfo]) -> list[Route]:
    """Every HTTP binding of the service's methods, in declaration order (the first match
    wins). Client-streaming methods have none: one HTTP body is one message."""
    out = []
    for name, info in methods.items():
        for binding in info.bindings:
            if info.client_streaming:
                log.warning(
                    "HTTP rule of a client-streaming method ignored", extra={"method": name}
                )
                continue
            try:
                template = compile_template(binding.template)
            except RuleError as exc:
                log.warning("HTTP rule skipped", extra={"method": name, "error": str(exc)})
                continue
            out.append(Route(binding, template, name, info))
    return out


def match(table: Sequence[Route], http_method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = []
    for route in table:
        variables = route.template.match(path)
        if variables is None:
            continue
        if route.binding.method == http_method:
            return route, variables
        allowed.append(route.binding.method)
    if allowed:
        return_405 = f"{http_method} is not allowed on {path}"
        raise NoRoute(405, return_405, sorted(set(allowed)))
    raise NoRoute(404, f"no gRPC method is bound to {http_method} {path}")


def _field(descriptor: Any, name: str) -> Any:
    found = descriptor.fields_by_name.get(name)
    if found is None:
        found = descriptor.fields_by_camelcase_name.get(name)
    return found


# FieldDescriptor types (google.protobuf.descriptor.FieldDescriptor.TYPE_*).
_FLOATS = {1, 2}  # double, float
_INTS = {3, 4, 5, 6, 7, 13, 15, 16, 17, 18}  # (u/s/sfixed)int32/64, fixed32/64
_BOOL, _MESSAGE, _ENUM = 8, 11, 14


def _scalar(field: Any, text: str, where: str) -> Any:
    kind = field.type
    try:
        if kind in _INTS:
            return int(text)
        if kind in _FLOATS:
            return float(text)
    except ValueError:
        raise InvalidRequest([(where, f"{text!r} is not a number")]) from None
    if kind == _BOOL:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise InvalidRequest([(where, f"{text!r} is not true or false")])
    if kind == _ENUM and text.lstrip("-").isdigit():
        return int(text)
    if kind == _MESSAGE:
        raise InvalidRequest([(where, f"field {field.name!r} is a message, not a value")])
    return text


def _set(
    message: dict[str, Any], descriptor: Any, path: str, text: str, where: str, append: bool
) -> None:
    """Set the field at dotted ``path`` (proto or JSON names) in the JSON ``message``."""
    parts = path.split(".")
    target = message
    for depth, part in enumerate(parts):
        field = _field(descriptor, part)
        if field is None:
            raise InvalidRequest([(where, f"{descriptor.full_name} has no field {part!r}")])
        # One spelling per field: a body that used the JSON name loses it to ours.
        if field.json_name != field.name:
            existing = target.pop(field.json_name, None)
            if existing is not None and field.name not in target:
                target[field.name] = existing
        if depth < len(parts) - 1:
            if field.type != _MESSAGE or _repeated(field):
                raise InvalidRequest([(where, f"{part!r} is not a message field")])
            child = target.get(field.name)
            if not isinstance(child, dict):
                child = target[field.name] = {}
            target, descriptor = child, field.message_type
            continue
        value = _scalar(field, text, where)
        if _repeated(field):
            values = target.get(field.name) if append else None
            if not isinstance(values, list):
                values = target[field.name] = []
            values.append(value)
        else:
            target[field.name] = value


def _repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _bound(path: str, bound: Sequence[str]) -> bool:
    """Whether the query parameter ``path`` is (inside) a field the path or body binds."""
    return any(path == b or path.startswith(b + ".") for b in bound)


def request_message(
    route: Route, variables: Mapping[str, str], query: Sequence[tuple[str, str]], body: bytes
) -> dict[str, Any]:
    """The request message, in protobuf's JSON mapping, for ``json_format.ParseDict``."""
    descriptor = route.info.input.DESCRIPTOR
    body_field = route.binding.body
    message: dict[str, Any] = {}
    if body_field:
        try:
            payload = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest([("body", f"not JSON: {exc}")]) from None
        if body_field == "*":
            if not isinstance(payload, dict):
                raise InvalidRequest([("body", "must be a JSON object (the whole message)")])
            message = payload
        else:
            field = _field(descriptor, body_field)
            if field is None:
                raise InvalidRequest([("body", f"the rule's body field {body_field!r} is unknown")])
            message = {field.name: payload}
    elif body.strip():
        raise InvalidRequest(
            [("body", f"{route.binding.method} {route.template.template} takes no body")]
        )
    if body_field != "*":
        bound = [*variables, *([body_field] if body_field else [])]
        repeated_seen: set[str] = set()
        for name, text in query:
            if _bound(name, bound):
                continue
            _set(message, descriptor, name, text, f"query.{name}", name in repeated_seen)
            repeated_seen.add(name)
    for path, text in variables.items():
        _set(message, descriptor, path, text, f"path.{path}", False)
    return message


def reply_json(route: Route, result: Any) -> Any:
    """The reply (JSON, protobuf's mapping) or its ``response_body`` field."""
    name = route.binding.response_body
    if not name or not isinstance(result, dict):
        return result
    field = route.info.output.DESCRIPTOR.fields_by_name.get(name)
    return result.get(field.json_name if field is not None else name)
