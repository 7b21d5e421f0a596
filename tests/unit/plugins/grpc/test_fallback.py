"""A fallback value as a reply message, by the reply type of a descriptor set (no
provider is contacted), and the errors that make the listener answer UNAVAILABLE."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cluster.cluster import Cluster
from agent.cluster.lb import RoundRobin
from agent.config import ListenerConfig, ServiceConfig
from agent.discovery.types import Instance, Reset
from agent.errors import InvalidRequest, InvokeNotSupported, NoEndpointError
from agent.runtime.protocols import ListenerContext
from plugins.grpc.fallback import encode_fallback
from plugins.grpc.reflection import DescriptorCache

METHOD = "/meshtest.library.Library/GetBook"


def _context(descriptor_set: Path, providers: int = 1) -> ListenerContext:
    service = ServiceConfig(
        name="library", protocol="grpc", options={"descriptor_set": str(descriptor_set)}
    )
    cluster = Cluster("library", RoundRobin())
    cluster.apply(Reset(1, tuple(Instance(f"p{i}", "127.0.0.1", 1 + i) for i in range(providers))))
    return ListenerContext(
        ListenerConfig(port=1, service="library", protocol="grpc"), service, cluster
    )


async def test_the_value_is_encoded_as_the_reply_type(library_descriptor_set: Path) -> None:

    context = _context(library_descriptor_set)
    encoded = await encode_fallback(
        context, DescriptorCache(5.0), METHOD, {"name": "shelves/1/books/2", "pages": "12"}
    )
    cache = DescriptorCache(5.0)
    methods = await cache.methods(
        "library", "x", "meshtest.library.Library", str(library_descriptor_set)
    )
    book = methods["GetBook"].output()
    book.ParseFromString(encoded)
    assert (book.name, book.pages) == ("shelves/1/books/2", 12)


async def test_a_value_the_type_has_no_field_for(library_descriptor_set: Path) -> None:
    with pytest.raises(InvalidRequest, match="nope"):
        await encode_fallback(
            _context(library_descriptor_set), DescriptorCache(5.0), METHOD, {"nope": 1}
        )


async def test_without_descriptors_or_providers(library_descriptor_set: Path) -> None:
    with pytest.raises(InvokeNotSupported):
        await encode_fallback(_context(library_descriptor_set), None, METHOD, {})
    with pytest.raises(NoEndpointError):
        await encode_fallback(_context(library_descriptor_set, 0), DescriptorCache(5.0), METHOD, {})
