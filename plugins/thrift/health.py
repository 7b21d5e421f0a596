"""The ``thrift`` active health check: a connect, plus an optional cheap call.

A TCP connect only says the port is open; a server whose worker threads are stuck still
accepts. With ``method`` set (a method taking no required arguments, such as ``ping``), the
probe calls it and passes only on its REPLY; a TApplicationException (the method is unknown,
the handler failed) fails it. The runner applies the timeout: a server that accepts and
never answers fails the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.cluster.host import Host
from agent.codec import NEED_DATA
from agent.errors import RemoteProtocolError
from agent.plugins import Plugin, PluginKind
from agent.runtime.health import HealthChecker
from plugins.thrift.codec import (
    Header,
    Message,
    MessageDecoder,
    MessageType,
    Proto,
    Transport,
    encode_header,
    frame,
)

# A reply to a cheap method is small; anything bigger here is not an answer.
_MAX_REPLY = 64 * 1024
_SEQID = 1


class ThriftHealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str | None = Field(default=None, min_length=1)
    protocol: Literal["binary", "compact"] = "binary"
    transport: Literal["framed", "buffered"] = "framed"


class ThriftHealthChecker(HealthChecker):
    def __init__(self, config: ThriftHealthConfig) -> None:
        self.config = config
        self.proto = Proto(config.protocol)
        self.transport = Transport(config.transport)
        if config.method is not None:
            # A call with an empty argument struct (one STOP byte), made once.
            head = encode_header(Header(config.method, MessageType.CALL, _SEQID, self.proto))
            self.call: bytes | None = frame(head + b"\x00", self.transport)
        else:
            self.call = None

    async def check(self, host: Host) -> bool:
        reader, writer = await asyncio.open_connection(host.instance.host, host.instance.port)
        try:
            if self.call is None:
                return True
            writer.write(self.call)
            decoder = MessageDecoder(self.proto, self.transport, _MAX_REPLY)
            while True:
                data = await reader.read(4096)
                if not data:
                    return False  # closed without answering
                decoder.receive_data(data)
                try:
                    message = decoder.next_event()
                except RemoteProtocolError:
                    return False  # not a Thrift answer in the configured form
                if message is not NEED_DATA:
                    assert isinstance(message, Message)
                    header = message.header
                    return header.seqid == _SEQID and header.type == MessageType.REPLY
        finally:
            writer.close()
            # The server may reset right after answering: the verdict stands.
            with contextlib.suppress(OSError):
                await writer.wait_closed()


PLUGIN: Plugin[HealthChecker] = Plugin(
    PluginKind.HEALTH_CHECKER, "thrift", ThriftHealthConfig, ThriftHealthChecker
)
