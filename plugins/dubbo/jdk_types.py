"""JDK value classes in a generic call: JSON text ↔ what hessian-lite writes (pure).

A generic call's arguments are realized by the provider's PojoUtils, which knows how to
turn a map into a POJO but not text into a ``java.time.Instant``, a ``Locale`` or a
``Currency``: sent as strings, those reach the method as strings (ClassCastException).
Java's own consumer sends such values with hessian-lite's serializers (its
SerializerFactory, META-INF/dubbo/hessian/serializers): most as a *handle* object whose
fields are the value's parts (``InstantHandle``: seconds, nanos), read back by its
``readResolve``. So where a parameter is declared as one of these classes (``types``), the
agent writes the value exactly as Java's stub would (tests/interop/test_hessian2_java.py
compares the bytes with hessian-lite's), and the provider receives the real object.

Results come back *generalized* by the provider (PojoUtils.generalize): an Instant as a
map of its getters (``{"class": "java.time.Instant", "epochSecond": ..., "nano": ...}``),
LocalDate/LocalDateTime/LocalTime as text already. The maps of the classes below are
given back as the same text a caller sends, so a result can be an argument again; the
handles, where one arrives (a non-generic reply), read the same way.

The JSON forms are Java's own ``toString``/``parse`` forms (ISO 8601 for java.time,
``Locale.toString``, the currency code, the URI text, the class name), which is what
Jackson writes too. Values Java cannot carry in a generic call are refused with the reason
(``REFUSED``), never sent to fail on the provider or to arrive wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from plugins.dubbo.hessian2 import JavaEnum, JavaLong, JavaObject

_HESSIAN = "com.alibaba.com.caucho.hessian.io."
_JAVA8 = _HESSIAN + "java8."
INSTANT_HANDLE = _JAVA8 + "InstantHandle"
LOCAL_DATE_HANDLE = _JAVA8 + "LocalDateHandle"
LOCAL_TIME_HANDLE = _JAVA8 + "LocalTimeHandle"
LOCAL_DATE_TIME_HANDLE = _JAVA8 + "LocalDateTimeHandle"
DURATION_HANDLE = _JAVA8 + "DurationHandle"
PERIOD_HANDLE = _JAVA8 + "PeriodHandle"
ZONE_OFFSET_HANDLE = _JAVA8 + "ZoneOffsetHandle"
ZONE_ID_HANDLE = _JAVA8 + "ZoneIdHandle"
OFFSET_DATE_TIME_HANDLE = _JAVA8 + "OffsetDateTimeHandle"
OFFSET_TIME_HANDLE = _JAVA8 + "OffsetTimeHandle"
ZONED_DATE_TIME_HANDLE = _JAVA8 + "ZonedDateTimeHandle"
YEAR_HANDLE = _JAVA8 + "YearHandle"
YEAR_MONTH_HANDLE = _JAVA8 + "YearMonthHandle"
MONTH_DAY_HANDLE = _JAVA8 + "MonthDayHandle"
LOCALE_HANDLE = _HESSIAN + "LocaleHandle"
CALENDAR_HANDLE = _HESSIAN + "CalendarHandle"

_MAX_TEXT = 512  # no JDK value here is longer as text; a longer string is refused early


class JdkValueError(ValueError):
    """A JSON value that is not the declared JDK class's text; the message says why."""


# -- JSON text → hessian-lite's forms ------------------------------------------------------

