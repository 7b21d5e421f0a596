from __future__ import annotations

import pytest

from agent.discovery.types import Add, Instance, Remove, Reset
from agent.discovery.validate import host_problem, instance_id_problem, screen


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "fe80::1",
        "example.com",
        "svc.ns.svc.cluster.local.",
        "b\u00fccher.de",
        "_grpc._tcp.example",
        "a" * 63 + ".b",
    ],
)
def test_hosts_that_are_addresses_or_names(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "",
        "\u009e",
        "-a.b",
        "a-.b",
        "a..b",
        "a b",
        "a/b",
        "a:b",
        "a" * 64 + ".b",
        ("a" * 60 + ".") * 5,
        "\u202eevil",
        "a\nb",
    ],
)
def test_hosts_refused(host: str) -> None:
    assert host_problem(host) is not None


@pytest.mark.parametrize("instance_id", ["127.0.0.1:8080", "pod-1", "app@zone#1"])
def test_instance_ids_kept(instance_id: str) -> None:
    assert instance_id_problem(instance_id) is None


@pytest.mark.parametrize(
    "instance_id", ["", "a/b", "a\\b", "a\nb", " a", "a\x00", "\u202e", "x" * 256]
)
def test_instance_ids_refused(instance_id: str) -> None:
    assert instance_id_problem(instance_id) is not None


def test_screen_drops_junk_instances_and_keeps_the_rest() -> None:
    good = Instance("dubbo://10.0.0.1:20880/com.example.Svc?x=1", "10.0.0.1", 20880)
    junk = Instance("bad", "\u009e", 1)
    reset, dropped = screen(Reset(3, (good, junk)))
    assert reset == Reset(3, (good,))
    assert [(i.id, "IDNA" in why) for i, why in dropped] == [("bad", True)]
    assert screen(Add(4, junk))[0] is None
    assert screen(Add(4, Instance("p", "10.0.0.1", 0)))[1][0][1] == "port 0 out of range"
    remove = Remove(5, "bad", 1)
    assert screen(remove) == (remove, [])
    assert screen(Add(6, good)) == (Add(6, good), [])
