"""Integer text as JSON peers mean it: a sign and ASCII digits, bounded."""

from __future__ import annotations

import pytest

from agent.integer_text import parse_integer_text


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("-12", -12), ("+7", 7), ("9223372036854775808", 2**63), ("007", 7)],
)
def test_integers(text: str, value: int) -> None:
    assert parse_integer_text(text, 20) == value


@pytest.mark.parametrize("text", ["", "-", "1_000", " 12", "12 ", "١٢", "²", "1e3", "0x10", "--1"])
def test_what_int_would_take_or_is_not_an_integer(text: str) -> None:
    assert parse_integer_text(text, 20) is None


def test_the_digit_bound() -> None:
    assert parse_integer_text("9" * 20, 20) == int("9" * 20)
    assert parse_integer_text("9" * 21, 20) is None
