from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from agent.cli import main
from agent.runtime.cpus import available_cpus
from tests.fixtures.net import free_port


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"meshagent {__version__}"
    assert lines[1] == f"workers: auto = {available_cpus()} (CPU affinity and cgroup quota)"
    assert lines[2].startswith("compiled with mypyc: ")
    listed = [line.split()[-1] for line in lines[3:]]
    assert "plugins.dubbo.hessian2.encoder" in listed and "agent.api.http1" in listed


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "examples/agent.yaml"]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_config_names_ignored_environment_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHAGENT_SERVICE_HOST", "10.0.0.1")
    assert main(["check-config", "examples/agent.yaml"]) == 0
    captured = capsys.readouterr()
    assert "ok" in captured.out
    assert "meshagent: MESHAGENT_SERVICE_HOST ignored: it names no setting" in captured.err


def test_check_config_prints_every_error_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "services: [{name: a, lb: {policy: nope}}]\n"
        "listeners: [{port: 80, service: a}, {port: 70000, service: a}]\n"
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "listeners[1].port: must be between 1 and 65535" in err
    assert "Traceback" not in err


def test_check_config_validates_the_plugins_settings_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "services: [{name: a}]\n"
        "listeners: [{port: 9003, service: a, protocol: dubbo, config: {nosuch: 1}}]\n"
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "listeners[0].config.nosuch: Extra inputs are not permitted" in err


def test_run_refuses_an_invalid_file_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("services: [{name: a, lb: {policy: fastest}}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "services[0].lb.policy: unknown meshagent.lb_policies plugin 'fastest'" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_names_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "agent.yaml"
        path.write_text(
            f"admin: {{port: {free_port()}}}\nservices: [{{name: a}}]\n"
            f"listeners: [{{port: {port}, service: a}}]\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_refuses_routes_to_unknown_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 25: check-config passed an HTTP route to an unknown service; run then failed.
    path = tmp_path / "bad.yaml"
    path.write_text(
        "services: [{name: a, protocol: http}, {name: t, protocol: thrift}]\n"
        "listeners:\n"
        "  - {port: 9003, service: a, protocol: http,"
        " config: {routes: [{path_prefix: /x, service: nosuch}]}}\n"
        "  - {port: 9004, service: t, protocol: thrift, config: {routes: {ping: gone}}}\n"
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "listeners[0].config.routes[0].service: unknown service 'nosuch'" in err
    path.write_text(
        "services: [{name: t, protocol: thrift}]\n"
        "listeners: [{port: 9004, service: t, protocol: thrift, config: {routes: {ping: gone}}}]\n"
    )
    assert main(["check-config", str(path)]) == 2
    assert "listeners[0].config.routes.ping: unknown service 'gone'" in capsys.readouterr().err
