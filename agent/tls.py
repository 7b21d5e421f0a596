"""TLS contexts whose certificates follow their files: rotated without a restart.

A Secret mounted as a volume (cert-manager renews it) is updated in place by the kubelet.
Handshakes are rare next to the bytes of the connections they open, so the files' stat is
checked on each one: a server swaps the context in its SNI callback (the ClientHello), a
client takes :meth:`RotatingCertificate.client_context` per connection. A new set that does
not load (say, half-written) is logged and the previous one kept.

With a ``ca`` the contexts are mutual TLS: the server asks every client for a certificate
signed by that CA and refuses one without; the client checks the server's against it.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]


def _server(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _client(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    return context


class RotatingCertificate:
    """A certificate and key (and for mutual TLS the peers' CA) read again when one of
    the files changes. ``what`` names it in log lines."""

    def __init__(self, cert: Path, key: Path, ca: Path | None = None, what: str = "tls") -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.ca = Path(ca) if ca is not None else None
        self.what = what
        self._stamp = self._stat()
        self._current = _server(self.cert, self.key, self.ca)
        self._client: ssl.SSLContext | None = None
        # The context a server is started with: its SNI callback hands each handshake the
        # current one.
        self.context = _server(self.cert, self.key, self.ca)
        self.context.sni_callback = self._on_client_hello

    def _paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.ca is None else (self.cert, self.key, self.ca)

    def _stat(self) -> Stamp:
        stamps = []
        for path in self._paths():
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _reload(self) -> None:
        """Load the files again if they changed; keep the previous contexts if not loadable."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return
            self._current = _server(self.cert, self.key, self.ca)
            self._client = None
            self._stamp = stamp
            log.info("%s certificate reloaded", self.what, extra={"cert": str(self.cert)})
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "%s certificate not reloaded, keeping the previous one",
                self.what,
                extra={"cert": str(self.cert), "error": str(exc)},
            )

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        self._reload()
        connection.context = self._current

    def client_context(self) -> ssl.SSLContext:
        """The context to connect to a peer with (mutual TLS: needs ``ca``)."""
        if self.ca is None:
            raise ValueError("a client context needs the peers' CA")
        self._reload()
        if self._client is None:
            self._client = _client(self.cert, self.key, self.ca)
        return self._client
