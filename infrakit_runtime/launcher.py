"""Supervising plugin daemons: ``infrakit plugin start`` and ``infrakit up``.

Daemons run in child processes (``infrakit plugin run kind:name ...``): one each, or several
sharing one (``infrakit up``'s default, ``processes: one``). A child that dies is restarted
with capped exponential backoff; it is never given up on (Debian's supervisord gives up after
fast crashes, leaving nothing supervised). A child one of whose daemons stops answering its
handshake within a deadline is killed and restarted, so a hung daemon is treated like a dead
one. Limit: the daemons of one process are restarted together, never one alone; a shared
process that cannot get all of its daemons serving is split into one process per daemon. On
SIGTERM or SIGINT every child is stopped (SIGTERM, then SIGKILL after a grace period) and its
sockets removed; the supervisor never leaves orphans behind.

One ``infrakit up`` per plugin directory: it holds an exclusive lock (``infrakit-up.lock``)
that the kernel releases when it dies, so its pid file is only ever believed while the lock
is held; a stale one is replaced. A supervisor that died without stopping its children
(SIGKILL: they get SIGTERM from the kernel, see ``plugin run``) may leave one still running
or hung; its successor stops such a leftover before starting the daemon again, so no daemon
runs twice. Pid files are never trusted alone: a pid is signalled only while it still runs the
infrakit program the file says. ``keeper.py`` restarts a supervisor that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from infrakit_runtime.daemon import DaemonSpec, pid_path
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.spi.common import PluginError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial`` doubling to ``maximum``, reset after ``stable`` seconds up."""

    initial: float = 0.5
    maximum: float = 30.0
    stable: float = 60.0

    def delay(self, failures: int) -> float:
        # The exponent is capped: after ~1,000 restarts 2**n no longer fits a float, and "never gives up" means never.
        base = min(self.maximum, self.initial * (2 ** min(max(0, failures - 1), 62)))
        return base * random.uniform(0.8, 1.2)


@dataclasses.dataclass(frozen=True)
class Liveness:
    """Handshake probe: every ``interval`` seconds, answer within ``timeout``, ``failures`` misses kill."""

    interval: float = 5.0
    timeout: float = 3.0
    failures: int = 3
    # Give a fresh daemon this long to create its socket before probing counts.
    startup: float = 15.0


