"""What crosses a hop, as text: trace context, remaining deadline, hop count, path.

Sans-IO and protocol-free: every protocol copies these names into its own metadata (HTTP
headers, gRPC metadata, Dubbo attachments, Thrift Base.Extra) and hands what arrived to
:class:`agent.calls.Calls` as ``incoming`` with lower-case names. Parsers never raise:
whatever arrives from outside is either understood or ignored (the caller counts it).

Trace context is W3C Trace Context (``traceparent``/``tracestate``); B3 (Zipkin's single
``b3`` header and the ``x-b3-*`` set) is accepted on input only, and answered in W3C.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
B3 = "b3"
B3_TRACE_ID = "x-b3-traceid"
B3_SPAN_ID = "x-b3-spanid"
B3_SAMPLED = "x-b3-sampled"
B3_FLAGS = "x-b3-flags"
# The remaining time budget in milliseconds, for protocols without a deadline of their
# own (HTTP, the OpenAPI); Dubbo carries it in ``timeout``, gRPC in ``grpc-timeout``.
TIMEOUT_MS = "x-meshagent-timeout-ms"
# How many agents the call went through before this one, and which apps they served.
HOPS = "x-meshagent-hops"
PATH = "x-meshagent-path"

# Header values read from outside are bounded before anything is parsed.
_TRACESTATE_MAX = 512  # W3C: at most 32 members; vendors keep it far shorter
PATH_MAX_ENTRIES = 32
PATH_ENTRY_MAX = 64
_PATH_MAX = PATH_MAX_ENTRIES * (PATH_ENTRY_MAX + 1)
# Far past any loop limit; a larger value is not a hop count but garbage.
HOPS_MAX = 10_000

# What a protocol copies from its metadata into Call.incoming (nothing else is read).
INCOMING = frozenset(
    {
        TRACEPARENT,
        TRACESTATE,
        B3,
        B3_TRACE_ID,
        B3_SPAN_ID,
        B3_SAMPLED,
        B3_FLAGS,
        TIMEOUT_MS,
        HOPS,
        PATH,
    }
)

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    sampled: bool
    tracestate: str = ""

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def _hex(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= _HEX


def parse_traceparent(value: str, tracestate: str = "") -> TraceParent | None:
    """A W3C ``traceparent`` (version 00, or a later version read as 00 says), or None."""
    if len(value) < 55 or len(value) > 512:
        return None
    version, _, rest = value.partition("-")
    if not _hex(version, 2) or version == "ff":
        return None
    # Version 00 is exactly 55 characters; later versions may append "-..." fields.
    if version == "00" and len(value) != 55:
        return None
    if version != "00" and len(value) > 55 and value[55] != "-":
        return None
    trace_id, span_id, flags = rest[:32], rest[33:49], rest[50:52]
    if rest[32:33] != "-" or rest[49:50] != "-":
        return None
    if not (_hex(trace_id, 32) and _hex(span_id, 16) and _hex(flags, 2)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    state = tracestate if len(tracestate) <= _TRACESTATE_MAX else ""
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1), state)


def parse_b3(headers: Mapping[str, str]) -> TraceParent | None:
    """Zipkin B3, single header (``b3: trace-span-sampled``) or multi (``x-b3-*``)."""
    single = headers.get(B3)
    if single is not None:
        parts = single.strip().lower().split("-")
        if len(parts) < 2 or len(single) > 128:
            return None
        trace_id, span_id = parts[0], parts[1]
        sampled = parts[2] if len(parts) > 2 else "1"
    else:
        trace_id = headers.get(B3_TRACE_ID, "").strip().lower()
        span_id = headers.get(B3_SPAN_ID, "").strip().lower()
        sampled = headers.get(B3_SAMPLED, "1").strip().lower()
        if headers.get(B3_FLAGS, "").strip() == "1":  # debug implies sampled
            sampled = "1"
    if _hex(trace_id, 16):
        trace_id = "0" * 16 + trace_id  # 64-bit B3 ids pad to W3C's 128 bits
    if not _hex(trace_id, 32) or not _hex(span_id, 16):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, sampled in ("1", "d", "true"))


def incoming_trace(headers: Mapping[str, str]) -> tuple[TraceParent | None, bool]:
    """The trace context that arrived (W3C first, then B3) and whether a header that was
    present could not be read (the caller counts it; the call starts a new trace)."""
    value = headers.get(TRACEPARENT)
    if value is not None:
        parsed = parse_traceparent(value.strip(), headers.get(TRACESTATE, "").strip())
        return parsed, parsed is None
    if B3 in headers or B3_TRACE_ID in headers:
        parsed = parse_b3(headers)
        return parsed, parsed is None
    return None, False


def parse_timeout_ms(value: str) -> float | None:
    """A remaining budget in milliseconds (integer or decimal), or None when unreadable,
    not finite, zero or negative: a deadline that has already passed cannot arrive from
    a caller still waiting, so it is a bug upstream, not a reason to fail this call."""
    # ASCII only: float() also reads other scripts' digits and "1_000".
    if len(value) > 32 or not value.isascii() or "_" in value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(value: str) -> float | None:
    """gRPC's ``grpc-timeout`` (at most 8 digits and a unit) in seconds, or None."""
    if not 2 <= len(value) <= 9 or not _digits(value[:-1]):
        return None
    unit = _GRPC_UNITS.get(value[-1])
    if unit is None:
        return None
    seconds = int(value[:-1]) * unit
    return seconds if seconds > 0 else None


def format_grpc_timeout(seconds: float) -> str:
    """``grpc-timeout`` for ``seconds``, rounded up to the unit that keeps 8 digits."""
    for unit, scale in (("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600)):
        amount = math.ceil(seconds * scale)
        if amount < 100_000_000:
            return f"{max(1, amount)}{unit}"
    return "99999999H"


def parse_hops(value: str) -> int | None:
    """The hop count that arrived, or None when it is not a plausible count."""
    text = value.strip()
    if not _digits(text) or len(text) > 6:
        return None
    hops = int(text)
    return hops if hops <= HOPS_MAX else None


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` is also true for superscripts ("²", which int()
    refuses: a fuzzer found the crash) and other scripts' digits (which int() reads)."""
    return text.isascii() and text.isdigit()


def parse_path(value: str) -> tuple[str, ...]:
    """The apps a call went through, oldest first (``a,b,c``); bounded, never raises."""
    if not value:
        return ()
    entries = [entry.strip()[:PATH_ENTRY_MAX] for entry in value[:_PATH_MAX].split(",")]
    return tuple(entry for entry in entries if entry)[-PATH_MAX_ENTRIES:]


def format_path(path: tuple[str, ...]) -> str:
    # Commas separate entries: one inside a name would split it on the next hop.
    return ",".join(entry.replace(",", ";") for entry in path[-PATH_MAX_ENTRIES:])


def propagation_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The propagation fields among ``headers`` (any case), with lower-case names."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in INCOMING:
            found[lower] = value
    return found
