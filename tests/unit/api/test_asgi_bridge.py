"""The ASGI bridge: the management app built on first use, its replies whole or streamed,
and its failures answered as problem details, served on the API's own HTTP/1.1 server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from agent.api.asgi_bridge import AsgiBridge
from agent.api.http1 import ApiServer, Http1Limits
from agent.runtime.admin import bind


def management_app(closed: list[str]) -> FastAPI:
    app = FastAPI()

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three"):
            await asyncio.sleep(0)
            yield part

    async def close() -> None:
        closed.append("closed")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks(), background=BackgroundTask(close))

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"got": body}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a management bug")

    return app


async def test_the_app_is_built_on_first_use_and_serves_whole_and_streamed_replies() -> None:
    closed: list[str] = []
    built: list[int] = []

    def factory() -> Any:
        built.append(1)
        return management_app(closed)

    sock = bind("127.0.0.1", 0)
    bridge = AsgiBridge(factory, sock.getsockname())
    server = ApiServer(bridge, sock, Http1Limits())
    await server.start()
    assert not bridge.loaded
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            # Streams on one keep-alive connection, one after the other: each is whole.
            for _ in range(3):
                reply = await client.get("/stream")
                assert reply.status_code == 200 and reply.text == "one two three"
            assert closed == ["closed"] * 3
            echoed = await client.post("/echo", json={"a": 1})
            assert echoed.json() == {"got": {"a": 1}}
            invalid = await client.post("/echo", content=b"[1]")
            assert invalid.status_code == 422  # FastAPI's own validation, passed through
            failed = await client.get("/boom")
            assert failed.status_code == 500
            assert (await client.get("/stream")).text == "one two three"
        assert built == [1]
    finally:
        await server.stop(grace_s=0.1)
