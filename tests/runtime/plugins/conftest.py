"""Fixtures for the process plugin's tests: a daemon in either tracking mode, and a reaper that leaves nothing behind.

The process plugin tracks an instance's processes with a cgroup of its own where cgroup v2
is writable, and otherwise by an environment marker plus the daemon as child subreaper. The
``mode`` fixture runs a test both ways (``cgroup`` is skipped where cgroup v2 is not writable).
Every test ends by killing whatever instance process and helper it left, removing the
cgroups its instances had, and fails if an instance process was left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.plugins import process_helpers as ph


class Reaper:
    """Kills at teardown every instance process of this test's INFRAKIT_HOME, registered helpers and cgroups."""

    def __init__(self, home: Path) -> None:
        self.marker = f"INFRAKIT_HOME={home}".encode()
        self.helpers: list[subprocess.Popen] = []
        self.cgroups: set[Path] = set()

    def spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """A process that is not an instance (the tests' bystanders), killed at teardown."""
        proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        self.helpers.append(proc)
        return proc

    def kill_all(self) -> list[int]:
        """SIGKILL every leftover; return the instance PIDs that were still running."""
        leftovers = ph.instance_processes(self.marker)
        for pid in leftovers:
            cgroup = ph.cgroup_dir(pid)
            if cgroup is not None and cgroup.name.startswith("process-"):
                self.cgroups.add(cgroup)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in leftovers:  # children of this process when the plugin ran in-process
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for proc in self.helpers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for cgroup in self.cgroups:
            ph.remove_cgroup(cgroup)
        return leftovers


@pytest.fixture
def reaper(daemons) -> Iterator[Reaper]:
    """Kill every instance process a test left; tests that meant to leave none must have left none."""
    r = Reaper(daemons.home)
    yield r
    leftovers = r.kill_all()
    assert not leftovers, f"instance processes still running at the end of the test (now killed): {leftovers}"


@pytest.fixture(params=["cgroup", "fallback"])
def mode(request) -> str:
    """How the daemon tracks instance trees: its own cgroup per instance, or marker + subreaper."""
    if request.param == "cgroup" and not ph.cgroup_writable():
        pytest.skip("cgroup v2 is not mounted writable here; the fallback mode covers this machine")
    return request.param


@pytest.fixture
def start_process_daemon(daemons, reaper, mode):
    """Start (or restart) the process plugin daemon in ``mode``; returns a call helper."""
    clients: list[Any] = []

    def start(*extra: str) -> ph.Call:
        args = ["-o", "stop_timeout=1s", *(["-o", "cgroup=off"] if mode == "fallback" else []), *extra]
        daemons.start("process", *args)
        call = ph.Call(daemons.client("process"))
        clients.append(call.client)
        return call

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def marker() -> str:
    """An argument only this test's processes carry (find them with ``procs.marker_pids``)."""
    return f"--test-marker={uuid.uuid4().hex}"
