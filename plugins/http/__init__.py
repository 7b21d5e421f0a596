"""The ``http`` protocol plugin: an HTTP/1.1 and HTTP/2-aware outbound listener, and HTTP
invocation.

The runtime part (plugins/http/protocol.py) is imported only when the factory runs, i.e.
when a listener or service uses this protocol; validating a config needs only the models.
"""

from __future__ import annotations

from agent.plugins import Plugin, PluginKind
from agent.runtime.protocols import ProtocolSupport
from plugins.http.config import HttpConfig, HttpRoute, HttpServiceOptions


def _factory(config: HttpConfig) -> ProtocolSupport:
    from plugins.http.protocol import HttpProtocol

    return HttpProtocol(config)


PLUGIN: Plugin[ProtocolSupport] = Plugin(
    PluginKind.PROTOCOL,
    "http",
    HttpConfig,
    _factory,
    service_options_model=HttpServiceOptions,
)

__all__ = ["PLUGIN", "HttpConfig", "HttpRoute", "HttpServiceOptions"]
