"""HTTP to a daemon's Unix socket byte by byte, for tests that send what no client would.

A file daemon in a short temp dir (a socket path must fit in 108 bytes, pytest's tmp_path can
exceed it) and a raw socket to it: the request bytes are the test's own, the answer is read by
its Content-Length, and a connection closed before an answer is an ``AssertionError``, never a
hang or an empty answer taken for one.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.runtime.conftest import Daemons


@contextlib.contextmanager
def file_daemon(prefix: str) -> Iterator[Daemons]:
    """One ``file`` daemon, serving, in a temp dir named ``prefix...``; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        daemons = Daemons(Path(d) / "home")
        try:
            daemons.start("file")
            yield daemons
        finally:
            daemons.stop_all()


def connect(path: Path, timeout: float = 30) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def request_bytes(body: bytes, *, length: int | None = None) -> bytes:
    """A POST of ``body``, declaring ``length`` (default: the body's) as its Content-Length."""
    return (b"POST / HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length)) + body


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP response (status, body) read by its Content-Length; EOF first is an AssertionError."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise AssertionError(f"connection closed before an answer (got {data[:200]!r})")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(v for k, _, v in (line.partition(b":") for line in lines[1:]) if k.strip().lower() == b"content-length"))
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise AssertionError("connection closed in the middle of an answer")
        body += chunk
    return int(lines[0].split()[1]), body


def call(sock: socket.socket, message: Any) -> tuple[int, Any]:
    """Send one JSON-RPC message (or batch); the status and the decoded answer (None for an empty body)."""
    sock.sendall(request_bytes(json.dumps(message, separators=(",", ":")).encode()))
    status, body = read_answer(sock)
    return status, json.loads(body) if body else None


def closed_by_peer(sock: socket.socket, timeout: float = 0.5) -> bool:
    """True once the daemon closed ``sock`` (EOF or reset), after reading whatever it sent."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return True
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
