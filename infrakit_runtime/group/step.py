"""The planner's working parts: members as the planner sees them, the rollout budget, one plan in the making.

Guarantee: nothing here reads a clock or does I/O; a ``Step`` lives only inside one
``plan_group`` call, so no state leaks from one plan to the next.
Limit: internal to ``plan`` and ``pets``; the supervisor uses ``plan.plan_group`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from infrakit_runtime.group import summary
from infrakit_runtime.group.actions import (
    CAUSE_ROLLING_UPDATE,
    CAUSE_UNHEALTHY,
    CONVERGED,
    DEGRADED,
    PROGRESSING,
    Action,
    Counts,
    Create,
    Destroy,
    Plan,
    Relabel,
)
from infrakit_runtime.group.health import HealthRecord, Verdict, verdict
from infrakit_runtime.group.memory import CATTLE_SLOT, Memory, Slot
from infrakit_runtime.group.spec import GroupSpec
from infrakit_runtime.spi import instance

__all__ = ["Budget", "Member", "Step", "classify", "excess_order", "keep_order", "removal_order"]


@dataclasses.dataclass(frozen=True)
class Member:
    """A member as the planner sees it."""

    description: instance.Description
    current: bool
    bootstrap: bool
    verdict: Verdict
    first_seen: float

    @property
    def id(self) -> instance.ID:
        return self.description.id

    @property
    def logical_id(self) -> instance.LogicalID | None:
        return self.description.logical_id or self.description.tags.get(instance.TAG_LOGICAL_ID)


_RANK = {Verdict.READY: 0, Verdict.PENDING: 1, Verdict.SUSPECT: 2, Verdict.FAILED: 3}


def removal_order(m: Member) -> tuple[int, float, str]:
    """Outdated members go first: not available ones, then pending, then ready; oldest first."""
    return (-_RANK[m.verdict], m.first_seen, m.id)


def excess_order(m: Member) -> tuple[int, float, str]:
    """Extra up-to-date members go: FAILED, suspect, pending, then ready; newest first."""
    return (-_RANK[m.verdict], -m.first_seen, m.id)


def keep_order(m: Member) -> tuple[bool, int, float, str]:
    """Which member of a logical ID to keep: up to date, healthiest, oldest."""
    return (not m.current, _RANK[m.verdict], m.first_seen, m.id)


@dataclasses.dataclass
class Budget:
    """The rollout bounds, counted down as the plan takes instances away (local to one plan)."""

    floor: int        # size - MaxUnavailable
    members: int      # members left after this plan's destroys
    strict: int       # up-to-date READY + available outdated members left
    available: int    # READY + PENDING members left
    room: int         # creates allowed: size + MaxSurge - members before this plan's destroys

    def allows(self, m: Member) -> bool:
        """May ``m`` go without breaking availability? (A not-available member costs nothing.)"""
        if self.members - 1 < self.floor:
            return False
        if not m.verdict.available:
            return True
        counted_strict = m.verdict is Verdict.READY or not m.current
        if counted_strict and self.strict - 1 < self.floor:
            return False
        return self.available - 1 >= self.floor

    def take(self, m: Member) -> None:
        self.members -= 1
        if m.verdict.available:
            self.available -= 1
            if m.verdict is Verdict.READY or not m.current:
                self.strict -= 1


def classify(
    *, spec: GroupSpec, observed: Sequence[instance.Description], health: Mapping[instance.ID, HealthRecord],
    now: float,
) -> list[Member]:
    """The group's members (by tag), each with its hash status and health verdict, in ID order."""
    out = []
    for d in sorted(observed, key=lambda d: d.id):
        if d.tags.get(instance.TAG_GROUP) != spec.id:
            continue
        tag = d.tags.get(instance.TAG_CONFIG_HASH)
        record = health.get(d.id)
        out.append(Member(
            description=d, current=tag in (spec.config_hash, instance.BOOTSTRAP_CONFIG_HASH),
            bootstrap=tag == instance.BOOTSTRAP_CONFIG_HASH, verdict=verdict(record, spec.health, now),
            first_seen=record.first_seen if record is not None else now,
        ))
    return out


