"""HPACK with bytes alone: RFC 7541's own examples (Appendix C), both directions against
python-hpack (an implementation nobody here wrote), table eviction and size updates, the
errors a block can carry, and work linear in the block."""

from __future__ import annotations

import random

import hpack
import pytest

from agent.h2.hpack import (
    Decoder,
    Encoder,
    HpackError,
    encode_integer,
    huffman_decode,
    huffman_encode,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_integers_rfc_c1() -> None:
    out = bytearray()
    encode_integer(out, 10, 5, 0)
    encode_integer(out, 1337, 5, 0)
    encode_integer(out, 42, 8, 0)
    assert bytes(out) == _hex("0a 1f9a0a 2a")


# RFC 7541 C.3 (no Huffman) and C.4 (Huffman): three requests on one connection.
REQUESTS = [
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3", "C.4"])
def test_rfc_request_examples(blocks: list[str]) -> None:
    decoder = Decoder()
    for block, expected in zip(blocks, REQUESTS, strict=True):
        assert decoder.decode(_hex(block)) == expected
    # After the third request the table holds three entries, 164 octets (RFC C.3.3).
    assert decoder._size == 164
    assert decoder._entries[-1] == (b"custom-key", b"custom-value")


def test_rfc_response_examples_evict_c5() -> None:
    # C.5: responses with a 256-octet table; the third one evicts.
    decoder = Decoder(max_table_size=256)
    decoder.table_size = 256
    blocks = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
        " 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
        " 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
        " 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
        " 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
        " 3d31",
    ]
    first = decoder.decode(_hex(blocks[0]))
    assert first[0] == (b":status", b"302") and first[3] == (
        b"location",
        b"https://www.example.com",
    )
    assert decoder.decode(_hex(blocks[1]))[0] == (b":status", b"307")
    third = decoder.decode(_hex(blocks[2]))
    assert third[0] == (b":status", b"200")
    assert third[-1][0] == b"set-cookie"
    assert decoder._size == 215  # RFC C.5.3: three entries left, 215 octets


def test_huffman_both_ways_against_python_hpack() -> None:
    rng = random.Random(7)
    their_encoder = hpack.Encoder()
    their_decoder = hpack.Decoder()
    ours = Decoder()
    encoder = Encoder()
    for _ in range(300):
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
        assert huffman_decode(huffman_encode(value)) == value
        headers = [(b"x-value", value), (b":path", b"/p" + bytes([65 + rng.randrange(5)]))]
        assert ours.decode(their_encoder.encode(headers, huffman=True)) == headers
        decoded = their_decoder.decode(encoder.encode(headers), raw=True)
        assert [(bytes(k), bytes(v)) for k, v in decoded] == headers


def test_the_encoder_indexes_what_repeats_and_not_what_changes() -> None:
    encoder = Encoder()
    headers = [(b"content-type", b"application/grpc"), (b"grpc-timeout", b"1S")]
    first = encoder.encode(headers)
    second = encoder.encode([(b"content-type", b"application/grpc"), (b"grpc-timeout", b"2S")])
    assert second[0] == 0x80 | 62  # the first field is now one byte: dynamic index 62
    assert len(second) < len(first)
    assert [e[0] for e in encoder._entries] == [b"content-type"]  # grpc-timeout not indexed
    # Credentials are never indexed (0001xxxx), here or by intermediaries.
    block = encoder.encode([(b"authorization", b"Bearer x")])
    assert block[0] & 0xF0 == 0x10


def test_table_size_update_and_eviction_keep_both_ends_in_step() -> None:
    encoder = Encoder()
    decoder = Decoder()
    their_decoder = hpack.Decoder()
    for i in range(200):
        if i == 100:
            encoder.set_max_table_size(100)  # the peer's SETTINGS_HEADER_TABLE_SIZE
            their_decoder.max_allowed_table_size = 4096
        headers = [(b"x-key-%d" % (i % 13), b"v" * (i % 70)), (b":status", b"200")]
        block = encoder.encode(headers)
        assert decoder.decode(block) == headers
        assert [(bytes(k), bytes(v)) for k, v in their_decoder.decode(block, raw=True)] == headers
    assert decoder.table_size == 100 and decoder._size <= 100


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ("80", "index 0"),
        ("c0", "past the table"),
        ("ff ff ff ff ff 7f", "integer too large"),
        ("ff", "integer cut short"),
        ("00 05 61", "string cut short"),
        ("00 81 ff 00", "bad padding"),  # eight 1 bits of padding
        ("00 84 ff ff ff ff 00", "EOS"),  # 30 ones: EOS inside a string
        ("82 20", "after a field"),  # a size update must come first
        ("3f e2 1f", "over the 4096 allowed"),  # 4097
    ],
)
def test_bad_blocks(block: str, fragment: str) -> None:
    with pytest.raises(HpackError, match=fragment):
        Decoder().decode(_hex(block))


def test_header_list_size_is_counted_while_decoding() -> None:
    decoder = Decoder(max_list_size=100)
    decoder.decode(Encoder().encode([(b"x-a", b"v" * 60)]))  # 3 + 60 + 32 = 95
    assert not decoder.oversized
    decoder.decode(Encoder().encode([(b"x-a", b"v" * 70)]))
    assert decoder.oversized


def test_a_too_large_entry_empties_the_table() -> None:
    decoder = Decoder(max_table_size=64)
    decoder.decode(_hex("40 01 61 01 62"))  # a: b, 34 octets
    assert decoder._entries == [(b"a", b"b")]
    decoder.decode(bytes([0x40, 1, 0x61, 40]) + b"x" * 40)  # 73 octets > 64
    assert decoder._entries == [] and decoder._size == 0
