"""A rollout never takes the members serving before the commit below size - MaxUnavailable (issue 12, item 1).

Whatever the new spec says about health: members are judged by the probe they were made
with, a new probe judges older members only once it has passed on a new one, and the brake
counts every member that looks dead before any destroy is planned, whatever would remove it.
"""

from __future__ import annotations

from infrakit_runtime.group.plan.health import HealthRecord, Verdict
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import Create, Destroy, judge_members, plan_group
from infrakit_runtime.spi import flavor
from tests.runtime.group import world
from tests.runtime.group.world import member, ready

NOW = 1000.0
OLD = world.spec(3)
NEW = world.spec(3, init="v2", updating={"MaxSurge": 1, "MaxUnavailable": 0, "ProgressDeadline": "60s"})


def plan(spec, members, health, memory=None, now=NOW):
    return plan_group(spec=spec, observed=members, health=health, memory=memory or Memory(), now=now)


def checks(answers: str, *, probe: str | None, first_seen: float = 0.0) -> HealthRecord:
    """A record after a sequence of answers: ``h`` healthy, ``u`` unhealthy, ``?`` unknown."""
    record = HealthRecord(first_seen=first_seen, probe=probe)
    for a in answers:
        record = record.checked({"h": flavor.Health.HEALTHY, "u": flavor.Health.UNHEALTHY}.get(a, flavor.Health.UNKNOWN))
    return record


def destroyed(p) -> list[str]:
    return sorted(a.instance_id for a in p.actions if isinstance(a, Destroy))


def rollout_members():
    return [member(i, OLD.config_hash) for i in ("o1", "o2", "o3")] + [member("n1", NEW.config_hash)]


def test_members_made_by_the_old_spec_are_not_condemned_by_a_new_probe_that_has_never_passed():
    # After a restart the old probe is unknown: the old members were checked with the new, broken one.
    health = {i: checks("hhhuuuu", probe=NEW.config_hash) for i in ("o1", "o2", "o3")}
    health["n1"] = checks("uuuu", probe=NEW.config_hash)
    p = plan(NEW, rollout_members(), health)
    verdicts = judge_members(spec=NEW, observed=rollout_members(), health=health, now=NOW)
    assert [verdicts[i] for i in ("o1", "o2", "o3")] == [Verdict.UNJUDGED] * 3
    assert verdicts["n1"] is Verdict.FAILED
    assert destroyed(p) == ["n1"], "only the new member its own probe condemned goes"
    assert p.counts.unjudged == 3 and p.status()["Unjudged"] == 3


def test_old_members_judged_by_their_own_probe_stay_ready_and_go_only_as_new_ones_become_ready():
    health = {i: checks("hhhhh", probe=OLD.config_hash) for i in ("o1", "o2", "o3")}
    health["n1"] = checks("uu", probe=NEW.config_hash, first_seen=NOW - 5)
    assert destroyed(plan(NEW, rollout_members(), health)) == []
    health["n1"] = checks("uuh", probe=NEW.config_hash, first_seen=NOW - 5)
    assert len(destroyed(plan(NEW, rollout_members(), health))) == 1


def test_once_the_new_probe_has_passed_on_a_new_member_it_judges_old_members_whose_probe_is_unknown():
    health = {i: checks("hhhuuuu", probe=NEW.config_hash) for i in ("o1", "o2", "o3")}
    health["n1"] = checks("h", probe=NEW.config_hash, first_seen=NOW - 1)
    verdicts = judge_members(spec=NEW, observed=rollout_members(), health=health, now=NOW)
    assert [verdicts[i] for i in ("o1", "o2", "o3")] == [Verdict.FAILED] * 3
    # Three look dead: more than MaxUnhealthy (40% of 3 = 1) - the brake distrusts the verdicts. The rollout goes
    # on only as if the old members served: one goes, paid for by the READY new member, none for being "dead".
    p = plan(NEW, rollout_members(), health)
    assert p.braked and p.condition == "Degraded"
    assert destroyed(p) == ["o1"] and all(a.cause == "rolling_update" for a in p.actions if isinstance(a, Destroy))


