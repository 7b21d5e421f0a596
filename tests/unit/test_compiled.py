"""The compiled build: present where a C compiler is, current, and switchable off.

"One source tree, two speeds": the suite runs against what `make` built (compiled where a
compiler exists); MESHAGENT_PURE_PYTHON=1 runs the same modules from source.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from agent.compiled import COMPILED, compiled_modules, module_name, stale_builds
from tests.fixtures.programs import require

ROOT = Path(__file__).resolve().parents[2]
PURE = os.environ.get("MESHAGENT_PURE_PYTHON") == "1"


def test_the_build_is_compiled_where_a_compiler_exists() -> None:
    found = compiled_modules()
    assert len(found) == len(COMPILED)
    if PURE:
        # The interpreted run: every listed module from its source.
        assert not any(found.values())
        return
    require("gcc")  # make test installs it; without it the build is interpreted
    interpreted = sorted(name for name, native in found.items() if not native)
    # A silent fall-back to interpreted code (a failed build, a stale install) is caught.
    assert not interpreted, f"interpreted although listed: {interpreted} (run make)"


def test_no_compiled_build_is_older_than_its_source() -> None:
    # An edited module with its old build beside it would run the old code.
    assert not stale_builds(), "rebuild with `make compiled`"


def test_pure_python_runs_every_listed_module_from_source() -> None:
    code = (
        "import sys, importlib; import agent\n"
        "from agent.compiled import COMPILED, module_name\n"
        "for p in COMPILED:\n"
        "    m = importlib.import_module(module_name(p))\n"
        "    assert m.__file__.endswith('.py'), m.__file__\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "MESHAGENT_PURE_PYTHON": "1", "PYTHONPATH": str(ROOT)},
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_module_names() -> None:
    assert module_name("plugins/dubbo/body.py") == "plugins.dubbo.body"


def _handlers(function: ast.AST) -> list[ast.ExceptHandler]:
    """The except clauses of one function's own body (not of functions inside it)."""
    found = []
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.ExceptHandler):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def test_no_compiled_function_binds_one_name_to_two_exception_types() -> None:
    """mypyc gives ``except A as exc`` and a later ``except B as exc`` in one function one
    variable typed A, checked when A is a native class: when B is raised, the agent fails
    with "A object expected; got B". It did in the Dubbo invocation (an argument hessian
    could not encode: a 500, issue 23); five more functions had the pattern with a first
    type mypyc does not check (an interpreted class, an untyped one), safe only until that
    class is compiled. One name per type."""
    root = Path(__file__).resolve().parents[2]
    clashes = []
    for path in COMPILED:
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            bound: dict[str, str] = {}
            for handler in sorted(_handlers(function), key=lambda h: h.lineno):
                if handler.name is None or handler.type is None:
                    continue
                kind = ast.unparse(handler.type)
                first = bound.setdefault(handler.name, kind)
                if first != kind:
                    clashes.append(f"{path}:{handler.lineno} {handler.name}: {first}, {kind}")
    assert clashes == []
