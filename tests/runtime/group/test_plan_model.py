"""Model-based test of the planner: a simulated world of instances, plans applied, faults injected.

The world is the cloud (instances with a config hash, the program their spec runs and a
behaviour), the health checks (records updated as time advances, each member checked with
the probe of the spec that made it while the "controller" knows that spec - the supervisor's
rule, ``health.probe_for``) and the supervisor's memory (kept by the same ``outcomes`` rules
the supervisor applies). Rules plan and apply, kill, sicken, change the spec - to a working
version or a broken one: a program that never serves, one that crashes at start, one that
starts slower than the grace period, a probe that answers 404, a probe that flaps - restart
the controller (it forgets health, backoff and every probe but the current spec's) and advance
time; invariants are the planner's promises, checked against the truth of the world: the
instances that really serve never drop below ``size - MaxUnavailable`` during a rollout that
began on a healthy group, whatever the new spec says about health.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from infrakit_runtime.group.plan import outcomes
from infrakit_runtime.group.plan.health import HealthRecord, Verdict, probe_for
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import Create, Destroy, Plan, Relabel, judge_members, plan_group
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.spi import flavor, instance
from tests.runtime.group import world

GOOD, BAD, BOOTING = "good", "bad", "booting"
# What a spec's program does, and what its probe answers.
WORKS, NEVER_SERVES, CRASHES, SLOW = "works", "never-serves", "crashes-at-start", "slow-start"
PROBE_OK, PROBE_404, PROBE_FLAPS = "ok", "404", "flaps"
SLOW_START = 45.0  # seconds before a slow program serves: longer than the 30 s grace period
DEADLINE = 120.0
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
    program: str = WORKS
    born: float = 0.0
    checks: int = 0

    def serves(self, now: float) -> bool:
        """The truth, whatever any probe says."""
        if self.behaviour != GOOD or self.program in (NEVER_SERVES, CRASHES):
            return False
        return self.program != SLOW or now - self.born >= SLOW_START


class PlannerWorld(RuleBasedStateMachine):
    """Cattle by default; ``PetsWorld`` runs the same rules over logical IDs."""

    pets = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.inits = 0
        self.size = 3
        self.surge_unavailable = ({"MaxSurge": 1, "MaxUnavailable": 0})
        self.version = (WORKS, PROBE_OK)
        self.versions: dict[str, tuple[str, str]] = {}
        self.spec = self.make_spec()
        self.known = {self.spec.config_hash}  # the specs whose probes the "controller" knows
        self.instances: dict[str, Sim] = {}
        self.records: dict[str, HealthRecord] = {}
        self.memory = Memory().progressed(self.now)
        self.next_id = 0
        self.tracking = False   # an update started from a healthy converged group, no fault since
        self.fail_next_creates = False
        self.probes_down_until = 0.0  # the flavor plugin answers nothing (UNKNOWN) until then
        self.blind = False  # the checks went dark or flap during this rollout: only the truth of the world is checked
        self.last_plan: Plan | None = None

    # -- helpers -------------------------------------------------------------------------------

    def make_spec(self) -> GroupSpec:
        ids = [f"10.0.0.{i}" for i in range(1, self.size + 1)] if self.pets else None
        program, probe = self.version
        spec = world.spec(self.size, init=f"echo v{self.inits} {program} {probe}",
                          logical_ids=ids or None if self.pets else None,
                          updating={**self.surge_unavailable, "ProgressDeadline": f"{DEADLINE:g}s"})
        self.versions[spec.config_hash] = self.version
        return spec

    def commit(self, spec: GroupSpec) -> None:
        """What the supervisor does on a commit: remember the new probe, restart the clock on a new config."""
        self.memory = outcomes.after_commit(self.memory, previous=self.spec, spec=spec, now=self.now)
        self.known.add(spec.config_hash)
        self.spec = spec

    def observed(self) -> list[instance.Description]:
        return [world.member(iid, sim.config_hash, sim.logical_id) for iid, sim in self.instances.items()]

    def verdicts(self) -> dict[str, Verdict]:
        return judge_members(spec=self.spec, observed=self.observed(), health=self.records, now=self.now)

    def serving(self) -> int:
        """Instances that really serve (for pets: logical IDs of the spec with one that does)."""
        live = [s for s in self.instances.values() if s.serves(self.now)]
        if self.pets:
            return len({s.logical_id for s in live} & set(self.spec.logical_ids or ()))
        return len(live)

    def answer(self, sim: Sim, probe_hash: str) -> flavor.Health:
        """What the probe of the spec hashed ``probe_hash`` says about ``sim``."""
        sim.checks += 1
        if self.now < self.probes_down_until:
            return flavor.Health.UNKNOWN
        probe = self.versions[probe_hash][1]
        if probe == PROBE_404:
            return flavor.Health.UNHEALTHY
        if not sim.serves(self.now):
            return flavor.Health.UNHEALTHY
        if probe == PROBE_FLAPS and sim.checks % 2:
            return flavor.Health.UNHEALTHY
        return flavor.Health.HEALTHY

    def available(self) -> int:
        """Ready-or-pending instances (for pets: logical IDs with one)."""
        v = self.verdicts()
        if self.pets:
            return len({self.instances[i].logical_id for i, x in v.items() if x.available}
                       & set(self.spec.logical_ids or ()))
        return sum(1 for x in v.values() if x.available)

    def healthy_world(self) -> bool:
        """Converged and healthy in the planner's eyes, and every instance really serves."""
        return self.healthy_converged() and all(s.serves(self.now) for s in self.instances.values())

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
        self.memory = outcomes.after_plan(self.memory, plan=plan, now=self.now)
        for action in plan.actions:
            if isinstance(action, Destroy):
                assert action.instance_id in self.instances, action
                description = self.describe(action.instance_id)
                del self.instances[action.instance_id]
                self.memory = outcomes.after_destroy(self.memory, spec=self.spec, action=action,
                                                     description=description,
                                                     record=self.records.pop(action.instance_id, None), now=self.now)
            elif isinstance(action, Relabel):
                self.instances[action.instance_id].config_hash = action.labels[instance.TAG_CONFIG_HASH]
        for create in creates:
            if self.fail_next_creates:
                self.memory = self.memory.failed(create.slot, self.now, "quota exceeded")
                continue
            iid = f"i-{self.next_id}"
            self.next_id += 1
            self.instances[iid] = Sim(self.spec.config_hash, create.logical_id, BOOTING,
                                      program=self.versions[self.spec.config_hash][0], born=self.now)
            self.records[iid] = HealthRecord(first_seen=self.now, probe=self.spec.config_hash)
            self.memory = self.memory.provisioned(create.slot)
        self.fail_next_creates = False

    def describe(self, iid: str) -> instance.Description:
        sim = self.instances[iid]
        return world.member(iid, sim.config_hash, sim.logical_id)

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
        """Time passes and a supervisor pass checks health: crashed instances are lost, the rest probed."""
        self.now += dt
        for iid, sim in list(self.instances.items()):
            if sim.behaviour == BOOTING and sim.program == CRASHES:
                description = self.describe(iid)
                del self.instances[iid]
                self.memory = outcomes.after_loss(self.memory, spec=self.spec, description=description,
                                                  record=self.records.pop(iid, None), now=self.now)
        before = dict(self.records)
        for iid, sim in self.instances.items():
            probe = probe_for(config_hash=sim.config_hash, current=self.spec.config_hash, known=self.known)
            record = self.records.get(iid) or HealthRecord(first_seen=self.now)
            record = record.judged_by(probe)
            if sim.behaviour == BOOTING:
                sim.behaviour = GOOD
                self.records[iid] = record.checked(flavor.Health.UNKNOWN)
            else:
                self.records[iid] = record.checked(self.answer(sim, probe))
        self.memory = outcomes.after_checks(self.memory, spec=self.spec, members=self.observed(), before=before,
                                            after=self.records, now=self.now)
        self.known = {h for h in self.known
                      if h == self.spec.config_hash or any(s.config_hash == h for s in self.instances.values())}

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
        self.tracking = self.healthy_world()
        self.blind = self.now < self.probes_down_until
        self.inits += 1
        self.version = (WORKS, PROBE_OK)
        self.commit(self.make_spec())

    @rule(version=st.sampled_from([(NEVER_SERVES, PROBE_OK), (CRASHES, PROBE_OK), (SLOW, PROBE_OK),
                                   (WORKS, PROBE_404), (WORKS, PROBE_FLAPS)]))
    def commit_a_broken_version(self, version: tuple[str, str]) -> None:
        """A new program that never serves, crashes at start or starts slowly; or a new probe that 404s or flaps."""
        self.tracking = self.healthy_world()
        # A flapping probe makes the planner's own view flap too: only the truth of the world is checked.
        self.blind = self.now < self.probes_down_until or version[1] == PROBE_FLAPS
        self.inits += 1
        self.version = version
        self.commit(self.make_spec())

    @rule(seconds=st.floats(min_value=10, max_value=120))
    def the_flavor_plugin_goes_down(self, seconds: float) -> None:
        """Every check answers UNKNOWN for a while; the instances themselves still serve."""
        self.probes_down_until = self.now + seconds
        self.blind = True

    @rule()
    def the_controller_restarts(self) -> None:
        """A new leader: health records, backoff and the probes of earlier specs are gone; the world is not."""
        self.records = {}
        self.memory = Memory().progressed(self.now)
        self.known = {self.spec.config_hash}

    @precondition(lambda self: self.version[0] in (NEVER_SERVES, CRASHES) or self.version[1] == PROBE_404)
    @rule()
    def a_broken_version_runs_past_its_deadline(self) -> None:
        """New members never become healthy: the rollout stalls, the old ones keep serving, Degraded says why."""
        started, creates = self.now, 0
        while self.now - started < DEADLINE + 90:
            plan = self.plan()
            creates += sum(1 for a in plan.actions if isinstance(a, Create))
            self.last_plan = plan
            self.apply(plan)
            self.check_availability()
            self.advance_time(5.0)
            self.check_availability()
        plan = self.plan()
        if not plan.converged and any(s.config_hash != self.spec.config_hash for s in self.instances.values()):
            assert plan.condition == "Degraded", plan
            assert "rollout stuck" in plan.reason or plan.reason.startswith("max-unhealthy brake"), plan.reason
        # Backoff: a crash loop is not restarted every pass (without it: a create per slot per pass, 42 passes here).
        assert creates <= 12 * (self.spec.size + self.spec.max_surge()), creates

    @rule(size=st.integers(min_value=0, max_value=6))
    def change_size(self, size: int) -> None:
        self.size = size
        self.commit(self.make_spec())
        self.tracking = False

    @rule(knobs=st.sampled_from([(1, 0), (0, 1), (2, 1), (1, 2), (3, 3), ("50%", "25%")]))
    def change_rollout_bounds(self, knobs: tuple[object, object]) -> None:
        self.surge_unavailable = {"MaxSurge": knobs[0], "MaxUnavailable": knobs[1]}
        self.commit(self.make_spec())
        self.tracking = False

    @rule()
    def nothing_fails_any_more_and_the_group_converges(self) -> None:
        self.probes_down_until = 0.0
        if self.version != (WORKS, PROBE_OK):  # the operator commits a version that works
            self.change_init()
        for sim in self.instances.values():
            if sim.behaviour == BAD:
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
            if not self.blind:  # what the planner believes serves (it cannot know while the checks are dark)
                assert self.available() >= floor, (self.available(), floor, self.instances, self.last_plan)
            assert self.serving() >= floor, ("really serving", self.serving(), floor, self.instances, self.records,
                                             self.last_plan)

    @invariant()
    def a_converged_plan_has_no_actions(self) -> None:
        if self.last_plan is not None and self.last_plan.converged:
            assert self.last_plan.actions == ()

    @invariant()
    def a_converged_plan_stays_the_plan_while_only_time_passes(self) -> None:
        # What lets the supervisor skip planning a pass whose inputs are those of a converged one.
        plan = self.plan()
        if plan.converged:
            later = self.now + 3600
            assert plan_group(spec=self.spec, observed=self.observed(), health=self.records,
                              memory=self.memory.progressed(later), now=later) == plan

    @invariant()
    def the_plan_says_converged_exactly_when_count_config_and_health_all_match(self) -> None:
        plan = self.plan()
        assert plan.converged == self.healthy_converged(), (plan, self.instances, self.records)
        assert (plan.condition == "Converged") == plan.converged, plan
        assert plan.requeue_after == (None if plan.converged else plan.requeue_after), plan
        assert not plan.actions or plan.requeue_after == 0.0, plan


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


