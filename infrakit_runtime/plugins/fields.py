"""Reading a plugin's Properties while collecting every problem, each naming its field.

Guarantee: a ``Fields`` never raises on bad input; it records one sentence per problem, naming
the field's path, and returns the default, so Validate reports everything at once and
Prepare/Healthy/Drain refuse with the same sentences. One wording per kind of mistake, which a
plugin's own checks use too:

- a value of the wrong JSON type: ``Timeout must be a duration such as "2s", got object``
  (``wrong_type``);
- a value of the right type that is not allowed, a range included: ``Port must be an integer
  from 1 to 65535, got 0`` (``wrong_value``);
- a required field left out: ``Drain.Command is required`` (``missing``);
- a field the plugin does not know: ``Health.Retries is not a field (known: HTTP, TCP)``
  (``not_a_field``).

Limit: types, presence, ranges and unknown fields; each plugin checks what its values mean
(an etcd flag, a playbook, a probe URL) and phrases that itself.
"""

from __future__ import annotations

import os
from typing import Any

from infrakit_runtime.durations import parse_duration
from infrakit_runtime.spi.common import JSON, json_type

__all__ = ["Fields", "missing", "not_a_field", "wrong_type", "wrong_value"]


def wrong_type(path: str, expected: str, value: JSON) -> str:
    return f"{path} must be {expected}, got {json_type(value)}"


def wrong_value(path: str, expected: str, value: object) -> str:
    return f"{path} must be {expected}, got {value!r}"


def missing(path: str, hint: str = "") -> str:
    return f"{path} is required: {hint}" if hint else f"{path} is required"


def not_a_field(path: str, known: tuple[str, ...] | list[str]) -> str:
    return f"{path} is not a field (known: {', '.join(known)})"


class Fields:
    """Typed reads of one JSON object at ``where`` (a path, "" at the top); problems accumulate in ``problems``."""

    def __init__(self, obj: JSON, where: str = "", problems: list[str] | None = None) -> None:
        self.problems = problems if problems is not None else []
        self.where = where
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            self.problems.append(wrong_type(where or "Properties", "an object", obj))
            obj = {}
        self.obj: dict[str, Any] = obj

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def unknown(self, known: tuple[str, ...]) -> None:
        """A problem for every key not in ``known`` (Validate's strictness)."""
        for key in sorted(set(self.obj) - set(known), key=str):
            self.problems.append(not_a_field(self.path(str(key)), known))

    def required(self, key: str, hint: str = "") -> None:
        """A problem unless ``key`` is given (its value is read and checked by another method)."""
        if self.obj.get(key) is None:
            self.problems.append(missing(self.path(key), hint))

    def string(self, key: str, default: str | None = None, *, nonempty: bool = False,
               choices: tuple[str, ...] | None = None) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return default
        expected = "a non-empty string" if nonempty else "a string"
        if not isinstance(value, str):
            self.problems.append(wrong_type(self.path(key), expected, value))
            return default
        if nonempty and not value:
            self.problems.append(wrong_value(self.path(key), expected, value))
            return default
        if choices is not None and value not in choices:
            self.problems.append(wrong_value(self.path(key), f"one of {', '.join(choices)}", value))
            return default
        return value

    def strings(self, key: str, *, nonempty: bool = False) -> list[str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.problems.append(wrong_type(self.path(key), "an array of strings", value))
            return None
        expected = "a non-empty string" if nonempty else "a string"
        bad = [wrong_type(f"{self.path(key)}[{i}]", expected, v) if not isinstance(v, str)
               else wrong_value(f"{self.path(key)}[{i}]", expected, v)
               for i, v in enumerate(value) if not isinstance(v, str) or (nonempty and not v)]
        self.problems.extend(bad)
        return None if bad else list(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(wrong_type(self.path(key), "an object of strings", value))
            return {}
        bad = [wrong_type(f"{self.path(key)}.{k}", "a string", v) for k, v in value.items() if not isinstance(v, str)]
        self.problems.extend(bad)
        return {} if bad else dict(value)

    def mapping(self, key: str, expected: str = "an object") -> dict[str, Any]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(wrong_type(self.path(key), expected, value))
            return {}
        return dict(value)

    def abs_path(self, key: str, default: str | None = None) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problems.append(wrong_type(self.path(key), "an absolute path", value))
            return default
        if not os.path.isabs(value) or "\0" in value:
            self.problems.append(wrong_value(self.path(key), "an absolute path", value))
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.obj.get(key)
        if value is None:
            return default
        expected = f"an integer from {minimum} to {maximum}" if maximum is not None else f"an integer of at least {minimum}"
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(wrong_type(self.path(key), expected, value))
            return default
        if value < minimum or (maximum is not None and value > maximum):
            self.problems.append(wrong_value(self.path(key), expected, value))
            return default
        return value

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, minimum=1, maximum=65535)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.append(wrong_type(self.path(key), "true or false", value))
            return default
        return value

    def duration(self, key: str, default: float) -> float:
        value = self.obj.get(key)
        if value is None:
            return default
        expected = 'a duration such as "2s"'
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problems.append(wrong_type(self.path(key), expected, value))
            return default
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.problems.append(wrong_value(self.path(key), expected, value))
            return default
        if seconds <= 0:
            self.problems.append(wrong_value(self.path(key), "longer than 0s", value))
            return default
        return seconds

    def nested(self, key: str) -> Fields | None:
        """The object at ``key`` read with the same problems, or None when absent or not an object."""
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problems.append(wrong_type(self.path(key), "an object", value))
            return None
        return Fields(value, self.path(key), self.problems)
