"""Bad data in a registry is logged once per path, not on every watch fire."""

from __future__ import annotations

import logging
from typing import Any

_MAX_REMEMBERED = 10_000


class LogOnce:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[tuple[str, str]] = set()

    def warn(self, path: str, message: str, *args: Any) -> None:
        key = (path, message)
        if key in self._seen:
            self._logger.debug("%s: " + message, path, *args)
            return
        if len(self._seen) >= _MAX_REMEMBERED:
            self._seen.clear()  # bounded memory beats perfect once-ness
        self._seen.add(key)
        self._logger.warning("%s: " + message, path, *args, extra={"zk_path": path})
