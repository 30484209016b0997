"""Planning for pets: one member per logical ID, replaced in place, rolled within the same bounds as cattle.

Guarantee: for every logical ID in the spec the plan converges on exactly one up-to-date
member carrying it; members with an unknown or no logical ID are destroyed; duplicates are
reduced to one, keeping the up-to-date, then healthiest, then oldest - except that an
outdated member gives way only once its up-to-date successor is READY, so a rollout never
leaves a logical ID without a working member when ``MaxUnavailable`` is 0.
Limit: with ``MaxSurge`` above 0 a successor is created while its predecessor still runs,
so two instances briefly share a logical ID; pets bound to one address (an IP) need
``MaxSurge: 0, MaxUnavailable: 1`` (replace, then create).
"""

from __future__ import annotations

from collections.abc import Sequence

from infrakit_runtime.group.plan.actions import (
    CAUSE_DUPLICATE,
    CAUSE_NOT_IN_ALLOCATION,
    CAUSE_ROLLING_UPDATE,
)
from infrakit_runtime.group.plan.health import Verdict
from infrakit_runtime.group.plan.step import Member, Step, keep_order, removal_order

__all__ = ["plan_pets"]


def plan_pets(step: Step, members: Sequence[Member]) -> None:
    """Add to ``step`` the actions that bring each logical ID to one up-to-date member."""
    spec = step.spec
    wanted = list(spec.logical_ids or ())
    by_id: dict[str, list[Member]] = {lid: [] for lid in wanted}
    strays = []
    for m in members:
        lid = m.logical_id
        if lid is not None and lid in by_id:
            by_id[lid].append(m)
        else:
            strays.append(m)
    # The budget counts logical IDs, not instances: a second member of one ID adds no availability.
    holders = [min(ms, key=keep_order) for ms in by_id.values() if ms]
    step.start_budget(holders, floor=spec.size - spec.max_unavailable())
    step.budget.room = spec.size + spec.max_surge() - len(members)
    for m in strays:
        step.destroy_unbudgeted(m, CAUSE_NOT_IN_ALLOCATION, f"logical ID {m.logical_id!r} is not in the allocation")

    missing: list[str] = []
    rolling: list[tuple[str, Member]] = []
    for lid in wanted:
        alive = _heal(step, by_id[lid])
        current = sorted((m for m in alive if m.current), key=keep_order)
        outdated = sorted((m for m in alive if not m.current), key=keep_order)
        if current:
            keeper = current[0]
            for extra in current[1:]:
                step.destroy_unbudgeted(extra, CAUSE_DUPLICATE, f"another member already holds logical ID {lid!r}")
            for old in outdated:
                # A predecessor its own probe calls dead goes at once - unless the brake distrusts the checks.
                if keeper.verdict is Verdict.READY or (not old.verdict.available and not step.brake):
                    step.destroy_unbudgeted(old, CAUSE_ROLLING_UPDATE, f"outdated; replaced for logical ID {lid!r}")
        elif outdated:
            for extra in outdated[1:]:
                step.destroy_unbudgeted(extra, CAUSE_DUPLICATE, f"another member already holds logical ID {lid!r}")
            rolling.append((lid, outdated[0]))
        else:
            missing.append(lid)

    for lid in missing:
        step.create(lid, f"logical ID {lid!r} has no member")
    # Roll oldest-first-in-removal-order: surge a successor if room allows, else replace within the budget.
    # The replica's own logical ID goes last: only once nothing else is missing or rolling.
    others_busy = bool(missing) or any(lid != step.self_id for lid, _ in rolling)
    for lid, old in sorted(rolling, key=lambda pair: (pair[0] == step.self_id, removal_order(pair[1]))):
        if lid == step.self_id and others_busy:
            continue
        if step.memory.backing_off(lid, step.now):
            step.note_held(lid)  # no successor can be created: keep the predecessor running
        elif step.budget.room > 0:
            step.create(lid, f"rolling update of logical ID {lid!r}")
        elif step.budget.allows(old):
            step.destroy(old, CAUSE_ROLLING_UPDATE, f"outdated; logical ID {lid!r} is recreated next")


def _heal(step: Step, members: Sequence[Member]) -> list[Member]:
    """Rule 2 for one logical ID; the members left."""
    step.destroy_failed(members)
    return [m for m in members if m.id not in step.destroyed]
