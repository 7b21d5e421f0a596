"""Registries benchmark: how fast a registry change reaches a cluster, and what 10,000
instances cost the agent.

Two measurements per registry, through one loop each and a small *writer* adapter per
registry (the only registry-specific code here):

(a) latency: an :class:`~agent.runtime.agent.Agent` runs in-process on uvloop with one service;
    a listener on its :class:`~agent.cluster.cluster.Cluster` stamps ``time.perf_counter``
    when an update is applied. The writer makes N changes (alternately adds and removes a
    provider of that service, one at a time), each waiting for the cluster to reflect it.
    The clock starts just before the write is issued, so the write's own round trip is in.
(b) scale: a real ``meshagent run`` process with S services (active health checks off, no
    listeners); VmRSS and utime+stime from /proc before the instances exist; the writer adds
    S x K instances; GET /v1/services is polled until every endpoint is there; then RSS growth,
    CPU seconds and time to full reflection. After that, an end-to-end latency run against that
    loaded process: writes, then GET /v1/services/{s}/instances polled until it shows the change.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python -m bench.registry            # zookeeper, local, etcd, nacos
    PYTHONPATH=. .venv/bin/python -m bench.registry --registries zookeeper --changes 100

Adding a registry = one ``Writer`` subclass + one line in ``WRITERS``: see ``EtcdWriter``.
Every process started here (ZooKeeper, the agent) is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml

from agent.errors import PluginError
from agent.plugins import PluginKind, installed, load

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
P99_TARGET_MS = 50.0
RSS_TARGET_MB = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def service_name(index: int) -> str:
    # Dubbo interface names; also fine as plain service names for the other registries.
    return f"org.meshagent.bench.Service{index:04d}"


def instance_port(index: int) -> int:
    # 127.0.0.1 on ports nothing listens on: no traffic is ever sent (health checks are off).
    return 30000 + index


# -- writers: the registry-specific part ----------------------------------------------------


class Writer(ABC):
    """Makes instances of a service appear in / disappear from one registry.

    ``start``/``stop`` run the registry server if there is one (ZooKeeper, etcd); ``bind``
    hands over the agent's OpenAPI client (in-process ASGI or real HTTP) for registries that
    are written through the agent itself. An instance is named by (service, index); its id as
    the cluster shows it is ``instance_id``.
    """

    name: str
    registry_type: str  # the meshagent.registries entry point it needs
    protocol = "tcp"  # the services' protocol in the generated config

    def start(self, workdir: Path) -> None:  # noqa: B027 - optional hook
        """Start the registry server, if any."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop whatever ``start`` started."""

    @abstractmethod
    def registry_config(self) -> dict[str, Any]:
        """The ``config`` of this registry in the agent's YAML."""

    def service_attributes(self) -> dict[str, str]:
        return {}

    async def open(self, api: httpx.AsyncClient) -> None:  # noqa: B027 - optional hook
        """Called with the agent's API client before any write."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients opened in ``open``."""

    @abstractmethod
    def instance_id(self, service: str, index: int) -> str: ...

    @abstractmethod
    async def add(self, service: str, index: int) -> None: ...

    @abstractmethod
    async def remove(self, service: str, index: int) -> None: ...

    async def add_many(self, items: list[tuple[str, int]]) -> None:
        """Bulk add; the default runs ``add`` with bounded concurrency."""
        await _bounded(32, (self.add(s, i) for s, i in items))


async def _bounded(limit: int, coroutines: Iterable[Awaitable[None]]) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[None]) -> None:
        async with semaphore:
            await coroutine

    await asyncio.gather(*(one(c) for c in coroutines))


