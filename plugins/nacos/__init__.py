"""Nacos 2.x/3.x registry plugin: Dubbo's Nacos conventions, plain services, config center.

nacos-sdk-python (and its heavy dependency tree: grpcio, aiohttp, pycryptodome, ...) is
imported only when the factory runs, i.e. when the configuration names this plugin.
"""

from __future__ import annotations

from agent.discovery.registry import Registry
from agent.plugins import Plugin, PluginKind
from plugins.nacos.config import NacosConfig


def _factory(config: NacosConfig) -> Registry:
    from plugins.nacos.registry import NacosRegistry

    return NacosRegistry(config)


PLUGIN: Plugin[Registry] = Plugin(
    kind=PluginKind.REGISTRY,
    name="nacos",
    config_model=NacosConfig,
    factory=_factory,
)

__all__ = ["PLUGIN", "NacosConfig"]
