"""Dubbo 3 Triple providers, reached as the gRPC servers they are on the wire.

Triple speaks gRPC over HTTP/2 (``application/grpc`` and ``application/grpc+proto``; the
path is ``/<interface>/<method>``), so the listener and JSON invocation call a Triple
provider like any other. One thing differs: a Triple provider exported with a version or
group serves it only to calls whose ``tri-service-version`` / ``tri-service-group``
headers name it, and a gRPC client does not know them. The agent does: the provider's
registration (a ``tri://`` URL in ZooKeeper, Nacos metadata) carries ``version`` and
``group``, so calls to it get those headers unless the client sent its own.
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
    metadata: Mapping[str, str], sent: Sequence[tuple[str, Any]]
) -> list[tuple[str, str]]:
    """The Triple selector headers a call to the endpoint with ``metadata`` needs, beyond
    the ``sent`` ones (an application's own header wins)."""
    if not is_triple(metadata):
        return []
    have = {key for key, _ in sent}
    return [
        (header, value)
        for param, header in _SELECTORS
        if (value := metadata.get(param)) and header not in have
    ]
