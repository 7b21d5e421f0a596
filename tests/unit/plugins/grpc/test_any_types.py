"""plugins/grpc/any_types.py with messages alone (the provider's reflection is
tests/integration/grpc/test_invoke.py's)."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from plugins.grpc import any_types
from plugins.grpc.reflection import provider_files


def _packed(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_any_type_names_finds_nested_and_repeated_anys_once() -> None:
    inner = status_pb2.Status(details=[_packed(struct_pb2.Value(string_value="x"))])
    outer = status_pb2.Status(
        details=[_packed(inner), _packed(inner), _packed(struct_pb2.Struct())]
    )
    assert any_types.any_type_names(outer) == ["google.rpc.Status", "google.protobuf.Struct"]


def test_any_type_names_is_bounded() -> None:
    many = status_pb2.Status(details=[_packed(struct_pb2.Struct())] * (any_types.MAX_ANYS * 2))
    assert any_types.any_type_names(many) == ["google.protobuf.Struct"]


def test_status_details_known_unknown_and_not_a_status() -> None:
    bad = error_details_pb2.ErrorInfo(reason="QUOTA", domain="example.com")
    unknown = any_pb2.Any(type_url="type.googleapis.com/nobody.Knows", value=b"\x08\x01")
    status = status_pb2.Status(code=8, details=[_packed(bad), unknown])
    details = any_types.status_details(status.SerializeToString(), descriptor_pool.Default())
    assert details == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "QUOTA",
            "domain": "example.com",
        },
        {"@type": "type.googleapis.com/nobody.Knows", "value": "CAE="},
    ]
    assert any_types.status_details(b"\xff\xff\xff", descriptor_pool.Default()) is None
    assert any_types.detail_type_names(status.SerializeToString()) == [
        "google.rpc.ErrorInfo",
        "nobody.Knows",
    ]


class _Reflection:
    """A provider's reflection database: its files by name, and who asked."""

    def __init__(self, *files: Any) -> None:
        self.files = {f.name: f for f in files}
        self.asked: list[str] = []

    def FindFileByName(self, name: str) -> Any:
        self.asked.append(name)
        return self.files[name]

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        self.asked.append(symbol)
        for proto in self.files.values():
            if any(f"{proto.package}.{m.name}" == symbol for m in proto.message_type):
                return proto
        raise KeyError(symbol)


def _file(name: str, message: str, *imports: str) -> Any:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package="p", syntax="proto3")
    proto.dependency.extend(imports)
    proto.message_type.add(name=message).field.add(name="n", number=1, type=9, label=1)
    return proto


def test_provider_files_asks_reflection_only_while_it_is_open() -> None:
    reflection = _Reflection(_file("a.proto", "A"), _file("b.proto", "B"))
    files = provider_files(reflection)
    pool = descriptor_pool.DescriptorPool(files)
    assert pool.FindMessageTypeByName("p.A").full_name == "p.A"
    files.reflection = None  # the lookup is over: no channel behind it now
    assert not any_types.knows(pool, "p.B")
    assert "p.B" not in reflection.asked


def test_a_fetched_file_and_its_imports_reach_the_pool() -> None:
    reflection = _Reflection(_file("c.proto", "C", "d.proto"), _file("d.proto", "D"))
    files = provider_files(None)
    pool = descriptor_pool.DescriptorPool(files)
    proto = reflection.FindFileContainingSymbol("p.C")
    any_types._add_file(reflection, files, proto.name, set())
    assert any_types.knows(pool, "p.C") and any_types.knows(pool, "p.D")
