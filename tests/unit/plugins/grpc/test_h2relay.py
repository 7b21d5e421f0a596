from __future__ import annotations

import pytest

from plugins.grpc.h2relay import _encode, _status_of, parse_timeout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"100m", 0.1), (b"5S", 5.0), (b"2M", 120.0), (b"1H", 3600.0), (b"250u", 250e-6)],
)
def test_grpc_timeout(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"m", b"100", b"123456789S", b"10x", b"-1S", b"1.5S"])
def test_bad_grpc_timeout_is_none(value: bytes) -> None:
    assert parse_timeout(value) is None


def test_status_from_trailers() -> None:
    assert _status_of([(b"grpc-status", b"5"), (b"grpc-message", b"x")]) == 5
    # No or garbled status: INTERNAL, as a gRPC client would read it.
    assert _status_of([]) == 13
    assert _status_of([(b"grpc-status", b"five")]) == 13


def test_grpc_message_is_percent_encoded() -> None:
    assert _encode("50% done\n") == b"50%25 done%0A"
    assert _encode("é") == b"%C3%A9"


def test_buffer_hands_out_frames_in_order_without_losing_bytes() -> None:
    from plugins.grpc.h2relay import _Buffer

    buffer = _Buffer()
    buffer.append(b"abcdef")
    buffer.append(b"")
    buffer.append(b"gh")
    assert (bool(buffer), buffer.size) == (True, 8)
    taken = [buffer.take(4), buffer.take(4), buffer.take(4)]
    assert taken == [b"abcd", b"ef", b"gh"]  # never more than one chunk at a time
    assert (bool(buffer), buffer.size) == (False, 0)
    buffer.append(b"x")
    buffer.clear()
    assert not buffer
