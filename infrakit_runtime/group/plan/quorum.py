"""The quorum guard for groups whose members vote (``Updating.Quorum``: etcd members): pure.

Guarantee: whatever ``MaxUnavailable`` says, a quorum group changes one member at a time and
never loses a member that answers while that would leave fewer answering logical IDs than a
majority of the group; while a member that joined has not answered yet, nothing else moves.
With the majority lost - fewer logical IDs answer (a READY member) than a majority of those
that vote (any member past its grace period or answering), or the flavor's last word on any
member's cluster (``flavor.Quorum``, in its health record) is that fewer voting members answer
than a majority - no action at all is planned (no create, no destroy, hence no drain) and
``lost`` says how many answer of how many: a member added or removed without quorum can only
make it worse, and a person must decide (docs/operations.md, disaster recovery). The flavor's
count matters when members are killed: the instance plugin stops describing them at once, so
the planner alone would see one answering member of one, while they still vote in the cluster.
Planning resumes with the first health check that finds a majority answering again.
Limit: a member that joined and has not yet answered is not counted as voting (an etcd learner
does not vote); without a flavor's count, a member killed before its first health check counts
as nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from infrakit_runtime.group.plan.actions import Destroy
from infrakit_runtime.group.plan.health import Verdict
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.group.plan.step import Member, Step

__all__ = ["limit", "lost"]


def majority(n: int) -> int:
    return n // 2 + 1


def _lids(members: Sequence[Member], wanted: set[str], ok: object) -> set[str]:
    return {m.logical_id for m in members if m.logical_id in wanted and ok(m)}  # type: ignore[operator]


def lost(spec: GroupSpec, members: Sequence[Member]) -> str:
    """Why the group has no quorum (how many answer), or "" when it has one."""
    wanted = set(spec.logical_ids or ())
    answering = _lids(members, wanted, lambda m: m.verdict is Verdict.READY)
    voting = _lids(members, wanted, lambda m: m.verdict is not Verdict.PENDING) | answering
    reports = [m.quorum for m in members if m.logical_id in wanted and m.quorum is not None]
    short = [q for q in reports if not q.held]
    if short:
        # The most pessimistic report: the fewest answering beside the most voting (killed members included).
        q = min(short, key=lambda q: (q.answering - majority(q.voting), -q.voting))
        seen = (f"{q.answering} of {q.voting} members answer (the flavor's count of the cluster's voting members), "
                f"a majority needs {majority(q.voting)}")
    elif len(answering) >= majority(len(voting)):
        return ""
    else:
        seen = (f"{len(answering)} of {spec.size} members answer, a majority of the {len(voting)} voting "
                f"needs {majority(len(voting))}")
    return (f"quorum lost: {seen}; nothing is changed until enough answer again (a member added or removed "
            f"now cannot commit); if they never will, restore from a snapshot (docs/operations.md)")


def limit(step: Step, members: Sequence[Member]) -> None:
    """Cut ``step``'s planned changes down to what keeps the quorum: at most one, and none while one joins."""
    wanted = set(step.spec.logical_ids or ())
    if any(m.verdict is Verdict.PENDING for m in members if m.logical_id in wanted):
        step.destroys.clear()
        step.creates.clear()
        return
    kept: list[Destroy] = []
    for d in step.destroys:
        answering_after = _lids([m for m in members if m.id != d.instance_id], wanted,
                                lambda m: m.verdict is Verdict.READY)
        if len(answering_after) >= majority(len(wanted)) or not _answers(members, d.instance_id):
            kept = [d]
            break
    step.destroys[:] = kept
    step.destroyed.intersection_update({d.instance_id for d in kept})
    if kept:
        step.creates.clear()
    else:
        step.creates[:] = step.creates[:1]


def _answers(members: Sequence[Member], instance_id: str) -> bool:
    return any(m.id == instance_id and m.verdict is Verdict.READY for m in members)
