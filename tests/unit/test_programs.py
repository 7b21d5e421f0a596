"""Every program a test or fixture starts is declared in tests/fixtures/programs.py, and
every Debian package declared there is installed by `make test`.

The scan reads the test tree's source: a program named by a string literal at the head of
an argv (``subprocess.run(["nginx", ...])``, ``ManagedProcess(["curl", ...])``,
``ns.run("ip", ...)``), and any ``shutil.which`` outside programs.py, which would find a
program without saying how it is installed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.fixtures import programs
from tests.fixtures.programs import PROGRAMS, MissingProgram, Program, require

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
INSTALL_SCRIPT = ROOT / "scripts" / "install-system-deps.sh"

# Calls whose first argument is a command line. The standard library's, called on their
# module (``subprocess.run``, ``asyncio.create_subprocess_exec``); ManagedProcess and the
# fixtures' wrappers by name. Methods named ``run`` elsewhere (Helm.run, Netns.run) take
# their own arguments: netns routes its commands through ``require`` when it runs them.
MODULE_STARTERS = frozenset(
    {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_exec", "execvp"}
)
NAMED_STARTERS = frozenset({"Popen", "ManagedProcess", "sh", "_run"})
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _starts_a_command(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in NAMED_STARTERS
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id in {"subprocess", "asyncio", "os"} and func.attr in MODULE_STARTERS
    return False


def _program_literal(arg: ast.expr) -> str | None:
    """The program a command line names with a string literal, if it does."""
    head: ast.expr | None = arg
    if isinstance(arg, (ast.List, ast.Tuple)):
        head = arg.elts[0] if arg.elts else None
    if isinstance(head, ast.Constant) and isinstance(head.value, str):
        word = head.value.split(" ", 1)[0]
        if _PROGRAM_NAME.fullmatch(Path(word).name):
            return Path(word).name
    return None


def started_programs(source: str, filename: str = "<test>") -> list[tuple[str, int, str]]:
    """(kind, line, name) for each program literal and each ``shutil.which`` in ``source``."""
    found: list[tuple[str, int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, (ast.Name, ast.Attribute)) and (
            getattr(func, "id", None) == "which" or getattr(func, "attr", None) == "which"
        ):
            found.append(("which", node.lineno, ast.unparse(node)))
        elif _starts_a_command(node) and node.args:
            program = _program_literal(node.args[0])
            if program is not None:
                found.append(("starts", node.lineno, program))
    return found


def _test_sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.resolve() != Path(programs.__file__))


def test_every_started_program_is_declared() -> None:
    undeclared = []
    for path in _test_sources():
        for kind, line, name in started_programs(path.read_text(encoding="utf-8"), str(path)):
            where = f"{path.relative_to(ROOT)}:{line}"
            if kind == "which":
                undeclared.append(f"{where}: {name} (use tests.fixtures.programs.require)")
            elif name not in PROGRAMS:
                undeclared.append(f"{where}: starts {name!r}, not declared in programs.py")
    assert not undeclared, "\n".join(undeclared)


def test_the_scan_finds_what_it_must() -> None:
    # The scan itself can fail: each form a test might use to start a program is found.
    source = """
import shutil, subprocess
subprocess.run(["nginx", "-c", conf])
subprocess.Popen(("haproxy", "-f", cfg))
ManagedProcess(["/usr/sbin/wrk", "-t1"], log_path=log)
sh("h2load", "-n", "10")
helm.run("template", ".")
shutil.which("h2spec")
subprocess.run([sys.executable, "-m", "uvicorn"])
subprocess.run([require("curl"), "-v"])
"""
    found = started_programs(source)
    assert [(kind, name) for kind, _, name in found] == [
        ("starts", "nginx"),
        ("starts", "haproxy"),
        ("starts", "wrk"),
        ("starts", "h2load"),
        ("which", "shutil.which('h2spec')"),
    ]


def _install_script_packages(purpose: str) -> set[str]:
    text = INSTALL_SCRIPT.read_text(encoding="utf-8")
    match = re.search(rf"^\s*{purpose}\)\s+packages=\(([^)]*)\)", text, re.MULTILINE)
    assert match is not None, f"no {purpose} list in {INSTALL_SCRIPT}"
    return set(match.group(1).split())


def test_every_declared_debian_package_is_installed_by_make_test() -> None:
    wanted = {p.debian for p in PROGRAMS.values() if p.debian is not None}
    wanted |= set(programs.DEBIAN_FILES.values())
    # bash and coreutils are on every Debian image (essential); the rest must be listed.
    missing = wanted - _install_script_packages("test") - {"bash", "coreutils"}
    assert not missing, f"make test does not install {sorted(missing)} (install-system-deps.sh)"


def test_a_missing_program_says_what_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROGRAMS, "nginx", Program("nginx-not-here-xyz", "nginx", programs._SYSTEM))
    monkeypatch.setattr(programs.shutil, "which", lambda *a, **k: None)
    with pytest.raises(MissingProgram, match=r"Debian package nginx, installed by make test-deps"):
        require("nginx")


def test_an_undeclared_program_is_refused() -> None:
    with pytest.raises(KeyError, match="not declared"):
        require("h2spec-undeclared")
