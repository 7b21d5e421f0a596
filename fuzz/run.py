"""Run one fuzz target under atheris (libFuzzer), or every target one after the other.

    make fuzz FUZZ_SECONDS=60                      # every target, 60 s each
    MESHAGENT_PURE_PYTHON=1 .venv/bin/python -m fuzz.run hessian2 -max_total_time=600

Arguments after the target name go to libFuzzer (``-max_total_time``, ``-runs``,
corpus directories). Each target starts from its seeds in fuzz/seeds.py. A crash leaves
libFuzzer's ``crash-*`` file; turn it into a regression test under tests/ with its bytes.
Prints the executions reached (libFuzzer's ``stat::number_of_executed_units``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fuzz_one(name: str, libfuzzer_args: list[str]) -> int:
    import atheris  # the fuzz extra (make fuzz installs it); not a dependency of the agent

    # agent/__init__.py puts its source-first finder at the head of sys.meta_path
    # (MESHAGENT_PURE_PYTHON=1); done inside the block below it would sit ahead of
    # atheris's instrumenting finder, and the listed modules would run uninstrumented.
    import agent  # noqa: F401

    with atheris.instrument_imports():
        from fuzz.seeds import SEEDS
        from fuzz.targets import TARGETS
    target = TARGETS[name]
    logging.disable(logging.CRITICAL)  # the listeners log every refusal
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(SEEDS.get(name, [])):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], "-print_final_stats=1", *libfuzzer_args, str(corpus)], target)
    atheris.Fuzz()
    return 0


def fuzz_all(seconds: int) -> int:
    from fuzz.targets import TARGETS

    failed = []
    for name in TARGETS:
        print(f"== {name}: {seconds} s", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "fuzz.run", name, f"-max_total_time={seconds}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        executed = [
            line for line in result.stderr.splitlines() if "number_of_executed_units" in line
        ]
        print(executed[-1] if executed else result.stderr[-2000:], flush=True)
        if result.returncode != 0:
            failed.append(name)
            print(result.stderr[-4000:], flush=True)
    if failed:
        print(f"crashed: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "--all":
        return fuzz_all(int(argv[2]) if len(argv) > 2 else 60)
    if len(argv) < 2:
        print(__doc__)
        return 2
    return fuzz_one(argv[1], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
