"""The group controller's logic, in one process on a fake clock: heal, scale, roll, pets, free, destroy, pretend.

The real ``GroupController`` and ``Supervisor`` drive the file instance plugin and an in-memory
flavor through a ``PluginLookup`` of plugin objects: no sockets, no processes, no sleeps. The
same behaviours against real daemons and real processes are in ``test_group_controller.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from infrakit_runtime.spi.common import ValidationError
from tests.runtime import fakeclock
from tests.runtime.controller.inprocess import World


def scenario(tmp_path, body, *, poll_interval: float = 5.0) -> None:
    async def main() -> None:
        world = World(tmp_path / "instances", poll_interval=poll_interval)
        try:
            await body(world)
        finally:
            await world.close()

    fakeclock.run(main())


def test_a_group_of_five_converges_with_every_member_healthy(tmp_path):
    async def body(w: World) -> None:
        assert await w.commit(w.spec(size=5)) == "Managing 5 instances"
        await fakeclock.until(lambda: w.converged(5, init="v1"), within=60, what="converged at 5")
        status = (await w.controller.describe_group("web")).status
        assert status["Condition"] == "Converged" and status["Healthy"] == 5 and status["Outdated"] == 0
        assert {i["Health"] for i in status["Instances"]} == {"healthy"}

    scenario(tmp_path, body)


def test_describe_group_lists_a_member_as_soon_as_it_is_provisioned(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=3))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        await w.commit(w.spec(size=5))
        # Checked every millisecond of loop time: before the next pass (the plugin's watch looks every 50 ms).
        await fakeclock.until(lambda: _provisioned(w, 5), within=10, what="5 instances provisioned", step=0.001)
        listed = {d.id for d in (await w.controller.describe_group("web")).instances}
        assert listed == {d.id for d in await w.members()}

    scenario(tmp_path, body)


async def _provisioned(w: World, n: int) -> bool:
    return len(await w.members()) == n


def test_an_instance_that_vanishes_from_the_plugin_is_replaced(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=3))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        victim = (await w.members())[0].id
        (w.files.directory / victim).unlink()  # gone behind the plugin's back
        async def replaced() -> bool:
            return await w.converged(3) and victim not in {d.id for d in await w.members()}
        await fakeclock.until(replaced, within=60, what="the lost instance replaced")
        assert ("instance_lost", victim) in w.kinds()

    scenario(tmp_path, body)


def test_an_unhealthy_instance_is_replaced_after_the_threshold(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=3, grace="0s", unhealthy_threshold=2))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        sick = (await w.members())[0].id
        w.flavor.unhealthy.add(sick)
        async def replaced() -> bool:
            return await w.converged(3) and sick not in {d.id for d in await w.members()}
        await fakeclock.until(replaced, within=120, what="the unhealthy instance replaced")
        assert ("instance_unhealthy", sick) in w.kinds() and ("destroyed", sick) in w.kinds()

    scenario(tmp_path, body)


def test_a_rolling_update_never_takes_the_group_below_its_size(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=4, init="v1"))
        await fakeclock.until(lambda: w.converged(4, init="v1"), within=60, what="converged on v1")
        assert await w.commit(w.spec(size=4, init="v2")) == "Performing a rolling update on 4 instances"
        lowest = 4

        async def rolled() -> bool:
            nonlocal lowest
            status = (await w.controller.describe_group("web")).status
            lowest = min(lowest, status["Healthy"])
            return await w.converged(4, init="v2")
        await fakeclock.until(rolled, within=300, what="rolled out to v2", step=0.05)
        assert lowest >= 4, f"healthy members dropped to {lowest} during the rollout"

    scenario(tmp_path, body)


def test_scaling_up_then_down_removes_the_newest_first(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=5))
        await fakeclock.until(lambda: w.converged(5), within=60, what="converged at 5")
        first = {d.id for d in await w.members()}
        assert await w.commit(w.spec(size=8)) == "Adding 3 instances to increase the group size to 8"
        await fakeclock.until(lambda: w.converged(8), within=60, what="converged at 8")
        assert await w.commit(w.spec(size=2)) == "Terminating 6 instances to reduce the group size to 2"
        await fakeclock.until(lambda: w.converged(2), within=60, what="converged at 2")
        assert {d.id for d in await w.members()} <= first, "scale-down removes the newest instances first"
        await w.controller.set_size("web", 3)
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        assert await w.controller.size("web") == 3

    scenario(tmp_path, body)


def test_pets_get_one_instance_per_logical_id(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(logical_ids=["db-a", "db-b", "db-c"]))
        await fakeclock.until(lambda: w.converged(3), within=60, what="three pets")
        assert sorted(d.logical_id or "" for d in await w.members()) == ["db-a", "db-b", "db-c"]
        victim = next(d.id for d in await w.members() if d.logical_id == "db-b")
        (w.files.directory / victim).unlink()
        async def replaced() -> bool:
            return await w.converged(3) and victim not in {d.id for d in await w.members()}
        await fakeclock.until(replaced, within=60, what="db-b replaced")
        assert sorted(d.logical_id or "" for d in await w.members()) == ["db-a", "db-b", "db-c"]
        await w.commit(w.spec(logical_ids=["db-a", "db-c"]))
        await fakeclock.until(lambda: w.converged(2), within=60, what="two pets")
        assert sorted(d.logical_id or "" for d in await w.members()) == ["db-a", "db-c"]

    scenario(tmp_path, body)


def test_free_then_recommit_adopts_the_instances_without_churn(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=3))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        before = {d.id for d in await w.members()}
        await w.controller.free_group("web")
        assert await w.controller.inspect_groups() == []
        assert {d.id for d in await w.members()} == before, "free leaves the instances running"
        await w.commit(w.spec(size=3))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged again")
        assert {d.id for d in await w.members()} == before

    scenario(tmp_path, body)


def test_destroy_removes_every_instance_and_the_group(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=3))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        await w.controller.destroy_group("web")
        assert await w.members() == []
        assert await w.controller.inspect_groups() == []

    scenario(tmp_path, body)


def test_pretend_returns_the_plan_and_changes_nothing(tmp_path):
    async def body(w: World) -> None:
        assert await w.commit(w.spec(size=3), pretend=True) == "Managing 3 instances"
        assert await w.controller.inspect_groups() == []
        assert await w.members() == []
        await w.commit(w.spec(size=3))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        before = {d.id for d in await w.members()}
        assert await w.commit(w.spec(size=3, init="v2"), pretend=True) == "Performing a rolling update on 3 instances"
        assert await w.commit(w.spec(size=5), pretend=True) == "Adding 2 instances to increase the group size to 5"
        assert {d.id for d in await w.members()} == before
        assert await w.controller.size("web") == 3

    scenario(tmp_path, body)


def test_an_invalid_spec_is_refused_with_every_problem_and_changes_nothing(tmp_path):
    async def body(w: World) -> None:
        await w.commit(w.spec(size=2))
        await fakeclock.until(lambda: w.converged(2), within=60, what="converged at 2")
        before = {d.id for d in await w.members()}
        bad = w.spec(size=2)
        bad.properties["Flavor"]["Plugin"] = "nosuch"
        bad.properties["Allocation"]["Size"] = -1
        with pytest.raises(ValidationError) as refused:
            await w.commit(bad)
        assert any("Size" in p for p in refused.value.problems) and any("nosuch" in p for p in refused.value.problems)
        assert {d.id for d in await w.members()} == before
        assert await w.controller.size("web") == 2

    scenario(tmp_path, body)


@pytest.mark.parametrize(("interval", "replaced_within"), [("1s", 10.0), (None, None)])
def test_health_is_probed_at_health_interval_whatever_the_poll_interval(tmp_path, interval, replaced_within):
    """Health.Interval 1s under a 60 s poll: an instance failing its checks is replaced within seconds;
    without it, health is checked once per pass, so nothing happens before the next poll."""
    async def body(w: World) -> None:
        await w.commit(w.spec(size=3, grace="0s", unhealthy_threshold=2, health_interval=interval))
        await fakeclock.until(lambda: w.converged(3), within=60, what="converged at 3")
        await asyncio.sleep(1)  # loop time: the supervisor is resting until its next poll
        sick = (await w.members())[0].id
        w.flavor.unhealthy.add(sick)

        async def replaced() -> bool:
            return sick not in {d.id for d in await w.members()}
        if replaced_within is not None:
            await fakeclock.until(replaced, within=replaced_within, what="the unhealthy instance replaced")
        else:
            with pytest.raises(AssertionError, match="not the unhealthy instance replaced"):
                await fakeclock.until(replaced, within=30, what="the unhealthy instance replaced")

    scenario(tmp_path, body, poll_interval=60.0)
