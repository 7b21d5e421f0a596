"""JDK values as a caller of the JSON invocation gives them, with their declared class.

tests/interop/test_hessian2_java.py checks that the agent writes each exactly as
hessian-lite writes the same Java value (HessianVectors.java, vector "jdk_types", in this
order) and reads Java's bytes back as this JSON; tests/interop/test_dubbo_jdk_types.py
sends each through the agent to the real provider and back.
"""

from __future__ import annotations

JDK_VALUES: list[tuple[str, object]] = [
    ("java.time.Instant", "2023-11-14T22:13:20.123456789Z"),
    ("java.time.Instant", "1969-12-31T23:59:59Z"),
    ("java.time.LocalDate", "2024-02-29"),
    ("java.time.LocalTime", "13:45:30.000005"),
    ("java.time.LocalTime", "00:00"),
    ("java.time.LocalDateTime", "2024-02-29T13:45:30.000005"),
    ("java.time.OffsetDateTime", "2024-02-29T13:45:30+08:00"),
    ("java.time.OffsetTime", "13:45:30-05:30"),
    ("java.time.ZonedDateTime", "2024-02-29T13:45:30+08:00[Asia/Shanghai]"),
    ("java.time.ZoneId", "Europe/Paris"),
    ("java.time.ZoneOffset", "+08:00"),
    ("java.time.Duration", "PT25H1M1.000000005S"),
    ("java.time.Duration", "PT-0.5S"),
    ("java.time.Period", "P1Y2M3D"),
    ("java.time.Year", 2024),
    ("java.time.YearMonth", "2024-02"),
    ("java.time.MonthDay", "--02-29"),
    ("java.util.Locale", "zh_CN"),
    ("java.util.Locale", "en_US_POSIX"),
    ("java.util.Currency", "EUR"),
    ("java.net.URI", "https://example.com/a%20b?c=d#e"),
    ("java.lang.Class", "java.lang.String"),
    ("java.util.Calendar", "2023-11-14T22:13:20.123Z"),
    ("java.io.File", "/tmp/a b.txt"),
    ("char", "x"),
    ("char[]", "ab\u00e9"),
]

# Arrays of every primitive and boxed kind, with their declared type (HessianVectors.java
# "arrays", in this order).
ARRAY_VALUES: list[tuple[str, list[object]]] = [
    ("boolean[]", [True, False]),
    ("short[]", [1, -2]),
    ("int[]", [1, -2]),
    ("long[]", [1, 2**40]),
    ("float[]", [1.5, -2]),
    ("double[]", [1.5, 2]),
    ("java.lang.Integer[]", [1, None]),
    ("java.lang.Long[]", [1, None]),
    ("java.lang.String[]", ["a", None]),
    ("java.lang.Double[]", [1.5]),
    ("java.lang.Boolean[]", [True]),
]
