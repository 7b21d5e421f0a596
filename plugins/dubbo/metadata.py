"""Dubbo 3's MetadataService: which services an application instance serves.

With ``metadata-type=local`` (Dubbo's default) an instance registered at application level
says only its metadata *revision*; the service list (interface, group, version, protocol,
URL parameters such as ``slow.timeout``) is asked of the instance itself:
``org.apache.dubbo.metadata.MetadataService:1.0.0`` with group = the application name,
``MetadataInfo getMetadataInfo(String revision)``, over dubbo/hessian2 on the port that
``dubbo.metadata-service.url-params`` names (the instance's dubbo port by default).

This is the ZooKeeper plugin's ``set_local_metadata_resolver`` hook; failures answer None
(the registry then keeps the instance unfiltered and says so in its log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from agent.cluster.host import Host
from agent.discovery.types import Instance, frozen_mapping
from agent.errors import MeshAgentError
from plugins.dubbo.body import Invocation, decode_result, encode_invocation, request_frame
from plugins.dubbo.frame import Status
from plugins.dubbo.hessian2 import JavaObject, TypedMap
from plugins.dubbo.upstream import UpstreamPool
from plugins.zookeeper.application_level import AppInstance, MetadataInfo, ServiceInfo

log = logging.getLogger(__name__)

METADATA_SERVICE = "org.apache.dubbo.metadata.MetadataService"
METADATA_SERVICE_VERSION = "1.0.0"
URL_PARAMS_KEY = "dubbo.metadata-service.url-params"


class MetadataError(MeshAgentError):
    """The MetadataService answer is not a MetadataInfo we can read."""


def metadata_address(instance: AppInstance) -> tuple[str, int] | None:
    """Where the instance's MetadataService listens, from its url-params (dubbo only)."""
    raw = instance.metadata.get(URL_PARAMS_KEY)
    params: Any = {}
    if raw:
        try:
            params = json.loads(raw)
        except ValueError:
            params = {}
    if not isinstance(params, dict):
        params = {}
    protocol = str(params.get("protocol") or "dubbo")
    if protocol != "dubbo":
        return None  # tri: another codec; not spoken here
    port = params.get("port")
    try:
        number = int(port) if port is not None else instance.endpoints.get("dubbo", instance.port)
    except (TypeError, ValueError):
        return None
    return (instance.host, number) if 0 < number < 65536 else None


def metadata_request(instance: AppInstance, timeout_ms: int) -> bytes:
    invocation = Invocation(
        path=METADATA_SERVICE,
        version=METADATA_SERVICE_VERSION,
        method="getMetadataInfo",
        parameter_types=("java.lang.String",),
        arguments=(instance.revision,),
        attachments={
            "path": METADATA_SERVICE,
            "interface": METADATA_SERVICE,
            "version": METADATA_SERVICE_VERSION,
            "group": instance.app,
            "timeout": str(timeout_ms),
        },
    )
    return request_frame(0, encode_invocation(invocation))


def _entries(value: Any) -> Mapping[Any, Any]:
    if isinstance(value, TypedMap):
        return value.entries
    if isinstance(value, Mapping):
        return value
    return {}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_metadata_info(value: Any) -> MetadataInfo:
    """A decoded ``org.apache.dubbo.metadata.MetadataInfo`` as the registry's MetadataInfo."""
    if not isinstance(value, JavaObject):
        raise MetadataError(f"MetadataInfo expected, got {type(value).__name__}")
    services = []
    for entry in _entries(value.fields.get("services")).values():
        if not isinstance(entry, JavaObject) or not isinstance(entry.fields.get("name"), str):
            continue
        fields = entry.fields
        params = {_text(k): _text(v) for k, v in _entries(fields.get("params")).items()}
        services.append(
            ServiceInfo(
                name=fields["name"],
                group=_text(fields.get("group")),
                version=_text(fields.get("version")),
                protocol=_text(fields.get("protocol")),
                params=frozen_mapping(params),
            )
        )
    return MetadataInfo(
        _text(value.fields.get("app")), _text(value.fields.get("revision")), tuple(services)
    )


class MetadataResolver:
    """Asks instances for their MetadataInfo over the Dubbo plugin's upstream pool."""

    def __init__(self, pool: UpstreamPool, timeout_ms: int = 3000) -> None:
        self.pool = pool
        self.timeout_ms = timeout_ms

    async def __call__(self, instance: AppInstance) -> MetadataInfo | None:
        if not instance.revision:
            return None
        address = metadata_address(instance)
        if address is None:
            log.info(
                "no dubbo MetadataService to ask",
                extra={"app": instance.app, "instance": instance.id},
            )
            return None
        host = Host(Instance(f"{address[0]}:{address[1]}", address[0], address[1]))
        try:
            connection = await self.pool.get(host)
            response = await connection.request(
                metadata_request(instance, self.timeout_ms), self.timeout_ms / 1000
            )
            result = decode_result(response.header, response.body)
            if result.status != Status.OK or result.exception is not None:
                raise MetadataError(
                    result.error_message
                    or f"exception {getattr(result.exception, 'class_name', '')}"
                )
            info = parse_metadata_info(result.value)
        except MeshAgentError as exc:
            log.warning(
                "MetadataService call failed: %s",
                exc,
                extra={"app": instance.app, "instance": instance.id, "revision": instance.revision},
            )
            return None
        log.info(
            "metadata from MetadataService",
            extra={
                "app": instance.app,
                "instance": instance.id,
                "revision": instance.revision,
                "services": len(info.services),
            },
        )
        return info
