"""Cattle: scaling, rolling updates within MaxSurge/MaxUnavailable, adoption, convergence."""

from __future__ import annotations

from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import (
    CAUSE_ROLLING_UPDATE,
    CAUSE_SCALE_DOWN,
    Create,
    Destroy,
    Relabel,
    plan_group,
)
from infrakit_runtime.spi import instance
from tests.runtime.group import world
from tests.runtime.group.world import member, ready, unknown

NOW = 1000.0
OLD = world.spec(3).config_hash


def plan(spec, members, health=None, memory=None, now=NOW):
    return plan_group(spec=spec, observed=members, health=health or {}, memory=memory or Memory(), now=now)


def destroyed(p) -> list[str]:
    return [a.instance_id for a in p.actions if isinstance(a, Destroy)]


def creates(p) -> int:
    return sum(1 for a in p.actions if isinstance(a, Create))


def test_a_new_group_creates_every_member():
    p = plan(world.spec(3), [])
    assert p.actions == (Create(None, "increasing the group to 3 instances"),) * 3
    assert p.summary == "Adding 3 instances to increase the group size to 3"
    assert (p.converged, p.condition) == (False, "Progressing")


def test_a_converged_group_plans_nothing_and_says_noop():
    spec = world.spec(3)
    p = plan(spec, [member(f"i{n}", spec.config_hash) for n in range(3)], {f"i{n}": ready() for n in range(3)})
    assert p.is_noop and p.converged and p.summary == "Noop" and p.condition == "Converged" and p.reason == ""
    assert (p.counts.desired, p.counts.running, p.counts.healthy, p.counts.outdated) == (3, 3, 3, 0)


def test_instances_of_other_groups_are_ignored():
    spec = world.spec(1)
    p = plan(spec, [member("mine", spec.config_hash), member("theirs", spec.config_hash, group="other")])
    assert p.is_noop and p.counts.running == 1


def test_a_missing_instance_is_recreated():
    spec = world.spec(3)
    p = plan(spec, [member("a", spec.config_hash), member("b", spec.config_hash)], {"a": ready(), "b": ready()})
    assert creates(p) == 1 and destroyed(p) == []
    assert p.summary == "Adding 1 instances to increase the group size to 3"


def test_scale_down_removes_outdated_instances_first():
    spec = world.spec(2, init="v2")
    members = [member("new1", spec.config_hash), member("new2", spec.config_hash), member("old", OLD)]
    health = {"new1": ready(10), "new2": ready(20), "old": ready(0)}
    p = plan(spec, members, health)
    assert destroyed(p) == ["old"] and creates(p) == 0
    assert p.actions[0].cause == CAUSE_SCALE_DOWN and p.actions[0].drain


def test_scale_down_removes_unhealthy_before_healthy_and_newest_before_oldest():
    spec = world.spec(2)
    members = [member(i, spec.config_hash) for i in ("oldest", "middle", "newest", "sick")]
    health = {"oldest": ready(0), "middle": ready(10), "newest": ready(20), "sick": unknown(5)}
    p = plan(spec, members, health)
    assert destroyed(p) == ["sick", "newest"]
    assert p.summary == "Terminating 2 instances to reduce the group size to 2"
    assert all(a.context == instance.Context(instance.REASON_TERMINATE) for a in p.actions)


def test_scale_down_to_zero_removes_everything():
    spec = world.spec(0)
    p = plan(spec, [member("a", spec.config_hash), member("b", spec.config_hash)], {"a": ready(), "b": ready()})
    assert sorted(destroyed(p)) == ["a", "b"]


def test_rolling_update_surges_one_before_destroying_anything():
    spec = world.spec(3, init="v2")
    members = [member(i, OLD) for i in "abc"]
    p = plan(spec, members, {i: ready() for i in "abc"})
    assert destroyed(p) == [] and creates(p) == 1
    assert p.summary == "Performing a rolling update on 3 instances"
    assert p.counts.outdated == 3


def test_an_outdated_instance_is_destroyed_only_when_its_replacement_is_ready():
    spec = world.spec(3, init="v2")
    members = [*(member(i, OLD) for i in "abc"), member("new", spec.config_hash)]
    waiting = plan(spec, members, {**{i: ready(0) for i in "abc"}, "new": unknown(NOW - 5)})
    assert waiting.is_noop and not waiting.converged and "healthy" in waiting.reason
    go = plan(spec, members, {**{i: ready(0 if i == "b" else 10) for i in "abc"}, "new": ready(NOW - 5)})
    assert destroyed(go) == ["b"] and creates(go) == 0  # the oldest goes; the surge is full until it is gone
    assert go.actions[0].cause == CAUSE_ROLLING_UPDATE
    assert go.actions[0].context == instance.Context(instance.REASON_ROLLING_UPDATE)


