"""The group planner: what to create, destroy and relabel next, as a value.

Guarantee: ``plan_group`` is pure, synchronous and total - no I/O, no clock (``now`` is an
argument), no exception for any observed world - and the plan it returns, applied in any
order, keeps the group within its rollout bounds: never more than ``size + MaxSurge``
members (instances destroyed by the same plan still count), and never a destroy that takes
the serving members below ``size - MaxUnavailable``, whatever the new spec says about
health: a member is judged by the probe of the spec that made it (the probe a newer spec
brought judges it only once that probe has passed on a member the newer spec made), and
when more members look dead than ``Health.MaxUnhealthy`` allows, no destroy of any cause
rests on a health verdict. The supervisor acts; this module only decides. A converged group
plans nothing: empty actions, summary "Noop".
Limit: one plan is one step. A rollout, a heal or a resize is the sequence of plans the
supervisor makes as the world changes; the planner trusts ``observed`` to be complete, and
a probe that says HEALTHY of an instance that does not serve.

Rules, in the order the planner applies them:

0. What is observed is the plugin's description plus the members provisioned but not yet
   described, while ``observed.UNSEEN_GRACE`` lasts (``unseen``); ``Counts.running`` counts
   only the described ones (an unseen one may have exited at once: a crash loop).
1. Members are the observed instances tagged ``infrakit.group=<spec.id>``; a member whose
   ``infrakit.config.hash`` is the spec's is up to date, one tagged ``bootstrap`` is adopted
   by a ``Relabel`` (never rolled), any other is outdated. Each gets a verdict from the
   health records of its own probe (``health.judge``): an outdated member whose probe is
   unknown here is UNJUDGED (presumed serving) until the current probe has passed once.
2. The brake, before anything is planned: if more members are not available (SUSPECT or
   FAILED) than ``Health.MaxUnhealthy`` allows, the plan distrusts every verdict - FAILED
   members are held, and every destroy below (outdated, scale-down) is paid from the
   availability budget as if the member served - and says Degraded. Otherwise a FAILED
   member (``Health.UnhealthyThreshold`` UNHEALTHY checks after its grace period) is destroyed.
3. Outdated members go before up-to-date ones, those not available (suspect, held) first,
   oldest first; each only while the members left stay at or above ``size - MaxUnavailable``
   and, for a serving one, while up-to-date READY members plus serving outdated ones do.
4. Up-to-date members beyond ``size`` go: FAILED, suspect, pending, ready; newest first.
5. Creates fill the missing up-to-date members, up to ``size + MaxSurge`` members in all,
   except into a slot whose backoff has not expired (the plan then says Degraded); a cattle
   create reuses the tag of an earlier create whose outcome is unknown (``Memory.retry_tags``).
6. Self (pets, ``self_id``): no member holding the planning replica's own logical ID is
   destroyed; it rolls last, and once every other logical ID has a READY up-to-date member
   the plan asks for a handover (``Plan.handover``) instead - the next leader replaces it.
7. Quorum (pets, ``Updating.Quorum``): ``quorum`` - no action without a majority answering (as
   the planner counts the members, or as the flavor counts the cluster's voters: ``Member.quorum``),
   else one change at a time that keeps a majority answering.

Pets (``LogicalIDs``) follow the same rules per logical ID: members with an unknown or no
logical ID are destroyed, one member per ID is kept (up to date, then healthiest, then
oldest), and an outdated member gives way once its up-to-date successor is READY (or, if
the brake does not hold, once its own probe says it does not serve).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from infrakit_runtime.group.plan import pets, quorum
from infrakit_runtime.group.plan.actions import (
    CAUSE_DUPLICATE,
    CAUSE_NOT_IN_ALLOCATION,
    CAUSE_ROLLING_UPDATE,
    CAUSE_SCALE_DOWN,
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
from infrakit_runtime.group.plan.health import HealthRecord, Verdict
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.observed import Unseen
from infrakit_runtime.group.plan.observed import members as members_seen
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.group.plan.step import Member, Step, classify, excess_order, removal_order
from infrakit_runtime.group.plan.summary import describe_commit
from infrakit_runtime.spi import instance

__all__ = [
    "CAUSE_DUPLICATE", "CAUSE_NOT_IN_ALLOCATION", "CAUSE_ROLLING_UPDATE", "CAUSE_SCALE_DOWN", "CAUSE_UNHEALTHY",
    "CONVERGED", "DEGRADED", "PROGRESSING", "Action", "Counts", "Create", "Destroy", "HealthRecord", "Member",
    "Memory", "Plan", "Relabel", "Unseen", "describe_commit", "judge_members", "plan_group",
]

def plan_group(
    *,
    spec: GroupSpec,
    observed: Sequence[instance.Description],
    health: Mapping[instance.ID, HealthRecord],
    memory: Memory,
    now: float,
    self_id: instance.LogicalID | None = None,
    unseen: Sequence[Unseen] = (),
) -> Plan:
    """The next step for ``spec``'s group given what was ``observed``; pure - the supervisor acts on it.

    ``health`` holds each member's checks, by the probe named in the record (``HealthRecord.probe``).
    ``self_id`` is the logical ID of the instance this replica runs on (its members are never
    destroyed; ``Plan.handover`` asks for a handover instead). ``unseen``: members provisioned but
    not described yet, members while their grace lasts (``observed.members``); cattle creates
    reuse ``memory.retry_tags``.
    """
    observed = members_seen(described=observed, unseen=unseen, now=now)
    members = classify(spec=spec, observed=observed, health=health, now=now)
    plan = _plan(spec=spec, members=members, memory=memory, now=now, self_id=self_id)
    # Running counts what the plugin describes: a member provisioned but never described may have exited at once.
    awaited = {u.id for u in unseen}
    running = sum(1 for m in members if m.id not in awaited)
    return dataclasses.replace(plan, counts=dataclasses.replace(plan.counts, running=running))


def _plan(*, spec: GroupSpec, members: Sequence[Member], memory: Memory, now: float,
          self_id: instance.LogicalID | None) -> Plan:
    guarded = spec.is_pets and spec.updating.quorum
    if guarded and (why := quorum.lost(spec, members)):
        held = Step(spec=spec, memory=memory, now=now, brake=False).finish(members)
        return dataclasses.replace(held, actions=(), converged=False, shaped=False, requeue_after=None,
                                   condition=DEGRADED, reason=why)
    # Rule 2, before any destroy is planned: every member that looks dead counts, whatever would remove it.
    brake = sum(1 for m in members if not m.verdict.available) > spec.max_unhealthy()
    step = Step(spec=spec, memory=memory, now=now, brake=brake, self_id=self_id if spec.is_pets else None)
    if spec.is_pets:
        pets.plan_pets(step, members)
    else:
        _plan_cattle(step, members)
    if guarded:
        quorum.limit(step, members)
    return step.finish(members)


def judge_members(
    *, spec: GroupSpec, observed: Sequence[instance.Description], health: Mapping[instance.ID, HealthRecord],
    now: float,
) -> dict[instance.ID, Verdict]:
    """Each member's verdict exactly as ``plan_group`` judges it (for status displays); pure."""
    return {m.id: m.verdict for m in classify(spec=spec, observed=observed, health=health, now=now)}


