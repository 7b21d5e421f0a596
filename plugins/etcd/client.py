"""The one etcd connection of a registry, over aetcd's channel and generated v3 stubs.

aetcd (asyncio, grpc.aio) ships stubs that import beside protobuf 7, which etcd3 does not.
Its high-level calls cover range/lease; transactions with a lease comparison and the watch
stream are driven on its raw stubs, because the registry needs what aetcd's watcher hides:
one stream multiplexing every service, the response header's revision, and a compaction
reported as data (``compact_revision``) rather than as an exception that ends the stream.

Only this module touches aetcd; everything it returns is plain dataclasses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aetcd  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
from aetcd import rpc

from agent.errors import RegistryError
from plugins.etcd.config import EtcdConfig
from plugins.etcd.layout import range_end
from plugins.etcd.state import KeyValue


class ConnectionLost(RegistryError):
    """The etcd connection or its watch stream ended; the registry reconnects."""


class LeaseLost(RegistryError):
    """Our lease expired or was revoked: its keys are gone, a new lease must be granted."""


# "Not now": the next (re)connection redoes the work.
TRANSIENT: tuple[type[BaseException], ...] = (
    aetcd.ClientError,
    grpc.aio.AioRpcError,
    TimeoutError,
    ConnectionLost,
)

_PUT_ATTEMPTS = 5

T = TypeVar("T")


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue
    prev_create_revision: int | None
    """For a delete: the deleted registration's create_revision (from prev_kv), if known."""


@dataclass(frozen=True)
class WatchResponse:
    watch_id: int
    revision: int
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    events: tuple[WatchEvent, ...] = ()


def _kv(message: Any) -> KeyValue:
    return KeyValue(
        bytes(message.key),
        bytes(message.value),
        int(message.create_revision),
        int(message.mod_revision),
    )


async def _call(awaitable: Awaitable[T]) -> T:
    """Await one gRPC call; a call cut short by the channel closing is a lost connection.

    grpc.aio cancels the calls in flight when their channel closes (the session ended under
    a concurrent register), and reports it as CancelledError: that must not look like the
    caller's task being cancelled.
    """
    try:
        return await awaitable
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ConnectionLost("call cancelled: the connection closed") from None


def _lease_not_found(exc: BaseException) -> bool:
    return "lease not found" in str(exc)


