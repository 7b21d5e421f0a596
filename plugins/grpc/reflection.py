"""Method descriptors from a provider's server reflection (or a descriptor set named in the
config), cached per gRPC service.

grpcio's reflection client is synchronous (a DescriptorDatabase over a blocking channel),
so a lookup runs in a worker thread; its channel is closed from the loop when the lookup
outlives its timeout, which ends the blocked call in the thread. A lookup pulls the
service's file and its dependencies whole, so message classes need no more round trips.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import UpstreamError
from plugins.grpc.httprule import Binding, RuleError, bindings_from_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodInfo:
    path: str  # /package.Service/Method
    input: Any  # message classes (protobuf is untyped here)
    output: Any
    client_streaming: bool
    server_streaming: bool
    # Its google.api.http bindings, for HTTP/JSON transcoding (none: gRPC only).
    bindings: tuple[Binding, ...] = ()
    # The files its pool reads, when they came from the provider's reflection: more are
    # added there (plugins/grpc/any_types.py) for an Any of a type they lack. None: a
    # descriptor set, the only source.
    files: Any = None


class ReflectionError(UpstreamError):
    """The provider's reflection could not be read (no reflection service, unreachable)."""


class DescriptorSetError(ReflectionError):
    """The descriptor set named in the config cannot be read."""


class UnknownService(ReflectionError):
    """The provider's reflection does not know the service."""


def _bindings(method: Any) -> tuple[Binding, ...]:
    try:
        return tuple(bindings_from_options(method.GetOptions().SerializeToString()))
    except (RuleError, UnicodeDecodeError) as exc:
        # One bad annotation costs that method its HTTP route, not the service its calls.
        log.warning(
            "google.api.http rule skipped", extra={"method": method.full_name, "error": str(exc)}
        )
        return ()


def _methods(pool: Any, service: str, where: str, files: Any = None) -> dict[str, MethodInfo]:
    from google.protobuf.message_factory import GetMessageClass  # type: ignore[import-untyped]

    try:
        descriptor = pool.FindServiceByName(service)
    except KeyError:
        raise UnknownService(f"{where} does not offer gRPC service {service!r}") from None
    return {
        method.name: MethodInfo(
            f"/{service}/{method.name}",
            GetMessageClass(method.input_type),
            GetMessageClass(method.output_type),
            method.client_streaming,
            method.server_streaming,
            _bindings(method),
            files,
        )
        for method in descriptor.methods
    }


def _lookup(channel: Any, service: str) -> dict[str, MethodInfo]:
    from google.protobuf.descriptor_pool import DescriptorPool  # type: ignore[import-untyped]
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # type: ignore[import-untyped]
        ProtoReflectionDescriptorDatabase,
    )

    files = provider_files(ProtoReflectionDescriptorDatabase(channel))
    try:
        return _methods(DescriptorPool(files), service, "the provider", files)
    finally:
        files.reflection = None  # its channel closes now: later misses are KeyErrors


def provider_files(reflection: Any) -> Any:
    """A descriptor database of what a provider's reflection gave: it asks ``reflection``
    while that is set (during a lookup, in a worker thread), and afterwards answers from
    what it holds, so a pool miss on the loop never blocks on (or fails with) a channel.
    any_types.fetch_types adds files to it."""
    from google.protobuf.descriptor_database import (  # type: ignore[import-untyped]
        DescriptorDatabase,
    )

    class ProviderFiles(DescriptorDatabase):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.reflection: Any = reflection

        def FindFileByName(self, name: str) -> Any:
            try:
                return super().FindFileByName(name)
            except KeyError:
                if self.reflection is None:
                    raise
            return self.keep(self.reflection.FindFileByName(name))

        def FindFileContainingSymbol(self, symbol: str) -> Any:
            try:
                return super().FindFileContainingSymbol(symbol)
            except KeyError:
                if self.reflection is None:
                    raise
            return self.keep(self.reflection.FindFileContainingSymbol(symbol))

        def keep(self, proto: Any) -> Any:
            try:
                super().FindFileByName(proto.name)
            except KeyError:
                self.Add(proto)
            return proto

    return ProviderFiles()


# A descriptor set is a config file, read whole: bound it like one.
MAX_DESCRIPTOR_SET_BYTES = 64 * 1024 * 1024


def load_descriptor_set(path: str, service: str) -> dict[str, MethodInfo]:
    """The methods of ``service`` from a FileDescriptorSet file (``protoc
    --descriptor_set_out=FILE --include_imports``)."""
    from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]
    from google.protobuf.descriptor_pool import DescriptorPool

    file = Path(path)
    try:
        if file.stat().st_size > MAX_DESCRIPTOR_SET_BYTES:
            raise DescriptorSetError(
                f"descriptor set {path} is over {MAX_DESCRIPTOR_SET_BYTES} bytes"
            )
        files = descriptor_pb2.FileDescriptorSet.FromString(file.read_bytes())
    except OSError as exc:
        raise DescriptorSetError(f"descriptor set {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise DescriptorSetError(
            f"descriptor set {path} is not a FileDescriptorSet: {exc}"
        ) from None
    pool = DescriptorPool()
    try:
        for proto in files.file:
            pool.Add(proto)
    except Exception as exc:
        raise DescriptorSetError(
            f"descriptor set {path}: {exc} (made with --include_imports?)"
        ) from None
    return _methods(pool, service, f"descriptor set {path}")


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
        self.timeout_s = timeout_s  # also bounds a fetch of an Any's type (any_types.py)
        self._services: dict[tuple[str, str], dict[str, MethodInfo]] = {}

    async def methods(
        self, cluster: str, address: str, service: str, descriptor_set: str | None = None
    ) -> dict[str, MethodInfo]:
        """From ``descriptor_set`` if named, else from the provider at ``address``."""
        cached = self._services.get((cluster, service))
        if cached is None:
            if descriptor_set is not None:
                cached = await asyncio.to_thread(load_descriptor_set, descriptor_set, service)
            else:
                cached = await lookup(address, service, self._timeout_s)
            self._services[cluster, service] = cached
            log.debug("descriptors loaded", extra={"service": service, "endpoint": address})
        return cached

    def forget(self, cluster: str, service: str) -> None:
        self._services.pop((cluster, service), None)
