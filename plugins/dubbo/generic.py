"""Generic invocation (``GenericService.$invoke``): JSON values ↔ Java values (pure).

A generic call is an ordinary Dubbo request to the real interface whose method is
``$invoke(String method, String[] types, Object[] args)``; the provider's GenericFilter
finds the real method by name and types, *realizes* the arguments (PojoUtils: a map with
an optional ``"class"`` key becomes the declared POJO, a string an enum constant, a number a
``Date``...) and *generalizes* the result back (POJOs → maps with ``"class"``, enums → their
name; dates, BigDecimals, primitives stay as they are). A Java exception comes back wrapped
in ``org.apache.dubbo.rpc.service.GenericException`` (exceptionClass, exceptionMessage).

So the JSON side needs little: arguments whose *declared* type we know (the top-level
``types``) are coerced to what hessian must carry for them (a ``long`` as a long, a ``Date``
as a date, a ``BigDecimal`` as one, ``byte[]`` from base64); everything nested travels as
maps and lists and is realized by the provider, which knows the field types.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.errors import RemoteApplicationError
from agent.integer_text import parse_integer_text
from plugins.dubbo import jdk_types, provider_errors
from plugins.dubbo.body import Invocation
from plugins.dubbo.hessian2 import JavaEnum, JavaLong, JavaObject, TypedList, TypedMap

INVOKE = "$invoke"
GENERIC_PARAMETER_TYPES = ("java.lang.String", "java.lang.String[]", "java.lang.Object[]")
# hessian-lite's type names for String[] and Object[] (Hessian2Output.writeListBegin).
STRING_ARRAY = "[string"
OBJECT_ARRAY = "[object"
GENERIC_EXCEPTION_FIELDS = ("exceptionClass", "exceptionMessage")
# Throwable's own fields: not "details" a caller wants to read.
_THROWABLE_FIELDS = frozenset(
    {"detailMessage", "cause", "stackTrace", "suppressedExceptions", "depth", "backtrace"}
)

_LONGS = frozenset({"long", "java.lang.Long"})
_DOUBLES = frozenset({"double", "float", "java.lang.Double", "java.lang.Float"})
# java.util.Date is a hessian date; the java.sql kinds are objects of their class with one
# field, "value", the date (hessian's SqlDateSerializer): sent as a plain date, the
# provider's GenericFilter handed a java.util.Date to a Timestamp parameter
# (ClassCastException, issue 23).
_DATE = "java.util.Date"
_SQL_DATES = frozenset({"java.sql.Date", "java.sql.Time", "java.sql.Timestamp"})
_DECIMALS = frozenset({"java.math.BigDecimal"})
# BigInteger travels as hessian's JavaSerializer writes any object: its fields, the
# primitive ones first (signum and the cached values, 0 = not computed), then the
# magnitude as big-endian 32-bit words (int[]).
BIG_INTEGER = "java.math.BigInteger"
_BIG_INTEGER_CACHES = (
    "bitCountPlusOne",
    "bitLengthPlusOne",
    "lowestSetBitPlusTwo",
    "firstNonzeroIntNumPlusTwo",
)
UUID_CLASS = "java.util.UUID"
# A BigInteger's magnitude in words (8,192 bits, 2,467 decimal digits): Java's own limit
# is 2^26 words, but this is a JSON API, and Python refuses to turn an int of more than
# 4,300 digits into text (or text into one) unless told to.
_MAX_BIG_INTEGER_WORDS = 256
_MAX_DIGITS = 2467
_BYTES = frozenset({"byte[]", "[B"})


class ArgumentError(ValueError):
    """A JSON argument cannot become the declared Java type; ``path`` says which one."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class GenericCall:
    """What a caller asks for, already validated: the real method and its arguments."""

    interface: str
    method: str
    types: tuple[str, ...] | None  # None: the provider finds the method by name alone
    args: tuple[Any, ...]
    version: str = ""
    group: str = ""
    attachments: Mapping[str, Any] | None = None


# -- JSON → Java --------------------------------------------------------------------------


# Arrays and objects inside each other, at most, in one argument: what our own hessian
# decoder accepts by default (Limits.max_depth), so an answer shaped like the question can
# come back. Deeper JSON is refused with a 400 naming the path, not walked (issue 25).
MAX_ARG_DEPTH = 128


