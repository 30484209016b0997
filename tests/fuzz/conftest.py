"""Fuzz-suite plumbing: reproducible hypothesis settings, case counters, a raw HTTP client.

Guarantee: under ``make test`` every fuzz test draws the same examples on every run
(``derandomize``, no example database), so a failure reproduces; ``INFRAKIT_FUZZ_EXAMPLES``
raises the per-test example count for ``make chaos`` (and then draws fresh examples).
The number of cases each test ran is written to ``tests/output/fuzz-cases.json``.
Limit: the raw client speaks HTTP/1.1 over a Unix socket only, one request at a time.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from infrakit_runtime.rpc.client import UnixHTTPConnection
from infrakit_runtime.rpc.dispatch import MAX_NESTING

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output" / "fuzz-cases.json"
_RAISED = int(os.environ.get("INFRAKIT_FUZZ_EXAMPLES", "0") or 0)


def examples(default: int) -> int:
    """The example count for one test: ``default`` under ``make test``, the env's count when raised."""
    return max(default, _RAISED)


settings.register_profile(
    "fuzz",
    derandomize=_RAISED == 0,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much],
)
settings.load_profile("fuzz")

# test name -> {"cases": n, ...other counters}
CASES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def count(test: str, what: str = "cases", n: int = 1) -> None:
    CASES[test][what] += n


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not CASES:
        return
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "examples_per_test": "default" if not _RAISED else _RAISED,
        "derandomized": _RAISED == 0,
        "total_cases": sum(c["cases"] for c in CASES.values()),
        "tests": {name: dict(sorted(c.items())) for name, c in sorted(CASES.items())},
    }
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")


# --- a raw client --------------------------------------------------------------------------

# No answer within this long means the daemon hangs (every fuzzed call is local and cheap).
ANSWER_TIMEOUT = 20.0


class RawClient:
    """Sends whatever bytes it is given (no JSON-RPC framing of its own) and returns the raw answer."""

    def __init__(self, path: Path, timeout: float = ANSWER_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None

    def request(self, body: bytes | None, *, method: str = "POST", target: str = "/",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """``(status, body)``; raises ``TimeoutError`` if the daemon does not answer in time."""
        hdrs = {"Content-Type": "application/json"} if headers is None else headers
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = UnixHTTPConnection(str(self.path), self.timeout)
            try:
                try:
                    self._conn.request(method, target, body=body, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon may answer and close before the body is sent (aiohttp does for a
                    # request line it cannot parse): its answer is still there to read. If there is
                    # none (a kept-alive connection closed before the request), getresponse raises
                    # RemoteDisconnected and the request is retried below.
                    if self._conn.sock is None:
                        raise
                resp = self._conn.getresponse()
                payload = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, payload
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server may close a kept-alive connection between requests: retry once, fresh.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """A well-formed call; returns the decoded JSON-RPC answer object."""
        status, payload = self.request(json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {},
                                                   "id": 1}).encode())
        assert status == 200, payload
        return json.loads(payload)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


# --- checks --------------------------------------------------------------------------------


# The dispatcher's catch-all for an unexpected exception: "<Method> failed: <ExceptionType>: ...".
CRASHED = re.compile(r"^[A-Z][A-Za-z]*\.[A-Za-z]+ failed: [A-Za-z_][A-Za-z0-9_.]*: ")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(payload: bytes) -> Any:
    """Decode as RFC 8259 JSON: UTF-8, no NaN/Infinity (Python's json accepts those by default)."""
    return json.loads(payload.decode("utf-8"), parse_constant=_no_constants)


def is_notification(message: Any) -> bool:
    return isinstance(message, dict) and "id" not in message


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def check_response(obj: Any, request: Any = None) -> None:
    """``obj`` is one JSON-RPC 2.0 response object (answering ``request`` when given)."""
    assert isinstance(obj, dict), f"response is not an object: {obj!r}"
    assert obj.get("jsonrpc") == "2.0", obj
    assert set(obj) <= {"jsonrpc", "result", "error", "id"}, obj
    assert ("result" in obj) != ("error" in obj), obj
    assert "id" in obj, obj
    if "error" in obj:
        error = obj["error"]
        assert isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("message"), str), obj
        # A Python exception name in the message means a handler crashed and the catch-all answered.
        assert not CRASHED.match(error["message"]), f"a handler crashed: {error['message'][:300]}"
    if isinstance(request, dict) and _valid_id(request.get("id")) and "id" in request:
        expected = request["id"]
        assert obj["id"] == expected or (isinstance(expected, float) and expected != expected), (obj, expected)


def check_answer(status: int, payload: bytes, request: Any) -> list[dict[str, Any]]:
    """The HTTP answer to a POSTed body is JSON-RPC (or empty for notifications); returns the responses."""
    assert status == 200, (status, payload[:200])
    if depth(request) > MAX_NESTING:
        decoded = strict_json(payload)
        assert isinstance(decoded, dict) and decoded["error"]["code"] == -32600 and decoded["id"] is None, decoded
        return [decoded]
    if is_notification(request):
        assert payload.strip() == b"", f"a notification got an answer: {payload[:200]!r}"
        return []
    if isinstance(request, list) and request and all(is_notification(m) for m in request):
        assert payload.strip() == b"", payload[:200]
        return []
    assert payload.strip(), f"no answer to {str(request)[:200]}"
    decoded = strict_json(payload)
    if isinstance(request, list) and request:
        assert isinstance(decoded, list), decoded
        expected = [m for m in request if not is_notification(m)]
        assert len(decoded) == len(expected), (len(decoded), len(expected))
        for obj in decoded:
            check_response(obj)
        return decoded
    check_response(decoded, request)
    return [decoded]


def depth(value: Any) -> int:
    """Nesting depth of containers (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def processes_with(marker: str) -> set[int]:
    """Pids of live processes whose command line holds ``marker``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.add(int(entry.name))
    return found


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
