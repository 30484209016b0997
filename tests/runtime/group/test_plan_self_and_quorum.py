"""Self-protection and the quorum guard (issue 15, items 1 and 2), as the pure planner decides them.

Self: the replica that plans knows its own logical ID. It never plans the destroy of a member
holding it, rolls it last, and asks to hand leadership over once every other logical ID is
held by a ready up-to-date member (the next leader replaces it as any follower).
Quorum (``Updating.Quorum: true``): whatever MaxUnavailable says, one change at a time, never
a destroy that leaves fewer answering members than a majority, and no action at all once the
members that answer are not a majority of those that should (Degraded, saying how many answer)
- as the planner counts the members it is shown, or as the flavor counts the cluster's voting
members (``flavor.Quorum`` in the health records): members killed are no longer described by the
instance plugin but still vote, so only the flavor can tell that two of three are gone.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import Create, Destroy, plan_group
from infrakit_runtime.spi import flavor
from tests.runtime.group import world
from tests.runtime.group.world import failing, member, ready, unknown

NOW = 1000.0
IDS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
OLD = world.spec(logical_ids=IDS).config_hash
REPLACE = {"MaxSurge": 0, "MaxUnavailable": 1}


def plan(spec, members, health=None, *, self_id=None):
    return plan_group(spec=spec, observed=members, health=health or {}, memory=Memory(), now=NOW, self_id=self_id)


# -- self ---------------------------------------------------------------------------------------


def test_the_own_instance_is_rolled_last_and_handed_over_not_destroyed():
    spec = world.spec(logical_ids=IDS, init="v2", updating=REPLACE)
    me = IDS[0]  # first in removal order without self-protection
    members = [member(f"i{n}", OLD, lid) for n, lid in enumerate(IDS)]
    health = {f"i{n}": ready(n) for n in range(3)}
    p = plan(spec, members, health, self_id=me)
    assert [a.instance_id for a in p.actions if isinstance(a, Destroy)] == ["i1"]
    assert not p.handover
    # Both followers rolled and ready on the new version: the leader hands over, destroys nothing.
    members = [member("i0", OLD, me), member("n1", spec.config_hash, IDS[1]), member("n2", spec.config_hash, IDS[2])]
    p = plan(spec, members, {"i0": ready(), "n1": ready(NOW - 1), "n2": ready(NOW - 1)}, self_id=me)
    assert p.actions == () and p.handover and me in p.handover
    # Not while a follower on the new version is still pending.
    p = plan(spec, members, {"i0": ready(), "n1": ready(NOW - 1), "n2": unknown(NOW - 1)}, self_id=me)
    assert p.actions == () and not p.handover
    # The next leader (another self) replaces it like any member.
    p = plan(spec, members, {"i0": ready(), "n1": ready(NOW - 1), "n2": ready(NOW - 1)}, self_id=IDS[1])
    assert [a.instance_id for a in p.actions] == ["i0"] and not p.handover


def test_a_failed_own_instance_is_handed_over_not_destroyed():
    spec = world.spec(logical_ids=IDS, updating=REPLACE)
    members = [member(f"i{n}", spec.config_hash, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {"i0": failing(), "i1": ready(), "i2": ready()}, self_id=IDS[0])
    assert p.actions == () and p.handover
    assert [a.instance_id for a in plan(spec, members, {"i0": failing(), "i1": ready(), "i2": ready()}).actions] == ["i0"]


def test_without_a_self_id_nothing_changes():
    spec = world.spec(logical_ids=IDS, init="v2", updating=REPLACE)
    members = [member(f"i{n}", OLD, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {f"i{n}": ready(n) for n in range(3)})
    assert [a.instance_id for a in p.actions] == ["i0"] and not p.handover


verdicts = st.sampled_from(["ready", "failing", "unknown", "none"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*IDS, "10.9.9.9"]), st.booleans(), verdicts), max_size=6),
       st.sampled_from(IDS), st.booleans(), st.integers(0, 2), st.integers(0, 2))
def test_no_plan_ever_destroys_a_member_holding_the_own_logical_id(rows, me, quorum, surge, unavailable):
    if surge == unavailable == 0:
        unavailable = 1
    spec = world.spec(logical_ids=IDS, init="v2",
                      updating={"MaxSurge": surge, "MaxUnavailable": unavailable, **({"Quorum": True} if quorum else {})})
    members, health = [], {}
    for n, (lid, current, v) in enumerate(rows):
        members.append(member(f"m{n}", spec.config_hash if current else OLD, lid))
        if v != "none":
            health[f"m{n}"] = {"ready": ready, "failing": failing, "unknown": unknown}[v](n)
    p = plan(spec, members, health, self_id=me)
    mine = {m.id for m in members if m.logical_id == me}
    assert not [a for a in p.actions if isinstance(a, Destroy) and a.instance_id in mine]


# -- quorum -------------------------------------------------------------------------------------


def quorum_spec(**updating):
    return world.spec(logical_ids=IDS, init="v2", updating={"MaxSurge": 0, "MaxUnavailable": 3, "Quorum": True,
                                                            **updating})


def test_a_rolling_change_of_a_quorum_group_changes_one_member_at_a_time():
    spec = quorum_spec()
    members = [member(f"i{n}", OLD, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {f"i{n}": ready(n) for n in range(3)})
    assert [type(a) for a in p.actions] == [Destroy]  # MaxUnavailable 3 would have taken all three
    # Replaced, not yet answering: nothing else moves.
    members = [member("n0", spec.config_hash, IDS[0]), *members[1:]]
    p = plan(spec, members, {"n0": unknown(NOW - 1), "i1": ready(), "i2": ready()})
    assert p.actions == ()
    p = plan(spec, members, {"n0": ready(NOW - 1), "i1": ready(), "i2": ready()})
    assert [a.instance_id for a in p.actions] == ["i1"]


def test_one_missing_member_is_recreated_but_never_two_at_once():
    spec = quorum_spec()
    members = [member("i0", spec.config_hash, IDS[0]), member("i1", spec.config_hash, IDS[1])]
    p = plan(spec, members, {"i0": ready(), "i1": ready()})
    assert p.actions == (Create(IDS[2], f"logical ID {IDS[2]!r} has no member"),)


def test_with_quorum_lost_nothing_is_done_and_the_plan_says_how_many_answer():
    spec = quorum_spec()
    # Two killed (gone), the survivor has no leader, so it does not answer healthy either.
    survivor = [member("i0", spec.config_hash, IDS[0])]
    p = plan(spec, survivor, {"i0": failing()})
    assert p.actions == () and p.condition == "Degraded"
    assert "0 of 3" in p.reason and "quorum" in p.reason
    # Two stopped (present, failing): the brake aside, no destroy either.
    members = [member(f"i{n}", spec.config_hash, lid) for n, lid in enumerate(IDS)]
    p = plan(spec, members, {"i0": ready(), "i1": failing(), "i2": failing()})
    assert p.actions == () and p.condition == "Degraded" and "1 of 3" in p.reason
    # One returns: the last one is replaced.
    p = plan(spec, members, {"i0": ready(), "i1": ready(), "i2": failing()})
    assert [(type(a), a.instance_id) for a in p.actions] == [(Destroy, "i2")]


def test_a_bootstrap_member_alone_grows_the_group_one_member_at_a_time():
    spec = quorum_spec()
    boot = member("b", "bootstrap", IDS[0])
    p = plan(spec, [boot], {"b": ready()})
    assert [type(a).__name__ for a in p.actions] == ["Relabel", "Create"]
    grown = [member("b", spec.config_hash, IDS[0]), member("n1", spec.config_hash, IDS[1])]
    assert [type(a) for a in plan(spec, grown, {"b": ready(), "n1": unknown(NOW - 1)}).actions] == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(IDS), st.booleans(), verdicts), max_size=5), st.integers(1, 3))
def test_a_quorum_plan_changes_at_most_one_member_and_keeps_a_majority_answering(rows, unavailable):
    spec = quorum_spec(MaxUnavailable=unavailable)
    members, health = [], {}
    for n, (lid, current, v) in enumerate(rows):
        members.append(member(f"m{n}", spec.config_hash if current else OLD, lid))
        if v != "none":
            health[f"m{n}"] = {"ready": ready, "failing": failing, "unknown": unknown}[v](n)
    p = plan(spec, members, health)
    changes = [a for a in p.actions if isinstance(a, Create | Destroy)]
    held = {m.logical_id for m in members}
    duplicates = [a for a in changes if isinstance(a, Destroy) and a.cause in ("duplicate",)]
    assert len(changes) - len(duplicates) <= 1
    answering = {m.id for m in members if health.get(m.id) is not None and health[m.id].last == 1
                 and health[m.id].consecutive_healthy >= 1}
    destroyed = {a.instance_id for a in changes if isinstance(a, Destroy)}
    holders_answering = {m.logical_id for m in members if m.id in answering and m.id not in destroyed}
    if (destroyed - {a.instance_id for a in duplicates}) & answering:  # an answering member goes
        assert len(holders_answering) >= 2, (p, held)


# -- quorum as the flavor counts it (members killed: no longer described, still voting) ---------


def said(record, answering, voting=3):
    """``record`` after a check whose flavor also said how many of the cluster's voting members answer."""
    return dataclasses.replace(record, quorum=flavor.Quorum(answering=answering, voting=voting))


