"""A steady pass does work for what changed, not for the group's size.

The real controller in one process on a fake clock (``inprocess.World``), its plugins wrapped to
count what the supervisor asks of them: a complete listing of the group (DescribeInstances, or a
DescribeSince that answers with a list) and the members a flavor is asked about. While nothing
changes, a pass gets no listing and asks no flavor that has said it probes nothing; a change is
seen at once; plugins without the extensions (InfraKit's) are asked every pass, as before.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from infrakit_runtime import fsutil
from infrakit_runtime.group import supervisor as supervisor_module
from infrakit_runtime.group.plan.plan import plan_group
from infrakit_runtime.plugins.instance.file import FileInstancePlugin
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON
from tests.runtime import fakeclock
from tests.runtime.controller.inprocess import MemoryFlavor, World


class CountingFiles:
    """The file plugin, counting complete listings; ``revised=False`` hides its InstanceRevision."""

    def __init__(self, inner: FileInstancePlugin, *, revised: bool = True) -> None:
        self.inner = inner
        self.listings = 0
        if revised:
            self.describe_since = self._describe_since
        for name in ("validate", "provision", "provision_many", "label", "destroy", "wait_change"):
            setattr(self, name, getattr(inner, name))

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        self.listings += 1
        return await self.inner.describe_instances(tags, properties)

    async def _describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        answer = await self.inner.describe_since(tags, properties, revision)
        if answer.descriptions is not None:
            self.listings += 1
        return answer


class FinalFlavor(MemoryFlavor):
    """The memory flavor saying what vanilla says without a probe: every verdict is final."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        self.asked.extend(d.id for d in descriptions)
        return [flavor.Assessment(await self.healthy(properties, d), final=True) for d in descriptions]


class AskedFlavor(MemoryFlavor):
    """The memory flavor counting the members it is asked about, saying nothing of finality (InfraKit's)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        self.asked.extend(d.id for d in descriptions)
        return await super().healthy_many(properties, descriptions)


def scenario(tmp_path, body, *, revised: bool = True, final: bool = True) -> None:
    async def main() -> None:
        world = World(tmp_path / "instances", poll_interval=1.0)
        files = CountingFiles(world.files, revised=revised)
        flavors = FinalFlavor() if final else AskedFlavor()
        world.flavor = flavors
        world.controller.plugins.instances["file"] = files
        world.controller.plugins.flavors["memory"] = flavors
        try:
            await body(world, files, flavors)
        finally:
            await world.close()

    fakeclock.run(main())


async def steady(w: World, size: int) -> None:
    """Converged at ``size``, every member past its grace period (1 s in ``World.spec``), and the
    plugin's directory standing still.

    The file plugin reuses a listing once its directory has not changed for ``LISTING_GUARD_NS`` of
    real time (file timestamps are coarse); the fake clock passes minutes in no real time, so the
    last change is dated back instead of waited for.
    """
    await fakeclock.until(lambda: w.converged(size), within=60, what=f"converged at {size}")
    past = time.time_ns() - 10 * fsutil.LISTING_GUARD_NS
    os.utime(w.files.directory, ns=(past, past))
    await _sleep(3)


async def _sleep(seconds: float) -> None:
    """Let ``seconds`` of loop time pass (fast-forwarded: the supervisor's passes run meanwhile)."""
    await asyncio.sleep(seconds)


def test_passes_over_an_unchanged_group_get_no_listing_ask_no_final_flavor_and_plan_nothing_again(tmp_path,
                                                                                                     monkeypatch):
    plans: list[float] = []

    def counted(**kwargs: Any) -> Any:
        plans.append(kwargs["now"])
        return plan_group(**kwargs)

    monkeypatch.setattr(supervisor_module, "plan_group", counted)

    async def body(w: World, files: CountingFiles, flavors: FinalFlavor) -> None:
        await w.commit(w.spec(size=5))
        await steady(w, 5)
        supervisor = w.controller.supervisors()["web"]
        passes, listings, asked, planned = supervisor.passes, files.listings, len(flavors.asked), len(plans)
        await _sleep(10)  # ten poll intervals
        assert supervisor.passes >= passes + 5
        assert files.listings == listings, "a pass over an unchanged plugin was sent the whole group again"
        assert len(flavors.asked) == asked, "members that had proved themselves were probed again"
        assert len(plans) == planned, "a pass whose inputs were a converged pass's planned again"
        assert supervisor.last is not None and supervisor.last.plan.converged
        assert (await w.controller.describe_group("web")).converged

    scenario(tmp_path, body)


def test_a_commit_after_settled_passes_is_planned_at_once(tmp_path):
    async def body(w: World, files: CountingFiles, flavors: FinalFlavor) -> None:
        await w.commit(w.spec(size=3))
        await steady(w, 3)
        await w.commit(w.spec(size=4))
        await fakeclock.until(lambda: w.converged(4), within=60, what="converged at 4")
        await w.commit(w.spec(size=4, init="v2"))
        await fakeclock.until(lambda: w.converged(4, init="v2"), within=120, what="rolled to v2")

    scenario(tmp_path, body)


def test_a_change_is_seen_and_only_the_new_member_is_asked_about(tmp_path):
    async def body(w: World, files: CountingFiles, flavors: FinalFlavor) -> None:
        await w.commit(w.spec(size=3))
        await steady(w, 3)
        before = {d.id for d in await w.members()}
        victim = sorted(before)[0]
        listings, asked = files.listings, len(flavors.asked)
        (w.files.directory / victim).unlink()  # gone behind the plugin's back

        async def replaced() -> bool:
            ids = {d.id for d in await w.members()}
            return await w.converged(3) and victim not in ids
        await fakeclock.until(replaced, within=60, what="the lost instance replaced")
        assert ("instance_lost", victim) in w.kinds()
        assert files.listings > listings
        await _sleep(3)
        newcomer = ({d.id for d in await w.members()} - before).pop()
        assert set(flavors.asked[asked:]) == {newcomer}, "members that had proved themselves were asked again"

    scenario(tmp_path, body)


def test_a_plugin_without_revisions_is_listed_every_pass_and_still_heals(tmp_path):
    async def body(w: World, files: CountingFiles, flavors: FinalFlavor) -> None:
        assert not isinstance(files, instance.Revised)
        await w.commit(w.spec(size=3))
        await steady(w, 3)
        supervisor = w.controller.supervisors()["web"]
        passes, listings = supervisor.passes, files.listings
        await _sleep(5)
        assert files.listings - listings >= supervisor.passes - passes > 0
        victim = (await w.members())[0].id
        (w.files.directory / victim).unlink()
        await fakeclock.until(lambda: _replaced(w, victim, 3), within=60, what="the lost instance replaced")

    scenario(tmp_path, body, revised=False)


def test_a_flavor_that_does_not_say_final_is_asked_about_every_member_every_pass(tmp_path):
    async def body(w: World, files: CountingFiles, flavors: AskedFlavor) -> None:
        await w.commit(w.spec(size=3, grace="0s", unhealthy_threshold=2))
        await steady(w, 3)
        supervisor = w.controller.supervisors()["web"]
        passes, asked = supervisor.passes, len(flavors.asked)
        await _sleep(5)
        assert len(flavors.asked) - asked >= 3 * (supervisor.passes - passes) > 0
        sick = (await w.members())[0].id
        flavors.unhealthy.add(sick)
        await fakeclock.until(lambda: _replaced(w, sick, 3), within=60, what="the unhealthy instance replaced")

    scenario(tmp_path, body, final=False)


async def _replaced(w: World, victim: str, size: int) -> bool:
    return await w.converged(size) and victim not in {d.id for d in await w.members()}
