"""The supervisor during a rollout whose new version or new probe is broken (issue 12, item 1).

In-process, on a fake clock, with an in-memory cloud whose instances run a "program" and a
flavor that answers health by the probe it is given: the logic under test is which probe
judges which member, what the planner is told, and what the supervisor remembers - not I/O
(the same scenarios against real processes are in ``test_rollout_safety.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

from infrakit_runtime.group import events
from infrakit_runtime.group.plan.spec import GroupSpec, parse_spec
from infrakit_runtime.group.supervisor import Supervisor
from infrakit_runtime.spi import flavor, instance

GOOD_PROBE = "http://{{address}}/healthz"
BROKEN_PROBE = "http://{{address}}/nosuch"  # answers 404 on every version


def spec(*, program: str = "good", probe: str = GOOD_PROBE, version: int = 1, size: int = 3, deadline: str = "20s",
         grace: str = "1s", surge: int = 1, unavailable: int = 0) -> GroupSpec:
    return parse_spec({"ID": "web", "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "proc", "Properties": {"Program": program, "Version": version}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Health": {"HTTP": probe}}},
        "Updating": {"MaxSurge": surge, "MaxUnavailable": unavailable, "ProgressDeadline": deadline},
        "Health": {"GracePeriod": grace, "UnhealthyThreshold": 2},
    }})


@dataclasses.dataclass
class Proc:
    description: instance.Description
    program: str
    born: float


class Cloud:
    """Instances that run a program: ``good`` serves, ``broken`` never does, ``crash`` exits after 1 s,
    ``gone`` exits at once (provisioned, never described)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.procs: dict[str, Proc] = {}
        self.created: list[str] = []
        self.destroyed: list[tuple[str, str]] = []
        self._next = 0

    def tick(self) -> None:
        for iid, p in list(self.procs.items()):
            if p.program == "crash" and self.clock[0] - p.born >= 1.0:
                del self.procs[iid]

    def serving(self) -> int:
        return sum(1 for p in self.procs.values() if p.program == "good")

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        return [p.description for p in self.procs.values()
                if all(p.description.tags.get(k) == v for k, v in tags.items())]

    async def provision(self, s: instance.Spec) -> str:
        iid = f"i-{self._next}"
        self._next += 1
        props = s.properties if isinstance(s.properties, dict) else {}
        self.created.append(iid)
        if props.get("Program") != "gone":
            self.procs[iid] = Proc(instance.Description(id=iid, tags=dict(s.tags), logical_id=s.logical_id),
                                   str(props.get("Program")), self.clock[0])
        return iid

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        return [instance.ProvisionResult(id=await self.provision(s)) for s in specs]

    async def destroy(self, iid: str, context: instance.Context) -> None:
        self.procs.pop(iid, None)
        self.destroyed.append((iid, context.reason))

    async def label(self, iid: str, labels: dict[str, str]) -> None:
        self.procs[iid].description.tags.update(labels)


