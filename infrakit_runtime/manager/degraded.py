"""Degraded groups: stored groups the leader keeps but cannot enforce, retried with backoff.

Guarantee: one bad group costs one group. A group whose stored entry the store refuses
(a file whose name and ID disagree, a value that is not JSON), whose stored spec no longer
validates, or whose instance plugin cannot be reached is recorded here with the reason,
reported (DescribeGroup, InspectGroups, Manager.Status, metrics) and retried on the
``Memory`` schedule with the group ID as the slot, while every other group is enforced.
Nothing here writes the store: the operator's entry is never rewritten or removed except by
their own commit or free of that group.
Limit: the record lives in the leader's memory; a new leader rebuilds it at take-over and
its retries start over. A fixed entry is noticed at the next retry, at most ``MAX_DELAY``
later; a commit or a free of the group acts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from infrakit_runtime.group import events as ev
from infrakit_runtime.group.controller import GroupController
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import DEGRADED
from infrakit_runtime.group.plan.spec import parse_spec
from infrakit_runtime.manager.backend import Backend, BackendError, Stored
from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import PluginError, ValidationError

log = logging.getLogger(__name__)

# Retries of a Degraded group: 1 s, doubling (jittered), at most this far apart.
BASE_DELAY = 1.0
MAX_DELAY = 30.0


@dataclasses.dataclass(frozen=True)
class DegradedGroup:
    """Why a stored group is not enforced, and the stored spec when the store vouched for it."""

    group_id: str
    reason: str
    spec: dict[str, Any] | None
    since: float


class DegradedGroups:
    """The leader's Degraded groups and their retry schedule (a ``Memory`` keyed by group ID)."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.memory = Memory(base_delay=BASE_DELAY, max_delay=MAX_DELAY)
        self._groups: dict[str, DegradedGroup] = {}

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._groups

    def get(self, group_id: str) -> DegradedGroup | None:
        return self._groups.get(group_id)

    def ids(self) -> list[str]:
        return sorted(self._groups)

    def mark(self, group_id: str, reason: str, spec: dict[str, Any] | None = None) -> bool:
        """Record one more failed attempt to enforce ``group_id``; True when that is news (new, or a new reason)."""
        now = self.clock()
        previous = self._groups.get(group_id)
        self._groups[group_id] = DegradedGroup(group_id=group_id, reason=reason, spec=spec,
                                               since=previous.since if previous else now)
        self.memory = self.memory.failed(group_id, now, reason)
        return previous is None or previous.reason != reason

    def clear(self, group_id: str) -> bool:
        """Forget ``group_id`` (enforced, committed, freed, or gone from the store); True if it was Degraded."""
        self.memory = self.memory.succeeded(group_id)
        return self._groups.pop(group_id, None) is not None

    def reset(self) -> None:
        """Forget everything (leadership lost: the next leader decides afresh)."""
        self._groups.clear()
        self.memory = Memory(base_delay=BASE_DELAY, max_delay=MAX_DELAY)

    def due(self) -> list[str]:
        """The groups whose next retry is due now."""
        now = self.clock()
        return [gid for gid in sorted(self._groups) if not self.memory.backing_off(gid, now)]

    def wait_time(self) -> float | None:
        """Seconds until the next retry is due (0 if one is), or None when nothing is Degraded."""
        times = [f.retry_at for gid, f in self.memory.failures if gid in self._groups]
        if not times:
            return None
        return max(0.0, min(times) - self.clock())

    def _retry(self, group_id: str) -> tuple[int, float]:
        failure = self.memory.get(group_id)
        if failure is None:
            return 0, 0.0
        return failure.count, round(max(0.0, failure.retry_at - self.clock()), 3)

    def status(self, group_id: str) -> dict[str, Any]:
        """The ``Status`` a Degraded group reports (DescribeGroup's keys, plus its retry schedule)."""
        degraded = self._groups[group_id]
        failures, retry_in = self._retry(group_id)
        return {"Condition": DEGRADED, "Reason": degraded.reason, "LastError": degraded.reason,
                "Plan": "not enforced until the reason above is fixed", "Failures": failures,
                "RetryIn": retry_in, "Instances": []}

    def describe(self, group_id: str) -> group.Description:
        """What DescribeGroup answers: no instances are claimed (they cannot be listed or trusted), not converged."""
        return group.Description(instances=(), converged=False, status=self.status(group_id))

    def inspect(self, group_id: str) -> group.Spec:
        """What InspectGroups lists: the stored spec when the store vouched for it, and the Degraded status."""
        degraded = self._groups[group_id]
        properties = degraded.spec.get("Properties") if degraded.spec is not None else None
        return group.Spec(id=group_id, properties=properties,
                          status={"Condition": DEGRADED, "Reason": degraded.reason})

    def summary(self) -> list[dict[str, Any]]:
        """One line per Degraded group for ``Manager.Status``."""
        out = []
        for gid in sorted(self._groups):
            failures, retry_in = self._retry(gid)
            out.append({"Group": gid, "Reason": self._groups[gid].reason, "Failures": failures, "RetryIn": retry_in})
        return out


