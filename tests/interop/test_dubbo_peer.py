"""The Java Dubbo peer itself works: registry layout, every suite call, generic, bench."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import kazoo.client as kazoo_client
import pytest

from tests.fixtures.java_dubbo import (
    GREETING_EXCEPTION,
    INTERFACE,
    DubboProvider,
    load_suite,
    mismatch,
    run_bench,
    run_calls,
)
from tests.fixtures.processes import wait_until
from tests.fixtures.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration


@pytest.fixture
def kazoo(zookeeper: ZooKeeperServer) -> Any:
    client = kazoo_client.KazooClient(hosts=zookeeper.hosts, timeout=10)
    client.start(timeout=15)
    yield client
    client.stop()
    client.close()


def assert_suite(outcomes: dict[str, dict[str, Any]], whoami: str) -> None:
    problems = [
        p for case in load_suite() if (p := mismatch(case, outcomes.get(case["case"]), whoami))
    ]
    assert not problems, "\n".join(problems)


def test_registry_layout(kazoo: Any, dubbo_provider: DubboProvider, interop_workdir: Path) -> None:
    address = dubbo_provider.address

    # interface-level: /dubbo/<interface>/providers/<url-encoded provider URL>
    providers_path = f"/dubbo/{INTERFACE}/providers"
    children = wait_until(
        lambda: kazoo.get_children(providers_path) if kazoo.exists(providers_path) else None,
        15,
        what="an interface-level provider node",
    )
    # The session's ZooKeeper is shared: other modules' providers may be listed too.
    mine = [c for c in children if urlsplit(unquote(c)).netloc == address]
    assert len(mine) == 1
    url = unquote(mine[0])
    parts = urlsplit(url)
    assert parts.scheme == "dubbo"
    assert parts.netloc == address
    assert parts.path == f"/{INTERFACE}"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["interface"] == INTERFACE
    assert query["side"] == "provider"
    assert query["serialization"] == "hessian2"
    assert query["prefer.serialization"] == "hessian2"
    assert query["application"] == dubbo_provider.app
    assert query["slow.timeout"] == "500"
    assert {"echo", "whoami", "describe", "fail", "slow"} <= set(query["methods"].split(","))
    provider_stat = kazoo.exists(f"{providers_path}/{mine[0]}")
    assert provider_stat.ephemeralOwner != 0

    # application-level: /services/<app>/<ip:port>, JSON (Curator ServiceInstance)
    instance_path = f"/services/{dubbo_provider.app}/{address}"
    wait_until(lambda: kazoo.exists(instance_path), 15, what=instance_path)
    raw, stat = kazoo.get(instance_path)
    assert stat.ephemeralOwner != 0
    instance = json.loads(raw)
    assert instance["name"] == dubbo_provider.app
    assert instance["address"] == dubbo_provider.host
    assert instance["port"] == dubbo_provider.port
    metadata = instance["payload"]["metadata"]
    assert json.loads(metadata["dubbo.endpoints"]) == [
        {"port": dubbo_provider.port, "protocol": "dubbo"}
    ]
    assert metadata["dubbo.metadata.revision"]

    # interface -> application mapping: /dubbo/mapping/<interface>, data "app1,app2"
    mapping_path = f"/dubbo/mapping/{INTERFACE}"
    wait_until(lambda: kazoo.exists(mapping_path), 15, what=mapping_path)
    mapping, _ = kazoo.get(mapping_path)
    assert dubbo_provider.app in mapping.decode().split(",")

    # Keep what was seen: docs (README of the peer) and registry-plugin tests quote it.
    (interop_workdir / "zk-observed.json").write_text(
        json.dumps(
            {
                "provider_node": f"{providers_path}/{children[0]}",
                "provider_url": url,
                "instance_node": instance_path,
                "instance": instance,
                "mapping_node": mapping_path,
                "mapping": mapping.decode(),
            },
            indent=2,
        )
    )


def test_suite_direct(dubbo_provider: DubboProvider) -> None:
    outcomes = run_calls(url=dubbo_provider.url)
    assert_suite(outcomes, dubbo_provider.provider_id)
    assert outcomes["fail"]["exception"] == GREETING_EXCEPTION
    assert outcomes["slow_timeout"]["timeout"] is True


@pytest.mark.parametrize("discovery", ["interface", "instance"])
def test_suite_through_registry(
    dubbo_provider: DubboProvider, zookeeper: ZooKeeperServer, discovery: str
) -> None:
    # Interface discovery: no consumer-side slow timeout; the provider's slow.timeout=500 reaches
    # the consumer in the registered URL. Instance (app-level) discovery drops method-level
    # parameters from the instance metadata (Dubbo 3.3 behaviour, seen here: slow(1500) then
    # succeeds), so that consumer configures the method timeout itself.
    extra = ["--discovery", discovery]
    if discovery == "instance":
        extra += ["--slow-timeout", "500"]
    outcomes = run_calls(registry=zookeeper.url, extra_args=extra)
    assert_suite(outcomes, dubbo_provider.provider_id)


def test_suite_generic(dubbo_provider: DubboProvider) -> None:
    outcomes = run_calls(url=dubbo_provider.url, generic=True)
    assert_suite(outcomes, dubbo_provider.provider_id)
    # GenericService returns POJOs as maps that name their class
    assert outcomes["echo_person"]["result"]["class"] == "org.meshagent.interop.api.Person"


def test_stdin_calls(dubbo_provider: DubboProvider) -> None:
    calls = [
        {"case": "untyped", "method": "greet", "args": ["x"]},
        {"case": "overload_needs_types", "method": "describe", "args": ["x"]},
        {"case": "typed", "method": "describe", "types": ["int"], "args": [5]},
    ]
    outcomes = run_calls(url=dubbo_provider.url, calls=calls)
    assert outcomes["untyped"]["result"] == "Hello, x"
    assert "overloaded" in outcomes["overload_needs_types"]["error"]
    assert outcomes["typed"]["result"] == "int:5"


def test_version_group_and_whoami(
    dubbo_provider: DubboProvider,
    dubbo_provider_factory: Any,
    zookeeper: ZooKeeperServer,
    kazoo: Any,
) -> None:
    second = dubbo_provider_factory(
        provider_id="provider-2",
        registry=zookeeper.url,
        version="2.0.0",
        group="blue",
        register_mode="interface",
    )
    # Same /dubbo/<interface>/providers folder; version and group are URL parameters.
    providers_path = f"/dubbo/{INTERFACE}/providers"

    def second_node() -> str | None:
        for child in kazoo.get_children(providers_path):
            url = unquote(child)
            if urlsplit(url).netloc == second.address:
                return url
        return None

    url = wait_until(second_node, 15, what="the second provider's node")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert (query["version"], query["group"]) == ("2.0.0", "blue")

    who = [{"case": "who", "method": "whoami", "args": []}]
    blue = run_calls(
        registry=zookeeper.url,
        calls=who,
        extra_args=["--discovery", "interface", "--version", "2.0.0", "--group", "blue"],
    )
    assert blue["who"]["result"] == "provider-2"
    plain = run_calls(registry=zookeeper.url, calls=who, extra_args=["--discovery", "interface"])
    assert plain["who"]["result"] == dubbo_provider.provider_id
    direct = run_calls(
        url=second.url, calls=who, extra_args=["--version", "2.0.0", "--group", "blue"]
    )
    assert direct["who"]["result"] == "provider-2"


@pytest.mark.parametrize("generic", [False, True])
def test_bench(dubbo_provider: DubboProvider, generic: bool) -> None:
    summary = run_bench(
        url=dubbo_provider.url, threads=4, duration_s=1.0, warmup_s=0.5, generic=generic
    )
    assert summary["calls"] > 0
    assert summary["errors"] == 0
    assert summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]
    assert summary["api"] == ("generic" if generic else "stub")


class DubboTap:
    """A TCP relay that records each Dubbo frame header passing through, in both directions."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.headers: list[tuple[str, int, int, int]] = []  # (direction, flag, status, length)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self.listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for src, dst, direction in ((client, server, "req"), (server, client, "resp")):
                t = threading.Thread(target=self._pump, args=(src, dst, direction), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        buf = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
            buf += data
            while len(buf) >= 16:
                assert buf[:2] == b"\xda\xbb", f"not a Dubbo frame: {buf[:16].hex()}"
                flag, status = buf[2], buf[3]
                (length,) = struct.unpack(">I", buf[12:16])
                if len(buf) < 16 + length:
                    break
                with self._lock:
                    self.headers.append((direction, flag, status, length))
                buf = buf[16 + length :]

    def close(self) -> None:
        for s in self._sockets:
            # shutdown wakes the threads blocked in accept/recv; close alone would not
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(timeout=5)


def test_wire_is_dubbo_hessian2(dubbo_provider: DubboProvider) -> None:
    """Through a tap: every frame, both ways, carries serialization id 2 (hessian2)."""
    tap = DubboTap((dubbo_provider.host, dubbo_provider.port))
    try:
        outcomes = run_calls(
            url=f"dubbo://127.0.0.1:{tap.port}",
            calls=[
                {"case": "echo", "method": "echo", "args": ["hi"]},
                {"case": "fail", "method": "fail", "args": ["x"]},
            ],
        )
    finally:
        tap.close()
    assert outcomes["echo"]["result"] == "hi"
    assert outcomes["fail"]["exception"] == GREETING_EXCEPTION
    requests = [h for h in tap.headers if h[0] == "req" and h[1] & 0x80 and h[1] & 0x40]  # two-way
    responses = [h for h in tap.headers if h[0] == "resp" and not h[1] & 0x80]
    assert len(requests) >= 2 and len(responses) >= 2, tap.headers
    assert {flag & 0x1F for _, flag, _, _ in tap.headers} == {2}, tap.headers
    assert all(status == 20 for _, _, status, _ in responses), responses  # 20 = OK
