"""HPACK (RFC 7541), sans-IO: header blocks to header lists and back, with the dynamic
table on both sides and Huffman decoding. Compiled by mypyc (agent/compiled.py).

Decoding is linear in the block: every field is one integer read and at most two string
reads; Huffman strings are decoded four bits at a time through a state table built once
at import (each state is a node of the code tree; a step emits at most one symbol, the
shortest code being five bits). The decoder checks what RFC 7541 requires of a block
(indices in range, integers that end, table size updates only first and within the
limit we announced, Huffman padding of at most seven 1 bits and no EOS) and counts the
header list's size (RFC 9113 §6.5.2) while it goes, so that an oversized list can be
refused without a second pass; the block is decoded to its end all the same, since the
dynamic table must stay in step with the peer's.

The encoder writes string literals without Huffman coding (a relay on loopback gains
little from 30 % smaller headers and would pay for it on every field) and keeps a
dynamic table of its own: a field sent again (``content-type: application/grpc``, a
method's ``:path``) is one byte the next time. Fields whose value changes on every
request are not added to it (they would only push the stable ones out), and credentials
are sent as never-indexed literals (§7.1.3).
"""

from __future__ import annotations

from typing import Final

from agent.h2.tables import HUFFMAN_CODES, HUFFMAN_LENGTHS, STATIC_TABLE

DEFAULT_TABLE_SIZE: Final = 4096
# Every entry costs its name and value plus this (§4.1).
ENTRY_OVERHEAD: Final = 32
_STATIC_COUNT: Final = 61


class HpackError(Exception):
    """The block breaks RFC 7541: a COMPRESSION_ERROR of the connection."""


# -- Huffman decoding: a 4-bit state machine over the code tree ------------------------------


def _build_huffman_states() -> tuple[list[int], list[int], list[bool]]:
    """(next state, emitted symbol or -1, accepting) for every (state, nibble).

    States are the internal nodes of the code tree (0 is the root). A nibble walks four
    edges; reaching a leaf emits its symbol and continues from the root. EOS (256) as a
    symbol is an error (-2). A state is accepting when the bits since the last symbol
    are all ones and fewer than eight: valid padding (§5.2)."""
    # The tree: children of internal nodes; a leaf is stored as -(symbol + 1).
    left: list[int] = [0]
    right: list[int] = [0]
    for symbol in range(257):
        code = HUFFMAN_CODES[symbol]
        length = HUFFMAN_LENGTHS[symbol]
        node = 0
        for bit_index in range(length - 1, -1, -1):
            bit = (code >> bit_index) & 1
            children = right if bit else left
            if bit_index == 0:
                children[node] = -(symbol + 1)
            else:
                if children[node] == 0:
                    left.append(0)
                    right.append(0)
                    children[node] = len(left) - 1
                node = children[node]
    count = len(left)
    # Accepting: reached from the root by ones only, at depth < 8.
    accepting = [False] * count
    node = 0
    for depth in range(8):
        accepting[node] = True
        if depth == 7 or right[node] <= 0:
            break
        node = right[node]
    next_state = [0] * (count * 16)
    emitted = [-1] * (count * 16)
    for state in range(count):
        for nibble in range(16):
            node = state
            symbol = -1
            for bit_index in range(3, -1, -1):
                bit = (nibble >> bit_index) & 1
                child = right[node] if bit else left[node]
                if child < 0:
                    found = -child - 1
                    symbol = -2 if found == 256 or symbol != -1 else found
                    node = 0
                else:
                    node = child
            next_state[state * 16 + nibble] = node
            emitted[state * 16 + nibble] = symbol
    return next_state, emitted, accepting


_NEXT, _EMIT, _ACCEPTING = _build_huffman_states()