class Step:
    """Accumulates one plan's actions and what was held back (local to ``plan_group``)."""

    def __init__(self, *, spec: GroupSpec, memory: Memory, now: float, brake: bool) -> None:
        self.spec, self.memory, self.now, self.brake = spec, memory, now, brake
        self.destroys: list[Destroy] = []
        self.creates: list[Create] = []
        self.destroyed: set[instance.ID] = set()
        self.held_slots: list[Slot] = []
        self.held_failed = 0
        self.budget = Budget(floor=0, members=0, strict=0, available=0, room=0)

    def start_budget(self, members: Sequence[Member], *, floor: int) -> None:
        self.budget = Budget(
            floor=floor, members=len(members),
            strict=sum(1 for m in members if m.verdict.available and (m.verdict is Verdict.READY or not m.current)),
            available=sum(1 for m in members if m.verdict.available),
            room=self.spec.size + self.spec.max_surge() - len(members),
        )

    def destroy(self, m: Member, cause: str, reason: str) -> None:
        skip_drain = cause == CAUSE_ROLLING_UPDATE and self.spec.updating.skip_before_instance_destroy is not None
        drain = cause != CAUSE_UNHEALTHY and not skip_drain
        self.destroys.append(Destroy(instance_id=m.id, reason=reason, drain=drain, cause=cause))
        self.destroyed.add(m.id)
        self.budget.take(m)

    def destroy_unbudgeted(self, m: Member, cause: str, reason: str) -> None:
        """Destroy a member the budget does not count (a stray or a duplicate of a logical ID)."""
        self.destroys.append(Destroy(instance_id=m.id, reason=reason, drain=True, cause=cause))
        self.destroyed.add(m.id)

    def note_held(self, slot: Slot) -> None:
        """Record that a create into ``slot`` is held back by its backoff."""
        if slot not in self.held_slots:
            self.held_slots.append(slot)

    def destroy_failed(self, members: Sequence[Member]) -> None:
        """Rule 2: replace FAILED members unless the brake holds them."""
        for m in members:
            if m.verdict is Verdict.FAILED:
                if self.brake:
                    self.held_failed += 1
                else:
                    self.destroy(m, CAUSE_UNHEALTHY,
                                 f"unhealthy for {self.spec.health.unhealthy_threshold} consecutive checks")

    def create(self, logical_id: instance.LogicalID | None, reason: str) -> bool:
        """Plan one create if the surge allows and its slot is not backing off; say whether it was planned."""
        slot = logical_id if logical_id is not None else CATTLE_SLOT
        if self.memory.backing_off(slot, self.now):
            self.note_held(slot)
            return False
        if self.budget.room <= 0:
            return False
        self.budget.room -= 1
        self.creates.append(Create(logical_id=logical_id, reason=reason))
        return True

    def finish(self, members: Sequence[Member], failed: Sequence[Member]) -> Plan:
        spec = self.spec
        relabels = [
            Relabel(instance_id=m.id, tags=((instance.TAG_CONFIG_HASH, spec.config_hash),))
            for m in members if m.bootstrap and m.id not in self.destroyed
        ]
        actions: tuple[Action, ...] = (*self.destroys, *relabels, *self.creates)
        outdated = sum(1 for m in members if not m.current)
        counts = Counts(
            desired=spec.size, running=len(members),
            healthy=sum(1 for m in members if m.verdict is Verdict.READY), unhealthy=len(failed),
            pending=sum(1 for m in members if m.verdict is Verdict.PENDING),
            suspect=sum(1 for m in members if m.verdict is Verdict.SUSPECT), outdated=outdated,
        )
        shape_ok = len(members) == spec.size and outdated == 0 and (
            not spec.is_pets or sorted(m.logical_id or "" for m in members) == sorted(spec.logical_ids or ()))
        converged = shape_ok and not actions and not self.held_slots and not self.held_failed
        text = summary.NOOP if converged else summary.describe_change(
            size=spec.size, members=len(members), outdated=outdated)
        condition, reason = CONVERGED if converged else PROGRESSING, ""
        if self.brake:
            condition = DEGRADED
            reason = (f"max-unhealthy brake: {len(failed)} of {spec.size} instances are unhealthy, more than "
                      f"Health.MaxUnhealthy ({spec.health.max_unhealthy}) allows; replacing none until fewer are")
        elif self.held_slots:
            condition = DEGRADED
            failure = self.memory.get(self.held_slots[0])
            assert failure is not None
            what = "instances" if self.held_slots[0] == CATTLE_SLOT else f"logical ID {self.held_slots[0]}"
            reason = (f"creating {what} is backing off after {failure.count} failures "
                      f"(next try in {max(0.0, failure.retry_at - self.now):.0f}s): {failure.error}")
        elif not converged:
            last = self.memory.last_progress
            deadline = spec.updating.progress_deadline
            if last is not None and self.now - last > deadline:
                condition = DEGRADED
                reason = f"no progress for {self.now - last:.0f}s (Updating.ProgressDeadline is {deadline:g}s)"
            elif not actions:
                reason = _waiting_reason(members)
        return Plan(actions=actions, summary=text, counts=counts, converged=converged, condition=condition,
                    reason=reason, braked=self.brake)


def _waiting_reason(members: Sequence[Member]) -> str:
    """Why a plan with nothing to do is not converged (a rollout waiting on health)."""
    waiting = [m for m in members if m.current and m.verdict is not Verdict.READY]
    if waiting:
        return f"waiting for {len(waiting)} up-to-date instances to become healthy before replacing more"
    return "waiting for the availability budget (Updating.MaxUnavailable) to allow the next replacement"