_DATE = r"(?P<year>[+-]?\d{4,9})-(?P<month>\d{2})-(?P<day>\d{2})"
_TIME = r"(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
_OFFSET = r"(?P<offset>Z|z|[+-]\d{2}:\d{2}(?::\d{2})?)"
_ZONE = r"(?:\[(?P<zone>[A-Za-z0-9/_+\-:.]{1,64})\])?"
_PATTERNS = {
    "date": re.compile(_DATE),
    "time": re.compile(_TIME),
    "date_time": re.compile(f"{_DATE}T{_TIME}"),
    "date_time_offset": re.compile(f"{_DATE}T{_TIME}{_OFFSET}"),  # Instant, OffsetDateTime
    "offset_time": re.compile(f"{_TIME}{_OFFSET}"),
    "zoned_date_time": re.compile(f"{_DATE}T{_TIME}{_OFFSET}{_ZONE}"),
}
_DURATION = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<days>[-+]?\d{1,19})D)?"
    r"(?:T(?:(?P<hours>[-+]?\d{1,19})H)?(?:(?P<minutes>[-+]?\d{1,19})M)?"
    r"(?:(?P<seconds>[-+]?\d{1,19})(?:[.,](?P<fraction>\d{0,9}))?S)?)?",
    re.IGNORECASE,
)
_PERIOD = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<years>[-+]?\d{1,10})Y)?(?:(?P<months>[-+]?\d{1,10})M)?"
    r"(?:(?P<weeks>[-+]?\d{1,10})W)?(?:(?P<days>[-+]?\d{1,10})D)?",
    re.IGNORECASE,
)
_ZONE_ID = re.compile(r"[A-Za-z][A-Za-z0-9~/._+\-]{0,63}")
_LOCALE = re.compile(
    r"(?P<language>[A-Za-z]{2,8})?(?:[_-](?P<country>[A-Za-z]{2}|\d{3})?)?(?:[_-](?P<variant>[A-Za-z0-9_-]{1,32}))?"
)
_CURRENCY = re.compile(r"[A-Z]{3}")
_CLASS_NAME = re.compile(r"(?:\[+(?:[ZBCSIJFD]|L[\w$.]+;)|[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _text(value: Any, kind: str, example: str) -> str:
    if not isinstance(value, str):
        raise JdkValueError(f"a {kind} is given as text, like {example!r}")
    if len(value) > _MAX_TEXT:
        raise JdkValueError(f"a {kind} is at most {_MAX_TEXT} characters of text")
    return value


def _match(name: str, text: str, kind: str, example: str) -> re.Match[str]:
    found = _PATTERNS[name].fullmatch(text)
    if found is None:
        raise JdkValueError(f"{text[:40]!r} is not a {kind} (ISO 8601, like {example!r})")
    return found


def _nanos(fraction: str | None) -> int:
    return int((fraction or "").ljust(9, "0"))


def _date_parts(found: re.Match[str]) -> tuple[int, int, int]:
    year, month, day = int(found["year"]), int(found["month"]), int(found["day"])
    try:
        date(year, month, day)  # ranges, leap days; Java's wider years are not needed
    except ValueError as exc:
        raise JdkValueError(f"not a date: {exc} (years 1 to 9999)") from None
    return year, month, day


def _time_parts(found: re.Match[str]) -> tuple[int, int, int, int]:
    hour, minute, second = int(found["hour"]), int(found["minute"]), int(found["second"] or 0)
    try:
        time(hour, minute, second)
    except ValueError as exc:
        raise JdkValueError(f"not a time of day: {exc}") from None
    return hour, minute, second, _nanos(found["fraction"])


def _offset_seconds(text: str) -> int:
    if text in ("Z", "z"):
        return 0
    sign = -1 if text[0] == "-" else 1
    parts = [int(part) for part in text[1:].split(":")]
    hours, minutes, seconds = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    if (
        hours > 18
        or minutes > 59
        or seconds > 59
        or hours * 3600 + minutes * 60 + seconds > 18 * 3600
    ):
        raise JdkValueError(f"{text!r} is not a zone offset (at most ±18:00)")
    return sign * (hours * 3600 + minutes * 60 + seconds)


def _local_date(year: int, month: int, day: int) -> JavaObject:
    return JavaObject(LOCAL_DATE_HANDLE, {"day": day, "month": month, "year": year})


def _local_time(hour: int, minute: int, second: int, nano: int) -> JavaObject:
    return JavaObject(
        LOCAL_TIME_HANDLE, {"nano": nano, "second": second, "minute": minute, "hour": hour}
    )


def _local_date_time(found: re.Match[str]) -> JavaObject:
    return JavaObject(
        LOCAL_DATE_TIME_HANDLE,
        {"time": _local_time(*_time_parts(found)), "date": _local_date(*_date_parts(found))},
    )


def _zone_offset(seconds: int) -> JavaObject:
    return JavaObject(ZONE_OFFSET_HANDLE, {"seconds": seconds})


def instant(value: Any) -> JavaObject:
    """``java.time.Instant`` from ISO 8601 with an offset (``...Z``) or epoch milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise JdkValueError("epoch milliseconds beyond a Java long")
        seconds, millis = divmod(value, 1000)
        return JavaObject(
            INSTANT_HANDLE, {"nanos": millis * 1_000_000, "seconds": JavaLong(seconds)}
        )
    found = _match(
        "date_time_offset",
        _text(value, "java.time.Instant", "2024-02-29T13:45:30.5Z"),
        "java.time.Instant",
        "2024-02-29T13:45:30.5Z",
    )
    year, month, day = _date_parts(found)
    hour, minute, second, nano = _time_parts(found)
    at = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    epoch = (at - _EPOCH) // timedelta(seconds=1) - _offset_seconds(found["offset"])
    return JavaObject(INSTANT_HANDLE, {"nanos": nano, "seconds": JavaLong(epoch)})


def local_date(value: Any) -> JavaObject:
    text = _text(value, "java.time.LocalDate", "2024-02-29")
    return _local_date(*_date_parts(_match("date", text, "java.time.LocalDate", "2024-02-29")))


def local_time(value: Any) -> JavaObject:
    text = _text(value, "java.time.LocalTime", "13:45:30")
    return _local_time(*_time_parts(_match("time", text, "java.time.LocalTime", "13:45:30")))


def local_date_time(value: Any) -> JavaObject:
    example = "2024-02-29T13:45:30"
    text = _text(value, "java.time.LocalDateTime", example)
    return _local_date_time(_match("date_time", text, "java.time.LocalDateTime", example))


def offset_date_time(value: Any) -> JavaObject:
    example = "2024-02-29T13:45:30+08:00"
    text = _text(value, "java.time.OffsetDateTime", example)
    found = _match("date_time_offset", text, "java.time.OffsetDateTime", example)
    return JavaObject(
        OFFSET_DATE_TIME_HANDLE,
        {
            "offset": _zone_offset(_offset_seconds(found["offset"])),
            "dateTime": _local_date_time(found),
        },
    )


def offset_time(value: Any) -> JavaObject:
    text = _text(value, "java.time.OffsetTime", "13:45:30+08:00")
    found = _match("offset_time", text, "java.time.OffsetTime", "13:45:30+08:00")
    return JavaObject(
        OFFSET_TIME_HANDLE,
        {
            "zoneOffset": _zone_offset(_offset_seconds(found["offset"])),
            "localTime": _local_time(*_time_parts(found)),
        },
    )


def zoned_date_time(value: Any) -> JavaObject:
    """``2024-02-29T13:45:30+08:00[Asia/Shanghai]`` (ZonedDateTime.toString); without the
    bracketed region the zone is the offset."""
    example = "2024-02-29T13:45:30+08:00[Asia/Shanghai]"
    text = _text(value, "java.time.ZonedDateTime", example)
    found = _match("zoned_date_time", text, "java.time.ZonedDateTime", example)
    seconds = _offset_seconds(found["offset"])
    zone = found["zone"] or _offset_text(seconds)
    return JavaObject(
        ZONED_DATE_TIME_HANDLE,
        {"offset": _zone_offset(seconds), "dateTime": _local_date_time(found), "zoneId": zone},
    )


def zone_id(value: Any) -> JavaObject:
    text = _text(value, "java.time.ZoneId", "Europe/Paris")
    if _ZONE_ID.fullmatch(text) is None:
        raise JdkValueError(f"{text[:40]!r} is not a zone id (like 'Europe/Paris' or 'UTC')")
    return JavaObject(ZONE_ID_HANDLE, {"zoneId": text})


def zone_offset(value: Any) -> JavaObject:
    text = _text(value, "java.time.ZoneOffset", "+08:00")
    if re.fullmatch(_OFFSET, text) is None:
        raise JdkValueError(f"{text[:40]!r} is not a zone offset (like '+08:00' or 'Z')")
    return _zone_offset(_offset_seconds(text))


def duration(value: Any) -> JavaObject:
    """``java.time.Duration`` from its ISO 8601 text (``PT1H30M``, ``PT-0.5S``)."""
    text = _text(value, "java.time.Duration", "PT1H30M")
    found = _DURATION.fullmatch(text)
    if found is None or not any(found[name] for name in ("days", "hours", "minutes", "seconds")):
        raise JdkValueError(f"{text[:40]!r} is not a duration (ISO 8601, like 'PT1H30M')")
    seconds = (
        int(found["days"] or 0) * 86400
        + int(found["hours"] or 0) * 3600
        + int(found["minutes"] or 0) * 60
        + int(found["seconds"] or 0)
    )
    nanos = _nanos(found["fraction"])
    if (found["seconds"] or "").startswith("-"):
        nanos = -nanos
    total = seconds * 1_000_000_000 + nanos
    if found["sign"] == "-":
        total = -total
    whole, nano = divmod(total, 1_000_000_000)
    if not _LONG_MIN <= whole <= _LONG_MAX:
        raise JdkValueError("a duration beyond a Java long of seconds")
    return JavaObject(DURATION_HANDLE, {"nanos": nano, "seconds": JavaLong(whole)})


def period(value: Any) -> JavaObject:
    text = _text(value, "java.time.Period", "P1Y2M3D")
    found = _PERIOD.fullmatch(text)
    if found is None or not any(found[name] for name in ("years", "months", "weeks", "days")):
        raise JdkValueError(f"{text[:40]!r} is not a period (ISO 8601, like 'P1Y2M3D')")
    sign = -1 if found["sign"] == "-" else 1
    years, months = int(found["years"] or 0) * sign, int(found["months"] or 0) * sign
    days = (int(found["weeks"] or 0) * 7 + int(found["days"] or 0)) * sign
    if not all(_INT_MIN <= part <= _INT_MAX for part in (years, months, days)):
        raise JdkValueError("a period's parts are Java ints")
    return JavaObject(PERIOD_HANDLE, {"days": days, "months": months, "years": years})


def year(value: Any) -> JavaObject:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise JdkValueError("a java.time.Year is a number or its text, like 2024")
    text = str(value)
    if re.fullmatch(r"[+-]?\d{1,9}", text) is None or not -999_999_999 <= int(text) <= 999_999_999:
        raise JdkValueError(f"{text[:40]!r} is not a year (-999,999,999 to 999,999,999)")
    return JavaObject(YEAR_HANDLE, {"year": int(text)})


def year_month(value: Any) -> JavaObject:
    text = _text(value, "java.time.YearMonth", "2024-02")
    found = re.fullmatch(r"([+-]?\d{4,9})-(\d{2})", text)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise JdkValueError(f"{text[:40]!r} is not a year and month (like '2024-02')")
    return JavaObject(YEAR_MONTH_HANDLE, {"month": int(found[2]), "year": int(found[1])})


def month_day(value: Any) -> JavaObject:
    text = _text(value, "java.time.MonthDay", "--02-29")
    found = re.fullmatch(r"--(\d{2})-(\d{2})", text)
    if found is None:
        raise JdkValueError(f"{text[:40]!r} is not a month and day (like '--02-29')")
    month, day = int(found[1]), int(found[2])
    try:
        date(2000, month, day)  # a leap year: --02-29 is a valid MonthDay
    except ValueError:
        raise JdkValueError(f"{text!r} is not a month and day") from None
    return JavaObject(MONTH_DAY_HANDLE, {"day": day, "month": month})


def locale(value: Any) -> JavaObject:
    """``java.util.Locale`` from ``Locale.toString`` text (``zh_CN``) or a language tag
    (``zh-CN``), written as hessian-lite's LocaleHandle (its value, ``Locale.toString``)."""
    text = _text(value, "java.util.Locale", "zh_CN")
    found = _LOCALE.fullmatch(text)
    if found is None or not text:
        raise JdkValueError(f"{text[:40]!r} is not a locale (like 'zh_CN' or 'en-US')")
    parts = [(found["language"] or "").lower(), (found["country"] or "").upper()]
    variant = (found["variant"] or "").replace("-", "_")
    if variant:
        parts.append(variant)
    return JavaObject(LOCALE_HANDLE, {"value": "_".join(parts).rstrip("_")})


def currency(value: Any) -> JavaObject:
    text = _text(value, "java.util.Currency", "EUR")
    if _CURRENCY.fullmatch(text) is None:
        raise JdkValueError(f"{text[:40]!r} is not an ISO 4217 currency code (like 'EUR')")
    return JavaObject("java.util.Currency", {"currencyCode": text})


def uri(value: Any) -> JavaObject:
    text = _text(value, "java.net.URI", "https://example.com/a")
    if not text or any(ch.isspace() or ord(ch) < 0x20 or ch == "\x7f" for ch in text):
        raise JdkValueError("a URI has no spaces or control characters (percent-encode them)")
    return JavaObject("java.net.URI", {"string": text})


def java_class(value: Any) -> JavaEnum:
    text = _text(value, "java.lang.Class", "java.lang.String")
    if _CLASS_NAME.fullmatch(text) is None:
        raise JdkValueError(f"{text[:40]!r} is not a Java class name (like 'java.lang.String')")
    # ClassSerializer writes an object of class java.lang.Class whose one field is "name":
    # the same bytes as an enum constant, which is how the decoder reads it back.
    return JavaEnum("java.lang.Class", text)


def calendar(value: Any) -> JavaObject:
    """``java.util.Calendar`` (a GregorianCalendar) from epoch milliseconds or ISO 8601 with
    an offset: hessian-lite's CalendarHandle, its date and a null type (GregorianCalendar)."""
    moment = instant(value)
    seconds, nanos = int(moment.fields["seconds"]), int(moment.fields["nanos"])
    try:
        date = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1_000_000 * 1000)
    except OverflowError:
        raise JdkValueError("a Calendar between the years 1 and 9999") from None
    return JavaObject(CALENDAR_HANDLE, {"date": date, "type": None})


