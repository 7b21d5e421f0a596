"""The ``dubbo`` protocol plugin: a Dubbo-aware outbound listener and generic invocation.

The runtime part (plugins/dubbo/protocol.py) is imported only when the factory runs, i.e.
when a listener or service uses this protocol; validating a config needs only the models.
"""

from __future__ import annotations

from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import ProtocolSupport
from plugins.dubbo.config import DubboConfig
from plugins.dubbo.options import DubboServiceOptions


def _factory(config: DubboConfig) -> ProtocolSupport:
    from plugins.dubbo.protocol import DubboProtocol

    return DubboProtocol(config)


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL,
    "dubbo",
    DubboConfig,
    _factory,
    service_options_model=DubboServiceOptions,
)

__all__ = ["PLUGIN", "DubboConfig", "DubboServiceOptions"]
