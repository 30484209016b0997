"""One client cannot starve a daemon: batch caps, slow clients cut, a connection limit, bounded memory.

Each test drives a real daemon process over its real Unix socket with raw HTTP, as a hostile
local user would (issue 12, item 4), and asserts what the daemon did: the answer it gave, the
descriptors it holds (``/proc/<pid>/fd``) and its resident memory (``/proc/<pid>/status``).
Waits are conditions polled against a deadline several times the daemon's own timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.dispatch import BATCH_CONCURRENCY, MAX_BATCH, MAX_BATCH_ANSWER_BYTES
from infrakit_runtime.rpc.errors import UnreachableError
from infrakit_runtime.rpc.instance import InstanceClient
from infrakit_runtime.rpc.limits import BODY_TIMEOUT, HEADER_TIMEOUT, connection_limit
from tests.runtime import rawhttp
from tests.runtime.conftest import Daemons
from tests.runtime.procs import served_connections

HELLO = {"jsonrpc": "2.0", "method": "Handshake.Hello", "params": {}, "id": 1}
# aiohttp drains an unread body for up to 10 s before it closes a connection it answered early.
LINGER = 10.0


@pytest.fixture
def file_daemon() -> Iterator[Daemons]:
    with rawhttp.file_daemon("ikflood-") as daemons:
        yield daemons


def served(daemons: Daemons) -> int:
    """Connections the file daemon holds open on its socket (descriptors it spends on clients)."""
    return served_connections(daemons.procs["file"].pid, daemons.plugins_dir / "file")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what} (last: {last!r})")


# -- batches -------------------------------------------------------------------------------


def test_a_batch_over_the_limit_is_refused_whole_with_an_error_naming_the_limit(file_daemon: Daemons) -> None:
    batch = [{**HELLO, "id": i} for i in range(MAX_BATCH + 1)]
    with rawhttp.connect(file_daemon.plugins_dir / "file") as sock:
        status, answer = rawhttp.call(sock, batch)
    assert status == 200
    assert isinstance(answer, dict), "an oversized batch gets one error, not an array of answers"
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert f"at most {MAX_BATCH} calls" in answer["error"]["message"], answer["error"]["message"]


def test_a_batch_at_the_limit_is_answered_in_full_and_in_order(file_daemon: Daemons) -> None:
    batch = [{**HELLO, "id": i} for i in range(MAX_BATCH)]
    batch[7] = {"jsonrpc": "2.0", "method": "Handshake.Hello", "params": {}}  # a notification: no answer
    with rawhttp.connect(file_daemon.plugins_dir / "file") as sock:
        status, answers = rawhttp.call(sock, batch)
    assert status == 200
    assert [a["id"] for a in answers] == [i for i in range(MAX_BATCH) if i != 7]
    assert all("Instance/0.6.1" in a["result"]["Objects"] for a in answers)


def test_a_batch_whose_answers_pass_the_cap_answers_its_remaining_calls_with_not_run(file_daemon: Daemons) -> None:
    """1000 DescribeInstances of ~11 KiB each would answer 11 MiB: the calls past 8 MiB are not run."""
    client = file_daemon.client("file")
    pad = "x" * 1024
    for i in range(10):
        client.call("Instance.Provision", {"Type": "", "Spec": {
            "Properties": {"n": i}, "Tags": {"infrakit.group": "big", "pad0": pad}}})
    client.close()
    describe = {"jsonrpc": "2.0", "method": "Instance.DescribeInstances",
                "params": {"Type": "", "Tags": {"infrakit.group": "big"}, "Properties": True}}
    one = len(json.dumps({"result": {"Descriptions": [{"Tags": {"pad0": pad}}] * 10}}))
    with rawhttp.connect(file_daemon.plugins_dir / "file", timeout=120) as sock:
        status, answers = rawhttp.call(sock, [{**describe, "id": i} for i in range(MAX_BATCH)])
    assert status == 200 and [a["id"] for a in answers] == list(range(MAX_BATCH))
    ran = [a for a in answers if "result" in a]
    skipped = [a for a in answers if "error" in a]
    assert ran and skipped and len(ran) + len(skipped) == MAX_BATCH
    assert all(len(a["result"]["Descriptions"]) == 10 for a in ran)
    assert all(a["error"]["code"] == -32000 and a["error"]["message"].startswith("not run: the answers to this batch passed")
               for a in skipped), skipped[0]
    assert len(ran) * one <= MAX_BATCH_ANSWER_BYTES + (BATCH_CONCURRENCY + 1) * 2 * one
    assert max(a["id"] for a in ran) < min(a["id"] for a in skipped) + BATCH_CONCURRENCY


def test_the_issues_giant_batch_is_refused_without_growing_the_daemon(file_daemon: Daemons) -> None:
    """131k Handshake.Hello just under the body limit: before, 176 MiB RSS and 10-18 s of stalled calls."""
    pid = file_daemon.procs["file"].pid
    one = b'{"jsonrpc":"2.0","method":"Handshake.Hello","id":1}'
    body = b"[" + b",".join([one] * 131_000) + b"]"
    before = rss_mib(pid)
    with rawhttp.connect(file_daemon.plugins_dir / "file", timeout=120) as sock:
        sock.sendall(rawhttp.request_bytes(body))
        status, answer = rawhttp.read_answer(sock)
    grown = rss_mib(pid) - before
    print(f"giant batch: answer of {len(answer)} bytes, RSS grew {grown:.1f} MiB")
    assert status == 200 and json.loads(answer)["error"]["code"] == -32600
    assert grown < 24, f"the daemon grew by {grown:.0f} MiB for one refused request"


def test_large_bodies_from_many_clients_at_once_are_held_within_a_budget(file_daemon: Daemons) -> None:
    """100 clients each sending 7.7 MB bodies as fast as answered: the daemon reads a few at a time."""
    path = file_daemon.plugins_dir / "file"
    pid = file_daemon.procs["file"].pid
    numbers = b",".join(b"%d" % i for i in range(1_100_000))
    body = b'{"jsonrpc":"2.0","method":"Handshake.Hello","params":{"x":[' + numbers + b']},"id":1}'
    stop = threading.Event()
    answered = [0]

    def sender() -> None:
        while not stop.is_set():
            try:
                with rawhttp.connect(path, timeout=60) as s:
                    s.sendall(rawhttp.request_bytes(body))
                    rawhttp.read_answer(s)
                answered[0] += 1
            except (OSError, AssertionError):
                pass  # a 503 "busy", or the daemon closing on a waiting client: both are its right

    before = rss_mib(pid)
    senders = [threading.Thread(target=sender, daemon=True) for _ in range(100)]
    for t in senders:
        t.start()
    peak = before
    ordinary = 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            peak = max(peak, rss_mib(pid))
            with rawhttp.connect(path, timeout=60) as s:
                ordinary += rawhttp.call(s, HELLO)[0] == 200
            time.sleep(0.1)
    finally:
        stop.set()
        for t in senders:
            t.join(90)
    print(f"large bodies: {answered[0]} answered, {ordinary} ordinary calls, RSS {before:.0f} -> peak {peak:.0f} MiB")
    assert answered[0] > 0 and ordinary > 0
    assert peak - before < 250, f"the daemon grew by {peak - before:.0f} MiB holding large bodies"


# -- slow clients --------------------------------------------------------------------------


def test_slow_clients_are_cut_and_their_descriptors_returned_while_kept_alive_ones_stay(file_daemon: Daemons) -> None:
    """300 connections that never finish a request (silent, a partial head, a partial body) are closed."""
    path = file_daemon.plugins_dir / "file"
    kept = rawhttp.connect(path)
    assert rawhttp.call(kept, HELLO)[0] == 200  # an ordinary kept-alive connection, idle from here on
    # ... whose last request was answered (405) before its body came: the late body is not a slow head.
    hello = json.dumps(HELLO).encode()
    kept.sendall(b"GET / HTTP/1.1\r\nHost: plugin\r\nContent-Length: %d\r\n\r\n" % len(hello))
    assert rawhttp.read_answer(kept)[0] == 405
    kept.sendall(hello)
    wait_until(lambda: served(file_daemon) == 1, 10, "the daemon serving only the kept-alive connection")
    silent = [rawhttp.connect(path) for _ in range(100)]
    partial_heads = [rawhttp.connect(path) for _ in range(100)]
    partial_bodies = [rawhttp.connect(path) for _ in range(100)]
    try:
        for s in partial_heads:
            s.sendall(b"POST / HTTP/1.1\r\nHost: plugin\r\nContent-Type: applic")
        for s in partial_bodies:
            s.sendall(rawhttp.request_bytes(b'{"jsonrpc":"2.0","method":', length=1000))
        wait_until(lambda: served(file_daemon) == 301, 30, "the daemon accepting all 300 connections")

        cut_by = HEADER_TIMEOUT + BODY_TIMEOUT + LINGER + 30
        wait_until(lambda: served(file_daemon) == 1, cut_by,
                   "the daemon holding only the kept-alive connection once the slow clients were cut")
        for s in silent + partial_heads:
            assert rawhttp.closed_by_peer(s), "a slow head was not closed"
        s = partial_bodies[0]
        s.settimeout(5)
        status, body = rawhttp.read_answer(s)
        error = json.loads(body)["error"]
        assert status == 200 and error["code"] == -32600 and f"within {BODY_TIMEOUT:g}s" in error["message"], error

        # The idle kept-alive connection was not mistaken for a slow one.
        assert rawhttp.call(kept, HELLO)[0] == 200
    finally:
        for s in [kept, *silent, *partial_heads, *partial_bodies]:
            s.close()


# -- the connection limit -------------------------------------------------------------------


def long_polls(path: Path, n: int) -> list[socket.socket]:
    """``n`` connections each waiting in ``Instance.WaitChange`` for a minute (a request in progress)."""
    with rawhttp.connect(path) as s:
        _, answer = rawhttp.call(s, {"jsonrpc": "2.0", "method": "Instance.WaitChange",
                             "params": {"Type": "", "Revision": 0, "Timeout": 0}, "id": 1})
    poll = json.dumps({"jsonrpc": "2.0", "method": "Instance.WaitChange",
                       "params": {"Type": "", "Revision": answer["result"]["Revision"], "Timeout": 60}, "id": 1}).encode()
    out = []
    for _ in range(n):
        s = rawhttp.connect(path)
        s.sendall(rawhttp.request_bytes(poll))
        out.append(s)
    return out


def test_at_the_connection_limit_the_longest_idle_connection_makes_room(file_daemon: Daemons) -> None:
    path = file_daemon.plugins_dir / "file"
    limit = connection_limit()
    idle = []
    try:
        for _ in range(limit):
            s = rawhttp.connect(path)
            assert rawhttp.call(s, HELLO)[0] == 200
            idle.append(s)
        newcomer = rawhttp.connect(path)
        idle.append(newcomer)
        assert rawhttp.call(newcomer, HELLO)[0] == 200, "a new connection was refused although others were only idle"
        assert rawhttp.closed_by_peer(idle[0], timeout=5), "the longest idle connection was not closed to make room"
        assert not rawhttp.closed_by_peer(idle[1], timeout=0.2)
        assert rawhttp.call(idle[-2], HELLO)[0] == 200
    finally:
        for s in idle:
            s.close()


def test_past_the_connection_limit_a_new_connection_is_answered_503_naming_the_limit(file_daemon: Daemons) -> None:
    path = file_daemon.plugins_dir / "file"
    limit = connection_limit()
    wait_until(lambda: served(file_daemon) == 0, 10, "the daemon serving no connection")
    busy = []
    try:
        busy += long_polls(path, limit)  # each connection in the middle of a request for a minute
        wait_until(lambda: served(file_daemon) == limit, 30, f"the daemon accepting {limit} connections")
        with rawhttp.connect(path) as over:
            status, body = rawhttp.call(over, HELLO)
            assert status == 503, (status, body)
            assert f"limit of {limit} connections" in body["error"]["message"], body
            assert rawhttp.closed_by_peer(over, timeout=5), "a refused connection was left open"
        # The daemon half-closed the refused connection and closes it fully on our EOF (or after
        # lingering a second): the count comes back to the limit, the busy connections all kept.
        wait_until(lambda: served(file_daemon) == limit, 10, f"the daemon holding its {limit} busy connections only")

        for s in busy:
            s.close()
        busy.clear()

        def answered() -> bool:
            with rawhttp.connect(path) as s:
                return rawhttp.call(s, HELLO)[0] == 200

        wait_until(answered, 30, "a new connection served once the busy ones went away")
    finally:
        for s in busy:
            s.close()


def test_our_clients_report_a_daemon_at_its_limit_as_unreachable_not_as_a_refusal(file_daemon: Daemons) -> None:
    """A 503 is "busy, retry": a plugin's Validate must not turn into "your spec is invalid"."""
    path = file_daemon.plugins_dir / "file"
    limit = connection_limit()
    wait_until(lambda: served(file_daemon) == 0, 10, "the daemon serving no connection")
    busy = []
    try:
        busy += long_polls(path, limit)
        wait_until(lambda: served(file_daemon) == limit, 30, f"the daemon accepting {limit} connections")
        client = file_daemon.client("file")
        with contextlib.closing(client), pytest.raises(UnreachableError, match=f"limit of {limit} connections"):
            client.hello()

        async def validate() -> None:
            remote = InstanceClient(Client(Address(unix_path=path), name="file"))
            try:
                await remote.validate({})
            finally:
                await remote.client.close()

        with pytest.raises(UnreachableError, match=f"busy and did not take Instance.Validate: .*limit of {limit}"):
            asyncio.run(validate())
    finally:
        for s in busy:
            s.close()
