from __future__ import annotations

import random

import pytest

from plugins.grpc.framing import MessageSizes, MessageTooLarge
from tests.support.work import interpreted, lines_run


def framed(body: bytes, declared: int | None = None) -> bytes:
    size = len(body) if declared is None else declared
    return b"\x00" + size.to_bytes(4, "big") + body


def test_whole_messages_in_one_piece() -> None:
    sizes = MessageSizes(100)
    sizes.feed(framed(b"abc") + framed(b"") + framed(b"x" * 100))
    assert sizes.messages == 3
    assert not sizes.partial


@pytest.mark.parametrize("seed", range(5))
def test_random_splits_and_byte_by_byte(seed: int) -> None:
    messages = [framed(bytes([i]) * i) for i in range(30)]
    data = b"".join(messages)
    boundaries = {sum(len(m) for m in messages[:n]) for n in range(31)}
    rng = random.Random(seed)
    sizes = MessageSizes(1000)
    pos = 0
    while pos < len(data):
        step = 1 if seed == 0 else rng.randint(1, 40)
        sizes.feed(data[pos : pos + step])
        pos += step
        assert sizes.partial == (min(pos, len(data)) not in boundaries)
    assert sizes.messages == 30


def test_cut_inside_a_prefix_or_a_body_is_partial() -> None:
    sizes = MessageSizes(100)
    sizes.feed(b"\x00\x00\x00")
    assert sizes.partial
    sizes = MessageSizes(100)
    sizes.feed(framed(b"abc", declared=10))
    assert sizes.partial


def test_over_the_limit_is_refused_at_its_prefix() -> None:
    sizes = MessageSizes(10)
    with pytest.raises(MessageTooLarge) as caught:
        sizes.feed(framed(b"", declared=11)[:5])
    assert caught.value.size == 11


def test_work_is_linear_in_the_bytes_whatever_the_pieces() -> None:
    # Issue 25: the sizes are followed across DATA frames without looking back. Lines of
    # framing.py run (an interpreted copy) for n and 10n bytes in 7-byte pieces.
    framing = interpreted("plugins.grpc.framing")

    def lines_for(total: int) -> int:
        data = b"".join(framed(b"m" * 95) for _ in range(total // 100))

        def feed() -> int:
            sizes = framing.MessageSizes(1 << 20)
            for at in range(0, len(data), 7):
                sizes.feed(data[at : at + 7])
            return int(sizes.messages)

        messages, lines = lines_run(framing, feed)
        assert messages == total // 100
        return lines

    assert lines_for(200_000) <= 10 * lines_for(20_000) * 1.05
