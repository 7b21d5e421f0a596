"""The capture listener: where iptables REDIRECTs the app's outbound TCP (docs/capture.md).

Per accepted connection: read the original destination (``SO_ORIGINAL_DST``), refuse a
loop (a connection that was never redirected, i.e. dialled the capture port itself), map
the destination to a service (a configured virtual address, else a known endpoint
address of a cluster, else passthrough to the destination itself), sniff the protocol from
the first bytes where it can change the outcome, and hand the connection to the pipeline:
the protocol plugin's own outbound listener protocol, built from
``ProtocolSupport.outbound_listener(context)`` and given the transport and the bytes read
so far, exactly as if it had accepted the connection itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from agent.addresses import normalise_ip, parse_address
from agent.calls import Calls
from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import CaptureConfig, ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.plugins import PluginKind, load
from agent.runtime.handover import hand_over
from agent.runtime.protocols import ListenerContext, ListenerStats, ProtocolSupport
from agent.runtime.sniff import PLUGINS_FOR, sniff
from agent.runtime.sniff import pipeline_protocol as choose_pipeline

log = logging.getLogger(__name__)

# linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h; not in the socket module.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)

PASSTHROUGH = "passthrough"
# Passthrough destinations whose cluster is kept for reuse; older ones are rebuilt.
PASSTHROUGH_CACHE = 1024
# Protocols that some plugin can carry: only services speaking one of them are sniffed.
SNIFFABLE = frozenset().union(*PLUGINS_FOR.values())

Address = tuple[str, int]


def original_destination(sock: Any) -> Address:
    """The destination the client dialled before iptables rewrote it; OSError if none
    (the connection was not NATed and conntrack has no entry for it)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        # sockaddr_in6: family, port (network order), flowinfo, 16-byte address, scope.
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    # sockaddr_in: family, port (network order), 4-byte address, padding.
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


@dataclass
class CaptureStats:
    """Counters of the capture step itself (the relays count on their ListenerStats)."""

    accepted: int = 0
    loops: int = 0
    # No original destination, or passthrough disabled for an unknown destination.
    unroutable: int = 0
    sniff_timeouts: int = 0
    # Connections by sniffed protocol ("tcp" also for those not sniffed).
    protocols: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    service: str | None  # None: passthrough to the original destination
    destination: Address


