"""Which replica owns which group when replicas share the groups (``sharding: groups``): pure.

Guarantee: every group has exactly one desired owner among a non-empty set of live replicas,
chosen by rendezvous (highest-random-weight) hashing of ``(group, replica)``, so every
replica that sees the same members computes the same owner without talking to the others,
and adding or removing one replica changes the desired owner of exactly the groups that
move to (or away from) that replica: nobody else's groups move.
Limit: the choice is only as agreed as the members' views; while views differ (a replica
joining or dying is seen at slightly different moments) two replicas may each think the
other should own a group. That is safe, not wrong: ownership itself is an etcd key claimed
by create-if-absent and handed over by a compare-and-put (``backends.etcd``), so a group has
at most one owner whatever the views say; views converge within one watch round trip.

``plan_moves`` is what one replica does about it, in the order it must act:

1. ``release``: groups it owns whose desired owner is another live replica: stop the
   group's supervisor first, then hand the owner key to that replica (never left ownerless).
2. ``claim``: groups with no owner whose desired owner is itself: create the owner key.
3. ``adopt``: groups whose owner key names it but which it does not run yet (a hand-over
   from another replica, or a claim made by a commit): enforce the stored spec.
4. ``drop``: groups it runs whose owner key no longer names it (its lease lapsed, or a key
   was removed): stop at once; nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping


def weight(group_id: str, replica: str) -> bytes:
    """The rendezvous weight of ``replica`` for ``group_id``: a stable hash every replica computes alike."""
    return hashlib.sha256(f"{group_id}\0{replica}".encode()).digest()


def desired_owner(group_id: str, replicas: Iterable[str]) -> str | None:
    """The replica that should own ``group_id``: the highest weight (ties, impossible in practice, by name).

    None when there is no live replica.
    """
    best: tuple[bytes, str] | None = None
    for replica in replicas:
        key = (weight(group_id, replica), replica)
        if best is None or key > best:
            best = key
    return best[1] if best else None


def desired_owners(groups: Iterable[str], replicas: Iterable[str]) -> dict[str, str]:
    """``desired_owner`` for each group (empty when there is no replica)."""
    live = sorted(set(replicas))
    if not live:
        return {}
    return {g: desired_owner(g, live) or "" for g in groups}


@dataclasses.dataclass(frozen=True)
class Moves:
    """What one replica does to reach the desired ownership; each tuple sorted by group ID.

    ``release`` pairs each group with the replica to hand it to.
    """

    release: tuple[tuple[str, str], ...] = ()
    claim: tuple[str, ...] = ()
    adopt: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()

    @property
    def is_noop(self) -> bool:
        return not (self.release or self.claim or self.adopt or self.drop)


def plan_moves(*, me: str, groups: Iterable[str], owners: Mapping[str, str], replicas: Iterable[str],
               running: Iterable[str]) -> Moves:
    """The moves ``me`` makes (pure, total; the caller acts on them in the order of ``Moves``).

    ``groups``: the stored group IDs. ``owners``: group ID -> the replica its owner key names
    (absent: unowned). ``replicas``: the live members (``me`` counts as live). ``running``:
    the groups ``me`` enforces now. An owner key for a group that is not stored is left alone
    here (the group's commit or removal is in flight on its owner).
    """
    live = set(replicas) | {me}
    stored = set(groups)
    running_set = set(running)
    desired = desired_owners(stored, live)
    release: list[tuple[str, str]] = []
    claim: list[str] = []
    adopt: list[str] = []
    for gid in sorted(stored):
        owner = owners.get(gid)
        want = desired[gid]
        if owner is None:
            if want == me:
                claim.append(gid)
        elif owner == me:
            if want != me:
                release.append((gid, want))
            elif gid not in running_set:
                adopt.append(gid)
    drop = sorted(gid for gid in running_set if owners.get(gid) != me)
    return Moves(release=tuple(release), claim=tuple(claim), adopt=tuple(adopt), drop=tuple(drop))
