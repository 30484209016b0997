"""Replicas sharing the groups (``sharding: groups``, etcd only): each group has one owner replica.

Guarantee: a group is enforced by at most one replica at a time. Each replica registers
under a lease of its own; a group's owner key is bound to its owner's lease, created only if
absent (claim) and handed over only by a compare-and-put from the current owner (transfer),
so it has at most one owner, and it vanishes with a dead owner's lease. A replica acts on a
group only while it believes it owns it: its store writes for the group are fenced by etcd
on that owner key, and its plugin calls by a per-group guard (membership lease trusted
locally and the group still owned here; ``manager.fencing``). When a replica joins, each
group whose rendezvous owner becomes the newcomer is handed over gracefully: the old owner
stops the group's supervisor first, then moves the key to the newcomer's lease in one
transaction, so there is never a moment with two acting owners nor one with no owner
key. When a replica dies, its keys expire with its lease and each orphan is claimed by its
rendezvous owner among the survivors (``manager.sharding``). Group calls reach the owner
from any replica (forwarded once, with the origin stamp, as with one leader); a commit of a
new group goes to its rendezvous owner, which claims it, then stores it.
Limit: between an owner's death and the claim, its groups are not enforced (its lease TTL
plus one watch round trip). A commit refused after its claim leaves the (empty) claim with
this replica until it leaves. Handing a replica's own instance over (``self_logical_id``)
is single-leader only. Recovery is stateless: everything is rebuilt from etcd and the plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from infrakit_runtime.group import events as ev
from infrakit_runtime.manager import sharding
from infrakit_runtime.manager.backend import BackendError, Lease, LostLeadership, Member, ShardView, SharedBackend
from infrakit_runtime.manager.manager import ANNOUNCE_TIMEOUT, ELECTION_SETTLE, LOCAL, Manager, NotLeader, Ownership
from infrakit_runtime.rpc.group import GroupClient
from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import PluginError

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a group call waits for a group that is moving between replicas to have an acting owner.
MOVE_SETTLE = 3.0
# How often a call waiting on a move looks again.
ROUTE_POLL = 0.1


class ShardedManager(Manager):
    """``Manager`` whose replicas share the groups; needs a ``SharedBackend`` (etcd)."""

    LOST = "lost its membership or this group"

    def __init__(self, *, backend: SharedBackend, **kwargs: Any) -> None:
        super().__init__(backend=backend, **kwargs)
        self.shared = backend
        # The groups this replica acts on: its owner key named this replica when it was adopted,
        # and nothing has shown otherwise since. The per-group fence reads it.
        self.owned: set[str] = set()
        self.last_view: ShardView | None = None
        self.moves = 0
        # Wall-clock time each group was taken over from another replica (hand-over or orphan claim).
        self._adopted_at: dict[str, float] = {}

    # -- membership -------------------------------------------------------------------------

    async def run(self) -> None:
        """Register, take this replica's share and keep it balanced until the lease is lost; forever."""
        await self._forever(self._member_once, role="part")

    async def _member_once(self) -> bool:
        async with self.shared.membership(candidate=self.candidate, location=self.location) as lease:
            reason = await self._member(lease)
        self.problem = f"lost membership: {reason}"
        log.warning("%s stopped acting: %s", self.candidate, reason)
        return False

    async def _member(self, lease: Lease) -> str:
        """Act as a member until the lease is lost (or the balancer fails); then stop everything at once."""
        self.lease, self.problem = lease, None
        self._not_leading.clear()
        self._applied, self._took_over_at = {}, self.wall_clock()
        self._settled.set()
        self.leadership_changes += 1
        self.events.emit(ev.MEMBERSHIP_GAINED, reason=f"{self.candidate} shares the groups (lease term {lease.term})")
        self._adopted_at = {}
        lost = asyncio.ensure_future(self.backend.wait_lost(lease))
        balance = asyncio.create_task(self._balance(lease), name=f"balance/{self.candidate}")
        retries = asyncio.create_task(self.stored.retry(self._mutex), name=f"degraded/{self.candidate}")
        reason = "lost"
        try:
            await asyncio.wait({lost, balance}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done() and not lost.cancelled() and lost.exception() is None:
                reason = lost.result()
            elif balance.done() and not balance.cancelled() and balance.exception() is not None:
                reason = f"balancing failed: {balance.exception()!r}"
        finally:
            self.lease = None  # the fence refuses every change from here on
            owned, self.owned = sorted(self.owned), set()
            self._not_leading.set()
            for task in (lost, balance, retries):
                task.cancel()
            await asyncio.gather(lost, balance, retries, return_exceptions=True)
            await self.controller.stop_all()
            self.degraded.reset()
            for gid in owned:
                self.events.emit(ev.OWNERSHIP_LOST, group=gid, reason=f"membership lost: {reason}")
            self.leadership_changes += 1
            self.events.emit(ev.MEMBERSHIP_LOST, reason=reason)
        return reason

    # -- balancing --------------------------------------------------------------------------

    async def _balance(self, lease: Lease) -> None:
        """Level-triggered: read who is alive and who owns what, make this replica's moves, wait for a change."""
        idle = self.shared.timings.ttl
        previous: sharding.Moves | None = None
        while True:
            try:
                async with self._mutex:  # never between a routed claim and its commit
                    view = await self.shared.view()
                    self.last_view = view
                    moves = sharding.plan_moves(me=self.candidate, groups=view.groups, owners=view.owners,
                                                replicas=view.members, running=self.owned)
                    if not moves.is_noop:
                        await self._move(moves, view, lease)
            except (BackendError, PluginError) as e:
                log.warning("%s cannot balance the groups now: %s", self.candidate, e)
                await asyncio.sleep(self.retry_interval)
                continue
            if moves.is_noop:
                await self.shared.wait_change(view.revision, idle)
            elif moves == previous:  # the same moves again: something refuses them; do not spin on it
                await asyncio.sleep(self.retry_interval)
            previous = moves

    async def _move(self, moves: sharding.Moves, view: ShardView, lease: Lease) -> None:
        """Act on ``moves`` in their safe order (stop before hand-over; own before acting)."""
        for gid in moves.drop:
            await self._give_up(gid, "its owner key no longer names this replica")
        for gid, to in moves.release:
            member = view.members.get(to)
            if member is None:
                continue
            await self._give_up(gid, f"handed over to {to}, its rendezvous owner")
            try:
                moved = await self.shared.transfer(gid, lease, member)
            except LostLeadership:
                moved = False
            if moved:
                self.moves += 1
                log.info("%s handed group %s over to %s", self.candidate, gid, to)
        adopt = list(moves.adopt)
        for gid in moves.claim:
            if await self.shared.claim(gid, lease):
                log.info("%s claimed group %s (it had no owner)", self.candidate, gid)
                adopt.append(gid)
        if adopt:
            stored = await self.backend.load_all()
            for gid in sorted(adopt):
                self.owned.add(gid)
                self._adopted_at[gid] = self.wall_clock()
                self.moves += 1
                self.events.emit(ev.OWNERSHIP_GAINED, group=gid, reason=f"{self.candidate} owns it")
            # Concurrently, as at a take-over: a hung plugin delays only its own groups.
            await asyncio.gather(*(self.stored.enforce(gid, stored) for gid in sorted(adopt)))

    async def _give_up(self, gid: str, why: str) -> None:
        """Stop acting on ``gid``: the fence refuses at once, and the supervisor has stopped when this returns."""
        self.owned.discard(gid)
        await self.controller.release(gid)
        self.degraded.clear(gid)
        self.events.emit(ev.OWNERSHIP_LOST, group=gid, reason=why)

    # -- fencing ----------------------------------------------------------------------------

    def acting_problem(self) -> str | None:
        lease = self.lease
        if lease is None:
            return f"this replica ({self.candidate}) is not a registered member"
        if not self.backend.holds(lease):
            return f"the membership lease (term {lease.term}) can no longer be trusted (its renewal deadline passed)"
        return None

    def group_acting_problem(self, group_id: str) -> str | None:
        """The membership lease is trusted locally and this replica still owns ``group_id``."""
        problem = self.acting_problem()
        if problem is None and group_id not in self.owned:
            problem = f"this replica ({self.candidate}) does not own group {group_id}"
        return problem

    def _acting_since(self, group_id: str) -> float:
        """A forwarded change sent before this replica took ``group_id`` over from another is refused: the
        previous owner may have applied a later one, which this replica's ordering memory does not know.

        Per group, not per membership: a group this replica creates (claimed for its first commit) has
        no earlier owner, and the commit that created it was necessarily sent before the claim.
        """
        return self._adopted_at.get(group_id, 0.0)

    async def _after_enforce(self, group_id: str) -> None:
        if group_id not in self.owned:  # given up while its commit was being enforced
            await self.controller.release(group_id)

    # -- routing ----------------------------------------------------------------------------

    async def _leader_or_forward(self, origin: group.Origin, local: Callable[[Lease], Awaitable[T]],
                                 remote: Callable[[GroupClient, group.Origin], Awaitable[T]], *,
                                 group_id: str | None = None, claim: bool = False) -> T:
        """Answer here when this replica owns the group (or the call concerns no one group), else forward once to its owner."""
        lease = self.lease
        if lease is None and not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), ELECTION_SETTLE)
            lease = self.lease
        if lease is None:
            why = f" ({self.problem})" if self.problem else ""
            raise NotLeader(f"this replica ({self.candidate}) is not a registered member yet{why}; retry")
        if group_id is None or not isinstance(group_id, str) or not group_id:
            return await local(lease)
        owner = await self._route(group_id, lease, claim=claim)
        if owner is None:
            return await local(lease)
        if origin.forwarded_by:
            raise NotLeader(f"this replica ({self.candidate}) does not own group {group_id} (any more) and does not "
                            f"forward a call a second time; nothing was applied, retry")
        if not self.forward or not owner.location or owner.location == self.location:
            raise NotLeader(f"this replica ({self.candidate}) does not own group {group_id}; "
                            f"its owner {owner.candidate} is at {owner.location}")
        return await remote(self._forwarder(owner.location),
                            group.Origin(sent=self._origin(origin), forwarded_by=self.candidate))

    async def _route(self, gid: str, lease: Lease, *, claim: bool) -> Member | None:
        """None to answer here, else the member that owns ``gid`` (or should create it).

        A group moving between replicas (owner key naming a replica that has not adopted it
        yet, or an orphan not claimed yet) is waited for, at most a lease TTL plus ``MOVE_SETTLE``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shared.timings.ttl + MOVE_SETTLE
        while True:
            if gid in self.owned:
                return None
            view = await self.shared.view()
            owner = view.owners.get(gid)
            if owner == self.candidate and gid not in view.groups:
                self.owned.add(gid)  # an earlier claim whose commit did not land: ours to use
                return None
            if owner is not None and owner != self.candidate and owner in view.members:
                return view.members[owner]
            if owner is None and gid not in view.groups:
                if not claim:
                    return None  # unknown here and everywhere: answered here (UnknownGroup, or a pretend plan)
                want = sharding.desired_owner(gid, {*view.members, self.candidate})
                if want is not None and want != self.candidate and want in view.members:
                    return view.members[want]
                async with self._mutex:
                    if await self.shared.claim(gid, lease):
                        self.owned.add(gid)
                        self.events.emit(ev.OWNERSHIP_GAINED, group=gid, reason=f"{self.candidate} creates it")
                        return None
            if loop.time() > deadline:
                raise PluginError(f"group {gid} has no acting owner right now (it is moving between replicas); "
                                  f"nothing was applied, retry")
            await asyncio.sleep(ROUTE_POLL)

    async def free_group(self, group_id: group.ID, *, origin: group.Origin = LOCAL) -> None:
        await super().free_group(group_id, origin=origin)
        self._forget(group_id, "freed: no longer stored, so no longer owned")

    async def destroy_group(self, group_id: group.ID, *, origin: group.Origin = LOCAL) -> None:
        await super().destroy_group(group_id, origin=origin)
        self._forget(group_id, "destroyed: no longer stored, so no longer owned")

    def _forget(self, group_id: str, why: str) -> None:
        """A group removed here (its spec and owner key deleted together) is no longer this replica's."""
        if group_id in self.owned:
            self.owned.discard(group_id)
            self.events.emit(ev.OWNERSHIP_LOST, group=group_id, reason=why)

    # -- answers across replicas ------------------------------------------------------------

    async def _inspect(self) -> list[group.Spec]:
        """Every stored group (whoever owns it), with this replica's Degraded ones and their Status."""
        try:
            stored = await self.backend.load_all()
        except BackendError as e:
            raise PluginError(f"cannot read the spec store: {e}") from None
        specs = {gid: group.Spec.from_wire(raw) for gid, raw in stored.specs.items()}
        for gid in self.degraded.ids():
            specs[gid] = self.degraded.inspect(gid)
        return [specs[gid] for gid in sorted(specs)]

    async def announced(self) -> list[group.ID]:
        """Every stored group, from the store (any replica answers for all of them); none when unreadable."""
        try:
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                stored = await self.backend.load_all()
        except (BackendError, TimeoutError) as e:
            log.debug("cannot name the groups in a handshake: %s", e)
            return []
        return sorted({*stored.specs, *stored.refused})

    async def leader_location(self) -> str | None:
        """Any member accepts Group calls: this one when registered, else one that is."""
        if self.lease is not None:
            return self.location
        try:
            view = await self.shared.view()
        except BackendError:
            return None
        return next((m.location for _, m in sorted(view.members.items()) if m.location), None)

    async def hand_over(self, reason: str = "asked to") -> dict[str, Any]:
        """Not with shared groups: there is no single leader to hand over (``self_logical_id`` is refused)."""
        return {"HandedOver": False, "Leader": self.location}

    def ownership(self) -> Ownership:
        """The groups the last view named (stored or owned), each with whether this replica acts on it."""
        view = self.last_view
        known = set(self.owned) | (set(view.groups) | set(view.owners) if view is not None else set())
        return Ownership(members=len(view.members) if view is not None else None,
                         groups={gid: gid in self.owned for gid in sorted(known)})

    async def status(self) -> dict[str, Any]:
        """``Manager.Status`` with who owns what: ``Owners`` (group -> candidate), this replica's ``Owned``."""
        out = await super().status()
        view = self.last_view
        with contextlib.suppress(BackendError):
            view = await self.shared.view()
        out["Sharding"] = "groups"
        out["Owned"] = sorted(self.owned)
        out["Groups"] = len(self.owned) if self.lease is not None else None
        out["Owners"] = dict(sorted(view.owners.items())) if view is not None else None
        out["Members"] = ({name: m.location for name, m in sorted(view.members.items())} if view is not None else None)
        out["Moves"] = self.moves
        return out
