"""Model-based test of the planner: a simulated world of instances, plans applied, faults injected.

The world is the cloud (instances with a config hash and a behaviour), the health checks
(records updated as time advances) and the supervisor's memory. Rules plan and apply,
kill, sicken, change the spec and advance time; invariants are the planner's promises.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from infrakit_runtime.group.health import HealthRecord, Verdict, verdict
from infrakit_runtime.group.memory import Memory
from infrakit_runtime.group.plan import Create, Destroy, Plan, Relabel, plan_group
from infrakit_runtime.group.spec import GroupSpec
from infrakit_runtime.spi import flavor, instance
from tests.runtime.group import world

GOOD, BAD, BOOTING = "good", "bad", "booting"
MODEL_SETTINGS = settings(
    max_examples=200, stateful_step_count=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclasses.dataclass
class Sim:
    """One instance in the simulated cloud."""

    config_hash: str
    logical_id: str | None
    behaviour: str


class PlannerWorld(RuleBasedStateMachine):
    """Cattle by default; ``PetsWorld`` runs the same rules over logical IDs."""

    pets = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.inits = 0
        self.size = 3
        self.surge_unavailable = ({"MaxSurge": 1, "MaxUnavailable": 0})
        self.spec = self.make_spec()
        self.instances: dict[str, Sim] = {}
        self.records: dict[str, HealthRecord] = {}
        self.memory = Memory()
        self.next_id = 0
        self.tracking = False   # an update started from a healthy converged group, no fault since
        self.fail_next_creates = False
        self.last_plan: Plan | None = None

    # -- helpers -------------------------------------------------------------------------------

    def make_spec(self) -> GroupSpec:
        ids = [f"10.0.0.{i}" for i in range(1, self.size + 1)] if self.pets else None
        return world.spec(self.size, init=f"echo v{self.inits}", logical_ids=ids or None if self.pets else None,
                          updating=self.surge_unavailable)

    def observed(self) -> list[instance.Description]:
        return [world.member(iid, sim.config_hash, sim.logical_id) for iid, sim in self.instances.items()]

    def verdicts(self) -> dict[str, Verdict]:
        return {iid: verdict(self.records.get(iid), self.spec.health, self.now) for iid in self.instances}

    def available(self) -> int:
        """Ready-or-pending instances (for pets: logical IDs with one)."""
        v = self.verdicts()
        if self.pets:
            return len({self.instances[i].logical_id for i, x in v.items() if x.available}
                       & set(self.spec.logical_ids or ()))
        return sum(1 for x in v.values() if x.available)

    def healthy_converged(self) -> bool:
        v = self.verdicts()
        if len(self.instances) != self.spec.size or any(x is not Verdict.READY for x in v.values()):
            return False
        if any(s.config_hash != self.spec.config_hash for s in self.instances.values()):
            return False
        if self.pets:
            return sorted(s.logical_id or "" for s in self.instances.values()) == sorted(self.spec.logical_ids or ())
        return True

    def plan(self) -> Plan:
        return plan_group(spec=self.spec, observed=self.observed(), health=self.records, memory=self.memory,
                          now=self.now)

    def apply(self, plan: Plan) -> None:
        before = len(self.instances)
        creates = [a for a in plan.actions if isinstance(a, Create)]
        limit = self.spec.size + self.spec.max_surge()
        assert not creates or before + len(creates) <= limit, (before, len(creates), limit, plan)
        for action in plan.actions:
            if isinstance(action, Destroy):
                assert action.instance_id in self.instances, action
                del self.instances[action.instance_id]
                self.records.pop(action.instance_id, None)
                self.memory = self.memory.progressed(self.now)
            elif isinstance(action, Relabel):
                self.instances[action.instance_id].config_hash = action.labels[instance.TAG_CONFIG_HASH]
        for create in creates:
            if self.fail_next_creates:
                self.memory = self.memory.failed(create.slot, self.now, "quota exceeded")
                continue
            iid = f"i-{self.next_id}"
            self.next_id += 1
            self.instances[iid] = Sim(self.spec.config_hash, create.logical_id, BOOTING)
            self.records[iid] = HealthRecord(first_seen=self.now)
            self.memory = self.memory.succeeded(create.slot).progressed(self.now)
        self.fail_next_creates = False

    # -- rules ---------------------------------------------------------------------------------

    @rule()
    def plan_and_act(self) -> None:
        converged_before = self.healthy_converged()
        plan = self.plan()
        if converged_before:
            assert plan.actions == () and plan.converged and plan.condition == "Converged", plan
        self.last_plan = plan
        self.apply(plan)

    @rule(dt=st.floats(min_value=1, max_value=10))
    def advance_time(self, dt: float) -> None:
        self.now += dt
        for iid, sim in self.instances.items():
            record = self.records.setdefault(iid, HealthRecord(first_seen=self.now))
            if sim.behaviour == BOOTING:
                sim.behaviour = GOOD
                self.records[iid] = record.checked(flavor.Health.UNKNOWN)
            else:
                self.records[iid] = record.checked(flavor.Health.HEALTHY if sim.behaviour == GOOD
                                                   else flavor.Health.UNHEALTHY)

    @precondition(lambda self: self.instances)
    @rule(data=st.data())
    def kill_an_instance(self, data: st.DataObject) -> None:
        iid = data.draw(st.sampled_from(sorted(self.instances)))
        del self.instances[iid]
        self.records.pop(iid, None)
        self.tracking = False

    @precondition(lambda self: self.instances)
    @rule(data=st.data())
    def an_instance_turns_unhealthy(self, data: st.DataObject) -> None:
        iid = data.draw(st.sampled_from(sorted(self.instances)))
        self.instances[iid].behaviour = BAD
        self.tracking = False

    @rule()
    def creates_fail_next_time(self) -> None:
        self.fail_next_creates = True
        self.tracking = False

    @rule()
    def change_init(self) -> None:
        self.tracking = self.healthy_converged()
        self.inits += 1
        self.spec = self.make_spec()

    @rule(size=st.integers(min_value=0, max_value=6))
    def change_size(self, size: int) -> None:
        self.size = size
        self.spec = self.make_spec()
        self.tracking = False

    @rule(knobs=st.sampled_from([(1, 0), (0, 1), (2, 1), (1, 2), (3, 3), ("50%", "25%")]))
    def change_rollout_bounds(self, knobs: tuple[object, object]) -> None:
        self.surge_unavailable = {"MaxSurge": knobs[0], "MaxUnavailable": knobs[1]}
        self.spec = self.make_spec()
        self.tracking = False

    @rule()
    def nothing_fails_any_more_and_the_group_converges(self) -> None:
        for sim in self.instances.values():
            sim.behaviour = GOOD
        self.fail_next_creates = False
        for _ in range(200):
            if self.healthy_converged():
                break
            self.apply(self.plan())
            self.check_availability()
            self.advance_time(10.0)
        assert self.healthy_converged(), (self.instances, self.records, self.plan())
        assert self.plan() == dataclasses.replace(self.plan(), actions=())
        assert self.plan().summary == "Noop"

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def check_availability(self) -> None:
        if self.tracking:
            floor = self.spec.size - self.spec.max_unavailable()
            assert self.available() >= floor, (self.available(), floor, self.instances, self.last_plan)

    @invariant()
    def a_converged_plan_has_no_actions(self) -> None:
        if self.last_plan is not None and self.last_plan.converged:
            assert self.last_plan.actions == ()


class PetsWorld(PlannerWorld):
    pets = True


TestCattleModel = PlannerWorld.TestCase
TestCattleModel.settings = MODEL_SETTINGS
TestPetsModel = PetsWorld.TestCase
TestPetsModel.settings = MODEL_SETTINGS


def test_regression_a_rollout_from_a_converged_group_keeps_availability_at_every_step():
    # Shrunk from a run with the availability budget disabled: converge, change Init, converge.
    for machine in (PlannerWorld(), PetsWorld()):
        machine.nothing_fails_any_more_and_the_group_converges()
        machine.change_init()
        assert machine.tracking
        machine.nothing_fails_any_more_and_the_group_converges()
        machine.teardown()