class StoredGroups:
    """What the store holds, enforced one group at a time: each is enforced or kept Degraded, never both lost.

    ``enforce_all`` is the take-over; ``retry`` runs for the rest of the term and retries each
    Degraded group when its backoff allows, re-reading the store (so a fixed entry is picked
    up). The manager calls both under its mutex, so they never race a commit or a free.
    """

    def __init__(self, *, backend: Backend, controller: GroupController, clock: Callable[[], float],
                 retry_interval: float = 1.0) -> None:
        self.backend = backend
        self.controller = controller
        self.events = controller.events
        self.retry_interval = retry_interval
        self.degraded = DegradedGroups(clock=clock)
        self._wakeup = asyncio.Event()

    async def enforce_all(self) -> int:
        """Enforce every stored group concurrently (a hung plugin delays only its own); how many are enforced.

        Raises ``BackendError`` only when the store cannot be read at all.
        """
        stored = await self.backend.load_all()
        ids = sorted({*stored.specs, *stored.refused})
        await asyncio.gather(*(self.enforce(gid, stored) for gid in ids))
        return sum(1 for gid in ids if gid not in self.degraded)

    async def enforce(self, group_id: str, stored: Stored) -> None:
        """Enforce one stored group, or keep it Degraded with the reason (never raises)."""
        raw = stored.specs.get(group_id)
        if group_id in stored.refused:
            self.degrade(group_id, stored.refused[group_id])
            return
        if raw is None:  # removed from the store since it was Degraded (by its operator)
            self.restored(group_id, "no longer in the store, so no longer managed")
            return
        try:
            spec = parse_spec(raw)
        except ValidationError as e:  # not offered to InspectGroups' readers as a spec: it is not one
            self.degrade(group_id, f"the stored spec of group {group_id} is invalid and is not enforced: {e}")
            return
        try:
            await self.controller.commit(spec)
        except PluginError as e:
            self.degrade(group_id, f"the stored spec of group {group_id} cannot be enforced yet: {e}", raw)
        except Exception as e:  # a bug while enforcing one group must not cost the others
            log.exception("enforcing the stored spec of group %s failed", group_id)
            self.degrade(group_id, f"enforcing the stored spec of group {group_id} failed: {type(e).__name__}: {e}",
                         raw)
        else:
            self.restored(group_id, "the stored spec is enforced again")

    def degrade(self, group_id: str, reason: str, spec: dict[str, Any] | None = None) -> None:
        """Keep ``group_id`` Degraded for ``reason`` and schedule its next retry (news is logged and an event)."""
        if self.degraded.mark(group_id, reason, spec):
            log.error("group %s is Degraded (kept, retried with backoff): %s", group_id, reason)
            self.events.emit(ev.GROUP_DEGRADED, group=group_id, reason=reason)
        self._wakeup.set()

    def restored(self, group_id: str, reason: str) -> None:
        """``group_id`` is settled (enforced, replaced by a commit, or gone): no longer Degraded."""
        if self.degraded.clear(group_id):
            log.info("group %s is no longer Degraded: %s", group_id, reason)
            self.events.emit(ev.GROUP_RESTORED, group=group_id, reason=reason)

    async def retry(self, mutex: asyncio.Lock) -> None:
        """Retry each Degraded group when its backoff allows, for as long as the task runs (the term)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.degraded.wait_time())
            self._wakeup.clear()
            if not self.degraded.due():
                continue
            try:
                async with mutex:
                    await self._retry_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # must neither end the retries nor spin
                log.exception("retrying Degraded groups failed")
                await asyncio.sleep(self.retry_interval)

    async def _retry_due(self) -> None:
        due = self.degraded.due()  # a commit or a free may have settled some meanwhile
        if not due:
            return
        try:
            stored = await self.backend.load_all()
        except BackendError as e:
            log.warning("cannot retry Degraded group(s) %s: %s", ", ".join(due), e)
            for gid in due:  # back off further, keeping each group's own reason
                degraded = self.degraded.get(gid)
                if degraded is not None:
                    self.degraded.mark(gid, degraded.reason, degraded.spec)
            return
        await asyncio.gather(*(self.enforce(gid, stored) for gid in due))