class WatchStream:
    """One gRPC Watch stream; creates are answered in the order they were sent."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def create(self, prefix: bytes, start_revision: int, *, exact: bool = False) -> None:
        """Watch every key under ``prefix`` (or, ``exact``, that one key) from a revision."""
        request = rpc.WatchCreateRequest(
            key=prefix,
            range_end=b"" if exact else range_end(prefix),
            start_revision=start_revision,
            # A delete event then carries the deleted registration's create_revision.
            prev_kv=True,
            # Lets a quiet service's resume point advance, so a resume after a reconnect
            # rarely lands below a compaction.
            progress_notify=True,
        )
        await self._call.write(rpc.WatchRequest(create_request=request))

    async def cancel(self, watch_id: int) -> None:
        request = rpc.WatchCancelRequest(watch_id=watch_id)
        await self._call.write(rpc.WatchRequest(cancel_request=request))

    async def read(self) -> WatchResponse:
        message = await _call(self._call.read())
        if message is grpc.aio.EOF:
            raise ConnectionLost("watch stream closed by the server")
        events = []
        for event in message.events:
            if event.type == rpc.Event.EventType.DELETE:
                prev = int(event.prev_kv.create_revision) if event.HasField("prev_kv") else None
                events.append(WatchEvent("delete", _kv(event.kv), prev))
            else:
                events.append(WatchEvent("put", _kv(event.kv), None))
        return WatchResponse(
            watch_id=int(message.watch_id),
            revision=int(message.header.revision),
            created=bool(message.created),
            canceled=bool(message.canceled),
            compact_revision=int(message.compact_revision),
            cancel_reason=str(message.cancel_reason),
            events=tuple(events),
        )

    def close(self) -> None:
        self._call.cancel()


class EtcdConnection:
    def __init__(self, endpoint: str, config: EtcdConfig) -> None:
        host, _, port = endpoint.rpartition(":")
        self.endpoint = endpoint
        self._timeout = config.request_timeout_s
        self._client = aetcd.Client(
            host=host,
            port=int(port),
            timeout=config.request_timeout_s,
            options={
                "grpc.keepalive_time_ms": int(config.grpc_keepalive_s * 1000),
                "grpc.keepalive_timeout_ms": int(config.grpc_keepalive_timeout_s * 1000),
                "grpc.keepalive_permit_without_calls": 1,
                "grpc.http2.max_pings_without_data": 0,
                # Reconnect pacing is ours (backoff + jitter over the endpoints), not gRPC's.
                "grpc.initial_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 1000,
            },
        )

    async def open(self) -> int:
        """Connect and prove the server answers; its current revision."""
        await self._client.connect()
        _, revision = await self.range_prefix(b"\0", limit=1)
        return revision

    async def close(self) -> None:
        await self._client.close()

    def watch(self) -> WatchStream:
        return WatchStream(rpc.WatchStub(self._client.channel).Watch())

    async def range_prefix(self, prefix: bytes, *, limit: int = 0) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the revision the read was served at."""
        request = rpc.RangeRequest(key=prefix, range_end=range_end(prefix), limit=limit)
        reply = await _call(self._client.kvstub.Range(request, timeout=self._timeout))
        return [_kv(kv) for kv in reply.kvs], int(reply.header.revision)

    # plain keys (the config source): no lease, last writer wins

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key's value, or None, and the revision the read was served at."""
        reply = await _call(
            self._client.kvstub.Range(rpc.RangeRequest(key=key), timeout=self._timeout)
        )
        kvs = [_kv(kv) for kv in reply.kvs]
        return (kvs[0] if kvs else None), int(reply.header.revision)

    async def put(self, key: bytes, value: bytes) -> int:
        """Write ``key``; the revision of the write (the key's new mod_revision)."""
        request = rpc.PutRequest(key=key, value=value)
        reply = await _call(self._client.kvstub.Put(request, timeout=self._timeout))
        return int(reply.header.revision)

    async def delete(self, key: bytes) -> bool:
        request = rpc.DeleteRangeRequest(key=key)
        reply = await _call(self._client.kvstub.DeleteRange(request, timeout=self._timeout))
        return int(reply.deleted) > 0

    # leases

    async def grant(self, ttl: int) -> int:
        lease = await _call(self._client.lease(ttl))
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh the lease; its new TTL, 0 if it expired or was revoked."""
        reply = await _call(self._client.refresh_lease(lease_id))
        if reply is None:
            raise ConnectionLost("lease keepalive stream ended without a reply")
        return int(reply.TTL)

    async def revoke(self, lease_id: int) -> None:
        try:
            await _call(self._client.revoke_lease(lease_id))
        except aetcd.ClientError as exc:
            if not _lease_not_found(exc):
                raise

    # registrations: keys attached to our lease

    async def put_owned(self, key: bytes, value: bytes, lease_id: int) -> None:
        """Make ``key`` hold ``value`` under our lease.

        Our own key is updated in place (same create_revision: the same registration). A key
        of another owner (a previous incarnation of this agent, a static entry) is deleted
        and created anew, so the registration gets a new create_revision and a late remove
        of the old one cannot take the new one down.
        """
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease_id))
        for _ in range(_PUT_ATTEMPTS):
            ours = _compare(key, "LEASE", lease=lease_id)
            read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
            reply = await self._txn([ours], [put], [read])
            if reply.succeeded:
                return
            kvs = reply.responses[0].response_range.kvs
            if not kvs:
                absent = _compare(key, "CREATE", create_revision=0)
                if (await self._txn([absent], [put], [])).succeeded:
                    return
                continue
            seen = _compare(key, "MOD", mod_revision=int(kvs[0].mod_revision))
            delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
            await self._txn([seen], [delete], [])
        raise RegistryError(f"{key!r}: could not take the key after {_PUT_ATTEMPTS} tries")

    async def delete_owned(self, key: bytes, lease_id: int) -> bool:
        """Delete ``key`` if it is still ours (a successor may have taken the id)."""
        ours = _compare(key, "LEASE", lease=lease_id)
        delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
        reply = await self._txn([ours], [delete], [])
        return bool(reply.succeeded)

    async def _txn(self, compare: list[Any], success: list[Any], failure: list[Any]) -> Any:
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        try:
            return await _call(self._client.kvstub.Txn(request, timeout=self._timeout))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and _lease_not_found(exc):
                raise LeaseLost(str(exc.details())) from exc
            raise


def _compare(key: bytes, target: str, **value: int) -> Any:
    return rpc.Compare(
        result=rpc.Compare.CompareResult.EQUAL,
        target=getattr(rpc.Compare.CompareTarget, target),
        key=key,
        **value,
    )
