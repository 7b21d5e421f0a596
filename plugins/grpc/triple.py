"""Dubbo 3 Triple providers, reached as the gRPC servers they are on the wire.

Triple speaks gRPC over HTTP/2 (``application/grpc`` and ``application/grpc+proto``; the
path is ``/<interface>/<method>``), so the listener and JSON invocation call a Triple
provider like any other. One thing differs: a Triple provider exported with a version or
group serves it only to calls whose ``tri-service-version`` / ``tri-service-group``
headers name it, and a gRPC client does not know them. The agent does: the provider's
registration (a ``tri://`` URL in ZooKeeper, Nacos metadata) carries ``version`` and
``group``, so calls to it get those headers unless the client sent its own. An
application-level registration (ZooKeeper ``/services/<app>``) does not say them per
interface; there the service's own selectors (``services[].attributes``: the version and
group the agent was told to call) are sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TRIPLE = "tri"

# Registration parameter → the Triple request header that selects by it.
_SELECTORS = (("version", "tri-service-version"), ("group", "tri-service-group"))


def is_triple(metadata: Mapping[str, str]) -> bool:
    return metadata.get("protocol") == TRIPLE


def triple_headers(
    metadata: Mapping[str, str],
    sent: Sequence[tuple[str, Any]],
    attributes: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The Triple selector headers a call to the endpoint with ``metadata`` needs, beyond
    the ``sent`` ones (an application's own header wins); ``attributes``: the service's
    selectors, for registrations that do not carry them."""
    if not is_triple(metadata):
        return []
    have = {key for key, _ in sent}
    # A selector that matches several ("*", "a,b") names no one version or group to send.
    fallback = {k: v for k, v in (attributes or {}).items() if "*" not in v and "," not in v}
    return [
        (header, value)
        for param, header in _SELECTORS
        if (value := metadata.get(param) or fallback.get(param)) and header not in have
    ]
