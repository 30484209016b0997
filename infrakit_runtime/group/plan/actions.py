"""The plan as a value: actions to take and where the group stands.

Guarantee: every type here is a frozen, comparable, printable dataclass with nothing callable
inside; a ``Plan`` renders InfraKit's text in ``summary`` but is not the text.
Limit: values only; ``plan.plan_group`` decides them and the supervisor acts on them.
"""

from __future__ import annotations

import dataclasses

from infrakit_runtime.group.plan import summary
from infrakit_runtime.group.plan.memory import CATTLE_SLOT, Slot
from infrakit_runtime.spi import instance

__all__ = [
    "CAUSE_DUPLICATE", "CAUSE_NOT_IN_ALLOCATION", "CAUSE_ROLLING_UPDATE", "CAUSE_SCALE_DOWN", "CAUSE_UNHEALTHY",
    "CONVERGED", "DEGRADED", "PROGRESSING", "Action", "Counts", "Create", "Destroy", "Plan", "Relabel",
]

CONVERGED = "Converged"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

# Why a Destroy was planned (the supervisor maps them to InfraKit's Context.Reason).
CAUSE_UNHEALTHY = "unhealthy"
CAUSE_ROLLING_UPDATE = "rolling_update"
CAUSE_SCALE_DOWN = "scale_down"
CAUSE_NOT_IN_ALLOCATION = "not_in_allocation"
CAUSE_DUPLICATE = "duplicate"


@dataclasses.dataclass(frozen=True)
class Create:
    """Provision one member (for pets, with this logical ID); ``tag``: the slot tag of an earlier
    create whose outcome is unknown, to reuse (``Memory.retry_tags``), else a fresh one."""

    logical_id: instance.LogicalID | None
    reason: str
    tag: str | None = None

    @property
    def slot(self) -> Slot:
        """The backoff slot a failure of this create is recorded against."""
        return self.logical_id if self.logical_id is not None else CATTLE_SLOT


@dataclasses.dataclass(frozen=True)
class Destroy:
    """Remove one member; ``drain`` asks the flavor to drain it first."""

    instance_id: instance.ID
    reason: str
    drain: bool
    cause: str = CAUSE_SCALE_DOWN

    @property
    def context(self) -> instance.Context:
        """InfraKit's Destroy context: ``rolling_update`` for a rollout, ``terminate`` otherwise."""
        if self.cause == CAUSE_ROLLING_UPDATE:
            return instance.Context(reason=instance.REASON_ROLLING_UPDATE)
        return instance.Context(reason=instance.REASON_TERMINATE)


@dataclasses.dataclass(frozen=True)
class Relabel:
    """Merge ``tags`` into a member's tags (adopts a ``bootstrap`` member without a rollout)."""

    instance_id: instance.ID
    tags: tuple[tuple[str, str], ...]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.tags)


Action = Create | Destroy | Relabel


@dataclasses.dataclass(frozen=True)
class Counts:
    """The group at a glance (``suspect``: past grace without enough HEALTHY checks, e.g. UNKNOWN;
    ``unjudged``: made by an earlier spec whose probe is unknown here, presumed serving)."""

    desired: int = 0
    running: int = 0
    healthy: int = 0
    unhealthy: int = 0
    pending: int = 0
    suspect: int = 0
    outdated: int = 0
    unjudged: int = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """The next step for one group, where the group stands, and when to look again.

    This is the one answer to "is the group converged?": DescribeGroup's ``Converged`` and
    ``Status``, the metrics, the Ansible module's ``wait`` and the CLI's ``watch`` all read
    ``converged``, ``condition`` and ``reason`` from here and recompute nothing.

    - ``shaped``: count and configuration match the spec and nothing is planned or held back;
      the members' health checks may still be pending.
    - ``converged``: ``shaped`` and every member READY (condition ``Converged``).
    - ``requeue_after``: as controller-runtime's ``Result.RequeueAfter``: ``None`` when nothing
      is expected to change before the next poll, else look again after this many seconds
      (``0.0``: as soon as the supervisor allows - the group is moving).
    """

    actions: tuple[Action, ...] = ()
    summary: str = summary.NOOP
    counts: Counts = Counts()
    converged: bool = False
    condition: str = PROGRESSING
    reason: str = ""
    braked: bool = False  # the max-unhealthy brake holds: no destroy rests on a health verdict (condition Degraded)
    # Non-empty: the member this replica runs on is due to go (why), and a ready follower on the
    # current spec can lead: the replica hands leadership over instead of destroying its own instance.
    handover: str = ""
    shaped: bool = False
    requeue_after: float | None = None

    @property
    def is_noop(self) -> bool:
        return not self.actions

    def status(self) -> dict[str, object]:
        """The additive ``Status`` field of DescribeGroup (InfraKit's clients ignore it)."""
        c = self.counts
        return {
            "Condition": self.condition, "Reason": self.reason, "Summary": self.summary, "Braked": self.braked,
            "Desired": c.desired, "Running": c.running, "Healthy": c.healthy, "Unhealthy": c.unhealthy,
            "Pending": c.pending, "Suspect": c.suspect, "Outdated": c.outdated, "Unjudged": c.unjudged,
        }
