"""``google.api.http`` rules (sans-IO): read them from a method's options, match request paths
against their templates, and say where each part of an HTTP request goes in the message.

The rule is the ``google.api.http`` extension (field 72295728) of ``MethodOptions``, an
``HttpRule`` message. Descriptors from server reflection or a descriptor set carry it as
bytes the agent's protobuf runtime does not know, so it is read here from the options'
wire form, with the handful of HttpRule fields transcoding needs (google/api/http.proto):

    selector 1, get 2, put 3, post 4, delete 5, patch 6, body 7, custom 8 {kind 1, path 2},
    additional_bindings 11, response_body 12

Path templates (``/v1/{name=shelves/*}/books:list``): segments are literals, ``*`` (one
segment), ``**`` (any rest) or variables ``{field.path=segments}`` (``{name}`` is
``{name=*}``), with an optional ``:verb`` at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

HTTP_EXTENSION = 72295728

_METHOD_FIELDS = {2: "GET", 3: "PUT", 4: "POST", 5: "DELETE", 6: "PATCH"}
# Nesting of additional_bindings (the spec allows one level; this bounds a hostile one).
_MAX_DEPTH = 2


class RuleError(ValueError):
    """An HttpRule or path template that cannot be used."""


@dataclass(frozen=True)
class Binding:
    """One HTTP binding of a method: verb and path template, where the body goes."""

    method: str  # GET, POST, ... or a custom kind
    template: str
    body: str = ""  # "" none, "*" the whole message, else a top-level field
    response_body: str = ""  # "" the whole reply, else one of its fields


# Protobuf wire format, only as far as length-delimited and varint fields go.


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise RuleError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of every field: varints as int, length-delimited as bytes;
    fixed-width fields are skipped."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise RuleError("length-delimited field past the end")
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise RuleError(f"unsupported wire type {wire}")
    if pos != len(data):
        raise RuleError("fixed-width field past the end")
    return out


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise RuleError("expected a string field")
    return value.decode("utf-8")


def _rule(data: bytes, depth: int) -> list[Binding]:
    method = template = body = response_body = ""
    more: list[Binding] = []
    for number, value in _fields(data):
        if number in _METHOD_FIELDS:
            method, template = _METHOD_FIELDS[number], _text(value)
        elif number == 8:  # custom: {kind, path}
            if not isinstance(value, bytes):
                raise RuleError("custom pattern is not a message")
            custom = dict(_fields(value))
            method, template = _text(custom.get(1, b"")).upper(), _text(custom.get(2, b""))
        elif number == 7:
            body = _text(value)
        elif number == 12:
            response_body = _text(value)
        elif number == 11:
            if depth >= _MAX_DEPTH or not isinstance(value, bytes):
                raise RuleError("additional_bindings nested too deep")
            more.extend(_rule(value, depth + 1))
    bindings = [Binding(method, template, body, response_body)] if template else []
    return bindings + more


def bindings_from_options(options: bytes) -> list[Binding]:
    """The HTTP bindings in a method's serialized ``MethodOptions`` ([] without a rule)."""
    for number, value in _fields(options):
        if number == HTTP_EXTENSION and isinstance(value, bytes):
            return _rule(value, 0)
    return []


@dataclass(frozen=True)
class PathTemplate:
    """A compiled template: ``match`` gives the variables (field path → value) or None."""

    template: str
    regex: re.Pattern[str]
    variables: tuple[str, ...]  # field paths, in group order
    verb: str

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {
            field: unquote(found.group(f"v{index}")) for index, field in enumerate(self.variables)
        }


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# A literal segment: what RFC 3986 allows in a path segment, minus the template's own syntax.
_LITERAL = re.compile(r"[A-Za-z0-9\-._~%!$&'()+,;=@]+")


def _segments(text: str, where: str) -> str:
    """The regex of ``a/*/**`` style segments (no variables)."""
    parts = []
    for segment in text.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append("[^/]+(?:/[^/]+)*")
        elif _LITERAL.fullmatch(segment):
            parts.append(re.escape(segment))
        else:
            raise RuleError(f"bad segment {segment!r} in {where!r}")
    return "/".join(parts)


def compile_template(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise RuleError(f"path template {template!r} does not start with /")
    rest = template[1:]
    verb = ""
    # The verb is after the last ':' outside a variable.
    depth = 0
    for index, char in enumerate(rest):
        depth += char == "{"
        depth -= char == "}"
        if char == ":" and depth == 0:
            rest, verb = rest[:index], rest[index + 1 :]
            if not _LITERAL.fullmatch(verb):
                raise RuleError(f"bad verb in {template!r}")
            break
    pattern: list[str] = []
    variables: list[str] = []
    pos = 0
    for found in re.finditer(r"\{([^{}]*)\}", rest):
        pattern.append(_literal_run(rest[pos : found.start()], template))
        field, _, sub = found.group(1).partition("=")
        if not _IDENT.fullmatch(field):
            raise RuleError(f"bad variable {found.group(0)!r} in {template!r}")
        if field in variables:
            raise RuleError(f"variable {field!r} twice in {template!r}")
        pattern.append(f"(?P<v{len(variables)}>{_segments(sub or '*', template)})")
        variables.append(field)
        pos = found.end()
    pattern.append(_literal_run(rest[pos:], template))
    if "{" in rest[pos:] or "}" in rest[pos:]:
        raise RuleError(f"unbalanced braces in {template!r}")
    body = "/" + "".join(pattern)
    if verb:
        body += ":" + re.escape(verb)
    return PathTemplate(template, re.compile(body), tuple(variables), verb)


def _literal_run(text: str, template: str) -> str:
    """Text between variables: slashes and whole segments (``/books/``, ``shelves/*/``)."""
    if not text:
        return ""
    if "{" in text or "}" in text:
        raise RuleError(f"unbalanced braces in {template!r}")
    lead = "/" if text.startswith("/") else ""
    trail = "/" if text.endswith("/") and text != "/" else ""
    inner = text[len(lead) : len(text) - len(trail)] if text != "/" else ""
    return lead + (_segments(inner, template) if inner else "") + trail
