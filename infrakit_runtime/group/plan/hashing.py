"""InfraKit's config hash, byte for byte: a group adopts InfraKit's instances without a rollout.

Guarantee: ``config_hash(instance, flavor)`` equals the ``infrakit.config.hash`` tag
InfraKit writes for the same Instance and Flavor sections (checked against the wire
recordings). It re-creates Go's pipeline: decode each section into InfraKit's
``{Plugin, Properties}`` struct (other keys are dropped, exactly as Go's decoder drops
them), re-marshal it through a generic map (numbers become float64), print it with
``json.MarshalIndent(v, "  ", "  ")``, SHA-1 both documents, base32, lower case,
no padding.

Limit: control characters U+0008 and U+000C are escaped as ``\\u0008`` / ``\\u000c``,
as the Go releases InfraKit shipped with did (Go 1.22 later printed ``\\b`` / ``\\f``);
integers beyond float64 precision are rounded as Go rounds them, so two specs that
differ only there hash alike - in InfraKit too.
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import math
from typing import Any

from infrakit_runtime.spi.common import JSON

__all__ = ["config_hash", "go_marshal_indent", "stable_format"]

_HEX = "0123456789abcdef"
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def config_hash(instance_section: JSON, flavor_section: JSON) -> str:
    """The ``infrakit.config.hash`` of a group whose Properties hold these Instance and Flavor sections.

    Only these two sections are hashed, so a size or policy change never rolls instances.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(stable_format(instance_section))
    digest.update(stable_format(flavor_section))
    return base64.b32encode(digest.digest()).decode("ascii").lower().rstrip("=")


def stable_format(section: JSON) -> bytes:
    """One section as InfraKit's ``stableFormat`` prints it (its struct fields, sorted, indented)."""
    obj = section if isinstance(section, dict) else {}
    plugin = obj.get("Plugin")
    as_struct = {"Plugin": plugin if isinstance(plugin, str) else "", "Properties": obj.get("Properties")}
    return go_marshal_indent(_through_float64(as_struct)).encode("utf-8")


def _through_float64(value: JSON) -> Any:
    """The value as Go's ``json.Unmarshal`` into ``interface{}`` sees it: every number a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"number {value} does not fit a float64") from None
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, dict):
        return {str(k): _through_float64(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_through_float64(v) for v in value]
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def go_marshal_indent(value: Any, prefix: str = "  ", indent: str = "  ") -> str:
    """Go's ``json.MarshalIndent(value, prefix, indent)`` for generic JSON values (maps sorted by key)."""
    out: list[str] = []
    _encode(value, out, prefix, indent, 0)
    return "".join(out)


def _encode(value: Any, out: list[str], prefix: str, indent: str, depth: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(go_string(value))
    elif isinstance(value, (int, float)):
        out.append(go_float(float(value)))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = "\n" + prefix + indent * (depth + 1)
        out.append("{")
        # Go sorts map keys by their UTF-8 bytes; code-point order is the same order.
        for i, key in enumerate(sorted(value)):
            out.append(("," if i else "") + inner + go_string(key) + ": ")
            _encode(value[key], out, prefix, indent, depth + 1)
        out.append("\n" + prefix + indent * depth + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        inner = "\n" + prefix + indent * (depth + 1)
        out.append("[")
        for i, item in enumerate(value):
            out.append(("," if i else "") + inner)
            _encode(item, out, prefix, indent, depth + 1)
        out.append("\n" + prefix + indent * depth + "]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def go_string(text: str) -> str:
    """A string as Go's encoder writes it with HTML escaping on (its default)."""
    parts = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            parts.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&":
            parts.append("\\u00" + _HEX[code >> 4] + _HEX[code & 0xF])
        elif code in (0x2028, 0x2029):
            parts.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate is invalid UTF-8 to Go: it decodes and re-encodes as U+FFFD.
            parts.append("\ufffd")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def go_float(number: float) -> str:
    """A float64 as Go's ``encoding/json`` prints it: shortest digits, 'e' only below 1e-6 or from 1e21."""
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{number!r} is not a JSON number")
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    shortest = decimal.Decimal(repr(number))  # repr is the shortest round-tripping form, as Go's -1 precision
    magnitude = abs(number)
    if magnitude < 1e-6 or magnitude >= 1e21:
        sign, digits, exponent = shortest.as_tuple()
        assert isinstance(exponent, int)
        text = "".join(str(d) for d in digits).rstrip("0") or "0"
        exp10 = exponent + len(digits) - 1
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        # Go writes at least two exponent digits, then encoding/json trims "e-07" to "e-7".
        exp_text = f"{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
        if exp10 < 0 and exp_text.startswith("-0"):
            exp_text = "-" + exp_text[2:]
        return ("-" if sign else "") + mantissa + "e" + exp_text
    text = format(shortest, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
