"""etcd v3 registry plugin: meshagent's plain layout under a prefix, leased registrations.

aetcd (and grpcio) are imported only when the factory runs, i.e. when the configuration
names this plugin.
"""

from __future__ import annotations

from agent.discovery.registry import Registry
from agent.plugins import Plugin, PluginKind
from plugins.etcd.config import EtcdConfig


def _factory(config: EtcdConfig) -> Registry:
    from plugins.etcd.registry import EtcdRegistry

    return EtcdRegistry(config)


PLUGIN: Plugin[Registry] = Plugin(
    kind=PluginKind.REGISTRY,
    name="etcd",
    config_model=EtcdConfig,
    factory=_factory,
)

__all__ = ["PLUGIN", "EtcdConfig"]
