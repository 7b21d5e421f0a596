"""fuzz/run.py drives atheris over the decoders' source: a short run must see their lines
(coverage), or the fuzzer is mutating blind. It was blind for every module agent/compiled.py
lists until session 11: agent/__init__.py's source-first finder went ahead of atheris's
instrumenting finder, and a 10^7-execution run reported coverage 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _coverage(target: str, runs: int) -> int:
    env = {**os.environ, "MESHAGENT_PURE_PYTHON": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fuzz.run", target, f"-runs={runs}", "-seed=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.findall(r"\bcov: (\d+)", result.stderr)
    assert found, result.stderr[-3000:]
    return int(found[-1])


@pytest.mark.parametrize(
    ("target", "at_least"),
    [
        # Both decoders are modules agent/compiled.py lists; uninstrumented, libFuzzer
        # reports 2 or 13 "edges" (its own harness and the target function).
        ("hessian2", 100),
        ("http2_server", 100),
    ],
)
def test_a_short_fuzz_run_sees_the_decoders_lines(target: str, at_least: int) -> None:
    assert _coverage(target, 2000) >= at_least
