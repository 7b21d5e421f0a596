"""The first line of every connection on a gateway link: which service it is for.

Sans-IO. After the mutual-TLS handshake the importing gateway writes one line,

    MESHAGENT-LINK/1 <service> <source dc>\\n

and then the caller's bytes, untouched: the link relays whole connections (as Istio's
east-west gateways route mTLS passthrough by SNI), so HTTP/1.1, HTTP/2, gRPC, Dubbo and
Thrift cross it alike, with their trace context, deadlines and errors end to end. The line
is bounded (``MAX_LINE``); anything else is refused before a byte is relayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAGIC = b"MESHAGENT-LINK/1"
MAX_LINE = 512
# Service names as registries spell them (Dubbo interfaces, gRPC services, DNS names);
# a data center's name is a label.
_SERVICE = re.compile(rb"[A-Za-z0-9_.:/@$-]{1,255}")
_DC = re.compile(rb"[A-Za-z0-9_.-]{1,128}")


class PreambleError(ValueError):
    """The connection does not start with a valid link line."""


@dataclass(frozen=True)
class Preamble:
    service: str
    source_dc: str


def encode(service: str, source_dc: str) -> bytes:
    line = b" ".join((MAGIC, service.encode(), source_dc.encode())) + b"\n"
    parse(line)  # what we send is what we accept
    return line


def parse(buffer: bytes) -> tuple[Preamble, bytes] | None:
    """The preamble and the bytes after it, or None while the line is incomplete;
    PreambleError for anything that is not a link line."""
    end = buffer.find(b"\n", 0, MAX_LINE)
    if end < 0:
        if len(buffer) >= MAX_LINE:
            raise PreambleError(f"no link line in the first {MAX_LINE} bytes")
        if not MAGIC.startswith(buffer[: len(MAGIC)]):
            raise PreambleError("not a meshagent link")
        return None
    parts = buffer[:end].split(b" ")
    if len(parts) != 3 or parts[0] != MAGIC:
        raise PreambleError("not a meshagent link line")
    service, dc = parts[1], parts[2]
    if not _SERVICE.fullmatch(service):
        raise PreambleError("invalid service name in the link line")
    if not _DC.fullmatch(dc):
        raise PreambleError("invalid data center name in the link line")
    return Preamble(service.decode(), dc.decode()), buffer[end + 1 :]
