"""Where meshagent's services live in etcd (sans-IO).

``{prefix}/{service}/{instance_id}``, both names percent-encoded (``urllib.parse.quote`` with
no safe characters), so a name holding "/" stays one key component and a service's range
``{prefix}/{service}/`` never takes in another service whose name starts the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote


class OutsideLayout(ValueError):
    """A key under the prefix that is not ``{prefix}/{service}/{instance_id}``."""


def encode_name(name: str) -> str:
    return quote(name, safe="")


def decode_name(text: str) -> str:
    try:
        name = unquote(text, errors="strict")
    except UnicodeDecodeError as exc:
        raise OutsideLayout(f"escapes are not UTF-8 in {text!r}") from exc
    if encode_name(name) != text:
        # Two spellings of one name would be two keys for one instance id.
        raise OutsideLayout(f"{text!r} is not the canonical encoding of {name!r}")
    return name


def range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``": the prefix plus one."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"  # all 0xff: to the end of the keyspace


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = "/meshagent/services"

    def service_prefix(self, service: str) -> bytes:
        return f"{self.prefix}/{encode_name(service)}/".encode()

    def key(self, service: str, instance_id: str) -> bytes:
        return self.service_prefix(service) + encode_name(instance_id).encode()

    def parse(self, key: bytes) -> tuple[str, str]:
        """``(service, instance_id)`` of ``key``, or :class:`OutsideLayout`."""
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            raise OutsideLayout("key is not UTF-8") from None
        head = self.prefix + "/"
        if not text.startswith(head):
            raise OutsideLayout(f"not under {head}")
        parts = text[len(head) :].split("/")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise OutsideLayout("not {service}/{instance_id}")
        return decode_name(parts[0]), decode_name(parts[1])
