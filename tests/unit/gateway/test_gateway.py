from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.calls import Calls
from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import GatewayConfig, ServiceConfig, parse_config
from agent.errors import ConfigError
from agent.gateway.gateway import Gateway
from agent.runtime.admission import ConnectionBudget
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
    gateway = Gateway(config, services, clusters, Calls(), ConnectionBudget(100))
    assert sorted(gateway.exports) == ["orders", "orders.v2"]
    peers = gateway.peers["b"]
    assert sorted(h.id for h in peers.hosts()) == ["10.0.0.1:15443", "10.0.0.2:15443"]
    (imported,) = gateway.imports
    assert imported.cluster is peers and imported.service.connect_attempts == 2
    tls = imported.upstream_tls
    assert tls is not None and tls.preamble == b"MESHAGENT-LINK/1 stock a\n"
    assert tls.server_name == "meshagent-gateway" and tls.context() is tls.context()


async def test_imports_are_registered_labelled_with_their_data_center(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate(
        gateway_config(
            tmp_path,
            peers=[{"dc": "b", "addresses": ["10.0.0.1:15443"]}],
            imports=[{"service": "stock", "dc": "b", "port": 16001, "advertise_host": "10.1.0.9"}],
        )
    )
    services = {"stock": ServiceConfig(name="stock")}
    gateway = Gateway(
        config, services, {"stock": Cluster("stock", RoundRobin())}, Calls(), ConnectionBudget(9)
    )
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
