"""Pooled upstream channels: one grpc.aio channel per endpoint address, shared by calls.

An HTTP/2 channel multiplexes every call to its endpoint, so the pool only decides which
endpoint; the listener and the invoker pick one per call (not per client connection, the
classic gRPC balancing mistake: a long-lived client connection would pin one provider).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import grpc  # type: ignore[import-untyped]

from agent.cluster.cluster import Cluster
from agent.cluster.host import Host

# A removed endpoint's channel closes after its calls finish, or after this long.
_RETIRE_GRACE_S = 30.0


def target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ChannelPool:
    def __init__(self, max_message_bytes: int) -> None:
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # Each endpoint gets its own channel: grpc's own balancing has nothing to do.
            ("grpc.lb_policy_name", "pick_first"),
        ]
        self._channels: dict[str, Any] = {}
        self._retiring: dict[asyncio.Task[None], Any] = {}

    def get(self, host: Host, cluster: Cluster) -> Any:
        """The channel to ``host`` (a ``grpc.aio.Channel``), made on first use."""
        address = target(host.instance.host, host.instance.port)
        channel = self._channels.get(address)
        if channel is None:
            self._retire_gone(cluster)
            channel = grpc.aio.insecure_channel(address, options=self._options)
            self._channels[address] = channel
        return channel

    def has(self, host: Host) -> bool:
        """Is there a channel to ``host`` already (no new connection for a call to it)?"""
        return target(host.instance.host, host.instance.port) in self._channels

    def open_to(self, hosts: Iterable[Host]) -> int:
        """Channels (one HTTP/2 connection each) to ``hosts``."""
        return sum(1 for h in hosts if target(h.instance.host, h.instance.port) in self._channels)

    def _retire_gone(self, cluster: Cluster) -> None:
        # Checked only when a channel is added: endpoints come and go far less often
        # than calls, and a stale channel costs an idle connection, not correctness.
        live = {target(h.instance.host, h.instance.port) for h in cluster.hosts()}
        for address in [a for a in self._channels if a not in live]:
            channel = self._channels.pop(address)
            task = asyncio.get_running_loop().create_task(channel.close(_RETIRE_GRACE_S))
            self._retiring[task] = channel
            task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.pop(task, None)

    async def close(self) -> None:
        channels = [*self._channels.values(), *self._retiring.values()]
        self._channels = {}
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # A retiring channel cut short by the cancel is closed at once here.
        for channel in channels:
            await channel.close()
