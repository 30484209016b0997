"""The run pool's bookkeeping (pure logic, so a stand-in executor): one run per instance and
configuration, a bounded number per group at once, retries, cancellation."""

from __future__ import annotations

import asyncio
import threading

from infrakit_runtime.plugins.flavor.ansible.runner import CONFIGURE, Job, RunResult
from infrakit_runtime.plugins.flavor.ansible.runs import Phase, Pool

OK = RunResult(status="successful", ok=1)
FAILED = RunResult(status="failed", failed=1, task="t", message="boom")


def job(instance_id: str, config: str = "h1", group: str = "web") -> Job:
    return Job(purpose=CONFIGURE, instance_id=instance_id, config=config, group=group, playbook="/p.yml")


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


async def until(predicate, limit: int = 1000) -> None:
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_asking_many_times_starts_one_run_per_instance_and_configuration():
    calls: list[tuple[str, str]] = []

    async def execute(j: Job, *, attempt: int, cancel: threading.Event) -> RunResult:
        calls.append((j.instance_id, j.config))
        return OK

    async def scenario() -> None:
        pool = Pool(execute=execute, sleep=no_wait)
        for _ in range(50):
            pool.ensure(job("a"), attempts=2, concurrency=5)
            pool.ensure(job("a", config="h2"), attempts=2, concurrency=5)
        await until(lambda: all(r.phase.done for r in pool.runs()))
        pool.ensure(job("a"), attempts=2, concurrency=5)  # done: asked again, not run again
        await asyncio.sleep(0)
        assert sorted(calls) == [("a", "h1"), ("a", "h2")]
        await pool.close()

    asyncio.run(scenario())


class Gate:
    """An executor whose runs all wait for ``release``; it counts how many ran at once (``peak``)."""

    def __init__(self) -> None:
        self.running = self.peak = 0
        self.release = asyncio.Event()

    async def execute(self, j: Job, *, attempt: int, cancel: threading.Event) -> RunResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await self.release.wait()
        self.running -= 1
        return OK


def test_no_more_runs_of_a_group_at_once_than_its_concurrency():
    async def scenario() -> None:
        gate = Gate()
        pool = Pool(execute=gate.execute, sleep=no_wait)
        runs = [pool.ensure(job(f"i{n}"), attempts=1, concurrency=2) for n in range(6)]
        other = pool.ensure(job("x", group="db"), attempts=1, concurrency=2)
        await until(lambda: gate.running == 3)
        assert gate.peak == 3 and other.phase is Phase.RUNNING  # two of web, one of db
        assert [r.phase for r in runs].count(Phase.QUEUED) == 4
        assert pool.ahead_of(runs[5]) == 3
        gate.release.set()
        await until(lambda: all(r.phase is Phase.SUCCEEDED for r in pool.runs()))
        assert gate.peak == 3
        await pool.close()

    asyncio.run(scenario())


def test_the_daemon_bounds_the_runs_of_every_group_together():
    async def scenario() -> None:
        gate = Gate()
        pool = Pool(execute=gate.execute, sleep=no_wait, max_runs=3)
        for n in range(10):  # ten groups of one: each group's limit allows its run, the daemon's does not
            pool.ensure(job(f"i{n}", group=f"g{n}"), attempts=1, concurrency=5)
        await until(lambda: gate.running == 3)
        for _ in range(50):
            await asyncio.sleep(0)
        assert gate.peak == 3
        gate.release.set()
        await until(lambda: all(r.phase is Phase.SUCCEEDED for r in pool.runs()))
        await pool.close()

    asyncio.run(scenario())


def test_a_failed_attempt_is_retried_and_the_last_failure_is_kept():
    outcomes = {"a": [FAILED, OK], "b": [FAILED, FAILED, OK]}
    waits: list[float] = []

    async def execute(j: Job, *, attempt: int, cancel: threading.Event) -> RunResult:
        return outcomes[j.instance_id][attempt - 1]

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def scenario() -> None:
        pool = Pool(execute=execute, sleep=sleep)
        a = pool.ensure(job("a"), attempts=2, concurrency=5)
        b = pool.ensure(job("b"), attempts=2, concurrency=5)
        await until(lambda: a.phase.done and b.phase.done)
        assert (a.phase, a.attempt) == (Phase.SUCCEEDED, 2)
        assert (b.phase, b.attempt, b.result) == (Phase.FAILED, 2, FAILED)
        assert waits == [2.0, 2.0]
        await pool.close()

    asyncio.run(scenario())


def test_stopping_an_instance_cancels_its_run_and_forgets_it():
    started = asyncio.Event()

    async def execute(j: Job, *, attempt: int, cancel: threading.Event) -> RunResult:
        started.set()
        await asyncio.to_thread(cancel.wait, 10)  # as ansible-runner polls its cancel callback
        return RunResult(status="canceled")

    async def scenario() -> None:
        pool = Pool(execute=execute, sleep=no_wait)
        run = pool.ensure(job("a"), attempts=3, concurrency=5)
        await started.wait()
        await pool.stop("a")
        assert run.cancel.is_set() and run.attempt == 1 and pool.get(run.key) is None
        await pool.close()

    asyncio.run(scenario())
