"""Hessian 2 codec throughput: our codec (plugins/dubbo/hessian2) vs python-hessian (pyhessian).

    /work/main/.venv/bin/pip install python-hessian     # benchmark-only, not a runtime dependency
    /work/main/.venv/bin/python bench/hessian2.py [--repeat N --seconds S]

Decode: both decoders read the *same bytes*: the streams our encoder writes, which are
byte-identical to hessian-lite's (Dubbo 3.3's Java serializer) for these value shapes: that is
what tests/interop/test_hessian2_java.py checks against Java. python-hessian's Hessian 2 reader
(``ParserV2``) is driven value by value over the raw stream (no call/reply envelope).

Encode: python-hessian writes Hessian 1.0 forms only (``S`` + 16-bit length strings, ``I``
4-byte ints, ``D`` doubles; ``V``/``M`` ... ``z`` lists and maps, which Hessian 2 readers do not
accept; no 64-bit ints). Its strings, ints and doubles are still valid Hessian 2 (just never
compact), so encode is compared on those workloads only, on the same Python values; each
codec's MB/s is over its own output, and the ratio is of values/s (time for the same values).

Each figure: ``timeit`` repeated ``--repeat`` times, the number of loops sized to about
``--seconds`` per repetition; the median repetition is reported.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugins.dubbo.hessian2 import JavaObject, decode_all, encode  # noqa: E402

try:
    from pyhessian.encoder import Encoder as PyHessianEncoder
    from pyhessian.parser import Parser as PyHessianParser
except ImportError:  # pragma: no cover - benchmark-only dependency (the `bench` extra)
    PyHessianEncoder = PyHessianParser = None

PERSON = "org.meshagent.interop.api.Person"
ADDRESS = "org.meshagent.interop.api.Address"


@dataclass
class Workload:
    name: str
    values: list[object]
    encode_too: bool  # both encoders write these values in forms a Hessian 2 reader accepts


def workloads() -> list[Workload]:
    strings = [f"name-{i:011d}" for i in range(2000)]  # 16 ASCII chars each
    # BMP only (no surrogate pairs); < 32768 chars: python-hessian chunks longer ones with
    # its Hessian 1 "s" tag, which Hessian 2 reads as a typed list
    text = ("meshagent é 网格 " * 2000)[:30000]
    ints = [((i * 7919) % 400_000) - 200_000 for i in range(5000)] + [
        i * 800_000 for i in range(-2500, 2500)
    ]
    doubles = [i / 7 for i in range(10_000)]
    maps = [
        {"id": i, "name": f"user-{i:011d}", "score": i * 0.5, "active": i % 2 == 0}
        for i in range(1000)
    ]
    pojos = [
        JavaObject(
            PERSON,
            {
                "name": f"person-{i:09d}",
                "age": 20 + i % 50,
                "address": JavaObject(
                    ADDRESS, {"street": f"{i} Main St", "city": "Springfield", "zip": 10000 + i}
                ),
                "tags": ["a", "b"],
                "level": "HIGH",
            },
        )
        for i in range(500)
    ]
    return [
        Workload("2000 strings x 16 B", list(strings), True),
        Workload("one 30k-char UTF-8 string", [text], True),
        Workload("10000 ints (int32)", list(ints), True),
        Workload("10000 doubles", list(doubles), True),
        Workload("list of 1000 maps", [maps], False),
        Workload("list of 500 POJOs", [pojos], False),
        Workload("256 KiB binary", [bytes(range(256)) * 1024], False),
    ]


def pyhessian_decode(data: bytes) -> list[object]:
    parser = PyHessianParser()
    parser.version = 2
    stream = io.BytesIO(data)
    parser._stream = stream  # the parser has no public "read values one by one" entry
    out = []
    end = len(data)
    while stream.tell() < end:
        out.append(parser.read_object())
    return out


def pyhessian_encode(values: list[object]) -> bytes:
    encoder = PyHessianEncoder()
    return b"".join([encoder.encode(v) for v in values])


def seconds_per_call(fn: Callable[[], object], repeat: int, budget: float) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # loops taking >= 0.2 s
    number = max(1, round(number * budget / 0.2))
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per repetition")
    args = parser.parse_args(argv)
    if PyHessianParser is None:
        # Checked after --help so that `--help` answers without the bench extra installed.
        sys.exit("python-hessian is not installed: pip install -e '.[bench]' (make bench does it)")

    print(f"timeit: median of {args.repeat} repetitions of ~{args.seconds:g} s each\n")
    print(
        f"{'workload':<27} {'bytes':>9}  {'decode MB/s: ours':>17} {'pyhessian':>9} "
        f"{'ratio':>6}  {'encode MB/s: ours':>17} {'pyhessian':>9} {'ratio':>6}"
    )
    for w in workloads():
        data = encode(*w.values)
        ours = decode_all(data)
        theirs = pyhessian_decode(data)
        if len(ours) != len(theirs) or (w.encode_too and ours != theirs):
            raise SystemExit(f"{w.name}: the decoders disagree")
        t_ours = seconds_per_call(lambda d=data: decode_all(d), args.repeat, args.seconds)
        t_theirs = seconds_per_call(lambda d=data: pyhessian_decode(d), args.repeat, args.seconds)
        mb = len(data) / 1e6
        line = (
            f"{w.name:<27} {len(data):>9,}  {mb / t_ours:>17.1f} {mb / t_theirs:>9.1f} "
            f"{t_theirs / t_ours:>5.1f}x"
        )
        if w.encode_too:
            their_bytes = pyhessian_encode(w.values)
            if decode_all(their_bytes) != w.values:
                raise SystemExit(f"{w.name}: python-hessian's bytes do not read back")
            e_ours = seconds_per_call(lambda v=w.values: encode(*v), args.repeat, args.seconds)
            e_theirs = seconds_per_call(
                lambda v=w.values: pyhessian_encode(v), args.repeat, args.seconds
            )
            line += (
                f"  {mb / e_ours:>17.1f} {len(their_bytes) / 1e6 / e_theirs:>9.1f} "
                f"{e_theirs / e_ours:>5.1f}x  (pyhessian's output {len(their_bytes):,} B)"
            )
        else:
            line += f"  {'-':>17} {'-':>9} {'-':>6}"
        print(line, flush=True)
    print("\nratio = python-hessian's time / ours for the same input (>1: ours is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
