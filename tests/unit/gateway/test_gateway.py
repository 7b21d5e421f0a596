from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import GatewayConfig, ServiceConfig, parse_config
from agent.discovery.types import Instance, Reset
from agent.errors import ConfigError
from agent.gateway.gateway import Gateway
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
    registered: list[tuple[object, ...]] = []

    async def register(*args: object) -> None:
        registered.append(args)

    await gateway.register_imports(register)
    assert registered == [
        ("stock", "10.1.0.9:16001", "10.1.0.9", 16001, {"dc": "b", "gateway": "a"})
    ]


def test_the_config_is_checked_whole(tmp_path: Path) -> None:
    bad = gateway_config(
        tmp_path,
        export=["nothing*"],
        peers=[{"dc": "a", "addresses": ["no-port"]}],
        imports=[{"service": "ghost", "dc": "c", "port": 16001}],
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
        assert a.stats.tunnels_out == 4 and b.stats.tunnels_in == 4
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
        assert a.stats.failed_out == 1
    finally:
        await a.close()
