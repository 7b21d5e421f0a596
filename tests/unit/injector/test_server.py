from __future__ import annotations

import logging
import ssl
import types
from pathlib import Path

import httpx
import pytest

from agent.injector.config import InjectorConfig
from agent.injector.server import RotatingCertificate, create_webhook
from tests.fixtures.tls import issue, make_ca

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


def _hello(rotating: RotatingCertificate) -> ssl.SSLContext:
    connection = types.SimpleNamespace(context=rotating.context)
    rotating._on_client_hello(connection, None, rotating.context)  # type: ignore[arg-type]
    assert isinstance(connection.context, ssl.SSLContext)
    return connection.context


def test_certificate_files_are_reread_when_they_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca()
    cert, key, _ = issue(ca, tmp_path)
    rotating = RotatingCertificate(cert, key)
    first = _hello(rotating)
    assert _hello(rotating) is first  # unchanged files: the same context
    issue(ca, tmp_path)
    second = _hello(rotating)
    assert second is not first
    # A broken pair (half-written) keeps the previous certificate, and says so.
    cert.write_text("not a certificate")
    caplog.set_level(logging.INFO)
    assert _hello(rotating) is second
    assert any("not reloaded" in r.getMessage() for r in caplog.records)
    issue(ca, tmp_path)
    assert _hello(rotating) is not second


def test_an_unloadable_certificate_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("x")
    (tmp_path / "tls.key").write_text("y")
    with pytest.raises(ssl.SSLError):
        RotatingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
