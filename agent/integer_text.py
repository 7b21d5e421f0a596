"""Integers written as text, read the way JSON peers mean them.

``int()`` is too lenient for text from callers: it takes ``"1_000"``, surrounding spaces
and other scripts' digits (``"١٢"`` is 12), which protobuf's Go parser refuses. Here an
integer is an optional sign and ASCII digits, at most ``max_digits`` of them (``int()``
of a long text is quadratic, and Python refuses past 4,300 digits). Used by the
invocations' JSON conversions (Dubbo, Thrift, gRPC).
"""

from __future__ import annotations


def parse_integer_text(text: str, max_digits: int) -> int | None:
    """The integer ``text`` writes, or None when it is not one."""
    digits = text[1:] if text[:1] in ("-", "+") else text
    if not digits or len(digits) > max_digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(text)
