"""Method descriptors from a provider's server reflection, cached per gRPC service.

grpcio's reflection client is synchronous (a DescriptorDatabase over a blocking channel),
so a lookup runs in a worker thread; its channel is closed from the loop when the lookup
outlives its timeout, which ends the blocked call in the thread. A lookup pulls the
service's file and its dependencies whole, so message classes need no more round trips.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from agent.errors import UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodInfo:
    path: str  # /package.Service/Method
    input: Any  # message classes (protobuf is untyped here)
    output: Any
    client_streaming: bool
    server_streaming: bool


class ReflectionError(UpstreamError):
    """The provider's reflection could not be read (no reflection service, unreachable)."""


class UnknownService(ReflectionError):
    """The provider's reflection does not know the service."""


def _lookup(channel: Any, service: str) -> dict[str, MethodInfo]:
    from google.protobuf.descriptor_pool import DescriptorPool  # type: ignore[import-untyped]
    from google.protobuf.message_factory import GetMessageClass  # type: ignore[import-untyped]
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # type: ignore[import-untyped]
        ProtoReflectionDescriptorDatabase,
    )

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    try:
        descriptor = pool.FindServiceByName(service)
    except KeyError:
        raise UnknownService(f"the provider does not offer gRPC service {service!r}") from None
    return {
        method.name: MethodInfo(
            f"/{service}/{method.name}",
            GetMessageClass(method.input_type),
            GetMessageClass(method.output_type),
            method.client_streaming,
            method.server_streaming,
        )
        for method in descriptor.methods
    }


async def lookup(address: str, service: str, timeout_s: float) -> dict[str, MethodInfo]:
    """The methods of ``service`` as the provider at ``address`` describes them."""
    import grpc  # type: ignore[import-untyped]

    channel = grpc.insecure_channel(address)
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(_lookup, channel, service)
    except TimeoutError:
        raise ReflectionError(f"{address}: no reflection answer within {timeout_s}s") from None
    except grpc.RpcError as exc:
        raise ReflectionError(
            f"{address}: server reflection failed: {exc.code().name}: {exc.details()}"
        ) from None
    finally:
        # Also ends a lookup still blocked in its thread after a timeout.
        channel.close()


class DescriptorCache:
    """Methods by (cluster, gRPC service), kept until a call suggests they are stale.

    Per cluster: two clusters may serve different versions of one gRPC service. Within
    a cluster, providers are taken to agree (a rolling upgrade shows as stale entries,
    which are read again).
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._services: dict[tuple[str, str], dict[str, MethodInfo]] = {}

    async def methods(self, cluster: str, address: str, service: str) -> dict[str, MethodInfo]:
        cached = self._services.get((cluster, service))
        if cached is None:
            cached = await lookup(address, service, self._timeout_s)
            self._services[cluster, service] = cached
            log.debug("descriptors loaded", extra={"service": service, "endpoint": address})
        return cached

    def forget(self, cluster: str, service: str) -> None:
        self._services.pop((cluster, service), None)