def _plan_cattle(step: Step, members: Sequence[Member]) -> None:
    spec = step.spec
    step.start_budget(members, floor=spec.size - spec.max_unavailable())
    step.destroy_failed(members)
    # Rule 3: outdated members, not-available ones first, oldest first, within the budget.
    # One is rolled (InfraKit's rolling_update) while it still has to be replaced, else scaled down.
    up_to_date = sum(1 for m in members if m.current and m.id not in step.destroyed)
    for m in sorted((m for m in members if not m.current and m.id not in step.destroyed), key=removal_order):
        if not step.budget.allows(m):
            continue
        if up_to_date >= spec.size:
            step.destroy(m, CAUSE_SCALE_DOWN, f"outdated; reducing the group size to {spec.size}")
        else:
            step.destroy(m, CAUSE_ROLLING_UPDATE, "outdated: rolling update")
    # Rule 4: up-to-date members beyond the size.
    current = [m for m in members if m.current and m.id not in step.destroyed]
    for m in sorted(current, key=excess_order)[: max(0, len(current) - spec.size)]:
        if step.budget.allows(m):
            step.destroy(m, CAUSE_SCALE_DOWN, f"reducing the group size to {spec.size}")
    # Rule 5: create the missing up-to-date members, within the surge.
    current_left = sum(1 for m in current if m.id not in step.destroyed)
    reason = ("replacing an outdated instance" if any(not m.current for m in members)
              else f"increasing the group to {spec.size} instances")
    for _ in range(max(0, spec.size - current_left)):
        if not step.create(None, reason):
            break
