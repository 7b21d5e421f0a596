"""MetadataService request and answer, sans-IO (the call itself: tests/interop, app mode)."""

from __future__ import annotations

import json

import pytest

from agent.discovery.types import frozen_mapping
from plugins.dubbo.body import decode_invocation
from plugins.dubbo.hessian2 import JavaObject
from plugins.dubbo.metadata import (
    MetadataError,
    metadata_address,
    metadata_request,
    parse_metadata_info,
)
from plugins.zookeeper.application_level import AppInstance

URL_PARAMS = "dubbo.metadata-service.url-params"


def instance(**metadata: str) -> AppInstance:
    return AppInstance(
        app="shop",
        id="10.0.0.1:20880",
        host="10.0.0.1",
        port=20880,
        metadata=frozen_mapping({"dubbo.metadata.revision": "r1", **metadata}),
        endpoints=frozen_mapping({"dubbo": 20881}),
    )


def test_address_from_url_params_else_the_dubbo_endpoint() -> None:
    params = json.dumps({"port": "20990", "protocol": "dubbo", "version": "1.0.0"})
    assert metadata_address(instance(**{URL_PARAMS: params})) == ("10.0.0.1", 20990)
    assert metadata_address(instance()) == ("10.0.0.1", 20881)
    assert metadata_address(instance(**{URL_PARAMS: json.dumps({"protocol": "tri"})})) is None
    assert metadata_address(instance(**{URL_PARAMS: "{not json"})) == ("10.0.0.1", 20881)


def test_request_is_get_metadata_info_of_the_revision_in_the_apps_group() -> None:
    frame = metadata_request(instance(), 3000)
    decoded = decode_invocation(frame[16:])
    assert decoded.path == "org.apache.dubbo.metadata.MetadataService"
    assert decoded.version == "1.0.0"
    assert decoded.method == "getMetadataInfo"
    assert decoded.parameter_types == ("java.lang.String",)
    assert decoded.arguments == ("r1",)
    assert decoded.attachments["group"] == "shop"
    assert decoded.attachments["timeout"] == "3000"


def test_metadata_info_as_dubbo_serializes_it() -> None:
    service = JavaObject(
        "org.apache.dubbo.metadata.MetadataInfo$ServiceInfo",
        {
            "name": "com.acme.Greeter",
            "group": "blue",
            "version": "2.0.0",
            "protocol": "dubbo",
            "port": 20880,
            "path": "com.acme.Greeter",
            "params": {"slow.timeout": "500", "methods": "greet,slow"},
        },
    )
    value = JavaObject(
        "org.apache.dubbo.metadata.MetadataInfo",
        {"app": "shop", "revision": "r1", "services": {"blue/com.acme.Greeter:2.0.0": service}},
    )
    info = parse_metadata_info(value)
    assert (info.app, info.revision) == ("shop", "r1")
    [parsed] = info.services
    assert (parsed.name, parsed.group, parsed.version, parsed.protocol) == (
        "com.acme.Greeter",
        "blue",
        "2.0.0",
        "dubbo",
    )
    assert dict(parsed.params) == {"slow.timeout": "500", "methods": "greet,slow"}


def test_anything_else_is_refused() -> None:
    with pytest.raises(MetadataError):
        parse_metadata_info({"app": "shop"})
