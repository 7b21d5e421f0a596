"""Java conformance of the Hessian 2.0 codec against hessian-lite (as shipped with Dubbo 3.3).

The Maven project in java/hessian-vectors holds the same named vectors as VECTORS below.
Java writes each as one stream (``write``); we check that our encoder produces the same
bytes and our decoder the expected values; then Java reads what we wrote (``check``) and
compares it with its own objects, reference sharing included.

Needs ``java`` and ``mvn`` on PATH (`make test` installs them); the first run downloads
hessian-lite and the Maven plugins into ~/.m2.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from plugins.dubbo import jdk_types
from plugins.dubbo.generic import to_java, to_json
from plugins.dubbo.hessian2 import (
    JavaEnum,
    JavaLong,
    JavaObject,
    TypedList,
    TypedMap,
    decode_all,
    encode,
)
from tests.fixtures.programs import require
from tests.support.hessian2_graph import graph_diff
from tests.support.jdk_values import ARRAY_VALUES, JDK_VALUES

PROJECT = Path(__file__).parent / "java" / "hessian-vectors"
MAIN_CLASS = "meshagent.interop.HessianVectors"
PKG = "meshagent.interop"
PERSON, ADDRESS, COLOR = f"{PKG}.Person", f"{PKG}.Address", f"{PKG}.Color"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

pytestmark = [pytest.mark.integration]


def ms(millis: int) -> datetime:
    return EPOCH + timedelta(milliseconds=millis)


def pattern(length: int) -> bytes:
    return bytes((i * 31 + 7) & 0xFF for i in range(length))


def person(**changes: object) -> JavaObject:
    # Field order is hessian-lite's: primitive and java.lang fields, then the others,
    # all reversed (UnsafeSerializer.introspect).
    fields: dict[str, object] = {
        "avatar": pattern(20),
        "attrs": {"k": JavaLong(1)},
        "friend": None,
        "created": ms(1_700_000_000_000),
        "balance": Decimal("10.25"),
        "color": JavaEnum(COLOR, "GREEN"),
        "tags": ["a", 1],
        "address": JavaObject(ADDRESS, {"zip": "200000", "city": "Shanghai"}),
        "active": True,
        "score": 99.5,
        "boxedId": JavaLong(123456789012),
        "id": JavaLong(7),
        "age": 42,
        "name": "Alice \U0001f600",
    }
    fields.update(changes)
    return JavaObject(PERSON, fields)


def _shared_refs() -> list[object]:
    shared = JavaObject(ADDRESS, {"zip": "75001", "city": "Paris"})
    inner: list[object] = [1]
    outer = [inner, inner]
    return [outer, person(address=shared), person(address=shared, name="Bob"), outer]


def _cycle() -> list[object]:
    self_ref = person()
    self_ref.fields["friend"] = self_ref
    return [self_ref]


def _many_classes() -> list[object]:
    values: list[object] = [JavaObject(f"{PKG}.Many$K{i}", {"v": i}) for i in range(18)]
    values.append(JavaObject(f"{PKG}.Many$K17", {"v": 17}))
    return values


VECTORS: dict[str, list[object]] = {
    "ints": [
        0,
        -16,
        47,
        -17,
        48,
        -2048,
        2047,
        -2049,
        2048,
        -262144,
        262143,
        -262145,
        262144,
        -(2**31),
        2**31 - 1,
    ],
    "longs": [
        JavaLong(v)
        for v in (
            0,
            -8,
            15,
            -9,
            16,
            -2048,
            2047,
            -2049,
            2048,
            -262144,
            262143,
            -262145,
            262144,
            -(2**31),
            2**31 - 1,
            -(2**31) - 1,
            2**31,
            -(2**63),
            2**63 - 1,
        )
    ],
    "doubles": [
        0.0,
        1.0,
        127.0,
        -128.0,
        128.0,
        -129.0,
        32767.0,
        -32768.0,
        32768.0,
        -32769.0,
        0.5,
        12.25,
        0.001,
        -1.5,
        3.14159,
        0.1,
        2147483.647,
        2147483.648,
        1e300,
        -1e-300,
        5e-324,
        1.7976931348623157e308,
        float("nan"),
        float("inf"),
        float("-inf"),
        1.0e10,
        -2.5e9,
    ],
    "bool_null": [True, False, None],
    "dates": [
        ms(0),
        ms(60000 * 12345),
        ms(1_700_000_000_123),
        ms(-1),
        ms(-60000 * 100),
        ms(60000 * 2**31),
        ms(253_402_300_799_999),
    ],
    "strings": [
        "",
        "a",
        "x" * 31,
        "x" * 32,
        "x" * 1023,
        "x" * 1024,
        "h\u00e9llo w\u00f6rld \u20ac",
        "\U0001f600",
        "a\U0001f600b",
        "lone \ud800 surrogate",
        "\u00e9" * 5000 + "\u20ac",
    ],
    "strings_chunked": [
        "x" * 32768,
        "y" * 32769,
        "a" * 32767 + "\U0001f600" + "b" * 10,
        "\u00e9\U0001f600" * 25000,
    ],
    "binaries": [pattern(n) for n in (0, 1, 15, 16, 1023, 1024, 8189, 8190, 20000, 70000)],
    "binary_after_string": [
        "\u00e9" * 5000,
        pattern(9000),
        "z" * 8000,
        pattern(300),
        pattern(8180),
    ],
    "lists": [
        [],
        [1, "two", None, True],
        list(range(8)),
        [[1], [2, [3]]],
        TypedList("java.util.LinkedList", [1, 2]),
        TypedList("java.util.LinkedList", list(range(10))),
        TypedList("java.util.LinkedList", [3]),
        TypedList("[int", [1, 2, 3]),
        TypedList("[long", [JavaLong(1), JavaLong(2)]),
        TypedList("[string", ["a", "b"]),
        TypedList("[object", [1, "x", None]),
        TypedList("[double", [1.5, 2.0]),
    ],
    "maps": [
        {"a": 1},
        {1: "one", 2: "two"},
        {},
        TypedMap("java.util.LinkedHashMap", {"z": 1, "a": 2}),
        TypedMap("java.util.TreeMap", {"a": 1, "b": 2}),
        TypedMap("java.util.LinkedHashMap", {"k": ["v"]}),
    ],
    "pojo": [person()],
    "shared_refs": _shared_refs(),
    "cycle": _cycle(),
    "enums": [
        JavaEnum(COLOR, "RED"),
        JavaEnum(COLOR, "GREEN"),
        JavaEnum(COLOR, "RED"),
        [JavaEnum(COLOR, "GREEN"), JavaEnum(COLOR, "GREEN")],
    ],
    "many_classes": _many_classes(),
    "big_decimals": [
        Decimal(s)
        for s in (
            "0",
            "1.50",
            "-123.456",
            "1E+3",
            "1E-10",
            "12345678901234567890.123456789",
            "-0.00",
        )
    ],
    "jdk_types": [jdk_types.ENCODERS[declared](text) for declared, text in JDK_VALUES],
    "arrays": [to_java(items, declared) for declared, items in ARRAY_VALUES],
    "dubbo_request": [
        "2.0.2",
        "com.example.DemoService",
        "0.0.0",
        "sayHello",
        "Ljava/lang/String;",
        "world",
        {"path": "com.example.DemoService"},
    ],
}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="session")
def java_classpath() -> str:
    build = _run(require("mvn"), "-q", "-B", "-Dstyle.color=never", "package", cwd=PROJECT)
    assert build.returncode == 0, f"mvn package failed:\n{build.stdout}\n{build.stderr}"
    target = PROJECT / "target"
    return f"{target / 'hessian-vectors.jar'}:{target / 'lib'}/*"


@pytest.fixture(scope="session")
def java_vectors(java_classpath: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("java-vectors")
    result = _run(require("java"), "-cp", java_classpath, MAIN_CLASS, "write", str(out))
    assert result.returncode == 0, result.stderr
    written = {path.stem: path.read_bytes() for path in out.glob("*.bin")}
    assert set(written) == set(VECTORS), "Java and Python vector names differ"
    return written


def _java_check(classpath: str, directory: Path) -> tuple[int, dict[str, str]]:
    result = _run(require("java"), "-cp", classpath, MAIN_CLASS, "check", str(directory))
    verdicts: dict[str, str] = {}
    for line in result.stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        verdicts[rest.split(":", 1)[0]] = line if verdict != "PASS" else "PASS"
    return result.returncode, verdicts


@pytest.mark.parametrize("name", list(VECTORS))
def test_encoder_writes_javas_bytes(name: str, java_vectors: dict[str, bytes]) -> None:
    ours, theirs = encode(*VECTORS[name]), java_vectors[name]
    if ours != theirs:
        at = next(
            (i for i, (x, y) in enumerate(zip(ours, theirs, strict=False)) if x != y),
            min(len(ours), len(theirs)),
        )
        pytest.fail(
            f"{name}: first difference at byte {at} (ours {len(ours)} bytes, Java "
            f"{len(theirs)}): ours {ours[max(0, at - 8) : at + 8].hex()} "
            f"Java {theirs[max(0, at - 8) : at + 8].hex()}"
        )


@pytest.mark.parametrize("name", list(VECTORS))
def test_decoder_reads_javas_bytes(name: str, java_vectors: dict[str, bytes]) -> None:
    problem = graph_diff(VECTORS[name], decode_all(java_vectors[name]))
    assert problem is None, problem


def test_javas_jdk_values_read_as_the_json_a_caller_sends(
    java_vectors: dict[str, bytes],
) -> None:
    decoded = decode_all(java_vectors["jdk_types"])
    assert [to_json(value) for value in decoded] == [text for _, text in JDK_VALUES]


def test_java_reads_our_bytes(java_classpath: str, tmp_path: Path) -> None:
    for name, values in VECTORS.items():
        (tmp_path / f"{name}.bin").write_bytes(encode(*values))
    status, verdicts = _java_check(java_classpath, tmp_path)
    failed = {name: line for name, line in verdicts.items() if line != "PASS"}
    assert set(verdicts) == set(VECTORS)
    assert not failed, "\n".join(failed.values())
    assert status == 0


def test_java_check_rejects_wrong_values(java_classpath: str, tmp_path: Path) -> None:
    # The checker must be able to fail: swap two vectors' bytes and drop a shared ref.
    for name, values in VECTORS.items():
        (tmp_path / f"{name}.bin").write_bytes(encode(*values))
    (tmp_path / "ints.bin").write_bytes(encode(*VECTORS["longs"]))
    unshared = _shared_refs()
    unshared[3] = [[1], [1]]
    (tmp_path / "shared_refs.bin").write_bytes(encode(*unshared))
    status, verdicts = _java_check(java_classpath, tmp_path)
    assert status == 1
    assert verdicts["ints"].startswith("FAIL ints")
    assert "sharing" in verdicts["shared_refs"] or verdicts["shared_refs"].startswith("FAIL")
    assert verdicts["strings"] == "PASS"


# -- differential: Java re-writes random streams we wrote --------------------------------

_INT_EDGES = [0, -16, 47, -17, 48, -2048, 2047, -2049, 2048, -262144, 262143, -262145, 262144]
_ALPHABET = ["a", "z", " ", "\u00e9", "\u20ac", "\U0001f600", "\ud800", "\udc00", "\u07ff"]


class _RandomStream:
    """Random values of the types both sides map one to one (so Java re-writes them as is)."""

    def __init__(self, seed: int) -> None:
        import random

        self.rng = random.Random(seed)
        self.shared: list[object] = []

    def text(self) -> str:
        rng = self.rng
        length = rng.choice([0, 1, 31, 32, 1023, 1024, rng.randrange(2000), 32767, 32769])
        if rng.random() < 0.5:
            return "x" * length
        return "".join(rng.choice(_ALPHABET) for _ in range(min(length, 40_000)))

    def scalar(self) -> object:
        rng = self.rng
        match rng.randrange(10):
            case 0:
                return rng.choice([None, True, False])
            case 1:
                edge = rng.choice(_INT_EDGES)
                return rng.choice([edge, rng.randrange(-(2**31), 2**31)])
            case 2:
                edge = rng.choice([*_INT_EDGES, -8, 15, -9, 16, 2**31, -(2**31) - 1])
                return JavaLong(rng.choice([edge, rng.randrange(-(2**63), 2**63)]))
            case 3:
                return rng.choice(
                    [
                        0.0,
                        1.0,
                        -0.0,
                        rng.randrange(-40000, 40000) / 1.0,
                        rng.randrange(-(2**31), 2**31) / 1000,
                        rng.uniform(-1e6, 1e6),
                        float("nan"),
                        float("inf"),
                        rng.choice([1e300, 5e-324, 2147483.647, 2147483.648]),
                    ]
                )
            case 4 | 5:
                return self.text()
            case 6:
                length = rng.choice([0, 1, 15, 16, 1023, 1024, 8189, 8190, rng.randrange(20_000)])
                return rng.randbytes(length)
            case 7:
                millis = rng.randrange(-(2**40), 2**42)
                return ms(millis - millis % 60_000 if rng.random() < 0.5 else millis)
            case 8:
                return Decimal(rng.randrange(-(10**20), 10**20)).scaleb(rng.randrange(-12, 6))
            case _:
                return JavaEnum(COLOR, rng.choice(["RED", "GREEN"]))

    def value(self, depth: int = 0) -> object:
        rng = self.rng
        if self.shared and rng.random() < 0.1:
            return rng.choice(self.shared)
        if depth >= 3 or rng.random() < 0.55:
            return self.scalar()
        made: object
        match rng.randrange(8):
            case 0:
                made = [self.value(depth + 1) for _ in range(rng.randrange(10))]
            case 1:
                made = TypedList(
                    "java.util.LinkedList",
                    [self.value(depth + 1) for _ in range(rng.randrange(10))],
                )
            case 2:
                made = TypedList("[int", [rng.randrange(-(2**31), 2**31) for _ in range(9)])
            case 3:
                made = TypedList(
                    "[object", [self.value(depth + 1) for _ in range(rng.randrange(4))]
                )
            case 4:
                entries = {self.text()[:8] + str(i): self.value(depth + 1) for i in range(3)}
                made = TypedMap("java.util.LinkedHashMap", entries)
            case 5:
                # A HashMap re-writes in hash order: one entry at most keeps order moot.
                made = {} if rng.random() < 0.3 else {self.text()[:5]: self.value(depth + 1)}
            case 6:
                made = JavaObject(
                    ADDRESS, {"zip": self.text()[:6], "city": rng.choice([None, "P"])}
                )
            case _:
                index = rng.randrange(18)
                made = JavaObject(f"{PKG}.Many$K{index}", {"v": rng.randrange(-(2**31), 2**31)})
        self.shared.append(made)
        return made


def _buffer_edge_streams() -> dict[str, list[object]]:
    """Each value kind written with Java's 8 KiB buffer filled to just below its end.

    A padding ``byte[]`` of n bytes leaves the buffer at n+3; the value under test then
    does (or does not) flush, and a trailing 9000-byte binary shows the difference in
    its chunk sizes. This pins every `<` vs `<=` buffer check of Hessian2Output.
    """
    shared: list[object] = [1]
    kinds: dict[str, list[object]] = {
        "list": [[1]],
        "empty_map": [{}],
        "map": [{"a": 1}],
        "typed_list": [TypedList("java.util.LinkedList", [1])],
        "typed_map": [TypedMap("java.util.LinkedHashMap", {"a": 1})],
        "object": [JavaObject(ADDRESS, {"zip": "1", "city": None})],
        "enum": [JavaEnum(COLOR, "RED")],
        "bool": [True],
        "null": [None],
        "int": [5],
        "long": [JavaLong(5)],
        "double": [1.5],
        "date": [ms(60_000)],
        "date_ms": [ms(1)],
        "string": ["s"],
        "text": ["\u00e9\U0001f600" * 12],
        "decimal": [Decimal("1.5")],
        "ref": [shared, shared],
        "binary": [b"q" * 20],
    }
    streams: dict[str, list[object]] = {}
    for fill in range(8140, 8193):
        for kind, values in kinds.items():
            streams[f"edge_{kind}_{fill}"] = [b"p" * (fill - 3), *values, pattern(9000)]
    return streams


def test_java_rewrites_random_streams_to_our_bytes(java_classpath: str, tmp_path: Path) -> None:
    streams = _buffer_edge_streams()
    for seed in range(300):
        generator = _RandomStream(seed)
        streams[f"random_{seed}"] = [
            generator.value() for _ in range(generator.rng.randrange(1, 7))
        ]
    ours: dict[str, bytes] = {}
    for name, stream in streams.items():
        ours[name] = encode(*stream)
        (tmp_path / f"{name}.in").write_bytes(len(stream).to_bytes(4, "big") + ours[name])
    result = _run(require("java"), "-cp", java_classpath, MAIN_CLASS, "echo", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    mismatched = sorted(
        name for name, data in ours.items() if (tmp_path / f"{name}.out").read_bytes() != data
    )
    assert not mismatched, f"Java re-wrote {len(mismatched)} streams differently: {mismatched[:10]}"
