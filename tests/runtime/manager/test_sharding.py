"""The rendezvous choice and one replica's moves (``manager.sharding``): pure, so checked exhaustively."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.manager import sharding
from infrakit_runtime.manager.sharding import Moves, desired_owner, desired_owners, plan_moves

REPLICAS = ("a", "b", "c", "d")
GROUPS = tuple(f"g{i}" for i in range(40))


def test_every_group_has_exactly_one_desired_owner_and_every_replica_agrees_whatever_the_order():
    for n in range(1, len(REPLICAS) + 1):
        for live in itertools.permutations(REPLICAS[:n]):
            owners = desired_owners(GROUPS, live)
            assert set(owners) == set(GROUPS)
            assert set(owners.values()) <= set(live)
            assert owners == desired_owners(GROUPS, sorted(live))


def test_no_replica_means_no_owner():
    assert desired_owner("web", []) is None
    assert desired_owners(["web"], []) == {}


def test_nine_groups_over_three_replicas_give_each_a_share():
    owners = desired_owners([f"g{i}" for i in range(9)], ["group-a", "group-b", "group-c"])
    assert set(owners.values()) == {"group-a", "group-b", "group-c"}


def test_a_replica_joining_takes_groups_only_from_their_previous_owners_and_only_for_itself():
    for subset in itertools.combinations(REPLICAS, 3):
        joiner = next(r for r in REPLICAS if r not in subset)
        before = desired_owners(GROUPS, subset)
        after = desired_owners(GROUPS, (*subset, joiner))
        moved = {g for g in GROUPS if before[g] != after[g]}
        assert all(after[g] == joiner for g in moved)
        assert moved, "with 40 groups the newcomer gets some"


def test_the_owner_of_a_group_moves_only_when_it_is_the_one_that_left():
    for subset in itertools.combinations(REPLICAS, 3):
        for gone in subset:
            survivors = [r for r in subset if r != gone]
            before = desired_owners(GROUPS, subset)
            after = desired_owners(GROUPS, survivors)
            for g in GROUPS:
                assert (before[g] != after[g]) == (before[g] == gone)


def test_plan_moves_in_every_situation_of_one_group():
    """Each (owner, desired owner, running) combination for one group, as replica ``a`` sees it."""
    live = ["a", "b"]
    mine = next(g for g in GROUPS if desired_owner(g, live) == "a")
    theirs = next(g for g in GROUPS if desired_owner(g, live) == "b")
    cases = {
        # (group, owner, running) -> Moves
        (mine, None, False): Moves(claim=(mine,)),
        (mine, "a", False): Moves(adopt=(mine,)),
        (mine, "a", True): Moves(),
        (mine, "b", False): Moves(),  # b hands it over; a waits
        (mine, "b", True): Moves(drop=(mine,)),
        (mine, None, True): Moves(claim=(mine,), drop=(mine,)),  # lost it (lease lapsed), stop then claim again
        (theirs, None, False): Moves(),
        (theirs, "a", False): Moves(release=((theirs, "b"),)),
        (theirs, "a", True): Moves(release=((theirs, "b"),)),
        (theirs, "b", False): Moves(),
        (theirs, "b", True): Moves(drop=(theirs,)),
    }
    for (gid, owner, running), expected in cases.items():
        got = plan_moves(me="a", groups=[gid], owners={gid: owner} if owner else {}, replicas=live,
                         running=[gid] if running else [])
        assert got == expected, (gid, owner, running, got)


def test_an_owner_key_of_a_group_not_stored_is_left_alone_and_a_running_one_without_key_is_dropped():
    assert plan_moves(me="a", groups=[], owners={"new": "a"}, replicas=["a"], running=["new"]) == Moves()
    assert plan_moves(me="a", groups=[], owners={}, replicas=["a"], running=["gone"]) == Moves(drop=("gone",))


def test_a_replica_alone_claims_every_orphan_and_counts_itself_live():
    moves = plan_moves(me="a", groups=["x", "y"], owners={}, replicas=[], running=[])
    assert moves == Moves(claim=("x", "y"))
    assert not moves.is_noop and Moves().is_noop


names = st.sampled_from(("a", "b", "c", "d", "e"))
group_ids = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=30, unique=True)


@settings(max_examples=300, deadline=None)
@given(groups=group_ids, live=st.sets(names, min_size=1), change=names)
def test_adding_or_removing_one_replica_moves_exactly_the_groups_whose_owner_changed(groups, live, change):
    before = desired_owners(groups, live)
    after_set = live ^ {change}
    after = desired_owners(groups, after_set)
    if not after_set:
        assert after == {}
        return
    for g in groups:
        assert after[g] in after_set
        if change in live:  # removed: only its groups move
            assert (after[g] != before[g]) == (before[g] == change)
        else:  # added: only groups it now owns move
            assert (after[g] != before[g]) == (after[g] == change)


@settings(max_examples=300, deadline=None)
@given(groups=group_ids, live=st.sets(names, min_size=1),
       owned=st.dictionaries(st.integers(0, 29), names), running=st.sets(st.integers(0, 29)))
def test_at_the_desired_state_nobody_moves_and_no_two_replicas_claim_one_group(groups, live, owned, running):
    owners = {groups[i % len(groups)]: r for i, r in owned.items() if r in live}
    claims: dict[str, list[str]] = {}
    for me in live:
        moves = plan_moves(me=me, groups=groups, owners=owners, replicas=live,
                           running=[groups[i % len(groups)] for i in running])
        for gid in moves.claim:
            assert gid not in owners
            claims.setdefault(gid, []).append(me)
        for gid, to in moves.release:
            assert owners[gid] == me and to in live and to != me
    assert all(len(who) == 1 for who in claims.values()), claims
    desired = desired_owners(groups, live)
    for me in live:
        mine = [g for g in groups if desired[g] == me]
        assert plan_moves(me=me, groups=groups, owners=desired, replicas=live, running=mine).is_noop


def test_weights_are_stable_across_processes():
    # The owner must not depend on Python's per-process hash seed: replicas compute it apart.
    assert sharding.weight("web", "group-a").hex()[:16] == "c6effefc7d8e9159"  # sha256 of "web\0group-a"
    assert desired_owner("web", ["group-a", "group-b", "group-c"]) == desired_owner("web", ["group-c", "group-b", "group-a"])
