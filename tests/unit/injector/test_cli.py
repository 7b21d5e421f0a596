from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from tests.fixtures.tls import issue, make_ca


def _args(tmp_path: Path, config: str) -> list[str]:
    path = tmp_path / "injector.yaml"
    path.write_text(config)
    cert, key, _ = issue(make_ca(), tmp_path / "tls")
    return ["injector", "-c", str(path), "--tls-cert", str(cert), "--tls-key", str(key)]


def test_check_validates_config_and_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_args(tmp_path, "image: meshagent:1\n"), "--check"]) == 0
    assert "ok" in capsys.readouterr().out


def test_bad_config_is_exit_2_with_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_args(tmp_path, "image: m\nadmin_port: 0\n"), "--check"]) == 2
    err = capsys.readouterr().err
    assert "invalid injector configuration" in err and "admin_port:" in err


def test_missing_certificate_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(tmp_path, "image: m\n")
    args[args.index("--tls-key") + 1] = str(tmp_path / "missing.key")
    assert main(args) == 2
    assert "cannot load the TLS certificate" in capsys.readouterr().err


def test_required_arguments() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["injector", "-c", "x"])
    assert exited.value.code == 2
