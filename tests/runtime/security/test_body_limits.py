"""Oversized bodies are refused before they are read; chunked ones once they pass the limit."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from infrakit_runtime.rpc.server import MAX_BODY_BYTES
from tests.runtime import rawhttp
from tests.runtime.conftest import Daemons


@pytest.fixture
def file_daemon() -> Iterator[Daemons]:
    with rawhttp.file_daemon("iklim-") as daemons:
        yield daemons


def _answer(sock: socket.socket) -> dict[str, object]:
    status, body = rawhttp.read_answer(sock)
    assert status == 200, (status, body[:200])
    return json.loads(body)


def test_a_declared_length_past_the_limit_is_answered_without_sending_the_body(file_daemon: Daemons) -> None:
    # A server waiting for the body would time this out.
    with rawhttp.connect(file_daemon.plugins_dir / "file", timeout=10) as sock:
        sock.sendall(rawhttp.request_bytes(b"", length=MAX_BODY_BYTES + 1))
        answer = _answer(sock)
    assert answer["error"]["code"] == -32600 and "exceeds the limit" in answer["error"]["message"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(file_daemon: Daemons) -> None:
    chunk = b"a" * 65536
    sent = 0
    with rawhttp.connect(file_daemon.plugins_dir / "file", timeout=10) as sock:
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
