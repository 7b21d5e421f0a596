"""A gateway's run-time parts: the link port, the import ports, and their registrations.

- **Link** (agent/gateway/link.py): peers' connections in, over mutual TLS; each names an
  exported service and is relayed to that service's endpoints in this data center.
- **Imports**: one port per service of another data center; each connection is relayed to
  one of that data center's gateways (round robin over ``peers[].addresses``, a gateway
  that does not answer is tried no more for a while and the next one is tried at once),
  over mutual TLS with the preamble naming the service. Each import is registered in the
  service's registry as an endpoint labelled ``dc`` = the remote data center, so this data
  center's agents balance to it by locality (agent/cluster/locality.py): it is their
  ``remote`` level, used when their own levels cannot take the traffic.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Mapping

from agent.calls import Calls
from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.cluster.outlier import OutlierPolicy
from agent.config import GatewayConfig, ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.gateway.link import LinkHandshake, LinkStats, link_context
from agent.gateway.preamble import encode
from agent.runtime.admission import ConnectionBudget
from agent.runtime.protocols import ListenerContext
from agent.runtime.tcp_proxy import relay
from agent.runtime.upstream import UpstreamTls
from agent.tls import RotatingCertificate

log = logging.getLogger(__name__)

Register = Callable[[str, str, str, int, dict[str, str]], Awaitable[object]]


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        services: Mapping[str, ServiceConfig],
        clusters: Mapping[str, Cluster],
        calls: Calls,
        budget: ConnectionBudget,
    ) -> None:
        self.config = config
        tls = config.tls
        self.certificate = RotatingCertificate(
            tls.cert_file, tls.key_file, tls.ca_file, what="gateway link"
        )
        link_context(self.certificate.context)
        self.link_stats = LinkStats()
        self.exports: dict[str, ListenerContext] = {}
        for name in services:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in config.export):
                self.exports[name] = ListenerContext(
                    ListenerConfig(
                        name=f"gateway-link:{name}",
                        host=config.host,
                        port=config.port or 1,
                        service=name,
                        protocol="tcp",
                    ),
                    services[name],
                    clusters[name],
                    calls=calls,
                    budget=budget,
                )
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
        server_names = {peer.dc: peer.server_name for peer in config.peers}
        self.imports: list[ListenerContext] = []
        for imported in config.imports:
            attempts = min(10, max(2, len(self.peers[imported.dc].hosts())))
            self.imports.append(
                ListenerContext(
                    ListenerConfig(
                        name=f"gateway-import:{imported.service}@{imported.dc}",
                        host=imported.host,
                        port=imported.port,
                        service=imported.service,
                        protocol="tcp",
                    ),
                    ServiceConfig(name=imported.service, connect_attempts=attempts),
                    self.peers[imported.dc],
                    calls=calls,
                    budget=budget,
                    upstream_tls=UpstreamTls(
                        self.certificate.client_context,
                        server_names[imported.dc],
                        encode(imported.service, config.dc),
                    ),
                )
            )
        self.servers: list[asyncio.AbstractServer] = []
        self.link_port = config.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        link = await loop.create_server(
            lambda: LinkHandshake(self.exports, config.handshake_timeout_s, self.link_stats),
            config.host,
            config.port,
            ssl=self.certificate.context,
            ssl_handshake_timeout=config.handshake_timeout_s,
            reuse_address=True,
            backlog=1024,
        )
        self.servers.append(link)
        self.link_port = link.sockets[0].getsockname()[1]
        for context in self.imports:
            listener = context.listener
            server = await loop.create_server(
                lambda context=context: relay(context),  # type: ignore[misc]
                listener.host,
                listener.port,
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
                "imports": len(self.imports),
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
        return sum(len(c.connections) for c in (*self.exports.values(), *self.imports))