def test_members_that_answer_no_health_check_are_not_rolled_away_for_free():
    # The flavor plugin is down: every check says UNKNOWN, so every member is past its grace and not ready.
    members = [member(f"o{k}", OLD.config_hash) for k in range(5)] + [member("n1", NEW.config_hash)]
    health = {m.id: checks("??", probe=None) for m in members}
    spec5 = world.spec(5, init="v2")
    p = plan(spec5, [member(f"o{k}", OLD.config_hash) for k in range(5)] + [member("n1", spec5.config_hash)], health)
    assert destroyed(p) == [], "a member that does not answer is not known to be down"
    assert p.braked and p.condition == "Degraded"
    assert p.reason.startswith("max-unhealthy brake: 6 of 5 instances are unhealthy or not passing their health checks")


def test_failed_outdated_members_beyond_the_brake_are_not_rolled_away_for_free():
    spec5 = world.spec(5, init="v2")
    members = [member(f"o{k}", OLD.config_hash) for k in range(5)]
    health = {f"o{k}": (world.failing() if k < 3 else ready()) for k in range(5)}
    p = plan(spec5, members, health)
    assert destroyed(p) == [] and p.braked
    assert [a for a in p.actions if isinstance(a, Create)], "the rollout still surges new members"


def test_at_most_max_unhealthy_outdated_members_that_look_dead_go_without_being_paid_for():
    spec5 = world.spec(5, init="v2")
    members = [member(f"o{k}", OLD.config_hash) for k in range(5)] + [member("n1", spec5.config_hash)]
    health = {f"o{k}": (world.failing() if k < 2 else ready()) for k in range(5)} | {"n1": ready()}
    p = plan(spec5, members, health)
    assert not p.braked
    assert destroyed(p) == ["o0", "o1"]


def test_the_brake_still_lets_a_scale_down_remove_outdated_members_within_the_budget():
    spec2 = world.spec(2, init="v2")
    members = [member(f"o{k}", OLD.config_hash) for k in range(5)] + [member("n1", spec2.config_hash),
                                                                       member("n2", spec2.config_hash)]
    health = {f"o{k}": world.failing() for k in range(5)} | {"n1": ready(), "n2": ready()}
    p = plan(spec2, members, health)
    assert p.braked
    assert destroyed(p) == ["o0", "o1", "o2", "o3", "o4"]
    assert {a.cause for a in p.actions if isinstance(a, Destroy)} == {"scale_down"}


def test_a_pet_whose_own_probe_calls_it_dead_gives_way_to_a_pending_successor_unless_the_brake_holds():
    ids = ["a", "b", "c", "d", "e"]
    old, new = world.spec(logical_ids=ids), world.spec(logical_ids=ids, init="v2")
    members = [member(f"o-{x}", old.config_hash, x) for x in ids] + [member("n-a", new.config_hash, "a")]
    health = {f"o-{x}": ready() for x in ids} | {"o-a": world.failing(), "n-a": HealthRecord(first_seen=NOW)}
    assert destroyed(plan(new, members, health)) == ["o-a"]
    health |= {"o-b": world.failing(), "o-c": world.failing()}
    p = plan(new, members, health)
    assert p.braked and destroyed(p) == []


def test_a_stalled_rollout_past_its_deadline_says_it_is_stuck_and_who_keeps_serving():
    health = {i: checks("hhhhh", probe=OLD.config_hash) for i in ("o1", "o2", "o3")}
    health["n1"] = checks("uu", probe=NEW.config_hash, first_seen=NOW - 0.5)
    memory = Memory().failed("*", NOW - 30, "instance n0 never passed its health check (unhealthy for 3 consecutive "
                                            "checks)", kind="start").progressed(NOW - 61)
    p = plan(NEW, rollout_members(), health, memory=memory)
    assert p.condition == "Degraded" and destroyed(p) == []
    assert p.reason == ("rollout stuck: no progress for 61s (Updating.ProgressDeadline is 60s); 0 of 3 instances run "
                        "the new spec and pass its health check, 3 instances of the previous spec keep serving; last "
                        "failure: instance n0 never passed its health check (unhealthy for 3 consecutive checks)")
