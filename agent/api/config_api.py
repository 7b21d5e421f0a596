"""``/v1/config``: the config source (Nacos, ZooKeeper, or the embedded one) for the local app.

Reads are open; PUT and DELETE need ``config_api.allow_writes`` (and, as every state-changing
route, loopback unless ``admin.allow_remote_writes``: the ApiGuard middleware). A watch is a
server-sent event stream: the current value, then each change, until ``watch_max_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from agent.api import problems
from agent.discovery.config_source import (
    MAX_CONTENT_BYTES,
    ConfigItem,
    ConfigKey,
    ConfigSource,
    ConfigSourceError,
)
from agent.runtime.agent import Agent

EVENT_STREAM = "text/event-stream"


class ConfigDocument(BaseModel):
    group: str
    data_id: str
    content: str
    version: str


class ConfigWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Annotated[str, Field(max_length=MAX_CONTENT_BYTES)]


class SettingsStatus(BaseModel):
    key: str
    version: str | None = Field(description="The version in force; null: the static config")
    applied_at: float | None
    rejected_version: str | None = Field(description="The last rejected version, if any")
    errors: list[str] = Field(description="Why it was rejected: one line per error path")
    watch_error: str


class ConfigStatus(BaseModel):
    source: str | None = Field(description="The registry serving configuration; null: none")
    connected: bool
    detail: str
    writes_enabled: bool
    watch_max_s: float
    settings: SettingsStatus | None = Field(
        default=None, description="The agent's dynamic settings document (dynamic_settings)"
    )


def _document(item: ConfigItem) -> ConfigDocument:
    return ConfigDocument(
        group=item.key.group, data_id=item.key.data_id, content=item.content, version=item.version
    )


def _settings_status(agent: Agent) -> SettingsStatus | None:
    document = agent.settings_document
    if document is None:
        return None
    state = document.status
    return SettingsStatus(
        key=state.key,
        version=state.version,
        applied_at=state.applied_at,
        rejected_version=state.rejected_version,
        errors=list(state.errors),
        watch_error=state.watch_error,
    )


def _sse(event: str, payload: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def router(agent: Agent) -> APIRouter:
    api = APIRouter(prefix="/v1/config", tags=["config"])
    settings = agent.config.config_api

    def source() -> ConfigSource:
        found = agent.config_source()
        if found is None:
            raise ConfigSourceError("no configured registry offers a config source")
        return found[1]

    def key_of(group: str, data_id: str) -> ConfigKey:
        try:
            return ConfigKey(group, data_id)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    @api.get("", response_model=ConfigStatus)
    async def status() -> ConfigStatus:
        found = agent.config_source()
        name = found[0] if found is not None else None
        registry = agent.registries.get(name) if name is not None else None
        state = registry.status() if registry is not None else None
        return ConfigStatus(
            source=name,
            connected=state.connected if state is not None else False,
            detail=state.detail if state is not None else "no config source",
            writes_enabled=settings.allow_writes,
            watch_max_s=settings.watch_max_s,
            settings=_settings_status(agent),
        )

    @api.get(
        "/{group}/{data_id}",
        response_model=ConfigDocument,
        responses={404: {"description": "No such document"}},
    )
    async def get(group: str, data_id: str) -> Response:
        item = await source().get(key_of(group, data_id))
        if item is None:
            return problems.problem(404, f"no config {group}/{data_id}")
        return Response(_document(item).model_dump_json(), media_type="application/json")

    @api.put(
        "/{group}/{data_id}",
        response_model=ConfigDocument,
        responses={403: {"description": "Writes are not enabled (config_api.allow_writes)"}},
    )
    async def put(group: str, data_id: str, body: Annotated[ConfigWrite, Body()]) -> Response:
        if not settings.allow_writes:
            return problems.problem(403, "config writes are disabled (config_api.allow_writes)")
        item = await source().put(key_of(group, data_id), body.content)
        return Response(_document(item).model_dump_json(), media_type="application/json")

    @api.delete(
        "/{group}/{data_id}",
        status_code=204,
        responses={403: {"description": "Writes are not enabled"}, 404: {"description": "None"}},
    )
    async def delete(group: str, data_id: str) -> Response:
        if not settings.allow_writes:
            return problems.problem(403, "config writes are disabled (config_api.allow_writes)")
        if not await source().delete(key_of(group, data_id)):
            return problems.problem(404, f"no config {group}/{data_id}")
        return Response(status_code=204)

    @api.get(
        "/{group}/{data_id}/watch",
        response_class=StreamingResponse,
        responses={200: {"content": {EVENT_STREAM: {}}}},
    )
    async def watch(group: str, data_id: str) -> StreamingResponse:
        key = key_of(group, data_id)
        watched = source()

        async def events() -> AsyncIterator[bytes]:
            stream = aiter(watched.watch(key))
            deadline = time.monotonic() + settings.watch_max_s
            try:
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        item = await asyncio.wait_for(anext(stream), left)
                    except TimeoutError:
                        break
                    if item is None:
                        yield _sse("absent", {"group": group, "data_id": data_id})
                    else:
                        yield _sse("value", _document(item).model_dump())
                yield _sse("end", {"reason": f"watch_max_s ({settings.watch_max_s}s) reached"})
            except ConfigSourceError as exc:
                yield _sse("error", {"detail": str(exc)})
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(events(), media_type=EVENT_STREAM)

    return api
