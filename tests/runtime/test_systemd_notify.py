"""The sd_notify contract systemd's Type=notify and WatchdogSec rely on, against a real notify socket.

systemd cannot run here (it is not PID 1 and must not be booted in a namespace), so the test
plays systemd's part: it binds the datagram socket systemd would, and checks that a daemon says
READY=1 once it serves, pings WATCHDOG=1 well inside WATCHDOG_USEC while its loop is alive,
stops pinging when it hangs (SIGSTOP: systemd would then kill and restart it), and says
STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    yield path, sock
    sock.close()


def messages(sock: socket.socket, seconds: float) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


def test_a_daemon_notifies_ready_pings_the_watchdog_while_alive_and_not_while_hung(daemons, notify_socket):
    path, sock = notify_socket
    proc = daemons.start("file", env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
    alive = messages(sock, 1.0)
    assert "READY=1" in alive
    assert alive.count("WATCHDOG=1") >= 5, alive  # every 0.1 s: half the 0.2 s watchdog
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        messages(sock, 0.2)  # what was already in flight
        assert "WATCHDOG=1" not in messages(sock, 1.0), "a hung daemon must stop feeding the watchdog"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert "WATCHDOG=1" in messages(sock, 1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "STOPPING=1" in messages(sock, 0.5)


def test_the_watchdog_is_left_alone_when_it_watches_another_process(daemons, notify_socket):
    path, sock = notify_socket
    daemons.start("file", env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    seen = messages(sock, 1.0)
    assert "READY=1" in seen and "WATCHDOG=1" not in seen
