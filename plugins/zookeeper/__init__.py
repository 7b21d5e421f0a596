"""ZooKeeper registry plugin: Dubbo's interface- and application-level layouts, and plain.

kazoo is imported only when the factory runs, i.e. when the configuration names this plugin.
"""

from __future__ import annotations

from agent.discovery.registry import Registry
from agent.plugins import Plugin, PluginKind
from plugins.zookeeper.config import ZooKeeperConfig


def _factory(config: ZooKeeperConfig) -> Registry:
    from plugins.zookeeper.registry import ZooKeeperRegistry

    return ZooKeeperRegistry(config)


PLUGIN: Plugin[Registry] = Plugin(
    kind=PluginKind.REGISTRY,
    name="zookeeper",
    config_model=ZooKeeperConfig,
    factory=_factory,
)

__all__ = ["PLUGIN", "ZooKeeperConfig"]