class ZooKeeperWriter(Writer):
    """Provider nodes exactly as a Dubbo 3.3 provider registers them (interface level):
    ``/dubbo/{interface}/providers/{URLEncoder.encode(url.toFullString())}``, ephemeral, data =
    the provider's IP (Curator's default), written with kazoo from its own session."""

    name = "zookeeper"
    registry_type = "zookeeper"
    protocol = "dubbo"
    version = "1.0.0"

    def __init__(self) -> None:
        self._server: Any = None
        self._client: Any = None
        self._paths: dict[tuple[str, int], str] = {}

    def start(self, workdir: Path) -> None:
        from kazoo.client import KazooClient

        from tests.fixtures.zookeeper import ZooKeeperServer

        self._server = ZooKeeperServer(workdir / "zookeeper").start()
        self._client = KazooClient(hosts=self._server.hosts, timeout=20.0)
        self._client.start(timeout=30)

    def stop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop()
                self._client.close()
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def registry_config(self) -> dict[str, Any]:
        return {
            "hosts": self._server.hosts,
            "default_mode": "interface",
            "session_timeout_s": 10,
            "require_connection": True,
        }

    def service_attributes(self) -> dict[str, str]:
        return {"version": self.version}

    def instance_id(self, service: str, index: int) -> str:
        return f"{LOOPBACK}:{instance_port(index)}"

    def _providers(self, service: str) -> str:
        from plugins.zookeeper.layout import Layout

        return Layout().providers(service)

    def _node_path(self, service: str, index: int) -> str:
        from plugins.zookeeper.dubbo_url import DubboURL

        port = instance_port(index)
        params = {
            "anyhost": "true",
            "application": "bench-provider",
            "background": "false",
            "deprecated": "false",
            "dubbo": "2.0.2",
            "dynamic": "true",
            "executor-management-mode": "isolation",
            "file-cache": "true",
            "generic": "false",
            "interface": service,
            "methods": "sayHello,sayHelloAsync",
            "pid": str(os.getpid()),
            "prefer.serialization": "hessian2,fastjson2",
            "release": "3.3.0",
            "service-name-mapping": "true",
            "side": "provider",
            "timestamp": str(int(time.time() * 1000)),
            "version": self.version,
        }
        url = DubboURL("dubbo", LOOPBACK, port, service, params)
        return f"{self._providers(service)}/{url.to_node_name()}"

    async def prepare(self, services: list[str]) -> None:
        """Dubbo's persistent directories, there before any provider (as in a live registry)."""
        from kazoo.exceptions import NodeExistsError

        for path in ["/dubbo"]:
            with contextlib.suppress(NodeExistsError):
                await _kazoo(self._client.create_async(path, b""))
        for level in (
            [p.rsplit("/", 1)[0] for p in map(self._providers, services)],
            [self._providers(s) for s in services],
        ):
            results = await asyncio.gather(
                *(_kazoo(self._client.create_async(p, b"")) for p in level),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, NodeExistsError):
                    raise result

    async def add(self, service: str, index: int) -> None:
        path = self._node_path(service, index)
        self._paths[(service, index)] = path
        await _kazoo(self._client.create_async(path, LOOPBACK.encode(), ephemeral=True))

    async def remove(self, service: str, index: int) -> None:
        path = self._paths.pop((service, index))
        await _kazoo(self._client.delete_async(path))

    async def add_many(self, items: list[tuple[str, int]]) -> None:
        # kazoo pipelines async requests on its one connection: many in flight at once.
        for start in range(0, len(items), 2000):
            await asyncio.gather(*(self.add(s, i) for s, i in items[start : start + 2000]))


def _kazoo(async_result: Any) -> asyncio.Future[Any]:
    """A kazoo IAsyncResult as an asyncio future (kazoo completes it on its own thread)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any) -> None:
        if future.done():
            return
        if result.successful():
            future.set_result(result.value)
        else:
            future.set_exception(result.exception)

    async_result.rawlink(lambda result: loop.call_soon_threadsafe(settle, result))
    return future


class LocalWriter(Writer):
    """The embedded registry: registrations through the agent's OpenAPI PUT/DELETE."""

    name = "local"
    registry_type = "local"

    def __init__(self) -> None:
        self._api: httpx.AsyncClient | None = None

    def registry_config(self) -> dict[str, Any]:
        return {}

    async def open(self, api: httpx.AsyncClient) -> None:
        self._api = api

    def instance_id(self, service: str, index: int) -> str:
        return f"{LOOPBACK}:{instance_port(index)}"

    async def add(self, service: str, index: int) -> None:
        assert self._api is not None
        body = {"host": LOOPBACK, "port": instance_port(index), "metadata": {"zone": "bench"}}
        url = f"/v1/registrations/{service}/{self.instance_id(service, index)}"
        response = await self._api.put(url, json=body)
        response.raise_for_status()

    async def remove(self, service: str, index: int) -> None:
        assert self._api is not None
        url = f"/v1/registrations/{service}/{self.instance_id(service, index)}"
        response = await self._api.delete(url)
        response.raise_for_status()


