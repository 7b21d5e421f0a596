"""A degradation's fallback value (JSON) as a gRPC reply message, for both relays.

The listener relays bytes without protos, so the reply type is read by server reflection
from a provider (or from the service's ``descriptor_set``), with grpcio as the client
(plugins/grpc/invoker.py); when it cannot be had or the value does not fit it, the caller
answers UNAVAILABLE and logs why.
"""

from __future__ import annotations

from typing import Any

from agent.cluster.lb import NO_CONTEXT
from agent.errors import InvalidRequest, InvokeNotSupported, NoEndpointError
from agent.runtime.protocols import ListenerContext
from plugins.grpc.config import GrpcServiceOptions
from plugins.grpc.reflection import DescriptorCache


async def encode_fallback(
    context: ListenerContext, descriptors: DescriptorCache | None, method: str, value: Any
) -> bytes:
    """A degradation's fallback value (JSON) as the reply message of ``method``
    (``/package.Service/Method``), by the reply type that server reflection (or the
    service's ``descriptor_set``) describes; MeshAgentError when it cannot be had."""
    from google.protobuf import json_format  # type: ignore[import-untyped]

    from plugins.grpc.invoker import resolve

    if descriptors is None:
        raise InvokeNotSupported("no descriptor cache on this listener")
    grpc_service, _, name = method.lstrip("/").partition("/")
    host = context.cluster.choose(NO_CONTEXT)
    if host is None:
        raise NoEndpointError(f"no provider of {context.service.name} to describe {method}")
    options = context.service.protocol_options(GrpcServiceOptions)
    info = await resolve(
        descriptors, context.cluster.name, host, grpc_service, name, options.descriptor_set
    )
    try:
        message = json_format.ParseDict(value, info.output())
    except json_format.ParseError as exc:
        raise InvalidRequest([("degrade.value", str(exc))]) from None
    return bytes(message.SerializeToString())
