"""The planner's working parts: members as the planner sees them, the rollout budget, one plan in the making.

Guarantee: nothing here reads a clock or does I/O; a ``Step`` lives only inside one
``plan_group`` call, so no state leaks from one plan to the next.
Limit: internal to ``plan`` and ``pets``; the supervisor uses ``plan.plan_group`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from infrakit_runtime.group.plan import summary
from infrakit_runtime.group.plan.actions import (
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
from infrakit_runtime.group.plan.health import HealthRecord, Verdict, judge
from infrakit_runtime.group.plan.memory import CATTLE_SLOT, CRASH, PROVISION, Memory, Slot
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.spi import flavor, instance

__all__ = ["Budget", "Member", "Step", "classify", "excess_order", "keep_order", "probe_proven", "removal_order"]


@dataclasses.dataclass(frozen=True)
class Member:
    """A member as the planner sees it."""

    description: instance.Description
    current: bool
    bootstrap: bool
    verdict: Verdict
    first_seen: float
    quorum: flavor.Quorum | None = None  # the flavor's last word on the quorum of this member's cluster

    @property
    def id(self) -> instance.ID:
        return self.description.id

    @property
    def logical_id(self) -> instance.LogicalID | None:
        return self.description.logical_id or self.description.tags.get(instance.TAG_LOGICAL_ID)


_RANK = {Verdict.READY: 0, Verdict.UNJUDGED: 1, Verdict.PENDING: 2, Verdict.SUSPECT: 3, Verdict.FAILED: 4}


def removal_order(m: Member) -> tuple[int, float, str]:
    """Outdated members go first: not available ones, then pending, then unjudged, then ready; oldest first."""
    return (-_RANK[m.verdict], m.first_seen, m.id)


def excess_order(m: Member) -> tuple[int, float, str]:
    """Extra up-to-date members go: FAILED, suspect, pending, then ready; newest first."""
    return (-_RANK[m.verdict], -m.first_seen, m.id)


def keep_order(m: Member) -> tuple[bool, int, float, str]:
    """Which member of a logical ID to keep: up to date, healthiest, oldest."""
    return (not m.current, _RANK[m.verdict], m.first_seen, m.id)


@dataclasses.dataclass
class Budget:
    """The rollout bounds, counted down as the plan takes instances away (local to one plan).

    A member the health checks call not available costs nothing to remove - unless the
    budget ``distrust``s the checks (the max-unhealthy brake holds): then every member counts
    as serving, so no destroy of any cause rests on a health verdict.
    """

    floor: int        # size - MaxUnavailable
    members: int      # members left after this plan's destroys
    strict: int       # up-to-date READY + serving outdated members left
    available: int    # serving (READY, PENDING, UNJUDGED) members left
    room: int         # creates allowed: size + MaxSurge - members before this plan's destroys
    distrust: bool = False

    def serving(self, m: Member) -> bool:
        return self.distrust or m.verdict.available

    def counts_strict(self, m: Member) -> bool:
        return self.serving(m) and (m.verdict is Verdict.READY or not m.current)

    def allows(self, m: Member) -> bool:
        """May ``m`` go without breaking availability? (A member not serving costs nothing.)"""
        if self.members - 1 < self.floor:
            return False
        if not self.serving(m):
            return True
        if self.counts_strict(m) and self.strict - 1 < self.floor:
            return False
        return self.available - 1 >= self.floor

    def take(self, m: Member) -> None:
        self.members -= 1
        if self.serving(m):
            self.available -= 1
            if self.counts_strict(m):
                self.strict -= 1


def _is_current(spec: GroupSpec, d: instance.Description) -> bool:
    return d.tags.get(instance.TAG_CONFIG_HASH) in (spec.config_hash, instance.BOOTSTRAP_CONFIG_HASH)


def probe_proven(*, spec: GroupSpec, observed: Sequence[instance.Description],
                 health: Mapping[instance.ID, HealthRecord]) -> bool:
    """Has the current spec's probe passed on a member the current spec made (so it may judge older ones)?"""
    for d in observed:
        record = health.get(d.id)
        if (d.tags.get(instance.TAG_GROUP) == spec.id and _is_current(spec, d) and record is not None
                and record.passed and record.probe in (None, spec.config_hash)):
            return True
    return False