def file(value: Any) -> JavaObject:
    """``java.io.File``: its path, as hessian-lite's StringValueSerializer writes it."""
    text = _text(value, "java.io.File", "/var/data/a.txt")
    if "\x00" in text:
        raise JdkValueError("a file path has no NUL character")
    return JavaObject("java.io.File", {"value": text})


def character(value: Any) -> str:
    """``char``: one UTF-16 code unit, which hessian writes as a string of length one."""
    if not isinstance(value, str) or len(value) != 1 or ord(value) > 0xFFFF:
        raise JdkValueError("a char is a string of one character (outside U+10000 and above)")
    return value


def characters(value: Any) -> str:
    """``char[]``: hessian writes it as a string (BasicSerializer.CHARACTER_ARRAY)."""
    if not isinstance(value, str):
        raise JdkValueError("a char[] is given as a string")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The declared class → how its JSON text is written. Keys are the names Dubbo's ``types``
# carry (Class.getName: ``char[]`` is ``[C``; Dubbo also accepts the source form).
ENCODERS: dict[str, Callable[[Any], Any]] = {
    "java.time.Instant": instant,
    "java.time.LocalDate": local_date,
    "java.time.LocalTime": local_time,
    "java.time.LocalDateTime": local_date_time,
    "java.time.OffsetDateTime": offset_date_time,
    "java.time.OffsetTime": offset_time,
    "java.time.ZonedDateTime": zoned_date_time,
    "java.time.ZoneId": zone_id,
    "java.time.ZoneOffset": zone_offset,
    "java.time.Duration": duration,
    "java.time.Period": period,
    "java.time.Year": year,
    "java.time.YearMonth": year_month,
    "java.time.MonthDay": month_day,
    "java.util.Locale": locale,
    "java.util.Currency": currency,
    "java.net.URI": uri,
    "java.lang.Class": java_class,
    "java.util.Calendar": calendar,
    "java.util.GregorianCalendar": calendar,
    "java.io.File": file,
    "char": character,
    "java.lang.Character": character,
    "char[]": characters,
    "[C": characters,
}

