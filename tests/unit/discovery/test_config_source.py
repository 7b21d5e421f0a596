from __future__ import annotations

import asyncio

import pytest

from agent.discovery.config_source import (
    MAX_CONTENT_BYTES,
    ConfigItem,
    ConfigKey,
    ConfigSourceError,
    LatestValue,
    MemoryConfigSource,
)
from plugins.local import LocalRegistry, LocalRegistryConfig

KEY = ConfigKey("meshagent", "rules.yaml")


@pytest.mark.parametrize("bad", ["", "a/b", "..", "sp ace", "x" * 257, "ümlaut"])
def test_key_parts_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        ConfigKey(bad, "ok")
    with pytest.raises(ValueError, match="letters, digits"):
        ConfigKey("ok", bad)


def test_key_allows_nacos_characters() -> None:
    assert str(ConfigKey("DEFAULT_GROUP", "providers:com.acme.Api:1.0.0:")) == (
        "DEFAULT_GROUP/providers:com.acme.Api:1.0.0:"
    )


async def test_get_put_delete() -> None:
    source = MemoryConfigSource()
    assert await source.get(KEY) is None
    first = await source.put(KEY, "a: 1")
    second = await source.put(KEY, "a: 2")
    assert first.version != second.version
    assert await source.get(KEY) == second
    assert await source.delete(KEY) is True
    assert await source.delete(KEY) is False
    assert await source.get(KEY) is None


async def test_put_refuses_oversized_content() -> None:
    source = MemoryConfigSource()
    with pytest.raises(ConfigSourceError, match="over the"):
        await source.put(KEY, "x" * (MAX_CONTENT_BYTES + 1))
    assert await source.get(KEY) is None


async def test_watch_yields_current_then_changes() -> None:
    source = MemoryConfigSource()
    watch = source.watch(KEY)
    assert await anext(watch) is None
    await source.put(KEY, "v1")
    item = await asyncio.wait_for(anext(watch), 5)
    assert isinstance(item, ConfigItem) and item.content == "v1"
    await source.delete(KEY)
    assert await asyncio.wait_for(anext(watch), 5) is None
    await watch.aclose()
    assert not source._watchers


async def test_slow_watcher_sees_only_the_latest_value() -> None:
    source = MemoryConfigSource()
    await source.put(KEY, "v0")
    watch = source.watch(KEY)
    item = await anext(watch)
    assert item is not None and item.content == "v0"
    for n in range(1, 50):
        await source.put(KEY, f"v{n}")
    item = await asyncio.wait_for(anext(watch), 5)
    assert item is not None and item.content == "v49"
    await watch.aclose()


async def test_latest_value_waits_until_set() -> None:
    slot = LatestValue()
    reader = asyncio.ensure_future(slot.next())
    await asyncio.sleep(0)
    assert not reader.done()
    slot.set(None)
    assert await asyncio.wait_for(reader, 5) is None


async def test_local_registry_offers_a_memory_source() -> None:
    registry = LocalRegistry(LocalRegistryConfig())
    source = registry.config_source()
    await source.put(KEY, "x")
    assert (await registry.config_source().get(KEY)) is not None
