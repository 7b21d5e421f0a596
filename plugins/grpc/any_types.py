"""``google.protobuf.Any`` in a JSON invocation: types found by reflection, and status details.

A reply's ``Any`` can hold a message of a type the method's files never import (a plugin's
payload, an error detail): the pool the method's descriptors came from does not know it, and
protobuf's JSON mapping cannot write the Any (``{"@type": ..., fields}``) without it. So
before giving up with a 502 the invoker asks the provider's reflection for the file that
defines each unknown type (``file_containing_symbol``, as grpcurl does) and adds it, with the
imports the pool lacks, to the pool; the provider is the authority on its own types.

A failed call's ``grpc-status-details-bin`` trailer is a ``google.rpc.Status`` whose details
are Anys (``google.rpc.BadRequest``, ``ErrorInfo``, ... or the service's own messages): they
are read the same way, with the google.rpc error types known without asking, and one whose
type nobody knows is given as its type URL and base64 bytes rather than dropped.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

STATUS_DETAILS = "grpc-status-details-bin"
_ANY = "google.protobuf.Any"
# Bounds on what a reply or a trailer can make the agent do: types fetched per reply,
# messages looked at per reply for Anys, details read per status.
MAX_FETCHED_TYPES = 8
MAX_ANYS = 256
MAX_DETAILS = 16


def any_type_names(message: Any) -> list[str]:
    """The type names of the Anys in ``message`` (nested ones too), in order, distinct."""
    names: list[str] = []
    pending = [message]
    seen = 0
    while seen < len(pending) and seen < MAX_ANYS:  # breadth first, in field order
        current = pending[seen]
        seen += 1
        if current.DESCRIPTOR.full_name == _ANY:
            name = current.type_url.rpartition("/")[2]
            if name and name not in names:
                names.append(name)
            continue
        for field, value in current.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                items: Iterable[Any] = value.values()
            elif _is_repeated(field):
                items = value
            else:
                items = (value,)
            pending.extend(item for item in items if hasattr(item, "DESCRIPTOR"))
    return names


def _is_repeated(field: Any) -> bool:
    # protobuf 7 (upb) has is_repeated; older ones the label.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def knows(pool: Any, name: str) -> bool:
    try:
        pool.FindMessageTypeByName(name)
    except KeyError:
        return False
    return True


def _add_file(reflection: Any, files: Any, name: str, added: set[str]) -> None:
    """``name`` and the files it imports, from ``reflection`` into ``files`` (the
    provider's database behind the method's pool: reflection.provider_files)."""
    if name in added:
        return
    added.add(name)
    proto = reflection.FindFileByName(name)
    for dependency in proto.dependency:
        _add_file(reflection, files, dependency, added)
    files.keep(proto)


def _fetch(address: str, files: Any, names: list[str]) -> list[str]:
    import grpc  # type: ignore[import-untyped]
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # type: ignore[import-untyped]
        ProtoReflectionDescriptorDatabase,
    )

    found: list[str] = []
    channel = grpc.insecure_channel(address)
    try:
        reflection = ProtoReflectionDescriptorDatabase(channel)
        added: set[str] = set()
        for name in names:
            try:
                proto = reflection.FindFileContainingSymbol(name)
                _add_file(reflection, files, proto.name, added)
            except Exception as exc:  # KeyError: not the provider's; RpcError, TypeError
                log.debug("type not found by reflection", extra={"type": name, "error": exc})
                continue
            found.append(name)
    finally:
        channel.close()
    return found


async def fetch_types(
    address: str, pool: Any, files: Any, names: list[str], timeout_s: float
) -> list[str]:
    """Ask the provider at ``address`` for the files defining ``names`` that ``pool``
    lacks and add them to ``files``, the database behind ``pool``; the names it knew.
    Runs in a thread (grpcio's reflection client blocks)."""
    wanted = [name for name in names[:MAX_FETCHED_TYPES] if not knows(pool, name)]
    if not wanted:
        return []
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(_fetch, address, files, wanted)
    except TimeoutError:
        return []


def _detail_json(detail: Any, pools: list[Any]) -> dict[str, Any]:
    from google.protobuf import json_format, message_factory  # type: ignore[import-untyped]

    name = detail.type_url.rpartition("/")[2]
    for pool in pools:
        if not knows(pool, name):
            continue
        message = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))()
        try:
            message.ParseFromString(detail.value)
            fields = json_format.MessageToDict(message, descriptor_pool=pool)
        except Exception:  # DecodeError, or an Any inside it nobody knows
            break
        return {"@type": detail.type_url, **fields}
    return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def status_details(value: bytes, pool: Any) -> list[dict[str, Any]] | None:
    """The details of a ``grpc-status-details-bin`` value, each in protobuf's JSON mapping
    of an Any; None when the value is not a google.rpc.Status."""
    from google.protobuf import descriptor_pool
    from google.rpc import (  # type: ignore[import-untyped]
        error_details_pb2,  # noqa: F401 (registers the google.rpc error types)
        status_pb2,
    )

    status = status_pb2.Status()
    try:
        status.ParseFromString(value)
    except Exception:  # protobuf's DecodeError: a trailer that is not what it says
        return None
    pools = [pool, descriptor_pool.Default()]
    return [_detail_json(detail, pools) for detail in status.details[:MAX_DETAILS]]


def detail_type_names(value: bytes) -> list[str]:
    """The type names of a status trailer's details (to fetch the unknown ones first)."""
    from google.rpc import status_pb2

    status = status_pb2.Status()
    try:
        status.ParseFromString(value)
    except Exception:  # not a Status: status_details says so
        return []
    return [detail.type_url.rpartition("/")[2] for detail in status.details[:MAX_DETAILS]]
