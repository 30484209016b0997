"""Oversized bodies are refused before they are read; chunked ones once they pass the limit."""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit_runtime.rpc.server import MAX_BODY_BYTES
from tests.runtime.conftest import Daemons


@pytest.fixture
def file_daemon() -> Iterator[Daemons]:
    with tempfile.TemporaryDirectory(prefix="iklim-") as d:
        daemons = Daemons(Path(d) / "home")
        try:
            daemons.start("file")
            yield daemons
        finally:
            daemons.stop_all()


def _answer(sock: socket.socket) -> dict[str, object]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


def test_a_declared_length_past_the_limit_is_answered_without_sending_the_body(file_daemon: Daemons) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)  # a server waiting for the body would time this out
        sock.connect(str(file_daemon.plugins_dir / "file"))
        sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        answer = _answer(sock)
    assert answer["error"]["code"] == -32600 and "exceeds the limit" in answer["error"]["message"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(file_daemon: Daemons) -> None:
    chunk = b"a" * 65536
    sent = 0
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(file_daemon.plugins_dir / "file"))
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            # Up to twice the limit: the server must answer (and may stop reading) long before the end.
            while sent < 2 * MAX_BODY_BYTES:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _answer(sock)
    assert answer["error"]["code"] == -32600 and "exceeds the limit" in answer["error"]["message"]
    client = file_daemon.client("file")
    try:
        assert "Instance/0.6.1" in client.hello()
    finally:
        client.close()
