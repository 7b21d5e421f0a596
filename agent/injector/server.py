"""The webhook over HTTPS: an ASGI app on uvicorn (the agent's admin server), a body limit,
and a TLS certificate that follows its files when they are rotated.

Routes: ``POST /inject/pod`` and ``POST /inject/namespace`` (one per webhook the chart
registers, see :class:`~agent.injector.review.Source`), ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
from pathlib import Path

from starlette.types import Receive, Scope, Send

from agent.api.limits import ApiGuard
from agent.injector.config import DEFAULT_MAX_BODY_BYTES, InjectorConfig
from agent.injector.review import Source, Verdict, review

log = logging.getLogger(__name__)

ROUTES = {"/inject/pod": Source.POD, "/inject/namespace": Source.NAMESPACE}


def _load(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class RotatingCertificate:
    """A server context whose certificate is re-read when its files change.

    A Secret mounted as a volume (cert-manager renews it) is updated in place by the
    kubelet; the API server keeps its connections open, so handshakes are rare and checking
    the files' stat on each ClientHello costs nothing. A new pair that does not load (say,
    half-written) is logged and the previous one kept.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self._stamp = self._stat()
        self._current = _load(self.cert, self.key)
        self.context = _load(self.cert, self.key)
        self.context.sni_callback = self._on_client_hello

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in (self.cert, self.key):
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._current = _load(self.cert, self.key)
                self._stamp = stamp
                log.info("webhook certificate reloaded", extra={"cert": str(self.cert)})
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "webhook certificate not reloaded, keeping the previous one",
                extra={"cert": str(self.cert), "error": str(exc)},
            )
        connection.context = self._current


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _log(verdict: Verdict, source: Source) -> None:
    fields = {"uid": verdict.uid, "pod": verdict.pod, "webhook": source.value}
    if verdict.injected:
        log.info("injected", extra=fields)
    elif not verdict.allowed:
        log.warning("denied: %s", verdict.reason, extra=fields)
    elif not verdict.pod:
        # Not a pod review we understood: worth a warning, the API server should not send it.
        log.warning("allowed unpatched: %s", verdict.reason, extra=fields)
    else:
        log.info("skipped: %s", verdict.reason, extra=fields)


class WebhookApp:
    """The ASGI app; wrapped in :class:`ApiGuard` for the body limit."""

    def __init__(self, config: InjectorConfig) -> None:
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method in ("GET", "HEAD"):
            await _respond(send, 200, b'{"status":"ok"}', b"application/json")
            return
        source = ROUTES.get(path)
        if source is None or method != "POST":
            await _respond(send, 404, b'{"detail":"not found"}', b"application/json")
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        verdict = review(b"".join(chunks), source, self.config)
        _log(verdict, source)
        body = json.dumps(verdict.response()).encode()
        await _respond(send, 200, body, b"application/json")


def create_webhook(
    config: InjectorConfig, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> ApiGuard:
    # The API server is never on loopback: writes (POSTs) are allowed from anywhere; what
    # is refused is a body over the limit (413, which the API server treats as a failed
    # call and answers per the webhook's failurePolicy).
    return ApiGuard(WebhookApp(config), max_body_bytes=max_body_bytes, allow_remote_writes=True)


async def serve(
    config: InjectorConfig,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> int:
    from agent.runtime.admin import AdminServer, bind

    tls = RotatingCertificate(cert, key)
    server = AdminServer(create_webhook(config, max_body_bytes), bind(host, port), tls.context)
    await server.start()
    bound_host, bound_port = server.address
    print(f"meshagent injector ready on https://{bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()
    log.info("injector stopped")
    return 0