class Child:
    """One supervised process serving one daemon, or several sharing it (``processes: one``).

    The daemons of one process live and die together: any of them missing its handshakes gets
    the whole process killed and restarted, and none of them can be restarted alone. A shared
    process that ends (with an error, or killed for a daemon that never came up) before every
    one of its daemons was serving is split: from then on each of its daemons runs in a
    process of its own, so one daemon that cannot start does not keep the others down.
    """

    def __init__(self, specs: DaemonSpec | Sequence[DaemonSpec], *, plugins_dir: Path, extra_args: list[str],
                 env: dict[str, str], backoff: Backoff, liveness: Liveness | None, stop_timeout: float) -> None:
        self.specs = (specs,) if isinstance(specs, DaemonSpec) else tuple(specs)
        self.plugins_dir = plugins_dir
        self.extra_args = extra_args
        self.argv = child_argv(self.specs, extra_args)
        self.env = env
        self.backoff = backoff
        self.liveness = liveness
        self.stop_timeout = stop_timeout
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        # Daemons seen serving (their pid file names the process) since the process started.
        self._serving: set[str] = set()
        self._killed_at_startup = False
        # The processes this one was split into, once it was.
        self.parts: list[Child] = []

    @property
    def spec(self) -> DaemonSpec:
        return self.specs[0]

    @property
    def label(self) -> str:
        names = ", ".join(s.name for s in self.specs)
        return names if len(self.specs) == 1 else f"the process of {names}"

    async def run(self) -> None:
        """Keep the daemons running until cancelled; a cancel stops the process it started."""
        try:
            await self._run()
        except asyncio.CancelledError:
            # The stop may have come while a (re)start was under way, after ``stop`` looked.
            await asyncio.shield(self._terminate())
            raise

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._stop_leftover)
        while True:
            started = loop.time()
            self._serving = set()
            self.process = await asyncio.create_subprocess_exec(*self.argv, env=self.env, start_new_session=True)
            if self._stopping:
                await self._terminate()
                return
            log.info("started %s (%s) pid %d", ", ".join(s.name for s in self.specs),
                     ", ".join(s.kind for s in self.specs), self.process.pid)
            probe = asyncio.create_task(self._probe(self.process), name=f"liveness/{self.spec.name}")
            try:
                code = await self.process.wait()
            finally:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
            if self._stopping:
                return
            if self._stop_requested():
                log.info("%s stopped on request (infrakit plugin stop); not restarting it", self.label)
                self._cleanup_files()
                return
            self._cleanup_files()
            unserved = [s.name for s in self.specs if s.name not in self._serving]
            if len(self.specs) > 1 and unserved and (code > 0 or self._killed_at_startup):
                log.error("%s ended (status %s) before every daemon was serving (never serving: %s); every daemon "
                          "of it now runs in a process of its own, until infrakit up restarts", self.label, code,
                          ", ".join(unserved))
                await self._run_split()
                return
            failures = 1 if loop.time() - started > self.backoff.stable else failures + 1
            delay = self.backoff.delay(failures)
            self.restarts += 1
            if len(self.specs) > 1:
                log.error("%s exited with %s: all of %s are down; restarting them in %.1fs (restart %d)",
                          self.label, code, ", ".join(s.name for s in self.specs), delay, self.restarts)
            else:
                log.warning("%s exited with %s; restarting in %.1fs (restart %d)", self.label, code, delay,
                            self.restarts)
            await asyncio.sleep(delay)

    async def _run_split(self) -> None:
        self.parts = [Child(s, plugins_dir=self.plugins_dir, extra_args=self.extra_args, env=self.env,
                            backoff=self.backoff, liveness=self.liveness, stop_timeout=self.stop_timeout)
                      for s in self.specs]
        # The first start of each part is a restart of the shared process: not at once, so that a
        # daemon that cannot start is not retried in a tight loop.
        await asyncio.sleep(self.backoff.delay(1))
        if self._stopping:
            return
        async with asyncio.TaskGroup() as tg:
            for part in self.parts:
                tg.create_task(part.run(), name=f"child/{part.spec.name}")

    async def _probe(self, process: asyncio.subprocess.Process) -> None:
        """Watch the daemons come up (pid files), then, with ``liveness``, handshake every socket."""
        self._killed_at_startup = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        startup = self.liveness.startup if self.liveness else Liveness().startup
        while process.returncode is None and len(self._serving) < len(self.specs) and loop.time() - started < startup:
            self._note_serving(process.pid)
            await asyncio.sleep(0.1)
        if self.liveness is None:
            return
        live = self.liveness
        misses = {s.name: 0 for s in self.specs}
        while process.returncode is None:
            await asyncio.sleep(live.interval)
            # A daemon writes its pid file once its socket is bound: from then on it must answer.
            self._note_serving(process.pid)
            answers = await asyncio.gather(*(asyncio.to_thread(self._handshake, name, live.timeout) for name in misses),
                                           return_exceptions=True)
            for name, answer in zip(misses, answers, strict=True):
                if not isinstance(answer, BaseException):
                    misses[name] = 0
                    self._serving.add(name)
                    continue
                if name not in self._serving and loop.time() - started < live.startup:
                    continue
                misses[name] += 1
                log.warning("%s missed a liveness handshake (%d/%d): %s", name, misses[name], live.failures, answer)
            hung = [n for n, m in misses.items() if m >= live.failures]
            if hung:
                self._killed_at_startup = any(n not in self._serving for n in hung)
                others = [s.name for s in self.specs if s.name not in hung]
                log.error("%s is hung; killing pid %d%s", ", ".join(hung), process.pid,
                          f" and with it {', '.join(others)}, which share its process" if others else "")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                return

    def _handshake(self, name: str, timeout: float) -> None:
        """One liveness handshake, in a thread of its own, on a connection of its own (closed after).

        The blocking client, not the async one: the supervisor then runs without aiohttp (about
        14 MiB of RSS); its socket timeout bounds the connect and each read by ``timeout``.
        """
        client = SyncClient(Address(unix_path=self.plugins_dir / name), name=name, timeout=timeout)
        try:
            client.hello()
        finally:
            client.close()

    def _note_serving(self, pid: int) -> None:
        for s in self.specs:
            if s.name not in self._serving and self._pid_file_names(s.name, pid):
                self._serving.add(s.name)

    def _stop_leftover(self) -> None:
        """Stop the process of these daemons left by a supervisor that died (SIGKILL) without stopping it."""
        done: set[int] = set()
        for spec in self.specs:
            pid = read_pid(pid_path(self.plugins_dir, spec.name))
            if pid is None or pid in done or not is_leftover_daemon(pid, spec):
                continue
            log.warning("%s: pid %d, left running by a supervisor that died, is stopped before a new one starts",
                        spec.name, pid)
            terminate(pid, timeout=self.stop_timeout)
            done.add(pid)

    def _stop_requested(self) -> bool:
        requested = False
        for spec in self.specs:
            marker = stop_marker(self.plugins_dir, spec.name)
            if marker.exists():
                marker.unlink(missing_ok=True)
                requested = True
        return requested

    def _pid_file_names(self, name: str, pid: int) -> bool:
        try:
            return pid_path(self.plugins_dir, name).read_text().strip() == str(pid)
        except (FileNotFoundError, ValueError):
            return False

    def _cleanup_files(self) -> None:
        # A daemon killed with SIGKILL leaves its socket and pid file: neither may block its successor.
        for spec in self.specs:
            with contextlib.suppress(FileNotFoundError):
                pid_path(self.plugins_dir, spec.name).unlink()

    async def stop(self) -> None:
        self._stopping = True
        if self.parts:
            await asyncio.gather(*(part.stop() for part in self.parts))
            return
        await self._terminate()

    async def _terminate(self) -> None:
        """SIGTERM the process, SIGKILL after ``stop_timeout``; remove its sockets and pid files."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; killing it", self.label, self.stop_timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        for spec in self.specs:
            with contextlib.suppress(FileNotFoundError):
                (self.plugins_dir / spec.name).unlink()
        self._cleanup_files()


def stop_marker(plugins_dir: Path, name: str) -> Path:
    """A daemon stopped on purpose leaves this behind so its supervisor does not restart it."""
    return plugins_dir / f".{name}.stop"


def supervisor_pid_file(plugins_dir: Path, pid: int) -> Path:
    return plugins_dir / f"infrakit-supervisor.{pid}.pid"


def child_argv(specs: Sequence[DaemonSpec], extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "infrakit_runtime", "plugin", "run", *(f"{s.kind}:{s.name}" for s in specs), *extra]


async def supervise(specs: Sequence[DaemonSpec | Sequence[DaemonSpec]], *, plugins_dir: Path,
                    extra_args: list[str] | None = None,
                    backoff: Backoff | None = None, liveness: Liveness | None = Liveness(),
                    stop_timeout: float = 10.0, ready: asyncio.Event | None = None,
                    stopped_marker: Path | None = None) -> None:
    """Run every daemon until SIGTERM/SIGINT, then stop them all.

    Each item of ``specs`` is one process: a daemon alone, or several daemons sharing a process.
    ``stopped_marker`` is touched as soon as the stop is requested, before the daemons are
    stopped: a keeper reads it as "stopped on purpose, do not restart".
    """
    env = dict(os.environ)
    env["INFRAKIT_PLUGINS_DIR"] = str(plugins_dir)
    children = [
        Child(s, plugins_dir=plugins_dir, extra_args=extra_args or [], env=env,
              backoff=backoff or Backoff(), liveness=liveness, stop_timeout=stop_timeout)
        for s in specs
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Start-up bookkeeping: a few small files, before any daemon runs.
    for c in children:
        for spec in c.specs:
            stop_marker(plugins_dir, spec.name).unlink(missing_ok=True)
    plugins_dir.mkdir(parents=True, exist_ok=True, mode=0o750)  # noqa: ASYNC240
    for stale in plugins_dir.glob("infrakit-supervisor.*.pid"):  # noqa: ASYNC240
        pid = read_pid(stale)
        if pid is None or not (runs_infrakit(pid, "up") or runs_infrakit(pid, "start")):
            stale.unlink(missing_ok=True)  # left by a supervisor that was killed
    own_pid = supervisor_pid_file(plugins_dir, os.getpid())
    own_pid.write_text(f"{os.getpid()}\n")
    tasks = [asyncio.create_task(c.run(), name=f"child/{c.spec.name}") for c in children]
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        if stopped_marker is not None:
            stopped_marker.touch()  # noqa: ASYNC240
    finally:
        own_pid.unlink(missing_ok=True)
        log.info("stopping %d plugin(s)", sum(len(c.specs) for c in children))
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def stop_supervisors(plugins_dir: Path, *, timeout: float = 20.0) -> int:
    """SIGTERM every supervisor (``plugin start``, ``up``) serving this directory; how many were running."""
    stopped = 0
    for pid_file in sorted(plugins_dir.glob("infrakit-supervisor.*.pid")):
        pid = read_pid(pid_file)
        if pid is None:
            continue
        # A file left by a supervisor that was killed may name a pid reused by another program.
        if runs_infrakit(pid, "up") or runs_infrakit(pid, "start"):
            if terminate(pid, timeout=timeout):
                stopped += 1
        pid_file.unlink(missing_ok=True)
    return stopped


def stop_plugin(plugins_dir: Path, name: str, *, timeout: float = 10.0) -> bool:
    """SIGTERM the process serving ``name`` (by its pid file); True if one was running.

    A supervised daemon stopped this way stays stopped: the marker tells its supervisor. When
    other daemons share the process (``processes: one``), they stop with it, and stay stopped
    too; ``process_mates`` names them first.
    """
    pid_file = pid_path(plugins_dir, name)
    pid = read_pid(pid_file)
    if pid is None:
        return False
    if not process_alive(pid) or not runs_infrakit(pid, "run"):
        pid_file.unlink(missing_ok=True)  # stale: that daemon is gone (the pid may be another program's now)
        return False
    for mate in [name, *process_mates(plugins_dir, name)]:
        stop_marker(plugins_dir, mate).touch()
    return terminate(pid, timeout=timeout)


def process_mates(plugins_dir: Path, name: str) -> list[str]:
    """The other daemons served by the live process that serves ``name`` (by their pid files), sorted."""
    pid = read_pid(pid_path(plugins_dir, name))
    if pid is None or not process_alive(pid):
        return []
    return sorted(p.name[: -len(".pid")] for p in plugins_dir.glob("*.pid")
                  if not p.name.startswith("infrakit-") and p.name != f"{name}.pid" and read_pid(p) == pid)


def terminate(pid: int, *, timeout: float) -> bool:
    """SIGTERM ``pid``, then SIGKILL after ``timeout``; True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def process_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def runs_infrakit(pid: int, command: str) -> bool:
    """True when ``pid`` is alive and runs ``infrakit ... COMMAND`` (``python -m infrakit_runtime`` or the script)."""
    argv = _cmdline(pid)
    if not argv or not process_alive(pid):
        return False
    program = next((i for i, a in enumerate(argv[:3]) if a == "infrakit_runtime" or Path(a).name == "infrakit"), None)
    return program is not None and command in argv[program + 1:]


