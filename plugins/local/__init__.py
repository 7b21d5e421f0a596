"""The embedded registry ``local``: services declared in the config plus instances the
local app registers at run time, kept in memory. It is the default, so ``make run`` needs
no registry server. Its revisions are a counter that only grows."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.discovery.config_source import ConfigSource, MemoryConfigSource
from agent.discovery.registry import Registry, Subscription
from agent.discovery.types import (
    Add,
    Instance,
    Registration,
    RegistryStatus,
    Remove,
    Reset,
    ServiceKey,
    frozen_mapping,
)
from agent.discovery.validate import checked_host, checked_instance_id
from agent.errors import RegistrationConflict
from agent.plugins import Plugin, PluginKind


class StaticInstance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Annotated[str, AfterValidator(checked_host)] = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=0, le=10000)] = 100
    id: Annotated[str, AfterValidator(checked_instance_id)] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class LocalRegistryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    services: dict[str, list[StaticInstance]] = Field(default_factory=dict)


class LocalRegistry(Registry):
    name = "local"

    def __init__(self, config: LocalRegistryConfig) -> None:
        self._revision = 0
        self._instances: dict[str, dict[str, Instance]] = defaultdict(dict)
        self._subscriptions: dict[str, list[Subscription]] = defaultdict(list)
        self._since = time.time()
        self._config = MemoryConfigSource("local")
        # The config's instances, by service: registrations may not replace them (and so
        # may not delete them either).
        self._declared: dict[str, set[str]] = defaultdict(set)
        for service, statics in config.services.items():
            for static in statics:
                instance = self._instance(
                    static.id or f"{static.host}:{static.port}",
                    static.host,
                    static.port,
                    static.weight,
                    static.metadata,
                )
                self._instances[service][instance.id] = instance
                self._declared[service].add(instance.id)

    def _instance(
        self, instance_id: str, host: str, port: int, weight: int, metadata: object
    ) -> Instance:
        self._revision += 1
        meta = frozen_mapping(metadata if isinstance(metadata, dict) else dict(metadata))  # type: ignore[call-overload]
        return Instance(instance_id, host, port, weight, meta, self._revision)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                subscription.close()

    def subscribe(self, key: ServiceKey) -> Subscription:
        subscription = Subscription(key, self._unsubscribe)
        self._subscriptions[key.name].append(subscription)
        instances = tuple(self._instances.get(key.name, {}).values())
        subscription.push(Reset(self._revision, instances))
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.key.name, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)

    async def register(self, registration: Registration) -> None:
        if registration.instance_id in self._declared.get(registration.service, ()):
            raise RegistrationConflict(
                f"instance {registration.instance_id!r} of {registration.service!r} is "
                "declared in the config; a registration may not replace it"
            )
        instance = self._instance(
            registration.instance_id,
            registration.host,
            registration.port,
            registration.weight,
            dict(registration.metadata, protocol=registration.protocol),
        )
        self._instances[registration.service][instance.id] = instance
        for subscription in self._subscriptions.get(registration.service, []):
            subscription.push(Add(self._revision, instance))

    async def deregister(self, service: str, instance_id: str) -> None:
        if instance_id in self._declared.get(service, ()):
            return
        instance = self._instances.get(service, {}).pop(instance_id, None)
        if instance is None:
            return
        self._revision += 1
        for subscription in self._subscriptions.get(service, []):
            subscription.push(Remove(self._revision, instance_id, instance.revision))

    def status(self) -> RegistryStatus:
        return RegistryStatus(connected=True, since=self._since)

    def known_services(self) -> list[str]:
        return sorted(name for name, instances in self._instances.items() if instances)

    def config_source(self) -> ConfigSource:
        return self._config


PLUGIN: Plugin[LocalRegistry] = Plugin(
    PluginKind.REGISTRY, "local", LocalRegistryConfig, LocalRegistry
)
