"""What the planner is shown: the instance plugin's description, plus members provisioned but not yet described.

Guarantee: pure and idempotent. A member the supervisor provisioned counts as a member (a pending
one) until a description lists it or ``UNSEEN_GRACE`` passes, so an eventually consistent plugin
(EC2 lists a new instance a little later) never gets a second instance for one slot; merging a
view that already holds an entry changes nothing, so the supervisor and DescribeGroup may both
merge. Once the grace has passed the entry is dropped here, and ``settle`` says which entries
vanished so the supervisor can record them (``outcomes.after_vanished``).
Limit: the planner cannot tell "not listed yet" from "gone already" within the grace; a member
that exits at once is found out one grace period later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from infrakit_runtime.spi import instance

__all__ = ["UNSEEN_GRACE", "Unseen", "members", "settle"]

# How long an instance provisioned but not yet described counts as a member.
UNSEEN_GRACE = 30.0


@dataclasses.dataclass(frozen=True)
class Unseen:
    """A member provisioned at ``since`` that no description has listed yet."""

    description: instance.Description
    since: float

    @property
    def id(self) -> instance.ID:
        return self.description.id


def members(*, described: Sequence[instance.Description], unseen: Sequence[Unseen], now: float,
            grace: float = UNSEEN_GRACE) -> list[instance.Description]:
    """``described`` plus each unseen member it does not list, while its grace lasts."""
    ids = {d.id for d in described}
    return [*described, *(u.description for u in unseen if u.id not in ids and now - u.since <= grace)]


def settle(*, described: Sequence[instance.Description], unseen: Sequence[Unseen], now: float,
           grace: float = UNSEEN_GRACE) -> tuple[tuple[Unseen, ...], tuple[Unseen, ...]]:
    """The unseen members still awaited after this description, and those that never appeared in time."""
    ids = {d.id for d in described}
    waiting = tuple(u for u in unseen if u.id not in ids and now - u.since <= grace)
    vanished = tuple(u for u in unseen if u.id not in ids and now - u.since > grace)
    return waiting, vanished
