"""Processes a test left behind, found by a path only that test uses (its temp dir), never by name.

A process belongs to a test when its argv or its environment mentions the test's directory: the
daemons it started (``INFRAKIT_HOME``, ``--config``, a venv under the prefix), whatever they
started in turn (instances inherit the daemon's environment and the process plugin's marker
variables), a keeper and the supervisor it restarts. Other helpers' tests share the machine, so
nothing is ever matched by program name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _ancestors() -> set[int]:
    """This process and its ancestors: pytest's own argv may name the directory (``--basetemp``)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes_under(path: str | Path) -> dict[int, str]:
    """Live (non-zombie) processes whose argv or environment mentions ``path``: pid → command line."""
    # The path whole, never a prefix of another: /tmp/pytest-of-root/pytest-38 is not /tmp/…/pytest-386.
    needles = [str(path).rstrip("/").encode() + end for end in (b"/", b"\0")]
    mine = _ancestors()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            mentions = any(n in cmdline for n in needles)
            if not mentions:
                environ = (entry / "environ").read_bytes()
                mentions = any(n in environ for n in needles)
        except OSError:  # gone, or a kernel thread
            continue
        if state != "Z" and mentions:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def kill_under(path: str | Path, timeout: float = 30.0) -> dict[int, str]:
    """SIGKILL every process that mentions ``path``; return what was found (empty: nothing was left).

    Everything found is stopped (SIGSTOP) first, again on fresh snapshots until no new process
    appears, so a keeper cannot restart a supervisor, a supervisor a daemon, nor a shell fork a
    child between the snapshot and the kill; then all of them get SIGKILL at once.
    """
    found: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = {pid: cmd for pid, cmd in processes_under(path).items() if pid not in found}
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        found.update(fresh)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    while time.monotonic() < deadline:
        left = processes_under(path)
        if not left:
            return found
        for pid in left:  # started in the moment between the last snapshot and the kills
            found.setdefault(pid, left[pid])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise AssertionError(f"processes under {path} still run {timeout}s after SIGKILL: {processes_under(path)}")


def describe(found: dict[int, str]) -> str:
    return "; ".join(f"{pid} {cmd[:160]}" for pid, cmd in sorted(found.items()))
