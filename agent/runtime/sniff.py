"""Which protocol a captured connection speaks, from its first bytes (sans-IO).

:func:`sniff` returns a protocol name as soon as the bytes say so, ``"tcp"`` as soon as
they cannot be any protocol we know, and ``None`` while they are still a prefix of a
known signature. Conclusive within :data:`MAX_SNIFF_BYTES`; the caller's timer decides
for clients that send nothing (server-first protocols such as MySQL or SMTP).

Signatures:

- ``dubbo``: the frame magic ``0xdabb``;
- ``http2``: the client connection preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (gRPC,
  Triple and h2c all start with it);
- ``http``: an HTTP/1 request line's method followed by a space;
- ``thrift``: a strict binary message header (``0x80 0x01 0x00`` then a message type 1-4)
  or a compact one (``0x82``, then version 1 with a type 1-4 in the top bits), either bare
  or after a 4-byte frame length (TFramedTransport).
"""

from __future__ import annotations

from typing import Final

DUBBO_MAGIC: Final = b"\xda\xbb"
HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP_METHODS: Final = (
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
)
# The HTTP/2 preface is the longest signature; every verdict is reached by then.
MAX_SNIFF_BYTES: Final = len(HTTP2_PREFACE)

# Which protocol plugins can carry a sniffed protocol: HTTP/2 is what gRPC and HTTP
# plugins speak; the others match their plugin's name.
PLUGINS_FOR: Final[dict[str, frozenset[str]]] = {
    "dubbo": frozenset({"dubbo"}),
    "http": frozenset({"http"}),
    "http2": frozenset({"grpc", "http", "triple"}),
    "thrift": frozenset({"thrift"}),
}


def _prefix_of(data: bytes, signature: bytes) -> bool:
    """``data`` could still become ``signature`` (or already starts with it)."""
    n = min(len(data), len(signature))
    return data[:n] == signature[:n]


def _thrift_header(data: bytes) -> bool | None:
    """True: a Thrift message header; False: not one; None: too short to say."""
    if not data:
        return None
    if data[0] == 0x80:  # strict binary: 0x80 0x01, 0x00, message type
        if len(data) < 4:
            return None if _prefix_of(data, b"\x80\x01\x00") else False
        return data[1] == 0x01 and data[2] == 0x00 and 1 <= data[3] <= 4
    if data[0] == 0x82:  # compact: protocol id, then type (3 bits) and version 1 (5 bits)
        if len(data) < 2:
            return None
        return data[1] & 0x1F == 1 and 1 <= data[1] >> 5 <= 4
    return False


def _thrift(data: bytes) -> bool | None:
    bare = _thrift_header(data)
    if bare is not False:
        return bare
    # Framed: a positive big-endian length (the top byte of a sane frame size is 0), then
    # the header.
    if data[0] != 0:
        return False
    if len(data) < 4:
        return None
    if int.from_bytes(data[:4], "big") == 0:
        return False
    return _thrift_header(data[4:])


def _http1(data: bytes) -> bool | None:
    undecided = False
    for method in HTTP_METHODS:
        token = method + b" "
        if data.startswith(token):
            return True
        if _prefix_of(data, token):
            undecided = True
    return None if undecided else False


def sniff(data: bytes) -> str | None:
    """The protocol of a connection that began with ``data``; None: need more bytes."""
    # Every verdict is reached within MAX_SNIFF_BYTES: looking further would only make a
    # large first read cost more (issue 25: work bounded whatever the input).
    data = data[:MAX_SNIFF_BYTES]
    if not data:
        return None
    if _prefix_of(data, DUBBO_MAGIC):
        return "dubbo" if len(data) >= len(DUBBO_MAGIC) else None
    undecided = False
    if _prefix_of(data, HTTP2_PREFACE):
        if len(data) >= len(HTTP2_PREFACE):
            return "http2"
        undecided = True
    http1 = _http1(data)
    if http1:
        return "http"
    thrift = _thrift(data)
    if thrift:
        return "thrift"
    if undecided or http1 is None or thrift is None:
        # A prefix of something we know; past MAX_SNIFF_BYTES nothing is still open.
        return None if len(data) < MAX_SNIFF_BYTES else "tcp"
    return "tcp"


def pipeline_protocol(sniffed: str, service_protocol: str) -> str:
    """The plugin that takes a connection: the service's own, when it can carry what was
    sniffed; the raw TCP relay otherwise (a protocol without a plugin, or a mismatch)."""
    if service_protocol in PLUGINS_FOR.get(sniffed, frozenset()):
        return service_protocol
    return "tcp"
