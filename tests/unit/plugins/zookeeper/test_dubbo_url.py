"""Dubbo URLs and znode names exactly as Dubbo 3.3 writes them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.zookeeper.dubbo_url import (
    DubboURL,
    MalformedURL,
    decode_component,
    encode_component,
    parse,
    parse_node_name,
)

# A provider URL in the form Dubbo 3.3's ZookeeperRegistry registers it (sorted parameters).
PROVIDER = (
    "dubbo://192.168.1.5:20880/org.apache.dubbo.demo.DemoService?anyhost=true"
    "&application=demo-provider&background=false&deprecated=false&dubbo=2.0.2&dynamic=true"
    "&executor-management-mode=isolation&file-cache=true&generic=false"
    "&interface=org.apache.dubbo.demo.DemoService&methods=sayHello,sayHelloAsync&pid=81234"
    "&prefer.serialization=fastjson2,hessian2&release=3.3.0&service-name-mapping=true"
    "&side=provider&timestamp=1700000000000&version=1.0.0"
)
# ... and the znode name it becomes (java.net.URLEncoder, UTF-8).
PROVIDER_NODE = (
    "dubbo%3A%2F%2F192.168.1.5%3A20880%2Forg.apache.dubbo.demo.DemoService%3Fanyhost%3Dtrue"
    "%26application%3Ddemo-provider%26background%3Dfalse%26deprecated%3Dfalse%26dubbo%3D2.0.2"
    "%26dynamic%3Dtrue%26executor-management-mode%3Disolation%26file-cache%3Dtrue"
    "%26generic%3Dfalse%26interface%3Dorg.apache.dubbo.demo.DemoService"
    "%26methods%3DsayHello%2CsayHelloAsync%26pid%3D81234"
    "%26prefer.serialization%3Dfastjson2%2Chessian2%26release%3D3.3.0"
    "%26service-name-mapping%3Dtrue%26side%3Dprovider%26timestamp%3D1700000000000"
    "%26version%3D1.0.0"
)


def test_parse_provider_url() -> None:
    url = parse(PROVIDER)
    assert (url.protocol, url.host, url.port) == ("dubbo", "192.168.1.5", 20880)
    assert url.path == url.interface == "org.apache.dubbo.demo.DemoService"
    assert url.version == "1.0.0"
    assert url.group == ""
    assert url.params["methods"] == "sayHello,sayHelloAsync"
    assert url.params["prefer.serialization"] == "fastjson2,hessian2"
    assert url.address == "192.168.1.5:20880"


def test_format_is_dubbo_full_string() -> None:
    assert parse(PROVIDER).to_string() == PROVIDER


def test_node_name_round_trip() -> None:
    url = parse(PROVIDER)
    assert url.to_node_name() == PROVIDER_NODE
    assert parse_node_name(PROVIDER_NODE) == url


def test_parameters_are_sorted_and_empty_values_dropped() -> None:
    url = DubboURL("dubbo", "10.0.0.1", 20880, "Svc", {"version": "1", "group": "", "a": "x"})
    assert url.to_string() == "dubbo://10.0.0.1:20880/Svc?a=x&version=1"


def test_consumer_url_without_port() -> None:
    url = parse("consumer://192.168.1.7/org.apache.dubbo.demo.DemoService?category=consumers")
    assert url.port == 0
    assert url.params["category"] == "consumers"


def test_user_info_and_bare_parameter() -> None:
    url = parse("dubbo://admin:secret@10.0.0.1:20880/Svc?flag&k=v=w")
    assert (url.username, url.password) == ("admin", "secret")
    assert url.params["flag"] == "flag"  # Dubbo's URL.valueOf stores a bare key as key=key
    assert url.params["k"] == "v=w"
    assert url.to_string() == "dubbo://admin:secret@10.0.0.1:20880/Svc?flag=flag&k=v=w"


def test_ipv6() -> None:
    url = parse("tri://[fe80::1]:50051/Svc")
    assert (url.host, url.port, url.address) == ("fe80::1", 50051, "[fe80::1]:50051")


def test_java_encoder_alphabet() -> None:
    assert encode_component("a b*c-d.e_f~g/h,i") == "a+b*c-d.e_f%7Eg%2Fh%2Ci"
    assert encode_component("é") == "%C3%A9"
    assert decode_component("a+b%2C") == "a b,"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "no-scheme",
        "://10.0.0.1:20880/Svc",
        "dubbo://10.0.0.1:port/Svc",
        "dubbo://10.0.0.1:99999/Svc",
        "dubbo://10.0.0.1:-1/Svc",
        "dubbo://[fe80::1/Svc",
        "dubbo://[fe80::1]x/Svc",
    ],
)
def test_malformed_urls(text: str) -> None:
    with pytest.raises(MalformedURL):
        parse(text)


@pytest.mark.parametrize("name", ["bad%zz", "bad%2", "%ff%fe"])
def test_malformed_node_names(name: str) -> None:
    with pytest.raises(MalformedURL):
        parse_node_name(name)


@given(st.text())
def test_encode_decode_round_trip(text: str) -> None:
    assert decode_component(encode_component(text)) == text
    assert all((c.isalnum() and c.isascii()) or c in "%+*-._" for c in encode_component(text))


@given(st.text())
def test_parse_never_raises_anything_but_malformed(text: str) -> None:
    with contextlib.suppress(MalformedURL):
        parse_node_name(text)