def test_rolling_update_with_no_surge_replaces_one_within_max_unavailable():
    spec = world.spec(3, init="v2", updating={"MaxSurge": 0, "MaxUnavailable": 1})
    p = plan(spec, [member(i, OLD) for i in "abc"], {i: ready() for i in "abc"})
    assert len(destroyed(p)) == 1 and creates(p) == 0
    after = plan(spec, [member(i, OLD) for i in "bc"], {i: ready() for i in "bc"})
    assert destroyed(after) == [] and creates(after) == 1


def test_rolling_update_respects_a_larger_budget():
    spec = world.spec(4, init="v2", updating={"MaxSurge": 2, "MaxUnavailable": 2})
    p = plan(spec, [member(i, OLD) for i in "abcd"], {i: ready() for i in "abcd"})
    assert len(destroyed(p)) == 2 and creates(p) == 2


def test_surge_counts_instances_the_same_plan_destroys():
    spec = world.spec(3, updating={"MaxSurge": 0, "MaxUnavailable": 1})
    members = [member(i, spec.config_hash) for i in "abc"]
    p = plan(spec, members, {"a": ready(), "b": ready(), "c": world.failing()})
    assert destroyed(p) == ["c"] and creates(p) == 0  # the replacement waits for the next pass


def test_unknown_health_after_grace_is_not_available_for_the_budget():
    spec = world.spec(3, init="v2")
    members = [*(member(i, OLD) for i in "abc"), member("new", spec.config_hash)]
    p = plan(spec, members, {**{i: ready() for i in "abc"}, "new": unknown(NOW - 60)})
    assert p.is_noop and p.counts.suspect == 1


def test_outdated_instances_that_are_not_available_go_first_without_breaking_the_count():
    spec = world.spec(3, init="v2")
    members = [*(member(i, OLD) for i in "abc"), member("new", spec.config_hash)]
    health = {"a": ready(), "b": unknown(0), "c": ready(), "new": unknown(NOW - 1)}
    p = plan(spec, members, health)
    assert destroyed(p) == ["b"]


def test_a_bootstrap_instance_is_adopted_by_relabelling_without_a_rollout():
    spec = world.spec(2)
    members = [member("a", spec.config_hash), member("b", instance.BOOTSTRAP_CONFIG_HASH)]
    p = plan(spec, members, {"a": ready(), "b": ready()})
    assert p.actions == (Relabel("b", ((instance.TAG_CONFIG_HASH, spec.config_hash),)),)
    assert p.actions[0].labels == {instance.TAG_CONFIG_HASH: spec.config_hash}
    assert p.summary == "Managing 2 instances" and not p.converged


def test_a_member_without_a_config_hash_is_outdated():
    spec = world.spec(1)
    bare = instance.Description(id="x", tags={instance.TAG_GROUP: world.GROUP})
    assert plan(spec, [bare], {"x": ready()}).counts.outdated == 1


def test_rolling_update_then_growth_is_described_as_infrakit_does():
    spec = world.spec(5, init="v2")
    p = plan(spec, [member(i, OLD) for i in "abc"], {i: ready() for i in "abc"})
    assert p.summary == "Performing a rolling update on 3 instances, then adding 2 instances to increase the group size to 5"
    assert creates(p) == 3  # two to grow, one surge


def test_shrinking_and_rolling_is_described_as_infrakit_does():
    spec = world.spec(2, init="v2")
    p = plan(spec, [member(i, OLD) for i in "abc"], {i: ready() for i in "abc"})
    assert p.summary == "Terminating 1 instances to reduce the group size to 2,  then performing a rolling update on 2 instances"
    assert len(destroyed(p)) == 1


def test_skip_before_instance_destroy_skips_drain_for_rolling_updates_only():
    spec = world.spec(3, init="v2", updating={"MaxSurge": 0, "MaxUnavailable": 1, "SkipBeforeInstanceDestroy": "drain"})
    p = plan(spec, [member(i, OLD) for i in "abc"], {i: ready() for i in "abc"})
    assert [a.drain for a in p.actions if isinstance(a, Destroy)] == [False]


def test_plans_are_values_equal_for_equal_inputs():
    spec = world.spec(3, init="v2")
    members = [member(i, OLD) for i in "abc"]
    assert plan(spec, members, {i: ready() for i in "abc"}) == plan(spec, list(reversed(members)),
                                                                  {i: ready() for i in "abc"})
