"""Vocabulary shared by every SPI: interface names and the errors plugins raise."""

from __future__ import annotations

import dataclasses
from typing import Any

# A JSON value as it crosses the wire: dict, list, str, int, float, bool or None.
JSON = Any


@dataclasses.dataclass(frozen=True, order=True)
class InterfaceSpec:
    """An SPI name and version as announced in ``Handshake.Hello`` (``Instance/0.6.1``)."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"

    @classmethod
    def parse(cls, text: str) -> InterfaceSpec:
        name, sep, version = text.partition("/")
        if not sep or not name or not version:
            raise ValueError(f"interface {text!r} is not of the form Name/Version")
        return cls(name, version)


@dataclasses.dataclass(frozen=True)
class PluginName:
    """``socket[/type]``: a plugin daemon's socket name and the object type inside it (``aws/ec2-instance``)."""

    socket: str
    type: str = ""

    @classmethod
    def parse(cls, text: str) -> PluginName:
        socket, _, type_ = text.partition("/")
        if not socket or "/" in type_ or socket in (".", ".."):
            raise ValueError(f"plugin name {text!r} is not of the form socket[/type]")
        return cls(socket, type_)

    def __str__(self) -> str:
        return f"{self.socket}/{self.type}" if self.type else self.socket


class PluginError(Exception):
    """A failure a plugin reports to its caller (JSON-RPC code -32000).

    The message is a sentence a person can act on; it crosses the wire as is. A subclass a
    caller must tell apart names its ``kind``, which crosses the wire as ``data.Kind``.
    """

    kind: str = ""


class Unsupported(PluginError):
    """The plugin does not implement an optional extension (``InstanceWatch``...): an answer, not a failure."""


class ValidationError(PluginError):
    """Input that cannot be acted on; ``problems`` lists every one found."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def json_type(value: JSON) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
