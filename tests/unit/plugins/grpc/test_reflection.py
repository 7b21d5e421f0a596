from __future__ import annotations

from pathlib import Path

import pytest

from plugins.grpc.httprule import Binding
from plugins.grpc.reflection import DescriptorSetError, UnknownService, load_descriptor_set

LIBRARY = "meshtest.library.Library"


def test_methods_and_http_rules_from_a_descriptor_set(library_descriptor_set: Path) -> None:
    methods = load_descriptor_set(str(library_descriptor_set), LIBRARY)
    get = methods["GetBook"]
    assert get.path == "/meshtest.library.Library/GetBook"
    assert get.bindings == (
        Binding("GET", "/v1/{name=shelves/*/books/*}"),
        Binding("GET", "/v1/books/{name=**}"),
    )
    assert methods["CreateBook"].bindings == (
        Binding("POST", "/v1/{parent=shelves/*}/books", body="book"),
    )
    assert methods["Secret"].bindings == ()
    assert get.input(name="x").name == "x"


def test_unknown_service(library_descriptor_set: Path) -> None:
    with pytest.raises(UnknownService, match=r"no\.Such"):
        load_descriptor_set(str(library_descriptor_set), "no.Such")


def test_missing_or_garbage_file(tmp_path: Path) -> None:
    with pytest.raises(DescriptorSetError, match="No such file"):
        load_descriptor_set(str(tmp_path / "missing.pb"), LIBRARY)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff")
    with pytest.raises(DescriptorSetError, match="not a FileDescriptorSet"):
        load_descriptor_set(str(garbage), LIBRARY)