def run(machine: PlannerWorld, seconds: float, step: float = 5.0) -> None:
    """Pass after pass for ``seconds``, the invariants checked after each plan and each health check."""
    end = machine.now + seconds
    while machine.now < end:
        machine.plan_and_act()
        machine.check_availability()
        machine.advance_time(step)
        machine.check_availability()


def converged_then(version: tuple[str, str], machine: PlannerWorld) -> set[str]:
    machine.nothing_fails_any_more_and_the_group_converges()
    old = set(machine.instances)
    machine.commit_a_broken_version(version)
    assert machine.tracking
    return old


def test_regression_a_new_probe_that_answers_404_never_costs_a_serving_member():
    for machine in (PlannerWorld(), PetsWorld()):
        old = converged_then((WORKS, PROBE_404), machine)
        machine.a_broken_version_runs_past_its_deadline()
        assert old <= set(machine.instances)
        assert "rollout stuck" in machine.plan().reason
        machine.teardown()


def test_regression_a_new_program_that_never_serves_or_crashes_at_start_stalls_behind_the_old_members():
    for version in ((NEVER_SERVES, PROBE_OK), (CRASHES, PROBE_OK)):
        for machine in (PlannerWorld(), PetsWorld()):
            old = converged_then(version, machine)
            machine.a_broken_version_runs_past_its_deadline()
            assert old <= set(machine.instances), version
            plan = machine.plan()
            assert plan.condition == "Degraded" and "rollout stuck" in plan.reason, (version, plan)
            machine.nothing_fails_any_more_and_the_group_converges()  # fixed: a working version rolls out
            machine.teardown()


