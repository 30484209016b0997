"""Field checks for specs: each problem is collected with its path, none stops the others.

Guarantee: every checker returns a usable value (the default when the input is wrong) and
records exactly one sentence per problem, so a spec with five mistakes gets five sentences.
Limit: checks one field at a time; rules spanning fields live in ``spec``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from infrakit_runtime import durations
from infrakit_runtime.spi.common import JSON, json_type

__all__ = ["Problems", "Scaled"]

# ASCII digits only: str.isdigit() and \d also match "²" or "٣", which int() refuses or reads oddly.
_COUNT = re.compile(r"^[0-9]{1,18}$")
_PERCENT = re.compile(r"^([0-9]{1,18})%$")


@dataclasses.dataclass(frozen=True)
class Scaled:
    """An integer or a percentage of the group size (``MaxSurge: 1``, ``MaxUnhealthy: "40%"``)."""

    value: int
    percent: bool = False

    def resolve(self, total: int, *, round_up: bool) -> int:
        """The absolute number this means for a group of ``total`` instances."""
        if not self.percent:
            return self.value
        scaled = self.value * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)

    def to_wire(self) -> int | str:
        return f"{self.value}%" if self.percent else self.value

    def __str__(self) -> str:
        return str(self.to_wire())



class Problems:
    """Collects problems so that one commit reports all of them."""

    def __init__(self, *, known: Mapping[str, Sequence[str]]) -> None:
        self.problems: list[str] = []
        self.known = known

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def unknown_keys(self, obj: dict[str, Any], path: str) -> None:
        known = self.known[path]
        for key in obj:
            if key not in known:
                where = f"{path}: unknown" if path else "Unknown"
                self.add(f"{where} key {json.dumps(key)} (known keys: {', '.join(known)})")

    def mapping(self, value: JSON, path: str, *, required: bool = False) -> dict[str, Any]:
        if value is None:
            if required:
                self.add(f"{path} is required")
            return {}
        if not isinstance(value, dict):
            self.add(f"{path} must be an object, got {json_type(value)}")
            return {}
        self.unknown_keys(value, path)
        return value

    def integer(self, value: JSON, path: str, *, default: int, minimum: int = 0) -> int:
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(f"{path} must be an integer, got {json_type(value)}")
            return default
        if value < minimum:
            self.add(f"{path} must be at least {minimum}, got {value}")
            return default
        return value

    def duration(self, value: JSON, path: str, *, default: float | None) -> float | None:
        if value is None or value == 0:
            return default if value is None else 0.0
        if not isinstance(value, str):
            self.add(f"{path} must be a duration string like \"30s\", got {json_type(value)}"
                     " (a bare number is ambiguous: Go reads it as nanoseconds)")
            return default
        try:
            return durations.parse_duration(value)
        except ValueError:
            self.add(f"{path}: {json.dumps(value)} is not a duration (expected e.g. \"500ms\", \"30s\", \"1m30s\")")
            return default

    def scaled(self, value: JSON, path: str, *, default: Scaled) -> Scaled:
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                self.add(f"{path} must not be negative, got {value}")
                return default
            return Scaled(value)
        if isinstance(value, str):
            text = value.strip()
            if _COUNT.match(text):
                return Scaled(int(text))
            m = _PERCENT.match(text)
            if m:
                if int(m.group(1)) > 100:
                    self.add(f"{path}: {json.dumps(value)} is more than 100%")
                    return default
                return Scaled(int(m.group(1)), percent=True)
        self.add(f"{path}: {json.dumps(value)} is not an integer or percentage (e.g. 1 or \"25%\")")
        return default
