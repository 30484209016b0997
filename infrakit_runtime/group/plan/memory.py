"""Backoff memory: failures become data the planner reads, never a retry loop.

Guarantee: ``Memory`` is a frozen value; ``failed``/``succeeded``/``progressed`` return new
values, and ``retry_at`` is a pure function of (slot, failure count, time of failure), so the
same history always gives the same schedule - tests can predict it, and no random state is
consumed. Delays grow exponentially from ``base_delay`` to ``max_delay`` with jitter in
[50%, 100%] of the nominal delay, spreading retries of many slots apart. A slot fails when
a create is refused (``PROVISION``), when the member it made ends on its own before it has
proved itself (``CRASH``: a crash loop), or when it is condemned before then (``START``: a
version that never passes its probe); a create that returns an ID ends only a ``PROVISION``
streak, so a crash loop keeps backing off, and a member that proves itself ends any
(``succeeded``).
Limit: memory lives in the supervisor's process; after a restart every slot starts fresh
(one extra attempt per slot, never a storm: creates are still bounded by the plan).
"""

from __future__ import annotations

import dataclasses
import hashlib

__all__ = ["CATTLE_SLOT", "CRASH", "PROVISION", "START", "Memory", "Slot", "SlotFailure"]

# A slot is what a create fills: a logical ID for pets, CATTLE_SLOT for any cattle member.
Slot = str
CATTLE_SLOT: Slot = "*"

# What failed to fill a slot.
PROVISION = "provision"  # the create itself was refused
START = "start"          # the member made was condemned (unhealthy) before it proved itself
CRASH = "crash"          # the member made ended on its own before it proved itself: a crash loop

DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 300.0


@dataclasses.dataclass(frozen=True)
class SlotFailure:
    """Consecutive failures to fill one slot and when it may be tried again."""

    count: int
    last_failure: float
    retry_at: float
    error: str
    kind: str = PROVISION


def backoff_delay(slot: Slot, count: int, *, base: float = DEFAULT_BASE_DELAY, cap: float = DEFAULT_MAX_DELAY) -> float:
    """Seconds to wait after the ``count``-th consecutive failure of ``slot``: capped, jittered, deterministic."""
    nominal = min(cap, base * 2 ** min(max(count - 1, 0), 62))
    digest = hashlib.sha256(f"{slot}\x00{count}".encode()).digest()
    jitter = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
    return float(nominal * (0.5 + 0.5 * jitter))


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the supervisor remembers between passes: failing slots and the last progress."""

    failures: tuple[tuple[Slot, SlotFailure], ...] = ()
    last_progress: float | None = None
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    # Slot tags of cattle creates whose outcome is unknown (the call failed or timed out), oldest
    # first: the planner gives them to the next creates, so a plugin whose creates are idempotent by
    # slot returns what the first call made instead of a duplicate.
    retry_tags: tuple[str, ...] = ()

    def unresolved(self, tag: str, *, keep: int) -> Memory:
        """A create tagged ``tag`` has an unknown outcome; remember at most the ``keep`` newest such tags."""
        tags = (*(t for t in self.retry_tags if t != tag), tag)
        return dataclasses.replace(self, retry_tags=tags[-max(1, keep):])

    def resolved(self, tag: str) -> Memory:
        """A create tagged ``tag`` returned an instance: its tag is not to be reused."""
        if tag not in self.retry_tags:
            return self
        return dataclasses.replace(self, retry_tags=tuple(t for t in self.retry_tags if t != tag))

    def get(self, slot: Slot) -> SlotFailure | None:
        for key, failure in self.failures:
            if key == slot:
                return failure
        return None

    def failed(self, slot: Slot, now: float, error: str = "", kind: str = PROVISION) -> Memory:
        """Record one more failure to fill ``slot`` at ``now``."""
        previous = self.get(slot)
        count = previous.count + 1 if previous else 1
        failure = SlotFailure(count=count, last_failure=now, error=error, kind=kind,
                              retry_at=now + backoff_delay(slot, count, base=self.base_delay, cap=self.max_delay))
        rest = tuple((k, f) for k, f in self.failures if k != slot)
        return dataclasses.replace(self, failures=tuple(sorted((*rest, (slot, failure)), key=lambda kv: kv[0])))

    def succeeded(self, slot: Slot) -> Memory:
        """Forget ``slot``'s failures: it was filled by a member that proved itself."""
        if self.get(slot) is None:
            return self
        return dataclasses.replace(self, failures=tuple((k, f) for k, f in self.failures if k != slot))

    def provisioned(self, slot: Slot) -> Memory:
        """A create into ``slot`` returned an ID: a refused-create streak ends, a start-failure streak does not."""
        failure = self.get(slot)
        if failure is None or failure.kind != PROVISION:
            return self
        return self.succeeded(slot)

    def forgotten(self) -> Memory:
        """No failure remembered (a new spec deserves a fresh try); progress and delays kept."""
        return dataclasses.replace(self, failures=())

    def progressed(self, now: float) -> Memory:
        """Note that an action succeeded at ``now`` (what ``ProgressDeadline`` measures from)."""
        return dataclasses.replace(self, last_progress=now)

    def backing_off(self, slot: Slot, now: float) -> bool:
        failure = self.get(slot)
        return failure is not None and now < failure.retry_at

    def last_error(self) -> str | None:
        """The most recent failure's error text, if any slot is failing."""
        if not self.failures:
            return None
        return max((f for _, f in self.failures), key=lambda f: f.last_failure).error
