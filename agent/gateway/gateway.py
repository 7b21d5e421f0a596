"""A gateway's run-time parts: the link port, the import ports, and their registrations.

- **Link port** (agent/gateway/link.py): peer gateways' links in; each CONNECT stream
  names an exported service and is relayed to one of its endpoints in this data center,
  chosen by the service's cluster (balancing, health checks, ejections, connect retries).
- **Import ports**: one per service of another data center; each connection becomes a
  CONNECT stream on a link to one of that data center's gateways (round robin over
  ``peers[].addresses``; a gateway that cannot be reached is ejected for a while and the
  next one is tried at once). Links are kept and shared by every connection to the same
  gateway. Each import is registered in the service's registry as an endpoint labelled
  ``dc`` = the remote data center, so this data center's agents balance to it by
  locality (agent/cluster/locality.py): their ``remote`` level.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, cast

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import PickContext, RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import GatewayConfig, GatewayImportFromConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.errors import UpstreamError
from agent.gateway.link import LinePipe, LinkConnection, Pipe, TcpEnd, link_context
from agent.runtime.upstream import connect_upstream
from agent.tls import RotatingCertificate

log = logging.getLogger(__name__)

EXPORTS_PATH = "/v1/exports"


class Publisher(Protocol):
    """Where imports are registered (the agent's registrations)."""

    async def publish_import(
        self,
        registry: str | None,
        service: str,
        instance_id: str,
        host: str,
        port: int,
        metadata: dict[str, str],
        protocol: str,
    ) -> None: ...

    async def withdraw_import(self, service: str, instance_id: str) -> None: ...


def import_id(dc: str, host: str, port: int) -> str:
    """An import's instance id: it names the data center, so that an agent's error about
    the endpoint ("endpoint dc-b-via-gateway:10.1.0.7:16001 failed") says where it led."""
    return f"{dc}-via-gateway:{host}:{port}"


@dataclass(frozen=True)
class ImportTarget:
    """A service of another data center, as one import port relays it."""

    service: str
    dc: str


@dataclass
class DynamicImport:
    """An import learned from a peer's export stream: its port and registration."""

    target: ImportTarget
    server: asyncio.AbstractServer
    instance_id: str


@dataclass
class GatewayStats:
    """Tunnels by (direction, service, the other data center, outcome): ``in`` from a
    peer's data center, ``out`` to one; ``opened``, ``refused`` (not exported, or no
    endpoint), ``failed`` (no gateway of the data center answered). Metrics:
    ``meshagent_gateway_tunnels_total``."""

    links_in: int = 0
    tunnels: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def count(self, direction: str, service: str, dc: str, outcome: str) -> None:
        key = (direction, service, dc, outcome)
        self.tunnels[key] = self.tunnels.get(key, 0) + 1

    def total(self, direction: str, outcome: str) -> int:
        return sum(n for k, n in self.tunnels.items() if k[0] == direction and k[3] == outcome)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        services: Mapping[str, ServiceConfig],
        clusters: Mapping[str, Cluster],
    ) -> None:
        self.config = config
        tls = config.tls
        self.certificate = RotatingCertificate(
            tls.cert_file, tls.key_file, tls.ca_file, what="gateway link"
        )
        link_context(self.certificate.context)
        self.stats = GatewayStats()
        self.services = services
        self.exports: dict[str, Cluster] = {
            name: clusters[name]
            for name in services
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in config.export)
        }
        # One cluster per peer data center: its gateways.
        self.peers: dict[str, Cluster] = {}
        for peer in config.peers:
            cluster = Cluster(
                f"gateway:{peer.dc}",
                RoundRobin(),
                OutlierPolicy(
                    consecutive_failures=1, base_ejection_s=5.0, max_ejection_percent=100
                ),
            )
            instances = []
            for address in peer.addresses:
                host, _, port = address.rpartition(":")
                instances.append(Instance(address, host.strip("[]"), int(port), revision=1))
            cluster.apply(Reset(1, tuple(instances)))
            self.peers[peer.dc] = cluster
        self.server_names = {peer.dc: peer.server_name for peer in config.peers}
        # Links we opened, by peer gateway (host id); shared by every tunnel to it.
        self.links: dict[str, LinkConnection] = {}
        self._connecting: dict[str, asyncio.Future[LinkConnection]] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.inbound_links: set[LinkConnection] = set()
        self.import_connections: set[asyncio.Transport] = set()
        self.link_port = config.port
        self._tasks: set[asyncio.Task[None]] = set()
        self.publisher: Publisher | None = None
        # The export stream: its subscribers (streams of peers' links) and its last line.
        self.export_streams: list[Pipe] = []
        self.export_line = b""
        self.export_revision = 0
        for cluster in self.exports.values():
            cluster.listeners.append(self._exports_changed)
        # Imports learned from peers' export streams, by data center then service.
        self.dynamic: dict[str, dict[str, DynamicImport]] = {}
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._import_lock = asyncio.Lock()  # one change of the imports at a time

    # -- the link port: peers in -----------------------------------------------------------

    def _link_in(self) -> LinkConnection:
        config = self.config
        link = LinkConnection(
            False, config.handshake_timeout_s, self._tunnel_in, self._get_in, config.link_ping_s
        )
        self.stats.links_in += 1
        self.inbound_links.add(link)
        link.lost.add_done_callback(lambda _: self.inbound_links.discard(link))
        return link

    def _tunnel_in(self, link: LinkConnection, stream_id: int, service: str, source: str) -> None:
        cluster = self.exports.get(service)
        if cluster is None:
            self.stats.count("in", service[:128], source[:128], "refused")
            log.warning(
                "gateway link stream refused: service %r is not exported",
                service,
                extra={**link.peer(), "source_dc": source},
            )
            link.answer(stream_id, 404)
            return
        pipe = Pipe(link, stream_id)
        link.pipes[stream_id] = pipe
        self._spawn(self._connect_provider(link, pipe, service, source[:128], cluster))

    async def _connect_provider(
        self, link: LinkConnection, pipe: Pipe, service: str, source: str, cluster: Cluster
    ) -> None:
        config = self.services[service]
        try:
            await connect_upstream(
                cluster,
                lambda _host: TcpEnd(pipe),
                config.connect_timeout_s,
                config.connect_attempts,
            )
        except UpstreamError as exc:
            self.stats.count("in", service, source, "refused")
            link.pipes.pop(pipe.stream_id, None)
            log.warning("gateway link stream refused: %s", exc, extra={"service": service})
            link.answer(pipe.stream_id, 503)
            return
        if pipe.done or pipe.response.done():  # the peer reset the stream meanwhile
            if pipe.tcp is not None:
                pipe.tcp.close()
            return
        self.stats.count("in", service, source, "opened")
        link.answer(pipe.stream_id, 200, end_stream=False)
        pipe.open = True
        pipe.flush()

    # -- import ports: this data center's calls out -------------------------------------------

    # -- the export stream: what this data center offers, as it changes ----------------------

    def exported_now(self) -> list[dict[str, str]]:
        """The exported services that have an endpoint available now (a service with none
        is withdrawn from the peers: their agents keep their calls elsewhere)."""
        return [
            {"name": name, "protocol": self.services[name].protocol}
            for name, cluster in sorted(self.exports.items())
            if cluster.available_count() > 0
        ]

    def _export_document(self) -> bytes:
        services = self.exported_now()
        line = json.dumps({"dc": self.config.dc, "services": services}, sort_keys=True)
        return line.encode() + b"\n"

    def _exports_changed(self, _cluster: Cluster) -> None:
        line = self._export_document()
        if line == self.export_line:
            return
        self.export_line = line
        self.export_revision += 1
        live = [pipe for pipe in self.export_streams if not pipe.done]
        self.export_streams = live
        for pipe in live:
            pipe.tcp_data(line)

    def _get_in(self, link: LinkConnection, stream_id: int, path: str) -> None:
        if path != EXPORTS_PATH:
            link.answer(stream_id, 404)
            return
        link.answer(stream_id, 200, end_stream=False)
        pipe = Pipe(link, stream_id)
        pipe.open = True
        pipe.stream_eof = True  # the GET carried no body
        link.pipes[stream_id] = pipe
        self.export_streams.append(pipe)
        if not self.export_line:
            self.export_line = self._export_document()
        pipe.tcp_data(self.export_line)
        log.info("export stream opened", extra=link.peer())

    # -- importing what peers export ----------------------------------------------------------

    async def _watch_exports(self, source: GatewayImportFromConfig) -> None:
        """Follow one data center's export stream for good: through any of its gateways,
        again after a pause when it ends; its imports stay ``grace_s`` while none answers."""
        cluster = self.peers[source.dc]
        delay = 0.2
        while True:
            host = cluster.choose()
            if host is not None:
                try:
                    link = await self._link_to(host, source.dc)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    log.warning(
                        "export stream: peer gateway unreachable",
                        extra={"dc": source.dc, "gateway": host.id, "error": str(exc)},
                    )
                    cluster.report_failure(host, connect=True)
                else:
                    pipe = LinePipe(lambda line: self._on_export_line(source, line))
                    link.open_get(pipe, EXPORTS_PATH, self.config.dc)
                    if await self._answer(pipe) == 200:
                        delay = 0.2
                        self._cancel_grace(source.dc)
                        await pipe.ended
                        log.warning(
                            "export stream ended", extra={"dc": source.dc, "gateway": host.id}
                        )
            self._start_grace(source)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_export_line(self, source: GatewayImportFromConfig, line: bytes) -> None:
        try:
            document = json.loads(line)
            offered = {str(entry["name"]): str(entry["protocol"]) for entry in document["services"]}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "export stream: a bad line ignored", extra={"dc": source.dc, "error": str(exc)}
            )
            return
        wanted = {
            name: protocol
            for name, protocol in offered.items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in source.services)
        }
        self._spawn(self._apply_imports(source, wanted))

    async def _apply_imports(self, source: GatewayImportFromConfig, wanted: dict[str, str]) -> None:
        async with self._import_lock:
            await self._apply_imports_now(source, wanted)

    async def _apply_imports_now(
        self, source: GatewayImportFromConfig, wanted: dict[str, str]
    ) -> None:
        current = self.dynamic.setdefault(source.dc, {})
        for name in sorted(current.keys() - wanted.keys()):
            await self._withdraw(current.pop(name))
        for name, protocol in sorted(wanted.items()):
            if name in current:
                continue
            target = ImportTarget(name, source.dc)
            server = await asyncio.get_running_loop().create_server(
                lambda target=target: _ImportEnd(self, target),  # type: ignore[misc]
                source.host,
                0,
                backlog=1024,
            )
            port = server.sockets[0].getsockname()[1]
            host = source.advertise_host or source.host
            entry = DynamicImport(target, server, import_id(source.dc, host, port))
            current[name] = entry
            if self.publisher is not None:
                await self.publisher.publish_import(
                    source.registry,
                    name,
                    entry.instance_id,
                    host,
                    port,
                    {"dc": source.dc, "gateway": self.config.dc},
                    protocol,
                )
            log.info("service imported", extra={"service": name, "dc": source.dc, "port": port})

    async def _withdraw(self, entry: DynamicImport) -> None:
        entry.server.close()
        if self.publisher is not None:
            await self.publisher.withdraw_import(entry.target.service, entry.instance_id)
        log.info(
            "service import withdrawn",
            extra={"service": entry.target.service, "dc": entry.target.dc},
        )

    def _start_grace(self, source: GatewayImportFromConfig) -> None:
        if source.dc in self._grace or not self.dynamic.get(source.dc):
            return

        def expired() -> None:
            self._grace.pop(source.dc, None)
            log.warning(
                "no gateway of the data center answered for %gs: its imports withdrawn",
                source.grace_s,
                extra={"dc": source.dc},
            )
            self._spawn(self._apply_imports(source, {}))

        self._grace[source.dc] = asyncio.get_running_loop().call_later(source.grace_s, expired)

    def _cancel_grace(self, dc: str) -> None:
        timer = self._grace.pop(dc, None)
        if timer is not None:
            timer.cancel()

    async def _tunnel_out(self, pipe: Pipe, imported: ImportTarget) -> None:
        cluster = self.peers[imported.dc]
        tried: set[str] = set()
        attempts = min(10, max(2, len(cluster.hosts())))
        errors: list[str] = []
        refused = False
        for _ in range(attempts):
            host = cluster.choose(PickContext(exclude=frozenset(tried)))
            if host is None:
                break
            tried.add(host.id)
            try:
                link = await self._link_to(host, imported.dc)
            except (OSError, TimeoutError, ConnectionError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                errors.append(f"{host.id}: {reason}")
                log.warning(
                    "gateway link to peer failed",
                    extra={"dc": imported.dc, "gateway": host.id, "error": reason},
                )
                cluster.report_failure(host, connect=True)
                continue
            cluster.report_success(host)
            if pipe.tcp is None or pipe.tcp.is_closing():
                return  # the app left meanwhile
            link.open_tunnel(pipe, imported.service, self.config.dc)
            status = await self._answer(pipe)
            if status == 200:
                self.stats.count("out", imported.service, imported.dc, "opened")
                pipe.open = True
                pipe.flush()
                return
            if status:
                errors.append(f"{host.id}: answered {status}")
                refused = True
                break  # the data center's answer (not exported, no endpoint): no other differs
            # No answer: the link died or hangs (its peer answers a CONNECT within its own
            # connect timeouts); the next connection gets a new link, and this one is
            # still the app's to tunnel through another gateway.
            errors.append(f"{host.id}: no answer")
            cluster.report_failure(host, connect=True)
            if pipe.stream_id:
                pipe.detach()
            if not link.closed and link.transport is not None:
                link.transport.abort()
        self.stats.count("out", imported.service, imported.dc, "refused" if refused else "failed")
        log.warning(
            "gateway import connection closed: %s",
            "; ".join(errors) or "no gateway of the data center",
            extra={"service": imported.service, "dc": imported.dc},
        )
        if pipe.tcp is not None:
            pipe.tcp.abort()

    async def _answer(self, pipe: Pipe) -> int:
        """The peer's :status for a stream just opened; 0 when none came in time."""
        try:
            return await asyncio.wait_for(
                asyncio.shield(pipe.response), self.config.handshake_timeout_s
            )
        except TimeoutError:
            return 0

    async def _link_to(self, host: Host, dc: str) -> LinkConnection:
        link = self.links.get(host.id)
        if link is not None and link.usable():
            return link
        pending = self._connecting.get(host.id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._connecting[host.id] = pending
            try:
                link = await self._open_link(host, dc)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters get it, nobody else must
                raise
            finally:
                del self._connecting[host.id]
            pending.set_result(link)
            return link
        return await asyncio.shield(pending)

    async def _open_link(self, host: Host, dc: str) -> LinkConnection:
        timeout = self.config.handshake_timeout_s
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, link = await loop.create_connection(
                lambda: LinkConnection(True, timeout, ping_interval_s=self.config.link_ping_s),
                host.instance.host,
                host.instance.port,
                ssl=self.certificate.client_context(),
                server_hostname=self.server_names[dc],
            )
            await link.ready
        self.links[host.id] = link
        log.info("gateway link up", extra={"dc": dc, "gateway": host.id})
        return link

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        link_server = await loop.create_server(
            self._link_in,
            config.host,
            config.port,
            ssl=self.certificate.context,
            ssl_handshake_timeout=config.handshake_timeout_s,
            reuse_address=True,
            backlog=1024,
        )
        self.servers.append(link_server)
        self.link_port = link_server.sockets[0].getsockname()[1]
        for imported in config.imports:
            target = ImportTarget(imported.service, imported.dc)
            server = await loop.create_server(
                lambda target=target: _ImportEnd(self, target),  # type: ignore[misc]
                imported.host,
                imported.port,
                reuse_address=True,
                backlog=1024,
            )
            self.servers.append(server)
        log.info(
            "gateway up",
            extra={
                "dc": config.dc,
                "link": f"{config.host}:{self.link_port}",
                "exports": ",".join(sorted(self.exports)) or "none",
                "imports": len(config.imports),
            },
        )

    async def register_imports(self, publisher: Publisher) -> None:
        """Publish each configured import in its service's registry, labelled with its data
        center; start following the peers' export streams for the others."""
        self.publisher = publisher
        for imported in self.config.imports:
            host = imported.advertise_host or imported.host
            await publisher.publish_import(
                None,
                imported.service,
                import_id(imported.dc, host, imported.port),
                host,
                imported.port,
                {"dc": imported.dc, "gateway": self.config.dc},
                self.services[imported.service].protocol,
            )
        for source in self.config.import_from:
            self._spawn(self._watch_exports(source))

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()

    def connections(self) -> int:
        return len(self.import_connections)

    async def close(self) -> None:
        """Every link and import connection closed (after the drain: what is still open
        is cut), and waited for."""
        self.stop_accepting()
        links = [*self.links.values(), *self.inbound_links]
        for link in links:
            if link.transport is not None:
                link.transport.close()
        for connection in list(self.import_connections):
            connection.abort()
        if links:
            await asyncio.wait(
                [link.lost for link in links], timeout=self.config.handshake_timeout_s
            )
        for task in list(self._tasks):
            task.cancel()
        for timer in self._grace.values():
            timer.cancel()
        for imports in self.dynamic.values():
            for entry in imports.values():
                entry.server.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _ImportEnd(TcpEnd):
    """An app's connection to an import port: tunnelled once a link stream is open."""

    def __init__(self, gateway: Gateway, imported: ImportTarget) -> None:
        super().__init__(Pipe())
        self.gateway = gateway
        self.imported = imported

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        self.gateway.import_connections.add(tcp)
        super().connection_made(tcp)
        self.gateway._spawn(self.gateway._tunnel_out(self.pipe, self.imported))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe.tcp is not None:
            self.gateway.import_connections.discard(self.pipe.tcp)
        super().connection_lost(exc)
