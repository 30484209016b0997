"""The runs in flight: at most one per instance and configuration, a bounded number per group at once.

Guarantee: ``Pool.ensure`` is idempotent - asking about an instance a thousand times starts one
run for its (instance ID, config hash) - and never blocks: the run proceeds in a task of its
own while Healthy answers from ``Run.phase``. At most ``Concurrency`` runs of one group, and
``max_runs`` runs of all groups, hold a slot at any moment; a failed attempt is retried ``Retries`` times, after 2 s doubling to 60 s,
without holding a slot while it waits. Every task is named and owned by the pool; ``close``
cancels them all and waits for them.
Limit: this is one daemon's memory. A run that ended is forgotten once nobody has asked about
its instance for ``forget_after`` seconds; what survives a restart is the tag the plugin sets
on the instance once a run succeeded (``plugin``), not this pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from infrakit_runtime.plugins.flavor.ansible.props import retry_delay
from infrakit_runtime.plugins.flavor.ansible.runner import Job, RunResult

log = logging.getLogger(__name__)

FORGET_AFTER = 600.0
# The daemon's own bound over every group's runs (the daemon option max_runs).
MAX_RUNS = 16
# After a cancel, how long to wait for ansible-runner to stop the run (it polls the cancel flag each second).
CANCEL_WAIT = 30.0

Key = tuple[str, str]  # (instance ID, config hash)
Execute = Callable[..., Awaitable[RunResult]]


class Phase(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "waiting to retry"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


@dataclasses.dataclass
class Run:
    """One instance's configuration run (all its attempts) as the pool tracks it."""

    job: Job
    attempts: int
    phase: Phase = Phase.QUEUED
    attempt: int = 0
    result: RunResult | None = None
    started: float | None = None
    asked: float = 0.0
    labelled: bool = False
    label_tried: float = float("-inf")
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def key(self) -> Key:
        return self.job.instance_id, self.job.config


class _Gate:
    """A group's slots; the limit is read at every wait, so a new spec's Concurrency applies at once."""

    def __init__(self) -> None:
        self.active = 0
        self.limit = 1
        self.changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.changed:
            await self.changed.wait_for(lambda: self.active < self.limit)
            self.active += 1
        try:
            yield
        finally:
            async with self.changed:
                self.active -= 1
                self.changed.notify_all()

    def set_limit(self, limit: int) -> None:
        """Apply ``limit`` now; waiters re-check it at once when it grew."""
        grew, self.limit = limit > self.limit, limit
        if grew:
            asyncio.get_running_loop().create_task(self._wake(), name="ansible/gate-wake")

    async def _wake(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class Pool:
    """Configuration runs by (instance ID, config hash), executed by ``execute(job, attempt=, cancel=)``."""

    def __init__(self, *, execute: Execute, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 forget_after: float = FORGET_AFTER, max_runs: int = MAX_RUNS) -> None:
        self.execute, self.clock, self.sleep, self.forget_after = execute, clock, sleep, forget_after
        self._runs: dict[Key, Run] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._gates: dict[str, _Gate] = {}
        # However many groups ask, no more runs than this at once in the daemon.
        self._all = _Gate()
        self._all.limit = max_runs
        self.on_done: Callable[[Run], None] | None = None

    def get(self, key: Key) -> Run | None:
        return self._runs.get(key)

    def runs(self) -> list[Run]:
        return list(self._runs.values())

    def ensure(self, job: Job, *, attempts: int, concurrency: int) -> Run:
        """The run for ``job``'s instance and configuration, started if there is none."""
        now = self.clock()
        self._forget_stale(now)
        gate = self._gates.setdefault(job.group, _Gate())
        if gate.limit != concurrency:
            gate.set_limit(concurrency)
        key = (job.instance_id, job.config)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = Run(job=job, attempts=attempts)
            task = asyncio.get_running_loop().create_task(self._drive(run, gate), name=f"ansible/run/{job.instance_id}")
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._ended, key))
        run.asked = now
        return run

    def ahead_of(self, run: Run) -> int:
        """Runs of the same group queued before ``run`` (what an operator waits for)."""
        queued = [r for r in self._runs.values() if r.phase is Phase.QUEUED and r.job.group == run.job.group]
        return queued.index(run) if run in queued else 0

    async def _drive(self, run: Run, gate: _Gate) -> None:
        for attempt in range(1, run.attempts + 1):
            async with gate.slot(), self._all.slot():
                if run.cancel.is_set():
                    break
                run.phase, run.attempt, run.started = Phase.RUNNING, attempt, self.clock()
                run.result = await self.execute(run.job, attempt=attempt, cancel=run.cancel)
            log.info("%s of instance %s (attempt %d of %d): %s", run.job.purpose, run.job.instance_id, attempt,
                     run.attempts, run.result.sentence(run.job.playbook))
            if run.result.succeeded or run.cancel.is_set():
                break
            if attempt < run.attempts:
                run.phase = Phase.RETRYING
                await self.sleep(retry_delay(attempt))
        run.phase = Phase.SUCCEEDED if run.result is not None and run.result.succeeded else Phase.FAILED
        if self.on_done is not None:
            self.on_done(run)

    def _ended(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("configuration run of instance %s crashed: %r", key[0], task.exception())
            run = self._runs.get(key)
            if run is not None:
                run.phase = Phase.FAILED
                run.result = RunResult(status="error", message=f"the run crashed: {task.exception()}")

    def _forget_stale(self, now: float) -> None:
        stale = [k for k, r in self._runs.items() if r.phase.done and now - r.asked > self.forget_after]
        for key in stale:
            del self._runs[key]

    async def stop(self, instance_id: str) -> None:
        """Cancel and forget every run of ``instance_id`` (it is about to go); wait until they have stopped."""
        keys = [k for k in self._runs if k[0] == instance_id]
        for key in keys:
            self._runs[key].cancel.set()
        tasks = [self._tasks[k] for k in keys if k in self._tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)
        for key in keys:
            self._runs.pop(key, None)

    async def close(self) -> None:
        """Cancel every run and wait for its task (ansible-runner kills the playbook's process group)."""
        for run in self._runs.values():
            run.cancel.set()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