# Declared classes a generic call cannot carry, and why: what Java's own GenericService
# gets for the same call (Dubbo 3.3.6, hessian-lite 4.0.3, Java 17; tried with the
# interop peer). The agent answers 400 at once instead of a provider error after a trip.
_JAVA_NET = (
    "a Java 17 provider cannot read it (hessian-lite reflects into java.net, which Java 17 "
    "does not open; Java's own consumer fails the same call); declare the parameter as a "
    "String"
)
REFUSED: dict[str, str] = {
    "java.util.Optional": (
        "java.util.Optional is not Serializable: hessian2 cannot write it (Java's own "
        "consumer fails the same call); declare the parameter as its content's type"
    ),
    "java.util.EnumMap": (
        "java.util.EnumMap: hessian-lite reads one back as a HashMap, which the provider "
        "cannot pass to an EnumMap parameter (Java's own consumer fails the same call); "
        "declare a Map"
    ),
    "java.net.URL": f"java.net.URL: {_JAVA_NET} or java.net.URI",
    "java.net.InetAddress": f"java.net.InetAddress: {_JAVA_NET}",
    "java.net.Inet4Address": f"java.net.Inet4Address: {_JAVA_NET}",
    "java.net.Inet6Address": f"java.net.Inet6Address: {_JAVA_NET}",
    "java.net.InetSocketAddress": f"java.net.InetSocketAddress: {_JAVA_NET}",
}


