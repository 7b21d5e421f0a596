"""Bad registry data is warned about once per entry and problem; repeats go to debug."""

from __future__ import annotations

import logging

import pytest

from agent.discovery import logonce
from agent.discovery.logonce import LogOnce

LOGGER = logging.getLogger("test.logonce")


def test_once_per_path_and_problem(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER.name)
    log = LogOnce(LOGGER, "etcd_key")
    log.warn("/a", "bad port %s", "x")
    log.warn("/a", "bad port %s", "x")  # the same: debug
    log.warn("/a", "bad port %s", "y")  # another problem with the same entry: news
    log.warn("/b", "bad port %s", "x")  # another entry
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "/a: bad port x",
        "/a: bad port y",
        "/b: bad port x",
    ]
    assert [r.etcd_key for r in warnings] == ["/a", "/a", "/b"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "/a: bad port x"
    ]


def test_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(logonce, "_MAX_REMEMBERED", 3)
    log = LogOnce(LOGGER)
    for i in range(10):
        log.warn(f"/{i}", "bad")
    assert len(log._seen) <= 3
