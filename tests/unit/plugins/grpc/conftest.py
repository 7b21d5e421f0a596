from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

from tests.fixtures.grpc_peer import LIBRARY_PROTO


@pytest.fixture(scope="session")
def library_descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/fixtures/grpc/library.proto as a FileDescriptorSet (grpcio-tools' protoc)."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = tmp_path_factory.mktemp("descriptors") / "library.pb"
    status = protoc.main(
        [
            "protoc",
            f"-I{LIBRARY_PROTO.parent}",
            f"-I{importlib.resources.files('grpc_tools') / '_proto'}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            str(LIBRARY_PROTO),
        ]
    )
    assert status == 0
    return out