def is_leftover_daemon(pid: int, spec: DaemonSpec) -> bool:
    """True when ``pid`` is a daemon a supervisor started for ``spec`` and that supervisor is gone."""
    if not runs_infrakit(pid, "run") or f"{spec.kind}:{spec.name}" not in _cmdline(pid):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    if b"INFRAKIT_PARENT_DEATHSIG=1" not in environ:
        return False  # started by hand, not by a supervisor: not ours to stop
    return ppid != os.getpid() and not (runs_infrakit(ppid, "up") or runs_infrakit(ppid, "start"))


class LockHeld(PluginError):
    """Another live process holds the lock."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class ProcessLock:
    """An exclusive lock on a file, held for the life of the process, and a pid file beside it.

    The kernel releases the lock when the holder dies, however it dies: the pid file is
    believed only while the lock is held (``holder``), and a stale one is overwritten.
    """

    def __init__(self, path: Path, pid_file: Path, *, what: str) -> None:
        self.path = path
        self.pid_file = pid_file
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid; ``LockHeld`` naming the holder when another process has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_pid(self.pid_file)
            raise LockHeld(f"another {self.what} (pid {pid or 'unknown'}) already runs for {self.path.parent}", pid) from None
        self._fd = fd
        tmp = self.pid_file.with_name(f".{self.pid_file.name}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.chmod(0o644)
        os.replace(tmp, self.pid_file)

    def release(self) -> None:
        if self._fd is None:
            return
        if read_pid(self.pid_file) == os.getpid():
            self.pid_file.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def held(self) -> bool:
        """True while some live process holds the lock; when False, any pid file beside it is stale."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock the probe may have taken
        return False


UP_LOCK = "infrakit-up.lock"
UP_PID = "infrakit-up.pid"
UP_STOPPED = "infrakit-up.stopped"


def up_lock(plugins_dir: Path) -> ProcessLock:
    """The lock that makes ``infrakit up`` the only supervisor of ``plugins_dir``."""
    return ProcessLock(plugins_dir / UP_LOCK, plugins_dir / UP_PID, what="infrakit up supervisor")
