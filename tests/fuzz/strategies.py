"""Hypothesis strategies for hostile input: wrong types, odd numbers, unicode edge cases, deep shapes.

Guarantee: every value drawn is JSON-encodable (with ``ensure_ascii=True`` when it holds lone
surrogates) so it can reach a daemon over the wire. ``defang`` keeps fuzzed plugin Properties
from running arbitrary commands or probing arbitrary hosts: string commands and probe targets
are swapped for harmless ones, so the typed paths stay exercised without side effects.
Limit: shapes stay small (a few dozen leaves); the size and nesting limits have their own tests.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Text a parser, a logger, a file name or a shell might choke on.
SPECIAL_STRINGS = [
    "", " ", "\0", "\x7f", "\ufeff", "\u2028", "\u202e", "\ud800", "\udfff", "\U0001f4a5", "é" * 3,
    "../../etc/passwd", "/", ".", "..", "%s%n", "{{ .ID }}", "${HOME}", "'; DROP TABLE x; --",
    '"', "\\", "\\u0000", "true", "null", "0", "-1", "1e400", "NaN", "²", "٣", "x" * 5000,
]
SPECIAL_NUMBERS: list[Any] = [
    0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**100, -(10**100),
    0.5, -0.0, 1e308, -1e308, 5e-324, 1.0,
]

characters = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # lone surrogates: valid in JSON escapes, invalid in UTF-8
    st.sampled_from(["\0", "\n", "\u2028", "\ufeff", "\U0010ffff", "/", "%", "{", "\\", '"']),
)
hostile_text = st.one_of(st.text(alphabet=characters, max_size=24), st.sampled_from(SPECIAL_STRINGS))
hostile_numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(hostile_text, inner, max_size=4),
    ),
    max_leaves=16,
)

_MISSING = object()


def _mutated(example: Any, depth: int) -> st.SearchStrategy[Any]:
    """The example value itself, or a same-shaped value with hostile leaves, or anything at all."""
    options: list[st.SearchStrategy[Any]] = [st.just(example)]
    if isinstance(example, dict) and depth < 3:
        options.append(params_like(example, depth + 1))
    elif isinstance(example, list) and depth < 3:
        item = example[0] if example else None
        options.append(st.lists(_mutated(item, depth + 1), max_size=4))
    elif isinstance(example, str):
        options.append(hostile_text)
    elif isinstance(example, bool):
        options.append(st.booleans())
    elif isinstance(example, (int, float)):
        options.append(hostile_numbers)
    options.append(json_values)
    return st.one_of(options)


def params_like(example: dict[str, Any], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Params shaped like a method's documented example, each field kept, dropped, retyped or fuzzed."""
    fields = {key: st.one_of(st.just(_MISSING), _mutated(value, depth)) for key, value in example.items()}

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out = {k: v for k, v in ((k, draw(s)) for k, s in fields.items()) if v is not _MISSING}
        out.update(draw(st.dictionaries(hostile_text, json_values, max_size=2)))
        return out

    return build()


MARKER = "infrakit-fuzz-marker"
# Probe and drain hooks run this; it does nothing, at once.
_NOOP_COMMAND = ["true"]


def spawn_command(spawn_log: str) -> list[str]:
    """The command a fuzzed instance runs: it records its pid, then sleeps until destroyed."""
    return ["sh", "-c", f'echo $$ >> "{spawn_log}"; exec sleep 300', MARKER]


def defang(value: Any, *, spawn_log: str, parent: str = "") -> Any:
    """``value`` with every runnable command or probe target replaced by a harmless one.

    Keys whose string values would run a command, open a connection or read a URL when a
    fuzzed Properties document happens to be valid get fixed values instead, so the typed
    code paths stay exercised without side effects beyond a recorded, sleeping process.
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            runnable = isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
            if k == "Command" and runnable:
                out[k] = _NOOP_COMMAND if parent in ("Health", "Drain") else spawn_command(spawn_log)
            elif k == "HTTP" and runnable:
                out[k] = "http://127.0.0.1:9/healthz"
            elif k == "TCP" and runnable:
                out[k] = "127.0.0.1:9"
            elif k == "InitScriptTemplateURL" and runnable:
                out[k] = "str://fuzz"
            else:
                out[k] = defang(v, spawn_log=spawn_log, parent=k)
        return out
    if isinstance(value, list):
        return [defang(v, spawn_log=spawn_log, parent=parent) for v in value]
    return value


def encode(obj: Any, *, ascii_only: bool = True) -> bytes:
    """JSON bytes as a client would send them; lone surrogates pass through as invalid UTF-8 when not ASCII."""
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# Bodies no JSON parser should accept, or only just.
GARBAGE_BODIES = [
    b"", b" ", b"\n", b"{", b"}", b"[", b"]", b"null", b"true", b"0", b'"x"', b"[]", b"{}", b"[[]]", b"[1,2]",
    b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"\x00" * 64, b"{\"jsonrpc\":\"2.0\"", b"{'a': 1}",
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":NaN}',
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":Infinity}',
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":-Infinity,"params":{}}',
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":1' + b"0" * 5000 + b"}",
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":1,"id":2}',
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":"\\ud800"}',
    b'{"jsonrpc":"2.0","method":"\\udfff","id":1}',
    b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":"\xed\xa0\x80"}',
    b'[{"jsonrpc":"2.0","method":"Handshake.Hello","id":1},{"jsonrpc":"2.0","method":"Handshake.Hello"}]',
    b'[{"jsonrpc":"2.0","method":"Handshake.Hello"}]',
    b"[" * 5000 + b"]" * 5000,
    b"{\"a\":" * 5000 + b"1" + b"}" * 5000,
    b"[" * 65 + b"]" * 65,
]
