"""Strict readers for wire objects: every type problem names its field.

``from_wire`` constructors use these so that a malformed request is refused with
a message such as ``Spec.Tags.tier must be a string, got number`` before any
plugin code runs.
"""

from __future__ import annotations

from typing import Any

from infrakit_runtime.spi.common import JSON, ValidationError, json_type


class ParamsError(ValidationError):
    """A request field of the wrong type or missing (JSON-RPC -32602, not a plugin verdict)."""


class Reader:
    """Reads typed fields from one JSON object, naming ``where`` in every error."""

    def __init__(self, obj: JSON, where: str) -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise ParamsError(f"{where or 'params'} must be an object, got {json_type(obj)}")
        self.obj: dict[str, Any] = obj
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def raw(self, key: str, default: JSON = None) -> JSON:
        return self.obj.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.obj

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.obj.get(key)
        if value is None:
            if required:
                raise ParamsError(f"{self.path(key)} is required")
            return default
        if not isinstance(value, str):
            raise ParamsError(f"{self.path(key)} must be a string, got {json_type(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ParamsError(f"{self.path(key)} must be a string or null, got {json_type(value)}")
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ParamsError(f"{self.path(key)} must be a boolean, got {json_type(value)}")
        return value

    def integer(self, key: str, default: int = 0, *, minimum: int | None = None) -> int:
        value = self.obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ParamsError(f"{self.path(key)} must be an integer, got {value!r}")
        value = int(value)
        if minimum is not None and value < minimum:
            raise ParamsError(f"{self.path(key)} must be at least {minimum}, got {value}")
        return value

    def string_map(self, key: str) -> dict[str, str] | None:
        """A ``map[string]string`` (tags, labels); JSON null gives ``None``."""
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ParamsError(f"{self.path(key)} must be an object of strings, got {json_type(value)}")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ParamsError(f"{self.path(key)}.{k} must be a string, got {json_type(v)}")
        return dict(value)

    def string_list(self, key: str) -> list[str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ParamsError(f"{self.path(key)} must be an array of strings, got {json_type(value)}")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise ParamsError(f"{self.path(key)}[{i}] must be a string, got {json_type(v)}")
        return list(value)

    def object(self, key: str) -> Reader:
        return Reader(self.obj.get(key), self.path(key))
