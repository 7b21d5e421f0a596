"""gRPC's length-prefixed messages, watched as they stream by (sans-IO).

The h2 relay does not decode messages; it only needs their sizes, to refuse one over the
limit before it is relayed and to notice a stream that ends inside a message. Each message
is a 5-byte prefix (compressed flag, 4-byte big-endian length) and that many bytes; a
prefix and a message may be split over any number of DATA frames.
"""

from __future__ import annotations

PREFIX = 5


class MessageTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes is over the limit of {limit}")
        self.size = size


class MessageSizes:
    """Feed the bytes of one direction of a stream; ``partial`` says whether it is inside a
    message (a stream ending there was cut short)."""

    __slots__ = ("_limit", "_prefix", "_remaining", "messages")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._prefix = bytearray()
        self._remaining = 0  # body bytes of the current message still to come
        self.messages = 0  # whole messages seen

    @property
    def partial(self) -> bool:
        return bool(self._prefix) or self._remaining > 0

    def feed(self, data: bytes | memoryview) -> None:
        """Raises MessageTooLarge when a prefix announces a message over the limit."""
        view = memoryview(data)
        while view:
            if self._remaining:
                step = min(self._remaining, len(view))
                self._remaining -= step
                view = view[step:]
                if not self._remaining:
                    self.messages += 1
                continue
            need = PREFIX - len(self._prefix)
            self._prefix += view[:need]
            view = view[need:]
            if len(self._prefix) < PREFIX:
                return
            size = int.from_bytes(self._prefix[1:PREFIX], "big")
            self._prefix.clear()
            if size > self._limit:
                raise MessageTooLarge(size, self._limit)
            self._remaining = size
            if not size:
                self.messages += 1
