"""Linux process facts for the process plugin: a (pid, start time) pair names one process, for good.

A PID alone is recycled by the kernel; the start time in ``/proc/<pid>/stat``
(field 22, clock ticks since boot) is not, so a process is "ours" only while both
match, and ``signal_process`` signals through a pidfd opened *before* the start time
is checked, so a recycled PID is never signalled. Limits: Linux only (``/proc``),
start times are compared within one boot (a reboot kills every instance anyway), and
zombies count as dead. Without pidfds (Linux < 5.3) the check and the kill are two
steps, and a PID recycled in between (microseconds) could be signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime
import errno
import os
import resource
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

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
    ppid: int = 0
    sid: int = 0

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
        return Stat(pid=pid, state=fields[0], ppid=int(fields[1]), pgrp=int(fields[2]), sid=int(fields[3]),
                    start_time=int(fields[19]))
    except (IndexError, ValueError):
        return None


def all_stats() -> list[Stat]:
    """``stat`` of every process on the host (those that vanish while listed are left out)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(PROC):
            if entry.name.isdigit():
                stat = read_stat(int(entry.name))
                if stat is not None:
                    found.append(stat)
    return found


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


def read_environ(pid: int) -> bytes | None:
    """The environment ``pid`` was started with (``/proc/<pid>/environ``), or None when unreadable."""
    try:
        return (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None


def real_and_effective_uid(pid: int) -> tuple[int, int] | None:
    """``pid``'s real and effective uid (from ``status``; the owner of ``/proc/<pid>`` can be faked)."""
    try:
        with open(PROC / str(pid) / "status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    fields = line.split()
                    return int(fields[1]), int(fields[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def signal_if(pid: int, still_ours: Callable[[], bool], sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if ``still_ours()`` holds once a pidfd names it.

    The pidfd is opened first and the check made after: if the PID was recycled before the
    open, the check sees the newcomer and fails; after it, the pidfd still names the old
    process (and the signal goes nowhere). True when the signal was delivered.
    """
    try:
        fd = open_pidfd(pid)
    except ProcessLookupError:
        return False
    try:
        if not still_ours():
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd is not None:
            os.close(fd)


def signal_process(pid: int, start_time: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start_time``."""
    def same() -> bool:
        stat = read_stat(pid)
        return stat is not None and stat.start_time == start_time

    return signal_if(pid, same, sig)


_PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper(on: bool) -> bool:
    """Make orphaned descendants of this process its children instead of init's; True when the kernel agreed.

    Through ``prctl(PR_SET_CHILD_SUBREAPER)`` (Linux 3.4+). Holds only while this process
    lives: when it dies its descendants go to init, as they would without it.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def zombie_children(exclude: set[int]) -> list[int]:
    """Exited, unreaped children of this process, but for the PIDs in ``exclude``."""
    me = os.getpid()
    return [s.pid for s in all_stats() if s.ppid == me and not s.running and s.pid not in exclude]


def started_at(start_time: int) -> str:
    """RFC 3339 wall-clock time of a process start time (clock ticks since boot)."""
    try:
        boot = next(int(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        boot = 0
    when = boot + start_time / os.sysconf("SC_CLK_TCK")
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CAP_SETGID, _CAP_SETUID = 6, 7


def can_switch_user() -> bool:
    """Whether this process may start processes as another user (root, or CAP_SETUID and CAP_SETGID)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in (PROC / "self" / "status").read_text().splitlines():
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return bool(caps >> _CAP_SETUID & 1 and caps >> _CAP_SETGID & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who an instance runs as: uid, primary gid and supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def child_setup(*, cgroup_procs_fd: int | None, identity: Identity | None) -> Callable[[], None] | None:
    """What the child does between fork and exec: enter its cgroup (while still root), then drop to its user.

    Entering before exec means nothing the instance runs can start outside the cgroup.
    The daemon has threads, so this runs nothing that takes a lock (no logging, no
    imports): system calls on values prepared by the parent. A failure is written to the
    child's stderr (the instance log) and aborts the start.
    """
    if cgroup_procs_fd is None and identity is None:
        return None

    def setup() -> None:
        step = "enter its cgroup"
        try:
            if cgroup_procs_fd is not None:
                os.write(cgroup_procs_fd, b"0")
            if identity is not None:
                step = "switch to its user"
                os.setgroups(list(identity.groups))
                os.setresgid(identity.gid, identity.gid, identity.gid)
                os.setresuid(identity.uid, identity.uid, identity.uid)
        except OSError as e:
            os.write(2, b"infrakit: the instance could not " + step.encode() + b": "
                     + (e.strerror or errno.errorcode.get(e.errno or 0, "error")).encode() + b"\n")
            raise

    return setup


def spawn(argv: list[str], env: dict[str, str], cwd: str | None, log_path: Path, *,
          cgroup_fd: int | None = None, identity: Identity | None = None) -> int:
    """Start a process in its own session (and cgroup, as its user), output appended to ``log_path``; its pid.

    Blocking (call it from a thread). The caller reaps the child itself (after killing
    leftovers of its group, which must happen while the zombie still holds the group ID).
    """
    setup = child_setup(cgroup_procs_fd=cgroup_fd, identity=identity)
    with open(log_path, "ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
            start_new_session=True, close_fds=True, preexec_fn=setup,  # safe: see child_setup
        )
    child.returncode = 0  # so that Popen never waits for it nor warns about it
    return child.pid
