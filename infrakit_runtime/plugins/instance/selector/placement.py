"""Where the next member goes and which members should move: pure functions of counts and weights.

Guarantee: every function here is pure, synchronous and deterministic (ties go to the choice
listed first). ``place`` keeps a group within quota - each choice holds between the floor and
the ceiling of its share ``N * weight / total weight`` - whenever it started within quota, so a
group filled one member at a time is balanced within one member per choice (spread, equal
weights) at every step. ``rebalance`` marks the fewest members whose replacement, placed by
``place``, brings the group back within quota, and keeps earlier marks, so a rebalance in
progress never changes its mind while the group surges above its size.
Limit: only the members and weights it is given count: the caller leaves out choices that are
backing off (their members stay where they are) and members that are leaving anyway (outdated,
pinned pets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

__all__ = ["first_available", "place", "place_many", "rebalance", "within_quota"]


def _quota(n: int, weight: int, total: int) -> Fraction:
    return Fraction(n * weight, total)


def within_quota(counts: Mapping[str, int], weights: Mapping[str, int]) -> bool:
    """Whether every choice holds between the floor and the ceiling of its share of the members."""
    total, n = sum(weights.values()), sum(counts.get(c, 0) for c in weights)
    if not total:
        return True
    for c, w in weights.items():
        q = _quota(n, w, total)
        if not math.floor(q) <= counts.get(c, 0) <= math.ceil(q):
            return False
    return True


def place(counts: Mapping[str, int], weights: Mapping[str, int], order: Sequence[str]) -> str | None:
    """The choice for one more member: the one furthest below its share, among those it would not push over.

    ``weights`` holds the choices that may take members (spread: all 1); ``None`` when there is none.
    """
    candidates = [c for c in order if weights.get(c, 0) > 0]
    if not candidates:
        return None
    total = sum(weights[c] for c in candidates)
    n = sum(counts.get(c, 0) for c in candidates) + 1
    eligible = [c for c in candidates if counts.get(c, 0) + 1 <= math.ceil(_quota(n, weights[c], total))]
    best, best_deficit = None, None
    for c in eligible or candidates:
        deficit = _quota(n, weights[c], total) - counts.get(c, 0)
        if best_deficit is None or deficit > best_deficit:
            best, best_deficit = c, deficit
    return best


def place_many(counts: Mapping[str, int], weights: Mapping[str, int], order: Sequence[str], n: int) -> list[str]:
    """Choices for ``n`` more members, one at a time (so a batch lands as balanced as single creates)."""
    running = dict(counts)
    out: list[str] = []
    for _ in range(n):
        c = place(running, weights, order)
        if c is None:
            break
        running[c] = running.get(c, 0) + 1
        out.append(c)
    return out


def first_available(order: Sequence[str], available: Sequence[str] | set[str]) -> str | None:
    """Tiered: the first choice in order that may take members."""
    for c in order:
        if c in available:
            return c
    return None


def rebalance(*, members: Mapping[str, Sequence[str]], weights: Mapping[str, int], order: Sequence[str],
              marked: frozenset[str] = frozenset()) -> frozenset[str]:
    """Members to move so the group gets back within quota; earlier ``marked`` members stay marked.

    ``members`` maps each choice that may take members to the IDs of its members that may move.
    A marked member is one the group should replace: its replacement goes where ``place`` says,
    which is how the projection below counts it. The newest-looking member (highest ID) of the
    fullest choice is marked first, one at a time, until the projection is within quota.
    """
    existing = {i for c in weights for i in members.get(c, ())}
    marks = set(marked) & existing
    unmarked = {c: sorted(i for i in members.get(c, ()) if i not in marks) for c in weights}
    total = sum(weights.values())
    while True:
        counts = {c: len(ids) for c, ids in unmarked.items()}
        projected = dict(counts)
        for c in place_many(counts, weights, order, len(marks)):
            projected[c] += 1
        if within_quota(projected, weights):
            return frozenset(marks)
        n = sum(projected.values())
        movable = [c for c in order if unmarked.get(c)]
        if not movable:
            return frozenset(marks)
        fullest = max(movable, key=lambda c: (projected[c] - _quota(n, weights[c], total), -order.index(c)))
        marks.add(unmarked[fullest].pop())
