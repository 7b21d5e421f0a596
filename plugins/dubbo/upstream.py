"""Pooled, multiplexed connections to Dubbo providers, on the runtime's multiplexing pool.

One TCP connection per provider by default (Dubbo's own ``connections=0`` shares one;
``connections_per_endpoint`` allows more) carries many requests at once; each gets a fresh
request id on its connection, and the response is matched back by id
(agent/runtime/multiplex.py). What is Dubbo's own is here: a provider's heartbeat
requests are answered, its READONLY event drains the connection, and an idle connection
sends its own heartbeat, as Dubbo's HeaderExchangeClient does, so neither side drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from agent.runtime.multiplex import (
    MultiplexCodec,
    MultiplexConnection,
    MultiplexPool,
    Pick,
    ResponseDecoder,
    Waiter,
)
from plugins.dubbo.body import HESSIAN_NULL, heartbeat_request, heartbeat_response
from plugins.dubbo.frame import (
    DEFAULT_MAX_BODY,
    Frame,
    FrameDecoder,
    frame_with_id,
    with_request_id,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 60.0

# A request is a decoded frame (the listener's, packed once under the new id) or a whole
# frame's bytes (the invoker's and the MetadataService client's, any id: it is replaced).
Request = Frame | bytes

__all__ = ["DubboCodec", "UpstreamConnection", "UpstreamPool", "Waiter"]


class DubboCodec(MultiplexCodec[Request, Frame]):
    # Dubbo's request ids are Java longs.
    max_id = 2**63 - 1
    unit = "frame"

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body

    def decoder(self) -> ResponseDecoder[Frame]:
        return FrameDecoder(self.max_body)

    def encode(self, request: Request, request_id: int) -> bytes:
        if isinstance(request, Frame):
            return frame_with_id(request, request_id)
        return with_request_id(request, request_id)

    def response_id(self, response: Frame) -> int | None:
        # A provider sends requests only as events (heartbeats, READONLY).
        return None if response.header.request else response.header.request_id

    def on_message(self, connection: MultiplexConnection[Request, Frame], message: Frame) -> None:
        header = message.header
        if not header.event:
            return  # a provider sends no other requests on a consumer connection
        if message.body == HESSIAN_NULL:
            # A heartbeat (event data null); Dubbo answers only these events.
            if header.two_way:
                connection.write(heartbeat_response(header.request_id, header.serialization))
        else:
            # The only other event is READONLY ("R"): the provider is shutting down.
            connection.drain()

    def keepalive(self, request_id: int) -> bytes:
        return heartbeat_request(request_id)


# A connection to a Dubbo provider (made by the pool; rigs build one with the pool's codec).
UpstreamConnection = MultiplexConnection[Request, Frame]


class UpstreamPool(MultiplexPool[Request, Frame]):
    """Connections to Dubbo providers, made on first use and replaced when they die."""

    def __init__(
        self,
        connect_timeout_s: float = 1.0,
        max_body: int = DEFAULT_MAX_BODY,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        connections_per_endpoint: int = 1,
        pick: Pick = "least_pending",
    ) -> None:
        codec = DubboCodec(max_body)

        def codec_for(_kind: Hashable) -> DubboCodec:
            return codec

        super().__init__(
            codec_for,
            connect_timeout_s=connect_timeout_s,
            connections_per_endpoint=connections_per_endpoint,
            pick=pick,
            keepalive_s=heartbeat_s,
        )
        self.max_body = max_body
        self.heartbeat_s = heartbeat_s
