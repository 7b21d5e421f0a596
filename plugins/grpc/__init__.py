"""The ``grpc`` protocol plugin: a gRPC-aware outbound listener that needs no protos, and
JSON invocation by server reflection.

The runtime part (plugins/grpc/protocol.py, which needs grpcio) is imported only when the
factory runs, i.e. when a listener or service uses this protocol.
"""

from __future__ import annotations

from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import ProtocolSupport
from plugins.grpc.config import GrpcConfig, GrpcServiceOptions


def _factory(config: GrpcConfig) -> ProtocolSupport:
    from plugins.grpc.protocol import GrpcProtocol

    return GrpcProtocol(config)


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL,
    "grpc",
    GrpcConfig,
    _factory,
    service_options_model=GrpcServiceOptions,
)

__all__ = ["PLUGIN", "GrpcConfig", "GrpcServiceOptions"]
