"""A real etcd 3.4 on free 127.0.0.1 ports: one per session, plus private ones per test.

The shared server is for tests that only read and write keys (each under its own prefix);
tests that restart, freeze or compact the server take ``private_etcd``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aetcd
import pytest

from plugins.etcd.config import EtcdConfig
from plugins.etcd.registry import EtcdRegistry
from tests.fixtures.etcd import EtcdServer

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def etcd(etcd_server: EtcdServer) -> EtcdServer:
    """The shared server, started again if a previous test left it down."""
    if not etcd_server.running:
        etcd_server.start()
    etcd_server.thaw()
    return etcd_server


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A server of this test's own, free to restart, freeze and compact."""
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses, so tests can share the session's server."""
    return f"/meshagent-test/{next(_prefixes)}/services"


class Kv:
    """A second etcd client, playing the other providers and the operator."""

    def __init__(self, client: aetcd.Client) -> None:
        self.client = client

    async def put(self, key: str | bytes, value: str | bytes, lease: int | None = None) -> int:
        reply = await self.client.put(_b(key), _b(value), lease=lease)
        return int(reply.header.revision)

    async def get(self, key: str | bytes) -> Any:
        """The KeyValue of ``key``, or None."""
        reply = await self.client.get(_b(key))
        return reply

    async def delete(self, key: str | bytes) -> int:
        reply = await self.client.delete(_b(key))
        assert reply is not None, f"{key!r} was not there to delete"
        return int(reply.header.revision)

    async def keys(self, prefix: str) -> dict[str, Any]:
        reply = await self.client.get_prefix(_b(prefix))
        return {kv.key.decode(): kv for kv in reply}

    async def revision(self) -> int:
        reply = await self.client.put(b"/meshagent-test/tick", b"")
        return int(reply.header.revision)

    async def compact(self, revision: int) -> None:
        await self.client.compact(revision, physical=True)

    async def revoke(self, lease_id: int) -> None:
        await self.client.revoke_lease(lease_id)

    async def ttl(self, lease_id: int) -> int:
        return int((await self.client.get_lease_info(lease_id, keys=False)).TTL)


def _b(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


KvFactory = Callable[[EtcdServer], Awaitable[Kv]]


@pytest.fixture
async def kv_for() -> AsyncIterator[KvFactory]:
    clients: list[aetcd.Client] = []

    async def make(server: EtcdServer) -> Kv:
        client = aetcd.Client(host=server.host, port=server.port, timeout=5)
        await client.connect()
        clients.append(client)
        return Kv(client)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def kv(kv_for: KvFactory, etcd: EtcdServer) -> Kv:
    return await kv_for(etcd)


RegistryFactory = Callable[..., Awaitable[EtcdRegistry]]


def etcd_config(endpoint: str, prefix: str, **overrides: Any) -> EtcdConfig:
    raw: dict[str, Any] = {
        "endpoints": [endpoint],
        "prefix": prefix,
        "lease_ttl_s": 2,
        "connect_timeout_s": 10,
        "require_connection": True,
        "request_timeout_s": 2,
        "reconnect": {"base_s": 0.05, "max_s": 0.5, "jitter": 0.2},
    }
    raw.update(overrides)
    return EtcdConfig.model_validate(raw)


@pytest.fixture
async def make_registry(prefix: str) -> AsyncIterator[RegistryFactory]:
    """Started registries on ``endpoint`` (closed after the test)."""
    made: list[EtcdRegistry] = []

    async def make(endpoint: str, *, start: bool = True, **overrides: Any) -> EtcdRegistry:
        registry = EtcdRegistry(etcd_config(endpoint, overrides.pop("prefix", prefix), **overrides))
        made.append(registry)
        if start:
            await registry.start()
        return registry

    yield make
    for registry in made:
        await registry.close()


@pytest.fixture
async def registry(make_registry: RegistryFactory, etcd: EtcdServer) -> EtcdRegistry:
    return await make_registry(etcd.endpoint)
