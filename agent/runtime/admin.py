"""An ASGI app served by uvicorn inside the agent's own event loop (the injector's webhook,
with TLS); and :func:`bind`, the API sockets' one way to listen.

The agent's own API has its own HTTP/1.1 server (agent/api/http1.py): uvicorn is imported
only when an :class:`AdminServer` is made, so the agent never loads it. We bind the socket
ourselves (so a port in use is a clean startup error) and keep uvicorn from installing
signal handlers: the agent owns SIGTERM and drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from agent.runtime.agent import StartupError

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def _embedded_server(config: Any) -> Any:
    import uvicorn

    class EmbeddedServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return EmbeddedServer(config)


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The API's listening socket. ``reuse_port``: shared with the agent's other processes
    (``workers: N``, docs/workers.md)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"admin: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class AdminServer:
    def __init__(
        self, app: ASGIApp, sock: socket.socket, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        import uvicorn

        self.socket = sock
        config = uvicorn.Config(
            app,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        if ssl_context is not None:
            # uvicorn builds its SSL context from file names in load(); loading first and
            # replacing it lets a caller bring a context it keeps control of (the injector
            # swaps certificates on rotation). serve() does not load a loaded config again.
            config.load()
            config.ssl = ssl_context
        self._server = _embedded_server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        name = self.socket.getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve([self.socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise StartupError("admin server stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