def huffman_decode(data: bytes) -> bytes:
    """A Huffman-coded string literal (§5.2); HpackError when it is not one."""
    out = bytearray()
    next_state = _NEXT
    emit = _EMIT
    state = 0
    for byte in data:
        index = state * 16 + (byte >> 4)
        symbol = emit[index]
        state = next_state[index]
        if symbol >= 0:
            out.append(symbol)
        elif symbol == -2:
            raise HpackError("Huffman string holds EOS")
        index = state * 16 + (byte & 15)
        symbol = emit[index]
        state = next_state[index]
        if symbol >= 0:
            out.append(symbol)
        elif symbol == -2:
            raise HpackError("Huffman string holds EOS")
    if not _ACCEPTING[state]:
        raise HpackError("Huffman string ends with bad padding")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    """The Huffman coding of ``data`` (the encoder does not use it; tests and peers do)."""
    out = bytearray()
    bits = 0
    count = 0
    for byte in data:
        bits = (bits << HUFFMAN_LENGTHS[byte]) | HUFFMAN_CODES[byte]
        count += HUFFMAN_LENGTHS[byte]
        while count >= 8:
            count -= 8
            out.append((bits >> count) & 0xFF)
        bits &= (1 << count) - 1
    if count:
        out.append(((bits << (8 - count)) | ((1 << (8 - count)) - 1)) & 0xFF)
    return bytes(out)


# -- integers (§5.1) -----------------------------------------------------------------------


def encode_integer(out: bytearray, value: int, prefix_bits: int, first: int) -> None:
    """Append ``value`` with a ``prefix_bits`` prefix; ``first`` holds the byte's other bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        out.append(first | value)
        return
    out.append(first | limit)
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)


# An integer past this is no index, length or size a peer may send (2^28: nghttp2's bound).
_MAX_INTEGER: Final = 1 << 28


class Decoder:
    """One direction's header blocks: the peer's encoder is mirrored here.

    ``max_table_size`` is the table size we announce (SETTINGS_HEADER_TABLE_SIZE); the
    peer may use up to that. ``max_list_size`` is the header list size (§6.5.2) past
    which :attr:`oversized` is set for the block just decoded."""

    __slots__ = ("_entries", "_size", "allowed_size", "max_list_size", "oversized", "table_size")

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE, max_list_size: int = 1 << 30):
        self._entries: list[tuple[bytes, bytes]] = []  # oldest first
        self._size = 0
        self.allowed_size = max_table_size
        self.table_size = max_table_size
        self.max_list_size = max_list_size
        self.oversized = False

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The header list of one complete block (HEADERS plus its CONTINUATIONs)."""
        headers: list[tuple[bytes, bytes]] = []
        position = 0
        end = len(block)
        list_size = 0
        fields_seen = False
        while position < end:
            byte = block[position]
            if byte & 0x80:  # indexed field (§6.1)
                index, position = self._integer(block, position, 7)
                field = self._field(index)
                name = field[0]
                value = field[1]
            elif byte & 0x40 or byte & 0xF0 == 0 or byte & 0xF0 == 0x10:
                # Literal: with incremental indexing (§6.2.1, 6-bit prefix), without
                # indexing or never indexed (§6.2.2, §6.2.3, 4-bit prefixes).
                indexing = byte & 0x40 != 0
                index, position = self._integer(block, position, 6 if indexing else 4)
                if index:
                    name = self._field(index)[0]
                else:
                    name, position = self._string(block, position)
                value, position = self._string(block, position)
                if indexing:
                    self._add(name, value)
            else:  # dynamic table size update (§6.3): 001xxxxx
                if fields_seen:
                    raise HpackError("table size update after a field")
                size, position = self._integer(block, position, 5)
                if size > self.allowed_size:
                    raise HpackError(f"table size {size} over the {self.allowed_size} allowed")
                self.table_size = size
                self._evict(0)
                continue
            fields_seen = True
            list_size += len(name) + len(value) + ENTRY_OVERHEAD
            headers.append((name, value))
        self.oversized = list_size > self.max_list_size
        return headers

    def _integer(self, block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = block[position] & limit
        position += 1
        if value < limit:
            return value, position
        shift = 0
        end = len(block)
        while True:
            if position >= end:
                raise HpackError("integer cut short")
            byte = block[position]
            position += 1
            value += (byte & 127) << shift
            if value > _MAX_INTEGER:
                raise HpackError("integer too large")
            if not byte & 128:
                return value, position
            shift += 7

    def _string(self, block: bytes, position: int) -> tuple[bytes, int]:
        if position >= len(block):
            raise HpackError("string cut short")
        huffman = block[position] & 0x80 != 0
        length, position = self._integer(block, position, 7)
        end = position + length
        if end > len(block):
            raise HpackError("string cut short")
        data = block[position:end]
        return (huffman_decode(data) if huffman else data), end

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if index == 0:
            raise HpackError("index 0")
        if index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_COUNT
        entries = self._entries
        if dynamic > len(entries):
            raise HpackError(f"index {index} past the table")
        return entries[len(entries) - dynamic]

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self.table_size:
            self._entries.clear()  # §4.4: a too-large entry empties the table
            self._size = 0
            return
        self._evict(size)
        self._entries.append((name, value))
        self._size += size

    def _evict(self, room: int) -> None:
        entries = self._entries
        dropped = 0
        while dropped < len(entries) and self._size + room > self.table_size:
            name, value = entries[dropped]
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD
            dropped += 1
        if dropped:
            del entries[:dropped]


_STATIC_FIELDS: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAMES: Final[dict[bytes, int]] = {}
for _index, _field in enumerate(STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault(_field, _index)
    _STATIC_NAMES.setdefault(_field[0], _index)

# Values that differ on (nearly) every request: not worth a table entry.
VOLATILE: Final = frozenset(
    {
        b"grpc-timeout",
        b"traceparent",
        b"tracestate",
        b"content-length",
        b"date",
        b"x-request-id",
        b"grpc-message",
        b"etag",
        b"last-modified",
        b"if-none-match",
        b"if-modified-since",
        b"range",
    }
)
# Credentials: never indexed, here or by any intermediary (§7.1.3).
SENSITIVE: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})