class EtcdWriter(Writer):
    """etcd 3.4 (Debian ``etcd-server``): instance keys put and deleted with one aetcd client
    in the layout the ``etcd`` plugin reads (``{prefix}/{service}/{instance_id}``)."""

    name = "etcd"
    registry_type = "etcd"

    def __init__(self) -> None:
        self._server: Any = None
        self._client: Any = None

    def start(self, workdir: Path) -> None:
        from tests.fixtures.etcd import EtcdServer

        self._server = EtcdServer(workdir / "etcd").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def registry_config(self) -> dict[str, Any]:
        return {"endpoints": [self._server.endpoint]}

    async def open(self, api: httpx.AsyncClient) -> None:
        import aetcd  # type: ignore[import-untyped]

        self._client = aetcd.Client(host=self._server.host, port=self._server.port, timeout=10)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def instance_id(self, service: str, index: int) -> str:
        return f"{LOOPBACK}:{instance_port(index)}"

    def _key(self, service: str, index: int) -> bytes:
        from plugins.etcd.layout import KeyLayout

        return KeyLayout().key(service, self.instance_id(service, index))

    async def add(self, service: str, index: int) -> None:
        from agent.discovery.records import format_record
        from agent.discovery.types import Registration

        registration = Registration(
            service, self.instance_id(service, index), LOOPBACK, instance_port(index)
        )
        await self._client.put(self._key(service, index), format_record(registration))

    async def remove(self, service: str, index: int) -> None:
        await self._client.delete(self._key(service, index))


class NacosWriter(Writer):
    """Nacos 3 (tests/interop/nacos, built with Maven): instances registered and deregistered
    by a second ``nacos`` registry (another agent), as ephemeral plain instances over gRPC."""

    name = "nacos"
    registry_type = "nacos"

    def __init__(self) -> None:
        self._server: Any = None
        self._registry: Any = None

    def start(self, workdir: Path) -> None:
        from tests.fixtures.nacos import NacosServer

        self._server = NacosServer(workdir / "nacos").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def registry_config(self) -> dict[str, Any]:
        return {
            "server_addresses": [self._server.server_addr],
            "group": "bench",
            "default_mode": "plain",
            "require_connection": True,
            "connect_timeout_s": 30,
        }

    async def open(self, api: httpx.AsyncClient) -> None:
        from plugins.nacos.config import NacosConfig
        from plugins.nacos.registry import NacosRegistry

        self._registry = NacosRegistry(NacosConfig.model_validate(self.registry_config()))
        await self._registry.start()

    async def close(self) -> None:
        if self._registry is not None:
            await self._registry.close()
            self._registry = None

    def instance_id(self, service: str, index: int) -> str:
        return f"{LOOPBACK}:{instance_port(index)}"

    async def add(self, service: str, index: int) -> None:
        from agent.discovery.types import Registration

        instance_id = self.instance_id(service, index)
        await self._registry.register(
            Registration(service, instance_id, LOOPBACK, instance_port(index))
        )

    async def remove(self, service: str, index: int) -> None:
        await self._registry.deregister(service, self.instance_id(service, index))


WRITERS: dict[str, Callable[[], Writer]] = {
    "zookeeper": ZooKeeperWriter,
    "local": LocalWriter,
    "etcd": EtcdWriter,
    "nacos": NacosWriter,
}


def skip_reason(writer: Writer) -> str | None:
    if writer.registry_type not in installed(PluginKind.REGISTRY):
        return f"the {writer.registry_type!r} registry plugin is not installed"
    try:
        load(PluginKind.REGISTRY, writer.registry_type)
    except PluginError as exc:  # an entry point left by another checkout's install
        return f"the {writer.registry_type!r} registry plugin does not load here: {exc}"
    return None


# -- the agent's configuration -----------------------------------------------------------------


