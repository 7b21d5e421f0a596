"""The webhook over HTTPS: an ASGI app on uvicorn (the agent's admin server), a body limit,
and a TLS certificate that follows its files when they are rotated.

Routes: ``POST /inject/pod`` and ``POST /inject/namespace`` (one per webhook the chart
registers, see :class:`~agent.injector.review.Source`), ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from starlette.types import Receive, Scope, Send

from agent.api.limits import ApiGuard
from agent.injector.config import DEFAULT_MAX_BODY_BYTES, InjectorConfig
from agent.injector.review import Source, Verdict, review
from agent.tls import RotatingCertificate

log = logging.getLogger(__name__)

ROUTES = {"/inject/pod": Source.POD, "/inject/namespace": Source.NAMESPACE}


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

    tls = RotatingCertificate(cert, key, what="webhook")
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
