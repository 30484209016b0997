"""Addresses from logical IDs: a pet's logical ID says where it listens.

Guarantee: pure and total over valid input; ``parse`` refuses anything that is not ``HOST`` or
``HOST:PORT`` (an IPv6 host in brackets when it has a port) with a sentence naming the ID.
A bare host (an instance's private IP on a cloud) takes the flavor's default ports; ``HOST:PORT``
(one machine, a loopback port per member) names the first port and the next ones follow it.
Limit: a name is not resolved; the flavor trusts it to reach the member it names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

__all__ = ["Endpoint", "member_name", "parse"]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A logical ID read as an address: a host, and the port it names (None for a bare host)."""

    host: str
    port: int | None = None

    def with_port(self, port: int) -> str:
        """``host:port`` (brackets around an IPv6 host)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"

    def url(self, scheme: str, port: int) -> str:
        return f"{scheme}://{self.with_port(port)}"

    def port_or(self, default: int, offset: int = 0) -> int:
        """The port this ID names plus ``offset``, or ``default`` for a bare host."""
        return self.port + offset if self.port is not None else default


def parse(logical_id: str) -> Endpoint:
    """``HOST`` or ``HOST:PORT`` (``[V6]:PORT``); ``ValueError`` naming the ID otherwise."""
    text = logical_id.strip()
    if text != logical_id or not text:
        raise ValueError(f"logical ID {logical_id!r} must be HOST or HOST:PORT without spaces")
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"logical ID {logical_id!r}: an IPv6 address in brackets needs its closing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"logical ID {logical_id!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], logical_id)
        _ip(host, logical_id, v6=True)
        return Endpoint(host, port)
    if text.count(":") > 1:  # a bare IPv6 address
        _ip(text, logical_id, v6=True)
        return Endpoint(text, None)
    if ":" in text:
        host, _, raw = text.partition(":")
        port = _port(raw, logical_id)
    if not _is_ip(host) and not _HOSTNAME.match(host):
        raise ValueError(f"logical ID {logical_id!r}: {host!r} is neither an IP address nor a host name")
    return Endpoint(host, port)


def member_name(logical_id: str) -> str:
    """A name safe for etcd's ``--initial-cluster`` and for file names: ``127.0.0.1:2379`` -> ``127.0.0.1-2379``."""
    return _NAME_UNSAFE.sub("-", logical_id).strip("-") or "member"


def _port(raw: str, logical_id: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65535:
        raise ValueError(f"logical ID {logical_id!r}: port {raw!r} must be a number from 1 to 65534")
    return int(raw)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _ip(text: str, logical_id: str, *, v6: bool) -> None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"logical ID {logical_id!r}: {text!r} is not an IP address") from None
    if v6 and address.version != 6:
        raise ValueError(f"logical ID {logical_id!r}: only an IPv6 address goes in brackets")