def test_two_members_killed_nothing_is_done_while_the_flavor_counts_one_of_three_answering():
    spec = quorum_spec()
    # The instance plugin no longer describes the two killed members; the survivor still answers
    # for a moment (its raft leader has not stepped down yet). Alone, the planner sees 1 of 1.
    survivor = [member("i0", spec.config_hash, IDS[0])]
    assert [type(a) for a in plan(spec, survivor, {"i0": ready()}).actions] == [Create]
    p = plan(spec, survivor, {"i0": said(ready(), 1)})
    assert p.actions == () and p.condition == "Degraded"
    assert "quorum lost: 1 of 3 members answer" in p.reason and "a majority needs 2" in p.reason
    # Unhealthy, unknown or in its grace period: the same.
    for record in (failing(), unknown(), unknown(NOW - 1)):
        p = plan(spec, survivor, {"i0": said(record, 1)})
        assert p.actions == () and p.condition == "Degraded" and "1 of 3" in p.reason
    # One returns (restarted outside the controller: voting, answering, not described): healing resumes.
    p = plan(spec, survivor, {"i0": said(ready(), 2)})
    assert p.actions == (Create(IDS[1], f"logical ID {IDS[1]!r} has no member"),)


def test_a_stopped_member_is_not_destroyed_while_the_flavor_counts_no_quorum():
    spec = quorum_spec()
    members = [member(f"i{n}", spec.config_hash, lid) for n, lid in enumerate(IDS)]
    # The planner's own count would allow replacing the failed one (2 of 3 ready); the flavor knows better.
    health = {"i0": said(ready(), 1), "i1": said(ready(), 1), "i2": said(failing(), 1)}
    p = plan(spec, members, health)
    assert p.actions == () and "1 of 3" in p.reason
    health = {k: dataclasses.replace(v, quorum=flavor.Quorum(answering=2, voting=3)) for k, v in health.items()}
    assert [(type(a), a.instance_id) for a in plan(spec, members, health).actions] == [(Destroy, "i2")]


