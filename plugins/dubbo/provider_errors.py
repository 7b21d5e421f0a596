"""What a Java Dubbo provider says when it answers with an error status (SERVICE_ERROR,
SERVER_ERROR, ...), read for callers and for retries. Sans-IO.

The text is ``StringUtils.toString(Throwable)``: the exception's ``toString()`` (class and
message), its stack (``\\tat ...`` lines, ``\\t... N more``) and each cause (``Caused by:
...``, with a stack of its own). A caller needs the exception and its causes, not 4 KB of
Java stack, so :func:`describe` keeps those, bounded; the first stack frame says where
the provider failed, which :func:`refused_the_request` reads: Dubbo's GenericFilter
throws when it cannot turn a generic call's arguments into the method's types (a number
that is not one, a class outside the allow list, no such method), and every provider of
the service would answer the same.
"""

from __future__ import annotations

from typing import NamedTuple

# Problem details and log lines carry at most this much of a provider's error, and at
# most this many causes are looked at (a Java cause chain is a few long): the work stays
# linear in the text whatever a provider sends.
MAX_DETAIL = 2048
MAX_CAUSES = 16
_GENERIC_FILTER = "org.apache.dubbo.rpc.filter.GenericFilter.invoke"
_CAUSED_BY = "Caused by: "
# printStackTrace writes the outermost exception's suppressed ones one tab in, before its
# first "Caused by:" (the causes' own suppressed come after, the suppressed ones' causes
# two tabs in).
_SUPPRESSED = "\tSuppressed: "


class ProviderError(NamedTuple):
    summary: str  # the exception's toString(): "class: message"
    causes: tuple[str, ...]  # each "Caused by:" line's exception, outermost first
    thrown_at: str  # the first stack frame ("package.Class.method"), or ""
    suppressed: tuple[str, ...] = ()  # the outermost exception's suppressed ones


def parse(text: str) -> ProviderError:
    """The parts of ``text``; a text without a stack is all summary."""
    summary: list[str] = []
    summary_size = 0
    causes: list[str] = []
    suppressed: list[str] = []
    thrown_at = ""
    in_stack = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("at "):
            if not thrown_at and not causes:
                thrown_at = stripped[3:].split("(", 1)[0]
            in_stack = True
        elif line.startswith(_CAUSED_BY):  # the outermost chain; indented: a suppressed one's
            if len(causes) < MAX_CAUSES:
                causes.append(stripped[len(_CAUSED_BY) :][:MAX_DETAIL])
            in_stack = True
        elif line.startswith(_SUPPRESSED) and not causes:
            if len(suppressed) < MAX_CAUSES:
                suppressed.append(line[len(_SUPPRESSED) :][:MAX_DETAIL])
            in_stack = True
        elif stripped.startswith(("...", "Suppressed: ", _CAUSED_BY)):
            in_stack = True
        elif not in_stack and summary_size <= MAX_DETAIL:
            summary.append(line)  # a message may span lines before the stack begins
            summary_size += len(line) + 1
    return ProviderError(
        "\n".join(summary).strip()[: MAX_DETAIL + 1], tuple(causes), thrown_at, tuple(suppressed)
    )


def exception_parts(line: str) -> dict[str, str]:
    """``"java.io.IOException: disk gone"`` as ``{"type": ..., "message": ...}``."""
    kind, _, message = line.partition(": ")
    return {"type": kind.strip(), "message": message}


def describe(error: ProviderError) -> str:
    """The exception and its causes, without stacks, at most MAX_DETAIL characters.
    A cause already quoted in the summary (Dubbo wraps ``RpcException: cause``) is not
    repeated."""
    text = error.summary
    for cause in error.causes:
        if cause not in error.summary:
            text += f"; caused by {cause}"
    if len(text) > MAX_DETAIL:
        text = text[: MAX_DETAIL - 1] + "…"
    return text


def refused_the_request(error: ProviderError) -> bool:
    """Whether the provider failed before the method ran, in converting the generic
    call's arguments (or finding its method): the same answer from every provider."""
    return error.thrown_at == _GENERIC_FILTER