# -- hessian-lite's forms and the provider's generalized maps → JSON text ------------------


def _fraction(nano: int) -> str:
    # Java's LocalTime.toString / ISO_INSTANT: 3, 6 or 9 digits, as many as needed.
    if nano == 0:
        return ""
    if nano % 1_000_000 == 0:
        return f".{nano // 1_000_000:03d}"
    if nano % 1000 == 0:
        return f".{nano // 1000:06d}"
    return f".{nano:09d}"


def _time_text(hour: int, minute: int, second: int, nano: int, always_seconds: bool = False) -> str:
    text = f"{hour:02d}:{minute:02d}"
    if second or nano or always_seconds:
        text += f":{second:02d}{_fraction(nano)}"
    return text


def _date_text(year: int, month: int, day: int) -> str:
    if abs(year) < 10000:
        prefix = "-" if year < 0 else ""
        return f"{prefix}{abs(year):04d}-{month:02d}-{day:02d}"
    return f"{'+' if year > 0 else '-'}{abs(year)}-{month:02d}-{day:02d}"


def _offset_text(seconds: int) -> str:
    if seconds == 0:
        return "Z"
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def instant_text(seconds: int, nano: int) -> str | None:
    """Instant.toString for years 1 to 9999 (None beyond: shown as its fields)."""
    try:
        at = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return None
    return (
        f"{_date_text(at.year, at.month, at.day)}T"
        f"{_time_text(at.hour, at.minute, at.second, nano, always_seconds=True)}Z"
    )


