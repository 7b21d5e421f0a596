"""Dubbo 2.0.2 request and response bodies in hessian2, as DubboCodec writes them.

Request body, one hessian2 stream:
    dubbo version, service path, service version, method name,
    parameter descriptor (JVM form, e.g. ``Ljava/lang/String;I``), each argument,
    attachments (a map: path, interface, version, group, timeout, ...)

Response body (status OK), one stream: a flag (int), then the value or the exception,
then attachments when the flag says so. Any other status: a string, the error message.
Heartbeats (event frames) carry a serialized null.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from agent.errors import RemoteProtocolError
from agent.telemetry.propagation import TIMEOUT_MS, TRACEPARENT
from plugins.dubbo.frame import HESSIAN2, Frame, Header, Status
from plugins.dubbo.hessian2 import Hessian2Decoder, Hessian2Encoder, Limits
from plugins.dubbo.hessian2.decoder import DEFAULT_LIMITS

DUBBO_VERSION = "2.0.2"
HESSIAN_NULL = b"N"

# JVM descriptors of the primitive types, and back.
_PRIMITIVES = {
    "boolean": "Z",
    "byte": "B",
    "char": "C",
    "short": "S",
    "int": "I",
    "long": "J",
    "float": "F",
    "double": "D",
    "void": "V",
}
_PRIMITIVE_NAMES = {v: k for k, v in _PRIMITIVES.items()}


class ResponseFlag(IntEnum):
    WITH_EXCEPTION = 0
    VALUE = 1
    NULL_VALUE = 2
    WITH_EXCEPTION_WITH_ATTACHMENTS = 3
    VALUE_WITH_ATTACHMENTS = 4
    NULL_VALUE_WITH_ATTACHMENTS = 5


def to_descriptor(type_names: list[str] | tuple[str, ...]) -> str:
    """Java type names to a JVM descriptor.

    ``["java.lang.String", "int", "long[]"]`` → ``Ljava/lang/String;I[J``
    """
    parts = []
    for name in type_names:
        dims = 0
        while name.endswith("[]"):
            name, dims = name[:-2], dims + 1
        if name.startswith("["):  # already JVM array form: [I, [Ljava.lang.String;
            parts.append(name.replace(".", "/"))
            continue
        primitive = _PRIMITIVES.get(name)
        parts.append("[" * dims + (primitive or f"L{name.replace('.', '/')};"))
    return "".join(parts)


def from_descriptor(descriptor: str) -> list[str]:
    """The inverse of :func:`to_descriptor`; raises RemoteProtocolError when malformed."""
    names = []
    i = 0
    while i < len(descriptor):
        dims = 0
        while i < len(descriptor) and descriptor[i] == "[":
            dims, i = dims + 1, i + 1
        if i >= len(descriptor):
            raise RemoteProtocolError(f"malformed parameter descriptor {descriptor!r}")
        char = descriptor[i]
        if char == "L":
            end = descriptor.find(";", i)
            if end < 0:
                raise RemoteProtocolError(f"malformed parameter descriptor {descriptor!r}")
            name = descriptor[i + 1 : end].replace("/", ".")
            i = end + 1
        elif char in _PRIMITIVE_NAMES:
            name = _PRIMITIVE_NAMES[char]
            i += 1
        else:
            raise RemoteProtocolError(f"malformed parameter descriptor {descriptor!r}")
        names.append(name + "[]" * dims)
    return names


_RESPONSE_FLAGS = frozenset(int(flag) for flag in ResponseFlag)


@dataclass(frozen=True)
class Invocation:
    """A decoded request body."""

    path: str
    version: str
    method: str
    parameter_types: tuple[str, ...]
    arguments: tuple[Any, ...]
    attachments: dict[str, Any] = field(default_factory=dict)
    dubbo_version: str = DUBBO_VERSION

    @property
    def interface(self) -> str:
        value = self.attachments.get("interface")
        return value if isinstance(value, str) and value else self.path

    @property
    def group(self) -> str:
        value = self.attachments.get("group")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class InvocationHead:
    """What routing needs, read without decoding the arguments."""

    dubbo_version: str
    path: str
    version: str
    method: str
    parameter_descriptor: str


@dataclass(frozen=True)
class Result:
    """A decoded response. ``status`` other than OK carries ``error_message`` only."""

    status: int
    flag: ResponseFlag | None = None
    value: Any = None
    exception: Any = None
    attachments: dict[str, Any] = field(default_factory=dict)
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK and self.exception is None


def _string(decoder: Hessian2Decoder, what: str) -> str:
    value = decoder.read_object()
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RemoteProtocolError(f"request {what} is {type(value).__name__}, not a string")
    return value


def decode_invocation_head(body: bytes, limits: Limits | None = None) -> InvocationHead:
    return decode_invocation_head_sized(body, limits)[0]


def decode_invocation_head_sized(
    body: bytes, limits: Limits | None = None
) -> tuple[InvocationHead, int]:
    """The head and the number of body bytes it takes (``body[:n]`` alone determines it)."""
    decoder = Hessian2Decoder(body, limits or DEFAULT_LIMITS)
    head = InvocationHead(
        dubbo_version=_string(decoder, "dubbo version"),
        path=_string(decoder, "service path"),
        version=_string(decoder, "service version"),
        method=_string(decoder, "method name"),
        parameter_descriptor=_string(decoder, "parameter descriptor"),
    )
    return head, decoder.position


GENERIC_METHODS = frozenset({"$invoke", "$invokeAsync"})


def generic_method(body: bytes) -> str | None:
    """The real method of a generic call (``$invoke``'s first argument), or None.

    Only the head and that one string are decoded, so metrics and spans name the method
    called rather than ``$invoke`` without reading the arguments.
    """
    try:
        head, length = decode_invocation_head_sized(body)
        if head.method not in GENERIC_METHODS:
            return None
        value = Hessian2Decoder(body[length : length + 1024]).read_object()
    except RemoteProtocolError:
        return None
    return value if isinstance(value, str) and value else None


def decode_invocation(body: bytes, limits: Limits | None = None) -> Invocation:
    decoder = Hessian2Decoder(body, limits or DEFAULT_LIMITS)
    dubbo_version = _string(decoder, "dubbo version")
    path = _string(decoder, "service path")
    version = _string(decoder, "service version")
    method = _string(decoder, "method name")
    types = from_descriptor(_string(decoder, "parameter descriptor"))
    arguments = tuple(decoder.read_object() for _ in types)
    attachments: dict[str, Any] = {}
    if not decoder.at_end():
        raw = decoder.read_object()
        if raw is not None and not isinstance(raw, dict):
            raise RemoteProtocolError(f"request attachments are {type(raw).__name__}, not a map")
        attachments = dict(raw or {})
    return Invocation(path, version, method, tuple(types), arguments, attachments, dubbo_version)


# The hessian2 form of the key "timeout" (a compact string: length byte, then UTF-8).
_TIMEOUT_KEY = b"\x07timeout"
# Longest hessian2 form of the value: a string of up to 10 digits, or a 5-byte int.
_TIMEOUT_VALUE_MAX = 11


def timeout_attachment(body: bytes) -> int | None:
    """The request's ``timeout`` attachment in milliseconds, found without decoding the body.

    Attachments are the last value of a request body, after every argument, so reading
    them properly means decoding all arguments. Dubbo consumers always send ``timeout``;
    this finds the last ``"timeout"`` key from the end of the body (a C-speed ``rfind``,
    usually a few dozen bytes back) and decodes only the value after it. It may be fooled
    only by a body without a ``timeout`` attachment whose arguments contain the string
    ``"timeout"`` followed by a number, and then only picks another deadline.
    """
    at = body.rfind(_TIMEOUT_KEY)
    if at < 0:
        return None
    start = at + len(_TIMEOUT_KEY)
    tag = body[start] if start < len(body) else -1
    if 0 < tag <= 10:  # a short string, Dubbo's own form ("3000"): no decoder needed
        digits = body[start + 1 : start + 1 + tag]
        if len(digits) == tag and digits.isdigit():
            number = int(digits)
            return number if 0 < number <= 2**31 - 1 else None
    value: object
    try:
        value = Hessian2Decoder(body[start : start + _TIMEOUT_VALUE_MAX]).read_object()
    except RemoteProtocolError:
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 2**31 - 1:
        return value
    return None


# Attachments are the body's last value; text attachments are looked for only this far
# from the end, so a large argument is never scanned (a missing key would scan it all).
_ATTACHMENT_WINDOW = 8192
_STRING_VALUE_MAX = 1024


def string_attachments(body: bytes, keys: Iterable[str]) -> dict[str, str]:
    """Text attachments among the last bytes of a request body, found like ``timeout``
    (:func:`timeout_attachment`): by the key's hessian2 form, the value decoded alone.

    For propagation fields (trace context, hop count) read by the proxy without decoding
    the arguments. A value that is not a string, or longer than 1 KiB, is left out; as
    with ``timeout``, an argument containing the key's bytes could be mistaken for it,
    which at worst propagates a wrong trace id or hop count (both bounded by the reader).
    """
    found: dict[str, str] = {}
    start = max(0, len(body) - _ATTACHMENT_WINDOW)
    if body.find(b"trace", start) < 0 and body.find(b"x-meshagent-", start) < 0:
        return found  # the usual request from an app: none of ours (two C scans)
    for key in keys:
        needle = _NEEDLES.get(key)
        if needle is None:
            needle = _hessian_string(key)
            if len(_NEEDLES) < 64:
                _NEEDLES[key] = needle
        at = body.rfind(needle, start)
        if at < 0:
            continue
        value_at = at + len(needle)
        try:
            value = Hessian2Decoder(body[value_at : value_at + _STRING_VALUE_MAX + 3]).read_object()
        except RemoteProtocolError:
            continue
        if isinstance(value, str):
            found[key] = value
    return found


_NEEDLES: dict[str, bytes] = {}
# Encoded (key, value) pairs: hop counts, paths and timeouts repeat from one request to the
# next, so most pairs are found here rather than encoded again.
_PAIRS: dict[tuple[str, str], bytes] = {}
_PAIRS_MAX = 4096
# Propagation fields Dubbo has a name of its own for.
_DUBBO_NAMES = {TIMEOUT_MS: "timeout"}


def _hessian_string(value: str) -> bytes:
    """A string's hessian2 bytes; ASCII up to 1023 characters without the encoder (the
    proxy writes a few per request: the general encoder costs ~10x more)."""
    if value.isascii():
        n = len(value)
        if n < 32:
            return bytes((n,)) + value.encode()
        if n < 1024:
            return bytes((0x30 + (n >> 8), n & 0xFF)) + value.encode()
    encoder = Hessian2Encoder()
    encoder.write_object(value)
    return encoder.getvalue()


# Keys whose value is new on every request (a span id), with their encoded form: caching
# their pairs would only flush the pairs that do repeat.
_UNIQUE_VALUES = {key: _hessian_string(key) for key in (TRACEPARENT,)}


def with_attachments(body: bytes, extra: Mapping[str, str]) -> bytes | None:
    """The request body with ``extra`` text attachments added, or None when the body does
    not end with a map (then it is forwarded as it came).

    The attachments map is the body's last value and every hessian2 map ends with ``Z``:
    the pairs go in before it, and nothing else is decoded or re-encoded. A key already
    there is sent twice; Java's decoder puts entries in order, so the later one (ours)
    wins. Strings hold no back-references, so adding them shifts no reference numbers.
    The agent's budget field (``x-meshagent-timeout-ms``) goes out as Dubbo's own
    ``timeout``, which Dubbo providers and consumers read.
    """
    if not body or body[-1] != 0x5A:  # 'Z'
        return None
    parts = [body[:-1]]
    pairs = _PAIRS
    for item in extra.items():
        encoded = pairs.get(item)
        if encoded is None:
            unique = _UNIQUE_VALUES.get(item[0])
            if unique is not None:
                encoded = unique + _hessian_string(item[1])
            else:
                key = _DUBBO_NAMES.get(item[0], item[0])
                encoded = _hessian_string(key) + _hessian_string(item[1])
                if len(pairs) >= _PAIRS_MAX:
                    pairs.clear()  # crude, but bounded; the values that repeat come back
                pairs[item] = encoded
        parts.append(encoded)
    parts.append(b"Z")
    return b"".join(parts)


def encode_invocation(invocation: Invocation) -> bytes:
    encoder = Hessian2Encoder()
    encoder.write_object(invocation.dubbo_version)
    encoder.write_object(invocation.path)
    encoder.write_object(invocation.version)
    encoder.write_object(invocation.method)
    encoder.write_object(to_descriptor(invocation.parameter_types))
    for argument in invocation.arguments:
        encoder.write_object(argument)
    encoder.write_object(dict(invocation.attachments))
    return encoder.getvalue()


def decode_result(header: Header, body: bytes, limits: Limits | None = None) -> Result:
    decoder = Hessian2Decoder(body, limits or DEFAULT_LIMITS)
    if header.status != Status.OK:
        message = decoder.read_object() if body else ""
        return Result(header.status, error_message=str(message) if message is not None else "")
    raw_flag = decoder.read_object()
    # type() not isinstance(): a hessian2 boolean would pass as 0 or 1.
    if type(raw_flag) is not int or raw_flag not in _RESPONSE_FLAGS:
        raise RemoteProtocolError(f"unknown response flag {raw_flag!r}")
    flag = ResponseFlag(raw_flag)
    value: Any = None
    exception: Any = None
    if flag in (ResponseFlag.VALUE, ResponseFlag.VALUE_WITH_ATTACHMENTS):
        value = decoder.read_object()
    elif flag in (ResponseFlag.WITH_EXCEPTION, ResponseFlag.WITH_EXCEPTION_WITH_ATTACHMENTS):
        exception = decoder.read_object()
    attachments: dict[str, Any] = {}
    if flag >= ResponseFlag.WITH_EXCEPTION_WITH_ATTACHMENTS:
        raw = decoder.read_object()
        if raw is not None and not isinstance(raw, dict):
            raise RemoteProtocolError(f"response attachments are {type(raw).__name__}")
        attachments = dict(raw or {})
    return Result(header.status, flag, value, exception, attachments)


def request_frame(request_id: int, body: bytes, two_way: bool = True) -> bytes:
    header = Header(True, two_way, False, HESSIAN2, 0, request_id, len(body))
    return header.pack() + body


def value_response_frame(
    request_id: int, value: Any, attachments: dict[str, Any] | None = None
) -> bytes:
    encoder = Hessian2Encoder()
    if value is None:
        encoder.write_object(int(ResponseFlag.NULL_VALUE_WITH_ATTACHMENTS))
    else:
        encoder.write_object(int(ResponseFlag.VALUE_WITH_ATTACHMENTS))
        encoder.write_object(value)
    encoder.write_object(dict(attachments or {}))
    body = encoder.getvalue()
    return Header(False, False, False, HESSIAN2, Status.OK, request_id, len(body)).pack() + body


def error_response_frame(request_id: int, status: Status, message: str) -> bytes:
    """A response with a non-OK status: what a Java consumer turns into an RpcException."""
    encoder = Hessian2Encoder()
    encoder.write_object(message)
    body = encoder.getvalue()
    return Header(False, False, False, HESSIAN2, status, request_id, len(body)).pack() + body


def heartbeat_request(request_id: int) -> bytes:
    return Header(True, True, True, HESSIAN2, 0, request_id, 1).pack() + HESSIAN_NULL


def heartbeat_response(request_id: int, serialization: int = HESSIAN2) -> bytes:
    header = Header(False, False, True, serialization, Status.OK, request_id, 1)
    return header.pack() + HESSIAN_NULL


def is_heartbeat(frame: Frame) -> bool:
    return frame.header.event
