"""The build: setuptools, with the modules agent/compiled.py lists compiled by mypyc.

Interpreted instead (the same behaviour, slower) when ``MESHAGENT_PURE_PYTHON=1`` is set
at install time, when there is no C compiler, or when mypyc is not importable. mypyc
type-checks what it compiles with the project's mypy settings, so it needs the runtime
dependencies installed: `make` installs them first, then builds without build isolation
(``pip install --no-build-isolation``; the same for a wheel: ``pip wheel
--no-build-isolation .``).
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _say(message: str) -> None:
    print(f"meshagent build: {message}", file=sys.stderr)


def ext_modules() -> list[Any]:
    if os.environ.get("MESHAGENT_PURE_PYTHON") == "1":
        _say("MESHAGENT_PURE_PYTHON=1: every module interpreted")
        return []
    compiler = os.environ.get("CC", "cc").split()[0]
    if shutil.which(compiler) is None and shutil.which("gcc") is None:
        _say("no C compiler: every module interpreted")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc (from mypy) is not installed: every module interpreted")
        return []
    compiled = runpy.run_path(str(HERE / "agent" / "compiled.py"))["COMPILED"]
    _say(f"compiling {len(compiled)} modules with mypyc")
    # multi_file: the C is split per module (smaller files for gcc); ``parallel`` below
    # builds the extensions side by side (the shared library and each module's shim).
    return list(mypycify(list(compiled), opt_level="3", multi_file=True))


setup(
    ext_modules=ext_modules(),
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
