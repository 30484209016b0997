"""Reading flavor Properties while collecting every problem, each naming its field.

Guarantee: a ``Fields`` never raises on bad input; it records a sentence per problem and returns
the default, so Validate reports everything at once and Prepare/Healthy/Drain can refuse with the
same sentences.
Limit: shallow helpers for the selfhost flavors; each flavor checks its own meaning.
"""

from __future__ import annotations

import os
from typing import Any

from infrakit_runtime.durations import parse_duration
from infrakit_runtime.spi.common import JSON, json_type

__all__ = ["Fields"]


class Fields:
    """Typed reads of one JSON object; problems accumulate in ``problems``."""

    def __init__(self, obj: JSON, where: str = "", problems: list[str] | None = None) -> None:
        self.problems = problems if problems is not None else []
        self.where = where
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            self.problems.append(f"{where or 'Properties'} must be an object, got {json_type(obj)}")
            obj = {}
        self.obj: dict[str, Any] = obj

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def unknown(self, known: tuple[str, ...]) -> None:
        for key in sorted(set(self.obj) - set(known), key=str):
            self.problems.append(f"unknown property {self.path(str(key))!r} (known: {', '.join(known)})")

    def string(self, key: str, default: str | None = None, *, choices: tuple[str, ...] | None = None) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.problems.append(f"{self.path(key)} must be a non-empty string, got {json_type(value)}")
            return default
        if choices is not None and value not in choices:
            self.problems.append(f"{self.path(key)} must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def abs_path(self, key: str, default: str | None = None) -> str | None:
        value = self.string(key, None)
        if value is None:
            return default
        if not os.path.isabs(value):
            self.problems.append(f"{self.path(key)} must be an absolute path, got {value!r}")
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
            self.problems.append(f"{self.path(key)} must be an integer {bounds}, got {value!r}")
            return default
        return value

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, minimum=1, maximum=65535)

    def duration(self, key: str, default: float) -> float:
        value = self.obj.get(key)
        if value is None:
            return default
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"got {json_type(value)}")
            seconds = parse_duration(value)
        except ValueError as e:
            self.problems.append(f"{self.path(key)} must be a duration such as \"2s\": {e}")
            return default
        if seconds <= 0:
            self.problems.append(f"{self.path(key)} must be longer than 0s, got {value!r}")
            return default
        return seconds

    def strings(self, key: str) -> list[str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{self.path(key)} must be an array of non-empty strings, got {json_type(value)}")
            return None
        return list(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{self.path(key)} must be an object of strings, got {json_type(value)}")
            return {}
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        for k in bad:
            self.problems.append(f"{self.path(key)}.{k} must be a string, got {json_type(value[k])}")
        return {} if bad else dict(value)

    def nested(self, key: str) -> Fields | None:
        value = self.obj.get(key)
        if value is None:
            return None
        return Fields(value, self.path(key), self.problems)