class Encoder:
    """Header lists to blocks, with a dynamic table of our own within the size the peer
    allows (SETTINGS_HEADER_TABLE_SIZE) and at most ``DEFAULT_TABLE_SIZE``."""

    __slots__ = (
        "_entries",
        "_fields",
        "_inserted",
        "_names",
        "_pending_update",
        "_size",
        "table_size",
    )

    def __init__(self) -> None:
        self._entries: list[tuple[bytes, bytes]] = []  # oldest first
        self._size = 0
        self._inserted = 0  # insertions so far: entry k (0-based) is index 62 + inserted - 1 - k
        self._fields: dict[tuple[bytes, bytes], int] = {}  # field -> its insertion number
        self._names: dict[bytes, int] = {}
        self.table_size = DEFAULT_TABLE_SIZE
        self._pending_update = -1

    def set_max_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: ours becomes at most that, announced at
        the start of the next block."""
        size = min(size, DEFAULT_TABLE_SIZE)
        if size != self.table_size:
            self.table_size = size
            self._evict(0)
            self._pending_update = size

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        out = bytearray()
        if self._pending_update >= 0:
            encode_integer(out, self._pending_update, 5, 0x20)
            self._pending_update = -1
        fields = self._fields
        for field in headers:
            static = _STATIC_FIELDS.get(field, 0)
            if static:
                encode_integer(out, static, 7, 0x80)
                continue
            inserted = fields.get(field, -1)
            if inserted >= 0:
                encode_integer(out, _STATIC_COUNT + self._inserted - inserted, 7, 0x80)
                continue
            name = field[0]
            value = field[1]
            name_index = _STATIC_NAMES.get(name, 0)
            if not name_index:
                named = self._names.get(name, -1)
                if named >= 0:
                    name_index = _STATIC_COUNT + self._inserted - named
            if name in SENSITIVE:
                encode_integer(out, name_index, 4, 0x10)
            elif name in VOLATILE or len(name) + len(value) + ENTRY_OVERHEAD > self.table_size:
                encode_integer(out, name_index, 4, 0x00)
            else:
                encode_integer(out, name_index, 6, 0x40)
                self._add(name, value)
            if not name_index:
                encode_integer(out, len(name), 7, 0)
                out += name
            encode_integer(out, len(value), 7, 0)
            out += value
        return bytes(out)

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        self._evict(size)
        self._entries.append((name, value))
        self._size += size
        self._fields[(name, value)] = self._inserted
        self._names[name] = self._inserted
        self._inserted += 1

    def _evict(self, room: int) -> None:
        entries = self._entries
        dropped = 0
        first = self._inserted - len(entries)  # insertion number of entries[0]
        while dropped < len(entries) and self._size + room > self.table_size:
            name, value = entries[dropped]
            self._size -= len(name) + len(value) + ENTRY_OVERHEAD
            number = first + dropped
            if self._fields.get((name, value), -1) == number:
                del self._fields[(name, value)]
            if self._names.get(name, -1) == number:
                del self._names[name]
            dropped += 1
        if dropped:
            del entries[:dropped]