def classify(
    *, spec: GroupSpec, observed: Sequence[instance.Description], health: Mapping[instance.ID, HealthRecord],
    now: float,
) -> list[Member]:
    """The group's members (by tag), each with its hash status and health verdict, in ID order.

    Each is judged by the probe it was made with (``health.judge``): the records say which probe made them.
    """
    proven = probe_proven(spec=spec, observed=observed, health=health)
    out = []
    for d in sorted(observed, key=lambda d: d.id):
        if d.tags.get(instance.TAG_GROUP) != spec.id:
            continue
        tag = d.tags.get(instance.TAG_CONFIG_HASH)
        current = _is_current(spec, d)
        record = health.get(d.id)
        made_by = spec.config_hash if current else (tag or "")
        out.append(Member(
            description=d, current=current, bootstrap=tag == instance.BOOTSTRAP_CONFIG_HASH,
            verdict=judge(record, made_by=made_by, current=spec.config_hash, proven=proven, policy=spec.health,
                          now=now),
            first_seen=record.first_seen if record is not None else now,
            quorum=record.quorum if record is not None else None,
        ))
    return out


class Step:
    """Accumulates one plan's actions and what was held back (local to ``plan_group``)."""

    def __init__(self, *, spec: GroupSpec, memory: Memory, now: float, brake: bool,
                 self_id: instance.LogicalID | None = None) -> None:
        self.spec, self.memory, self.now, self.brake = spec, memory, now, brake
        self.self_id = self_id
        self.handover_wanted: list[str] = []
        self.destroys: list[Destroy] = []
        self.creates: list[Create] = []
        self.tags_taken: set[str] = set()  # retry tags given to ``creates`` (a set: one scan per plan, not per create)
        self.destroyed: set[instance.ID] = set()
        self.held_slots: list[Slot] = []
        self.held_failed = 0
        self.budget = Budget(floor=0, members=0, strict=0, available=0, room=0)

    def start_budget(self, members: Sequence[Member], *, floor: int) -> None:
        budget = Budget(floor=floor, members=len(members), strict=0, available=0,
                        room=self.spec.size + self.spec.max_surge() - len(members), distrust=self.brake)
        budget.strict = sum(1 for m in members if budget.counts_strict(m))
        budget.available = sum(1 for m in members if budget.serving(m))
        self.budget = budget

    def protected(self, m: Member, reason: str) -> bool:
        """Is ``m`` the instance this replica runs on? Then it is never destroyed here: a handover is wanted."""
        if self.self_id is None or m.logical_id != self.self_id:
            return False
        if reason not in self.handover_wanted:
            self.handover_wanted.append(reason)
        return True

    def destroy(self, m: Member, cause: str, reason: str) -> None:
        if self.protected(m, reason):
            return
        skip_drain = cause == CAUSE_ROLLING_UPDATE and self.spec.updating.skip_before_instance_destroy is not None
        drain = cause != CAUSE_UNHEALTHY and not skip_drain
        self.destroys.append(Destroy(instance_id=m.id, reason=reason, drain=drain, cause=cause))
        self.destroyed.add(m.id)
        self.budget.take(m)

    def destroy_unbudgeted(self, m: Member, cause: str, reason: str) -> None:
        """Destroy a member the budget does not count (a stray or a duplicate of a logical ID)."""
        if self.protected(m, reason):
            return
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
        tag = None
        if logical_id is None and self.memory.retry_tags:
            tag = next((t for t in self.memory.retry_tags if t not in self.tags_taken), None)
            if tag is not None:
                self.tags_taken.add(tag)
        self.creates.append(Create(logical_id=logical_id, reason=reason, tag=tag))
        return True

    def finish(self, members: Sequence[Member]) -> Plan:
        spec = self.spec
        relabels = [
            Relabel(instance_id=m.id, tags=((instance.TAG_CONFIG_HASH, spec.config_hash),))
            for m in members if m.bootstrap and m.id not in self.destroyed
        ]
        actions: tuple[Action, ...] = (*self.destroys, *relabels, *self.creates)
        outdated = sum(1 for m in members if not m.current)
        counts = Counts(
            desired=spec.size, running=len(members),
            healthy=sum(1 for m in members if m.verdict is Verdict.READY),
            unhealthy=sum(1 for m in members if m.verdict is Verdict.FAILED),
            pending=sum(1 for m in members if m.verdict is Verdict.PENDING),
            suspect=sum(1 for m in members if m.verdict is Verdict.SUSPECT), outdated=outdated,
            unjudged=sum(1 for m in members if m.verdict is Verdict.UNJUDGED),
        )
        shape_ok = len(members) == spec.size and outdated == 0 and (
            not spec.is_pets or sorted(m.logical_id or "" for m in members) == sorted(spec.logical_ids or ()))
        shaped = shape_ok and not actions and not self.held_slots and not self.held_failed
        # Converged means count, config and health all match: every member READY, not merely pending.
        converged = shaped and counts.healthy == spec.size
        text = summary.NOOP if shaped else summary.describe_change(size=spec.size, members=len(members), outdated=outdated)
        condition, reason = self._condition(members, converged=converged, shaped=shaped, actions=actions)
        # Look again soon while the group moves: after acting, or while members it still lacks are starting.
        requeue_after = 0.0 if actions or (not shaped and counts.pending > 0) else None
        return Plan(actions=actions, summary=text, counts=counts, converged=converged, condition=condition,
                    reason=reason, braked=self.brake, shaped=shaped, requeue_after=requeue_after,
                    handover=self._handover(members, actions))

    def _condition(self, members: Sequence[Member], *, converged: bool, shaped: bool,
                   actions: tuple[Action, ...]) -> tuple[str, str]:
        """The Condition and Reason the group reports, in the order they take precedence.

        A slot whose last provision failed keeps the group Degraded with the plugin's error even in
        the moment its retry is due, so the status does not flicker to Progressing between two
        failed attempts.
        """
        spec, memory = self.spec, self.memory
        last = memory.last_progress
        deadline = spec.updating.progress_deadline
        if converged:
            return CONVERGED, ""
        if self.brake:
            doubtful = sum(1 for m in members if not m.verdict.available)
            return DEGRADED, (f"max-unhealthy brake: {doubtful} of {spec.size} instances are unhealthy or not passing "
                              f"their health checks, more than Health.MaxUnhealthy ({spec.health.max_unhealthy}) "
                              f"allows; no instance is destroyed on the word of a health check until fewer are")
        if not shaped and last is not None and self.now - last > deadline:
            reason = _stuck_reason(members, stalled=self.now - last, deadline=deadline, size=spec.size)
            error = memory.last_error()
            return DEGRADED, reason + (f"; last failure: {error}" if error else "")
        if self.held_slots:
            failure = memory.get(self.held_slots[0])
            assert failure is not None
            what = "instances" if self.held_slots[0] == CATTLE_SLOT else f"logical ID {self.held_slots[0]}"
            crash = "crash loop: " if failure.kind == CRASH else ""
            return DEGRADED, (f"{crash}creating {what} is backing off after {failure.count} failures "
                              f"(next try in {max(0.0, failure.retry_at - self.now):.0f}s): {failure.error}")
        if shaped:
            return PROGRESSING, "waiting for new instances to pass their health checks"
        if memory.failures:
            failure = max((f for _, f in memory.failures), key=lambda f: f.last_failure)
            what = {PROVISION: "provisioning keeps failing", CRASH: "crash loop: new instances keep exiting"}.get(
                failure.kind, "new instances keep failing to start")
            return DEGRADED, f"{what} ({failure.count} consecutive failures; retrying now): {failure.error}"
        return PROGRESSING, "" if actions else _waiting_reason(members)

    def _handover(self, members: Sequence[Member], actions: tuple[Action, ...]) -> str:
        """Why this replica should hand leadership over now, or "" (see ``protected``).

        Only once nothing else is planned and every other logical ID is held by a READY member
        of the current spec: the next leader is ready and already on the new version.
        """
        if not self.handover_wanted or any(not isinstance(a, Relabel) for a in actions):
            return ""
        for lid in self.spec.logical_ids or ():
            if lid != self.self_id and not any(m.logical_id == lid and m.current and m.verdict is Verdict.READY
                                               and m.id not in self.destroyed for m in members):
                return ""
        return f"the instance this replica runs on ({self.self_id}) is due to go: {self.handover_wanted[0]}"


def _stuck_reason(members: Sequence[Member], *, stalled: float, deadline: float, size: int) -> str:
    """Why an unconverged group is Degraded once ``Updating.ProgressDeadline`` has passed without progress."""
    head = f"no progress for {stalled:.0f}s (Updating.ProgressDeadline is {deadline:g}s)"
    old = [m for m in members if not m.current]
    if not old:
        return head
    ready = sum(1 for m in members if m.current and m.verdict is Verdict.READY)
    serving = sum(1 for m in old if m.verdict.available)
    return (f"rollout stuck: {head}; {ready} of {size} instances run the new spec and pass its health check, "
            f"{serving} instances of the previous spec keep serving")


def _waiting_reason(members: Sequence[Member]) -> str:
    """Why a plan with nothing to do is not converged (a rollout waiting on health)."""
    waiting = [m for m in members if m.current and m.verdict is not Verdict.READY]
    if waiting:
        return f"waiting for {len(waiting)} up-to-date instances to become healthy before replacing more"
    return "waiting for the availability budget (Updating.MaxUnavailable) to allow the next replacement"
