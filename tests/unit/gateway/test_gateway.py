from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import GatewayConfig, GatewayImportFromConfig, ServiceConfig, parse_config
from agent.discovery.types import Instance, Reset
from agent.errors import ConfigError
from agent.gateway.gateway import Gateway
from agent.gateway.link import LinkConnection
from tests.fixtures.net import async_wait_until
from tests.fixtures.processes import free_port
from tests.fixtures.tls import issue, make_ca


def gateway_config(tmp_path: Path, **more: Any) -> dict[str, Any]:
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    cert, key, _ = issue(ca, tmp_path / "a", hosts=("meshagent-gateway",))
    tls = {"cert_file": str(cert), "key_file": str(key), "ca_file": str(tmp_path / "ca.pem")}
    return {"dc": "a", "port": 0, "tls": tls, **more}


def test_exports_by_pattern_and_imports_through_the_peers(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate(
        gateway_config(
            tmp_path,
            export=["orders*"],
            peers=[{"dc": "b", "addresses": ["10.0.0.1:15443", "10.0.0.2:15443"]}],
            imports=[{"service": "stock", "dc": "b", "port": 16001}],
        )
    )
    names = ("orders", "orders.v2", "stock", "secret")
    services = {name: ServiceConfig(name=name) for name in names}
    clusters = {name: Cluster(name, RoundRobin()) for name in names}
    gateway = Gateway(config, services, clusters)
    assert sorted(gateway.exports) == ["orders", "orders.v2"]
    assert gateway.exports["orders"] is clusters["orders"]
    peers = gateway.peers["b"]
    assert sorted(h.id for h in peers.hosts()) == ["10.0.0.1:15443", "10.0.0.2:15443"]
    assert gateway.server_names == {"b": "meshagent-gateway"}


async def test_imports_are_registered_labelled_with_their_data_center(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate(
        gateway_config(
            tmp_path,
            peers=[{"dc": "b", "addresses": ["10.0.0.1:15443"]}],
            imports=[{"service": "stock", "dc": "b", "port": 16001, "advertise_host": "10.1.0.9"}],
        )
    )
    services = {"stock": ServiceConfig(name="stock")}
    gateway = Gateway(config, services, {"stock": Cluster("stock", RoundRobin())})
    recorded = Recorded()
    await gateway.register_imports(recorded)
    assert recorded.published == {
        "stock": (
            None,
            "b-via-gateway:10.1.0.9:16001",
            "10.1.0.9",
            16001,
            {"dc": "b", "gateway": "a"},
            "tcp",
        )
    }


def test_the_config_is_checked_whole(tmp_path: Path) -> None:
    bad = gateway_config(
        tmp_path,
        export=["nothing*"],
        peers=[{"dc": "a", "addresses": ["no-port"]}],
        imports=[{"service": "ghost", "dc": "c", "port": 16001}],
        import_from=[{"dc": "d", "registry": "nowhere"}],
    )
    with pytest.raises(ConfigError) as info:
        parse_config({"services": [{"name": "orders"}], "gateway": bad, "workers": 2})
    errors = "\n".join(info.value.errors)
    assert "'no-port' is not host:port" in errors
    bad["peers"] = [{"dc": "a", "addresses": ["10.0.0.1:1"]}]
    with pytest.raises(ConfigError) as info:
        parse_config({"services": [{"name": "orders"}], "gateway": bad, "workers": 2})
    errors = "\n".join(info.value.errors)
    for expected in (
        "gateway.export[0]: 'nothing*' matches no configured service",
        "gateway.peers: 'a' is this gateway's own data center",
        "gateway.imports[0].service: unknown service 'ghost'",
        "gateway.imports[0].dc: no peer for data center 'c'",
        "gateway: a gateway runs as one process (workers: 1)",
        "gateway.import_from[0].dc: no peer for data center 'd'",
        "gateway.import_from[0].registry: unknown registry 'nowhere'",
    ):
        assert expected in errors, errors


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.close()
        return False


def two_gateways(
    tmp_path: Path, echo_port: int, link_addresses: list[str], import_port: int
) -> tuple[Gateway, Gateway]:
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    tls = {}
    for name in ("a", "b"):
        cert, key, _ = issue(ca, tmp_path / name, hosts=("meshagent-gateway",))
        tls[name] = {
            "cert_file": str(cert),
            "key_file": str(key),
            "ca_file": str(tmp_path / "ca.pem"),
        }
    echo = Cluster("echo", RoundRobin())
    echo.apply(Reset(1, (Instance("e", "127.0.0.1", echo_port, revision=1),)))
    b = Gateway(
        GatewayConfig.model_validate({"dc": "b", "port": 0, "tls": tls["b"], "export": ["echo"]}),
        {"echo": ServiceConfig(name="echo")},
        {"echo": echo},
    )
    a = Gateway(
        GatewayConfig.model_validate(
            {
                "dc": "a",
                "port": 0,
                "tls": tls["a"],
                "peers": [{"dc": "b", "addresses": link_addresses}],
                "imports": [{"service": "echo", "dc": "b", "port": import_port}],
            }
        ),
        {"echo": ServiceConfig(name="echo")},
        {"echo": Cluster("echo", RoundRobin())},
    )
    return a, b


async def test_an_import_reaches_the_exported_service_past_a_dead_peer(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    echo_server = await loop.create_server(Echo, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    dead, link_b, import_port = free_port(), free_port(), free_port()
    a, b = two_gateways(
        tmp_path, echo_port, [f"127.0.0.1:{dead}", f"127.0.0.1:{link_b}"], import_port
    )
    b.config = b.config.model_copy(update={"port": link_b})
    await b.start()
    await a.start()
    try:
        for round_ in range(4):  # the dead peer is tried once, then ejected
            reader, writer = await asyncio.open_connection("127.0.0.1", import_port)
            writer.write(f"ping {round_}".encode())
            assert await asyncio.wait_for(reader.readexactly(6), 10) == f"ping {round_}".encode()
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        peers = a.peers["b"]
        dead_host = peers.get(f"127.0.0.1:{dead}")
        assert dead_host is not None and dead_host.stats.connect_failures == 1
        assert len(a.links) == 1  # one link, shared by every connection
        assert a.stats.tunnels == {("out", "echo", "b", "opened"): 4}
        assert b.stats.tunnels == {("in", "echo", "a", "opened"): 4}
    finally:
        await a.close()
        await b.close()
        echo_server.close()


async def test_no_peer_reachable_closes_the_connection_at_once(tmp_path: Path) -> None:
    import_port = free_port()
    a, _ = two_gateways(tmp_path, 9, [f"127.0.0.1:{free_port()}"], import_port)
    await a.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", import_port)
        writer.write(b"hello")
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert a.stats.tunnels == {("out", "echo", "b", "failed"): 1}
    finally:
        await a.close()


class Recorded:
    """The agent's side of import registrations, as calls recorded."""

    def __init__(self) -> None:
        self.published: dict[str, tuple[object, ...]] = {}
        self.withdrawn: list[str] = []
        self.changed = asyncio.Event()

    async def publish_import(self, registry: str | None, service: str, *rest: object) -> None:
        self.published[service] = (registry, *rest)
        self.changed.set()

    async def withdraw_import(self, service: str, instance_id: str) -> None:
        self.withdrawn.append(service)
        self.published.pop(service, None)
        self.changed.set()


async def test_imports_follow_the_peers_export_stream(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    echo_server = await loop.create_server(Echo, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    link_b = free_port()
    a, b = two_gateways(tmp_path, echo_port, [f"127.0.0.1:{link_b}"], free_port())
    b.config = b.config.model_copy(update={"port": link_b})
    source = {"dc": "b", "registry": "zk", "grace_s": 0.2}
    a.config = a.config.model_copy(
        update={"imports": [], "import_from": [GatewayImportFromConfig.model_validate(source)]}
    )
    recorded = Recorded()
    await b.start()
    await a.start()
    try:
        await a.register_imports(recorded)
        await async_wait_until(lambda: "echo" in recorded.published, what="echo imported")
        registry, _, host, port, metadata, protocol = recorded.published["echo"]
        assert registry == "zk" and metadata == {"dc": "b", "gateway": "a"} and protocol == "tcp"
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"through the import")
        assert await asyncio.wait_for(reader.readexactly(18), 10) == b"through the import"
        writer.close()
        # B's only endpoint gone: B stops offering echo, A withdraws it at once.
        b.exports["echo"].apply(Reset(2, ()))
        await async_wait_until(lambda: recorded.withdrawn == ["echo"], what="echo withdrawn")
        b.exports["echo"].apply(Reset(3, (Instance("e", "127.0.0.1", echo_port, revision=3),)))
        await async_wait_until(lambda: "echo" in recorded.published, what="echo again")
        # B's gateway gone: the import stays for the grace period, then goes.
        await b.close()
        await async_wait_until(lambda: recorded.withdrawn == ["echo", "echo"], what="grace over")
    finally:
        await a.close()
        await b.close()
        echo_server.close()


async def test_the_export_stream_offers_only_exported_services_with_an_endpoint(
    tmp_path: Path,
) -> None:
    a, b = two_gateways(tmp_path, 9, ["127.0.0.1:1"], free_port())
    assert b.exported_now() == [{"name": "echo", "protocol": "tcp"}]
    assert a.exported_now() == []  # exporting nothing exposes nothing
    b.exports["echo"].apply(Reset(2, ()))
    assert b.exported_now() == []


async def test_a_peer_gateway_that_never_answers_is_left_for_the_next(tmp_path: Path) -> None:
    """A peer whose link is up but never answers a CONNECT (hung): after the handshake
    timeout the connection is tunnelled through the next gateway, the hung link is closed
    and its gateway ejected."""
    loop = asyncio.get_running_loop()
    echo_server = await loop.create_server(Echo, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    hung, link_b, import_port = free_port(), free_port(), free_port()
    a, b = two_gateways(
        tmp_path, echo_port, [f"127.0.0.1:{hung}", f"127.0.0.1:{link_b}"], import_port
    )
    a.config = a.config.model_copy(update={"handshake_timeout_s": 0.5})
    b.config = b.config.model_copy(update={"port": link_b})
    silent = await loop.create_server(
        lambda: LinkConnection(False, 5.0, lambda *_: None),  # takes streams, answers none
        "127.0.0.1",
        hung,
        ssl=b.certificate.context,
    )
    await b.start()
    await a.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", import_port)
        writer.write(b"anyone?")
        assert await asyncio.wait_for(reader.readexactly(7), 10) == b"anyone?"
        writer.close()
        hung_host = a.peers["b"].get(f"127.0.0.1:{hung}")
        assert hung_host is not None and hung_host.stats.connect_failures == 1
        await async_wait_until(lambda: a.links[f"127.0.0.1:{hung}"].closed, what="hung link closed")
    finally:
        silent.close()
        await a.close()
        await b.close()
        echo_server.close()
