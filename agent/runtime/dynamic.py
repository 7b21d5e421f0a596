"""Settings that change at run time: a document in the config source, applied whole or not.

A :class:`WatchedDocument` watches one key of a :class:`ConfigSource`, parses each new
value (YAML, so JSON too), validates it with a pydantic model and hands the result to an
``apply`` callback. A document that does not parse or validate is rejected whole: the
previous settings stay in force, and the rejection (its version and every error with its
path) is kept for the API and logged. A deleted key applies ``None`` (the static config's
settings again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.discovery.config_source import ConfigItem, ConfigKey, ConfigSource

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass
class DocumentStatus:
    key: str
    source: str
    # The version in force (None: nothing from the source; the static config applies).
    version: str | None = None
    applied_at: float | None = None
    # The last rejected version and why, until a later version applies.
    rejected_version: str | None = None
    errors: list[str] = field(default_factory=list)
    # The source could not be watched (unreachable, refused): the reason, else "".
    watch_error: str = ""


def parse_document(content: str, model: type[M]) -> M:
    """Parse and validate; raises ValueError with one ``path: message`` line per error."""
    try:
        data = yaml.safe_load(content) if content.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"(document): not YAML/JSON: {exc}") from None
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(part) for part in error['loc']) or '(document)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ValueError("\n".join(lines)) from None


class WatchedDocument(Generic[M]):
    def __init__(
        self,
        source: ConfigSource,
        key: ConfigKey,
        model: type[M],
        apply: Callable[[M | None], None],
        retry_s: float = 1.0,
    ) -> None:
        self.source = source
        self.key = key
        self.model = model
        self._apply = apply
        self._retry_s = retry_s
        self.status = DocumentStatus(str(key), source.name)
        self._task: asyncio.Task[None] | None = None
        # Set each time a version has been handled (applied or rejected): tests and
        # callers wait on it instead of sleeping.
        self.changed = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"watch {self.key}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def handle(self, item: ConfigItem | None) -> bool:
        """Apply one value; True when it is now in force. Exposed for tests and reloads."""
        status = self.status
        if item is None:
            self._apply(None)
            status.version, status.applied_at = None, time.time()
            status.rejected_version, status.errors = None, []
            log.info("dynamic settings removed", extra={"key": status.key})
            return True
        try:
            value = parse_document(item.content, self.model)
            self._apply(value)
        except ValueError as exc:
            status.rejected_version = item.version
            status.errors = str(exc).splitlines()
            log.warning(
                "dynamic settings rejected, the previous stay in force",
                extra={"key": status.key, "version": item.version, "errors": status.errors},
            )
            return False
        status.version, status.applied_at = item.version, time.time()
        status.rejected_version, status.errors = None, []
        log.info("dynamic settings applied", extra={"key": status.key, "version": item.version})
        return True

    async def _run(self) -> None:
        while True:
            try:
                async for item in self.source.watch(self.key):
                    self.status.watch_error = ""
                    self.handle(item)
                    self.changed.set()
                return
            except Exception as exc:  # a source failure must not end the watch
                self.status.watch_error = str(exc) or type(exc).__name__
                log.warning(
                    "config watch failed, retrying",
                    extra={"key": self.status.key, "error": self.status.watch_error},
                )
                self.changed.set()
                await asyncio.sleep(self._retry_s)
