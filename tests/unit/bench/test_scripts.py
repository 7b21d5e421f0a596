"""Every benchmark starts: a script's own name must not shadow a module it imports
(bench/http.py once hid the standard library's ``http`` from every other script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
# common.py is a library for the scripts, not one itself.
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name not in {"__init__.py", "common.py"})


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_answers_help(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