class Probes:
    """A flavor whose probe passes only where the program serves and the probe's path is the right one."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.calls: list[tuple[str, list[str]]] = []

    async def prepare_many(self, properties: Any, specs: list[instance.Spec], allocation: Any, indices: Any) -> list[Any]:
        return list(specs)

    async def healthy_many(self, properties: Any, descriptions: list[instance.Description]) -> list[flavor.Health]:
        probe = properties["Health"]["HTTP"]
        self.calls.append((probe, [d.id for d in descriptions]))
        out = []
        for d in descriptions:
            proc = self.cloud.procs.get(d.id)
            ok = proc is not None and proc.program == "good" and probe == GOOD_PROBE
            out.append(flavor.Health.HEALTHY if ok else flavor.Health.UNHEALTHY)
        return out

    async def drain(self, properties: Any, description: instance.Description) -> None:
        return None


class World:
    def __init__(self, first: GroupSpec) -> None:
        self.clock = [1000.0]
        self.cloud = Cloud(self.clock)
        self.probes = Probes(self.cloud)
        self.events = events.EventLog(clock=lambda: self.clock[0])
        self.supervisor = self.new_supervisor(first)
        self.lowest_serving = math.inf

    def new_supervisor(self, s: GroupSpec) -> Supervisor:
        return Supervisor(spec=s, instances=self.cloud, flavors=self.probes, clock=lambda: self.clock[0],
                          poll_interval=0.5, events=self.events)

    async def run(self, seconds: float, step: float = 0.5) -> None:
        """Pass after pass, ``step`` seconds apart, watching how many instances serve."""
        end = self.clock[0] + seconds
        while self.clock[0] < end:
            self.cloud.tick()
            await self.supervisor.reconcile_once()
            self.lowest_serving = min(self.lowest_serving, self.cloud.serving())
            self.clock[0] += step

    async def converge(self) -> set[str]:
        await self.run(10)
        assert self.supervisor.last is not None and self.supervisor.last.plan.converged, self.supervisor.last
        return set(self.cloud.procs)


def test_a_broken_new_probe_never_costs_a_serving_instance_and_the_stuck_rollout_says_so():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        w.lowest_serving = math.inf
        w.supervisor.update(spec(probe=BROKEN_PROBE))
        await w.run(60)
        assert old <= set(w.cloud.procs), f"serving instances destroyed: {w.cloud.destroyed}"
        assert w.lowest_serving >= 3
        assert not [d for d in w.cloud.destroyed if d[0] in old]
        plan = w.supervisor.last.plan
        assert plan.condition == "Degraded", plan
        assert "rollout stuck" in plan.reason and "Updating.ProgressDeadline is 20s" in plan.reason, plan.reason
        assert "3 instances of the previous spec keep serving" in plan.reason, plan.reason
        # Each replacement of a new member that never passed its probe backs off: no churn every few seconds.
        assert len(w.cloud.created) - 3 <= 8, f"{len(w.cloud.created) - 3} new instances in 60 s"

    asyncio.run(scenario())


def test_old_members_keep_the_health_record_of_their_own_probe_across_a_commit():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        before = {i: w.supervisor.health[i] for i in old}
        w.supervisor.update(spec(probe=BROKEN_PROBE))
        await w.run(3)
        for iid in old:
            record = w.supervisor.health[iid]
            assert record.first_seen == before[iid].first_seen
            assert record.probe == spec().config_hash, "an old member is judged by the probe it was made with"
            assert record.last == flavor.Health.HEALTHY and record.consecutive_healthy > before[iid].consecutive_healthy
        judged_old = [ids for probe, ids in w.probes.calls[-4:] if probe == GOOD_PROBE]
        assert judged_old and set(judged_old[-1]) == old

    asyncio.run(scenario())


def test_a_broken_new_program_stalls_the_rollout_behind_the_old_members():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        w.lowest_serving = math.inf
        w.supervisor.update(spec(program="broken"))
        await w.run(60)
        assert old <= set(w.cloud.procs) and w.lowest_serving >= 3
        assert w.supervisor.last.plan.condition == "Degraded"
        assert len(w.cloud.created) - 3 <= 8

    asyncio.run(scenario())


def test_a_crash_looping_new_version_backs_off_and_the_old_members_keep_serving():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        w.lowest_serving = math.inf
        w.supervisor.update(spec(program="crash"))
        await w.run(60)
        assert old <= set(w.cloud.procs) and w.lowest_serving >= 3
        assert len(w.cloud.created) - 3 <= 8, f"{len(w.cloud.created) - 3} crashing instances started in 60 s"
        assert w.supervisor.memory.failures, "each crash counts as a failure of the slot"
        assert "exited" in w.supervisor.memory.last_error()

    asyncio.run(scenario())


def test_a_controller_restarted_mid_stalled_rollout_does_not_take_the_old_members():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        w.lowest_serving = math.inf
        w.supervisor.update(spec(probe=BROKEN_PROBE))
        await w.run(5)
        # A new leader knows only the stored spec: the old members' probe is unknown to it.
        w.supervisor = w.new_supervisor(spec(probe=BROKEN_PROBE))
        await w.run(60)
        assert old <= set(w.cloud.procs) and w.lowest_serving >= 3
        # Rolled back: the old members are current again, the broken new member goes, nothing dipped.
        w.supervisor.update(spec())
        await w.run(30)
        assert w.lowest_serving >= 3 and set(w.cloud.procs) == old
        assert w.supervisor.last.plan.converged

    asyncio.run(scenario())


def test_after_a_restart_the_new_probe_judges_old_members_only_once_it_has_passed_on_a_new_one():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        w.supervisor = w.new_supervisor(spec(version=2))  # a new version, the same probe
        w.lowest_serving = math.inf
        await w.run(30)
        assert w.lowest_serving >= 3
        assert not old & set(w.cloud.procs), "the rollout completes once the new probe has passed"
        assert w.supervisor.last.plan.converged

    asyncio.run(scenario())


def test_a_new_version_that_exits_before_it_is_ever_described_is_reported_and_backs_off():
    async def scenario() -> None:
        w = World(spec())
        old = await w.converge()
        w.supervisor.update(spec(program="gone"))
        await w.run(45)
        assert old <= set(w.cloud.procs) and w.lowest_serving >= 3
        assert "never appeared in the instance plugin's description within 30s" in w.supervisor.memory.last_error()
        assert w.supervisor.memory.get("*").kind == "crash"  # it ended on its own: a crash, not a failed probe

    asyncio.run(scenario())


