"""The ``thrift`` protocol plugin: a Thrift-aware outbound listener and JSON invocation by IDL.

The runtime part (plugins/thrift/protocol.py) is imported only when the factory runs, i.e.
when a listener or service uses this protocol; validating a config needs only the models.
"""

from __future__ import annotations

from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import ProtocolSupport
from plugins.thrift.config import ThriftConfig, ThriftServiceOptions


def _factory(config: ThriftConfig) -> ProtocolSupport:
    from plugins.thrift.protocol import ThriftProtocol

    return ThriftProtocol(config)


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL,
    "thrift",
    ThriftConfig,
    _factory,
    service_options_model=ThriftServiceOptions,
)

__all__ = ["PLUGIN", "ThriftConfig", "ThriftServiceOptions"]