def agent_config(writer: Writer, services: list[str], admin_port: int = 0) -> dict[str, Any]:
    return {
        "admin": {"host": LOOPBACK, "port": admin_port},
        "log_level": "INFO",
        "registries": [
            {"name": "bench", "type": writer.registry_type, "config": writer.registry_config()}
        ],
        "services": [
            {
                "name": name,
                "registry": "bench",
                "protocol": writer.protocol,
                "attributes": writer.service_attributes(),
                "health": {"enabled": False},
            }
            for name in services
        ],
    }


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Latency:
    samples_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    timeouts: int = 0

    def pct(self, q: float) -> float:
        data = sorted(self.samples_ms)
        if not data:
            return float("nan")
        # nearest-rank percentile
        rank = max(1, min(len(data), round(q / 100 * len(data) + 0.5)))
        return data[rank - 1]

    def row(self) -> dict[str, float | int]:
        return {
            "n": len(self.samples_ms),
            "p50": self.pct(50),
            "p90": self.pct(90),
            "p99": self.pct(99),
            "max": max(self.samples_ms, default=float("nan")),
            "write_p50": statistics.median(self.write_ms) if self.write_ms else float("nan"),
            "timeouts": self.timeouts,
        }


Reflected = Callable[[str, bool], Awaitable[float]]
"""Waits until instance ``id`` is present (True) / absent (False); returns perf_counter then."""

TOGGLE_BASE = 1000  # instance indexes of the toggled providers (ports 31000+)


async def change_loop(
    writer: Writer, service: str, changes: int, bound_s: float, reflected: Reflected, warmup: int
) -> Latency:
    """The one measuring loop: add, wait, remove, wait, ... one change at a time."""
    result = Latency()
    for i in range(warmup + changes):
        index = TOGGLE_BASE + i // 2
        adding = i % 2 == 0
        instance_id = writer.instance_id(service, index)
        t0 = time.perf_counter()
        waiter = asyncio.ensure_future(reflected(instance_id, adding))
        try:
            await (writer.add(service, index) if adding else writer.remove(service, index))
            t_written = time.perf_counter()
            t1 = await asyncio.wait_for(waiter, bound_s)
        except TimeoutError:
            if i >= warmup:
                result.timeouts += 1
            continue
        finally:
            waiter.cancel()
        if i >= warmup:
            result.samples_ms.append((t1 - t0) * 1000)
            result.write_ms.append((t_written - t0) * 1000)
    return result


async def latency_in_process(
    writer: Writer, changes: int, bound_s: float, baseline: int, warmup: int
) -> Latency:
    """(a): the registry plugin and a Cluster in-process, timed by a cluster listener."""
    from agent.api.app import create_app
    from agent.cluster.cluster import Cluster
    from agent.config import parse_config
    from agent.runtime.agent import Agent

    service = "org.meshagent.bench.LatencyService"  # not one of the scale run's services
    if isinstance(writer, ZooKeeperWriter):
        await writer.prepare([service])
    agent = Agent(parse_config(agent_config(writer, [service])))
    cluster = agent.clusters[service]
    pending: list[tuple[str, bool, asyncio.Future[float]]] = []

    def on_apply(c: Cluster) -> None:
        now = time.perf_counter()
        for instance_id, present, future in pending:
            if not future.done() and (c.get(instance_id) is not None) == present:
                future.set_result(now)

    async def reflected(instance_id: str, present: bool) -> float:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (instance_id, present, future)
        pending.append(entry)
        try:
            if (cluster.get(instance_id) is not None) == present:
                return time.perf_counter()
            return await future
        finally:
            pending.remove(entry)

    cluster.listeners.append(on_apply)
    transport = httpx.ASGITransport(app=create_app(agent))
    await agent.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as api:
            await writer.open(api)
            await writer.add_many([(service, i) for i in range(baseline)])
            await _until(lambda: len(cluster.hosts()) == baseline, 30, "baseline instances")
            result = await change_loop(writer, service, changes, bound_s, reflected, warmup)
            for i in range(baseline):
                await writer.remove(service, i)
            return result
    finally:
        await writer.close()
        await agent.stop()


async def _until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class ProcStat:
    rss_kb: int
    hwm_kb: int
    cpu_s: float


def proc_stat(pid: int) -> ProcStat:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"^VmHWM:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    # Fields after the command name (which may hold spaces): state is [0], utime [11], stime [12].
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return ProcStat(rss, hwm, cpu)


async def wait_idle(pid: int, within_s: float = 30.0, window: float = 0.5) -> ProcStat:
    """Until the process spends < 2% of a core over ``window`` (bounded)."""
    deadline = time.monotonic() + within_s
    last = proc_stat(pid)
    while True:
        await asyncio.sleep(window)
        now = proc_stat(pid)
        if now.cpu_s - last.cpu_s <= 0.02 * window or time.monotonic() > deadline:
            return now
        last = now


