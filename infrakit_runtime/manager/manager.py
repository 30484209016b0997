"""The manager: the Group SPI behind leadership and a durable spec store.

Guarantee: every commit, free, destroy and resize is written to the store (fenced by the
lease) before it is acted on, so nothing acknowledged is lost with a replica. Nothing is
half-applied: a commit's answer (which asks the instance plugin) is computed before the
store write, and after the write nothing turns the commit into a failure, so a commit is
either stored and answered as success or not stored. Only the leader runs supervisors,
and it stops all of them the moment its lease is lost or cannot be renewed in time. Every change sent to a plugin is fenced as well: it goes out only while
the backend still trusts the lease locally (``manager.fencing``), so a replica resuming from
a pause refuses its first action even before its leadership task notices the loss. A new
leader loads every stored spec and enforces it, so unfinished rollouts continue from the
config-hash tags, with no other state. One bad group costs one group: a stored entry the
store refuses (``Backend.load_all``), a spec that no longer validates, or a group whose
instance plugin cannot be reached is kept Degraded (``manager.degraded``), reported and
retried with backoff, while the replica leads and enforces every other group.
Limit: between a leader's death and its successor's election nothing is enforced (at most
the lease TTL with etcd, one lock poll with the file backend). Followers forward Group calls
to the leader's advertised location, or refuse them naming it.

Ordering: a change is applied only if it was sent (first received by any replica; the Group
service passes each call's ``group.Origin`` in explicitly, from ``X-Infrakit-Origin`` and
``X-Infrakit-Forwarded-By``) after the last change applied to the same group, and a call is
forwarded at most once. So a commit stuck in a paused replica can never land after,
and undo, a later one that was acknowledged; it is refused and its sender told to retry.
Origins are wall-clock times: replicas' clocks must agree to well within the time between
two changes of one group (NTP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from infrakit_runtime.group import events as ev
from infrakit_runtime.group.controller import GroupController
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.manager.backend import Backend, BackendError, Lease, LostLeadership
from infrakit_runtime.manager.degraded import DegradedGroups, StoredGroups
from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.group import GroupClient
from infrakit_runtime.spi import group, instance
from infrakit_runtime.spi.common import PluginError, ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a call arriving before the first election waits for it.
ELECTION_SETTLE = 3.0
# A call made here and now (nobody forwarded it, nobody stamped it).
LOCAL = group.Origin()
# A client stamp older than this is distrusted (its clock is off) rather than refused.
MAX_CLIENT_SKEW = 300.0
# After a handover, how long a replica waits for another to lead before it campaigns again itself.
HANDOVER_HOLD = 10.0
# How long a follower may read the store to name the groups in a handshake (a handshake is a liveness
# probe: the launcher gives it 3 s, tests 2 s; a healthy store answers in milliseconds).
ANNOUNCE_TIMEOUT = 0.5


@dataclasses.dataclass(frozen=True)
class Ownership:
    """With shared groups (``sharding: groups``): ``members`` live members in this replica's last view
    (None before it read one); ``groups``: every group it knows of -> whether this replica acts on it."""

    members: int | None
    groups: dict[str, bool]


class NotLeader(PluginError):
    """This replica does not lead and cannot forward; the message names the leader."""


class Manager:
    """``GroupPlugin`` + ``Manager`` for one replica."""

    # What a refused (fenced) store write means, in the words of an error.
    LOST = "lost leadership"

    def __init__(self, *, backend: Backend, controller: GroupController, candidate: str, location: str | None,
                 forward: bool = True, token: str | None = None, retry_interval: float = 1.0,
                 forward_ssl: ssl.SSLContext | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.controller = controller
        self.candidate = candidate
        self.location = location
        self.forward = forward
        self.token = token
        self.forward_ssl = forward_ssl
        self.retry_interval = retry_interval
        # Ordering stamps are wall-clock times (they cross replicas); everything else uses the controller's clock.
        self.wall_clock = wall_clock
        self.events = controller.events
        self.lease: Lease | None = None
        self.problem: str | None = None
        self.leadership_changes = 0
        self._mutex = asyncio.Lock()
        self._forwarders: dict[str, GroupClient] = {}
        self._settled = asyncio.Event()
        self._handover = asyncio.Event()  # set: resign now and let a follower lead (``hand_over``)
        self._handover_reason = ""
        self._not_leading = asyncio.Event()
        self._not_leading.set()
        # Wall-clock origin of the last change applied per group, and when this replica took over.
        self._applied: dict[str, float] = {}
        self._took_over_at = 0.0
        self.stored = StoredGroups(backend=backend, controller=controller, clock=controller.clock,
                                   retry_interval=retry_interval)
        self.backend_type = "etcd" if type(backend).__name__.lower().startswith("etcd") else "file"

    # -- leadership ------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign, lead until the lease is lost, stop everything, campaign again; forever."""
        await self._forever(self._lead_once, role="leadership")

    async def _forever(self, once: Callable[[], Awaitable[bool]], *, role: str) -> None:
        """Run ``once`` again and again: a backend that cannot be used, or a bug, costs one retry
        interval (reported in ``problem``), never the loop. ``once`` answers True to go round again at
        once (it has waited already)."""
        while True:
            try:
                if await once():
                    continue
            except asyncio.CancelledError:
                raise
            except BackendError as e:
                self.problem = str(e)
                log.warning("%s cannot take %s: %s", self.candidate, role, e)
            except Exception as e:
                self.problem = f"{type(e).__name__}: {e}"
                log.exception("%s: the %s loop failed", self.candidate, role)
            await asyncio.sleep(self.retry_interval)

    async def _lead_once(self) -> bool:
        """One term: campaign, lead until the lease is lost or handed over, stop everything. True after a
        hand-over (another replica has had its chance to lead: campaign again at once)."""
        async with self.backend.leadership(candidate=self.candidate, location=self.location) as lease:
            self.lease, self.problem = lease, None
            self._not_leading.clear()
            self._applied, self._took_over_at = {}, self.wall_clock()
            self._settled.set()
            self.leadership_changes += 1
            self.events.emit(ev.LEADERSHIP_GAINED, reason=f"{self.candidate} leads (term {lease.term})")
            retries: asyncio.Task[None] | None = None
            try:
                await self._take_over(lease)
                retries = asyncio.create_task(self.stored.retry(self._mutex), name=f"degraded/{self.candidate}")
                reason = await self._lead_until_lost_or_handed_over(lease)
            finally:
                self.lease = None
                self._not_leading.set()
                if retries is not None:
                    retries.cancel()
                    await asyncio.gather(retries, return_exceptions=True)
                await self.controller.stop_all()
                self.degraded.reset()
            self.problem = f"lost leadership: {reason}"
            self.leadership_changes += 1
            self.events.emit(ev.LEADERSHIP_LOST, reason=reason)
            log.warning("%s stopped acting: %s", self.candidate, reason)
        if self._handover.is_set():
            await self._let_another_lead()
            return True
        return False

    async def _take_over(self, lease: Lease) -> None:
        """Enforce every stored spec (unfinished rollouts resume from the hash tags); never fail for one group.

        The mutex keeps a commit arriving meanwhile from being overtaken by its stored
        predecessor. Only a store that cannot be read at all stops the take-over.
        """
        async with self._mutex:
            enforced = await self.stored.enforce_all()
        if self.degraded.ids():
            log.warning("%s enforces %d group(s) as leader (term %d); Degraded, retried with backoff: %s",
                        self.candidate, enforced, lease.term, ", ".join(self.degraded.ids()))
        else:
            log.info("%s enforces %d group(s) as leader (term %d)", self.candidate, enforced, lease.term)

    @property
    def degraded(self) -> DegradedGroups:
        """The groups this leader keeps but cannot enforce (empty on a follower)."""
        return self.stored.degraded

    def acting_problem(self) -> str | None:
        """Why this replica must not change anything right now, or None (the plugin fence asks this).

        Synchronous and local: it reads the lease the backend last confirmed, so a replica
        that was paused past its renewal deadline is refused before its leadership task
        has even run again.
        """
        lease = self.lease
        if lease is None:
            return f"this replica ({self.candidate}) is not the leader"
        if not self.backend.holds(lease):
            return f"the lease for term {lease.term} can no longer be trusted (its renewal deadline passed)"
        return None

    def ownership(self) -> Ownership | None:
        """Who acts on which group as the metrics report it; None when one leader acts on them all."""
        return None

    def group_acting_problem(self, group_id: str) -> str | None:
        """Why this replica must not change anything for ``group_id`` now (the per-group plugin fence).

        With one leader, the same answer for every group: ``acting_problem``.
        """
        return self.acting_problem()

    async def _after_enforce(self, group_id: str) -> None:
        """After ``controller.commit`` awaited: stop what was started if this replica may no longer act."""
        if self.lease is None:
            await self.controller.stop_all()

    async def _enforce_committed(self, spec: GroupSpec, details: str) -> str:
        """Enforce ``spec`` after its store write; nothing here turns the stored commit into a failure.

        ``details`` was computed before the write, so enforcing calls no plugin. Should it fail
        anyway, the group is kept Degraded and retried: the store holds the spec, so the
        answer is the commit's success. ``controller.commit`` may await, so leadership can be
        lost meanwhile (every supervisor stopped); one started after that is stopped again.
        """
        self.stored.restored(spec.id, "a new spec was committed")
        try:
            await self.controller.commit(spec, details=details)
        except Exception as e:
            log.exception("group %s: the committed spec is stored but enforcing it failed", spec.id)
            self.stored.degrade(spec.id, f"the committed spec of group {spec.id} is stored but not enforced yet: "
                                   f"{type(e).__name__}: {e}", spec.raw)
        finally:
            await self._after_enforce(spec.id)
        return details

    async def _lead_until_lost_or_handed_over(self, lease: Lease) -> str:
        """Wait until the lease is lost, or until ``hand_over`` asks this replica to step down."""
        self._handover.clear()
        lost = asyncio.ensure_future(self.backend.wait_lost(lease))
        asked = asyncio.ensure_future(self._handover.wait())
        try:
            await asyncio.wait({lost, asked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (lost, asked):
                t.cancel()
            await asyncio.gather(lost, asked, return_exceptions=True)
        if self._handover.is_set():
            return f"handed leadership over: {self._handover_reason}"
        return lost.result() if not lost.cancelled() and lost.exception() is None else "lost"

    async def _let_another_lead(self) -> None:
        """After a handover: campaign again only once another replica leads, or after ``HANDOVER_HOLD``.

        A replica alone campaigns again after the hold, so a group is never left without a leader.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDOVER_HOLD
        try:
            while loop.time() < deadline:
                with contextlib.suppress(BackendError):
                    location = await self.backend.leader_location()
                    if location and location != self.location:
                        log.info("%s handed leadership over to %s", self.candidate, location)
                        return
                await asyncio.sleep(0.05)
            log.warning("%s handed leadership over but no other replica took it within %gs; campaigning again",
                        self.candidate, HANDOVER_HOLD)
        finally:
            self._handover.clear()

    async def hand_over(self, reason: str = "asked to") -> dict[str, Any]:
        """Stop leading so that a follower takes over (supervisors first, then the lease).

        Returns once this replica no longer leads (or at once when it did not lead); it does
        not campaign again until another replica leads or ``HANDOVER_HOLD`` has passed.
        """
        if self.lease is None:
            return {"HandedOver": False, "Leader": await self.leader_location()}
        self._handover_reason = reason
        self._handover.set()
        log.warning("%s hands leadership over: %s", self.candidate, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._not_leading.wait(), HANDOVER_HOLD)
        return {"HandedOver": self.lease is None, "Leader": None if self.lease is None else self.location}

    async def resign(self) -> None:
        """Graceful stop: supervisors first, then the lease, so a follower takes over at once."""
        await self.controller.stop_all()

    # -- routing ---------------------------------------------------------------------------

    async def _leader_or_forward(self, origin: group.Origin, local: Callable[[Lease], Awaitable[T]],
                                 remote: Callable[[GroupClient, group.Origin], Awaitable[T]], *,
                                 group_id: str | None = None, claim: bool = False) -> T:
        """Answer here as the leader, or forward once to it. ``group_id`` names the group the call is
        about and ``claim`` says it may create it: with one leader neither matters (``ShardedManager``)."""
        lease = self.lease
        if lease is None and not self._settled.is_set():
            lease = await self._await_election()
        if lease is not None:
            return await local(lease)
        if origin.forwarded_by:
            raise NotLeader(f"this replica ({self.candidate}) is not the leader (any more) and does not forward a "
                            f"call a second time; nothing was applied, retry against the current leader")
        location = await self.leader_location()
        if not self.forward or not location or location == self.location:
            where = f" the leader is at {location}" if location else " no leader is elected yet"
            why = f" ({self.problem})" if self.problem else ""
            raise NotLeader(f"this replica ({self.candidate}) is not the leader;{where}{why}")
        # The leader orders the call by when it was first sent, and knows not to forward it again.
        return await remote(self._forwarder(location), group.Origin(sent=self._origin(origin), forwarded_by=self.candidate))

    async def _await_election(self) -> Lease | None:
        """Right after start a call may race the first election: give it a moment to settle."""
        deadline = asyncio.get_running_loop().time() + ELECTION_SETTLE
        while self.lease is None and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(BackendError):
                location = await self.backend.leader_location()
                # Our own location may be written a moment before our lease is set: keep waiting for it.
                if location and location != self.location:
                    self._settled.set()
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), 0.1)
        return self.lease

    def _forwarder(self, location: str) -> GroupClient:
        if location not in self._forwarders:
            if location.startswith("unix://"):
                address = Address(unix_path=Path(location.removeprefix("unix://")))
            else:
                address = Address(url=location)
            client = Client(address, name="leader", token=self.token, ssl_context=self.forward_ssl)
            self._forwarders[location] = GroupClient(client)
        return self._forwarders[location]

    def _origin(self, origin: group.Origin) -> float:
        """When the call being served was sent: the forwarding replica's stamp, the client's, or now.

        A replica's stamp is trusted (replicas keep NTP time). A client's is used only when it is
        plausible: never in the future, and not older than ``MAX_CLIENT_SKEW`` (a client whose
        clock is that far off loses the ordering guard, not its ability to commit).
        """
        now = self.wall_clock()
        sent = origin.sent
        if sent is None or sent > now:
            return now
        if origin.forwarded_by:
            return sent
        if now - sent > MAX_CLIENT_SKEW:
            log.warning("a client's call is stamped %.0fs ago: its clock is off, or the call was delayed", now - sent)
            return now
        return sent

    def _acting_since(self, group_id: str) -> float:
        """Since when (wall clock) this replica applies changes to ``group_id``: its take-over."""
        return self._took_over_at

    def _check_order(self, group_id: str, origin: group.Origin) -> float:
        """Refuse a change sent before one already applied to the group (call under the mutex)."""
        sent = self._origin(origin)
        floor = self._applied.get(group_id, 0.0)
        if origin.forwarded_by:
            floor = max(floor, self._acting_since(group_id))
        if sent < floor:
            raise PluginError(f"not applied: a newer change to group {group_id} was applied after this request was "
                              f"sent (or leadership changed while it was forwarded); retry if it is still wanted")
        return sent

    async def _store(self, group_id: str, spec: dict[str, Any] | None, lease: Lease, origin: group.Origin) -> None:
        """Write (or with ``spec`` None, delete) a group's spec: in order, fenced, known to have landed."""
        sent = self._check_order(group_id, origin)
        if spec is None:
            await self._fenced(lambda: self.backend.delete(group_id, lease), group_id=group_id, expected=None)
        else:
            await self._fenced(lambda: self.backend.put(group_id, spec, lease), group_id=group_id, expected=spec)
        self._applied[group_id] = max(self._applied.get(group_id, 0.0), sent)

    async def _fenced(self, write: Callable[[], Awaitable[None]], *, group_id: str,
                      expected: dict[str, Any] | None) -> None:
        """Write the store under the lease; act only if the write is known to have landed.

        ``LostLeadership`` means nothing was written. Any other backend error leaves the
        outcome unknown (a write that timed out without quorum may still apply), so the
        store is read back: if it holds what we wrote we go on, otherwise nothing is applied.
        """
        try:
            await write()
            return
        except LostLeadership as e:
            raise PluginError(f"not acting: this replica {self.LOST} while writing the store ({e})") from None
        except BackendError as e:
            failure = e
        try:
            stored = (await self.backend.load_all()).specs.get(group_id)
        except BackendError as e:
            # Neither success nor "nothing stored" can be promised: say so, act on nothing.
            raise PluginError(f"the spec store did not confirm the change ({failure}) and cannot be read back "
                              f"({e}); nothing was enforced, but the store may still apply it: read the group's "
                              f"stored spec (Manager.Specs, or infrakit group ls) before retrying") from None
        if stored == expected:
            log.warning("store write for %s reported %s but landed; going on", group_id, failure)
            return
        raise PluginError(f"the spec store refused the change, nothing was applied: {failure}") from None

    # -- Group SPI -------------------------------------------------------------------------

    def with_origin(self, origin: group.Origin) -> group.GroupPlugin:
        """The Group SPI answering calls from ``origin`` (the Group service binds each request's)."""
        return FromOrigin(self, origin)

    async def commit_group(self, spec: group.Spec, pretend: bool, *, origin: group.Origin = LOCAL) -> group.Commit:
        async def local(lease: Lease) -> group.Commit:
            parsed = await self.controller.validate(spec)
            if pretend:
                return self.controller.commit_answer(parsed, await self.controller.plan_commit(parsed))
            async with self._mutex:
                details = await self.controller.plan_commit(parsed)  # may fail: nothing is stored yet
                answer = self.controller.commit_answer(parsed, details)  # against what was enforced until now
                await self._store(parsed.id, parsed.raw, lease, origin)
                await self._enforce_committed(parsed, details)
                return answer

        return await self._leader_or_forward(origin, local, lambda c, o: c.commit_group(spec, pretend, origin=o),
                                             group_id=spec.id, claim=not pretend)

    async def free_group(self, group_id: group.ID, *, origin: group.Origin = LOCAL) -> None:
        async def local(lease: Lease) -> None:
            async with self._mutex:
                if group_id in self.degraded and self.controller.spec(group_id) is None:
                    await self._store(group_id, None, lease, origin)  # the operator's explicit way to drop a bad entry
                    self.degraded.clear(group_id)
                    self.events.emit(ev.GROUP_FREED, group=group_id, reason="its Degraded stored entry was removed")
                    return
                self._require(group_id)
                await self._store(group_id, None, lease, origin)
                await self.controller.free_group(group_id)

        await self._leader_or_forward(origin, local, lambda c, o: c.free_group(group_id, origin=o), group_id=group_id)

    async def destroy_group(self, group_id: group.ID, *, origin: group.Origin = LOCAL) -> None:
        async def local(lease: Lease) -> None:
            async with self._mutex:
                self._require(group_id)  # a Degraded group's members cannot be listed: refused, nothing stored
                await self._store(group_id, None, lease, origin)
                await self.controller.destroy_group(group_id)

        await self._leader_or_forward(origin, local, lambda c, o: c.destroy_group(group_id, origin=o), group_id=group_id)

    async def set_size(self, group_id: group.ID, size: int, *, origin: group.Origin = LOCAL) -> None:
        async def local(lease: Lease) -> None:
            async with self._mutex:
                spec = self._require(group_id)
                if spec.is_pets:
                    raise ValidationError(f"group {group_id} is allocated by LogicalIDs; change its LogicalIDs instead of its size")
                resized = spec.with_size(size)
                details = await self.controller.plan_commit(resized)  # may fail: nothing is stored yet
                await self._store(group_id, resized.raw, lease, origin)
                await self._enforce_committed(resized, details)

        await self._leader_or_forward(origin, local, lambda c, o: c.set_size(group_id, size, origin=o), group_id=group_id)

    async def describe_group(self, group_id: group.ID, *, origin: group.Origin = LOCAL) -> group.Description:
        async def local(_: Lease) -> group.Description:
            if group_id in self.degraded and self.controller.spec(group_id) is None:
                description = self.degraded.describe(group_id)
                events = [e.to_wire() for e in self.events.recent(group=group_id, limit=20)]
                return dataclasses.replace(description, status={**description.status, "Events": events})
            return await self.controller.describe_group(group_id)

        return await self._leader_or_forward(origin, local, lambda c, o: c.describe_group(group_id, origin=o),
                                             group_id=group_id)

    async def inspect_groups(self, *, origin: group.Origin = LOCAL) -> list[group.Spec]:
        return await self._leader_or_forward(origin, lambda _: self._inspect(), lambda c, o: c.inspect_groups(origin=o))

    async def _inspect(self) -> list[group.Spec]:
        """The enforced groups and the Degraded ones (with their Status), by ID."""
        specs = {s.id: s for s in await self.controller.inspect_groups()}
        for gid in self.degraded.ids():
            specs.setdefault(gid, self.degraded.inspect(gid))
        return [specs[gid] for gid in sorted(specs)]

    async def announced(self) -> list[group.ID]:
        """The groups ``Handshake.Hello`` names: the leader's own (enforced or Degraded), a follower's
        from the store (no forwarding: a handshake must not wait for an election); none when unreadable."""
        if self.lease is not None:
            return sorted({*(s.id for s in await self.controller.inspect_groups()), *self.degraded.ids()})
        try:
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                stored = await self.backend.load_all()
        except (BackendError, TimeoutError) as e:
            log.debug("cannot name the groups in a handshake: %s", e)
            return []
        return sorted(stored.specs)

    async def destroy_instances(self, group_id: group.ID, instances: list[instance.ID], *, origin: group.Origin = LOCAL) -> None:
        async def local(_: Lease) -> None:
            self._require(group_id)
            await self.controller.destroy_instances(group_id, instances)

        await self._leader_or_forward(origin, local, lambda c, o: c.destroy_instances(group_id, instances, origin=o),
                                      group_id=group_id)

    async def size(self, group_id: group.ID, *, origin: group.Origin = LOCAL) -> int:
        async def local(_: Lease) -> int:
            return int(self._require(group_id).size)

        return await self._leader_or_forward(origin, local, lambda c, o: c.size(group_id, origin=o), group_id=group_id)

    def _require(self, group_id: group.ID) -> Any:
        spec = self.controller.spec(group_id)
        degraded = self.degraded.get(group_id)
        if spec is None and degraded is not None:
            raise PluginError(f"group {group_id} is Degraded and not enforced, so nothing was changed: "
                              f"{degraded.reason}. Commit the group again, or free it to stop managing it")
        if spec is None:
            raise group.UnknownGroup(group_id)
        return spec

    # -- Manager SPI -----------------------------------------------------------------------

    async def is_leader(self) -> bool:
        return self.lease is not None

    async def leader_location(self) -> str | None:
        if self.lease is not None:
            return self.location
        try:
            return await self.backend.leader_location()
        except BackendError:
            return None

    async def specs(self) -> list[group.Spec]:
        try:
            stored = await self.backend.load_all()
        except BackendError as e:
            raise PluginError(f"cannot read the spec store: {e}") from None
        # Refused entries are not specs; Manager.Status and DescribeGroup report them.
        return [group.Spec.from_wire(s) for _, s in sorted(stored.specs.items())]

    async def status(self) -> dict[str, Any]:
        """Leader, location, backend health and the reason a replica is not acting."""
        raw: dict[str, Any]
        try:
            raw = await self.backend.status()
        except Exception as e:  # status must answer even when the backend cannot
            raw = {"healthy": False, "reason": str(e)}
        backend = {"Type": self.backend_type, "Healthy": bool(raw.get("healthy")), "Reason": raw.get("reason") or "",
                   **{k: v for k, v in raw.items() if k not in ("healthy", "reason")}}
        leading = self.lease is not None
        if leading:
            location = self.location
        elif "leader" in raw:  # the backend has just read it; do not ask a sick backend twice
            location = raw["leader"]
        else:
            location = await self.leader_location()
        return {
            "Leader": leading,
            "Term": self.lease.term if self.lease else None,
            "Candidate": self.candidate,
            "SelfLogicalID": self.controller.self_id,
            "Location": location,
            "Problem": self._status_problem(leading=leading, backend=backend, location=location),
            "LastLoss": self.problem,
            "Backend": backend,
            "Groups": len(await self._inspect()) if self.lease else None,
            "Degraded": self.degraded.summary() if self.lease else None,
            "LeadershipChanges": self.leadership_changes,
        }

    async def recent_events(self, *, since: int = 0, group_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """This replica's recent events (oldest first), after sequence ``since``, at most ``limit`` (0: all kept).

        Not forwarded: each replica explains what it did itself; the leader's log is the one
        that tells a group's story.
        """
        return [e.to_wire() for e in self.events.recent(group=group_id or None, limit=limit, since=since)]

    def _status_problem(self, *, leading: bool, backend: dict[str, Any], location: str | None) -> str | None:
        """Why nothing is enforced from this replica's point of view, or None when all is well.

        A follower of a healthy leader has no problem; a replica that cannot reach its
        backend says so (whatever it last lost), and one that sees no leader says why.
        """
        problem = self.acting_problem() if leading else None
        if problem is not None:
            return problem
        if not backend["Healthy"]:
            why = f"the {backend['Type']} backend is unusable, so no replica here can lead: {backend['Reason']}"
            return f"{why} (earlier: {self.problem})" if self.problem else why
        if not leading and not location:
            return self.problem or "no leader is elected yet"
        return None

    async def close(self) -> None:
        for f in self._forwarders.values():
            await f.client.close()
        with contextlib.suppress(Exception):
            await self.backend.close()


class FromOrigin:
    """``GroupPlugin``: the manager answering calls that come from one ``origin``."""

    def __init__(self, manager: Manager, origin: group.Origin) -> None:
        self._manager, self._origin = manager, origin

    async def commit_group(self, spec: group.Spec, pretend: bool) -> group.Commit:
        return await self._manager.commit_group(spec, pretend, origin=self._origin)

    async def free_group(self, group_id: group.ID) -> None:
        await self._manager.free_group(group_id, origin=self._origin)

    async def describe_group(self, group_id: group.ID) -> group.Description:
        return await self._manager.describe_group(group_id, origin=self._origin)

    async def destroy_group(self, group_id: group.ID) -> None:
        await self._manager.destroy_group(group_id, origin=self._origin)

    async def inspect_groups(self) -> list[group.Spec]:
        return await self._manager.inspect_groups(origin=self._origin)

    async def destroy_instances(self, group_id: group.ID, instances: list[instance.ID]) -> None:
        await self._manager.destroy_instances(group_id, instances, origin=self._origin)

    async def size(self, group_id: group.ID) -> int:
        return await self._manager.size(group_id, origin=self._origin)

    async def set_size(self, group_id: group.ID, size: int) -> None:
        await self._manager.set_size(group_id, size, origin=self._origin)

