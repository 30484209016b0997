"""InfraKit's plan texts ("Managing 3 instances", "Performing a rolling update on 3 instances", ...).

Guarantee: the texts are InfraKit's, character for character, including its quirks: the
count is always followed by "instances" (InfraKit printed "Adding 1 instances"), and the
scale-down-then-roll text has InfraKit's double space after the comma. ``describe_commit``
reproduces what InfraKit's CommitGroup returns in Details (checked against the wire recordings).
Limit: these are descriptions, not the plan: the actions are in ``plan.Plan``.
"""

from __future__ import annotations

from collections.abc import Sequence

from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.spi import instance

__all__ = ["NOOP", "describe_change", "describe_commit", "managing"]

NOOP = "Noop"
ADJUSTING = "Adjusting the instance configuration, no restarts necessary"


def managing(size: int) -> str:
    return f"Managing {size} instances"


def rolling(count: int) -> str:
    return f"Performing a rolling update on {count} instances"


def adding(count: int, size: int) -> str:
    return f"Adding {count} instances to increase the group size to {size}"


def terminating(count: int, size: int) -> str:
    return f"Terminating {count} instances to reduce the group size to {size}"


def describe_change(*, size: int, members: int, outdated: int) -> str:
    """What a group of ``members`` (``outdated`` of them not up to date) does to reach ``size``."""
    current = members - outdated
    if members > size:
        roll = max(0, size - current)
        text = terminating(members - size, size)
        # InfraKit's format string joins ", " and " then", hence the two spaces.
        return text + (f",  then performing a rolling update on {roll} instances" if roll else "")
    if outdated:
        text = rolling(outdated)
        return text + (f", then adding {size - members} instances to increase the group size to {size}"
                       if size > members else "")
    if size > members:
        return adding(size - members, size)
    return managing(size)


def describe_commit(previous: GroupSpec | None, spec: GroupSpec, observed: Sequence[instance.Description]) -> str:
    """The Details text of CommitGroup: how committing ``spec`` over ``previous`` changes the group.

    A new group is "Managing N instances". Otherwise, as InfraKit: the size change from the
    previous spec, and the members whose config hash is not the new spec's (a ``bootstrap``
    member counts as up to date: it is adopted, not rolled). Nothing to do is "Noop"; a new
    config hash with no member to roll is "Adjusting the instance configuration, ...".
    """
    if previous is None:
        return managing(spec.size)
    members = [d for d in observed if d.tags.get(instance.TAG_GROUP) == spec.id]
    desired = [d for d in members if d.tags.get(instance.TAG_CONFIG_HASH) in (spec.config_hash,
                                                                            instance.BOOTSTRAP_CONFIG_HASH)]
    undesired = len(members) - len(desired)
    size_change = spec.size - previous.size
    if size_change == 0:
        if undesired == 0:
            return NOOP if previous.config_hash == spec.config_hash else ADJUSTING
        return rolling(undesired)
    if size_change < 0:
        roll = max(0, spec.size - len(desired))
        text = terminating(-size_change, spec.size)
        return text + (f",  then performing a rolling update on {roll} instances" if roll else "")
    if undesired == 0:
        return adding(size_change, spec.size)
    return f"{rolling(undesired)}, then adding {size_change} instances to increase the group size to {spec.size}"
