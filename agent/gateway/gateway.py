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
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import PickContext, RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import GatewayConfig, GatewayImportConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.errors import UpstreamError
from agent.gateway.link import LinkConnection, Pipe, TcpEnd, link_context
from agent.runtime.upstream import connect_upstream
from agent.tls import RotatingCertificate

log = logging.getLogger(__name__)

Register = Callable[[str, str, str, int, dict[str, str]], Awaitable[object]]


@dataclass
class GatewayStats:
    links_in: int = 0
    tunnels_in: int = 0
    refused_in: int = 0
    tunnels_out: int = 0
    failed_out: int = 0


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

    # -- the link port: peers in -----------------------------------------------------------

    def _link_in(self) -> LinkConnection:
        link = LinkConnection(False, self.config.handshake_timeout_s, self._tunnel_in)
        self.stats.links_in += 1
        self.inbound_links.add(link)
        link.lost.add_done_callback(lambda _: self.inbound_links.discard(link))
        return link

    def _tunnel_in(self, link: LinkConnection, stream_id: int, service: str, source: str) -> None:
        cluster = self.exports.get(service)
        if cluster is None:
            self.stats.refused_in += 1
            log.warning(
                "gateway link stream refused: service %r is not exported",
                service,
                extra={**link.peer(), "source_dc": source},
            )
            link.answer(stream_id, 404)
            return
        pipe = Pipe(link, stream_id)
        link.pipes[stream_id] = pipe
        self._spawn(self._connect_provider(link, pipe, service, cluster))

    async def _connect_provider(
        self, link: LinkConnection, pipe: Pipe, service: str, cluster: Cluster
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
            self.stats.refused_in += 1
            link.pipes.pop(pipe.stream_id, None)
            log.warning("gateway link stream refused: %s", exc, extra={"service": service})
            link.answer(pipe.stream_id, 503)
            return
        if pipe.done:  # the peer reset the stream meanwhile
            if pipe.tcp is not None:
                pipe.tcp.close()
            return
        self.stats.tunnels_in += 1
        link.answer(pipe.stream_id, 200, end_stream=False)
        pipe.open = True
        pipe.flush()

    # -- import ports: this data center's calls out -------------------------------------------

    def _import_end(self, imported: GatewayImportConfig) -> asyncio.Protocol:
        return _ImportEnd(self, imported)

    async def _tunnel_out(self, pipe: Pipe, imported: GatewayImportConfig) -> None:
        cluster = self.peers[imported.dc]
        tried: set[str] = set()
        attempts = min(10, max(2, len(cluster.hosts())))
        errors: list[str] = []
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
            try:
                status = await asyncio.wait_for(
                    asyncio.shield(pipe.response), self.config.handshake_timeout_s
                )
            except TimeoutError:
                status = 0
            if status == 200:
                self.stats.tunnels_out += 1
                pipe.open = True
                pipe.flush()
                return
            errors.append(f"{host.id}: answered {status or 'nothing'}")
            break  # the data center's answer (not exported, no endpoint): no other will differ
        self.stats.failed_out += 1
        log.warning(
            "gateway import connection closed: %s",
            "; ".join(errors) or "no gateway of the data center",
            extra={"service": imported.service, "dc": imported.dc},
        )
        if pipe.tcp is not None:
            pipe.tcp.abort()

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
                lambda: LinkConnection(True, timeout),
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
            server = await loop.create_server(
                lambda imported=imported: self._import_end(imported),  # type: ignore[misc]
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

    async def register_imports(self, register: Register) -> None:
        """Publish each import in its service's registry, labelled with its data center."""
        for imported in self.config.imports:
            host = imported.advertise_host or imported.host
            await register(
                imported.service,
                f"{host}:{imported.port}",
                host,
                imported.port,
                {"dc": imported.dc, "gateway": self.config.dc},
            )

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

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _ImportEnd(TcpEnd):
    """An app's connection to an import port: tunnelled once a link stream is open."""

    def __init__(self, gateway: Gateway, imported: GatewayImportConfig) -> None:
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
