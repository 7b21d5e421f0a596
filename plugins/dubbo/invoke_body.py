"""The JSON body of a Dubbo invocation, validated (a pydantic model).

A module of its own, interpreted: the invoker that reads it is compiled by mypyc, which
cannot compile pydantic models (their class attributes hold ``Field``s).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import InvalidRequest
from plugins.dubbo.generic import ArgumentError, check_types

AttachmentValue = str | int | float | bool


class InvokeBody(BaseModel):
    """The JSON body of a Dubbo invocation. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    # Java type names (``int``, ``java.lang.String``, ``com.acme.Person``, ``long[]``);
    # omitted: the provider finds the method by name (it must not be overloaded).
    types: list[Annotated[str, Field(min_length=1)]] | None = None
    args: list[Any] = Field(default_factory=list)
    # Which provider version/group; omitted: the service's ``attributes``. ``*``: any.
    version: str | None = None
    group: str | None = None
    attachments: dict[str, AttachmentValue] = Field(default_factory=dict)
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None

    @field_validator("attachments")
    @classmethod
    def _no_reserved(cls, value: dict[str, AttachmentValue]) -> dict[str, AttachmentValue]:
        reserved = sorted(value.keys() & _RESERVED_ATTACHMENTS)
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} set by the agent (use version, group, timeout_ms)"
            )
        return value


_RESERVED_ATTACHMENTS = frozenset({"path", "interface", "version", "group", "timeout", "generic"})


def parse_body(body: dict[str, Any]) -> InvokeBody:
    try:
        parsed = InvokeBody.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            [
                (".".join(["body", *(str(part) for part in error["loc"])]), error["msg"])
                for error in exc.errors()
            ]
        ) from None
    try:
        check_types(parsed.types, parsed.args)
    except ArgumentError as exc:
        raise InvalidRequest([(f"body.{exc.path}", exc.message)]) from None
    return parsed
