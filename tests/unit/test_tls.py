from __future__ import annotations

import asyncio
import logging
import ssl
import types
from pathlib import Path

import pytest

from agent.tls import RotatingCertificate
from tests.fixtures.tls import issue, make_ca


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


async def test_mutual_tls_contexts_refuse_a_peer_of_another_ca(tmp_path: Path) -> None:
    ca, rogue = make_ca(), make_ca("rogue")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    server_cert, server_key, _ = issue(ca, tmp_path / "server", hosts=("peer",))
    client_cert, client_key, _ = issue(ca, tmp_path / "client", hosts=("peer",))
    rogue_cert, rogue_key, _ = issue(rogue, tmp_path / "rogue", hosts=("peer",))
    server = RotatingCertificate(server_cert, server_key, tmp_path / "ca.pem")
    good = RotatingCertificate(client_cert, client_key, tmp_path / "ca.pem")
    bad = RotatingCertificate(rogue_cert, rogue_key, tmp_path / "ca.pem")
    assert good.client_context() is good.client_context()  # kept while the files stay

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(2))
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server.context)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=good.client_context(), server_hostname="peer"
        )
        writer.write(b"ok")
        assert await reader.readexactly(2) == b"ok"
        writer.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=bad.client_context(), server_hostname="peer"
        )
        writer.write(b"no")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await reader.readexactly(2)
        writer.close()


def test_a_client_context_needs_the_ca(tmp_path: Path) -> None:
    cert, key, _ = issue(make_ca(), tmp_path)
    with pytest.raises(ValueError, match="CA"):
        RotatingCertificate(cert, key).client_context()
