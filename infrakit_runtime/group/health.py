"""Health bookkeeping for the planner: what the checks said, turned into a verdict per instance.

Guarantee: a verdict is a pure function of a ``HealthRecord``, the group's ``HealthPolicy``
and ``now``; an instance is condemned only after its grace period AND ``UnhealthyThreshold``
consecutive UNHEALTHY checks, so one bad probe (or a slow boot) never destroys anything.
Limit: the records are the supervisor's memory of the checks; after a restart they start
over, which only delays condemnation (it never hastens it).
"""

from __future__ import annotations

import dataclasses
import enum

from infrakit_runtime.group.spec import HealthPolicy
from infrakit_runtime.spi import flavor

__all__ = ["HealthRecord", "Verdict", "verdict"]


@dataclasses.dataclass(frozen=True)
class HealthRecord:
    """What health checks have said about one instance since it was first seen."""

    first_seen: float
    last: flavor.Health = flavor.Health.UNKNOWN
    consecutive_unhealthy: int = 0
    consecutive_healthy: int = 0

    def checked(self, health: flavor.Health) -> HealthRecord:
        """The record after one more check (UNKNOWN resets neither streak's opposite, only itself)."""
        if health == flavor.Health.HEALTHY:
            return dataclasses.replace(self, last=health, consecutive_healthy=self.consecutive_healthy + 1,
                                       consecutive_unhealthy=0)
        if health == flavor.Health.UNHEALTHY:
            return dataclasses.replace(self, last=health, consecutive_unhealthy=self.consecutive_unhealthy + 1,
                                       consecutive_healthy=0)
        return dataclasses.replace(self, last=health, consecutive_healthy=0, consecutive_unhealthy=0)


class Verdict(enum.Enum):
    """How the planner treats an instance.

    READY and PENDING count as available for the rollout budget; SUSPECT (past its grace
    period without enough HEALTHY checks, e.g. health UNKNOWN) and FAILED do not.
    """

    READY = "ready"
    PENDING = "pending"
    SUSPECT = "suspect"
    FAILED = "failed"

    @property
    def available(self) -> bool:
        return self in (Verdict.READY, Verdict.PENDING)


def verdict(record: HealthRecord | None, policy: HealthPolicy, now: float) -> Verdict:
    """The verdict on an instance; no record means it was just seen (PENDING)."""
    if record is None:
        return Verdict.PENDING
    in_grace = now - record.first_seen < policy.grace_period
    if not in_grace and record.consecutive_unhealthy >= policy.unhealthy_threshold:
        return Verdict.FAILED
    if record.last == flavor.Health.HEALTHY and record.consecutive_healthy >= policy.healthy_threshold:
        return Verdict.READY
    return Verdict.PENDING if in_grace else Verdict.SUSPECT