def to_java(value: Any, type_name: str | None = None, path: str = "args", depth: int = 0) -> Any:
    """A JSON value as hessian should carry it for a parameter declared ``type_name``."""
    if value is None:
        return None
    if type_name is not None:
        coerced = _coerce(value, type_name, path)
        if coerced is not _NOT_COERCED:
            return coerced
    if isinstance(value, dict | list):
        if depth >= MAX_ARG_DEPTH:
            raise ArgumentError(path, f"nested deeper than {MAX_ARG_DEPTH} levels")
        if isinstance(value, dict):
            return {str(k): to_java(v, None, f"{path}.{k}", depth + 1) for k, v in value.items()}
        return [to_java(v, None, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


_NOT_COERCED = object()


def _coerce(value: Any, type_name: str, path: str) -> Any:
    encoder = jdk_types.ENCODERS.get(type_name)
    if encoder is not None:
        try:
            return encoder(value)
        except jdk_types.JdkValueError as exc:
            raise ArgumentError(path, str(exc)) from None
    refused = jdk_types.REFUSED.get(type_name)
    if refused is not None:
        raise ArgumentError(path, refused)
    array = _ARRAYS.get(type_name)
    if array is not None and isinstance(value, list):
        list_type, element = array
        return TypedList(list_type, [element(v, f"{path}[{i}]") for i, v in enumerate(value)])
    if type_name in _MAPS and isinstance(value, dict):
        _check_map_class(value, path)
    if isinstance(value, bool):
        return _NOT_COERCED
    if type_name in _LONGS and isinstance(value, int):
        return JavaLong(value)
    if type_name in _DOUBLES and isinstance(value, int):
        return float(value)
    if type_name == _DATE:
        return parse_date(value, path)
    if type_name in _SQL_DATES:
        return JavaObject(type_name, {"value": parse_date(value, path)})
    if type_name == BIG_INTEGER and isinstance(value, int | str):
        return big_integer(_integer(value, path), path)
    if type_name == UUID_CLASS and isinstance(value, str):
        return uuid_object(value, path)
    if type_name in _DECIMALS and isinstance(value, int | float | str):
        try:
            decimal = Decimal(str(value))
        except InvalidOperation:
            raise ArgumentError(path, f"{value!r} is not a decimal number") from None
        if not decimal.is_finite():
            raise ArgumentError(path, f"{value!r} is not a finite decimal number")
        return decimal
    if type_name in _BYTES and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ArgumentError(path, "byte[] is given as base64 text; this is not") from None
    return _NOT_COERCED


def _array_int(low: int, high: int, boxed: bool) -> Any:
    def element(value: Any, path: str) -> Any:
        if value is None and boxed:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ArgumentError(path, f"expected an integer from {low} to {high}")
        if high > 2**31:
            # Not a conditional expression: compiled, its type (int) would drop JavaLong.
            return JavaLong(value)
        return value

    return element


def _array_double(boxed: bool) -> Any:
    def element(value: Any, path: str) -> Any:
        if value is None and boxed:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgumentError(path, "expected a number")
        return float(value)

    return element


def _array_of(kind: type, boxed: bool, what: str) -> Any:
    def element(value: Any, path: str) -> Any:
        if (value is None and boxed) or isinstance(value, kind):
            return value
        raise ArgumentError(path, f"expected {what}")

    return element


_SHORT, _INT, _LONG = (-(2**15), 2**15 - 1), (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)
# Arrays as hessian-lite writes them (BasicSerializer's typed lists, ArraySerializer's
# "[" + the component class): the declared element type decides each element's form (a
# long[] holds longs even when small). Keys in both of Dubbo's spellings.
_ARRAYS: dict[str, tuple[str, Any]] = {}
for _names, _list_type, _element in (
    (("boolean[]", "[Z"), "[boolean", _array_of(bool, False, "true or false")),
    (("short[]", "[S"), "[short", _array_int(*_SHORT, boxed=False)),
    (("int[]", "[I"), "[int", _array_int(*_INT, boxed=False)),
    (("long[]", "[J"), "[long", _array_int(*_LONG, boxed=False)),
    (("float[]", "[F"), "[float", _array_double(boxed=False)),
    (("double[]", "[D"), "[double", _array_double(boxed=False)),
    (("java.lang.String[]", "[Ljava.lang.String;"), "[string", _array_of(str, True, "a string")),
    (
        ("java.lang.Boolean[]", "[Ljava.lang.Boolean;"),
        "[java.lang.Boolean",
        _array_of(bool, True, "true, false or null"),
    ),
    (
        ("java.lang.Short[]", "[Ljava.lang.Short;"),
        "[java.lang.Short",
        _array_int(*_SHORT, boxed=True),
    ),
    (
        ("java.lang.Integer[]", "[Ljava.lang.Integer;"),
        "[java.lang.Integer",
        _array_int(*_INT, boxed=True),
    ),
    (("java.lang.Long[]", "[Ljava.lang.Long;"), "[java.lang.Long", _array_int(*_LONG, boxed=True)),
    (("java.lang.Float[]", "[Ljava.lang.Float;"), "[java.lang.Float", _array_double(boxed=True)),
    (("java.lang.Double[]", "[Ljava.lang.Double;"), "[java.lang.Double", _array_double(boxed=True)),
):
    for _name in _names:
        _ARRAYS[_name] = (_list_type, _element)


# Map types a parameter may be declared as. PojoUtils.realize reads a map's "class" key as
# the class to make of it, whatever the declared type: {"class": "java.lang.String"} given
# to a Map parameter arrives as an empty String, {"class": "java.util.Date"} as the current
# time. Only a map class keeps the map (and its "class" entry) as it is.
_MAPS = frozenset(
    {
        "java.util.Map",
        "java.util.HashMap",
        "java.util.LinkedHashMap",
        "java.util.TreeMap",
        "java.util.SortedMap",
        "java.util.NavigableMap",
        "java.util.Hashtable",
        "java.util.concurrent.ConcurrentMap",
        "java.util.concurrent.ConcurrentHashMap",
        "java.util.concurrent.ConcurrentSkipListMap",
    }
)
_MAP_CLASSES = frozenset(
    {
        "java.util.HashMap",
        "java.util.LinkedHashMap",
        "java.util.TreeMap",
        "java.util.Hashtable",
        "java.util.concurrent.ConcurrentHashMap",
        "java.util.concurrent.ConcurrentSkipListMap",
    }
)


def _check_map_class(value: dict[str, Any], path: str) -> None:
    marker = value.get("class")
    if "class" in value and marker not in _MAP_CLASSES:
        raise ArgumentError(
            f"{path}.class",
            f'the provider reads a "class" key in a Map as the class to make of it '
            f"(Dubbo's PojoUtils), so {str(marker)[:60]!r} would not arrive as a map entry; "
            'rename the key, or give a map class ("java.util.HashMap") to keep it as one',
        )


def _integer(value: int | str, path: str) -> int:
    if isinstance(value, int):
        return value
    parsed = parse_integer_text(value.strip(), _MAX_DIGITS)
    if parsed is None:
        raise ArgumentError(path, f"{value[:40]!r} is not an integer")
    return parsed


def uuid_object(text: str, path: str = "value") -> JavaObject:
    """A java.util.UUID as hessian-lite writes one: an object of that class whose one field,
    ``value``, is its text (read back with ``UUID.fromString``). Sent as a plain string
    the provider refused it (ClassCastException); as a class-keyed map, PojoUtils cannot
    set a UUID's fields on Java 17."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        raise ArgumentError(path, f"{text[:40]!r} is not a UUID") from None
    return JavaObject(UUID_CLASS, {"value": str(parsed)})


def big_integer(value: int, path: str = "value") -> JavaObject:
    """``value`` as the java.math.BigInteger object hessian-lite writes."""
    magnitude = abs(value)
    words: list[int] = []
    while magnitude:
        word = magnitude & 0xFFFFFFFF
        words.append(word - (1 << 32) if word >= 1 << 31 else word)  # Java's int
        magnitude >>= 32
    if len(words) > _MAX_BIG_INTEGER_WORDS:
        raise ArgumentError(path, f"integer over {_MAX_BIG_INTEGER_WORDS * 32} bits")
    words.reverse()
    fields: dict[str, Any] = {"signum": (value > 0) - (value < 0)}
    fields.update(dict.fromkeys(_BIG_INTEGER_CACHES, 0))
    fields["mag"] = TypedList("[int", words)
    return JavaObject(BIG_INTEGER, fields)


def _big_integer_value(fields: Mapping[str, Any]) -> int | None:
    """A decoded BigInteger's value, or None when its fields are not a BigInteger's."""
    signum = fields.get("signum")
    mag = fields.get("mag")
    words = mag.items if isinstance(mag, TypedList) else mag
    if not isinstance(signum, int) or signum not in (-1, 0, 1) or not isinstance(words, list):
        return None
    if len(words) > _MAX_BIG_INTEGER_WORDS:
        return None  # shown as the object it is
    magnitude = 0
    for word in words:
        if not isinstance(word, int) or isinstance(word, bool):
            return None
        magnitude = (magnitude << 32) | (word & 0xFFFFFFFF)
    return signum * magnitude


def parse_date(value: Any, path: str = "value") -> datetime:
    """A ``java.util.Date`` from epoch milliseconds or ISO 8601 text (no zone means UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ArgumentError(path, "a date cannot be infinite")
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise ArgumentError(path, f"{value!r} ms is out of range for a date") from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ArgumentError(
                path, f"{value!r} is neither epoch milliseconds nor an ISO 8601 date"
            ) from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise ArgumentError(path, "a date is epoch milliseconds or ISO 8601 text")


def generic_invocation(
    call: GenericCall, timeout_ms: int | None, dubbo_version: str = "2.0.2"
) -> Invocation:
    """The ``$invoke`` request as Dubbo's GenericImplFilter and DubboInvoker send it.

    Attachments: ``generic=true`` (GenericImplFilter copies the reference's ``generic``),
    ``path``/``interface``/``version`` and ``group`` when set (DubboInvoker and the
    invoker's URL), ``timeout`` as a string (DubboInvoker, after calculateTimeout). The
    caller's own attachments go first so that these cannot be overridden by accident.
    ``timeout_ms`` None leaves ``timeout`` out, for a caller that appends it per attempt
    (plugins/dubbo/body.py ``with_attachments``) to a body it encodes once.
    """
    args: list[Any] = []
    for i, arg in enumerate(call.args):
        declared = call.types[i] if call.types is not None else None
        args.append(to_java(arg, declared, f"args[{i}]"))
    attachments: dict[str, Any] = {
        str(k): _attachment_value(v) for k, v in (call.attachments or {}).items()
    }
    attachments.update(
        {
            "generic": "true",
            "path": call.interface,
            "interface": call.interface,
            "version": call.version or "0.0.0",
        }
    )
    if timeout_ms is not None:
        attachments["timeout"] = str(timeout_ms)
    if call.group:
        attachments["group"] = call.group
    types = None if call.types is None else TypedList(STRING_ARRAY, list(call.types))
    return Invocation(
        path=call.interface,
        # Dubbo writes "0.0.0" when the reference has no version; providers treat both alike.
        version=call.version or "0.0.0",
        method=INVOKE,
        parameter_types=GENERIC_PARAMETER_TYPES,
        arguments=(call.method, types, TypedList(OBJECT_ARRAY, args)),
        attachments=attachments,
        dubbo_version=dubbo_version,
    )


def _attachment_value(value: Any) -> Any:
    # Dubbo attachments are strings on the Java side (getAttachment returns String);
    # numbers and booleans are sent as their text so no ClassCastException can happen.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


# -- Java → JSON --------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """A decoded hessian value as plain JSON.

    POJOs (generalized maps, or objects) keep their ``"class"`` key so a result can be sent
    back as an argument; dates become ISO 8601 UTC with milliseconds, BigDecimal a string
    (exact), enums their name, bytes base64, longs plain numbers. Map keys become strings.
    A value that contains itself (hessian back-references) is cut at the repeat with None.
    """
    return _to_json(value, set())


def _to_json(value: Any, active: set[int]) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, datetime):
        return format_date(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, JavaEnum):
        return value.name
    marker = id(value)
    if marker in active:
        return None
    active.add(marker)
    try:
        if isinstance(value, JavaObject):
            known = _known_object(value)
            if known is not None:
                return known
            fields = {k: _to_json(v, active) for k, v in value.fields.items()}
            return {"class": value.class_name, **fields}
        if isinstance(value, TypedMap | dict):
            entries = value.entries if isinstance(value, TypedMap) else value
            if _THROWABLE_GETTERS.issubset(entries):
                return _throwable_to_json(entries, active)
            known = _known_map(entries)
            return known if known is not None else _map_to_json(entries, active)
        if isinstance(value, TypedList):
            return [_to_json(v, active) for v in value.items]
        if isinstance(value, list | tuple):
            return [_to_json(v, active) for v in value]
    finally:
        active.discard(marker)
    return str(value)


# A Throwable the provider generalized (a result or field holding one): a map of its
# getters. The stack (thousands of frames' maps) and the localized message (the message
# again) are left out; the cause and the suppressed ones are Throwables in turn.
_THROWABLE_GETTERS = frozenset(
    {"class", "message", "localizedMessage", "stackTrace", "suppressed", "cause"}
)


def _throwable_to_json(entries: Mapping[Any, Any], active: set[int]) -> dict[str, Any]:
    result: dict[str, Any] = {"class": entries["class"], "message": entries["message"]}
    if entries["cause"] is not None:
        result["cause"] = _to_json(entries["cause"], active)
    suppressed = entries["suppressed"]
    items = suppressed.items if isinstance(suppressed, TypedList) else suppressed
    if isinstance(items, list) and items:
        result["suppressed"] = [_to_json(item, active) for item in items]
    for key, item in entries.items():
        if key not in _THROWABLE_GETTERS and isinstance(key, str):
            result[key] = _to_json(item, active)  # the exception's own properties
    return result


def _known_object(value: JavaObject) -> Any:
    """JDK value classes hessian writes as plain objects, as JSON text: a java.sql date as
    ISO 8601 (like java.util.Date), a BigInteger as its decimal digits (like BigDecimal:
    exact, where a JSON number past 2^53 is not for many parsers)."""
    if value.class_name in _SQL_DATES:
        date = value.fields.get("value")
        return format_date(date) if isinstance(date, datetime) else None
    if value.class_name == BIG_INTEGER:
        number = _big_integer_value(value.fields)
        return None if number is None else str(number)
    if value.class_name == UUID_CLASS:
        text = value.fields.get("value")
        return text if isinstance(text, str) else None
    return jdk_types.from_handle(value)


def _known_map(entries: Mapping[Any, Any]) -> Any:
    """A JDK value the provider's PojoUtils generalized (a map of its getters and its
    class) as the JSON a caller sends for it: a UUID as its text, the java.time and other
    classes of plugins/dubbo/jdk_types.py as theirs. None: an ordinary map."""
    if entries.get("class") != UUID_CLASS:
        return jdk_types.from_generalized(entries)
    most, least = entries.get("mostSignificantBits"), entries.get("leastSignificantBits")
    if isinstance(most, int) and isinstance(least, int) and len(entries) == 3:
        return str(uuid.UUID(int=((most & (2**64 - 1)) << 64) | (least & (2**64 - 1))))
    return None


def _map_to_json(entries: Mapping[Any, Any], active: set[int]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in entries.items():
        json_key = _to_json(key, active)
        result[json_key if isinstance(json_key, str) else _key_text(json_key)] = _to_json(
            item, active
        )
    return result


def _key_text(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def format_date(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- exceptions ----------------------------------------------------------------------------


def remote_exception(exception: Any) -> RemoteApplicationError:
    """The provider's exception (as decoded) as a RemoteApplicationError.

    A generic call's exception is a GenericException naming the real one; a plain call's is
    the Throwable itself, whose message is Throwable.detailMessage.
    """
    if isinstance(exception, JavaObject):
        fields = exception.fields
        if all(name in fields for name in GENERIC_EXCEPTION_FIELDS) and isinstance(
            fields.get("exceptionClass"), str
        ):
            message = fields.get("exceptionMessage")
            return RemoteApplicationError(
                "" if message is None else str(message),
                str(fields["exceptionClass"]),
                _causes(fields.get("detailMessage")),
            )
        message = fields.get("detailMessage")
        extra = {
            k: to_json(v)
            for k, v in fields.items()
            if k not in _THROWABLE_FIELDS and not k.startswith("_")
        }
        return RemoteApplicationError(
            "" if message is None else str(message), exception.class_name, extra or None
        )
    if isinstance(exception, Mapping):
        # Some serializations render the Throwable as a map: take what is recognisable.
        kind = exception.get("class") or exception.get("exceptionClass") or "java.lang.Throwable"
        message = exception.get("exceptionMessage") or exception.get("detailMessage") or ""
        return RemoteApplicationError(str(message), str(kind))
    return RemoteApplicationError(str(exception), "java.lang.Throwable")


def _causes(printed: Any) -> dict[str, Any] | None:
    """The causes and suppressed exceptions of a GenericException's message, which Dubbo
    fills with the real exception's printed stack (StringUtils.toString); None: neither."""
    if not isinstance(printed, str):
        return None
    said = provider_errors.parse(printed)
    details: dict[str, Any] = {}
    if said.causes:
        details["causes"] = [provider_errors.exception_parts(c) for c in said.causes]
    if said.suppressed:
        details["suppressed"] = [provider_errors.exception_parts(s) for s in said.suppressed]
    return details or None


def check_types(types: Sequence[str] | None, args: Sequence[Any]) -> None:
    """Types and args must pair up when types are given (Dubbo would fail the lookup)."""
    if types is not None and len(types) != len(args):
        raise ArgumentError(
            "types", f"{len(types)} types for {len(args)} arguments: they must pair up"
        )
