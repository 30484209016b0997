"""Controller events: every decision as a structured record, kept in a bounded ring.

Guarantee: memory is bounded (``capacity`` events, oldest dropped first) and a slow
subscriber can never block the controller: each subscriber has its own bounded queue and
loses its oldest events, counted in ``dropped``, rather than stalling ``emit``.
Each event is also logged at info on ``infrakit_runtime.events`` as a sentence, with
``group``, ``instance`` and ``event`` (its kind) as structured extras for JSON logs.
Limit: the ring lives in one process; after a restart history starts empty (the plugins
and the store hold the truth, events only explain it).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
event_log = logging.getLogger("infrakit_runtime.events")

# Event kinds: one word per decision.
SPEC_COMMITTED = "spec_committed"
GROUP_FREED = "group_freed"
GROUP_DESTROYED = "group_destroyed"
INSTANCE_LOST = "instance_lost"
INSTANCE_UNHEALTHY = "instance_unhealthy"
INSTANCE_HEALTHY = "instance_healthy"
PROVISIONING = "provisioning"
PROVISIONED = "provisioned"
PROVISION_FAILED = "provision_failed"
DESTROYED = "destroyed"
DESTROY_FAILED = "destroy_failed"
DRAIN_FAILED = "drain_failed"  # the flavor could not drain a member; it is destroyed anyway (reason says why)
RELABELLED = "relabelled"
BRAKE_ENGAGED = "brake_engaged"
LEADERSHIP_GAINED = "leadership_gained"
LEADERSHIP_LOST = "leadership_lost"
# Sharing the groups (``sharding: groups``): a replica registered (or left), and took (or gave up) one group.
MEMBERSHIP_GAINED = "membership_gained"
MEMBERSHIP_LOST = "membership_lost"
OWNERSHIP_GAINED = "ownership_gained"  # the replica acts on the group from now on
OWNERSHIP_LOST = "ownership_lost"  # the replica acts on the group no more (its supervisor has stopped)
HANDOVER = "handover"  # the leader's own instance is due to go: it hands leadership over (reason says why)
GROUP_DEGRADED = "group_degraded"  # a stored group the leader keeps but cannot enforce (reason says why)
GROUP_RESTORED = "group_restored"  # a Degraded group enforced again


@dataclasses.dataclass(frozen=True)
class Event:
    seq: int
    time: float
    kind: str
    group: str = ""
    instance: str = ""
    reason: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"Seq": self.seq, "Time": self.time, "Kind": self.kind, "Group": self.group,
                "Instance": self.instance, "Reason": self.reason}

    def sentence(self) -> str:
        """As ``infrakit events`` prints it: kind, group/instance, reason."""
        where = "/".join(x for x in (self.group, self.instance) if x)
        text = f"{self.kind} {where}" if where else self.kind
        return f"{text}: {self.reason}" if self.reason else text


# Told of every event synchronously as it is emitted (metrics count them here, so none is lost
# to a slow queue). Must not raise; one that does is logged and the others still run.
Observer = Callable[[Event], None]


class EventLog:
    """A bounded ring of events with fan-out to registered observers and to subscribers' queues."""

    def __init__(self, capacity: int = 1000, *, clock: Callable[[], float] = time.time) -> None:
        self._ring: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._clock = clock
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._observers: list[Observer] = []
        self.dropped = 0

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer`` with every event from now on, as it is emitted."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def emit(self, kind: str, *, group: str = "", instance: str = "", reason: str = "") -> Event:
        event = Event(seq=next(self._seq), time=self._clock(), kind=kind, group=group, instance=instance, reason=reason)
        self._ring.append(event)
        if event_log.isEnabledFor(logging.INFO):
            event_log.info("%s", event.sentence(), extra={"group": group, "instance": instance, "event": kind,
                                                          "wire": event.to_wire()})
        for observer in self._observers:
            try:
                observer(event)
            except Exception:  # an observer must never break the controller
                log.exception("event observer failed on %s", kind)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)
        return event

    def recent(self, *, group: str | None = None, limit: int = 20, since: int = 0) -> list[Event]:
        events = [e for e in self._ring if e.seq > since and (group is None or e.group == group)]
        return events[-limit:] if limit else events

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)
