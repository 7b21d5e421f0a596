"""Dubbo 3 application-level data: Curator instance JSON, mapping, MetadataInfo."""

from __future__ import annotations

import json

import pytest

from agent.discovery.types import ServiceKey, frozen_mapping
from plugins.zookeeper.application_level import (
    MalformedInstance,
    matching_service,
    parse_instance,
    parse_mapping,
    parse_metadata_info,
    to_instance,
)

# What Dubbo 3.3's ZookeeperServiceDiscovery writes at /services/demo-provider/192.168.1.5:20880
# (Curator's JsonInstanceSerializer around Dubbo's ZookeeperInstance payload).
INSTANCE_JSON = (
    b'{"name":"demo-provider","id":"192.168.1.5:20880","address":"192.168.1.5","port":20880,'
    b'"sslPort":null,"payload":{"@class":"org.apache.dubbo.registry.zookeeper.ZookeeperInstance",'
    b'"id":"192.168.1.5:20880","name":"demo-provider","metadata":{'
    b'"dubbo.endpoints":"[{\\"port\\":20880,\\"protocol\\":\\"dubbo\\"},'
    b'{\\"port\\":50052,\\"protocol\\":\\"tri\\"}]",'
    b'"dubbo.metadata-service.url-params":"{\\"prefer.serialization\\":\\"fastjson2,hessian2\\",'
    b'\\"version\\":\\"1.0.0\\",\\"dubbo\\":\\"2.0.2\\",\\"release\\":\\"3.3.0\\",'
    b'\\"side\\":\\"provider\\",\\"port\\":\\"20880\\",\\"protocol\\":\\"dubbo\\"}",'
    b'"dubbo.metadata.revision":"a0f5c9a5e7b4b2f1c1d0e8f7a6b5c4d3",'
    b'"dubbo.metadata.storage-type":"remote","timestamp":"1700000000000"}},'
    b'"registrationTimeUTC":1700000000123,"serviceType":"DYNAMIC","uriSpec":null}'
)

METADATA_JSON = json.dumps(
    {
        "app": "demo-provider",
        "revision": "a0f5c9a5e7b4b2f1c1d0e8f7a6b5c4d3",
        "services": {
            "org.apache.dubbo.demo.DemoService:1.0.0:dubbo": {
                "name": "org.apache.dubbo.demo.DemoService",
                "version": "1.0.0",
                "protocol": "dubbo",
                "path": "org.apache.dubbo.demo.DemoService",
                "params": {"methods": "sayHello,sayHelloAsync", "weight": "40", "side": "provider"},
            },
            "g1/org.apache.dubbo.demo.GreetingService:tri": {
                "name": "org.apache.dubbo.demo.GreetingService",
                "group": "g1",
                "protocol": "tri",
                "path": "org.apache.dubbo.demo.GreetingService",
                "params": {},
            },
        },
    }
).encode()


def test_parse_instance() -> None:
    instance = parse_instance(INSTANCE_JSON)
    assert (instance.app, instance.id, instance.host, instance.port) == (
        "demo-provider",
        "192.168.1.5:20880",
        "192.168.1.5",
        20880,
    )
    assert dict(instance.endpoints) == {"dubbo": 20880, "tri": 50052}
    assert instance.revision == "a0f5c9a5e7b4b2f1c1d0e8f7a6b5c4d3"
    assert instance.metadata_is_remote


def test_instance_port_follows_endpoint_of_protocol() -> None:
    app_instance = parse_instance(INSTANCE_JSON)
    tri = to_instance(app_instance, 9, "tri")
    assert (tri.id, tri.port, tri.revision) == ("192.168.1.5:50052", 50052, 9)
    assert tri.metadata["application"] == "demo-provider"
    assert tri.metadata["protocol"] == "tri"
    # no endpoint for the protocol: the instance port
    assert to_instance(app_instance, 9, "rest").port == 20880


def test_metadata_matching_and_params() -> None:
    info = parse_metadata_info(METADATA_JSON)
    demo = ServiceKey("org.apache.dubbo.demo.DemoService", frozen_mapping({"version": "1.0.0"}))
    service = matching_service(demo, info, "dubbo")
    assert service is not None
    instance = to_instance(parse_instance(INSTANCE_JSON), 1, "dubbo", service)
    assert instance.weight == 40
    assert instance.metadata["methods"] == "sayHello,sayHelloAsync"
    other_version = ServiceKey(
        "org.apache.dubbo.demo.DemoService", frozen_mapping({"version": "2"})
    )
    assert matching_service(other_version, info, "dubbo") is None
    greeting = ServiceKey("org.apache.dubbo.demo.GreetingService", frozen_mapping({"group": "g1"}))
    assert matching_service(greeting, info, "tri") is not None
    assert matching_service(greeting, info, "dubbo") is None


def test_mapping() -> None:
    assert parse_mapping(b"demo-provider, other-app,,demo-provider") == (
        "demo-provider",
        "other-app",
    )
    assert parse_mapping(b"") == ()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'{"name":"a","address":"10.0.0.1"}',
        b'{"name":"a","address":"10.0.0.1","port":"20880"}',
        b'{"name":"a","address":"10.0.0.1","port":70000}',
        b'{"name":"a","port":1}',
        b'{"name":"a","address":"10.0.0.1","port":1,"payload":[]}',
        b'{"name":"a","address":"10.0.0.1","port":1,"payload":{"metadata":"x"}}',
    ],
)
def test_malformed_instances(data: bytes) -> None:
    with pytest.raises(MalformedInstance):
        parse_instance(data)


def test_bad_endpoints_fall_back_to_instance_port() -> None:
    body = json.loads(INSTANCE_JSON)
    body["payload"]["metadata"]["dubbo.endpoints"] = "not json"
    instance = parse_instance(json.dumps(body).encode())
    assert dict(instance.endpoints) == {}
    assert to_instance(instance, 1, "dubbo").port == 20880
