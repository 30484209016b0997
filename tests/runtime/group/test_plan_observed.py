"""Members provisioned but not yet described, and creates whose outcome is unknown, are planner inputs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.group.plan import observed
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import Create, plan_group
from infrakit_runtime.spi import instance
from tests.runtime.group import world
from tests.runtime.group.world import member, ready

NOW = 1000.0


def plan(spec, members, *, unseen=(), memory=None, health=None, now=NOW):
    return plan_group(spec=spec, observed=members, health=health or {}, memory=memory or Memory(), now=now,
                      unseen=unseen)


def creates(p) -> list[Create]:
    return [a for a in p.actions if isinstance(a, Create)]


def test_a_member_provisioned_but_not_yet_described_is_a_member_while_its_grace_lasts():
    spec = world.spec(2)
    listed = member("i0", spec.config_hash)
    fresh = observed.Unseen(description=member("i1", spec.config_hash), since=NOW - 10)
    p = plan(spec, [listed], unseen=[fresh], health={"i0": ready()})
    # It fills its slot (no create) and is pending, but is not running until the plugin describes it:
    # one that exited at once never will be (issue 12, item 10: a crash loop read "5 running").
    assert creates(p) == [] and p.counts.running == 1 and p.counts.pending == 1
    # Past the grace it is not counted: the slot is filled again.
    late = plan(spec, [listed], unseen=[fresh], health={"i0": ready()}, now=NOW - 10 + observed.UNSEEN_GRACE + 1)
    assert len(creates(late)) == 1 and late.counts.running == 1


def test_an_unseen_member_the_description_lists_is_not_counted_twice():
    spec = world.spec(2)
    both = [member("i0", spec.config_hash), member("i1", spec.config_hash)]
    unseen = [observed.Unseen(description=member("i1", spec.config_hash), since=NOW - 1)]
    p = plan(spec, both, unseen=unseen)
    assert creates(p) == [] and p.counts.pending == 2
    # Callers pass the merged list (observed.members), so the planner cannot tell a listed id from an awaited
    # one it merged itself: an id still awaited is not running (never an instance the plugin has not described).
    assert p.counts.running == 1


def test_cattle_creates_reuse_the_tags_of_creates_whose_outcome_is_unknown_one_each_oldest_first():
    spec = world.spec(3)
    memory = Memory().unresolved("t-old", keep=4).unresolved("t-new", keep=4)
    assert [c.tag for c in creates(plan(spec, [], memory=memory))] == ["t-old", "t-new", None]
    # Pets name their slot by logical ID: no tag to reuse.
    pets = world.spec(logical_ids=["a", "b"])
    assert [c.tag for c in creates(plan(pets, [], memory=memory))] == [None, None]


@settings(max_examples=50, deadline=None)
@given(tags=st.integers(min_value=0, max_value=30), size=st.integers(min_value=0, max_value=40))
def test_each_retry_tag_goes_to_one_create_oldest_first_then_fresh_slots(tags, size):
    names = [f"t{i}" for i in range(tags)]
    memory = Memory()
    for name in names:
        memory = memory.unresolved(name, keep=tags)
    got = [c.tag for c in creates(plan(world.spec(size), [], memory=memory))]
    assert got == (names[:size] + [None] * max(0, size - tags))


def test_retry_tags_are_bounded_and_forgotten_once_resolved():
    memory = Memory()
    for n in range(6):
        memory = memory.unresolved(f"t{n}", keep=3)
    assert memory.retry_tags == ("t3", "t4", "t5")
    assert memory.unresolved("t3", keep=3).retry_tags == ("t4", "t5", "t3")
    assert memory.resolved("t4").retry_tags == ("t3", "t5")
    assert memory.forgotten().retry_tags == memory.retry_tags  # a new spec does not change what a tag names


_IDS = st.sampled_from(["i0", "i1", "i2", "i3"])


@settings(max_examples=200, deadline=None)
@given(described=st.lists(_IDS, unique=True), unseen=st.lists(st.tuples(_IDS, st.floats(0, 100)), unique_by=lambda x: x[0]),
       now=st.floats(0, 200))
def test_merging_is_idempotent_and_never_counts_an_instance_twice(described, unseen, now):
    ds = [instance.Description(id=i) for i in described]
    us = [observed.Unseen(description=instance.Description(id=i), since=t) for i, t in unseen]
    once = observed.members(described=ds, unseen=us, now=now)
    assert observed.members(described=once, unseen=us, now=now) == once
    assert len({d.id for d in once}) == len(once)
    waiting, vanished = observed.settle(described=ds, unseen=us, now=now)
    assert {u.id for u in waiting} | {d.id for d in ds} == {d.id for d in once}
    assert not ({u.id for u in waiting} & {u.id for u in vanished})
    assert all(now - u.since > observed.UNSEEN_GRACE and u.id not in described for u in vanished)
