from __future__ import annotations

import logging

import httpx
import pytest

from agent.injector.config import InjectorConfig
from agent.injector.server import create_webhook

CONFIG = InjectorConfig(image="m:1")


def _client(max_body: int = 4096) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_webhook(CONFIG, max_body), client=("10.1.2.3", 5555))
    return httpx.AsyncClient(transport=transport, base_url="https://injector")


async def test_routes_answer_from_any_client() -> None:
    async with _client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/nope")).status_code == 404
        assert (await client.put("/inject/pod", content=b"{}")).status_code == 404
        reply = await client.post("/inject/namespace", content=b"{}")
    # A remote POST is fine (the API server is never on loopback) and bad input is allowed.
    assert reply.status_code == 200
    assert reply.json()["response"] == {"uid": "", "allowed": True}


async def test_body_over_the_limit_is_413(caplog: pytest.LogCaptureFixture) -> None:
    async with _client(max_body=1024) as client:
        reply = await client.post("/inject/pod", content=b"x" * 2048)
        assert reply.status_code == 413

        # Also when streamed without a Content-Length.
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(4):
                yield b"y" * 512

        reply = await client.post("/inject/pod", content=chunks())
        assert reply.status_code == 413


async def test_each_review_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.injector.server")
    async with _client() as client:
        await client.post("/inject/pod", content=b"garbage")
    record = next(r for r in caplog.records if "malformed body" in r.getMessage())
    assert record.levelno == logging.WARNING and record.webhook == "pod"  # type: ignore[attr-defined]
