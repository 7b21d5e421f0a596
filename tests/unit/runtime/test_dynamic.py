from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel, ConfigDict, Field

from agent.discovery.config_source import ConfigItem, ConfigKey, MemoryConfigSource
from agent.runtime.dynamic import WatchedDocument, parse_document

KEY = ConfigKey("meshagent", "settings")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_ms: int = Field(default=1000, ge=1)


def test_parse_document_lists_every_error_with_its_path() -> None:
    with pytest.raises(ValueError) as caught:
        parse_document("timeout_ms: -1\nextra: 2\n", Settings)
    lines = str(caught.value).splitlines()
    assert any(line.startswith("timeout_ms:") for line in lines)
    assert any(line.startswith("extra:") for line in lines)


def test_parse_document_refuses_what_is_not_yaml() -> None:
    with pytest.raises(ValueError, match="not YAML"):
        parse_document("a: [1, 2", Settings)


def test_empty_document_is_the_defaults() -> None:
    assert parse_document("", Settings) == Settings()


async def wait_handled(document: WatchedDocument[Settings]) -> None:
    await asyncio.wait_for(document.changed.wait(), 5)
    document.changed.clear()


async def test_good_versions_apply_and_a_bad_one_is_rejected_whole() -> None:
    source = MemoryConfigSource()
    applied: list[Settings | None] = []
    document = WatchedDocument(source, KEY, Settings, applied.append)
    document.start()
    await wait_handled(document)  # absent at start: the static settings (None)
    assert applied == [None]
    good = await source.put(KEY, "timeout_ms: 250")
    await wait_handled(document)
    assert applied[-1] == Settings(timeout_ms=250)
    assert document.status.version == good.version
    bad = await source.put(KEY, "timeout_ms: 0")
    await wait_handled(document)
    assert applied[-1] == Settings(timeout_ms=250)  # the previous one stays
    assert document.status.version == good.version
    assert document.status.rejected_version == bad.version
    assert document.status.errors and document.status.errors[0].startswith("timeout_ms:")
    await source.delete(KEY)
    await wait_handled(document)
    assert applied[-1] is None and document.status.errors == []
    await document.close()


async def test_an_apply_that_refuses_keeps_the_previous_settings() -> None:
    def apply(value: Settings | None) -> None:
        if value is not None and value.timeout_ms > 10_000:
            raise ValueError("timeout_ms: over the service's deadline")

    document = WatchedDocument(MemoryConfigSource(), KEY, Settings, apply)
    assert document.handle(ConfigItem(KEY, "timeout_ms: 50", "1"))
    assert not document.handle(ConfigItem(KEY, "timeout_ms: 50000", "2"))
    assert document.status.version == "1"
    assert document.status.errors == ["timeout_ms: over the service's deadline"]


async def test_a_failing_watch_is_retried_and_reported() -> None:
    class Flaky(MemoryConfigSource):
        def __init__(self) -> None:
            super().__init__("flaky")
            self.failures = 1

        async def watch(self, key: ConfigKey) -> AsyncIterator[ConfigItem | None]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("server unreachable")
            async for item in super().watch(key):
                yield item

    source = Flaky()
    applied: list[Settings | None] = []
    document = WatchedDocument(source, KEY, Settings, applied.append, retry_s=0.01)
    document.start()
    await wait_handled(document)
    assert document.status.watch_error == "server unreachable"
    await wait_handled(document)
    assert document.status.watch_error == "" and applied == [None]
    await document.close()
