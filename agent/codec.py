"""The sans-IO codec interface, after h11: bytes in, events out; events in, bytes out.

A codec never touches a socket, the event loop, a clock or a logger. The runtime feeds it
what it read with ``receive_data`` and drains ``next_event`` until it answers
``NEED_DATA``; it turns events into bytes with ``send``. Every length a peer declares is
checked against a limit before anything is buffered for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Final, Generic, TypeVar

EventT = TypeVar("EventT")


class _NeedData:
    """The codec has no complete event yet; feed it more bytes."""

    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
NeedData = _NeedData


class Codec(ABC, Generic[EventT]):
    """One direction-agnostic connection codec.

    ``next_event`` raises :class:`agent.errors.RemoteProtocolError` on malformed input;
    after that the codec is unusable and the connection should be answered or closed.
    ``send`` raises :class:`agent.errors.LocalProtocolError` for an event it cannot encode.
    """

    @abstractmethod
    def receive_data(self, data: bytes) -> None: ...

    @abstractmethod
    def next_event(self) -> EventT | NeedData: ...

    @abstractmethod
    def send(self, event: EventT) -> bytes: ...
