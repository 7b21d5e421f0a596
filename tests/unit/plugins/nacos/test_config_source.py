"""Nacos config items (plugins/nacos/config_source.py): version = MD5, empty = absent."""

from __future__ import annotations

import hashlib

from agent.discovery.config_source import ConfigKey
from plugins.nacos.config_source import item_of


def test_item_version_is_the_content_md5_and_empty_is_absent() -> None:
    key = ConfigKey("g", "d")
    item = item_of(key, "a: 1")
    assert item is not None and item.version == hashlib.md5(b"a: 1").hexdigest()
    assert item_of(key, "") is None and item_of(key, None) is None
