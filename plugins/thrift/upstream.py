"""Pooled, multiplexed connections to Thrift providers, on the runtime's multiplexing pool.

Connections per (provider, protocol, transport) carry the calls of every client: each call
goes out under a fresh seqid of its connection and its reply is matched back by seqid
(agent/runtime/multiplex.py). Thrift servers answer a connection's calls in order, but
matching by seqid keeps the pool correct for servers that do not (and lets a timed-out
call's late reply be dropped). Providers speak one protocol per port, so clients of
another wire form get their own connection rather than a translation: the wire form is
the pool's endpoint kind. Seqids stay in 1..2**31-1 (thriftpy2's compact writer never
returns on a negative one).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import cast

from agent.runtime.multiplex import (
    MultiplexCodec,
    MultiplexConnection,
    MultiplexPool,
    Pick,
    ResponseDecoder,
    Waiter,
)
from plugins.thrift.codec import SEQID_MASK, Message, MessageDecoder, Proto, Transport, with_seqid

__all__ = ["ThriftCodec", "UpstreamConnection", "UpstreamPool", "Waiter", "WireForm"]

WireForm = tuple[Proto, Transport]


class ThriftCodec(MultiplexCodec[Message, Message]):
    max_id = SEQID_MASK

    def __init__(self, proto: Proto, transport: Transport, max_size: int) -> None:
        self.proto = proto
        self.transport = transport
        self.max_size = max_size

    def decoder(self) -> ResponseDecoder[Message]:
        return MessageDecoder(self.proto, self.transport, self.max_size)

    def encode(self, request: Message, request_id: int) -> bytes:
        return with_seqid(request, request_id, self.transport)

    def response_id(self, response: Message) -> int:
        return response.header.seqid


UpstreamConnection = MultiplexConnection[Message, Message]


class UpstreamPool(MultiplexPool[Message, Message]):
    """Connections per provider and wire form, made on first use, replaced when they die."""

    def __init__(
        self,
        connect_timeout_s: float,
        max_size: int,
        connections_per_endpoint: int = 1,
        pick: Pick = "least_pending",
    ) -> None:
        def codec_for(kind: Hashable) -> ThriftCodec:
            proto, transport = cast(WireForm, kind)
            return ThriftCodec(proto, transport, max_size)

        super().__init__(
            codec_for,
            connect_timeout_s=connect_timeout_s,
            connections_per_endpoint=connections_per_endpoint,
            pick=pick,
        )
        self.max_size = max_size
