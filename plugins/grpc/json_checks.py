"""What protobuf's own JSON parser (``json_format``) lets through and a caller must hear
about: the JSON of a request checked against its message descriptor, before ParseDict.

- integer fields given as text: ``json_format`` reads them with ``int()``, which also takes
  ``"1_000"`` and other scripts' digits (``"١٢"``); only ASCII digits (an optional sign) are
  integers here, as protobuf's Go and C++ parsers have it;
- bytes fields: ``json_format`` decodes base64 leniently, so invalid text reached the
  provider as empty or cut bytes; here it must be base64 (standard or URL-safe alphabet,
  padding optional), as protobuf's Go parser requires.

Each problem is reported with its path (``body.message.items[2].id``). Work is linear in
the JSON: each value is looked at once.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]

from agent.integer_text import parse_integer_text

_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_BYTES = FieldDescriptor.TYPE_BYTES
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}\Z")


class JsonProblem(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def check(value: Any, descriptor: Any, path: str) -> None:
    """Raise JsonProblem for the first value ``json_format`` would take wrongly."""
    if not isinstance(value, dict) or descriptor.full_name.startswith("google.protobuf."):
        return  # well-known types have JSON forms of their own: json_format checks them
    fields = descriptor.fields_by_name
    by_json = {f.json_name: f for f in descriptor.fields}
    for name, item in value.items():
        field = fields.get(name) or by_json.get(name)
        if field is None or item is None:
            continue  # json_format reports unknown fields itself
        where = f"{path}.{name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if isinstance(item, dict):
                value_field = field.message_type.fields_by_name["value"]
                key_field = field.message_type.fields_by_name["key"]
                for key, entry in item.items():
                    if key_field.type in _INTEGERS:
                        _integer(key, f"{where}.{key}")
                    _scalar_or_message(entry, value_field, f"{where}.{key}")
            continue
        if field.is_repeated and isinstance(item, list):
            for i, element in enumerate(item):
                _scalar_or_message(element, field, f"{where}[{i}]")
            continue
        _scalar_or_message(item, field, where)


def _scalar_or_message(value: Any, field: Any, path: str) -> None:
    if field.type in _INTEGERS:
        if isinstance(value, str):
            _integer(value, path)
    elif field.type == _BYTES:
        if isinstance(value, str) and not _valid_base64(value):
            raise JsonProblem(path, "bytes are given as base64 text; this is not")
    elif field.type == _MESSAGE:
        check(value, field.message_type, path)


def _integer(text: str, path: str) -> None:
    if parse_integer_text(text, 20) is None:
        raise JsonProblem(path, f"{text[:40]!r} is not an integer (ASCII digits)")


def _valid_base64(text: str) -> bool:
    if not _BASE64.match(text):
        return False
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        return False
    padded = body + "=" * (-len(body) % 4)
    try:
        if "-" in body or "_" in body:
            base64.urlsafe_b64decode(padded)
        else:
            base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
