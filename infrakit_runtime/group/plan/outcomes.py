"""What one pass learned about the members, turned into backoff memory and progress.

Guarantee: every function here is pure (a ``Memory`` in, a ``Memory`` out) and is what the
supervisor and the planner's model tests both apply, so the model exercises the real rules:

- a member the current spec made that dies or is condemned before it has proved itself
  (READY past its grace period, ``health.settled``) is a START failure of its slot: the next
  create into it backs off, so a crash loop or a version that never passes its probe is
  retried at a growing interval instead of every few seconds;
- a member that proves itself ends its slot's failure streak, if it was first seen after the slot's
  last failure (members serving since before it, which share a cattle slot, prove nothing new);
- progress (what ``Updating.ProgressDeadline`` measures from) is the group moving toward
  its spec: a new member passing its probe for the first time, an outdated or surplus member
  removed, a new spec committed, the group converged. Creating, and replacing a member that
  failed, are not progress: a rollout that only churns broken members is stuck.
Limit: the memory lives in the supervisor; after a restart the failure streaks and the
progress clock start over (one extra attempt per slot; "stuck" is said one deadline later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infrakit_runtime.group.plan.actions import CAUSE_UNHEALTHY, Destroy, Plan
from infrakit_runtime.group.plan.health import HealthRecord, settled
from infrakit_runtime.group.plan.memory import CATTLE_SLOT, CRASH, START, Memory, Slot
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.spi import instance

__all__ = ["after_checks", "after_commit", "after_destroy", "after_loss", "after_plan", "after_vanished", "slot_of"]


def slot_of(d: instance.Description) -> Slot:
    """The backoff slot a member fills: its logical ID (pets), else the cattle slot."""
    return d.logical_id or d.tags.get(instance.TAG_LOGICAL_ID) or CATTLE_SLOT


def _made_by_current(spec: GroupSpec, d: instance.Description) -> bool:
    return d.tags.get(instance.TAG_CONFIG_HASH) in (spec.config_hash, instance.BOOTSTRAP_CONFIG_HASH)


def after_checks(memory: Memory, *, spec: GroupSpec, members: Sequence[instance.Description],
                 before: Mapping[instance.ID, HealthRecord], after: Mapping[instance.ID, HealthRecord],
                 now: float) -> Memory:
    """A pass's health checks: new members passing for the first time, and members that proved themselves."""
    for d in members:
        record = after.get(d.id)
        if record is None or not _made_by_current(spec, d):
            continue
        earlier = before.get(d.id)
        if record.passed and not (earlier is not None and earlier.passed and earlier.probe == record.probe):
            memory = memory.progressed(now)
        failure = memory.get(slot_of(d))
        # Only a member made since the slot last failed proves that creates into it work again: every cattle
        # member shares one slot, and the ones serving before the failure say nothing about their replacements.
        if failure is not None and record.first_seen >= failure.last_failure and settled(record, spec.health, now):
            memory = memory.succeeded(slot_of(d))
    return memory


def after_loss(memory: Memory, *, spec: GroupSpec, description: instance.Description,
               record: HealthRecord | None, now: float) -> Memory:
    """A member vanished on its own (no longer described, and not destroyed by us)."""
    if record is None or not _made_by_current(spec, description) or settled(record, spec.health, now):
        return memory
    age = now - record.first_seen
    why = "before it passed its health check" if not record.passed else "before it had stayed healthy"
    return memory.failed(slot_of(description), now,
                         f"instance {description.id} exited {age:.1f}s after it started, {why}", kind=CRASH)


def after_vanished(memory: Memory, *, spec: GroupSpec, description: instance.Description, waited: float,
                   now: float) -> Memory:
    """A member provisioned ``waited`` seconds ago never appeared in a description: it exited at once
    (a plugin that lists only live instances) or was lost before anyone saw it."""
    if not _made_by_current(spec, description):
        return memory
    return memory.failed(slot_of(description), now,
                         f"instance {description.id} never appeared in the instance plugin's description within "
                         f"{waited:.0f}s of its creation (did it exit at once?)", kind=CRASH)


def after_destroy(memory: Memory, *, spec: GroupSpec, action: Destroy, description: instance.Description | None,
                  record: HealthRecord | None, now: float) -> Memory:
    """A destroy the plan asked for went through."""
    if action.cause != CAUSE_UNHEALTHY:
        return memory.progressed(now)
    if description is None or record is None or not _made_by_current(spec, description):
        return memory
    if settled(record, spec.health, now):
        return memory  # it served, then failed: healing, not a failing slot
    why = "never passed its health check" if not record.passed else "failed its health check soon after it started"
    return memory.failed(slot_of(description), now, f"instance {description.id} {why} ({action.reason})", kind=START)


def after_commit(memory: Memory, *, previous: GroupSpec, spec: GroupSpec, now: float) -> Memory:
    """A spec was committed over ``previous``: a new configuration gets a fresh try and a fresh deadline."""
    if previous.config_hash != spec.config_hash:
        return memory.forgotten().progressed(now)
    if previous.size != spec.size or previous.logical_ids != spec.logical_ids:
        return memory.progressed(now)
    return memory


def after_plan(memory: Memory, *, plan: Plan, now: float) -> Memory:
    """A group in shape (count and config as specified, nothing left to do) is where it should be: the
    progress clock restarts from here (its members' health is measured by ``after_checks``)."""
    return memory.progressed(now) if plan.shaped else memory
