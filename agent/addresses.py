"""Addresses as the capture config writes them: ``ip``, ``ip:port``, ``[ipv6]:port``."""

from __future__ import annotations

import ipaddress


def parse_address(text: str) -> tuple[str, int | None]:
    """``(normalised ip, port or None)``; ValueError with the reason otherwise."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: not an IP address (names are not resolved here)") from None
    port: int | None = None
    if port_text:
        # ASCII digits only: int() and isdigit() also take other scripts' digits.
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: port must be between 1 and 65535")
        port = int(port_text)
    return str(ip), port


def normalise_ip(text: str) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), None for a name."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
