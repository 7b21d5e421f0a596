"""The inbound listener: remote callers → (iptables PREROUTING) → here → the local app.

Each admitted connection's first bytes say what it speaks (agent/runtime/sniff.py): a
protocol in ``inbound.protocols`` (Dubbo, HTTP/1) is served by that protocol's listener
pipeline with the calls marked inbound, so every call to the app gets metrics
(``direction="inbound"``, the caller as its context names it), a server span continuing
the caller's trace, the deadline and the access log; anything else, and a client that
sends nothing within ``sniff_timeout_s`` (server-first protocols), goes through the TCP
relay. All of them share one set of listener stats over a one-endpoint cluster (the
app), a concurrency limit (a connection over it is closed at once, logged and counted)
and the app's health: the agent is ready only while the local app passes its check, so
traffic is not steered to a pod whose app cannot take it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from agent.calls import Calls, Direction
from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import InboundConfig, ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.plugins import PluginKind, load
from agent.runtime.handover import hand_over
from agent.runtime.health import HealthChecker, probe
from agent.runtime.protocols import ListenerContext, ProtocolSupport
from agent.runtime.sniff import sniff
from agent.runtime.tcp_proxy import TcpProtocol

log = logging.getLogger(__name__)

SERVICE = "inbound"


class InboundListener:
    def __init__(
        self, config: InboundConfig, checker: HealthChecker | None, calls: Calls | None = None
    ) -> None:
        assert config.app_port is not None
        self.config = config
        self.checker = checker if config.health.enabled else None
        self.cluster = Cluster(SERVICE, RoundRobin(), OutlierPolicy(enabled=False))
        app = Instance("app", config.app_host, config.app_port, revision=1)
        self.cluster.apply(Reset(1, (app,)))
        service = ServiceConfig(
            name=SERVICE, connect_timeout_s=config.connect_timeout_s, connect_attempts=1
        )
        listener = ListenerConfig(
            name=SERVICE, host=config.host, port=config.port or 1, service=SERVICE
        )
        self.context = ListenerContext(listener, service, self.cluster)
        self.calls = calls or Calls()
        self.over_limit = 0
        # Admitted connections still being sniffed (counted against the limit).
        self.sniffing = 0
        # Connections by the pipeline that took them ("tcp": the relay), and sniffs that
        # ran out of time.
        self.pipelines: dict[str, int] = {}
        self.sniff_timeouts = 0
        self._supports: dict[str, ProtocolSupport] = {}
        self._factories: dict[str, Callable[[], asyncio.Protocol]] = {}
        # Without a check the app is taken as healthy; with one, not until it passes.
        self.app_healthy = self.checker is None
        self.app_detail = "no check passed yet"
        self.server: asyncio.Server | None = None
        self.relay: Callable[[], asyncio.Protocol] = TcpProtocol().outbound_listener(self.context)
        self._last_limit_log = 0.0
        # In a worker process: the port is shared with the other workers (docs/workers.md).
        self.reuse_port = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._accept,
            self.config.host,
            self.config.port,
            reuse_address=True,
            reuse_port=self.reuse_port,
            backlog=1024,
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        name = self.server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def abort_all(self) -> None:
        for transport in list(self.context.connections):
            transport.abort()

    def _accept(self) -> asyncio.Protocol:
        return _Gate(self)

    def pipeline(self, sniffed: str) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for a connection that sniffed as ``sniffed``."""
        protocol = sniffed if sniffed in self.config.protocols else "tcp"
        self.pipelines[protocol] = self.pipelines.get(protocol, 0) + 1
        if protocol == "tcp":
            return self.relay
        factory = self._factories.get(protocol)
        if factory is None:
            plugin = load(PluginKind.PROTOCOL, protocol)
            config = plugin.validate_config({}, f"inbound.{protocol}")
            support = self._supports[protocol] = plugin.factory(config)
            base = self.context
            service = ServiceConfig(
                name=SERVICE,
                protocol=protocol,
                connect_timeout_s=self.config.connect_timeout_s,
                connect_attempts=1,
            )
            listener = ListenerConfig(
                name=SERVICE,
                host=self.config.host,
                port=self.config.port or 1,
                service=SERVICE,
                protocol=protocol,
            )
            context = ListenerContext(
                listener,
                service,
                self.cluster,
                stats=base.stats,
                connections=base.connections,
                idle=base.idle,
                protocol_config=config,
                calls=self.calls,
                direction=Direction.INBOUND,
            )
            factory = self._factories[protocol] = support.outbound_listener(context)
        return factory

    def protocol_supports(self) -> list[ProtocolSupport]:
        """The protocol plugins built for inbound connections so far (drained and closed
        with the agent's own)."""
        return list(self._supports.values())

    async def close(self) -> None:
        for support in self._supports.values():
            try:
                await support.close()
            except Exception:
                log.exception("protocol close failed", extra={"protocol": support.name})

    def refused(self, peer: object) -> None:
        self.over_limit += 1
        now = time.monotonic()
        # One line a second at most: a flood of refusals must not become a flood of logs.
        if now - self._last_limit_log >= 1.0:
            self._last_limit_log = now
            log.warning(
                "inbound connection over the limit: closed",
                extra={
                    "peer": str(peer),
                    "limit": self.config.max_connections,
                    "refused_total": self.over_limit,
                },
            )

    async def run_health_checks(self) -> None:
        """Probe the app until cancelled; thresholds decide when readiness flips."""
        if self.checker is None:
            return
        health = self.config.health
        port = health.port or self.config.app_port
        assert port is not None
        target = Host(Instance("app", self.config.app_host, port))
        streak = 0  # probes in a row that disagree with app_healthy
        while True:
            ok = await probe(self.checker, target, health.timeout_s)
            if ok == self.app_healthy:
                streak = 0
            else:
                streak += 1
                needed = health.healthy_threshold if ok else health.unhealthy_threshold
                if streak >= needed:
                    streak = 0
                    self.app_healthy = ok
                    log.warning(
                        "local app %s",
                        "healthy" if ok else "unhealthy",
                        extra={"app": f"{self.config.app_host}:{port}"},
                    )
            self.app_detail = "check passed" if ok else "check failed"
            await asyncio.sleep(health.interval_s)


