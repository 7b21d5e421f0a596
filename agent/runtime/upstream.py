"""Connecting to a provider: pick by the cluster's policy, retry on another endpoint.

A connect failure is a passive health signal (outlier detection) and, while attempts
remain, never reaches the client: the next attempt excludes every endpoint tried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host
from agent.cluster.lb import PickContext
from agent.errors import ConnectError, NoEndpointError

log = logging.getLogger(__name__)

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def connect_upstream(
    cluster: Cluster,
    protocol_factory: Callable[[Host], P],
    timeout_s: float,
    attempts: int,
    hash_key: bytes | None = None,
) -> tuple[Host, asyncio.Transport, P]:
    loop = asyncio.get_running_loop()
    tried: set[str] = set()
    errors: list[str] = []
    for _ in range(attempts):
        host = cluster.choose(PickContext(hash_key, frozenset(tried)))
        if host is None:
            break
        tried.add(host.id)
        try:
            async with asyncio.timeout(timeout_s):
                transport, protocol = await loop.create_connection(
                    lambda host=host: protocol_factory(host),  # type: ignore[misc]
                    host.instance.host,
                    host.instance.port,
                )
        except (OSError, TimeoutError, ValueError) as exc:
            # ValueError: a host the resolver refuses (UnicodeError from IDNA).
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            errors.append(f"{host.id}: {reason}")
            log.warning(
                "upstream connect failed",
                extra={"cluster": cluster.name, "endpoint": host.id, "error": reason},
            )
            cluster.report_failure(host, connect=True)
            continue
        cluster.report_success(host)
        return host, transport, protocol
    if not errors:
        raise NoEndpointError(f"no endpoint available for {cluster.name!r}")
    raise ConnectError(f"could not connect to {cluster.name!r}: " + "; ".join(errors))
