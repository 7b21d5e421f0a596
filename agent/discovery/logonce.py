"""Bad data in a registry is logged once per path (znode, key), not on every watch fire."""

from __future__ import annotations

import logging
from typing import Any

_MAX_REMEMBERED = 10_000


class LogOnce:
    """Warn once per (path, message); repeats go to debug.

    ``field`` names the structured log field the path is attached as (``zk_path``,
    ``etcd_key``), so a log query can find every complaint about one registry entry.
    """

    def __init__(self, logger: logging.Logger, field: str = "zk_path") -> None:
        self._logger = logger
        self._field = field
        self._seen: set[tuple[str, str]] = set()

    def warn(self, path: str, message: str, *args: Any) -> None:
        # Keyed on the rendered text: a different problem with the same entry is news.
        key = (path, message % args if args else message)
        if key in self._seen:
            self._logger.debug("%s: " + message, path, *args)
            return
        if len(self._seen) >= _MAX_REMEMBERED:
            self._seen.clear()  # bounded memory beats perfect once-ness
        self._seen.add(key)
        self._logger.warning("%s: " + message, path, *args, extra={self._field: path})
