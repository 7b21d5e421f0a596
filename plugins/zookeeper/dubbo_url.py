"""Dubbo URLs as Dubbo writes them into ZooKeeper (sans-IO).

A provider registers ``dubbo://192.168.1.5:20880/org.apache.dubbo.demo.DemoService?anyhost=true&...``
(parameters sorted by key, values raw), and the znode name is that whole string encoded with
Java's ``URLEncoder`` (UTF-8, space as ``+``, only ``A-Za-z0-9.-*_`` left bare). Both directions
here follow Java exactly so that names we write are the names a Dubbo consumer expects, and
names Dubbo writes parse back to the same URL.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote_plus, unquote_plus

from agent.discovery.types import frozen_mapping


class MalformedURL(ValueError):
    """A string that is not a Dubbo URL (or not one a provider could have written)."""


# Java's URLEncoder leaves exactly these bare; Python's quote also leaves "~" bare.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def encode_component(text: str) -> str:
    """``java.net.URLEncoder.encode(text, "UTF-8")``."""
    return quote_plus(text, safe="*").replace("~", "%7E")


def decode_component(text: str) -> str:
    """``java.net.URLDecoder.decode(text, "UTF-8")``, strict as Java is about bad escapes."""
    if _BAD_ESCAPE.search(text):
        raise MalformedURL(f"bad percent escape in {text!r}")
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError as exc:
        raise MalformedURL(f"escapes are not UTF-8 in {text!r}") from exc


@dataclass(frozen=True)
class DubboURL:
    protocol: str
    host: str
    port: int
    path: str = ""
    params: Mapping[str, str] = field(default_factory=frozen_mapping)
    username: str = ""
    password: str = ""

    @property
    def interface(self) -> str:
        # Dubbo's getServiceInterface: the "interface" parameter, else the path.
        return self.params.get("interface") or self.path

    @property
    def group(self) -> str:
        return self.params.get("group", "")

    @property
    def version(self) -> str:
        return self.params.get("version", "")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host

    def to_string(self) -> str:
        """Dubbo's ``URL.toFullString()``: parameters sorted by key, values not encoded."""
        out = [self.protocol, "://"]
        if self.username:
            out.append(self.username)
            if self.password:
                out += [":", self.password]
            out.append("@")
        out.append(self.address)
        if self.path:
            out += ["/", self.path]
        # Dubbo drops empty values when a URL is built, so they never reach a node name.
        params = [f"{k}={v}" for k, v in sorted(self.params.items()) if k and v != ""]
        if params:
            out += ["?", "&".join(params)]
        return "".join(out)

    def to_node_name(self) -> str:
        return encode_component(self.to_string())


def parse(text: str) -> DubboURL:
    """Dubbo's ``URL.valueOf``: lenient where Dubbo is, an error where a provider URL cannot be."""
    url = text.strip()
    if not url:
        raise MalformedURL("empty URL")
    params: dict[str, str] = {}
    url, sep, query = url.partition("?")
    if sep:
        for part in query.split("&"):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            # Dubbo stores a bare key as key=key; a bare flag stays truthy that way.
            # Interned: thousands of providers repeat the same keys and most values
            # (application, dubbo, release, methods, side, ...); one copy each is enough.
            params[sys.intern(key)] = sys.intern(value if eq else part)
    scheme_end = url.find("://")
    if scheme_end <= 0:
        raise MalformedURL(f"no protocol in {text!r}")
    protocol, rest = url[:scheme_end], url[scheme_end + 3 :]
    rest, _, path = rest.partition("/")
    username = password = ""
    at = rest.rfind("@")
    if at >= 0:
        username, _, password = rest[:at].partition(":")
        rest = rest[at + 1 :]
    host, port = _split_host_port(rest, text)
    return DubboURL(
        protocol=protocol,
        host=host,
        port=port,
        path=path,
        params=frozen_mapping(params),
        username=username,
        password=password,
    )


def _split_host_port(hostport: str, text: str) -> tuple[str, int]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise MalformedURL(f"unclosed IPv6 address in {text!r}")
        host, tail = hostport[1:close], hostport[close + 1 :]
        if not tail:
            return host, 0
        if not tail.startswith(":"):
            raise MalformedURL(f"junk after IPv6 address in {text!r}")
        return host, _port(tail[1:], text)
    colon = hostport.rfind(":")
    if colon < 0:
        return hostport, 0
    return hostport[:colon], _port(hostport[colon + 1 :], text)


def _port(digits: str, text: str) -> int:
    if not digits.isascii() or not digits.isdigit():
        raise MalformedURL(f"bad port {digits!r} in {text!r}")
    port = int(digits)
    if port > 65535:
        raise MalformedURL(f"port {port} out of range in {text!r}")
    return port


def parse_node_name(name: str) -> DubboURL:
    """A provider/consumer znode name back to the URL Dubbo encoded into it."""
    return parse(decode_component(name))