class _Gate(asyncio.Protocol):
    """Admits a connection to the relay, or closes it when the limit is reached.

    Decided in ``connection_made``, not in the protocol factory: the loop may accept a
    burst of connections before running any of their ``connection_made``, so only here is
    the count of open connections exact. Admitted connections are handed to the relay
    protocol (``set_protocol``) before any byte arrives, so the gate costs nothing after.
    """

    def __init__(self, inbound: InboundListener) -> None:
        self.inbound = inbound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inbound = self.inbound
        if inbound.context.stats.active + inbound.sniffing >= inbound.config.max_connections:
            inbound.refused(transport.get_extra_info("peername"))
            cast(asyncio.Transport, transport).close()
            return
        # uvloop's transports implement asyncio.Transport without subclassing it.
        admitted = cast(asyncio.Transport, transport)
        if not inbound.config.protocols:
            hand_over(admitted, inbound.relay(), b"", False)
            return
        hand_over(admitted, _Sniffing(inbound), b"", False)


class _Sniffing(asyncio.Protocol):
    """An admitted connection until its first bytes (or their absence) pick its pipeline."""

    def __init__(self, inbound: InboundListener) -> None:
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.eof = False
        self.decided = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inbound.sniffing += 1
        self.inbound.context.track(self.transport)
        self.timer = asyncio.get_running_loop().call_later(
            self.inbound.config.sniff_timeout_s, self._timeout
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        verdict = sniff(self.buffer)
        if verdict is not None:
            self._decide(verdict)

    def eof_received(self) -> bool:
        self.eof = True
        # Whatever came before the EOF is all the client will say: decide on it now.
        return self._decide(sniff(self.buffer) or "tcp")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.decided:
            self._settle()
            if self.transport is not None:
                self.inbound.context.untrack(self.transport)

    def _timeout(self) -> None:
        self.timer = None
        if self.decided or self.transport is None or self.transport.is_closing():
            return
        # A client that sends nothing first (MySQL, SMTP): the server speaks first.
        self.inbound.sniff_timeouts += 1
        self._decide("tcp")

    def _settle(self) -> None:
        self.decided = True
        self.inbound.sniffing -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _decide(self, sniffed: str) -> bool:
        assert self.transport is not None
        self._settle()
        try:
            protocol = self.inbound.pipeline(sniffed)()
        except Exception:
            log.exception("cannot build the inbound pipeline", extra={"protocol": sniffed})
            self.inbound.context.untrack(self.transport)
            self.transport.abort()
            return False
        buffered, self.buffer = self.buffer, b""
        return hand_over(self.transport, protocol, buffered, self.eof)
