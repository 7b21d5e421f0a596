"""Dubbo's and meshagent's naming on Nacos, without a server (plugins/nacos/naming.py)."""

from __future__ import annotations

import json

import pytest

from agent.discovery.types import Registration, ServiceKey, frozen_mapping
from plugins.nacos.config import NacosConfig
from plugins.nacos.naming import (
    NacosInstance,
    app_instance,
    application_instance,
    endpoints_of,
    interface_instance,
    interface_service_name,
    key_service_name,
    parse_mapping,
    plain_instance,
    registration_of,
    routable,
    wanted_clusters,
)
from plugins.zookeeper.application_level import parse_metadata_info

IFACE = "org.demo.Greeter"
CONFIG = NacosConfig()


def test_interface_service_names_keep_separators() -> None:
    assert interface_service_name(IFACE) == f"providers:{IFACE}::"
    assert interface_service_name(IFACE, "1.0.0", "g") == f"providers:{IFACE}:1.0.0:g"
    key = ServiceKey(IFACE, {"group": "g"})
    assert key_service_name(key, "interface") == f"providers:{IFACE}::g"
    assert key_service_name(key, "plain") == IFACE


def test_dubbo_registration_is_written_as_dubbos_nacos_registry() -> None:
    reg = Registration(
        IFACE, "p1", "10.0.0.1", 20880, 50,
        frozen_mapping({"version": "1.0.0", "group": "g", "nacos.cluster": "east"}), "dubbo",
    )  # fmt: skip
    written = registration_of(reg, CONFIG, timestamp_ms=1)
    assert written.service == f"providers:{IFACE}:1.0.0:g"
    assert (written.group, written.cluster, written.ephemeral) == ("DEFAULT_GROUP", "east", True)
    assert written.weight == pytest.approx(0.5)
    meta = written.metadata
    assert (meta["category"], meta["protocol"], meta["path"], meta["interface"]) == (
        "providers", "dubbo", IFACE, IFACE,
    )  # fmt: skip
    assert meta["weight"] == "50" and meta["timestamp"] == "1"
    assert "nacos.cluster" not in meta  # steering entries are not published


def test_plain_registration_round_trips_its_instance_id() -> None:
    reg = Registration("orders", "o-1", "10.0.0.2", 8080, 200, frozen_mapping({"zone": "a"}))
    written = registration_of(reg, CONFIG.model_copy(update={"ephemeral": False}))
    assert (written.service, written.ephemeral, written.weight) == ("orders", False, 2.0)
    seen = NacosInstance(
        written.ip, written.port, written.weight, metadata=written.metadata, ephemeral=False
    )
    instance = plain_instance(seen, revision=7)
    assert (instance.id, instance.address, instance.weight, instance.revision) == (
        "o-1", "10.0.0.2:8080", 200, 7,
    )  # fmt: skip
    assert instance.metadata["zone"] == "a" and instance.metadata["nacos.ephemeral"] == "false"


def test_bad_steering_metadata_is_refused() -> None:
    for meta in ({"nacos.ephemeral": "maybe"}, {"nacos.cluster": "a,b"}):
        reg = Registration("orders", "o-1", "10.0.0.2", 8080, 100, frozen_mapping(meta))
        with pytest.raises(ValueError, match="nacos"):
            registration_of(reg, CONFIG)


def test_interface_instance_matches_like_dubbo_and_weights() -> None:
    meta = frozen_mapping({"interface": IFACE, "version": "1.0.0", "group": "g", "weight": "30"})
    found = NacosInstance("10.0.0.1", 20880, metadata=meta)
    assert (
        interface_instance(ServiceKey(IFACE, {"version": "2.0.0", "group": "g"}), found, 1) is None
    )
    hit = interface_instance(ServiceKey(IFACE, {"version": "1.0.0", "group": "g"}), found, 1)
    assert hit is not None and (hit.id, hit.weight) == ("10.0.0.1:20880", 30)
    # An operator's Nacos weight (not the default 1.0) wins over the URL parameter.
    heavier = NacosInstance("10.0.0.1", 20880, weight=2.0, metadata=meta)
    hit = interface_instance(ServiceKey(IFACE, {"version": "1.0.0", "group": "g"}), heavier, 1)
    assert hit is not None and hit.weight == 200
    disabled = frozen_mapping({**meta, "enabled": "false"})
    off = NacosInstance("10.0.0.1", 20880, metadata=disabled)
    assert interface_instance(ServiceKey(IFACE, {"version": "1.0.0", "group": "g"}), off, 1) is None


def test_routable_follows_enabled_healthy_and_clusters() -> None:
    up = NacosInstance("10.0.0.1", 1, cluster="east")
    assert routable(up, frozenset()) and routable(up, frozenset({"east"}))
    assert not routable(up, frozenset({"west"}))
    assert not routable(NacosInstance("10.0.0.1", 1, enabled=False), frozenset())
    assert not routable(NacosInstance("10.0.0.1", 1, healthy=False), frozenset())
    assert wanted_clusters(ServiceKey("s", {"clusters": "a, b"}), CONFIG) == {"a", "b"}
    assert wanted_clusters(ServiceKey("s"), CONFIG.model_copy(update={"clusters": ["c"]})) == {"c"}


def test_mapping_and_malformed_endpoints() -> None:
    assert parse_mapping(" app1,app2,,app1 ") == ("app1", "app2")
    assert endpoints_of('[{"port": 20880, "protocol": "dubbo"}, {"port": "x"}]') == {"dubbo": 20880}
    for bad in ("not json", "{}", "[1, 2]", ""):
        assert endpoints_of(bad) == {}


def test_application_instance_uses_the_protocol_port_and_metadata() -> None:
    meta = frozen_mapping({
        "dubbo.endpoints": json.dumps([{"port": 20880, "protocol": "dubbo"}]),
        "dubbo.metadata.revision": "r1",
    })  # fmt: skip
    app = app_instance("demo", NacosInstance("10.0.0.9", 8080, weight=0.5, metadata=meta))
    info = parse_metadata_info(
        json.dumps({
            "app": "demo", "revision": "r1",
            "services": {"x": {"name": IFACE, "version": "1.0.0", "protocol": "dubbo",
                               "params": {"timeout": "3000"}}},
        }).encode()
    )  # fmt: skip
    key = ServiceKey(IFACE, {"version": "1.0.0"})
    found = application_instance(key, app, info, "dubbo", 0.5, 4)
    assert found is not None and (found.address, found.weight) == ("10.0.0.9:20880", 50)
    assert found.metadata["timeout"] == "3000" and found.metadata["application"] == "demo"
    other = ServiceKey(IFACE, {"version": "2.0.0"})
    assert application_instance(other, app, info, "dubbo", 0.5, 4) is None
    kept = application_instance(other, app, None, "dubbo", 0.5, 4)  # no metadata: kept
    assert kept is not None
