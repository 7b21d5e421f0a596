"""A request's JSON checked against its descriptor for what protobuf's json_format takes
wrongly: integer text int() would read, base64 it decodes leniently (issue 23)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from plugins.grpc.json_checks import JsonProblem, check

F = descriptor_pb2.FieldDescriptorProto


def _descriptor() -> Any:
    """package t; message Item {int64 count = 1;}
    message Req {int64 id = 1; bytes raw = 2; repeated Item items = 3;
                 map<int32, bytes> blobs = 4; google.protobuf.Timestamp at = 5;}"""
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import timestamp_pb2

    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="t.proto", package="t", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )
    item = file.message_type.add(name="Item")
    item.field.add(name="count", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    req = file.message_type.add(name="Req")
    req.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    req.field.add(name="raw", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    req.field.add(
        name="items", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".t.Item"
    )
    entry = req.nested_type.add(name="BlobsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    req.field.add(
        name="blobs",
        number=4,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_REPEATED,
        type_name=".t.Req.BlobsEntry",
    )
    req.field.add(
        name="at",
        number=5,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_OPTIONAL,
        type_name=".google.protobuf.Timestamp",
    )
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("t.Req")
    message_factory.GetMessageClass(descriptor)
    return descriptor


REQ = _descriptor()


@pytest.mark.parametrize(
    "good",
    [
        {"id": "-9223372036854775808", "raw": "AAEC", "items": [{"count": "7"}, {"count": 8}]},
        {"raw": "_-8=", "blobs": {"-3": "AA"}},  # URL-safe alphabet, padding optional
        {"at": "2023-11-14T22:13:20Z", "unknown": "json_format's to report"},
        {"id": None},
    ],
)
def test_what_protobuf_parsers_take_passes(good: dict[str, Any]) -> None:
    check(good, REQ, "body.message")


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"id": "1_000"}, "body.message.id"),
        ({"id": "١٢"}, "body.message.id"),  # Arabic-Indic digits: int() reads 12
        ({"id": " 12"}, "body.message.id"),
        ({"items": [{"count": "1"}, {"count": "2e3"}]}, "body.message.items[1].count"),
        ({"raw": "not base64!"}, "body.message.raw"),
        ({"raw": "AAA"}, None),  # unpadded but whole: fine
        ({"raw": "A"}, "body.message.raw"),  # one character cannot be a byte
        ({"blobs": {"x": "AA"}}, "body.message.blobs.x"),
        ({"blobs": {"1": "%%"}}, "body.message.blobs.1"),
    ],
)
def test_what_json_format_would_take_wrongly_names_its_path(
    bad: dict[str, Any], path: str | None
) -> None:
    if path is None:
        check(bad, REQ, "body.message")
        return
    with pytest.raises(JsonProblem) as caught:
        check(bad, REQ, "body.message")
    assert caught.value.path == path
