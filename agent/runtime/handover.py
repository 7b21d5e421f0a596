"""Handing an accepted connection, read so far, to the protocol pipeline that takes it.

The capture listener and the inbound listener both read a connection's first bytes to
decide which pipeline serves it (agent/runtime/sniff.py); the pipeline then gets the
transport as if it had accepted it, the bytes already read, and an EOF already seen.
"""

from __future__ import annotations

import asyncio


def hand_over(
    transport: asyncio.Transport, protocol: asyncio.Protocol, buffered: bytes, eof: bool
) -> bool:
    """Make ``protocol`` the transport's protocol; returns what its ``eof_received`` said
    when the EOF came already (True: keep the half-open transport), else True."""
    transport.set_protocol(protocol)
    # From here on the pipeline owns the connection, its tracking and its close.
    protocol.connection_made(transport)
    if buffered:
        protocol.data_received(buffered)
    if eof:
        return bool(protocol.eof_received())
    return True
