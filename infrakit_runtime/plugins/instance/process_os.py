"""Linux process facts for the process plugin: a (pid, start time) pair names one process, for good.

A PID alone is recycled by the kernel; the start time in ``/proc/<pid>/stat``
(field 22, clock ticks since boot) is not, so a process is "ours" only while both
match. Limits: Linux only (``/proc``), start times are compared within one boot
(a reboot kills every instance anyway), and zombies count as dead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import socket
from pathlib import Path
from typing import Any

PROC = Path("/proc")
# A zombie (Z) or dead (X, x) process does no work: for us it is gone.
DEAD_STATES = frozenset("ZXx")


@dataclasses.dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/<pid>/stat`` the plugin needs."""

    pid: int
    state: str
    pgrp: int
    start_time: int

    @property
    def running(self) -> bool:
        return self.state not in DEAD_STATES


def read_stat(pid: int) -> Stat | None:
    """``/proc/<pid>/stat``, or None when there is no such process (or it is unreadable)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # comm (field 2) is in parentheses and may itself contain spaces and ')'.
    end = text.rfind(")")
    if end < 0:
        return None
    fields = text[end + 2:].split()  # fields[0] is field 3 (state)
    try:
        return Stat(pid=pid, state=fields[0], pgrp=int(fields[2]), start_time=int(fields[19]))
    except (IndexError, ValueError):
        return None


def is_running(pid: int, start_time: int) -> bool:
    """True when ``pid`` is the process that started at ``start_time`` and is not a zombie."""
    stat = read_stat(pid)
    return stat is not None and stat.start_time == start_time and stat.running


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def reap(pid: int) -> bool:
    """Collect ``pid`` if it is an exited child of this process; True when it was reaped."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def find_by_environ(name: str, value: str) -> list[Stat]:
    """Process group leaders whose initial environment holds ``name=value``.

    Used only to re-adopt an instance whose daemon died between starting it and
    recording its pid; the variable is the instance ID, so a match is ours.
    """
    needle = f"{name}={value}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(PROC):
            if not entry.name.isdigit():
                continue
            try:
                environ = Path(entry.path, "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                stat = read_stat(int(entry.name))
                if stat is not None and stat.running and stat.pgrp == stat.pid:
                    found.append(stat)
    return found


def free_port(avoid: set[int]) -> int:
    """A TCP port on 127.0.0.1 nobody listens on now and no other instance holds.

    The port is free when returned, not reserved: a third party could take it
    before the instance binds it (the instance then fails and is replaced).
    """
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise OSError("no free TCP port on 127.0.0.1 after 64 tries")


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None when the kernel (or Python) cannot make one."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None


def raise_fd_limit() -> None:
    """Lift the soft descriptor limit toward the hard one: each live instance holds a pidfd.

    Instances inherit the raised soft limit (it is still within the hard limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