class CaptureListener:
    def __init__(
        self,
        config: CaptureConfig,
        services: dict[str, ServiceConfig],
        clusters: dict[str, Cluster],
        calls: Calls | None = None,
    ) -> None:
        self.config = config
        # The agent's call hub: captured connections' calls are observed and governed as
        # any listener's.
        self.calls = calls or Calls()
        self.services = services
        self.clusters = clusters
        self.stats = CaptureStats()
        # Relay stats by service name (and PASSTHROUGH), as the metrics show them.
        self.relay_stats: dict[str, ListenerStats] = {}
        # Shared by every context, so that a drain sees all captured connections.
        self.connections: set[asyncio.Transport] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.servers: list[asyncio.Server] = []
        self.port = config.port
        # In a worker process: the port is shared with the other workers (docs/workers.md).
        self.reuse_port = False
        self._virtual: dict[tuple[str, int | None], str] = {}
        for entry in config.services:
            for text in entry.addresses:
                self._virtual.setdefault(parse_address(text), entry.service)
        self._endpoints: dict[Address, str] | None = None
        for cluster in clusters.values():
            cluster.listeners.append(self._endpoints_changed)
        self._supports: dict[str, ProtocolSupport] = {}
        self._factories: dict[tuple[str, str], Callable[[], asyncio.Protocol]] = {}
        self._passthrough: OrderedDict[Address, Callable[[], asyncio.Protocol]] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        hosts = [self.config.host] + (["::1"] if self.config.ipv6 else [])
        for host in hosts:
            server = await loop.create_server(
                lambda: _Sniffing(self),
                host,
                self.port,
                reuse_address=True,
                reuse_port=self.reuse_port,
                backlog=1024,
            )
            self.servers.append(server)
            # Port 0 (tests): every further address listens on the port the first one got.
            self.port = int(server.sockets[0].getsockname()[1])

    @property
    def addresses(self) -> list[Address]:
        found = []
        for server in self.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                found.append((str(name[0]), int(name[1])))
        return found

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()

    def abort_all(self) -> None:
        for transport in list(self.connections):
            transport.abort()

    async def close(self) -> None:
        self.stop_accepting()
        for support in self._supports.values():
            try:
                await support.close()
            except Exception:
                log.exception("protocol close failed", extra={"protocol": support.name})

    def track(self, transport: asyncio.Transport) -> None:
        self.connections.add(transport)
        self.idle.clear()

    def untrack(self, transport: asyncio.Transport) -> None:
        self.connections.discard(transport)
        if not self.connections:
            self.idle.set()

    # -- routing -----------------------------------------------------------------------

    def is_loop(self, destination: Address, local: Address) -> bool:
        """A connection to the capture port itself: never redirected (conntrack reports
        the address it was accepted on), or dialled at a loopback capture port."""
        if (normalise_ip(destination[0]), destination[1]) == (normalise_ip(local[0]), local[1]):
            return True
        try:
            loopback = ipaddress.ip_address(destination[0]).is_loopback
        except ValueError:
            return False
        return loopback and destination[1] == self.port

    def _endpoints_changed(self, _cluster: Cluster) -> None:
        self._endpoints = None

    def _endpoint_index(self) -> dict[Address, str]:
        if self._endpoints is None:
            index: dict[Address, str] = {}
            for name, cluster in self.clusters.items():
                for host in cluster.hosts():
                    ip = normalise_ip(host.instance.host)
                    if ip is not None:
                        # Configuration order decides when two services share an endpoint.
                        index.setdefault((ip, host.instance.port), name)
            self._endpoints = index
        return self._endpoints

    def route(self, destination: Address) -> Route | None:
        ip, port = normalise_ip(destination[0]) or destination[0], destination[1]
        service = (
            self._virtual.get((ip, port))
            or self._virtual.get((ip, None))
            or self._endpoint_index().get((ip, port))
        )
        if service is not None:
            return Route(service, (ip, port))
        return Route(None, (ip, port)) if self.config.passthrough else None

    def needs_sniff(self, route: Route) -> bool:
        """Sniff only where the bytes can change the pipeline: a service whose protocol a
        plugin carries, on a port not declared opaque. Everything else is raw TCP anyway,
        and waiting for bytes would only delay server-first protocols."""
        if route.service is None or route.destination[1] in self.config.opaque_ports:
            return False
        return self.services[route.service].protocol in SNIFFABLE

    # -- pipelines ---------------------------------------------------------------------

    def protocol_supports(self) -> list[ProtocolSupport]:
        """The protocol plugins built for captured connections so far."""
        return list(self._supports.values())

    def _support(self, protocol: str) -> tuple[ProtocolSupport, Any]:
        plugin = load(PluginKind.PROTOCOL, protocol)
        protocol_config = plugin.validate_config({}, f"capture.{protocol}")
        support = self._supports.get(protocol)
        if support is None:
            support = plugin.factory(protocol_config)
            self._supports[protocol] = support
        return support, protocol_config

    def _context(
        self, name: str, service: ServiceConfig, cluster: Cluster, protocol: str, config: Any
    ) -> ListenerContext:
        stats = self.relay_stats.setdefault(name, ListenerStats())
        listener = ListenerConfig(
            name="capture", host=self.config.host, port=self.port, service=name, protocol=protocol
        )
        return ListenerContext(
            listener,
            service,
            cluster,
            stats=stats,
            connections=self.connections,
            idle=self.idle,
            protocol_config=config,
            calls=self.calls,
        )

    def pipeline(self, route: Route, sniffed: str) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for a routed connection."""
        if route.service is None:
            return self._passthrough_factory(route.destination)
        service = self.services[route.service]
        protocol = choose_pipeline(sniffed, service.protocol)
        key = (route.service, protocol)
        factory = self._factories.get(key)
        if factory is None:
            support, config = self._support(protocol)
            context = self._context(
                route.service, service, self.clusters[route.service], protocol, config
            )
            factory = support.outbound_listener(context)
            self._factories[key] = factory
        return factory

    def _passthrough_factory(self, destination: Address) -> Callable[[], asyncio.Protocol]:
        factory = self._passthrough.get(destination)
        if factory is not None:
            self._passthrough.move_to_end(destination)
            return factory
        host, port = destination
        # One static endpoint, no ejection: the app asked for this address and no other.
        cluster = Cluster(
            f"{PASSTHROUGH}:{host}:{port}", RoundRobin(), OutlierPolicy(enabled=False)
        )
        cluster.apply(Reset(1, (Instance(f"{host}:{port}", host, port, revision=1),)))
        service = ServiceConfig(name=PASSTHROUGH, connect_attempts=1)
        support, config = self._support("tcp")
        factory = support.outbound_listener(
            self._context(PASSTHROUGH, service, cluster, "tcp", config)
        )
        self._passthrough[destination] = factory
        if len(self._passthrough) > PASSTHROUGH_CACHE:
            self._passthrough.popitem(last=False)
        return factory


class _Sniffing(asyncio.Protocol):
    """A captured connection until its pipeline takes it over."""

    def __init__(self, capture: CaptureListener) -> None:
        self.capture = capture
        self.transport: asyncio.Transport | None = None
        self.route: Route | None = None
        self.buffer = b""
        self.eof = False
        self.handed_over = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        capture = self.capture
        capture.stats.accepted += 1
        capture.track(self.transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        try:
            destination = original_destination(transport.get_extra_info("socket"))
        except OSError as exc:
            capture.stats.unroutable += 1
            log.warning(
                "captured connection without an original destination: closing",
                extra={"peer": _text(peer), "error": exc.strerror or str(exc)},
            )
            self.transport.close()
            return
        if capture.is_loop(destination, (str(local[0]), int(local[1]))):
            capture.stats.loops += 1
            log.warning(
                "connection to the capture port itself (not redirected): closing",
                extra={"peer": _text(peer), "destination": _text(destination)},
            )
            self.transport.close()
            return
        self.route = capture.route(destination)
        if self.route is None:
            capture.stats.unroutable += 1
            log.warning(
                "captured connection to an unknown destination, passthrough disabled: closing",
                extra={"peer": _text(peer), "destination": _text(destination)},
            )
            self.transport.close()
            return
        if not capture.needs_sniff(self.route):
            self._hand_over("tcp")
            return
        self.timer = asyncio.get_running_loop().call_later(
            capture.config.sniff_timeout_s, self._sniff_timeout
        )

    def _sniff_timeout(self) -> None:
        self.timer = None
        if self.handed_over or self.transport is None or self.transport.is_closing():
            return
        self.capture.stats.sniff_timeouts += 1
        # A client that sends nothing first (MySQL, SMTP): the server speaks first.
        self._hand_over("tcp")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        verdict = sniff(self.buffer)
        if verdict is not None:
            self._hand_over(verdict)

    def eof_received(self) -> bool:
        self.eof = True
        if self.route is None or self.handed_over:
            return False
        # Whatever came before the EOF is all the client will say: decide on it now.
        return self._hand_over(sniff(self.buffer) or "tcp")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.capture.untrack(self.transport)

    def _hand_over(self, sniffed: str) -> bool:
        """Give the transport, the bytes read and a pending EOF to the pipeline; returns
        what the pipeline's ``eof_received`` said (True: keep the half-open transport)."""
        assert self.transport is not None and self.route is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.handed_over = True
        counts = self.capture.stats.protocols
        counts[sniffed] = counts.get(sniffed, 0) + 1
        try:
            protocol = self.capture.pipeline(self.route, sniffed)()
        except Exception:
            log.exception(
                "cannot build the pipeline for a captured connection",
                extra={"service": self.route.service, "protocol": sniffed},
            )
            self.transport.abort()
            return False
        buffered, self.buffer = self.buffer, b""
        return hand_over(self.transport, protocol, buffered, self.eof)


def _text(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)
