"""Header rewriting between the client's and the provider's connections (RFC 9110 7.6.1).

Hop-by-hop fields describe one connection, so a proxy drops them and sets its own; the
framing fields (Content-Length, Transfer-Encoding) are set again by h11 from the body it
actually sends. Everything else passes through untouched, in order and in its own case.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.telemetry.propagation import INCOMING

Headers = list[tuple[bytes, bytes]]

# The propagation field names (lower case) as parsers hand them over.
PROPAGATED = frozenset(name.encode() for name in INCOMING)

# RFC 9110 7.6.1 plus the fields every proxy treats the same way (Proxy-Connection from
# old clients, Keep-Alive from RFC 2068).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


def comma_tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The lower-cased, comma-separated tokens of every ``name`` field."""
    tokens: list[bytes] = []
    for field_name, value in headers:
        if field_name.lower() == name:
            tokens.extend(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for field_name, value in headers:
        if field_name.lower() == name:
            return value
    return None


def is_upgrade(headers: Headers) -> bool:
    """A request asking to switch protocols (WebSocket): Upgrade named in Connection."""
    return b"upgrade" in comma_tokens(headers, b"connection") and (
        header_value(headers, b"upgrade") is not None
    )


def end_to_end(headers: Headers, *, keep_upgrade: bool = False) -> Headers:
    """``headers`` without hop-by-hop fields and those the Connection field names.

    ``keep_upgrade`` keeps an upgrade handshake (``Connection: upgrade`` + ``Upgrade``),
    which a proxy relays so that the provider can accept it.
    """
    drop = HOP_BY_HOP.union(comma_tokens(headers, b"connection"))
    kept = [(name, value) for name, value in headers if name.lower() not in drop]
    if keep_upgrade:
        upgrade = header_value(headers, b"upgrade")
        if upgrade is not None:
            kept += [(b"Connection", b"upgrade"), (b"Upgrade", upgrade)]
    return kept


def split_fields(
    headers: Headers, incoming: dict[str, str] | None = None
) -> tuple[Headers, bytes | None, bool, bytes | None]:
    """One pass over a head: its end-to-end fields (``end_to_end``), and what framing and
    routing need: Content-Length, whether the body is chunked, Host.

    Content-Length and Host stay among the fields (passed on as they are); a chunked
    body's Transfer-Encoding is the caller's to set again. The propagation fields (trace
    context, budget, hops: agent/telemetry/propagation.py) are also put into ``incoming``,
    when given, with lower-case names: the call record reads them (plugins/http/calls.py).
    """
    kept: Headers = []
    length: bytes | None = None
    chunked = False
    host: bytes | None = None
    named: set[bytes] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                for token in value.split(b","):
                    token = token.strip().lower()
                    if token and token not in (b"close", b"keep-alive"):
                        named = named or set()
                        named.add(token)
            elif lower == b"transfer-encoding":
                chunked = True
            continue
        if lower == b"content-length":
            length = value
        elif lower == b"host":
            host = value
        elif incoming is not None and lower in PROPAGATED:
            incoming[lower.decode("latin-1")] = value.decode("latin-1")
        kept.append((name, value))
    if named:
        kept = [(name, value) for name, value in kept if name.lower() not in named]
        if b"content-length" in named:
            length = None
        if b"host" in named:
            host = None
    return kept, length, chunked, host


def add_forwarded(headers: Headers, client_ip: str, host: bytes | None) -> Headers:
    """Append the client to X-Forwarded-For and say how it reached us (de facto fields)."""
    previous = header_value(headers, b"x-forwarded-for")
    chain = previous + b", " + client_ip.encode() if previous else client_ip.encode()
    kept = [
        (name, value)
        for name, value in headers
        if name.lower() not in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
    ]
    kept.append((b"X-Forwarded-For", chain))
    kept.append((b"X-Forwarded-Proto", b"http"))
    if host is not None:
        kept.append((b"X-Forwarded-Host", host))
    return kept


def add_rfc7239(headers: Headers, client_ip: str, host: bytes | None) -> Headers:
    """Append this hop to ``Forwarded`` (RFC 7239): ``for`` (the client's address, an
    IPv6 one bracketed and quoted), ``host`` (the Host it asked for, quoted) and
    ``proto``. Earlier elements, from proxies before us, are kept in order; several
    Forwarded fields are joined into one list (RFC 7239 4)."""
    previous = [value for name, value in headers if name.lower() == b"forwarded"]
    node = client_ip.encode() if client_ip and client_ip != "unknown" else b"unknown"
    if b":" in node:
        node = b'"[' + node + b']"'
    element = b"for=" + node
    if host is not None:
        element += b";host=" + _quoted(host)
    element += b";proto=http"
    kept = [(name, value) for name, value in headers if name.lower() != b"forwarded"]
    kept.append((b"Forwarded", b", ".join([*previous, element])))
    return kept


def _quoted(value: bytes) -> bytes:
    """An RFC 9110 quoted-string (a Host with a port is not a token)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwarding(
    headers: Headers, x_forwarded: bool, rfc7239: bool, client_ip: str, host: bytes | None
) -> Headers:
    """The forwarding fields the listener's config asks for, added to ``headers``."""
    if x_forwarded:
        headers = add_forwarded(headers, client_ip, host)
    if rfc7239:
        headers = add_rfc7239(headers, client_ip, host)
    return headers