def test_the_quorum_the_flavor_reports_does_not_hold_a_group_without_updating_quorum():
    spec = world.spec(logical_ids=IDS, updating=REPLACE)
    p = plan(spec, [member("i0", spec.config_hash, IDS[0])], {"i0": said(ready(), 1)})
    assert [type(a) for a in p.actions] == [Create, Create]


reports = st.one_of(st.none(), st.integers(0, 5).flatmap(lambda v: st.tuples(st.integers(0, v), st.just(v))))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*IDS, "10.9.9.9"]), st.booleans(), verdicts, reports), max_size=6),
       st.integers(1, 3), st.integers(0, 1))
def test_while_the_flavor_reports_quorum_lost_a_plan_holds_everything_and_says_how_many_answer(rows, unavailable,
                                                                                                surge):
    spec = quorum_spec(MaxUnavailable=unavailable, MaxSurge=surge)
    members, health = [], {}
    for n, (lid, current, v, q) in enumerate(rows):
        members.append(member(f"m{n}", spec.config_hash if current else OLD, lid))
        if v != "none":
            record = {"ready": ready, "failing": failing, "unknown": unknown}[v](n)
            health[f"m{n}"] = said(record, *q) if q is not None else record
    p = plan(spec, members, health)
    lost = [r.quorum for m, r in ((m, health.get(m.id)) for m in members)
            if m.logical_id in IDS and r is not None and r.quorum is not None and not r.quorum.held]
    if lost:
        assert p.actions == () and p.condition == "Degraded" and not p.converged
        assert any(f"quorum lost: {q.answering} of {q.voting} members answer" in p.reason for q in lost), p.reason
    else:
        # Reports of a quorum held add nothing: the plan is the one without them.
        bare = {k: dataclasses.replace(r, quorum=None) for k, r in health.items()}
        assert p == plan(spec, members, bare)
