"""A gateway's link port: peer gateways' connections in, relayed to this data center.

Mutual TLS (agent/tls.py: certificates rotate without a restart) with the peers' CA: a
peer without a certificate of that CA never gets past the handshake, and the refusal is
logged (the handshake runs inside the event loop's TLS protocol, so its failure is seen
through the context's ``sslobject_class``). Each connection then names its service in the
preamble (agent/gateway/preamble.py); only exported services are served, each through its
own cluster of this data center's endpoints (the gateway's clusters never include other
data centers: a gateway does not forward to a gateway, so calls cannot loop), by the same
relay as a TCP listener (agent/runtime/tcp_proxy.py). A connection that does not send its
preamble within ``handshake_timeout_s`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any, cast

from agent.gateway.preamble import PreambleError, parse
from agent.runtime.protocols import ListenerContext
from agent.runtime.tcp_proxy import relay

log = logging.getLogger(__name__)


class _RefusalLogged(ssl.SSLObject):
    """Logs a failed handshake (a peer without a certificate of the CA, say): the loop's
    TLS protocol reports it only in debug mode."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            log.warning("gateway link refused: TLS handshake failed", extra={"error": str(exc)})
            raise


def link_context(context: ssl.SSLContext) -> ssl.SSLContext:
    context.sslobject_class = _RefusalLogged
    return context


class LinkStats:
    def __init__(self) -> None:
        self.accepted = 0
        self.refused = 0


class LinkHandshake(asyncio.Protocol):
    """Reads the preamble of one link connection, then hands the connection to the relay
    of the service it names."""

    def __init__(
        self, exports: Mapping[str, ListenerContext], timeout_s: float, stats: LinkStats
    ) -> None:
        self.exports = exports
        self.timeout_s = timeout_s
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._too_slow)

    def _peer(self) -> dict[str, Any]:
        assert self.transport is not None
        cert = self.transport.get_extra_info("peercert") or {}
        subject = dict(pair[0] for pair in cert.get("subject", ()))
        return {
            "peer": str(self.transport.get_extra_info("peername")),
            "cn": subject.get("commonName", ""),
        }

    def _refuse(self, reason: str) -> None:
        assert self.transport is not None
        self.stats.refused += 1
        log.warning("gateway link connection refused: %s", reason, extra=self._peer())
        self.transport.abort()

    def _too_slow(self) -> None:
        self._refuse(f"no link line within {self.timeout_s:g}s")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            parsed = parse(self.buffer)
        except PreambleError as exc:
            self._stop_timer()
            self._refuse(str(exc))
            return
        if parsed is None:
            return
        self._stop_timer()
        preamble, rest = parsed
        context = self.exports.get(preamble.service)
        if context is None:
            self._refuse(f"service {preamble.service!r} is not exported")
            return
        assert self.transport is not None
        self.stats.accepted += 1
        protocol = relay(context)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if rest:
            protocol.data_received(rest)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
