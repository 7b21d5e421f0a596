"""The one module that talks to nacos-sdk-python (imported as ``v2.nacos``).

The SDK's naming and config services share one ClientConfig (addresses, namespace,
credentials, timeouts); each keeps its own gRPC connection, reconnects by itself and re-sends
its registrations and subscriptions on reconnect (its "redo"). Everything here runs on the
event loop: the SDK is asyncio throughout, callbacks included.

SDK objects never leave this module: instances become :class:`NacosInstance`, failures become
:class:`NacosCallError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from agent.discovery.types import frozen_mapping
from agent.errors import RegistryError
from plugins.nacos.config import NacosConfig
from plugins.nacos.naming import NacosInstance, NacosRegistration

# nacos-sdk-python 3.2 still declares pydantic models with a class-based Config, which pydantic 2
# warns about at import; that is the SDK's to fix and nothing we can act on.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*class-based `config` is deprecated")
    from v2.nacos import (  # type: ignore[import-untyped]
        BatchRegisterInstanceParam,
        ClientConfigBuilder,
        ConfigParam,
        DeregisterInstanceParam,
        GRPCConfig,
        ListInstanceParam,
        NacosConfigService,
        NacosException,
        NacosNamingService,
        RegisterInstanceParam,
        SubscribeServiceParam,
    )

log = logging.getLogger(__name__)

InstancesCallback = Callable[[list[NacosInstance]], Awaitable[None]]
ContentCallback = Callable[[str], Awaitable[None]]


class NacosCallError(RegistryError):
    """Nacos refused a call or could not be reached."""


_MAX_ADMIN_REPLY = 1 << 20
# ConfigQueryResponse codes: 300 no such config, 400 being modified (a transient lock).
_CONFIG_NOT_FOUND = 300
_CONFIG_BEING_MODIFIED = 400


def _namespace_ids(url: str, timeout_s: float) -> set[str] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            body: Any = json.loads(reply.read(_MAX_ADMIN_REPLY))
    except (OSError, ValueError) as exc:  # refused, 401/403 with auth on, not JSON
        log.info("Nacos namespace list %s not readable: %r", url, exc)
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return {str(item.get("namespace")) for item in data if isinstance(item, dict)}


async def namespace_exists(config: NacosConfig) -> bool | None:
    """Whether ``config.namespace`` exists; None when Nacos would not say.

    Nacos 3 accepts registrations in a namespace nobody created (they are then invisible in
    its console and to consumers of the intended one), so the agent asks its HTTP API first.
    """
    if not config.namespace:
        return True
    host = config.server_addresses[0]
    url = f"http://{host}{config.context_path}/v3/admin/core/namespace/list"
    ids = await asyncio.to_thread(_namespace_ids, url, config.request_timeout_s)
    return None if ids is None else config.namespace in ids


def _instance(raw: Any) -> NacosInstance:
    metadata = raw.metadata or {}
    return NacosInstance(
        ip=str(raw.ip),
        port=int(raw.port),
        weight=float(raw.weight),
        healthy=bool(raw.healthy),
        enabled=bool(raw.enabled),
        ephemeral=bool(raw.ephemeral),
        cluster=str(raw.clusterName or "DEFAULT"),
        metadata=frozen_mapping({str(k): str(v) for k, v in metadata.items()}),
    )


class NacosClient:
    """Naming and config services of one Nacos cluster, under one configuration."""

    def __init__(self, naming: Any, config: Any, timeout_s: float) -> None:
        self._naming = naming
        self._config = config
        self._timeout_s = timeout_s
        # The SDK matches listeners by identity: keep the exact callables it was given.
        self._instance_listeners: dict[tuple[str, str, int], Callable[..., Awaitable[None]]] = {}
        self._content_listeners: dict[tuple[str, str, int], Callable[..., Awaitable[None]]] = {}

    @classmethod
    async def create(cls, config: NacosConfig, work_dir: str) -> NacosClient:
        """Build both services. Returns even when the servers are not reachable (the SDK keeps
        connecting in the background); raises NacosCallError for what it refuses outright."""
        builder = (
            ClientConfigBuilder()
            .server_address(",".join(config.server_addresses))
            .namespace_id(config.namespace)
            .context_path(config.context_path)
            .timeout_ms(int(config.request_timeout_s * 1000))
            .log_dir(f"{work_dir}/logs")
            .cache_dir(f"{work_dir}/cache")
            .log_level(logging.WARNING)
            .grpc_config(
                GRPCConfig(
                    grpc_timeout=int(config.request_timeout_s * 1000),
                    port_offset=config.grpc_port_offset,
                )
            )
        )
        if config.username is not None:
            builder = builder.username(config.username).password(config.password or "")
        client_config = builder.build()
        # Without this an emptied service is not reported: a deregistered last instance would
        # stay routable forever.
        client_config.update_cache_when_empty = True
        # Never answer reads from the SDK's disk cache: stale config passed off as current is
        # worse than a clear error.
        client_config.disable_use_config_cache = True
        try:
            naming = await NacosNamingService.create_naming_service(client_config)
        except (NacosException, OSError, ValueError) as exc:
            raise NacosCallError(f"Nacos naming client: {exc}") from exc
        try:
            config_service = await NacosConfigService.create_config_service(client_config)
        except (NacosException, OSError, ValueError) as exc:
            await naming.shutdown()
            raise NacosCallError(f"Nacos config client: {exc}") from exc
        return cls(naming, config_service, config.request_timeout_s)

    async def close(self) -> None:
        # Closing the naming connection is what removes this agent's ephemeral instances.
        for service in (self._naming, self._config):
            try:
                async with asyncio.timeout(self._timeout_s):
                    await service.shutdown()
            except Exception as exc:  # closing is best effort: the server times us out anyway
                log.warning("Nacos client shutdown: %r", exc)

    async def healthy(self) -> bool:
        try:
            naming = bool(await self._naming.server_health())
            config = bool(await self._config.server_health())
        except Exception:
            return False
        return naming and config

    async def _call(self, what: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError as exc:
            raise NacosCallError(f"{what}: no answer within {self._timeout_s}s") from exc
        except NacosException as exc:
            raise NacosCallError(f"{what}: {exc}") from exc
        except OSError as exc:
            raise NacosCallError(f"{what}: {exc!r}") from exc

    # naming --------------------------------------------------------------------------------------

    @staticmethod
    def _param(reg: NacosRegistration) -> Any:
        return RegisterInstanceParam(
            service_name=reg.service,
            group_name=reg.group,
            ip=reg.ip,
            port=reg.port,
            weight=reg.weight,
            cluster_name=reg.cluster,
            ephemeral=reg.ephemeral,
            metadata=dict(reg.metadata),
        )

    async def register(self, reg: NacosRegistration) -> None:
        """One instance: a persistent one, or the only ephemeral one of its service."""
        call = self._naming.register_instance(self._param(reg))
        ok = await self._call(f"register {reg.service}", call)
        if ok is False:
            raise NacosCallError(f"register {reg.service}: refused")

    async def publish_ephemeral(self, regs: list[NacosRegistration]) -> None:
        """Make ``regs`` (one service and group, at least one) this connection's whole set of
        ephemeral instances of that service: over gRPC, Nacos keeps one publication per
        connection and service, and a register replaces the previous one."""
        if len(regs) == 1:
            await self.register(regs[0])
            return
        first = regs[0]
        param = BatchRegisterInstanceParam(
            service_name=first.service,
            group_name=first.group,
            instances=[self._param(reg) for reg in regs],
        )
        ok = await self._call(
            f"register {first.service}", self._naming.batch_register_instances(param)
        )
        if ok is False:
            raise NacosCallError(f"register {first.service}: refused")

    async def deregister(self, reg: NacosRegistration) -> None:
        """A persistent instance; for an ephemeral one, this connection's whole publication
        of its service."""
        param = DeregisterInstanceParam(
            service_name=reg.service,
            group_name=reg.group,
            ip=reg.ip,
            port=reg.port,
            cluster_name=reg.cluster,
            ephemeral=reg.ephemeral,
        )
        await self._call(f"deregister {reg.service}", self._naming.deregister_instance(param))

    async def subscribe(self, service: str, group: str, callback: InstancesCallback) -> None:
        """Call ``callback`` with the whole instance list on every change (clusters unfiltered)."""

        async def on_change(instances: list[Any] | None) -> None:
            await callback([_instance(i) for i in instances or ()])

        key = (service, group, id(callback))
        self._instance_listeners[key] = on_change
        param = SubscribeServiceParam(
            service_name=service, group_name=group, subscribe_callback=on_change
        )
        await self._call(f"subscribe {service}", self._naming.subscribe(param))

    async def unsubscribe(self, service: str, group: str, callback: InstancesCallback) -> None:
        on_change = self._instance_listeners.pop((service, group, id(callback)), None)
        if on_change is None:
            return
        param = SubscribeServiceParam(
            service_name=service, group_name=group, subscribe_callback=on_change
        )
        await self._call(f"unsubscribe {service}", self._naming.unsubscribe(param))

    async def instances(self, service: str, group: str) -> list[NacosInstance]:
        """The current list (from the subscription's cache once subscribed)."""
        param = ListInstanceParam(
            service_name=service, group_name=group, subscribe=True, healthy_only=None
        )
        found = await self._call(f"list {service}", self._naming.list_instances(param))
        return [_instance(i) for i in found or ()]

    # config --------------------------------------------------------------------------------------

    async def get_config(self, data_id: str, group: str) -> str | None:
        """The content, or None when there is none (Nacos stores no empty content)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                while True:
                    try:
                        content = await self._config.get_config(
                            ConfigParam(data_id=data_id, group=group)
                        )
                        break
                    except NacosException as exc:
                        code = getattr(exc, "error_code", None)
                        if code == _CONFIG_NOT_FOUND:
                            return None
                        if code != _CONFIG_BEING_MODIFIED:
                            raise
                    # Nacos locks a config while it dumps a new version: ask again shortly.
                    await asyncio.sleep(0.02)
        except TimeoutError as exc:
            raise NacosCallError(f"get {group}/{data_id}: no answer") from exc
        except NacosException as exc:
            raise NacosCallError(f"get {group}/{data_id}: {exc}") from exc
        return str(content) if content else None

    async def publish_config(self, data_id: str, group: str, content: str) -> None:
        param = ConfigParam(data_id=data_id, group=group, content=content)
        ok = await self._call(f"publish {group}/{data_id}", self._config.publish_config(param))
        if ok is False:
            raise NacosCallError(f"publish {group}/{data_id}: refused")

    async def remove_config(self, data_id: str, group: str) -> None:
        param = ConfigParam(data_id=data_id, group=group)
        await self._call(f"remove {group}/{data_id}", self._config.remove_config(param))

    async def listen_config(self, data_id: str, group: str, callback: ContentCallback) -> None:
        async def on_change(tenant: str, group_: str, data_id_: str, content: str) -> None:
            await callback(content or "")

        key = (data_id, group, id(callback))
        self._content_listeners[key] = on_change
        await self._call(
            f"listen {group}/{data_id}", self._config.add_listener(data_id, group, on_change)
        )
        self._wake_listen_round()

    async def redo_now(self) -> None:
        """Re-send this client's subscriptions (and registrations) at once, after a
        reconnect. nacos-sdk-python 3.2 marks them for redo when the connection drops, but
        runs its redo only when its queue is fed, which nothing does, or every 30 s: until
        then the restarted server knows no subscription and pushes nothing, so a provider
        registered after the restart was seen 20-30 s late (issue 27). The redo re-subscribes
        and reads each list from the server, which updates the SDK's cache and calls back."""
        proxy = getattr(self._naming, "grpc_client_proxy", None)
        redo = getattr(getattr(proxy, "redo_service", None), "redo_task", None)
        if redo is None:  # a later SDK may have moved it: its own redo still runs
            log.warning("Nacos SDK has no redo task to run: rediscovery may lag 30 s")
            return
        await self._call("redo subscriptions", redo())

    def _wake_listen_round(self) -> None:
        """Have the SDK send its listen request now. nacos-sdk-python 3.2's ``add_listener``
        only records the key; the server learns of it (and starts pushing changes) on the
        SDK's next listen round, which runs when its queue is fed or every 5 s. Until then a
        change is seen by nobody, so a new watch missed changes for up to 5 s."""
        proxy = getattr(self._config, "grpc_client_proxy", None)
        channel = getattr(proxy, "execute_config_listen_channel", None)
        if isinstance(channel, asyncio.Queue):
            channel.put_nowait(None)
        else:  # a later SDK may have moved it: its own round (and our poll) still deliver
            log.warning("Nacos SDK has no listen queue to wake: config changes may lag 5 s")

    async def unlisten_config(self, data_id: str, group: str, callback: ContentCallback) -> None:
        on_change = self._content_listeners.pop((data_id, group, id(callback)), None)
        if on_change is not None:
            await self._call(
                f"unlisten {group}/{data_id}",
                self._config.remove_listener(data_id, group, on_change),
            )


__all__ = ["ContentCallback", "InstancesCallback", "NacosCallError", "NacosClient"]
