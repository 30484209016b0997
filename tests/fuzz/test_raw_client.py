"""The fuzz suite's raw client reads an answer the daemon sent before closing, even mid-request.

A request line the daemon cannot parse (``BREW / HTTP/1.1``) is answered 400 by aiohttp's
parser, which then closes the connection at once: the request's framing cannot be trusted, so
its body is not read (RFC 9112, section 2.2). http.client sends a request's head and body in
two writes; when the daemon closes in between, which a busy machine makes likely, the body's
write fails with ``BrokenPipeError`` although the 400 is already waiting to be read. The
client must return that answer, not the broken pipe (the fuzz suite failed intermittently
on exactly this). Here the body is held back until the daemon has closed, so the case is
certain rather than a race.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fuzz.conftest import RawClient
from tests.runtime import rawhttp
from tests.runtime.conftest import Daemons
from tests.runtime.procs import served_connections

HELLO = b'{"jsonrpc":"2.0","method":"Handshake.Hello","params":{},"id":1}'


@pytest.fixture
def file_daemon() -> Iterator[Daemons]:
    with rawhttp.file_daemon("ikrawclient-") as daemons:
        yield daemons


class BodyAfterClose:
    """A request body handed to http.client only once the daemon closed the connection it goes on.

    http.client reads a file-like body until ``b""``; each new connection gets the body again
    (the client retries on a fresh one), and each time only after the daemon let go of it.
    """

    def __init__(self, client: RawClient, daemons: Daemons, data: bytes) -> None:
        self.client = client
        self.daemons = daemons
        self.data = data
        self._sent_on: object = None

    def read(self, size: int = -1) -> bytes:
        assert self.client._conn is not None
        sock = self.client._conn.sock
        if sock is self._sent_on:
            return b""
        pid = self.daemons.procs["file"].pid
        deadline = time.monotonic() + 30
        while served_connections(pid, self.daemons.plugins_dir / "file") != 0:
            assert time.monotonic() < deadline, "the daemon did not close a connection whose request line it refused"
            time.sleep(0.05)
        self._sent_on = sock
        return self.data


def test_an_answer_sent_before_the_daemon_closed_is_read_though_the_body_could_not_be_sent(file_daemon: Daemons) -> None:
    client = RawClient(file_daemon.plugins_dir / "file")
    try:
        body = BodyAfterClose(client, file_daemon, HELLO)
        status, payload = client.request(body, method="BREW",  # type: ignore[arg-type]
                                         headers={"Content-Type": "application/json", "Content-Length": str(len(HELLO))})
        assert status == 400, (status, payload[:200])
        assert b"BREW" in payload, payload[:200]
        # The client is usable afterwards, on a fresh connection.
        assert "Instance/0.6.1" in client.call("Handshake.Hello")["result"]["Objects"]
    finally:
        client.close()
