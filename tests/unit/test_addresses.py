"""Addresses as the capture config writes them, and IP normalisation."""

from __future__ import annotations

import pytest

from agent.addresses import normalise_ip, parse_address


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.96.0.10", ("10.96.0.10", None)),
        ("10.96.0.10:20880", ("10.96.0.10", 20880)),
        ("[fd00::10]:443", ("fd00::10", 443)),
        ("[FD00:0::10]", ("fd00::10", None)),
        ("fd00::10", ("fd00::10", None)),  # more than one colon: an IPv6 address, no port
    ],
)
def test_addresses_parse_to_a_normalised_ip_and_port(
    text: str, parsed: tuple[str, int | None]
) -> None:
    assert parse_address(text) == parsed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("orders.svc", "not an IP address"),
        ("10.0.0.1:0", "port must be between 1 and 65535"),
        ("10.0.0.1:65536", "port must be between 1 and 65535"),
        ("10.0.0.1:\uff18\uff10", "port must be between 1 and 65535"),  # fullwidth: not ASCII
        ("[fd00::1", "expected [ipv6]:port"),
        ("[fd00::1]443", "expected [ipv6]:port"),
    ],
)
def test_bad_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[")):
        parse_address(text)


def test_normalise_ip() -> None:
    assert normalise_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert normalise_ip("FD00::1") == "fd00::1"
    assert normalise_ip("127.0.0.1") == "127.0.0.1"
    assert normalise_ip("localhost") is None