@dataclass
class Scale:
    services: int
    instances: int
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    hwm_after_mb: float = 0.0
    cpu_s: float = 0.0
    poll_cpu_s: float = 0.0
    write_s: float = 0.0
    reflect_s: float = 0.0
    polls: int = 0
    e2e: Latency | None = None

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb


async def endpoints_total(api: httpx.AsyncClient) -> int:
    response = await api.get("/v1/services")
    response.raise_for_status()
    return sum(int(s["endpoints"]) for s in response.json())


async def scale_process(
    writer: Writer,
    workdir: Path,
    services: int,
    per_service: int,
    e2e_changes: int,
    bound_s: float,
) -> Scale:
    """(b): a real ``meshagent run`` with ``services`` services, then ``per_service`` each."""
    from tests.fixtures.processes import ManagedProcess

    names = [service_name(i) for i in range(services)]
    if isinstance(writer, ZooKeeperWriter):
        await writer.prepare(names)
    config_path = workdir / f"agent-{writer.name}.yaml"
    config_path.write_text(yaml.safe_dump(agent_config(writer, names)))
    process = ManagedProcess(
        [sys.executable, "-m", "agent.cli", "run", "-c", str(config_path)],
        name=f"meshagent:{writer.name}",
        log_path=workdir / f"agent-{writer.name}.log",
        env={"PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        term_timeout=20,
    )
    result = Scale(services, services * per_service)
    process.start()
    try:
        ready = await asyncio.to_thread(
            process.wait_for_line, r"meshagent ready: OpenAPI on (http://\S+)", 60
        )
        pid = process.pid
        assert pid is not None
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=ready.group(1), timeout=30, limits=limits) as api:
            await _until_async(lambda: _ready(api), 60, "readyz")
            await writer.open(api)
            # What one GET /v1/services costs the agent, to tell polling apart from the work.
            idle = await wait_idle(pid)
            for _ in range(10):
                await endpoints_total(api)
            result.poll_cpu_s = (proc_stat(pid).cpu_s - idle.cpu_s) / 10
            before = await wait_idle(pid)
            result.rss_before_mb = before.rss_kb / 1024
            t0 = time.perf_counter()
            await writer.add_many([(n, i) for n in names for i in range(per_service)])
            result.write_s = time.perf_counter() - t0
            deadline = time.monotonic() + 300
            while True:
                result.polls += 1
                seen = await endpoints_total(api)
                if seen == result.instances:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the agent shows {seen} of {result.instances} instances after 300 s"
                    )
                process.ensure_running()
                await asyncio.sleep(0.2)
            result.reflect_s = time.perf_counter() - t0
            after = await wait_idle(pid)
            result.rss_after_mb = after.rss_kb / 1024
            result.hwm_after_mb = after.hwm_kb / 1024
            result.cpu_s = after.cpu_s - before.cpu_s
            if e2e_changes:
                result.e2e = await e2e_latency(writer, api, names[0], e2e_changes, bound_s)
        return result
    finally:
        await writer.close()
        await asyncio.to_thread(process.stop)


async def _ready(api: httpx.AsyncClient) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await api.get("/readyz")).status_code == 200
    return False


async def _until_async(
    condition: Callable[[], Awaitable[bool]], within_s: float, what: str
) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def e2e_latency(
    writer: Writer, api: httpx.AsyncClient, service: str, changes: int, bound_s: float
) -> Latency:
    """Against the real process: poll GET /v1/services/{s}/instances as fast as it answers."""

    async def reflected(instance_id: str, present: bool) -> float:
        while True:
            response = await api.get(f"/v1/services/{service}/instances")
            ids = {i["id"] for i in response.json()}
            if (instance_id in ids) == present:
                return time.perf_counter()

    return await change_loop(writer, service, changes, bound_s, reflected, warmup=10)


# -- the run -----------------------------------------------------------------------------------


def machine_note() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, uvloop {uvloop.__version__}"
    )


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