def duration_text(seconds: int, nanos: int) -> str:
    """Duration.toString, Java's algorithm (negative durations included)."""
    if seconds == 0 and nanos == 0:
        return "PT0S"
    effective = seconds + 1 if seconds < 0 < nanos else seconds
    hours = _java_div(effective, 3600)
    minutes = _java_div(_java_rem(effective, 3600), 60)
    secs = _java_rem(effective, 60)
    text = "PT"
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if secs == 0 and nanos == 0 and len(text) > 2:
        return text
    if seconds < 0 < nanos:
        text += "-0" if secs == 0 else str(secs)
    else:
        text += str(secs)
    if nanos > 0:
        digits = str(2_000_000_000 - nanos if seconds < 0 else nanos + 1_000_000_000)
        text += "." + digits[1:].rstrip("0")
    return text + "S"


def _java_div(a: int, b: int) -> int:
    """Java's ``/`` on longs: truncated toward zero."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _java_rem(a: int, b: int) -> int:
    """Java's ``%``: the sign of the dividend."""
    return a - b * _java_div(a, b)


def period_text(years: int, months: int, days: int) -> str:
    if years == months == days == 0:
        return "P0D"
    return (
        "P"
        + (f"{years}Y" if years else "")
        + (f"{months}M" if months else "")
        + (f"{days}D" if days else "")
    )


