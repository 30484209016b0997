"""Go-style durations (``500ms``, ``30s``, ``1m30s``) as InfraKit's specs and env vars use them."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go duration string or a plain number of seconds.

    >>> parse_duration("1m30s")
    90.0
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative")
        return _finite(float(value), value)
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"duration {value!r} is negative")
        return _finite(seconds, value)
    pos, total = 0, 0.0
    if text == "0":
        return 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise ValueError(f"{value!r} is not a duration (expected e.g. 500ms, 30s, 1m30s)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return _finite(total, value)


def _finite(seconds: float, value: object) -> float:
    # "nan", "inf" and 400-digit numbers parse as floats; no timer or Go duration can hold them.
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The Go rendering of a duration in seconds (``0s``, ``1.5s``, ``10m0s``, ``250ms``, ``100ns``).

    Never an exponent, so ``parse_duration`` reads back every text it writes.
    """
    if seconds == 0:
        return "0s"
    if seconds < 1:
        for unit, scale in (("ms", 1e3), ("µs", 1e6), ("ns", 1e9)):
            if seconds * scale >= 1 or unit == "ns":
                return f"{_decimal(seconds * scale)}{unit}"
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{_decimal(sec)}s"


def _decimal(number: float) -> str:
    """A number in plain decimals (nanosecond precision at most), without an exponent."""
    return f"{number:.9f}".rstrip("0").rstrip(".") or "0"
