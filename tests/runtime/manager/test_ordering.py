"""The manager orders changes by each call's origin, which the Group service passes in explicitly.

In one process: a real ``Manager`` leading through the file backend over the real controller, with
in-process plugins and an injected wall clock. No HTTP request, no context variable: the origin
is an argument (``group.Origin``), decoded from the request's headers by ``rpc.group``.
"""

from __future__ import annotations

import asyncio

import pytest

from infrakit_runtime.backends.file import FileBackend
from infrakit_runtime.manager.backend import LeaderTimings
from infrakit_runtime.manager.manager import Manager, NotLeader
from infrakit_runtime.rpc import group as rpc_group
from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import PluginError
from tests.runtime.controller.inprocess import World

FAST = LeaderTimings(ttl=2.0, renew_interval=0.2, renew_deadline=1.0, retry_interval=0.2)


class WallClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def leading(tmp_path, wall: WallClock) -> tuple[Manager, World, asyncio.Task[None]]:
    world = World(tmp_path / "instances")
    manager = Manager(backend=FileBackend(tmp_path / "store", FAST), controller=world.controller, candidate="a",
                      location="unix:///nowhere", wall_clock=wall)
    task = asyncio.create_task(manager.run(), name="manager/a")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while manager.lease is None:
        assert loop.time() < deadline, f"not elected: {manager.problem}"
        await asyncio.sleep(0.02)
    return manager, world, task


async def stop(manager: Manager, world: World, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await world.close()
    await manager.close()


def test_a_forwarded_change_sent_before_one_already_applied_is_refused_and_changes_nothing(tmp_path):
    async def scenario() -> None:
        wall = WallClock()
        manager, world, task = await leading(tmp_path, wall)
        try:
            await manager.commit_group(World.spec(size=2), False, origin=group.Origin(sent=wall.now - 5))
            stale = group.Origin(sent=wall.now - 10, forwarded_by="b")
            with pytest.raises(PluginError, match="a newer change to group web was applied after this request"):
                await manager.commit_group(World.spec(size=7), False, origin=stale)
            assert await manager.size("web") == 2
            # The same late stamp from a client (not a replica) is trusted too when it is plausible.
            with pytest.raises(PluginError, match="newer change"):
                await manager.set_size("web", 9, origin=group.Origin(sent=wall.now - 10))
            # A stamp from the future, or far in the past (a client's clock is off), counts as now.
            wall.now += 1
            await manager.set_size("web", 3, origin=group.Origin(sent=wall.now + 3600))
            assert await manager.size("web") == 3
        finally:
            await stop(manager, world, task)

    asyncio.run(scenario())


def test_a_call_that_was_forwarded_once_is_never_forwarded_again():
    async def scenario() -> None:
        manager = Manager.__new__(Manager)  # a follower that never led: only the routing rule runs
        manager.lease, manager.candidate, manager.problem = None, "b", None
        manager._settled = asyncio.Event()
        manager._settled.set()
        with pytest.raises(NotLeader, match="does not forward a call a second time"):
            await manager.size("web", origin=group.Origin(sent=1.0, forwarded_by="a"))

    asyncio.run(scenario())


def test_the_group_service_hands_the_manager_the_origin_its_headers_declare(tmp_path):
    async def scenario() -> None:
        wall = WallClock()
        manager, world, task = await leading(tmp_path, wall)
        try:
            service = rpc_group.GroupService({"": manager})
            headers = {rpc_group.ORIGIN: repr(wall.now - 30), rpc_group.FORWARDED_BY: "b"}
            bound = service.bind(manager, headers)
            await manager.commit_group(World.spec(size=1), False)
            with pytest.raises(PluginError, match="newer change"):
                await bound.commit_group(World.spec(size=4), False)
            assert rpc_group.origin_from_headers({rpc_group.ORIGIN: "nan"}) == group.Origin()
            assert rpc_group.origin_from_headers({}) == group.Origin()
            assert rpc_group.origin_headers(group.Origin(sent=1.5, forwarded_by="a")) == {
                rpc_group.ORIGIN: "1.5", rpc_group.FORWARDED_BY: "a"}
        finally:
            await stop(manager, world, task)

    asyncio.run(scenario())


def test_a_follower_names_the_stored_groups_in_its_handshake_and_none_when_the_store_hangs(tmp_path):
    async def scenario() -> None:
        wall = WallClock()
        manager, world, task = await leading(tmp_path, wall)
        try:
            await manager.commit_group(World.spec(size=1), False)
            assert await manager.announced() == ["web"]
            follower = Manager(backend=FileBackend(tmp_path / "store", FAST),
                               controller=World(tmp_path / "other").controller, candidate="b",
                               location="unix:///elsewhere", wall_clock=wall)
            assert follower.lease is None
            assert await follower.announced() == ["web"]  # from the store: no forwarding, no election wait

            async def hangs() -> None:
                await asyncio.sleep(3600)

            follower.backend.load_all = hangs  # type: ignore[method-assign]
            # The handshake gives up on the store (ANNOUNCE_TIMEOUT) and names no group; the outer
            # deadline only turns a hang into a failure.
            assert await asyncio.wait_for(follower.announced(), 120) == []
            await follower.close()
        finally:
            await stop(manager, world, task)

    asyncio.run(scenario())
