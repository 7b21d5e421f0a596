"""The ``http`` active health check: a GET whose status must be one of the expected.

A TCP connect only says the port is open; an app whose workers are stuck, or which says
it is unready (503 from its readiness path), still accepts. The probe sends one request on
a fresh connection (``Connection: close``, so no pool keeps it) and passes on the status
alone: the body is never read. The runner applies the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import h11
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.cluster.host import Host
from agent.plugins import Plugin, PluginKind
from agent.runtime.health import HealthChecker

# A response head bigger than this is not a health answer (h11's default limit).
_MAX_HEAD = 16 * 1024


class HttpHealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = "/healthz"
    expected_statuses: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    # Host header; the endpoint's own address when unset.
    host: str | None = None

    @field_validator("path")
    @classmethod
    def _origin_form(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class HttpHealthChecker(HealthChecker):
    def __init__(self, config: HttpHealthConfig) -> None:
        self.config = config
        self.expected = frozenset(config.expected_statuses)

    async def check(self, host: Host) -> bool:
        instance = host.instance
        reader, writer = await asyncio.open_connection(instance.host, instance.port)
        try:
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
            authority = self.config.host or f"{instance.host}:{instance.port}"
            request = h11.Request(
                method="GET",
                target=self.config.path,
                headers=[
                    ("Host", authority),
                    ("User-Agent", "meshagent-health"),
                    ("Connection", "close"),
                ],
            )
            writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(4096))
                    continue
                if isinstance(event, h11.Response):
                    return event.status_code in self.expected
                if isinstance(event, h11.InformationalResponse):
                    continue
                return False  # closed without a response
        except h11.RemoteProtocolError:
            return False  # not HTTP, or not well-formed: not healthy
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


PLUGIN: Plugin[HealthChecker] = Plugin(
    PluginKind.HEALTH_CHECKER, "http", HttpHealthConfig, HttpHealthChecker
)
