"""Health bookkeeping for the planner: what the checks said, turned into a verdict per instance.

Guarantee: a verdict is a pure function of a ``HealthRecord``, the group's ``HealthPolicy``
and ``now``; an instance is condemned only after its grace period AND ``UnhealthyThreshold``
consecutive UNHEALTHY checks, so one bad probe (or a slow boot) never destroys anything.
A record names the probe that made it (the config hash of the spec whose flavor Properties
were used): a member is judged by the probe of the spec that made it, and the probe that
came with a newer spec judges it only once that probe has passed on a member the newer
spec made (``judge``); until then the member is UNJUDGED - presumed serving, never condemned.
Limit: the records are the supervisor's memory of the checks; after a restart they start
over, which only delays condemnation (it never hastens it). A restarted controller knows
only the current spec, so members made by an earlier one stay UNJUDGED until the current
probe has proved itself.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection

from infrakit_runtime.group.plan.spec import HealthPolicy
from infrakit_runtime.spi import flavor

__all__ = ["HealthRecord", "Verdict", "answered", "judge", "probe_for", "settled", "verdict"]


@dataclasses.dataclass(frozen=True)
class HealthRecord:
    """What health checks by one probe have said about one instance since it was first seen.

    ``probe`` is the config hash of the spec whose flavor Properties made the checks; None
    means the probe of the spec that made the instance (records built by hand in tests).
    ``passed``: some check by this probe answered HEALTHY. ``reason``: what the flavor said with its
    last answer (why unhealthy, what it waits for), when it says anything. ``quorum``: what the
    flavor said with its last answer about the quorum of the member's cluster (voting members only).
    ``final``: the flavor said with its last answer that it probes nothing under this probe's
    Properties (``flavor.Assessment.final``): every later answer would be the same one (``answered``).
    """

    first_seen: float
    last: flavor.Health = flavor.Health.UNKNOWN
    consecutive_unhealthy: int = 0
    consecutive_healthy: int = 0
    probe: str | None = None
    passed: bool = False
    reason: str = ""
    quorum: flavor.Quorum | None = None
    final: bool = False

    def checked(self, health: flavor.Health, reason: str = "", quorum: flavor.Quorum | None = None, *,
                final: bool = False) -> HealthRecord:
        """The record after one more check (UNKNOWN resets neither streak's opposite, only itself)."""
        if health == flavor.Health.HEALTHY:
            return dataclasses.replace(self, last=health, consecutive_healthy=self.consecutive_healthy + 1,
                                       consecutive_unhealthy=0, passed=True, reason=reason, quorum=quorum, final=final)
        if health == flavor.Health.UNHEALTHY:
            return dataclasses.replace(self, last=health, consecutive_unhealthy=self.consecutive_unhealthy + 1,
                                       consecutive_healthy=0, reason=reason, quorum=quorum, final=final)
        return dataclasses.replace(self, last=health, consecutive_healthy=0, consecutive_unhealthy=0, reason=reason,
                                   quorum=quorum, final=final)

    def judged_by(self, probe: str) -> HealthRecord:
        """This record for checks by ``probe``: the same record for the same probe; otherwise the
        streaks start over (what another probe said is no evidence for this one), first sighting kept."""
        if self.probe == probe:
            return self
        return HealthRecord(first_seen=self.first_seen, probe=probe)


class Verdict(enum.Enum):
    """How the planner treats an instance.

    READY, PENDING and UNJUDGED count as available for the rollout budget; SUSPECT (past its
    grace period without enough HEALTHY checks, e.g. health UNKNOWN) and FAILED do not.
    UNJUDGED: made by an earlier spec whose probe this controller does not know, while the
    current probe has not yet passed on a member the current spec made - presumed serving
    (it was serving when the controller last knew), never condemned.
    """

    READY = "ready"
    UNJUDGED = "unjudged"
    PENDING = "pending"
    SUSPECT = "suspect"
    FAILED = "failed"

    @property
    def available(self) -> bool:
        return self in (Verdict.READY, Verdict.PENDING, Verdict.UNJUDGED)


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


def probe_for(*, config_hash: str | None, current: str, known: Collection[str]) -> str:
    """Whose probe checks a member tagged ``config_hash``: the spec that made it, when that spec is
    ``known``; else the ``current`` spec's (a ``bootstrap`` member, or after a restart)."""
    return config_hash if config_hash is not None and config_hash in known else current


def judge(record: HealthRecord | None, *, made_by: str, current: str, proven: bool, policy: HealthPolicy,
          now: float) -> Verdict:
    """The verdict on a member made by the spec hashed ``made_by`` while ``current`` is the spec's hash.

    A record counts when its probe is the member's own; for a member of an earlier spec, a
    record by the current probe counts only once that probe is ``proven`` (it has passed on a
    member the current spec made). Otherwise an earlier spec's member is UNJUDGED.
    """
    if made_by == current:
        if record is not None and record.probe not in (None, current):
            record = HealthRecord(first_seen=record.first_seen)  # another probe's streaks say nothing here
        return verdict(record, policy, now)
    if record is not None and (record.probe in (None, made_by) or (proven and record.probe == current)):
        return verdict(record, policy, now)
    return Verdict.UNJUDGED


def answered(record: HealthRecord | None, *, probe: str, policy: HealthPolicy, now: float) -> bool:
    """Would checking this member with ``probe`` again change nothing the planner reads?

    True once the flavor has said its verdict never changes (``final``) and the member has settled
    (READY past its grace period): another check would only lengthen a streak already long enough.
    Until it has settled, checks go on - a settling member still moves the backoff memory.
    """
    return record is not None and record.final and record.probe == probe and settled(record, policy, now)


def settled(record: HealthRecord | None, policy: HealthPolicy, now: float) -> bool:
    """Has the member proved itself: READY, and past its grace period (a crash loop never gets here)?"""
    return (record is not None and verdict(record, policy, now) is Verdict.READY
            and now - record.first_seen >= policy.grace_period)