async def run(args: argparse.Namespace) -> int:
    print(f"machine: {machine_note()}")
    print(
        f"latency: {args.changes} changes (after {args.warmup} warm-up), "
        f"{args.baseline} standing providers; scale: {args.services} services x "
        f"{args.per_service} instances\n"
    )
    latencies: dict[str, Latency] = {}
    scales: dict[str, Scale] = {}
    for name in args.registries:
        writer = WRITERS[name]()
        reason = skip_reason(writer)
        if reason is not None:
            print(f"[{name}] skipped: {reason}")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            workdir = Path(tmp)
            writer.start(workdir)
            try:
                if "latency" in args.parts:
                    print(f"[{name}] (a) in-process latency ...", flush=True)
                    latencies[name] = await latency_in_process(
                        writer, args.changes, args.bound, args.baseline, args.warmup
                    )
                    print(f"[{name}]     {json.dumps(latencies[name].row(), default=fmt)}")
                if "scale" in args.parts:
                    print(f"[{name}] (b) agent process at scale ...", flush=True)
                    scales[name] = await scale_process(
                        writer, workdir, args.services, args.per_service, args.e2e, args.bound
                    )
            finally:
                writer.stop()
    report(latencies, scales)
    return 0


def report(latencies: dict[str, Latency], scales: dict[str, Scale]) -> None:
    if latencies:
        print("\n(a) change -> cluster, in-process (ms)")
        print(
            f"{'registry':<10} {'n':>4} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} "
            f"{'write p50':>9} {'timeouts':>8}  p99 < {P99_TARGET_MS:.0f} ms"
        )
        for name, lat in latencies.items():
            r = lat.row()
            met = "met" if r["p99"] < P99_TARGET_MS and not lat.timeouts else "MISSED"
            print(
                f"{name:<10} {r['n']:>4} {fmt(r['p50']):>7} {fmt(r['p90']):>7} "
                f"{fmt(r['p99']):>7} {fmt(r['max']):>7} {fmt(r['write_p50']):>9} "
                f"{r['timeouts']:>8}  {met}"
            )
    if scales:
        print("\n(b) meshagent run process, instances added after start")
        print(
            f"{'registry':<10} {'services':>8} {'instances':>9} {'RSS before':>10} "
            f"{'RSS after':>9} {'growth':>7} {'CPU s':>6} {'written s':>9} {'reflected s':>11}"
            f" {'lag s':>5}  growth < {RSS_TARGET_MB:.0f} MB"
        )
        for name, s in scales.items():
            met = "met" if s.rss_growth_mb < RSS_TARGET_MB else "MISSED"
            print(
                f"{name:<10} {s.services:>8} {s.instances:>9} {fmt(s.rss_before_mb, 1):>10} "
                f"{fmt(s.rss_after_mb, 1):>9} {fmt(s.rss_growth_mb, 1):>7} {fmt(s.cpu_s):>6} "
                f"{fmt(s.write_s):>9} {fmt(s.reflect_s):>11} {fmt(s.reflect_s - s.write_s):>5}"
                f"  {met}"
            )
        print(
            "written s: until the writer's last write was acknowledged; reflected s: until "
            "GET /v1/services showed all (polled every 0.2 s); lag = the difference"
        )
        for name, s in scales.items():
            print(
                f"{name}: {s.polls} polls of GET /v1/services during the run, "
                f"~{s.poll_cpu_s * 1000:.1f} ms CPU each (included above); VmHWM "
                f"{fmt(s.hwm_after_mb, 1)} MB"
            )
        e2e = {name: s.e2e for name, s in scales.items() if s.e2e is not None}
        if e2e:
            print("\nend to end on the loaded process: write -> GET .../instances shows it (ms)")
            print(f"{'registry':<10} {'n':>4} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
            for name, lat in e2e.items():
                r = lat.row()
                print(
                    f"{name:<10} {r['n']:>4} {fmt(r['p50']):>7} {fmt(r['p90']):>7} "
                    f"{fmt(r['p99']):>7} {fmt(r['max']):>7}  timeouts {r['timeouts']}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.registry", description=__doc__.split("\n")[0])
    parser.add_argument("--registries", nargs="+", default=list(WRITERS), choices=list(WRITERS))
    parser.add_argument("--parts", nargs="+", default=["latency", "scale"])
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=10, help="standing providers in (a)")
    parser.add_argument("--bound", type=float, default=5.0, help="seconds one change may take")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--per-service", type=int, default=10)
    parser.add_argument("--e2e", type=int, default=200, help="end-to-end changes (0: none)")
    args = parser.parse_args(argv)
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
