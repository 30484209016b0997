"""The small interface the manager needs from a coordination backend.

A backend provides two things: **leadership** (at most one replica acts) and a
**spec store** (what was committed outlives every replica). Each store write
carries the ``Lease`` it was made under and must fail with ``LostLeadership``
when that lease is no longer the current one (fencing), so a paused old leader
can never overwrite the state of the new one.

The store is not trusted blindly: ``load_all`` checks every entry with ``check_entry``
(decodable, a JSON object, and naming the group its key or file names) and returns the
entries it refuses beside the specs, so one bad entry costs one group, never the store.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any


class BackendError(Exception):
    """The backend cannot be used right now (no quorum, disk full, unreachable); the message says why."""


class LostLeadership(BackendError):
    """The lease a write or renewal was made under is gone: stop acting at once."""


@dataclasses.dataclass(frozen=True)
class LeaderTimings:
    """Lease timings, validated up front: renewal must land well inside the TTL.

    ``ttl``: how long a lease outlives its holder. ``renew_interval``: how often
    the holder renews. ``renew_deadline``: if no renewal succeeded for this long,
    the holder steps down by itself, *before* the lease can expire elsewhere.
    ``retry_interval``: how long a candidate waits before trying again after an
    error (a follower watching a healthy leader wakes on its departure instead).
    Renewal runs on a thread of its own and stops while the holder's event loop has been
    silent for ``ttl`` (``manager.keeper``): a busy leader keeps its lease, a wedged one not.
    """

    ttl: float = 5.0
    renew_interval: float = 1.0
    renew_deadline: float = 3.5
    retry_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.renew_interval <= 0 or self.renew_deadline <= 0 or self.retry_interval <= 0:
            raise ValueError("leader timings must all be positive")
        if self.renew_deadline >= self.ttl:
            raise ValueError(f"ttl ({self.ttl:g}s) must exceed renew_deadline ({self.renew_deadline:g}s)")
        if self.renew_interval >= self.renew_deadline:
            raise ValueError(f"renew_deadline ({self.renew_deadline:g}s) must exceed renew_interval ({self.renew_interval:g}s)")


@dataclasses.dataclass(frozen=True)
class Lease:
    """Proof of leadership: a term number that only grows, and the backend's handle.

    ``holder`` is the candidate name given to ``leadership()``. ``handle`` is
    private to the backend that issued the lease (it carries what fencing needs);
    a lease is only valid with the backend that issued it.
    """

    term: int
    holder: str
    handle: Any = None


@dataclasses.dataclass(frozen=True)
class Stored:
    """One read of the store: the specs it vouches for and the entries it refuses, both by group ID.

    The group ID is the one the entry is stored under (file name, etcd key), never the one its
    content claims. A refused entry is reported, not dropped: the manager keeps its group
    Degraded with ``refused[group_id]`` (a sentence naming the entry) and never rewrites it.
    """

    specs: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)


def check_entry(group_id: str, data: bytes | str, *, where: str) -> dict[str, Any] | str:
    """The spec stored under ``group_id``, or why it cannot be trusted (pure; never raises).

    ``where`` names the entry for the operator (``/var/lib/infrakit/store/groups/web.json``,
    ``etcd key /infrakit/groups/web``). Refused: bytes that are not UTF-8 JSON, JSON that is
    not an object, and an object whose ``ID`` is not ``group_id`` (enforcing the ID it claims
    would manage another group and abandon this one's instances).
    """
    fix = f"fix it, or commit group {group_id!r} again to replace it"
    try:
        spec = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return f"the stored spec {where} is not valid JSON ({e}); {fix}"
    except RecursionError:
        return f"the stored spec {where} is not valid JSON (nested too deeply); {fix}"
    if not isinstance(spec, dict):
        return f"the stored spec {where} is not a JSON object; {fix}"
    claimed = spec.get("ID")
    if claimed != group_id:
        said = f"its ID is {claimed!r}" if isinstance(claimed, str) else "it has no string ID"
        return (f"the stored spec {where} is refused: it is stored as group {group_id!r} but {said}; "
                f"rename the entry or correct its ID, or commit group {group_id!r} again to replace it")
    return spec


class Backend(abc.ABC):
    """Leadership + store. Implementations: ``backends.file.FileBackend``, ``backends.etcd.EtcdBackend``."""

    @abc.abstractmethod
    def leadership(self, *, candidate: str, location: str | None) -> contextlib.AbstractAsyncContextManager[Lease]:
        """Campaign until elected, then yield the lease while it is held (async context manager).

        Used as ``async with backend.leadership(...) as lease:``. Entering blocks
        (campaigning, retrying on backend errors, which ``status()`` reports) until
        elected; cancel the task to stop campaigning. ``await backend.wait_lost(lease)``
        returns the moment renewal fails or its deadline passes; leaving the
        context resigns at once so a follower takes over without waiting for the
        TTL. ``location`` is what ``leader_location()`` reports to followers.
        """

    @abc.abstractmethod
    async def wait_lost(self, lease: Lease) -> str:
        """Return (with the reason) when ``lease`` is lost or can no longer be renewed in time."""

    @abc.abstractmethod
    def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` can still be trusted *right now*, from local knowledge only (no I/O).

        The manager asks this before every change it sends to a plugin, so it must be
        cheap and synchronous; it must turn False no later than ``wait_lost`` would
        return (a renewal deadline that passed while the process was paused counts at
        once, before any task notices).
        """

    @abc.abstractmethod
    async def leader_location(self) -> str | None:
        """The current leader's advertised location, or None if there is no leader."""

    @abc.abstractmethod
    async def load_all(self) -> Stored:
        """Every stored group spec (wire JSON ``{ID, Properties}``) by group ID, each checked by ``check_entry``.

        An entry that fails the check is in ``Stored.refused``, not an error: only a store
        that cannot be read at all (no quorum, the directory unreadable) raises ``BackendError``.
        """

    @abc.abstractmethod
    async def put(self, group_id: str, spec: dict[str, Any], lease: Lease) -> None:
        """Store a spec durably; raise ``LostLeadership`` if ``lease`` is not current.

        ``LostLeadership`` means nothing was written. Any other ``BackendError``
        (a timeout without quorum) means the outcome is unknown: a networked
        backend may still apply the write later, but only while ``lease`` is
        current, so it never overwrites a newer leader. Re-read before reporting.
        """

    @abc.abstractmethod
    async def delete(self, group_id: str, lease: Lease) -> None:
        """Remove a spec (absent is fine); errors as for ``put``."""

    @abc.abstractmethod
    async def status(self) -> dict[str, Any]:
        """Health of the backend for operators: ``{"healthy": bool, "reason": str, ...}``."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections."""


@dataclasses.dataclass(frozen=True)
class Member:
    """A live replica as its membership record says (``SharedBackend``): name, where to forward, lease."""

    candidate: str
    location: str | None
    lease_id: int


@dataclasses.dataclass(frozen=True)
class ShardView:
    """One consistent read of who is alive and who owns what (``SharedBackend.view``).

    ``owners``: group ID -> the candidate its owner key names. ``groups``: the stored group
    IDs (refused entries included: their owner keeps them Degraded). ``revision``: the store
    revision read at, from which ``wait_change`` watches.
    """

    members: Mapping[str, Member]
    owners: Mapping[str, str]
    groups: frozenset[str]
    revision: int


class SharedBackend(Backend):
    """A backend whose replicas can share the groups (``sharding: groups``): etcd only.

    Membership is a record per replica bound to a lease of its own (``membership``, kept
    like the leader lease: ``holds`` and ``wait_lost`` apply to it). Each group has an owner
    key bound to its owner's lease; ``put``/``delete`` under a membership lease are fenced by
    that group's owner key naming this lease, so a replica that lost a group cannot write it.
    """

    # The lease timings (a membership lapses a TTL after its holder stops renewing it).
    timings: LeaderTimings

    @abc.abstractmethod
    def membership(self, *, candidate: str, location: str | None) -> contextlib.AbstractAsyncContextManager[Lease]:
        """Register as a live replica and yield the membership lease while it is kept; revoke it on exit."""

    @abc.abstractmethod
    async def view(self) -> ShardView:
        """Members, owners and stored group IDs, read at one revision."""

    @abc.abstractmethod
    async def claim(self, group_id: str, lease: Lease) -> bool:
        """Create the group's owner key for ``lease`` if it has none (atomically); whether it is ours now."""

    @abc.abstractmethod
    async def transfer(self, group_id: str, lease: Lease, to: Member) -> bool:
        """Hand the owner key to ``to`` in one step, only if ``lease`` still owns it; whether it moved.

        The key is never absent in between, and ``to``'s lease carries it from then on.
        """

    @abc.abstractmethod
    async def wait_change(self, revision: int, timeout: float) -> None:
        """Return once a membership or owner key changed after ``revision``, or after ``timeout``, or on error."""


# Turns a ``backend`` configuration (``{type: file|etcd, ...}``) into a ``Backend``, raising
# ``ValidationError`` that lists every problem; ``infrakit_runtime.backends.open_backend`` is the
# one the daemon wiring injects.
BackendFactory = Callable[[dict[str, Any]], "Backend"]

