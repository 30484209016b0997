"""The plugin fence in one process: a replica frozen past its renewal deadline refuses its first change."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from infrakit_runtime.backends.etcd import EtcdBackend
from infrakit_runtime.group.controller import GroupController
from infrakit_runtime.manager.backend import LeaderTimings
from infrakit_runtime.manager.fencing import FencedInstance, FencedLookup, NotActing
from infrakit_runtime.manager.manager import Manager
from infrakit_runtime.rpc.lookup import PluginDirectory
from infrakit_runtime.spi import instance

FAST = LeaderTimings(ttl=2.0, renew_interval=0.3, renew_deadline=1.2, retry_interval=0.3)


class Recorder:
    """Stands in for an instance plugin: remembers every call that reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def provision(self, spec: instance.Spec) -> str:
        self.calls.append("provision")
        return f"i-{len(self.calls)}"

    async def destroy(self, instance_id: str, context: Any) -> None:
        self.calls.append("destroy")

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Any]:
        self.calls.append("describe")
        return []


async def leading(etcd, prefix: str) -> tuple[Manager, asyncio.Task[None]]:
    plugins = FencedLookup(PluginDirectory())
    manager = Manager(backend=EtcdBackend(etcd.endpoints, prefix, FAST), controller=GroupController(plugins=plugins),
                      candidate="a", location="http://127.0.0.1:1")
    plugins.guard = manager.acting_problem
    task = asyncio.create_task(manager.run(), name="manager/a")
    deadline = time.monotonic() + 10
    while manager.lease is None:
        assert time.monotonic() < deadline, f"not elected: {manager.problem}"
        await asyncio.sleep(0.02)
    return manager, task


def test_a_replica_frozen_past_its_renewal_deadline_refuses_its_first_change_before_its_watchdog_runs(etcd):
    async def scenario() -> None:
        manager, task = await leading(etcd, f"/fence-{uuid.uuid4().hex[:8]}/")
        plugin = Recorder()
        fenced = FencedInstance(plugin, manager.acting_problem)
        spec = instance.Spec(properties={}, tags={})
        try:
            assert await fenced.provision(spec) == "i-1"
            # As by SIGSTOP: every thread frozen, the lease keeper's too (a stall of the loop
            # alone keeps the lease: the keeper renews from its own thread, see test_etcd.py).
            manager.lease.handle.renewer.cancel()
            time.sleep(FAST.renew_deadline + 0.2)  # noqa: ASYNC251 - the whole loop frozen
            assert manager.lease is not None, "the leadership task ran during the freeze"
            with pytest.raises(NotActing, match="can no longer be trusted"):
                await fenced.destroy("i-1", instance.Context(reason=instance.REASON_TERMINATE))
            assert await fenced.describe_instances({}, False) == []  # reads are never fenced
            assert plugin.calls == ["provision", "describe"]
            deadline = time.monotonic() + 5
            while manager.lease is not None:  # the watchdog catches up and the replica stops leading
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            with pytest.raises(NotActing, match="not the leader"):
                await fenced.provision(spec)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await manager.close()

    asyncio.run(scenario())