def test_regression_a_flapping_probe_or_a_slow_start_never_costs_a_serving_member():
    for version in ((WORKS, PROBE_FLAPS), (SLOW, PROBE_OK)):
        for machine in (PlannerWorld(), PetsWorld()):
            converged_then(version, machine)
            run(machine, 400)
            machine.nothing_fails_any_more_and_the_group_converges()
            machine.teardown()


def test_regression_a_restarted_controller_keeps_the_old_members_of_a_stuck_rollout():
    for machine in (PlannerWorld(), PetsWorld()):
        old = converged_then((WORKS, PROBE_404), machine)
        run(machine, 20)
        machine.the_controller_restarts()
        run(machine, 20)
        assert all(v is Verdict.UNJUDGED for i, v in machine.verdicts().items() if i in old)
        machine.a_broken_version_runs_past_its_deadline()
        assert old <= set(machine.instances)
        machine.nothing_fails_any_more_and_the_group_converges()
        machine.teardown()


def test_regression_health_checks_going_dark_during_a_slow_rollout_cost_no_serving_member():
    # Shrunk by hand from the brake's old rule (only FAILED counted): with every check UNKNOWN, the
    # old members looked SUSPECT and one went for free while the new one was still starting.
    for machine in (PlannerWorld(), PetsWorld()):
        converged_then((SLOW, PROBE_OK), machine)
        machine.plan_and_act()
        machine.the_flavor_plugin_goes_down(60.0)
        run(machine, 60)
        machine.nothing_fails_any_more_and_the_group_converges()
        machine.teardown()
