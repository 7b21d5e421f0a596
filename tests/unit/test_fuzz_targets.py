"""The fuzz targets (fuzz/targets.py) stay runnable: each over its seeds, their bit flips
and random bytes, without atheris. A target raises only when a decoder raises something
other than its documented bad-input errors, which is the bug the fuzzer looks for."""

from __future__ import annotations

import logging
import random

import pytest

from fuzz.seeds import SEEDS
from fuzz.targets import TARGETS


def test_every_target_has_seeds() -> None:
    assert sorted(SEEDS) == sorted(TARGETS)
    assert all(SEEDS[name] for name in TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_its_seeds_their_mutations_and_noise(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    target = TARGETS[name]
    rng = random.Random(name)
    for seed in SEEDS[name]:
        target(seed)
        for _ in range(200):
            mutated = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            target(bytes(mutated))
            target(seed[: rng.randrange(len(seed) + 1)])
    for _ in range(300):
        target(rng.randbytes(rng.randrange(300)))


# Every input a fuzzer crashed a target with, kept as a regression (fuzz/run.py's
# ``crash-*`` files): target name, the input, where it was found.
CRASHES: list[tuple[str, bytes]] = [
    # parse_hops("²"): str.isdigit() is true for a superscript, int() refuses it
    # (make fuzz, session 8, after 910,997 executions).
    ("propagation", bytes.fromhex("0ac2b20a0a")),
]


@pytest.mark.parametrize(("name", "data"), CRASHES)
def test_inputs_that_crashed_a_target_no_longer_do(name: str, data: bytes) -> None:
    TARGETS[name](data)