def _ints(fields: Mapping[str, Any], *names: str) -> list[int] | None:
    values = [fields.get(name) for name in names]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [int(v) for v in values if isinstance(v, int)]
    return None


def _handle_time(value: Any) -> tuple[int, int, int, int] | None:
    if isinstance(value, JavaObject) and value.class_name == LOCAL_TIME_HANDLE:
        parts = _ints(value.fields, "hour", "minute", "second", "nano")
        return None if parts is None else (parts[0], parts[1], parts[2], parts[3])
    return None


def _handle_date(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, JavaObject) and value.class_name == LOCAL_DATE_HANDLE:
        parts = _ints(value.fields, "year", "month", "day")
        return None if parts is None else (parts[0], parts[1], parts[2])
    return None


def _handle_date_time(value: Any) -> str | None:
    if isinstance(value, JavaObject) and value.class_name == LOCAL_DATE_TIME_HANDLE:
        day, clock = _handle_date(value.fields.get("date")), _handle_time(value.fields.get("time"))
        if day is not None and clock is not None:
            return f"{_date_text(*day)}T{_time_text(*clock)}"
    return None


def _handle_offset(value: Any) -> str | None:
    if isinstance(value, JavaObject) and value.class_name == ZONE_OFFSET_HANDLE:
        seconds = value.fields.get("seconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            return _offset_text(seconds)
    return None


def from_handle(value: JavaObject) -> Any:
    """A hessian-lite handle (or JDK object it writes as itself) as JSON; None: not one."""
    name, fields = value.class_name, value.fields
    if name == INSTANT_HANDLE:
        parts = _ints(fields, "seconds", "nanos")
        return None if parts is None else instant_text(parts[0], parts[1])
    if name == DURATION_HANDLE:
        parts = _ints(fields, "seconds", "nanos")
        return None if parts is None else duration_text(parts[0], parts[1])
    if name == PERIOD_HANDLE:
        parts = _ints(fields, "years", "months", "days")
        return None if parts is None else period_text(*parts)
    if name == LOCAL_DATE_HANDLE:
        day = _handle_date(value)
        return None if day is None else _date_text(*day)
    if name == LOCAL_TIME_HANDLE:
        clock = _handle_time(value)
        return None if clock is None else _time_text(*clock)
    if name == LOCAL_DATE_TIME_HANDLE:
        return _handle_date_time(value)
    if name == ZONE_OFFSET_HANDLE:
        return _handle_offset(value)
    if name == OFFSET_DATE_TIME_HANDLE:
        local, offset = (
            _handle_date_time(fields.get("dateTime")),
            _handle_offset(fields.get("offset")),
        )
        return None if local is None or offset is None else local + offset
    if name == OFFSET_TIME_HANDLE:
        clock, offset = (
            _handle_time(fields.get("localTime")),
            _handle_offset(fields.get("zoneOffset")),
        )
        return None if clock is None or offset is None else _time_text(*clock) + offset
    if name == ZONED_DATE_TIME_HANDLE:
        local, offset = (
            _handle_date_time(fields.get("dateTime")),
            _handle_offset(fields.get("offset")),
        )
        zone = fields.get("zoneId")
        if local is None or offset is None or not isinstance(zone, str):
            return None
        return local + offset + ("" if zone == offset else f"[{zone}]")
    if name == YEAR_HANDLE:
        parts = _ints(fields, "year")
        return None if parts is None else parts[0]
    if name == YEAR_MONTH_HANDLE:
        parts = _ints(fields, "year", "month")
        return None if parts is None else f"{_date_text(parts[0], parts[1], 1)[:-3]}"
    if name == MONTH_DAY_HANDLE:
        parts = _ints(fields, "month", "day")
        return None if parts is None else f"--{parts[0]:02d}-{parts[1]:02d}"
    if name == CALENDAR_HANDLE:
        date = fields.get("date")
        return _millis_text(date) if isinstance(date, datetime) else None
    text_field = _TEXT_FIELDS.get(name)
    if text_field is not None:
        text = fields.get(text_field)
        return text if isinstance(text, str) else None
    return None


_TEXT_FIELDS = {
    ZONE_ID_HANDLE: "zoneId",
    LOCALE_HANDLE: "value",
    "java.util.Currency": "currencyCode",
    "java.net.URI": "string",
    "java.io.File": "value",
}


def _millis_text(date: datetime) -> str:
    """A date as java.util.Date reads (generic.format_date's form)."""
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return date.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_generalized(entries: Mapping[Any, Any]) -> Any:
    """A map the provider's PojoUtils.generalize made of a JDK value (its getters, and
    ``"class"``) as the JSON a caller sends; None: not one of the classes here."""
    name = entries.get("class")
    reader = _GENERALIZED.get(name) if isinstance(name, str) else None
    if reader is None:
        return None
    try:
        return reader(entries)
    except (KeyError, TypeError, ValueError):
        return None  # not the shape Java's getters give: shown as the map it is


def _generalized_offset(entries: Mapping[Any, Any]) -> str:
    offset = entries["offset"]
    return _offset_text(int(offset["totalSeconds"]))


def _generalized_time(entries: Mapping[Any, Any]) -> str:
    return _time_text(
        int(entries["hour"]), int(entries["minute"]), int(entries["second"]), int(entries["nano"])
    )


def _generalized_date_time(entries: Mapping[Any, Any]) -> str:
    day = _date_text(int(entries["year"]), int(entries["monthValue"]), int(entries["dayOfMonth"]))
    return f"{day}T{_generalized_time(entries)}"


def _generalized_uri(entries: Mapping[Any, Any]) -> str:
    # URI.toString of a parsed URI: scheme ":" scheme-specific part "#" fragment, raw forms.
    scheme, part, fragment = (
        entries["scheme"],
        entries["rawSchemeSpecificPart"],
        entries["rawFragment"],
    )
    return (
        (f"{scheme}:" if scheme else "")
        + str(part)
        + (f"#{fragment}" if fragment is not None else "")
    )


def _generalized_locale(entries: Mapping[Any, Any]) -> str:
    parts = [str(entries["language"]), str(entries["country"])]
    if entries.get("variant"):
        parts.append(str(entries["variant"]))
    return "_".join(parts).rstrip("_")


_GENERALIZED: dict[str, Callable[[Mapping[Any, Any]], Any]] = {
    "java.time.Instant": lambda e: instant_text(int(e["epochSecond"]), int(e["nano"])),
    "java.time.Duration": lambda e: duration_text(int(e["seconds"]), int(e["nano"])),
    "java.time.Period": lambda e: period_text(int(e["years"]), int(e["months"]), int(e["days"])),
    "java.time.OffsetDateTime": lambda e: _generalized_date_time(e) + _generalized_offset(e),
    "java.time.OffsetTime": lambda e: _generalized_time(e) + _generalized_offset(e),
    "java.time.ZoneOffset": lambda e: str(e["id"]),
    "java.time.Year": lambda e: int(e["value"]),
    "java.time.YearMonth": lambda e: _date_text(int(e["year"]), int(e["monthValue"]), 1)[:-3],
    "java.time.MonthDay": lambda e: f"--{int(e['monthValue']):02d}-{int(e['dayOfMonth']):02d}",
    "java.util.Locale": _generalized_locale,
    "java.util.Currency": lambda e: str(e["currencyCode"]),
    "java.net.URI": _generalized_uri,
    "java.net.Inet4Address": lambda e: str(e["hostAddress"]),
    "java.net.Inet6Address": lambda e: str(e["hostAddress"]),
}
