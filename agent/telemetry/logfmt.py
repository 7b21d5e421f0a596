"""Log lines as ``time level logger message key=value ...``: the ``extra`` fields that
modules pass (cluster, endpoint, listener, ...) become key=value pairs.

One event is one line, whatever it carries: messages and values hold what clients,
providers and registries sent (instance ids, reasons, names), so newlines, other control
characters, bidirectional-text controls and quotes are escaped, and a value with a space,
a quote or an ``=`` is quoted. A line can therefore never be forged by the text it logs
(issue 25). An exception is one ``error="Type: message"`` field, and its stack trace is
added only at DEBUG, each of its lines indented under the event.
"""

from __future__ import annotations

import logging
import sys
import traceback

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self.formatTime(record, self.datefmt),
            record.levelname,
            record.name,
            escape(record.getMessage()),
        ]
        parts.extend(
            f"{key}={quote(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD
        )
        line = " ".join(parts)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line += f" error={quote(f'{type(error).__name__}: {error}')}"
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                line += _indented(traceback.format_exception(*record.exc_info))
        if record.stack_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            line += _indented([record.stack_info])
        return line


def escape(text: str) -> str:
    """``text`` on one line, with nothing a terminal or a log reader would act on."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return "".join(out)


def quote(value: object) -> str:
    text = escape(str(value))
    return f'"{text}"' if (not text or " " in text or '"' in text or "=" in text) else text


def _indented(chunks: list[str]) -> str:
    # Continuation lines start with "  | ": none can be taken for an event of its own.
    lines = "".join(chunks).rstrip("\n").split("\n")
    return "".join(f"\n  | {line}" for line in lines)


class _Field(logging.Filter):
    def __init__(self, name: str, value: str) -> None:
        super().__init__()
        self.field = name
        self.value = value

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, self.field, self.value)
        return True


def add_field(name: str, value: str) -> None:
    """Every line from now on carries ``name=value`` (a worker process's id)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Field(name, value))


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log per request is noise for a sidecar's own API.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
