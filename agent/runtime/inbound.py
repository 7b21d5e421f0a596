"""The inbound listener: remote callers → (iptables PREROUTING) → here → the local app.

A TCP relay to the app (the same relay as outbound listeners, over a one-endpoint
cluster, so its counters are the usual listener stats), a concurrency limit (a connection
over it is closed at once, logged and counted) and the app's health: the agent is ready
only while the local app passes its check, so traffic is not steered to a pod whose app
cannot take it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import InboundConfig, ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.runtime.health import HealthChecker, probe
from agent.runtime.protocols import ListenerContext
from agent.runtime.tcp_proxy import TcpProtocol

log = logging.getLogger(__name__)

SERVICE = "inbound"


class InboundListener:
    def __init__(self, config: InboundConfig, checker: HealthChecker | None) -> None:
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
        self.over_limit = 0
        # Without a check the app is taken as healthy; with one, not until it passes.
        self.app_healthy = self.checker is None
        self.app_detail = "no check passed yet"
        self.server: asyncio.Server | None = None
        self.relay: Callable[[], asyncio.Protocol] = TcpProtocol().outbound_listener(self.context)
        self._last_limit_log = 0.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._accept, self.config.host, self.config.port, reuse_address=True, backlog=1024
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
        if inbound.context.stats.active >= inbound.config.max_connections:
            inbound.refused(transport.get_extra_info("peername"))
            cast(asyncio.Transport, transport).close()
            return
        relay = inbound.relay()
        transport.set_protocol(relay)
        relay.connection_made(transport)
