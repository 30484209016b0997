"""The keeper: where no service manager runs, it keeps the ``infrakit up`` supervisor running.

Guarantee: the keeper restarts the supervisor whenever it ends other than on request — killed
(SIGKILL included), crashed, or refused to start — after the launcher's capped backoff, and never
gives up. At most one keeper and one supervisor serve a plugin directory: each holds an
exclusive lock the kernel releases when it dies (so their pid files are recognised as stale and
replaced, never trusted), and the keeper starts a supervisor only once the previous one's lock
is free; the new supervisor stops any daemon the dead one left running before starting it
again, so no daemon runs twice. A supervisor stopped on request (SIGTERM or SIGINT: ``kill``,
the controller role, ``infrakit plugin stop --all``) touches ``infrakit-up.stopped`` and its
keeper ends too; SIGTERM or SIGINT to the keeper stops its supervisor, then the keeper.
Limit: nothing restarts the keeper itself. It is a small synchronous loop — no network, no
event loop, no plugin code — but if it is killed, the supervisor runs on unkept until
``infrakit up --detach`` starts a new keeper, which adopts the running supervisor (it waits
for that one's lock and keeps its successors). Nor does anything start it at boot: that is the
init system's job (the role starts it on every run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from infrakit_runtime.launcher import UP_STOPPED, Backoff, LockHeld, ProcessLock, read_pid, runs_infrakit, up_lock

log = logging.getLogger(__name__)

KEEPER_LOCK = "infrakit-keeper.lock"
KEEPER_PID = "infrakit-keeper.pid"
# How often the keeper looks at its supervisor and its stop flag: the only cost of being kept.
POLL = 0.2
# A keeper whose supervisor was stopped on request ends within a POLL; a new one waits this long for it.
STOPPING_GRACE = 30.0


def next_delay(*, requested: bool, lived: float, failures: int, backoff: Backoff) -> tuple[int, float | None]:
    """After the supervisor ended: (consecutive failures, seconds before the next start), or None to stop.

    Pure. A stop on request ends keeping; anything else is a failure, counted afresh when the
    supervisor had run for ``backoff.stable`` seconds. There is no limit on failures.
    """
    if requested:
        return failures, None
    failures = 1 if lived >= backoff.stable else failures + 1
    return failures, backoff.delay(failures)


def keeper_lock(plugins_dir: Path) -> ProcessLock:
    return ProcessLock(plugins_dir / KEEPER_LOCK, plugins_dir / KEEPER_PID, what="infrakit up keeper")


class Keeper:
    """Runs ``argv`` (an ``infrakit up``) and restarts it until it is stopped on request."""

    def __init__(self, argv: list[str], *, plugins_dir: Path, env: dict[str, str] | None = None,
                 backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.argv = argv
        self.plugins_dir = plugins_dir
        self.env = env
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.child: subprocess.Popen[bytes] | None = None
        # A supervisor this keeper found running (not its child): signalled with it on a stop.
        self.adopted: int | None = None
        self.stopping = False
        self.starts = 0

    @property
    def stopped_marker(self) -> Path:
        return self.plugins_dir / UP_STOPPED

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)
        elif self.adopted is not None and runs_infrakit(self.adopted, "up"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.adopted, signum)

    def run(self) -> int:
        """Keep the supervisor running; 0 once it (or this keeper) was stopped on request."""
        lock = keeper_lock(self.plugins_dir)
        try:
            lock.acquire()
        except LockHeld as e:
            if not self._take_over_from_a_stopping_keeper(lock):
                log.info("%s; leaving it in charge", e)
                return 0
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.stopped_marker.unlink(missing_ok=True)
            self._keep()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            lock.release()
        log.info("keeper for %s stopped", self.plugins_dir)
        return 0

    def _take_over_from_a_stopping_keeper(self, lock: ProcessLock) -> bool:
        """A restart (stop, then start at once) finds the old keeper still ending: wait for it, then lead."""
        deadline = self.clock() + STOPPING_GRACE
        while self.stopped_marker.exists() and self.clock() < deadline:
            time.sleep(POLL)
            try:
                lock.acquire()
            except LockHeld:
                continue
            log.info("the previous keeper of %s has stopped; this one takes over", self.plugins_dir)
            return True
        return False

    def _keep(self) -> None:
        failures = 0
        supervisor = up_lock(self.plugins_dir)
        while not self.stopping:
            if supervisor.held():
                pid = read_pid(supervisor.pid_file)
                self.adopted = pid if pid is not None and runs_infrakit(pid, "up") else None
                log.info("a supervisor already runs for %s (pid %s); keeping it", self.plugins_dir,
                         self.adopted or "unknown")
                while supervisor.held() and not self.stopping:
                    self._sleep(POLL)
                started = None
            else:
                started = self.clock()
                self.child = subprocess.Popen(self.argv, env=self.env)
                self.starts += 1
                log.info("started the supervisor, pid %d", self.child.pid)
                while self.child.poll() is None and not self.stopping:
                    self._sleep(POLL)
            if self.stopping:
                self._wait_child()
                while supervisor.held() and self.adopted is not None and runs_infrakit(self.adopted, "up"):
                    time.sleep(POLL)  # the adopted supervisor got the signal too: let it stop its daemons
                return
            self.adopted = None
            code = self.child.returncode if started is not None and self.child is not None else None
            requested = code == 0 or self.stopped_marker.exists()
            lived = self.clock() - started if started is not None else self.backoff.stable
            failures, delay = next_delay(requested=requested, lived=lived, failures=failures, backoff=self.backoff)
            if delay is None:
                log.info("the supervisor was stopped on request; the keeper stops too")
                return
            how = f"exited with status {code}" if code is not None and code >= 0 else (
                f"was killed by signal {-code}" if code is not None else "ended")
            log.warning("the supervisor %s; restarting it in %.1fs (failure %d)", how, delay, failures)
            self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        deadline = self.clock() + seconds
        while not self.stopping and self.clock() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - self.clock())))

    def _wait_child(self) -> None:
        """After a stop request: the supervisor got the signal too; wait for it to stop its daemons."""
        if self.child is None:
            return
        if self.child.poll() is None:  # the signal may have come while it was being started
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):
            self.child.wait()


def keep(argv: list[str], *, plugins_dir: Path, env: dict[str, str] | None = None) -> int:
    return Keeper(argv, plugins_dir=plugins_dir, env=env).run()


def supervisor_argv(*, config: str | None, log_level: str | None, log_format: str | None,
                    probe: list[str]) -> list[str]:
    """The ``infrakit up`` the keeper runs: the same program, configuration and options, in the foreground."""
    argv = [sys.executable, "-m", "infrakit_runtime"]
    if config:
        argv += ["--config", os.path.abspath(config)]
    if log_level:
        argv += ["--log-level", log_level]
    if log_format:
        argv += ["--log-format", log_format]
    return [*argv, "up", *probe]
