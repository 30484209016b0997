"""Pets: one member per logical ID, strays and duplicates removed, rolled per ID."""

from __future__ import annotations

from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import CAUSE_DUPLICATE, CAUSE_NOT_IN_ALLOCATION, Create, Destroy, plan_group
from tests.runtime.group import world
from tests.runtime.group.world import member, ready, unknown

NOW = 1000.0
IDS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
OLD = world.spec(logical_ids=IDS).config_hash


def plan(spec, members, health=None, memory=None):
    return plan_group(spec=spec, observed=members, health=health or {}, memory=memory or Memory(), now=NOW)


def test_each_missing_logical_id_is_created():
    spec = world.spec(logical_ids=IDS)
    p = plan(spec, [member("a", spec.config_hash, "10.0.0.2")], {"a": ready()})
    assert [a.logical_id for a in p.actions] == ["10.0.0.1", "10.0.0.3"]
    assert all(a.slot == a.logical_id for a in p.actions)


def test_a_pets_group_with_one_member_per_id_is_converged():
    spec = world.spec(logical_ids=IDS)
    members = [member(f"i{n}", spec.config_hash, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {f"i{n}": ready() for n in range(3)})
    assert p.is_noop and p.converged and p.summary == "Noop"


def test_members_with_unknown_logical_ids_are_destroyed():
    spec = world.spec(logical_ids=IDS[:1])
    members = [member("keep", spec.config_hash, IDS[0]), member("gone", spec.config_hash, "10.9.9.9"),
               member("none", spec.config_hash)]
    p = plan(spec, members, {"keep": ready(), "gone": ready(), "none": ready()})
    assert {(a.instance_id, a.cause) for a in p.actions} == {("gone", CAUSE_NOT_IN_ALLOCATION),
                                                             ("none", CAUSE_NOT_IN_ALLOCATION)}


def test_duplicates_keep_the_healthiest_then_oldest():
    spec = world.spec(logical_ids=IDS[:1])
    members = [member(i, spec.config_hash, IDS[0]) for i in ("young", "old", "sick")]
    p = plan(spec, members, {"young": ready(50), "old": ready(10), "sick": unknown(0)})
    assert sorted((a.instance_id, a.cause) for a in p.actions) == [("sick", CAUSE_DUPLICATE), ("young", CAUSE_DUPLICATE)]


def test_an_outdated_pet_gives_way_once_its_successor_is_ready():
    spec = world.spec(logical_ids=IDS[:1], init="v2")
    members = [member("old", OLD, IDS[0]), member("new", spec.config_hash, IDS[0])]
    assert plan(spec, members, {"old": ready(), "new": unknown(NOW - 1)}).is_noop
    p = plan(spec, members, {"old": ready(), "new": ready(NOW - 1)})
    assert [(a.instance_id, a.cause) for a in p.actions] == [("old", "rolling_update")]


def test_pets_roll_by_surging_a_successor_for_one_id_at_a_time():
    spec = world.spec(logical_ids=IDS, init="v2")
    members = [member(f"i{n}", OLD, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {f"i{n}": ready(n) for n in range(3)})
    assert p.actions == (Create("10.0.0.1", "rolling update of logical ID '10.0.0.1'"),)
    assert p.summary == "Performing a rolling update on 3 instances"


def test_pets_without_surge_are_replaced_then_recreated():
    spec = world.spec(logical_ids=IDS, init="v2", updating={"MaxSurge": 0, "MaxUnavailable": 1})
    members = [member(f"i{n}", OLD, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {f"i{n}": ready(n) for n in range(3)})
    assert [type(a) for a in p.actions] == [Destroy] and p.actions[0].instance_id == "i0"
    after = plan(spec, members[1:], {f"i{n}": ready(n) for n in range(1, 3)})
    assert after.actions == (Create("10.0.0.1", "logical ID '10.0.0.1' has no member"),)


def test_a_pet_backing_off_is_held_and_reported():
    spec = world.spec(logical_ids=IDS[:1])
    memory = Memory().failed(IDS[0], NOW - 0.1, "address in use")
    p = plan(spec, [], memory=memory)
    assert p.is_noop and p.condition == "Degraded" and "logical ID 10.0.0.1" in p.reason
