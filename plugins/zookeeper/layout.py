"""Where things live in ZooKeeper: the three layouts' paths, in one place.

Path components that come from names (interfaces, applications, services, instance ids) are
encoded the way Dubbo encodes them (``URL.encode``), so a name holding "/" stays one component.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugins.zookeeper.dubbo_url import decode_component, encode_component


@dataclass(frozen=True)
class Layout:
    root: str = "/dubbo"
    services_root: str = "/services"
    plain_root: str = "/meshagent/services"

    # Dubbo interface level: /dubbo/{interface}/{providers,consumers}/{encoded URL}
    def interface_dir(self, interface: str) -> str:
        return _join(self.root, encode_component(interface))

    def providers(self, interface: str) -> str:
        return self.interface_dir(interface) + "/providers"

    def consumers(self, interface: str) -> str:
        return self.interface_dir(interface) + "/consumers"

    # Dubbo 3 application level
    def mapping(self, interface: str) -> str:
        return _join(self.root, "mapping", encode_component(interface))

    def metadata(self, app: str, revision: str) -> str:
        return _join(self.root, "metadata", encode_component(app), encode_component(revision))

    def app_instances(self, app: str) -> str:
        return _join(self.services_root, encode_component(app))

    # meshagent plain services
    def plain_service(self, service: str) -> str:
        return _join(self.plain_root, encode_component(service))

    def plain_instance(self, service: str, instance_id: str) -> str:
        return _join(self.plain_service(service), encode_component(instance_id))


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def child_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def decode_name(name: str) -> str:
    return decode_component(name)
