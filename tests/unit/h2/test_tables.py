"""HPACK's constant tables: the static table's 61 entries, and a Huffman code that is
complete and prefix-free (every byte string has exactly one coding)."""

from __future__ import annotations

from agent.h2.tables import HUFFMAN_CODES, HUFFMAN_LENGTHS, STATIC_TABLE


def test_static_table() -> None:
    assert len(STATIC_TABLE) == 61
    assert STATIC_TABLE[0] == (b":authority", b"")
    assert STATIC_TABLE[1] == (b":method", b"GET")
    assert STATIC_TABLE[7] == (b":status", b"200")
    assert STATIC_TABLE[60] == (b"www-authenticate", b"")


def test_huffman_code_is_complete_and_prefix_free() -> None:
    assert len(HUFFMAN_CODES) == len(HUFFMAN_LENGTHS) == 257
    # Kraft's equality: a complete prefix code fills the code space exactly.
    assert sum(2 ** (30 - length) for length in HUFFMAN_LENGTHS) == 2**30
    codes = {(code, length) for code, length in zip(HUFFMAN_CODES, HUFFMAN_LENGTHS, strict=True)}
    for code, length in codes:
        assert code < 2**length
        for other, other_length in codes:
            if other_length > length:
                assert other >> (other_length - length) != code
    assert (HUFFMAN_CODES[256], HUFFMAN_LENGTHS[256]) == (0x3FFFFFFF, 30)  # EOS: 30 ones
