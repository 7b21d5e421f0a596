"""The image recipe without a Docker engine: the Dockerfile's install step
(scripts/install-agent.sh) run on a copy of the build context, and the Dockerfile checked
against the chart it must serve."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.programs import require
from tests.fixtures.tls import issue, make_ca

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
VALUES = ROOT / "helm" / "meshagent" / "values.yaml"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _context_files() -> list[str]:
    """The tracked files the build context holds (.dockerignore applied)."""
    ignored = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    kept = []
    for path in tracked:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if not any(
            fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes for pattern in ignored
        ):
            kept.append(path)
    return kept


def test_dockerfile_agrees_with_the_chart() -> None:
    instructions = _instructions()
    values = yaml.safe_load(VALUES.read_text())
    user = next(arg for op, arg in instructions if op == "USER")
    assert user == f"{values['agent']['uid']}:{values['agent']['gid']}"
    # The chart's containers run `meshagent` by name: the install prefix must be on PATH.
    run = [arg for op, arg in instructions if op == "RUN" and "install-agent.sh" in arg]
    assert len(run) == 1
    prefix = run[0].split("install-agent.sh", 1)[1].split()[0]
    env = " ".join(arg for op, arg in instructions if op == "ENV")
    assert f"PATH={prefix}/bin:" in env
    assert next(arg for op, arg in instructions if op == "ENTRYPOINT") == '["meshagent"]'
    # iptables for the init container, as the capture tests use it.
    assert any(op == "RUN" and "install" in arg and " iptables" in arg for op, arg in instructions)
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms[0].split()[0] == froms[1], "both stages need the same Python for the venv"


def test_build_context_holds_what_the_install_needs() -> None:
    files = set(_context_files())
    for needed in (
        "pyproject.toml",
        "README.md",
        "scripts/install-agent.sh",
        "examples/agent.yaml",
        "agent/cli.py",
    ):
        assert needed in files, needed
    assert not [f for f in files if f.startswith(("tests/", ".venv/"))]
    assert os.access(ROOT / "scripts" / "install-agent.sh", os.X_OK)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """scripts/install-agent.sh run on a copy of the build context, as the Dockerfile does."""
    base = tmp_path_factory.mktemp("image")
    context = base / "src"
    for path in _context_files():
        target = context / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target)
    prefix = base / "opt-meshagent"
    result = subprocess.run(
        [require("bash"), str(context / "scripts" / "install-agent.sh"), str(prefix)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "meshagent 0.1.0" in result.stdout
    yield prefix


def test_installed_agent_is_not_the_checkout(installed: Path) -> None:
    python = installed / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import agent, plugins.zookeeper, plugins.grpc; print(agent.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    assert where.startswith(str(installed)), where


def test_installed_injector_starts_checks(installed: Path, tmp_path: Path) -> None:
    cert, key, _ = issue(make_ca(), tmp_path)
    config = tmp_path / "injector.yaml"
    config.write_text("image: meshagent:0.1.0\n")
    result = subprocess.run(
        [
            str(installed / "bin" / "meshagent"),
            "injector",
            "--check",
            "-c",
            str(config),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
